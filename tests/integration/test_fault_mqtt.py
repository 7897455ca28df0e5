"""Network faults on MQTT fleets against a real Mosquitto, proven on the wire by an independent receiver.

The fleets' connections pass the fault layer's socket wrapper (iotix.fault.sock); the receiver
(:class:`iotix.transport.mqtt_probe.MqttProbe`, its own connection without faults) and Mosquitto's log say
what really happened: latency at the receiver, wills published on keep-alive expiry (no FIN, no RST), the
share of PUBLISH packets lost, reconnects after an outage.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import BrokerHarness, all_running

from iotix.fault.sock import FaultSocket
from iotix.fault.spec import parse_fault
from iotix.fleet.device import DeviceState
from iotix.fleet.fleet import Fleet, FleetOptions
from iotix.security import CertificateAuthority, create_device_certificates, default_device_targets, load_or_create_ca
from iotix.services import MqttBroker, find_mosquitto, start_local_broker
from iotix.transport.mqtt_probe import MqttProbe
from iotix.transport.tls import client_tls

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed"),
]

OPTIONS = FleetOptions(reconnect_base_s=0.1, reconnect_cap_s=0.5)
#: How late after 1.5 x keep-alive Mosquitto may notice an expired keep-alive: 2.0 sweeps its clients every
#: few seconds (measured with a raw silent client: keep-alive 5 s -> disconnected after 10.7-11.6 s).
BROKER_SWEEP_S = 6.0


def model_dict(interval_ms: int = 100, qos: int = 0, keepalive: int = 30, **connection: Any) -> dict[str, Any]:
    return {
        "id": "fault-sensor",
        "name": "fault sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {
            "host": "127.0.0.1",
            "port": 1883,
            "topicPattern": "ft/${deviceId}/telemetry",
            "qos": qos,
            "keepAlive": keepalive,
            **connection,
        },
        "telemetry": [
            {
                "name": "temperature",
                "type": "number",
                "intervalMs": interval_ms,
                "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
            }
        ],
    }


class Harness(BrokerHarness):
    def receiver(self, topic: str, **connect: Any) -> MqttProbe:
        async def make() -> MqttProbe:
            probe = MqttProbe("faults", f"ft-probe-{os.getpid()}-{time.monotonic_ns()}")
            await probe.connect(self.broker.host, self.broker.port, **connect)
            await probe.subscribe(topic, 1)
            return probe

        probe = self.rt.call(make)
        self.on_close(lambda: self.rt.call(probe.close))
        return probe

    def add_fault(self, fleet: Fleet, kind: str, devices: list[str] | None = None, **settings: Any) -> str:
        def add() -> str:
            assert fleet.faults is not None
            spec = parse_fault(kind, settings, name=None, target=f"fleet '{fleet.name}'", datagram=False)
            return fleet.faults.add(spec, devices).name

        return self.rt.call(add)

    def fault_stats(self, fleet: Fleet) -> dict[str, dict[str, Any]]:
        assert fleet.faults is not None
        return {entry["name"]: entry for entry in self.rt.call(fleet.faults.describe)}


@pytest.fixture(scope="module")
def broker() -> Iterator[MqttBroker]:
    b = start_local_broker("mosquitto")
    yield b
    b.stop()


@pytest.fixture
def h(broker: MqttBroker) -> Iterator[Harness]:
    harness = Harness(broker)
    yield harness
    harness.close()


def latencies(probe: MqttProbe, topic: str, since: float) -> list[float]:
    """Seconds from each message's ``ts`` (stamped by the device) to its arrival at the receiver."""
    out = []
    for msg in probe.messages_on(topic):
        ts = json.loads(msg.payload)["ts"] / 1000.0
        if ts >= since:
            out.append(msg.received_at - ts)
    return out


def binomial_bound(n: int, p: float, sigmas: float = 4.0) -> float:
    return sigmas * math.sqrt(n * p * (1 - p))


# ------------------------------------------------------------------------------------------------------ latency


