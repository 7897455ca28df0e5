"""HTTP fleets: the generic flow against a recording aiohttp server, the IoTFlow flow against the local backend."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
import requests
from aiohttp import web
from harness import Harness, all_running

from iotix.fleet.delivery import DeliverySettings
from iotix.fleet.device import DeviceState
from iotix.fleet.fleet import Credentials
from iotix.fleet.timeline import DropoutSettings, LaunchSettings
from iotix.services import find_mosquitto, start_iotflow_backend, start_local_broker
from iotix.transport import http as http_transport
from iotix.transport.http import forget_api_keys, iso_utc, override_host_port
from iotix.transport.mqtt_probe import MqttProbe

pytestmark = pytest.mark.integration

SECRET = "tok-3f9a7c2e-never-logged"


# --- a recording HTTP server in its own thread and loop -----------------------------------------------------


class RecordingServer:
    """Answers every request with ``status`` (after ``delay`` s) and records it; counts peak concurrency."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.status = 200
        self.body = "ok"
        self.delay = 0.0
        self.echo_auth = False  # put the Authorization header into error bodies (a careless server)
        self.registrations = 0  # POST .../register answers 201 with a key at once (a fake IoTFlow)
        self.active = 0
        self.peak = 0
        self.peers: set[tuple[str, int]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner, self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.url = f"http://127.0.0.1:{self.port}"

    async def _start(self) -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.Response:
        self.active += 1
        self.peak = max(self.peak, self.active)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peers.add(peer[:2])
        try:
            body = await request.read()
            if request.path.endswith("/register"):
                self.registrations += 1
                name = json.loads(body)["name"]
                return web.json_response(
                    {"device": {"name": name, "api_key": f"k{self.registrations:031d}"}}, status=201
                )
            self.requests.append((request.method, request.path, dict(request.headers), body))
            if self.delay:
                await asyncio.sleep(self.delay)
            text = self.body
            if self.echo_auth:
                text = f"{text} (you sent {request.headers.get('Authorization')})"
            return web.Response(status=self.status, text=text)
        finally:
            self.active -= 1

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, _, body in self.requests]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


# --- fleets -----------------------------------------------------------------------------------------------


def http_model(url: str, model_id: str = "it-http", interval_ms: int = 100, **connection: Any) -> dict[str, Any]:
    return {
        "id": model_id,
        "name": "HTTP integration sensor",
        "version": "1.2.3",
        "type": "sensor",
        "protocol": "http",
        "connection": {"url": url, **connection},
        "telemetry": [
            {
                "name": "temperature",
                "type": "number",
                "intervalMs": interval_ms,
                "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
            },
            {
                "name": "blob",
                "type": "binary",
                "intervalMs": interval_ms,
                "generator": {"type": "constant", "value": "AAEC"},
            },
        ],
    }


@pytest.fixture
def server():
    s = RecordingServer()
    yield s
    s.close()


def seqs_by_device(bodies: list[dict[str, Any]], key: Callable[[dict[str, Any]], tuple[str, int]]) -> dict[str, list]:
    out: dict[str, list[int]] = defaultdict(list)
    for body in bodies:
        device, seq = key(body)
        out[device].append(seq)
    return out


# --- pure helpers -----------------------------------------------------------------------------------------


def test_host_and_port_override_touch_only_the_network_location() -> None:
    url = "http://user@example.com:8080/d/${deviceId}?x=1"
    assert override_host_port(url, "127.0.0.1", 9000) == "http://user@127.0.0.1:9000/d/${deviceId}?x=1"
    assert override_host_port(url, None, 9000) == "http://user@example.com:9000/d/${deviceId}?x=1"
    assert override_host_port(url, "EXAMPLE.com", 8080) == url  # same target: unchanged
    assert override_host_port("https://a/b", "::1", None) == "https://[::1]/b"
    assert override_host_port(url, None, None) == url


def test_iso_timestamps_are_utc_with_milliseconds() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1751466600123) == "2025-07-02T14:30:00.123Z"


# --- generic flow -----------------------------------------------------------------------------------------


