"""CoAP fleets against a real aiocoap sink, server-mode devices checked with coap-client-notls."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

import cbor2
import pytest
from harness import Harness as BaseHarness

from iotix.encode import decode_envelope
from iotix.fleet.delivery import DeliverySettings
from iotix.fleet.device import DeviceState
from iotix.fleet.fleet import Fleet
from iotix.fleet.timeline import DropoutSettings, LaunchSettings
from iotix.services.coap_server import CoapSink
from iotix.transport.coap import ACK, CON, RST, CoapTransport, empty_message, encode_message, parse_message
from iotix.transport.coap_client import CoapClientError, coap_request, observe

pytestmark = pytest.mark.integration
COAP_CLIENT = shutil.which("coap-client-notls")
needs_coap_client = pytest.mark.skipif(COAP_CLIENT is None, reason="coap-client-notls (libcoap3-bin) missing")


def model_dict(interval_ms: int = 100, payload_format: str = "json", **connection: Any) -> dict:
    return {
        "id": "it-coap",
        "name": "integration CoAP sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "coap",
        "connection": {"host": "127.0.0.1", "port": 5683, **connection},
        "telemetry": [
            {
                "name": "temperature",
                "type": "number",
                "intervalMs": interval_ms,
                "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
            },
            {
                "name": "humidity",
                "type": "number",
                "intervalMs": interval_ms * 2,
                "generator": {"type": "random", "min": 20, "max": 80, "precision": 1},
            },
        ],
        "commands": [{"name": "setInterval"}, {"name": "reboot"}],
        "payload": {"format": payload_format},
    }


class Harness(BaseHarness):
    """The shared harness plus CoAP sinks on the runtime loop."""

    def sink(self, **kwargs: Any) -> CoapSink:
        sink = self.rt.call(CoapSink.start, **kwargs)
        self.on_close(lambda: self.rt.call(sink.stop))
        return sink

    def fleet(self, name: str, data: dict, count: int, port: int | None = None, **kwargs: Any) -> Fleet:
        return super().fleet(name, data, count, connection={"port": port} if port is not None else None, **kwargs)


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.close()


def run_for(h: Harness, fleet: Fleet, seconds: float) -> dict:
    """Run the fleet for ``seconds``, stop it (open exchanges drain) and return its stats."""
    h.start(fleet)
    h.running(fleet)
    time.sleep(seconds)
    h.rt.call(fleet.stop)
    return fleet.stats()


def silent_udp_port() -> socket.socket:
    """A bound UDP socket that never reads: datagrams to it vanish without an ICMP error."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


# -- client mode ------------------------------------------------------------------------------------------


def test_con_requests_arrive_once_each_and_are_acknowledged(h: Harness) -> None:
    sink = h.sink()
    fleet = h.fleet("con", model_dict(), 10, sink.port)
    stats = run_for(h, fleet, 1.5)
    assert stats["messagesSent"] >= 10 * 10
    assert stats["messagesFailed"] == 0
    assert stats["messagesAcked"] == stats["messagesSent"]
    report = h.rt.call(lambda: sink.tracker.report(fleet.expected_sequences()))
    assert report.lost == 0, report.as_dict()
    assert report.duplicates == 0
    assert report.received == stats["messagesSent"]
    records = h.rt.call(sink.requests, "/telemetry/con-3")
    assert records and all(r["method"] == "POST" and r["contentFormat"] == 50 for r in records)
    assert [decode_envelope(r["payload"])["seq"] for r in records] == list(range(len(records)))
    latency = h.rt.call(fleet.transport.latency.summary)
    assert latency["count"] == stats["messagesSent"]
    assert latency["p50"] < 500


def test_non_requests_are_fire_and_forget(h: Harness) -> None:
    sink = h.sink()
    fleet = h.fleet("non", model_dict(confirmable=False), 5, sink.port)
    stats = run_for(h, fleet, 1.0)
    assert stats["messagesSent"] >= 5 * 7
    assert stats["messagesAcked"] == 0 and stats["messagesFailed"] == 0
    time.sleep(0.2)
    report = h.rt.call(lambda: sink.tracker.report(fleet.expected_sequences()))
    assert report.lost == 0, report.as_dict()  # loopback does not drop at this rate