def test_upstream_latency_raises_the_receivers_latency_by_the_setting(h: Harness) -> None:
    probe = h.receiver("ft/+/telemetry")
    fleet = h.fleet("lat", model_dict(interval_ms=50), 5, options=OPTIONS)
    h.start(fleet)
    h.running(fleet)
    assert all(isinstance(d.conn._sock, FaultSocket) for d in fleet.devices)
    start = time.time() + 0.3
    time.sleep(2.0)
    base = statistics.median(latencies(probe, "ft/+/telemetry", start))
    h.add_fault(fleet, "latency", latency="200ms", direction="upstream")
    start = time.time() + 0.3
    time.sleep(2.3)
    delayed = latencies(probe, "ft/+/telemetry", start)
    assert len(delayed) >= 5 * 30
    added = statistics.median(delayed) - base
    assert abs(added - 0.200) <= 0.1 * 0.200 + 0.005, (base, added)
    assert min(delayed) >= 0.195
    stats = h.fault_stats(fleet)["latency-1"]
    assert stats["packets_delayed"] >= len(delayed) and stats["connections_affected"] == 5
    assert fleet.stats()["disconnects"] == 0


# ---------------------------------------------------------------------------------------------------- partition


def test_a_partition_lets_the_broker_publish_exactly_those_wills_on_keepalive_expiry(h: Harness) -> None:
    keepalive = 5
    probe = h.receiver("ft/#")
    data = model_dict(
        interval_ms=100, keepalive=keepalive, lastWill={"topic": "ft/${deviceId}/will", "payload": "gone", "qos": 1}
    )
    fleet = h.fleet("part", data, 6, options=OPTIONS)
    h.start(fleet)
    h.running(fleet)
    cut = ["part-1", "part-4"]
    h.add_fault(fleet, "blackhole", cut)
    partitioned_at = time.time()
    others = [d.id for d in fleet.devices if d.id not in cut]
    before = {d: len(probe.messages_on(f"ft/{d}/telemetry")) for d in others}

    deadline = partitioned_at + 1.5 * keepalive + BROKER_SWEEP_S
    while time.time() < deadline and len(probe.messages_on("ft/+/will")) < len(cut):
        time.sleep(0.1)
    wills = probe.messages_on("ft/+/will")
    assert sorted(m.topic for m in wills) == sorted(f"ft/{d}/will" for d in cut)
    for will in wills:  # not before the broker's keep-alive (1.5 x) could expire
        assert keepalive <= will.received_at - partitioned_at <= 1.5 * keepalive + BROKER_SWEEP_S
    log = h.broker.log_path.read_text(encoding="utf-8", errors="replace")
    for device in cut:  # the broker timed them out: it saw no FIN and no RST
        assert re.search(rf"Client {device} has exceeded timeout", log), log[-2000:]
    # the others kept sending at their full rate the whole time
    time.sleep(0.3)
    for device in others:
        assert len(probe.messages_on(f"ft/{device}/telemetry")) - before[device] >= 9 * (time.time() - partitioned_at)
    assert h.rt.call(lambda: {d.id for d in fleet.devices if d.state is not DeviceState.RUNNING}) <= set(cut)

    # paho gave up on the cut devices (its keep-alive), but their sockets stay open and silent until healed
    h.wait(lambda: len(fleet.faults.deferred) == len(cut), 10, "the cut devices' sockets deferred")
    assert h.fault_stats(fleet)["blackhole-1"]["connections_refused"] >= 1  # reconnects got no answer

    h.rt.call(fleet.faults.remove, "blackhole-1")
    healed_at = time.time()
    h.running(fleet, timeout=20)
    assert h.rt.call(lambda: len(fleet.faults.deferred)) == 0
    for device in cut:
        h.wait(
            lambda d=device: any(
                json.loads(m.payload)["ts"] / 1000 > healed_at for m in probe.messages_on(f"ft/{d}/telemetry")
            ),
            10,
            f"{device} sending again",
        )
    assert len(probe.messages_on("ft/+/will")) == len(cut)


# ------------------------------------------------------------------------------------------------- MQTT faults


def test_dropping_a_tenth_of_publish_packets_loses_a_tenth_at_the_receiver(h: Harness) -> None:
    probe = h.receiver("ft/+/telemetry")
    fleet = h.fleet("drop", model_dict(interval_ms=50), 20, options=OPTIONS, seed=11)
    h.add_fault(fleet, "mqtt", packet="PUBLISH", action="drop", probability="10%", direction="upstream")
    h.start(fleet)
    h.running(fleet)
    time.sleep(5.0)
    assert fleet.stats()["disconnects"] == 0  # a dropped PUBLISH is no broken connection
    h.stop(fleet)
    time.sleep(0.5)
    report = h.rt.call(lambda: probe.tracker.report(fleet.expected_sequences()))
    n = report.expected
    assert n >= 20 * 80
    assert abs(report.lost - 0.1 * n) <= binomial_bound(n, 0.1), report.as_dict()
    assert report.duplicates == 0
    dropped = h.fault_stats(fleet)["mqtt-1"]["packets_dropped"]
    assert dropped == report.lost  # the layer's count is what the receiver missed
    assert report.worst(1)[0].first_missing  # the tracker names the gaps