def test_every_message_is_delivered_once_in_order_with_the_envelope(h: Harness, server: RecordingServer) -> None:
    data = http_model("http://localhost:1/devices/${deviceId}/telemetry")
    fleet = h.fleet("gen", data, 5, connection={"host": "127.0.0.1", "port": server.port})
    h.start(fleet)
    h.wait(lambda: all_running(fleet))
    time.sleep(1.0)
    h.stop(fleet)
    stats = fleet.stats()
    assert stats["messagesSent"] >= 5 * 8
    assert len(server.requests) == stats["messagesSent"] == stats["messagesAcked"]
    assert stats["messagesFailed"] == 0
    per_device = seqs_by_device(server.bodies(), lambda b: (b["deviceId"], b["seq"]))
    assert set(per_device) == {f"gen-{i}" for i in range(5)}
    for seqs in per_device.values():
        assert sorted(seqs) == list(range(len(seqs)))  # each seq once, none missing
    method, path, headers, body = server.requests[0]
    message = json.loads(body)
    assert method == "POST" and path == f"/devices/{message['deviceId']}/telemetry"
    assert headers["Content-Type"] == "application/json"
    assert message["blob"] == "AAEC"  # binary fields in base64
    assert fleet.transport.latency.count == stats["messagesAcked"]
    assert fleet.transport.describe()["requestLatencyMs"]["p50"] is not None


def test_body_template_method_and_headers_are_rendered_per_device(h: Harness, server: RecordingServer) -> None:
    data = http_model(
        server.url + "/ingest",
        method="PUT",
        headers={"X-Device": "${deviceId}", "X-Model": "${modelId}"},
        bodyTemplate={"id": "${deviceId}", "n": "${seq}", "reading": {"t": "${temperature}"}, "b": "${blob}"},
    )
    fleet = h.fleet("tpl", data, 2)
    h.start(fleet)
    h.wait(lambda: len(server.requests) >= 6, what="requests")
    h.stop(fleet)
    for method, path, headers, body in server.requests:
        message = json.loads(body)
        assert method == "PUT" and path == "/ingest"
        assert headers["X-Device"] == message["id"] and headers["X-Model"] == "it-http"
        assert isinstance(message["n"], int) and 10 <= message["reading"]["t"] <= 30 and message["b"] == "AAEC"


def test_success_statuses_come_from_the_model(h: Harness, server: RecordingServer) -> None:
    server.status = 202
    accepted = h.fleet("acc", http_model(server.url + "/a"), 2)
    strict = h.fleet("strict", http_model(server.url + "/s", model_id="it-strict", successStatuses=[200]), 2)
    h.start(accepted)
    h.start(strict)
    h.wait(lambda: strict.stats()["messagesFailed"] >= 4 and accepted.stats()["messagesAcked"] >= 4)
    assert accepted.stats()["messagesFailed"] == 0
    assert strict.stats()["messagesAcked"] == 0
    assert strict.devices[0].last_error.startswith(f"HTTP 202 from POST {server.url}/s: ok")


def test_a_500_storm_is_retried_opens_the_circuit_puts_devices_in_error_and_recovers(
    h: Harness, server: RecordingServer
) -> None:
    server.status = 500
    server.body = "internal error " + "x" * 500
    settings = DeliverySettings(
        max_retries=1,
        retry_base_s=0.01,
        retry_cap_s=0.02,
        circuit_threshold=20,
        circuit_cooldown_s=0.5,
        error_threshold=2,
    )
    fleet = h.fleet("storm", http_model(server.url + "/t/${deviceId}"), 4, delivery=settings)
    h.start(fleet)
    h.wait(lambda: fleet.stats()["circuitState"] == "open", what="the circuit to open")
    h.wait(lambda: fleet.stats()["failuresByReason"].get("circuit_open", 0) >= 4, what="refused sends")
    stats = fleet.stats()
    assert stats["messagesAcked"] == 0 and stats["retries"] >= 4 and stats["circuitOpens"] >= 1
    assert stats["failuresByReason"]["http_500"] >= 4
    assert stats["states"]["error"] == 4 and stats["runningDeviceCount"] == 0
    # Every request the server saw was an attempt: failed messages x 2 (one retry each), no more.
    assert len(server.requests) <= 2 * stats["failuresByReason"]["http_500"] + 4
    log = h.rt.call(lambda: list(fleet.devices[1].tlog.entries(100)))
    http_errors = [e["error"] for e in log if e["result"] in ("failed", "retrying")]
    prefix = f"HTTP 500 from POST {server.url}/t/storm-1: internal error x"
    assert http_errors and http_errors[0].startswith(prefix)
    assert len(http_errors[0]) == len(f"HTTP 500 from POST {server.url}/t/storm-1: ") + 200  # the first 200 bytes
    assert {e["result"] for e in log} >= {"retrying", "failed", "circuit_open"}
    server.status = 200
    h.wait(lambda: fleet.stats()["messagesAcked"] >= 8, what="recovery")
    h.wait(lambda: all_running(fleet), what="devices back to running")
    assert fleet.stats()["circuitState"] == "closed" and fleet.stats()["devicesRecovered"] == 4
    assert log[-1]["latencyMs"] is None or log[-1]["latencyMs"] >= 0


