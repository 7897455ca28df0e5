"""One fleet over several real Mosquitto brokers and local source addresses, checked from outside.

Each broker gets its own independent ``mosquitto_sub``: it sees exactly the devices with index i mod n == its
position, and every message they sent. ``ss`` (the kernel's socket table) shows each device's connection
leaving from the source address it was given (i mod m), to the broker it was given.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from harness import Harness, all_running

from iotix.fault.sock import FaultSocket
from iotix.fleet.fleet import Fleet
from iotix.fleet.setup import ConnectionOverrides, FleetSetup
from iotix.fleet.timeline import LaunchSettings
from iotix.model.loader import load_model_dict
from iotix.services import MqttBroker, find_mosquitto, start_local_broker

MOSQUITTO_SUB = shutil.which("mosquitto_sub")
SS = shutil.which("ss")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed"),
    pytest.mark.skipif(MOSQUITTO_SUB is None, reason="mosquitto_sub is not installed"),
]
SOURCES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]


def model_dict() -> dict[str, Any]:
    return {
        "id": "tg-sensor",
        "name": "multi-target sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {"host": "mqtt.invalid", "port": 1, "topicPattern": "tg/${deviceId}", "qos": 0, "keepAlive": 30},
        "telemetry": [
            {
                "name": "temperature",
                "type": "number",
                "intervalMs": 200,
                "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
            }
        ],
    }


class Subscriber:
    """``mosquitto_sub -v`` on one broker: every message it delivered, with its topic."""

    def __init__(self, broker: MqttBroker) -> None:
        args = [str(MOSQUITTO_SUB), "-h", broker.host, "-p", str(broker.port), "-v", "-q", "0", "-t", "tg/#"]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)

    def stop(self) -> list[tuple[str, dict[str, Any]]]:
        time.sleep(0.5)  # the last messages on their way
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        received = []
        for line in out.splitlines():
            topic, _, payload = line.partition(" ")
            received.append((topic, json.loads(payload)))
        return received


@pytest.fixture(scope="module")
def brokers() -> Iterator[list[MqttBroker]]:
    started = [start_local_broker("mosquitto") for _ in range(3)]
    yield started
    for broker in started:
        broker.stop()


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def build(h: Harness, setup: FleetSetup) -> Fleet:
    model = load_model_dict(model_dict())
    return h.rt.call(lambda: h.sim.build_fleet(model, setup))


def established(ports: set[int]) -> list[tuple[str, int]]:
    """(local address, remote port) of the established TCP connections to ``ports``, from the kernel's table."""
    out = subprocess.run([str(SS), "-Htn", "state", "established"], capture_output=True, text=True, check=True)
    found = []
    for line in out.stdout.splitlines():
        local, remote = line.split()[-2:]
        remote_port = int(remote.rpartition(":")[2])
        if remote_port in ports:
            found.append((local.rpartition(":")[0], remote_port))
    return found


def test_devices_land_on_their_broker_from_their_source_address(h: Harness, brokers: list[MqttBroker]) -> None:
    subs = [Subscriber(b) for b in brokers]
    time.sleep(0.5)  # subscribed before the first message
    ports = [b.port for b in brokers]
    host = ",".join(f"{b.host}:{b.port}" for b in brokers)
    setup = FleetSetup(
        name="tg",
        count=12,
        seed=3,
        connection=ConnectionOverrides(host=host, source_addresses=f"{SOURCES[0]}-{SOURCES[-1]}"),
    )
    fleet = build(h, setup)
    assert fleet.target == f"mqtt://{host}"
    h.start(fleet)
    h.wait(lambda: all_running(fleet), 20, "fleet tg running")
    # the fault layer still wraps every connection (bound and connected first, then wrapped)
    assert h.rt.call(lambda: all(isinstance(d.conn._sock, FaultSocket) for d in fleet.devices))
    wire = h.rt.call(
        lambda: [(d.conn.wire_socket.getsockname()[0], d.conn.wire_socket.getpeername()[1]) for d in fleet.devices]
    )
    expected = [(SOURCES[i % 4], ports[i % 3]) for i in range(12)]
    assert wire == expected
    if SS is not None:  # the kernel's view, independent of our sockets
        assert Counter(established(set(ports))) >= Counter(expected)
    h.wait(lambda: fleet.stats()["messagesSent"] >= 60, 20, "60 messages sent")
    h.stop(fleet)
    stats = h.rt.call(fleet.stats)
    assert stats["transport"]["targets"] == [f"127.0.0.1:{p}" for p in ports]
    assert stats["transport"]["sourceAddresses"] == SOURCES
    received = [s.stop() for s in subs]
    per_device: Counter[str] = Counter()
    for position, messages in enumerate(received):
        devices = {payload["deviceId"] for _, payload in messages}
        assert devices == {f"tg-{i}" for i in range(12) if i % 3 == position}, f"broker {position}"
        assert all(topic == f"tg/{payload['deviceId']}" for topic, payload in messages)
        per_device.update(payload["deviceId"] for _, payload in messages)
    sent = {d.id: d.seq for d in fleet.devices}
    assert dict(per_device) == sent  # nothing lost, nothing on a second broker
    assert sum(sent.values()) == stats["messagesSent"]


