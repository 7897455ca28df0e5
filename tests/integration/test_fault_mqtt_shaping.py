"""Network faults on MQTT fleets as an independent receiver sees them, against a real Mosquitto (issue 12).

Faults are added the way the Chaos keywords add them (``sim.network.add`` on the runtime loop); what is
measured is what arrived at a receiver that is not part of the fleet and not behind the fault layer (an
:class:`~iotix.transport.mqtt_probe.MqttProbe` of its own): end-to-end latency from each envelope's ``ts`` to
its arrival, bytes per second per device, and per-device sequence gaps.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any

import pytest
from harness import BrokerHarness

from iotix.fleet.fleet import Fleet
from iotix.services import find_mosquitto, start_local_broker
from iotix.transport.mqtt_probe import MqttProbe, ReceivedMessage

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed"),
]

UPSTREAM = "upstream"


def model_dict(model_id: str, *, interval_ms: int, qos: int = 0, padding: int = 0, **connection: Any) -> dict[str, Any]:
    """A sensor on ``fs/<model>/<device>/telemetry``; ``padding`` adds a constant string of that many characters;
    ``connection`` adds connection settings."""
    telemetry: list[dict[str, Any]] = [
        {
            "name": "temperature",
            "type": "number",
            "intervalMs": interval_ms,
            "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
        }
    ]
    if padding:
        telemetry.append(
            {
                "name": "note",
                "type": "string",
                "intervalMs": interval_ms,
                "generator": {"type": "constant", "value": "x" * padding},
            }
        )
    return {
        "id": model_id,
        "name": "fault shaping sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {
            "host": "127.0.0.1",
            "port": 1883,
            "topicPattern": "fs/${modelId}/${deviceId}/telemetry",
            "qos": qos,
            "keepAlive": 30,
            **connection,
        },
        "telemetry": telemetry,
    }


class Harness(BrokerHarness):
    """The shared harness with fleets pointed at one broker, a receiver, and the simulator's network."""

    def receiver(self, topic: str, qos: int) -> MqttProbe:
        async def make() -> MqttProbe:
            probe = MqttProbe("shaping", f"fs-probe-{os.getpid()}-{time.monotonic_ns()}")
            await probe.connect(self.broker.host, self.broker.port)
            await probe.subscribe(topic, qos)
            return probe

        probe: MqttProbe = self.rt.call(make)
        self.on_close(lambda: self.rt.call(probe.close))
        return probe

    def add_fault(self, fleet: Fleet, kind: str, settings: dict[str, Any], name: str) -> str:
        return self.rt.call(self.sim.network.add, fleet.name, kind, settings, fault_name=name)

    def replace_fault(self, fleet: Fleet, kind: str, settings: dict[str, Any], name: str) -> str:
        """Remove the fault ``name`` (if there) and add the new one in the same loop step: no gap between them."""

        def swap() -> str:
            network = self.sim.network
            if any(f["name"] == name for f in network.describe(fleet.name)):
                network.remove(fleet.name, name)
            return network.add(fleet.name, kind, settings, fault_name=name)

        return self.rt.call(swap)

    def fault(self, fleet: Fleet, name: str) -> dict[str, Any]:
        faults = self.rt.call(self.sim.network.describe, fleet.name)
        return next(f for f in faults if f["name"] == name)


@pytest.fixture(scope="module")
def broker():
    b = start_local_broker("mosquitto")
    yield b
    b.stop()


@pytest.fixture
def h(broker):
    harness = Harness(broker)
    yield harness
    harness.close()


def now_ms() -> float:
    return time.time() * 1000.0


def latencies_ms(messages: list[ReceivedMessage], since_ms: float, until_ms: float) -> list[float]:
    """End-to-end latency (arrival - the envelope's ``ts``) of the readings produced in ``[since, until)``."""
    out = []
    for m in messages:
        ts = json.loads(m.payload)["ts"]
        if since_ms <= ts < until_ms:
            out.append(m.received_at * 1000.0 - ts)
    return out


def spread(samples: list[float]) -> float:
    """p90 - p10."""
    deciles = statistics.quantiles(samples, n=10)
    return deciles[8] - deciles[0]


def describe(name: str, samples: list[float]) -> str:
    return (
        f"{name}: n={len(samples)} median={statistics.median(samples):.1f} ms p10-p90 spread={spread(samples):.1f} ms "
        f"stdev={statistics.stdev(samples):.1f} ms"
    )