def test_the_token_is_sent_but_never_logged_nor_shown(h: Harness, server: RecordingServer, caplog) -> None:
    server.status = 401
    server.echo_auth = True
    fleet = h.fleet("tok", http_model(server.url + "/secure"), 2, credentials=Credentials(None, SECRET))
    with caplog.at_level("DEBUG"):
        h.start(fleet)
        h.wait(lambda: fleet.stats()["messagesFailed"] >= 4, what="401s")
        h.stop(fleet)
    assert server.requests[0][2]["Authorization"] == f"Bearer {SECRET}"
    error = fleet.devices[0].last_error
    assert error.startswith(f"HTTP 401 from POST {server.url}/secure: ok (you sent Bearer ***)")
    shown = [caplog.text, repr(fleet.stats()), repr(fleet.transport.describe()), repr(fleet.devices[0].status())]
    assert all(SECRET not in text for text in shown)


def test_headers_may_place_the_token_themselves(h: Harness, server: RecordingServer) -> None:
    data = http_model(server.url + "/x", token=SECRET, headers={"authorization": "Token ${token}"})
    fleet = h.fleet("tokhdr", data, 1)
    h.start(fleet)
    h.wait(lambda: len(server.requests) >= 2, what="requests")
    h.stop(fleet)
    headers = server.requests[0][2]
    assert headers["Authorization"] == f"Token {SECRET}"  # the model's header replaces the default Bearer


def test_requests_in_flight_never_exceed_max_connections(h: Harness, server: RecordingServer) -> None:
    server.delay = 0.1
    fleet = h.fleet("bound", http_model(server.url + "/b", maxConnections=3), 20)
    h.start(fleet)
    h.wait(lambda: fleet.stats()["messagesAcked"] >= 60, what="acks")
    h.stop(fleet)
    assert server.peak == 3  # saturated, never above the bound
    assert len(server.peers) <= 3  # keep-alive: the same 3 connections carried everything


def test_beyond_the_backlog_sends_are_refused_and_counted(h: Harness, server: RecordingServer) -> None:
    server.delay = 1.0
    fleet = h.fleet("full", http_model(server.url + "/f", maxConnections=1, timeoutMs=5000), 20)
    h.start(fleet)
    h.wait(lambda: fleet.stats()["messagesFailed"] >= 10, what="refusals")
    refused = [d.last_error for d in fleet.devices if d.last_error]
    assert any("requests already wait for the 1 connections" in e for e in refused)
    h.wait(lambda: len(server.requests) >= 2, what="requests served one by one")
    assert server.peak == 1
    h.stop(fleet)


def test_an_unreachable_or_silent_target_fails_with_the_reason(h: Harness, server: RecordingServer) -> None:
    down = h.fleet("down", http_model("http://127.0.0.1:1/t"), 1)
    server.delay = 2.0
    slow = h.fleet("slow", http_model(server.url + "/slow", model_id="it-slow", timeoutMs=300), 1)
    h.start(down)
    h.start(slow)
    h.wait(lambda: down.stats()["messagesFailed"] >= 2 and slow.stats()["messagesFailed"] >= 2, what="failures")
    assert "POST http://127.0.0.1:1/t failed: cannot connect to 127.0.0.1:1" in down.devices[0].last_error
    assert slow.devices[0].last_error.startswith(f"no answer from POST {server.url}/slow within 0.3 s")
    # Sends keep failing: the devices are in state error, still trying (not stopped, not reconnecting).
    h.wait(lambda: down.devices[0].state is DeviceState.ERROR, what="the unreachable device in state error")
    assert down.stats()["failuresByReason"]["connection_error"] >= 1