def test_cbor_payloads_carry_content_format_60(h: Harness) -> None:
    sink = h.sink()
    fleet = h.fleet("cbor", model_dict(payload_format="cbor"), 3, sink.port)
    stats = run_for(h, fleet, 0.8)
    records = h.rt.call(sink.requests)
    assert len(records) == stats["messagesSent"] > 0
    assert {r["contentFormat"] for r in records} == {60}
    message = cbor2.loads(records[0]["payload"])
    assert message["deviceId"].startswith("cbor-") and "temperature" in message
    assert h.rt.call(lambda: sink.tracker.report(fleet.expected_sequences())).lost == 0


def test_put_to_a_templated_path(h: Harness) -> None:
    sink = h.sink()
    fleet = h.fleet("put", model_dict(method="PUT", path="devices/${deviceId}/m/${index}"), 2, sink.port)
    run_for(h, fleet, 0.5)
    assert set(h.rt.call(sink.counts)) == {"/devices/put-0/m/0", "/devices/put-1/m/1"}
    assert {r["method"] for r in h.rt.call(sink.requests)} == {"PUT"}
    assert {r["deviceId"] for r in h.rt.call(sink.requests, None, "put-1")} == {"put-1"}


def test_target_that_does_not_answer_counts_timeouts_without_hanging(h: Harness) -> None:
    silent = silent_udp_port()
    try:
        port = silent.getsockname()[1]
        fleet = h.fleet("silent", model_dict(interval_ms=100, ackTimeoutMs=50, maxRetransmit=1), 3, port)
        h.start(fleet)
        h.running(fleet)
        h.wait(lambda: fleet.stats()["messagesFailed"] >= 6, what="timeouts counted")
        started = time.monotonic()
        h.rt.call(fleet.stop)
        assert time.monotonic() - started < 3.0
        stats = fleet.stats()
        assert stats["messagesAcked"] == 0
        error = fleet.devices[0].last_error
        assert f"coap://127.0.0.1:{port}/telemetry/silent-0" in error
        assert "timeout" in error and "2 transmissions" in error
        assert h.rt.call(lambda: fleet.transport.retransmissions) >= stats["messagesFailed"]
    finally:
        silent.close()


def test_closed_port_times_out_and_names_the_icmp_error(h: Harness) -> None:
    closed = silent_udp_port()
    port = closed.getsockname()[1]
    closed.close()  # nothing listens: the kernel answers with ICMP port unreachable
    fleet = h.fleet("closed", model_dict(ackTimeoutMs=50, maxRetransmit=1), 2, port)
    h.start(fleet)
    h.running(fleet)
    h.wait(lambda: fleet.stats()["messagesFailed"] >= 2, what="timeouts counted")
    error = fleet.devices[0].last_error
    assert "timeout" in error and f"127.0.0.1:{port}" in error
    assert "ConnectionRefusedError" in error


def test_a_5xx_server_is_retried_trips_the_circuit_and_recovery_closes_it(h: Harness) -> None:
    sink = h.sink(error_code="5.03")
    settings = DeliverySettings(
        max_retries=2, retry_base_s=0.01, retry_cap_s=0.02, circuit_threshold=6, circuit_cooldown_s=0.3
    )
    fleet = h.fleet("trip", model_dict(), 2, sink.port, delivery=settings)
    h.start(fleet)
    h.wait(lambda: fleet.stats()["circuitOpens"] >= 1, what="the circuit to open")
    stats = fleet.stats()
    assert stats["retries"] >= 4 and stats["messagesAcked"] == 0
    assert stats["failuresByReason"]["coap_5.03"] >= 1
    h.rt.call(sink.set_error, None)
    h.wait(lambda: fleet.stats()["circuitState"] == "closed" and fleet.stats()["messagesAcked"] >= 4, what="recovery")
    log = h.rt.call(lambda: list(fleet.devices[0].tlog.entries(500)))
    assert log[-1]["result"] == "ok" and log[-1]["latencyMs"] >= 0
    assert any(e["result"] == "retrying" and "5.03 Service Unavailable" in e["error"] for e in log)
    h.stop(fleet)


def test_error_responses_are_failures_with_code_and_payload(h: Harness) -> None:
    sink = h.sink(error_code="5.00")
    plain = DeliverySettings(max_retries=0, circuit_threshold=0)  # every reading is one request
    fleet = h.fleet("err", model_dict(), 2, sink.port, delivery=plain)
    stats = run_for(h, fleet, 0.6)
    assert stats["messagesSent"] > 0
    assert stats["messagesFailed"] == stats["messagesSent"]
    assert stats["messagesAcked"] == 0
    error = fleet.devices[1].last_error
    target = f"coap://127.0.0.1:{sink.port}/telemetry/err-1"
    assert error == f"CoAP POST {target}: 5.00 Internal Server Error: injected error"
    h.rt.call(sink.set_error, "4.04", b"no such device")
    fleet2 = h.fleet("err2", model_dict(), 1, sink.port)
    run_for(h, fleet2, 0.3)
    assert "4.04 Not Found: no such device" in fleet2.devices[0].last_error