def test_jitter_widens_the_spread_and_keeps_the_median(h: Harness) -> None:
    """Latency 100 ms upstream, then 100 ms with 40 ms of uniform jitter: the median rises by 100 ms over the
    baseline either way; the jitter widens the p10-p90 spread by about its width (uniform +-40 ms: 64 ms
    between p10 and p90), and never by more than 2 x jitter.

    A device sends every 100 ms, so consecutive readings of one connection (whose order TCP keeps) never
    overtake each other at +-40 ms: what the receiver sees is the drawn delay, not the stream's order.
    """
    jitter = 40.0
    probe = h.receiver("fs/jit/+/telemetry", qos=0)
    fleet = h.fleet("jit", model_dict("jit", interval_ms=100), 20)
    h.start(fleet)
    h.running(fleet)
    windows: dict[str, tuple[float, float]] = {}

    def measure(name: str, settle: float = 0.6, length: float = 2.5) -> None:
        time.sleep(settle)  # readings queued under the previous setting are out of the window
        t0 = now_ms()
        time.sleep(length)
        windows[name] = (t0, now_ms())

    measure("baseline")
    h.replace_fault(fleet, "latency", {"latency": "100ms", "direction": UPSTREAM}, "shape")
    measure("latency")
    h.replace_fault(fleet, "latency", {"latency": "100ms", "jitter": "40ms", "direction": UPSTREAM}, "shape")
    measure("jitter")
    time.sleep(0.5)  # the last readings of the window are on their way (<= 140 ms)
    fault = h.fault(fleet, "shape")
    messages = h.rt.call(lambda: list(probe.messages_on("fs/jit/+/telemetry")))
    base, flat, jit = (latencies_ms(messages, *windows[name]) for name in ("baseline", "latency", "jitter"))
    what = "; ".join(describe(n, s) for n, s in (("baseline", base), ("latency", flat), ("jitter", jit)))
    print(what)
    for samples in (base, flat, jit):
        assert len(samples) >= 20 * 10 * 2, what  # 20 devices x 10/s x 2.5 s, most of it
    assert fault["packets_delayed"] > 0, fault

    rise_flat = statistics.median(flat) - statistics.median(base)
    rise_jit = statistics.median(jit) - statistics.median(base)
    assert abs(rise_flat - 100.0) <= 15.0, f"median rose by {rise_flat:.1f} ms with 100 ms latency ({what})"
    assert abs(rise_jit - 100.0) <= 15.0, f"median rose by {rise_jit:.1f} ms with 100 +- 40 ms ({what})"
    widened = spread(jit) - spread(flat)
    assert widened >= 0.75 * jitter, f"jitter 40 ms widened the p10-p90 spread by only {widened:.1f} ms ({what})"
    assert spread(jit) <= 2 * jitter + spread(flat) + 10.0, f"the spread is wider than 2 x jitter allows ({what})"
    assert min(jit) >= statistics.median(base) + 100.0 - jitter - 10.0, f"a reading beat latency - jitter ({what})"


def wire_bytes(m: ReceivedMessage) -> int:
    """The size of the QoS 0 PUBLISH that carried ``m`` on the device's connection (what the rate limits)."""
    remaining = 2 + len(m.topic.encode()) + len(m.payload)
    varint = 1 if remaining < 128 else 2 if remaining < 16384 else 3
    return 1 + varint + remaining