def test_a_pool_whose_requests_keep_timing_out_is_replaced_when_the_server_accepts_connections(
    h: Harness, server: RecordingServer, monkeypatch
) -> None:
    monkeypatch.setattr(http_transport, "HEALTH_INTERVAL_S", 0.2)
    server.delay = 1.0
    settings = DeliverySettings(max_retries=0, circuit_threshold=0)
    fleet = h.fleet("pool", http_model(server.url + "/p", timeoutMs=200), 2, delivery=settings)
    h.start(fleet)
    h.wait(lambda: fleet.stats()["transport"]["poolsReplaced"] >= 1, what="the pool to be replaced")
    server.delay = 0.0
    acked = fleet.stats()["messagesAcked"]
    h.wait(lambda: fleet.stats()["messagesAcked"] > acked + 4, what="delivery through the new pool")
    h.stop(fleet)


def test_launch_strategy_and_dropout_stop_and_resume_sends(h: Harness, server: RecordingServer) -> None:
    fleet = h.fleet("drop", http_model(server.url + "/d/${deviceId}"), 6)
    t0 = time.monotonic()
    h.start(fleet, LaunchSettings(strategy="batch", batch_size=2, delay_ms=400))
    time.sleep(0.2)
    assert 2 <= fleet.launched < 6
    h.wait(lambda: all_running(fleet), what="launch")
    assert time.monotonic() - t0 >= 0.8  # the third batch starts at 0.8 s
    time.sleep(0.3)
    plan = h.rt.call(
        fleet.start_dropout, DropoutSettings(strategy="immediate", count=2, reconnect=True, reconnect_delay_ms=1000), 5
    )
    h.wait(lambda: all(fleet.by_id[d].state is DeviceState.DROPPED for d in plan), what="dropped")
    time.sleep(0.3)  # requests in flight at the drop have arrived
    silent_from = len(server.requests)
    time.sleep(0.4)
    during = [json.loads(b)["deviceId"] for _, _, _, b in server.requests[silent_from:]]
    assert not set(plan) & set(during)  # dropped devices send nothing
    assert set(during) == {d.id for d in fleet.devices} - set(plan)  # the others keep sending
    h.wait(lambda: all_running(fleet) and all(fleet.by_id[d].reconnects == 1 for d in plan), what="back")
    time.sleep(0.5)
    h.stop(fleet)
    per_device = seqs_by_device(server.bodies(), lambda b: (b["deviceId"], b["seq"]))
    for device_id in plan:
        seqs = per_device[device_id]
        assert len(seqs) == len(set(seqs)) and max(seqs) + 1 == fleet.by_id[device_id].seq
        assert fleet.by_id[device_id].seq > 0
    assert fleet.stats()["messagesSent"] == len(server.requests)


# --- IoTFlow flow -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker():
    if find_mosquitto() is None:
        pytest.skip("Mosquitto is not installed")
    b = start_local_broker("mosquitto")
    yield b
    b.stop()


@pytest.fixture(scope="module")
def iotflow():
    backend = start_iotflow_backend()
    yield backend
    backend.stop()


def iotflow_model(base: str, model_id: str = "it-iotflow", interval_ms: int = 200, **connection: Any) -> dict:
    data = http_model(base, model_id=model_id, interval_ms=interval_ms, flow="iotflow", **connection)
    data["connection"].setdefault("registration", {"location": "lab ${index}", "hardware_version": "rev-b"})
    return data


def admin_get(backend, path: str, **params: Any) -> dict[str, Any]:
    response = requests.get(backend.url + path, headers=backend.admin_headers, params=params, timeout=10)
    response.raise_for_status()
    return response.json()


def registered(backend, prefix: str) -> dict[str, dict[str, Any]]:
    devices = admin_get(backend, "/api/v1/admin/devices")["devices"]
    return {d["name"]: d for d in devices if d["name"].startswith(prefix)}