def test_in_flight_limit_turns_sends_into_counted_failures(h: Harness) -> None:
    silent = silent_udp_port()
    try:
        fleet = h.fleet("busy", model_dict(interval_ms=50, ackTimeoutMs=5000), 2, silent.getsockname()[1])
        transport: CoapTransport = fleet.transport  # type: ignore[assignment]
        transport.max_in_flight = 4
        h.start(fleet)
        h.running(fleet)
        h.wait(lambda: fleet.stats()["messagesFailed"] >= 4, what="rejected sends")
        stats = fleet.stats()
        assert stats["messagesSent"] == 4
        assert "limit 4" in fleet.devices[0].last_error
        assert transport.in_flight == 4
        h.rt.call(fleet.stop)
        assert transport.in_flight == 0
    finally:
        silent.close()


def test_launch_strategy_linear_on_a_coap_fleet(h: Harness) -> None:
    sink = h.sink()
    fleet = h.fleet("lin", model_dict(), 6, sink.port)
    h.start(fleet, LaunchSettings(strategy="linear", delay_ms=300))
    time.sleep(0.75)
    running = h.rt.call(lambda: fleet.count_states()["running"])
    assert 2 <= running <= 4
    h.running(fleet)
    time.sleep(0.4)
    h.rt.call(fleet.stop)
    first = {path: min(r["time"] for r in h.rt.call(sink.requests, path)) for path in h.rt.call(sink.counts)}
    starts = [first[f"/telemetry/lin-{i}"] for i in range(6)]
    assert starts == sorted(starts)
    assert 1.2 < starts[-1] - starts[0] < 2.5


def test_dropout_stops_the_sends_of_client_devices(h: Harness) -> None:
    sink = h.sink()
    fleet = h.fleet("drop", model_dict(), 4, sink.port)
    h.start(fleet)
    h.running(fleet)
    time.sleep(0.3)
    dropped = h.rt.call(fleet.start_dropout, DropoutSettings(strategy="immediate", count=2), 7)
    h.wait(lambda: fleet.count_states()["dropped"] == 2, what="two devices dropped")
    time.sleep(0.2)
    counts = h.rt.call(sink.counts)
    sent = {d: fleet.device(d).sent for d in dropped}
    time.sleep(0.8)
    later = h.rt.call(sink.counts)
    for device_id in dropped:
        assert later[f"/telemetry/{device_id}"] == counts[f"/telemetry/{device_id}"]
        assert fleet.device(device_id).sent == sent[device_id]
        assert not fleet.transport.is_connected(fleet.device(device_id))
    alive = [d.id for d in fleet.devices if d.id not in dropped]
    assert all(later[f"/telemetry/{d}"] > counts[f"/telemetry/{d}"] for d in alive)


def test_dropout_with_reconnect_resumes_sending_without_gaps(h: Harness) -> None:
    sink = h.sink()
    fleet = h.fleet("back", model_dict(), 3, sink.port)
    h.start(fleet)
    h.running(fleet)
    settings = DropoutSettings(strategy="immediate", count=1, reconnect=True, reconnect_delay_ms=400)
    (device_id,) = h.rt.call(fleet.start_dropout, settings, 1)
    device = fleet.device(device_id)
    h.wait(lambda: device.reconnects == 1 and device.state is DeviceState.RUNNING, what="device back")
    time.sleep(0.5)
    h.rt.call(fleet.stop)
    assert device.connects == 2
    report = h.rt.call(lambda: sink.tracker.report(fleet.expected_sequences()))
    assert report.lost == 0 and report.duplicates == 0, report.as_dict()


def test_behaviors_post_to_their_topic_as_a_path(h: Harness) -> None:
    sink = h.sink()
    data = model_dict(interval_ms=100)
    data["behaviors"] = [
        {
            "name": "hot",
            "condition": "temperature > 0",
            "cooldownMs": 250,
            "action": {"type": "publish", "topic": "alerts/${deviceId}", "payload": {"t": "${temperature}"}},
        }
    ]
    fleet = h.fleet("beh", data, 1, sink.port)
    run_for(h, fleet, 0.6)
    alerts = h.rt.call(sink.requests, "/alerts/beh-0")
    assert alerts and alerts[0]["contentFormat"] == 50 and "t" in json.loads(alerts[0]["payload"])
    assert fleet.stats()["behaviorsFired"] == len(alerts)