def test_an_outage_that_refuses_sends_devices_reconnecting_until_the_target_is_up(h: Harness) -> None:
    probe = h.receiver("ft/+/telemetry")
    fleet = h.fleet("down", model_dict(interval_ms=100), 8, options=OPTIONS)
    h.start(fleet)
    h.running(fleet)
    h.rt.call(fleet.faults.take_down, "refuse", None)
    h.wait(lambda: not any(d.state is DeviceState.RUNNING for d in fleet.devices), 10, "every device lost")
    time.sleep(1.0)
    states = h.rt.call(lambda: {d.state for d in fleet.devices})
    assert states == {DeviceState.RECONNECTING}
    errors = h.rt.call(lambda: {d.last_error for d in fleet.devices})
    assert any("Connection refused (network fault: target down)" in (e or "") for e in errors), errors
    stats = h.fault_stats(fleet)["target-down"]
    assert stats["connections_reset"] == 8 and stats["connections_refused"] >= 8
    quiet_since = time.time()
    assert not [m for m in probe.messages_on("ft/+/telemetry") if m.received_at > quiet_since + 0.2]
    h.rt.call(fleet.faults.bring_up)
    h.running(fleet, timeout=15)
    up_at = time.time()
    h.wait(
        lambda: len({m.topic for m in probe.messages_on("ft/+/telemetry") if m.received_at > up_at}) == 8,
        10,
        "every device sending again",
    )
    assert all_running(fleet)


# -------------------------------------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MqttBroker, CertificateAuthority, Path]]:
    ca_dir = tmp_path_factory.mktemp("ca")
    ca = load_or_create_ca(ca_dir)
    broker = start_local_broker(tls=True, ca_dir=ca_dir)
    yield broker, ca, tmp_path_factory.mktemp("fleet")
    broker.stop()


def test_mqtt_packet_faults_and_latency_act_on_the_plaintext_of_a_tls_connection(
    tls_setup: tuple[MqttBroker, CertificateAuthority, Path],
) -> None:
    broker, ca, tls_dir = tls_setup
    ids = [f"tls-{i}" for i in range(3)]
    create_device_certificates(ca, default_device_targets(tls_dir, ids), ca_copy=tls_dir / "certs/ca.pem")
    h = Harness(broker)
    try:
        info = broker.info()
        probe = h.receiver("ft/+/telemetry", tls=client_tls(info["ca"], info["clientCert"], info["clientKey"]))
        data = model_dict(
            interval_ms=50,
            tls={"caFile": "certs/ca.pem", "certFile": "certs/${deviceId}.pem", "keyFile": "certs/${deviceId}.key"},
        )
        options = FleetOptions(tls_dir=str(tls_dir), reconnect_base_s=0.1, reconnect_cap_s=0.5)
        fleet = h.fleet("tls", data, 3, ids=ids, options=options)
        h.start(fleet)
        h.running(fleet)
        assert all(isinstance(d.conn._sock, FaultSocket) and d.conn._sock.tls for d in fleet.devices)
        drop = h.add_fault(fleet, "mqtt", ["tls-0"], packet="PUBLISH", action="drop")
        h.add_fault(fleet, "latency", ["tls-1"], latency="200ms", direction="upstream")
        since = time.time() + 0.3
        time.sleep(1.5)
        arrived = {d: latencies(probe, f"ft/{d}/telemetry", since) for d in ids}
        assert not arrived["tls-0"]  # every PUBLISH dropped, in the plaintext under TLS
        assert len(arrived["tls-2"]) >= 15 and statistics.median(arrived["tls-2"]) < 0.1
        assert len(arrived["tls-1"]) >= 10 and 0.195 <= statistics.median(arrived["tls-1"]) < 0.3
        assert h.fault_stats(fleet)[drop]["packets_dropped"] >= 20
        h.rt.call(fleet.faults.remove, drop)
        since = time.time() + 0.2
        h.wait(lambda: latencies(probe, "ft/tls-0/telemetry", since), 5, "tls-0 heard again")
        assert fleet.stats()["disconnects"] == 0  # the TLS session carried on throughout
    finally:
        h.close()