def records_of(backend, device_id: int) -> list[dict[str, Any]]:
    return admin_get(backend, "/api/v1/admin/telemetry/export", device_id=device_id)["records"]


def test_registrations_do_not_queue_behind_a_saturated_pool(h: Harness, server: RecordingServer) -> None:
    server.delay = 0.5  # telemetry is slow: 2 connections serve 4 requests/s, 30/s arrive
    data = iotflow_model(server.url, interval_ms=100, maxConnections=2, timeoutMs=1500, heartbeatIntervalMs=0)
    fleet = h.fleet("prio", data, 6)
    h.start(fleet, LaunchSettings(strategy="linear", delay_ms=400))
    h.wait(lambda: all_running(fleet), what="every device registered")
    assert server.registrations == 6 and all(d.connect_failures == 0 for d in fleet.devices)
    assert fleet.transport.describe()["connectionsInUse"] <= 2 and server.peak <= 2
    h.stop(fleet)


def test_iotflow_register_telemetry_and_heartbeats(h: Harness, iotflow, caplog) -> None:
    prefix = f"reg{os.getpid()}"
    fleet = h.fleet(prefix, iotflow_model(iotflow.url, heartbeatIntervalMs=300), 3)
    with caplog.at_level("DEBUG", logger="iotix"):
        h.start(fleet)
        h.wait(lambda: all_running(fleet))
        time.sleep(1.2)
        h.stop(fleet)
    transport = fleet.transport
    stats = fleet.stats()
    assert stats["messagesAcked"] == stats["messagesSent"] >= 3 * 5
    assert transport.heartbeats_sent >= 3 * 2 and transport.heartbeats_failed == 0
    devices = registered(iotflow, prefix)
    assert set(devices) == {d.id for d in fleet.devices}
    first = devices[f"{prefix}-1"]
    assert first["device_type"] == "sensor" and first["firmware_version"] == "1.2.3"
    assert first["location"] == "lab 1" and first["hardware_version"] == "rev-b"
    records = records_of(iotflow, first["id"])
    assert [r["metadata"]["seq"] for r in records] == list(range(fleet.by_id[f"{prefix}-1"].seq))
    record = records[0]
    assert record["metadata"]["deviceId"] == f"{prefix}-1" and record["metadata"]["simulator"] == "iotix"
    assert set(record["data"]) == {"temperature", "blob"} and record["data"]["blob"] == "AAEC"
    assert record["timestamp"].startswith(iso_utc(record["metadata"]["ts"])[:23])
    for device in fleet.devices:  # the key is kept, and never logged
        assert device.conn.api_key and device.conn.api_key not in caplog.text
        assert device.conn.api_key not in repr(device.conn)


def test_iotflow_name_conflicts_follow_on_conflict(h: Harness, iotflow) -> None:
    forget_api_keys()
    ids = [f"dup{os.getpid()}-0"]
    first = h.fleet("first", iotflow_model(iotflow.url), 1, ids=ids)
    h.start(first)
    h.wait(lambda: all_running(first))
    h.delete(first)

    reuse = h.fleet("reuse", iotflow_model(iotflow.url, model_id="it-reuse", onConflict="reuse"), 1, ids=ids)
    h.start(reuse)
    h.wait(lambda: reuse.stats()["messagesAcked"] >= 2, what="acks with the reused key")
    assert reuse.devices[0].conn.name == ids[0]
    h.delete(reuse)

    failing = h.fleet("failing", iotflow_model(iotflow.url, model_id="it-fail"), 1, ids=ids)
    h.start(failing)
    h.wait(lambda: failing.devices[0].connect_failures >= 1, what="refused registration")
    error = failing.devices[0].last_error
    assert f"device '{ids[0]}'" in error and "already registered" in error and "onConflict is 'fail'" in error
    assert failing.devices[0].state is DeviceState.CONNECTING
    h.delete(failing)

    suffixed = h.fleet("suffixed", iotflow_model(iotflow.url, model_id="it-suffix", onConflict="suffix"), 1, ids=ids)
    h.start(suffixed)
    h.wait(lambda: suffixed.stats()["messagesAcked"] >= 2, what="acks under the suffixed name")
    assert suffixed.devices[0].conn.name == f"{ids[0]}_1"
    h.stop(suffixed)
    record = records_of(iotflow, registered(iotflow, ids[0])[f"{ids[0]}_1"]["id"])[0]
    assert record["metadata"]["deviceId"] == ids[0]  # the simulator's id travels in the metadata
    h.delete(suffixed)

    forget_api_keys()
    lost = h.fleet("lost", iotflow_model(iotflow.url, model_id="it-lost", onConflict="reuse"), 1, ids=ids)
    h.start(lost)
    h.wait(lambda: lost.devices[0].connect_failures >= 1, what="refused reuse")
    assert "onConflict 'reuse' has no API key" in lost.devices[0].last_error