def test_a_device_whose_broker_is_down_fails_naming_that_broker(h: Harness, brokers: list[MqttBroker]) -> None:
    dead = MqttBroker("mosquitto")
    dead.start()
    port = dead.port
    dead.stop()  # a port nobody listens on
    host = f"{brokers[0].host}:{brokers[0].port},127.0.0.1:{port}"
    fleet = build(h, FleetSetup(name="half", count=4, connection=ConnectionOverrides(host=host)))
    h.start(fleet)
    h.wait(lambda: fleet.count_states()["running"] == 2, 20, "devices 0 and 2 running")
    h.wait(lambda: all(d.last_error for d in fleet.devices[1::2]), 20, "devices 1 and 3 failing")
    running = h.rt.call(lambda: [d.id for d in fleet.devices if d.state.value == "running"])
    assert running == ["half-0", "half-2"]
    errors = h.rt.call(lambda: [d.last_error for d in fleet.devices[1::2]])
    assert all(f"cannot reach broker 127.0.0.1:{port}: Connection refused" in (e or "") for e in errors), errors
    h.stop(fleet)


def test_a_sharded_fleet_spreads_its_devices_by_their_global_index(h: Harness, brokers: list[MqttBroker]) -> None:
    pytest.importorskip("ray")
    from iotix.cluster import ray_support
    from iotix.cluster.sharded import build_sharded_fleet

    subs = [Subscriber(b) for b in brokers]
    time.sleep(0.5)
    ports = [b.port for b in brokers]
    host = ",".join(f"{b.host}:{b.port}" for b in brokers)
    setup = FleetSetup(
        name="tgs",
        count=6,
        connection=ConnectionOverrides(host=host, source_addresses=f"{SOURCES[0]}-{SOURCES[-1]}"),
    )
    model = load_model_dict(model_dict())
    try:
        fleet = h.rt.call(build_sharded_fleet, h.sim, model, setup, 2, timeout=180)
        assert [(s["first"], s["last"]) for s in fleet.shards_info()] == [("tgs-0", "tgs-2"), ("tgs-3", "tgs-5")]
        h.rt.call(fleet.start, LaunchSettings(), timeout=60)
        assert h.rt.call(fleet.wait_until_running, 60.0, timeout=90)
        expected = [(SOURCES[i % 4], ports[i % 3]) for i in range(6)]  # shard 1 holds global indexes 3, 4, 5
        if SS is not None:
            assert Counter(established(set(ports))) >= Counter(expected)
        time.sleep(1.0)  # a few messages (every 200 ms)
        stats = h.rt.call(fleet.stats, timeout=60)
        assert stats["transport"]["targets"] == [f"127.0.0.1:{p}" for p in ports]
        assert stats["transport"]["sourceAddresses"] == SOURCES
        assert stats["target"] == f"mqtt://{host}"
        h.rt.call(fleet.stop, timeout=60)
        received = [s.stop() for s in subs]
        for position, messages in enumerate(received):
            devices = {payload["deviceId"] for _, payload in messages}
            assert devices == {f"tgs-{i}" for i in range(6) if i % 3 == position}, f"broker {position}"
        h.rt.call(fleet.delete, timeout=60)
    finally:
        for s in subs:
            if s.process.poll() is None:
                s.process.kill()
                s.process.wait(5)
        ray_support.shutdown_ray()