def test_a_fresh_socket_replaces_the_used_up_message_id_space(h: Harness) -> None:
    sink = h.sink()
    fleet = h.fleet("rot", model_dict(interval_ms=50), 2, sink.port)
    transport: CoapTransport = fleet.transport  # type: ignore[assignment]
    h.start(fleet)
    h.running(fleet)
    first = transport._endpoint
    h.rt.call(lambda: setattr(first, "used", 65536 // 2 - 1))  # the next message prepares a spare socket
    h.wait(lambda: transport._spare is not None and transport._spare.done(), what="spare socket ready")
    h.rt.call(lambda: setattr(first, "used", 65536 - 1))  # the next message uses the last id
    h.wait(lambda: transport._endpoint is not first, what="socket rotated")
    h.wait(lambda: first.transport is None, what="old socket closed once idle")
    time.sleep(0.3)
    h.rt.call(fleet.stop)
    stats = fleet.stats()
    assert stats["messagesFailed"] == 0 and stats["messagesAcked"] == stats["messagesSent"]
    assert h.rt.call(lambda: sink.tracker.report(fleet.expected_sequences())).lost == 0


def test_unresolvable_host_is_a_connect_failure_naming_it(h: Harness) -> None:
    fleet = h.fleet("nohost", model_dict(host="no-such-host.invalid"), 1)
    h.start(fleet)
    h.wait(lambda: fleet.devices[0].connect_failures >= 1, what="connect failure")
    assert "cannot resolve CoAP host 'no-such-host.invalid'" in fleet.devices[0].last_error


def udp_sockets() -> int:
    """UDP sockets of this process (from /proc/net/udp*: inodes of our fds)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as fh:
            count += sum(1 for line in fh.readlines()[1:] if line.split()[9] in inodes)
    return count


def test_stopping_fleets_closes_every_udp_socket() -> None:
    harness = Harness()
    try:
        before = udp_sockets()
        sink = harness.sink()
        client = harness.fleet("cl", model_dict(), 20, sink.port)
        server = harness.fleet("sv", model_dict(mode="server"), 5)
        for fleet in (client, server):
            harness.start(fleet)
            harness.running(fleet)
        assert udp_sockets() == before + 1 + 1 + 5  # sink, one client socket, one per server device
        harness.rt.call(harness.sim.shutdown)
        harness.rt.call(sink.stop)
        assert udp_sockets() == before
    finally:
        harness.close()


# -- the message layer against a scripted server --------------------------------------------------------


class ScriptedServer(asyncio.DatagramProtocol):
    """Answers each request as ``script(request) -> list of datagrams`` says; records what it got."""

    def __init__(self, script) -> None:
        self.script = script
        self.received: list[Any] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        msg = parse_message(data)
        self.received.append(msg)
        for datagram in self.script(msg, len(self.received)):
            self.transport.sendto(datagram, addr)


def scripted(h: Harness, script) -> tuple[ScriptedServer, int]:
    async def start():
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: ScriptedServer(script), local_addr=("127.0.0.1", 0)
        )
        return proto, transport.get_extra_info("sockname")[1]

    return h.rt.call(start)


def test_empty_ack_then_separate_response_is_acknowledged(h: Harness) -> None:
    def script(msg, n):
        if msg.mtype != CON:
            return []
        return [empty_message(ACK, msg.mid), encode_message(CON, 68, (msg.mid + 1000) & 0xFFFF, msg.token, b"", b"")]

    server, port = scripted(h, script)
    fleet = h.fleet("sep", model_dict(interval_ms=200), 1, port)
    stats = run_for(h, fleet, 0.5)
    assert stats["messagesAcked"] == stats["messagesSent"] > 0
    acks = [m for m in server.received if m.mtype == ACK]
    assert len(acks) == stats["messagesSent"]  # every separate CON response was acknowledged
    assert fleet.transport.separate_responses == stats["messagesSent"]
    h.rt.call(server.transport.close)


def test_retransmission_recovers_a_lost_request_and_rst_is_a_failure(h: Harness) -> None:
    first_mid: list[int] = []

    def script(msg, n):
        if not first_mid:
            first_mid.append(msg.mid)
            return []  # lose the first transmission of the first request
        if msg.mid == first_mid[0]:
            return [encode_message(ACK, 68, msg.mid, msg.token, b"", b"")]
        return [empty_message(RST, msg.mid)]  # reset every other request

    server, port = scripted(h, script)
    fleet = h.fleet("rtx", model_dict(interval_ms=400, ackTimeoutMs=100, maxRetransmit=2), 1, port)
    h.start(fleet)
    h.running(fleet)
    h.wait(lambda: fleet.stats()["messagesAcked"] == 1, what="retransmitted request acknowledged")
    h.wait(lambda: fleet.stats()["messagesFailed"] >= 1, what="RST counted")
    assert [m.mid for m in server.received].count(first_mid[0]) == 2  # the same message, sent again
    assert fleet.transport.retransmissions == 1
    assert "reset (RST) by the server" in fleet.devices[0].last_error
    h.rt.call(server.transport.close)


# -- server mode ----------------------------------------------------------------------------------------


def server_fleet(h: Harness, name: str, count: int = 2, interval_ms: int = 200, **connection: Any) -> Fleet:
    fleet = h.fleet(name, model_dict(interval_ms=interval_ms, mode="server", **connection), count)
    h.start(fleet)
    h.running(fleet)
    return fleet


def port_of(fleet: Fleet, index: int = 0) -> int:
    return fleet.transport.server_port_of(fleet.devices[index])  # type: ignore[attr-defined]


@needs_coap_client
def test_coap_client_observes_every_reading_of_a_server_device(h: Harness) -> None:
    fleet = server_fleet(h, "obs", count=2, interval_ms=150)
    port = port_of(fleet, 1)
    out = subprocess.run(
        [COAP_CLIENT, "-m", "get", "-s", "3", f"coap://127.0.0.1:{port}/telemetry"],
        capture_output=True,
        timeout=15,
        check=True,
    ).stdout
    text = out.decode()
    messages = [json.loads("{" + part) for part in text.split("{")[1:]]
    assert len(messages) >= 10
    assert {m["deviceId"] for m in messages} == {"obs-1"}
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # every reading, in order, none skipped


@needs_coap_client
def test_well_known_core_lists_telemetry_fields_and_commands(h: Harness) -> None:
    fleet = server_fleet(h, "wkc", count=1)
    out = subprocess.run(
        [COAP_CLIENT, "-m", "get", f"coap://127.0.0.1:{port_of(fleet)}/.well-known/core"],
        capture_output=True,
        timeout=10,
        check=True,
    ).stdout.decode()
    for link in ("</telemetry>", "</telemetry/temperature>", "</telemetry/humidity>", "</commands/setInterval>"):
        assert link in out
    assert "</commands/reboot>" in out and "obs" in out


def test_field_resource_and_observe_helper(h: Harness) -> None:
    fleet = server_fleet(h, "fld", count=1, interval_ms=100)
    base = f"coap://127.0.0.1:{port_of(fleet)}"
    code, payload = h.rt.call(coap_request, "GET", base + "/telemetry/temperature")
    assert code == "2.05" and 10 <= json.loads(payload) <= 30
    observation = h.rt.call(observe, base + "/telemetry")
    assert h.rt.call(observation.wait_for, 5, 5.0)
    seqs = [decode_envelope(p)["seq"] for p in observation.payloads()]
    assert seqs == sorted(seqs)
    h.rt.call(observation.cancel)


@needs_coap_client
def test_set_interval_command_is_recorded_and_changes_the_rate(h: Harness) -> None:
    fleet = server_fleet(h, "cmd", count=1, interval_ms=500)
    device = fleet.devices[0]
    out = subprocess.run(
        [
            COAP_CLIENT,
            "-m",
            "post",
            "-e",
            '{"intervalMs": 100}',
            f"coap://127.0.0.1:{port_of(fleet)}/commands/setInterval",
        ],
        capture_output=True,
        timeout=10,
        check=True,
    ).stdout.decode()
    assert json.loads(out)["status"] == "ok"
    record = device.commands[-1]
    assert record["command"] == "setInterval" and record["parameters"] == {"intervalMs": 100}
    assert record["topic"] == "/commands/setInterval"
    before = device.sent
    time.sleep(1.0)
    assert device.sent - before >= 12  # two groups at 100 ms instead of 500/1000 ms


def test_rejected_command_answers_bad_request(h: Harness) -> None:
    fleet = server_fleet(h, "bad", count=1)
    code, payload = h.rt.call(
        coap_request, "POST", f"coap://127.0.0.1:{port_of(fleet)}/commands/setInterval", b'{"intervalMs": 1}'
    )
    assert code == "4.00" and json.loads(payload)["status"] == "error"


def test_dropped_server_device_stops_answering_and_comes_back_on_the_same_port(h: Harness) -> None:
    fleet = server_fleet(h, "sdrop", count=2, serverPort=0)
    device = fleet.devices[0]
    port = port_of(fleet)
    uri = f"coap://127.0.0.1:{port}/telemetry"
    assert h.rt.call(coap_request, "GET", uri)[0] == "2.05"
    assert h.rt.call(fleet.drop_device, device)
    time.sleep(0.2)
    # its socket is closed: on loopback the kernel answers ICMP port unreachable, elsewhere it times out
    with pytest.raises(CoapClientError, match=r"no answer: .*Connection refused|timeout"):
        h.rt.call(coap_request, "GET", uri, timeout=1.0)
    assert h.rt.call(fleet.restore_device, device)
    h.wait(lambda: device.state is DeviceState.RUNNING, what="device back")
    assert port_of(fleet) == port
    code, payload = h.rt.call(coap_request, "GET", uri)
    assert code == "2.05" and decode_envelope(payload)["deviceId"] == "sdrop-0"
    assert device.reconnects == 1


def test_reboot_command_answers_then_rebinds_the_same_port(h: Harness) -> None:
    fleet = server_fleet(h, "boot", count=1)
    device = fleet.devices[0]
    port = port_of(fleet)
    code, _ = h.rt.call(
        coap_request, "POST", f"coap://127.0.0.1:{port}/commands/reboot", b'{"delayMs": 200}', timeout=3.0
    )
    assert code == "2.04"
    h.wait(lambda: device.reconnects == 1 and device.state is DeviceState.RUNNING, what="rebooted")
    assert port_of(fleet) == port
    assert h.rt.call(coap_request, "GET", f"coap://127.0.0.1:{port}/telemetry")[0] == "2.05"


def test_fixed_server_ports_follow_the_device_index(h: Harness) -> None:
    probe = silent_udp_port()
    base = probe.getsockname()[1]
    probe.close()
    fleet = server_fleet(h, "fixed", count=3, serverPort=base)
    assert [port_of(fleet, i) for i in range(3)] == [base, base + 1, base + 2]


def test_a_taken_server_port_is_a_connect_failure_naming_it(h: Harness) -> None:
    taken = silent_udp_port()
    try:
        port = taken.getsockname()[1]
        fleet = h.fleet("taken", model_dict(mode="server", serverPort=port), 1)
        h.start(fleet)
        h.wait(lambda: fleet.devices[0].connect_failures >= 1, what="connect failure")
        assert f"127.0.0.1:{port}" in fleet.devices[0].last_error
    finally:
        taken.close()


# -- the sink -------------------------------------------------------------------------------------------------


def test_sink_records_requests_per_path_and_counts_invalid_payloads(h: Harness) -> None:
    sink = h.sink()
    assert h.rt.call(coap_request, "PUT", sink.url + "/x/y", b"not an envelope", 0) == ("2.04", b"")
    envelope = json.dumps({"deviceId": "d", "seq": 0, "ts": int(time.time() * 1000)})
    h.rt.call(coap_request, "POST", sink.url + "/x/y", envelope, 50)
    records = h.rt.call(sink.requests, "/x/y")
    assert [r["method"] for r in records] == ["PUT", "POST"]
    assert [r["deviceId"] for r in records] == [None, "d"]
    assert records[0]["contentFormat"] == 0 and records[1]["payload"] == envelope.encode()
    assert sink.tracker.invalid == 1 and sink.tracker.received_from("d") == 1
    assert h.rt.call(coap_request, "GET", sink.url + "/anything")[0] == "2.05"
    h.rt.call(sink.clear)
    assert h.rt.call(sink.requests) == [] and sink.count == 0


def test_sink_runs_standalone_in_its_own_process() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "iotix.services.coap_server", "--port", "0", "--every", "0.3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready = proc.stdout.readline()
        assert ready.startswith("CoAP sink listening on coap://127.0.0.1:")
        url = ready.split()[-1]
        code, _ = asyncio.run(coap_request("POST", url + "/t/d", b"{}"))
        assert code == "2.04"
        line = proc.stdout.readline()
        while not line.startswith("requests 1 "):
            line = proc.stdout.readline()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert json.loads(out.strip().splitlines()[-1])["requests"] == 1