def test_iotflow_revoked_key_fails_with_the_status_and_others_keep_working(h: Harness, iotflow) -> None:
    prefix = f"rev{os.getpid()}"
    fleet = h.fleet(prefix, iotflow_model(iotflow.url, model_id="it-revoke", heartbeatIntervalMs=0), 3)
    h.start(fleet)
    h.wait(lambda: all(d.acked >= 2 for d in fleet.devices), what="acks")
    victim = registered(iotflow, prefix)[f"{prefix}-0"]
    response = requests.put(
        f"{iotflow.url}/api/v1/admin/devices/{victim['id']}/status",
        json={"status": "inactive"},
        headers=iotflow.admin_headers,
        timeout=10,
    )
    response.raise_for_status()
    device, other = fleet.devices[0], fleet.devices[1]
    h.wait(lambda: device.failed >= 3, what="403s")
    acked = other.acked
    h.wait(lambda: other.acked >= acked + 3, what="the others keep going")
    assert device.last_error.startswith(f"HTTP 403 from POST {iotflow.url}/api/v1/devices/telemetry")
    assert "revoked" in device.last_error
    # A 403 is the device's own problem: it goes to state error, the circuit of the fleet stays closed.
    h.wait(lambda: device.state is DeviceState.ERROR, what="the revoked device in state error")
    assert other.state is DeviceState.RUNNING and other.failed == 0
    assert fleet.stats()["circuitState"] == "closed" and fleet.stats()["retries"] == 0


def test_hybrid_device_registers_over_http_and_publishes_over_mqtt(h: Harness, broker) -> None:
    backend = start_iotflow_backend(mqtt_host=broker.host, mqtt_port=broker.port)
    probe: MqttProbe | None = None
    try:
        probe = h.rt.call(_probe, broker)
        prefix = f"hyb{os.getpid()}"
        data = iotflow_model(backend.url, model_id="it-hybrid", telemetryOver="mqtt", heartbeatIntervalMs=300)
        fleet = h.fleet(prefix, data, 2)
        h.start(fleet)
        h.wait(lambda: all_running(fleet))
        messages = h.rt.call(probe.wait_for, "iotflow/devices/+/telemetry", 6, 10.0)
        body = json.loads(messages[0].payload)
        assert body["metadata"]["deviceId"].startswith(prefix) and "temperature" in body["data"]
        assert fleet.transport.is_connected(fleet.devices[0])
        h.wait(lambda: fleet.transport.heartbeats_sent >= 2, what="heartbeats over HTTP")
        device = fleet.devices[0]
        h.rt.call(fleet.drop_device, device)
        assert not fleet.transport.is_connected(device) and device.conn.mqtt._sock is None
        h.rt.call(fleet.restore_device, device)
        h.wait(lambda: device.state is DeviceState.RUNNING and device.reconnects == 1, what="back")
        assert device.conn.mqtt.is_open
        h.stop(fleet)
        assert registered(backend, prefix).keys() == {d.id for d in fleet.devices}  # registered once each
    finally:
        if probe is not None:
            h.rt.call(probe.close)
        backend.stop()


async def _probe(broker) -> MqttProbe:
    probe = MqttProbe("default", f"it-http-probe-{os.getpid()}-{time.monotonic_ns()}")
    await probe.connect(broker.host, broker.port)
    await probe.subscribe("iotflow/devices/+/telemetry", 0)
    return probe