def test_bandwidth_caps_what_arrives_and_the_backlog_shows_in_the_stats(h: Harness) -> None:
    """rate=16kbps (2,000 B/s) upstream; each device offers ~4.6 kB/s (20 readings/s of ~230 B on the wire).

    The rate is per device link (each connection has its own pipe and its own queue, like a device's own
    modem link): every device delivers at most rate + 10 % at the receiver over a 5 s window, and close to
    the rate (the link is busy, not stalled); what it could not send waits in the fault layer and shows as
    ``networkBacklogBytes`` in the fleet's stats, growing while the overload lasts.
    """
    devices, rate = 10, 2000.0
    topic = "fs/bw/+/telemetry"
    probe = h.receiver(topic, qos=0)
    fleet = h.fleet("bw", model_dict("bw", interval_ms=50, padding=150), devices)
    h.start(fleet)
    h.running(fleet)
    h.add_fault(fleet, "bandwidth", {"rate": "16kbps", "direction": UPSTREAM}, "narrow")
    time.sleep(1.5)  # the queue builds up; the receiver sees the link's rate from now on
    t0 = time.time()
    backlog_start = h.rt.call(fleet.stats)["networkBacklogBytes"]
    time.sleep(5.0)
    t1 = time.time()
    stats = h.rt.call(fleet.stats)
    messages = h.rt.call(lambda: list(probe.messages_on(topic)))
    per_device: dict[str, int] = {}
    offered: dict[str, int] = {}
    for m in messages:
        device = m.topic.split("/")[2]
        offered[device] = wire_bytes(m)
        if t0 <= m.received_at < t1:
            per_device[device] = per_device.get(device, 0) + wire_bytes(m)
    window = t1 - t0
    rates = {d: n / window for d, n in sorted(per_device.items())}
    what = f"B/s per device at the receiver: {rates}; stats backlog {backlog_start} -> {stats['networkBacklogBytes']}"
    print(what)
    assert len(rates) == devices, what
    assert sum(offered.values()) / devices * 20 >= 2 * rate, f"the devices do not offer twice the rate ({offered})"
    assert max(rates.values()) <= 1.10 * rate, f"a device delivered more than rate + 10 % ({what})"
    assert min(rates.values()) >= 0.80 * rate, f"a device delivered far less than its link's rate ({what})"
    assert sum(rates.values()) <= 1.10 * rate * devices, what
    assert backlog_start > 0 and stats["networkBacklogBytes"] > backlog_start, f"backlog not visible/growing ({what})"
    fault = h.fault(fleet, "narrow")
    assert fault["packets_delayed"] > 0 and fault["bytes_delayed"] > 0, fault


def test_qos1_publishes_dropped_upstream_are_redelivered_and_counted(h: Harness) -> None:
    """``mqtt`` fault packet=PUBLISH action=drop probability=10 % upstream on a QoS 1 fleet for 3 s: the fault
    drops whole PUBLISH packets inside the stream (loss TCP cannot hide). After the fault is removed, every
    reading must arrive in the end (QoS 1), and the redeliveries must be counted where a user can see them.
    """
    topic = "fs/q1drop/+/telemetry"
    probe = h.receiver(topic, qos=1)
    # a PUBLISH unacknowledged for 1.5 s gives the connection up: the device reconnects and resends (DUP)
    fleet = h.fleet("q1drop", model_dict("q1drop", interval_ms=100, qos=1, pubackTimeoutMs=1500), 10)
    h.start(fleet)
    h.running(fleet)
    settings = {"packet": "PUBLISH", "action": "drop", "probability": "10%", "direction": UPSTREAM}
    h.add_fault(fleet, "mqtt", settings, "drop-pub")
    time.sleep(3.0)
    dropped = h.fault(fleet, "drop-pub")["packets_dropped"]
    h.rt.call(h.sim.network.remove, fleet.name, "drop-pub")

    async def check():
        from iotix._robot.telemetry import collect, probe_source

        return await collect(fleet, probe_source(probe), 8.0)

    report = h.rt.call(check).report
    stats = h.rt.call(fleet.stats)

    def unacked() -> int:  # paho's in-flight window: sent, never acknowledged, on connections that stay open
        return sum(len(d.conn._out_messages) for d in fleet.devices if d.conn is not None)

    pending = h.rt.call(unacked)
    missing = {r.device_id: r.first_missing[:5] for r in report.devices if r.lost}
    what = (
        f"the fault dropped {dropped} PUBLISH packets; the receiver expected {report.expected}, got "
        f"{report.received}, lost {report.lost} (e.g. {dict(list(missing.items())[:3])}); fleet sent "
        f"{stats['messagesSent']}, acked {stats['messagesAcked']}, reconnects {stats['reconnects']}, "
        f"retries {stats['retries']}; {pending} QoS 1 messages still unacknowledged in paho's in-flight windows"
    )
    assert dropped > 0, what
    assert report.lost == 0, f"QoS 1 readings lost for good: {what}"
    assert stats["transport"]["ackTimeouts"] > 0, what
    redelivered = stats["transport"]["redelivered"]
    assert redelivered >= dropped, f"the redeliveries are not counted in the fleet's stats: {what}"
