"""The Kafka test client (:mod:`iotix.transport.kafka_probe`) with fake kafka-python clients: no broker.

What needs a broker (connecting, consumer groups, Tansu's behaviour) is in
``tests/integration/test_kafka_broker.py``; here: topic names, records, the consumer thread feeding the
loop and the tracker, and the errors (their exact messages: the keywords show them as they are).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import queue
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, NotLeaderForPartitionError, TopicAlreadyExistsError, UnknownError
from transport_fakes import run, until

from iotix.errors import ConfigurationError
from iotix.transport import kafka_probe
from iotix.transport.base import TransportError
from iotix.transport.kafka_probe import (
    SOURCE_PREFIX,
    KafkaClientError,
    KafkaProbe,
    KafkaRecord,
    KafkaSubscription,
    check_topic_name,
)

BOOTSTRAP = "127.0.0.1:19092"


def envelope(device: str, seq: int) -> bytes:
    return json.dumps({"deviceId": device, "seq": seq, "ts": int(time.time() * 1000)}).encode()


def record(value: bytes | None, *, key: bytes | None = b"k", offset: int = 0, partition: int = 0) -> Any:
    return SimpleNamespace(
        topic="t", partition=partition, offset=offset, key=key, value=value, timestamp=1_700_000_000_000
    )


class FakeConsumer:
    """Polls return what the test puts in ``script`` (a batch dict, or an exception to raise), else nothing."""

    def __init__(self, partitions: list[int]) -> None:
        self.script: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.partitions = partitions
        self.closed: dict[str, Any] | None = None
        self.poll_thread: str | None = None

    def poll(self, timeout_ms: int) -> dict[Any, list[Any]]:
        self.poll_thread = threading.current_thread().name
        try:
            item = self.script.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            return {}
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[no-any-return]

    def assignment(self) -> list[Any]:
        return [SimpleNamespace(partition=p) for p in self.partitions]

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        self.closed = {"autocommit": autocommit, "timeout_ms": timeout_ms}


class FakeFuture:
    def __init__(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.waited: float | None = None

    def get(self, timeout: float | None = None) -> Any:
        self.waited = timeout
        if self.error is not None:
            raise self.error
        return self.result


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.refuse: BaseException | None = None
        self.future = FakeFuture(SimpleNamespace(topic="t", partition=2, offset=41, timestamp=1234))
        self.close_error: BaseException | None = None
        self.closes: list[float] = []
        self._sender = SimpleNamespace(force_closed=False)
        self._sender.force_close = lambda: setattr(self._sender, "force_closed", True)

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> FakeFuture:
        if self.refuse is not None:
            raise self.refuse
        self.sent.append((topic, value or b"", key))
        return self.future

    def close(self, timeout: float | None = None) -> None:
        self.closes.append(timeout or 0)
        if self.close_error is not None and len(self.closes) == 1:
            raise self.close_error


class FakeAdmin:
    def __init__(self) -> None:
        self.created: list[tuple[str, int, int, int]] = []
        self.error: BaseException | None = None
        self.topics: dict[str, int] = {}
        self.closed = False

    def create_topics(self, topics: list[Any], timeout_ms: int) -> None:
        if self.error is not None:
            raise self.error
        for t in topics:
            self.created.append((t.name, t.num_partitions, t.replication_factor, timeout_ms))

    def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        name = names[0]
        if name not in self.topics:
            return [{"error_code": 3, "partitions": []}]
        return [{"error_code": 0, "partitions": [{"partition": p} for p in range(self.topics[name])]}]

    def close(self) -> None:
        self.closed = True


def make_probe(loop: asyncio.AbstractEventLoop | None = None, alias: str = "it") -> KafkaProbe:
    """A probe with fake clients; without ``loop`` one for calls that do not reach the loop."""
    return KafkaProbe(alias, BOOTSTRAP, loop or SimpleNamespace(time=lambda: 0.0), FakeAdmin(), FakeProducer())  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- pure parts


def test_topic_names_kafka_accepts() -> None:
    for good in ("vehicles.telemetry_1-a", "a", "t" * 249, "..."):
        assert check_topic_name(good) == good
    for bad in ("", "a b", "x/y", ".", "..", "t" * 250, "ünïcode"):
        with pytest.raises(ConfigurationError) as caught:
            check_topic_name(bad)
        assert str(caught.value) == (
            f"'{bad}' is not a valid Kafka topic name: use 1 to 249 letters, digits, '.', '_' or '-'."
        )


def test_a_record_shows_text_or_hex_and_none_when_absent() -> None:
    text = KafkaRecord("t", 1, 7, b"van-1", b'{"speed": 4}', 1234, 99.5)
    assert text.as_dict() == {
        "topic": "t",
        "partition": 1,
        "offset": 7,
        "key": "van-1",
        "value": '{"speed": 4}',
        "timestamp": 1234,
        "receivedAt": 99.5,
    }
    binary = KafkaRecord("t", 0, 0, None, b"\xff\x00", 1, 2.0).as_dict()
    assert (binary["key"], binary["value"]) == (None, "ff00")
    assert KafkaRecord("t", 0, 0, b"k", None, 1, 2.0).as_dict()["value"] is None


def test_client_errors_are_transport_errors() -> None:
    assert issubclass(KafkaClientError, TransportError)


def test_the_probe_imports_neither_robot_nor_the_fleet_nor_the_keywords() -> None:
    tree = ast.parse(inspect.getsource(kafka_probe))
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    ]
    banned = ("robot", "iotix.fleet", "iotix._robot")
    assert [n for n in imported if n and any(n == b or n.startswith(b + ".") for b in banned)] == []


# ------------------------------------------------------------------------------------- admin and producer


def test_create_topic_and_its_errors() -> None:
    probe = make_probe()
    admin: FakeAdmin = probe.admin
    probe.create_topic("vehicles", 3, timeout=2.5)
    assert admin.created == [("vehicles", 3, 1, 2500)]
    with pytest.raises(ConfigurationError, match=r"^A Kafka topic needs at least 1 partition, got 0\.$"):
        probe.create_topic("none", 0)
    with pytest.raises(ConfigurationError, match="not a valid Kafka topic name"):
        probe.create_topic("bad name")
    admin.error = TopicAlreadyExistsError("exists")
    with pytest.raises(KafkaClientError) as caught:
        probe.create_topic("vehicles", 3)
    assert str(caught.value) == f"Kafka topic 'vehicles' already exists on {BOOTSTRAP}."
    admin.error = UnknownError("boom")
    with pytest.raises(KafkaClientError) as caught:
        probe.create_topic("other")
    assert str(caught.value) == f"Creating Kafka topic 'other' on {BOOTSTRAP} failed: {admin.error}"
    assert len(admin.created) == 1


def test_partitions_of_a_topic() -> None:
    probe = make_probe()
    probe.admin.topics["vehicles"] = 3
    assert probe.partitions_of("vehicles") == 3
    assert probe.partitions_of("missing") == 0


def test_produce_returns_where_the_record_went() -> None:
    probe = make_probe()
    producer: FakeProducer = probe.producer
    assert probe.produce("vehicles", b"v", b"van-1", timeout=3) == {
        "topic": "t",
        "partition": 2,
        "offset": 41,
        "timestamp": 1234,
    }
    assert producer.sent == [("vehicles", b"v", b"van-1")]
    assert producer.future.waited is not None and 2.5 < producer.future.waited <= 3


@pytest.mark.parametrize(
    ("where", "error", "why"),
    [
        ("send", KafkaTimeoutError("metadata"), "no broker told where the topic is within 5 s."),
        ("send", NotLeaderForPartitionError("moved"), "[Error 6] NotLeaderForPartitionError: moved"),
        ("ack", KafkaTimeoutError("late"), "the broker did not acknowledge it within 2 s."),
        ("ack", NotLeaderForPartitionError("moved"), "[Error 6] NotLeaderForPartitionError: moved"),
    ],
)
def test_produce_errors_say_what_failed(where: str, error: Exception, why: str) -> None:
    probe = make_probe(alias="gone")
    producer: FakeProducer = probe.producer
    if where == "send":
        producer.refuse = error
    else:
        producer.future = FakeFuture(error=error)
    with pytest.raises(KafkaClientError) as caught:
        probe.produce("vehicles", b"v", timeout=2)
    assert str(caught.value) == (f"Producing to Kafka topic 'vehicles' on {BOOTSTRAP} (alias 'gone') failed: {why}")


def test_produce_checks_the_topic_name_before_sending() -> None:
    probe = make_probe()
    with pytest.raises(ConfigurationError):
        probe.produce("a b", b"v")
    assert probe.producer.sent == []


def test_close_forces_a_stuck_producer_closed_and_is_done_once() -> None:
    probe = make_probe()
    producer: FakeProducer = probe.producer
    producer.close_error = UnknownError("records pending")
    probe.close()
    assert producer._sender.force_closed and producer.closes == [2, 1] and probe.admin.closed
    probe.close()
    assert producer.closes == [2, 1]


# ----------------------------------------------------------------------------------------- subscriptions


def test_a_subscription_keeps_records_counts_envelopes_and_wakes_waiters() -> None:
    async def scenario() -> None:
        probe = make_probe(asyncio.get_running_loop())
        assert probe.tracker.name == f"{SOURCE_PREFIX}it" == "kafka:it"
        consumer = FakeConsumer([2, 0])
        sub = KafkaSubscription(probe, "t", consumer, "group-1")
        sub.start()
        try:
            await until(sub.assigned.is_set, "the assignment")
            assert sub.partitions == [0, 2]
            waiting = asyncio.ensure_future(sub.wait_for(3, timeout=5))
            first, second = envelope("dev-a", 0), envelope("dev-a", 1)
            consumer.script.put({"tp0": [record(first, offset=0), record(b"\xff", key=None)]})
            await asyncio.sleep(0.05)
            assert not waiting.done()
            consumer.script.put({"tp2": [record(second, partition=2)]})
            assert await waiting == 3
            assert [m.value for m in sub.messages] == [first, b"\xff", second]
            assert [(m.partition, m.offset, m.key) for m in sub.messages] == [(0, 0, b"k"), (0, 0, None), (2, 0, b"k")]
            assert probe.tracker.received_from("dev-a") == 2 and probe.tracker.invalid == 1
            assert consumer.poll_thread == "iotix-kafka-it-t"
            assert await sub.wait_for(10, timeout=0.05) == 3  # fewer than asked: how many there are
        finally:
            sub.stop()
        assert consumer.closed == {"autocommit": False, "timeout_ms": 2000}

    run(scenario)


def test_a_subscription_keeps_a_bounded_number_of_records(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_probe, "MAX_KEPT", 3)

    async def scenario() -> None:
        probe = make_probe(asyncio.get_running_loop())
        consumer = FakeConsumer([0])
        sub = KafkaSubscription(probe, "t", consumer, "g")
        sub.start()
        try:
            consumer.script.put({"tp": [record(envelope("d", i), offset=i) for i in range(5)]})
            assert await sub.wait_for(5, timeout=5) == 5
            assert [m.offset for m in sub.messages] == [2, 3, 4] and sub.discarded == 2 and sub.total == 5
            assert probe.tracker.received_from("d") == 5  # every record was counted before it was let go
        finally:
            sub.stop()

    run(scenario)


def test_consumer_errors_are_kept_once_each_and_polling_goes_on() -> None:
    async def scenario() -> None:
        probe = make_probe(asyncio.get_running_loop())
        consumer = FakeConsumer([])
        sub = KafkaSubscription(probe, "t", consumer, "g")
        sub.start()
        try:
            consumer.script.put(UnknownError("broker gone"))
            consumer.script.put(UnknownError("broker gone"))
            consumer.script.put({"tp": [record(b"after")]})
            assert await sub.wait_for(1, timeout=5) == 1
            assert sub.errors == ["UnknownError: [Error -1] UnknownError: broker gone"]
            assert not sub.assigned.is_set()  # no partitions were assigned yet
        finally:
            sub.stop()

    run(scenario)


def test_subscription_lookup_and_a_second_subscription_to_a_topic_are_refused() -> None:
    probe = make_probe()
    with pytest.raises(KafkaClientError) as caught:
        probe.subscription("t")
    assert str(caught.value) == (
        "Alias 'it' is not subscribed to Kafka topic 't' (subscriptions: none); use Subscribe To Kafka Topic first."
    )
    probe.subscriptions["a"] = probe.subscriptions["b"] = SimpleNamespace()  # type: ignore[assignment]
    with pytest.raises(KafkaClientError, match=r"\(subscriptions: 'a', 'b'\)"):
        probe.subscription("t")
    with pytest.raises(KafkaClientError) as caught:
        probe.subscribe("a")
    assert str(caught.value) == "Alias 'it' is already subscribed to Kafka topic 'a'."
    with pytest.raises(ConfigurationError):
        probe.subscribe("a b")
