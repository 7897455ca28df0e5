"""Kafka fleets against a real broker (Tansu, started by the test), checked with confluent-kafka.

What a fleet counts (acknowledged, failed) is compared with what an independent librdkafka consumer reads
from the topic: the device id as the key, one device's messages on one partition and in order.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from harness import Harness

from iotix.fleet.delivery import DeliverySettings
from iotix.fleet.device import DeviceState
from iotix.fleet.fleet import FleetOptions
from iotix.services.kafka_broker import KafkaBroker, start_local_kafka_broker
from iotix.services.process import pick_free_port
from iotix.transport import kafka as kafka_transport


def kafka_model(topic: str, interval_ms: int = 100, **connection: Any) -> dict[str, Any]:
    return {
        "id": "it-kafka",
        "name": "Kafka integration sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "kafka",
        "connection": {"bootstrap": "localhost:9092", "topic": topic, "acks": 1, "lingerMs": 5, **connection},
        "telemetry": [
            {
                "name": "speed",
                "type": "number",
                "intervalMs": interval_ms,
                "generator": {"type": "random", "min": 0, "max": 90, "precision": 1},
            }
        ],
    }


@pytest.fixture(scope="module")
def broker() -> KafkaBroker:
    b = start_local_kafka_broker()
    yield b
    b.stop()


@pytest.fixture
def h(broker: KafkaBroker):
    harness = KafkaHarness(broker)
    yield harness
    harness.close()


class KafkaHarness(Harness):
    def __init__(self, broker: KafkaBroker) -> None:
        super().__init__()
        self.broker = broker

    def connection(self, model_connection: dict[str, Any]) -> dict[str, Any]:
        return {**model_connection, "host": self.broker.host, "port": self.broker.port}


def create_topic(broker: KafkaBroker, partitions: int) -> str:
    name = f"it-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(10)
    return name


def read_all(broker: KafkaBroker, topic: str, partitions: int, expected: int, timeout: float = 20.0) -> list[Any]:
    """Every message of ``topic`` from the beginning, read by confluent-kafka (no consumer group)."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            messages.extend(m for m in consumer.consume(1000, 0.5) if m.error() is None)
        time.sleep(0.5)  # nothing more may come
        messages.extend(m for m in consumer.consume(1000, 0.5) if m.error() is None)
    finally:
        consumer.close()
    return messages


def test_a_fleet_produces_keyed_in_order_and_counts_exactly(h: KafkaHarness) -> None:
    topic = create_topic(h.broker, 3)
    fleet = h.fleet("veh", kafka_model(topic, compression="gzip"), 12)
    h.start(fleet)
    h.wait(lambda: fleet.stats()["messagesAcked"] >= 120, what="acks")
    h.stop(fleet)
    stats = fleet.stats()
    assert stats["messagesFailed"] == 0 and stats["retries"] == 0
    assert stats["messagesAcked"] == stats["messagesSent"]
    assert stats["transport"]["producers"] == 0 and stats["transport"]["acks"] == 1  # the pool is closed
    messages = read_all(h.broker, topic, 3, stats["messagesAcked"])
    assert len(messages) == stats["messagesAcked"]  # nothing lost, nothing duplicated
    by_device: dict[str, list[tuple[int, int]]] = {}
    for m in messages:
        envelope = json.loads(m.value())
        assert m.key().decode() == envelope["deviceId"]
        by_device.setdefault(envelope["deviceId"], []).append((m.partition(), envelope["seq"]))
    assert sorted(by_device) == sorted(d.id for d in fleet.devices)
    for device in fleet.devices:
        seen = by_device[device.id]
        assert len({p for p, _ in seen}) == 1, f"{device.id} spread over partitions"
        assert [s for _, s in seen] == list(range(device.seq))  # in order, no gap
    assert len({p for v in by_device.values() for p, _ in v}) > 1  # keys spread over the partitions


def test_a_broker_that_goes_down_gives_failures_within_max_block_and_recovery_closes_the_circuit(
    h: KafkaHarness,
) -> None:
    broker = KafkaBroker().start()  # a broker of this test: it is stopped and restarted
    try:
        settings = DeliverySettings(
            max_retries=1, retry_base_s=0.05, retry_cap_s=0.1, circuit_threshold=10, circuit_cooldown_s=1.0
        )
        data = kafka_model("it.outage", maxBlockMs=1000)
        conn = {"host": broker.host, "port": broker.port}
        fleet = h.fleet("out", data, 4, connection=conn, delivery=settings)
        h.start(fleet)
        h.wait(lambda: fleet.stats()["messagesAcked"] >= 20, what="acks")
        broker.stop()
        down_at = time.monotonic()
        h.wait(lambda: fleet.stats()["messagesFailed"] > 0, timeout=10, what="the first failure")
        assert time.monotonic() - down_at < 1.0 + 2.5  # maxBlockMs plus the linger and a loaded machine
        h.wait(lambda: fleet.stats()["circuitState"] == "open", what="the circuit to open")
        h.wait(lambda: all(d.state is DeviceState.ERROR for d in fleet.devices), what="devices in error")
        stats = fleet.stats()
        assert stats["failuresByReason"].get("timeout", 0) > 0 and stats["retries"] > 0
        error = fleet.devices[0].last_error
        assert f"at {broker.bootstrap}" in error or "circuit_open" in error
        broker.start()
        acked = fleet.stats()["messagesAcked"]
        h.wait(lambda: fleet.stats()["messagesAcked"] > acked + 20, timeout=30, what="recovery")
        h.wait(lambda: fleet.stats()["circuitState"] == "closed", what="the circuit to close")
        h.wait(lambda: all(d.state is DeviceState.RUNNING for d in fleet.devices), what="devices running again")
        h.stop(fleet)
        stats = fleet.stats()
        assert stats["messagesSent"] == stats["messagesAcked"] + stats["messagesFailed"] - _refused(stats)
    finally:
        broker.stop()


def _refused(stats: dict[str, Any]) -> int:
    """Readings that were never handed over: refused while the circuit was open."""
    return stats["failuresByReason"].get("circuit_open", 0)


def test_a_dropped_device_stops_producing_and_resumes_when_restored(h: KafkaHarness) -> None:
    fleet = h.fleet("drp", kafka_model("it.drop"), 3)
    h.start(fleet)
    h.wait(lambda: all(d.acked >= 3 for d in fleet.devices), what="acks")
    victim = fleet.devices[1]
    assert h.rt.call(fleet.drop_device, victim)
    sent = victim.sent
    others = [d.sent for d in fleet.devices if d is not victim]
    time.sleep(0.6)
    assert victim.sent == sent and victim.state is DeviceState.DROPPED
    assert all(d.sent > s for d, s in zip([d for d in fleet.devices if d is not victim], others, strict=True))
    assert h.rt.call(fleet.restore_device, victim)
    h.wait(lambda: victim.sent > sent + 2 and victim.state is DeviceState.RUNNING, what="the restored device")
    h.stop(fleet)
    assert fleet.stats()["messagesFailed"] == 0


def test_a_producer_whose_thread_died_is_replaced_and_counted(h: KafkaHarness, monkeypatch) -> None:
    monkeypatch.setattr(kafka_transport, "HEALTH_INTERVAL_S", 0.2)
    fleet = h.fleet("hlth", kafka_model("it.health", producers=2), 4)
    h.start(fleet)
    h.wait(lambda: fleet.stats()["messagesAcked"] >= 8, what="acks")
    pool = fleet.transport.pool
    old = pool.producers[0]
    old.queue.put(None)  # its sender thread ends: the producer no longer sends anything
    h.wait(lambda: fleet.stats()["transport"]["producersReplaced"] == 1, what="the replacement")
    assert pool.producers[0] is not old and pool.producers[0].healthy()
    acked = {d.id: d.acked for d in fleet.devices}
    h.wait(lambda: all(d.acked > acked[d.id] + 2 for d in fleet.devices), what="every device delivering again")
    h.stop(fleet)


def test_fleets_with_the_same_settings_share_producers(h: KafkaHarness) -> None:
    """Without the fault layer, fleets with the same settings share one producer pool; with it (the default)
    each fleet has its own, so a fault on one fleet never touches another's produce requests."""
    bare = FleetOptions(fault_layer=False)
    a = h.fleet("sha", kafka_model("it.shared"), 2, options=bare)
    b = h.fleet("shb", kafka_model("it.shared"), 2, ids=["shb-x", "shb-y"], options=bare)
    c = h.fleet("shc", kafka_model("it.shared"), 2, ids=["shc-x", "shc-y"])
    h.start(a)
    h.start(b)
    h.wait(lambda: a.stats()["messagesAcked"] >= 4 and b.stats()["messagesAcked"] >= 4, what="acks")
    assert a.transport.pool is b.transport.pool and len(a.transport.pool.producers) == 2
    h.start(c)
    h.wait(lambda: c.stats()["messagesAcked"] >= 4, what="acks of the fleet with the fault layer")
    assert c.transport.pool is not a.transport.pool
    h.stop(c)
    h.stop(a)
    acked = b.stats()["messagesAcked"]
    h.wait(lambda: b.stats()["messagesAcked"] > acked + 4, what="the other fleet goes on")
    h.stop(b)


def test_an_unreachable_broker_fails_the_connect_with_the_address_not_a_hang(h: KafkaHarness) -> None:
    threads_before = {t.ident for t in threading.enumerate()}
    port = pick_free_port()
    fleet = h.fleet("gone", kafka_model("it.gone", maxBlockMs=1000), 2, connection={"host": "127.0.0.1", "port": port})
    h.start(fleet)
    h.wait(lambda: fleet.devices[0].connect_failures > 0, timeout=10, what="a failed connect")
    assert f"cannot reach the Kafka broker at 127.0.0.1:{port}" in fleet.devices[0].last_error
    assert fleet.devices[0].state is DeviceState.CONNECTING
    h.wait(lambda: fleet.devices[0].connect_failures > 1, timeout=15, what="a second failed connect")
    t0 = time.monotonic()
    h.stop(fleet)
    assert time.monotonic() - t0 < 5
    # Every failed attempt made a kafka-python client: none of their I/O threads may be left behind.
    leaked = [t.name for t in threading.enumerate() if t.ident not in threads_before and "kafka" in t.name.lower()]
    assert leaked == []
