"""The Kafka transport against a fake outcomes object and fake producers: no fleet, no broker.

The pool's producer factory (:func:`iotix.transport.kafka.make_producer`) is replaced by one that makes
:class:`FakeProducer` objects, whose ``send`` returns a future the test resolves or fails by hand.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import threading
from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError
from transport_fakes import FakeLink, FakeOutcomes, make_links, make_spec, run, until

from iotix.transport import create_transport
from iotix.transport import kafka as kafka_transport
from iotix.transport.base import TransportError
from iotix.transport.kafka import KafkaTransport, create

BOOTSTRAP = "127.0.0.1:19092"


def kafka_model(**connection: Any) -> dict[str, Any]:
    return {
        "id": "unit-kafka",
        "name": "Kafka unit sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "kafka",
        "connection": {"bootstrap": BOOTSTRAP, "topic": "iot.${modelId}.${deviceId}", **connection},
        "telemetry": [
            {
                "name": "speed",
                "type": "number",
                "intervalMs": 1000,
                "generator": {"type": "random", "min": 0, "max": 90},
            }
        ],
    }


class FakeFuture:
    """What ``KafkaProducer.send`` returns: callbacks get ``(*args, value)``, errbacks ``(*args, error)``."""

    def __init__(self) -> None:
        self._callbacks: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._errbacks: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def add_callback(self, fn: Callable[..., Any], *args: Any) -> FakeFuture:
        self._callbacks.append((fn, args))
        return self

    def add_errback(self, fn: Callable[..., Any], *args: Any) -> FakeFuture:
        self._errbacks.append((fn, args))
        return self

    def succeed(self, metadata: Any = None) -> None:
        for fn, args in self._callbacks:
            fn(*args, metadata)

    def fail(self, error: BaseException) -> None:
        for fn, args in self._errbacks:
            fn(*args, error)


class FakeProducer:
    """A ``KafkaProducer`` stand-in: records what it was given; ``refuse`` makes ``send`` raise."""

    def __init__(self, settings: Mapping[str, Any], index: int) -> None:
        self.settings = dict(settings)
        self.index = index
        self.sent: list[tuple[str, bytes, bytes, FakeFuture]] = []  # (topic, value, key, future)
        self.refuse: BaseException | None = None
        self.closed = False
        self._sender = SimpleNamespace(is_alive=lambda: True)
        self._lock = threading.Lock()

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> FakeFuture:
        if self.refuse is not None:
            raise self.refuse
        future = FakeFuture()
        with self._lock:
            self.sent.append((topic, value or b"", key or b"", future))
        return future

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def producers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeProducer]]:
    """The fake producers the pools made, in order; every test must leave no pool behind."""
    made: list[FakeProducer] = []

    def factory(settings: Mapping[str, Any], index: int) -> FakeProducer:
        producer = FakeProducer(settings, index)
        made.append(producer)
        return producer

    monkeypatch.setattr(kafka_transport, "make_producer", factory)
    yield made
    leftover = dict(kafka_transport._pools)
    kafka_transport._pools.clear()
    assert leftover == {}, "a test left a producer pool open"


async def next_send(producer: FakeProducer, count: int) -> tuple[str, bytes, bytes, FakeFuture]:
    """The ``count``-th record (1-based) the producer's sender thread handed to it."""
    await until(lambda: len(producer.sent) >= count, f"send #{count} to producer {producer.index}")
    return producer.sent[count - 1]


def transport_for(
    links: list[FakeLink], outcomes: FakeOutcomes | None = None, *, fleet: str = "fake", **connection: Any
) -> tuple[KafkaTransport, FakeOutcomes]:
    outcomes = outcomes or FakeOutcomes()
    spec = make_spec(kafka_model(**connection), fleet=fleet)
    return create(spec, links, outcomes), outcomes


# ---------------------------------------------------------------------------------------------- building


def test_create_and_the_registry_make_a_kafka_transport_from_the_spec() -> None:
    spec = make_spec(kafka_model(acks="all", producers=3, maxBlockMs=700), fleet="vans")
    links = make_links(2, "vans")
    outcomes = FakeOutcomes()
    transport = create(spec, links, outcomes)
    assert isinstance(transport, KafkaTransport)
    assert transport.spec is spec and transport.links is links and transport.outcomes is outcomes
    assert transport.name == "vans" and transport.target == f"kafka://{BOOTSTRAP}" and transport.request_based
    assert transport.size == 3
    assert transport.settings == {
        "bootstrap": BOOTSTRAP,
        "acks": "all",
        "compression": None,
        "linger_ms": 5,
        "max_block_ms": 700,
    }
    assert type(create_transport(spec, links, outcomes)) is KafkaTransport


def test_host_and_port_override_the_bootstrap() -> None:
    spec = make_spec(kafka_model(), {"host": "broker.test", "port": 29092})
    assert create(spec, [], FakeOutcomes()).settings["bootstrap"] == "broker.test:29092"


def test_fewer_than_one_producer_is_refused_naming_the_fleet() -> None:
    spec = make_spec(kafka_model(), {"producers": 0}, fleet="vans")  # the model check refuses it too
    with pytest.raises(TransportError, match=r"Fleet 'vans': connection.producers must be >= 1, got 0"):
        create(spec, [], FakeOutcomes())


def test_the_transport_imports_nothing_from_the_fleet() -> None:
    tree = ast.parse(inspect.getsource(kafka_transport))
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    ]
    assert [name for name in imported if name and name.startswith("iotix.fleet")] == []


# ------------------------------------------------------------------------------------------------ sending


def test_a_message_the_broker_acknowledges_is_reported_with_its_size_and_latency(
    producers: list[FakeProducer],
) -> None:
    async def scenario() -> None:
        links = make_links(1)
        transport, outcomes = transport_for(links, lingerMs=7)
        link = links[0]
        assert transport.topic_for(link) == "iot.fake-model.fake-0"
        await transport.connect(link)
        assert link.topic == "iot.fake-model.fake-0" and link.conn and transport.is_connected(link)
        assert [p.index for p in producers] == [0, 1]  # connection.producers defaults to 2
        assert producers[0].settings["bootstrap"] == BOOTSTRAP and producers[0].settings["linger_ms"] == 7
        assert transport.send(link, b"hello") is True
        topic, value, key, future = await next_send(producers[0], 1)
        assert (topic, value, key) == ("iot.fake-model.fake-0", b"hello", b"fake-0")
        assert transport.describe()["messagesInFlight"] == 1
        await asyncio.sleep(0.05)
        future.succeed(SimpleNamespace(topic=topic, partition=0, offset=0))
        await until(lambda: outcomes.acked, "the acknowledgement")
        [(device, nbytes, latency)] = outcomes.acked
        assert (device, nbytes) == ("fake-0", 5)
        assert latency is not None and 0.05 <= latency < 5.0
        assert outcomes.failures == [] and outcomes.not_sent_reasons == []
        described = transport.describe()
        assert described["messagesInFlight"] == 0 and described["produceLatencyMs"]["count"] == 1
        await transport.close()
        assert all(p.closed for p in producers)

    run(scenario)


def test_each_device_goes_to_producer_index_modulo_producers_keyed_by_its_id(producers: list[FakeProducer]) -> None:
    async def scenario() -> None:
        links = make_links(7)
        transport, outcomes = transport_for(links, producers=3)
        for link in links:
            await transport.connect(link)
            assert transport.send(link, f"from {link.id}".encode())
        assert len(producers) == 3
        for producer in producers:
            expected = [link for link in links if link.index % 3 == producer.index]
            await next_send(producer, len(expected))
            assert [(t, v, k) for t, v, k, _ in producer.sent] == [
                (f"iot.fake-model.{link.id}", f"from {link.id}".encode(), link.id.encode()) for link in expected
            ]
        # a message for another topic (a command response, an alert) goes to the device's producer too
        assert transport.send(links[4], b"alert", topic="alerts")
        topic, value, key, _ = await next_send(producers[1], 3)
        assert (topic, value, key) == ("alerts", b"alert", b"fake-4")
        for producer in producers:
            for *_, future in producer.sent:
                future.succeed()
        # the alert is not telemetry: seven telemetry acknowledgements, and one event sent
        await until(lambda: len(outcomes.acked) == 7 and transport.events_sent == 1, "seven acks and one event")
        await asyncio.sleep(0.05)
        assert len(outcomes.acked) == 7 and transport.describe()["eventsSent"] == 1
        await transport.close()

    run(scenario)


def test_an_event_to_another_topic_is_counted_apart_from_telemetry(producers: list[FakeProducer]) -> None:
    """A behavior's event goes to the topic it names; its success and failure are events, not telemetry:
    no acknowledgement or failure is reported for it, a failure becomes the device's last error."""

    async def scenario() -> None:
        links = make_links(1)
        transport, outcomes = transport_for(links, producers=1)
        await transport.connect(links[0])
        assert transport.send(links[0], b"ok-event", topic="alerts.ok")
        assert transport.send(links[0], b"bad-event", topic="alerts.bad")
        await next_send(producers[0], 2)
        (t1, v1, _, ok), (t2, v2, _, bad) = producers[0].sent
        assert (t1, v1, t2, v2) == ("alerts.ok", b"ok-event", "alerts.bad", b"bad-event")
        ok.succeed()
        bad.fail(RuntimeError("topic authorization failed"))
        await until(lambda: transport.events_failed == 1, "the failed event")
        assert transport.events_sent == 1
        assert outcomes.acked == [] and outcomes.failures == []
        ((who, reason),) = outcomes.not_sent_reasons
        assert who == links[0].id and reason.startswith("event to Kafka topic alerts.bad at ")
        assert "topic authorization failed" in reason
        await transport.close()

    run(scenario)


def test_a_link_that_is_not_connected_sends_nothing(producers: list[FakeProducer]) -> None:
    async def scenario() -> None:
        links = make_links(2)
        transport, outcomes = transport_for(links)
        assert transport.send(links[0], b"x") is False  # no pool yet
        await transport.connect(links[0])
        transport.drop(links[0])
        assert links[0].conn is None and not transport.is_connected(links[0])
        assert transport.send(links[0], b"x") is False
        await asyncio.sleep(0.05)
        assert all(p.sent == [] for p in producers) and outcomes.not_sent_reasons == []
        await transport.close()

    run(scenario)


@pytest.mark.parametrize(
    ("error", "fault", "code"),
    [
        (NotLeaderForPartitionError("leader moved"), True, "kafka_error"),
        (KafkaTimeoutError("no answer"), True, "timeout"),
        (MessageSizeTooLargeError("too big"), False, "kafka_error"),
    ],
    ids=["retriable", "timeout", "not-retriable"],
)
def test_a_broker_error_is_a_failure_whose_fault_follows_retriable_and_that_can_be_resent(
    producers: list[FakeProducer], error: Exception, fault: bool, code: str
) -> None:
    async def scenario() -> None:
        links = make_links(2)
        transport, outcomes = transport_for(links)
        link = links[1]
        await transport.connect(link)
        assert transport.send(link, b"reading")
        topic, _, _, future = await next_send(producers[1], 1)
        future.fail(error)
        await until(lambda: outcomes.failures, "the failure")
        [failure] = outcomes.failures
        assert failure["link"] == "fake-1" and failure["code"] == code and failure["fault"] is fault
        assert failure["nbytes"] == len(b"reading") and failure["attempt"] == 0
        described = kafka_transport._describe(error)
        assert failure["reason"] == f"Kafka produce to {topic} at {BOOTSTRAP} failed: {described}"
        assert outcomes.acked == [] and transport.describe()["messagesInFlight"] == 0
        # the retry goes out again the same way, and reports its attempt
        failure["resend"](1)
        again = await next_send(producers[1], 2)
        assert again[:3] == (topic, b"reading", b"fake-1")
        again[3].fail(error)
        await until(lambda: len(outcomes.failures) == 2, "the second failure")
        assert outcomes.failures[1]["attempt"] == 1 and outcomes.failures[1]["code"] == code
        outcomes.failures[1]["resend"](2)
        (await next_send(producers[1], 3))[3].succeed()
        await until(lambda: outcomes.acked, "the acknowledgement of the retry")
        assert outcomes.acked[0][:2] == ("fake-1", len(b"reading"))
        await transport.close()

    run(scenario)


def test_a_send_the_producer_refuses_at_once_is_a_failure(producers: list[FakeProducer]) -> None:
    async def scenario() -> None:
        links = make_links(1)
        transport, outcomes = transport_for(links)
        await transport.connect(links[0])
        producers[0].refuse = KafkaTimeoutError("Failed to update metadata after 5.0 secs.")
        assert transport.send(links[0], b"abc")  # handed over: the sender thread finds out
        await until(lambda: outcomes.failures, "the failure")
        [failure] = outcomes.failures
        assert (failure["code"], failure["fault"], failure["nbytes"]) == ("timeout", True, 3)
        assert "KafkaTimeoutError: Failed to update metadata" in failure["reason"]
        await transport.close()

    run(scenario)


def test_a_full_queue_refuses_a_send_and_fails_a_resend_as_queue_full(
    producers: list[FakeProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_transport, "MAX_QUEUED", 1)

    async def scenario() -> None:
        links = make_links(1)
        transport, outcomes = transport_for(links, producers=1)
        link = links[0]
        await transport.connect(link)
        assert transport.send(link, b"first")
        full = f"not sent: 1 messages already wait for producer 0 of kafka://{BOOTSTRAP}"
        assert transport.send(link, b"second") is False
        assert outcomes.not_sent_reasons == [("fake-0", full)]
        (await next_send(producers[0], 1))[3].fail(NotLeaderForPartitionError("leader moved"))
        await until(lambda: outcomes.failures, "the failure")
        resend = outcomes.failures[0]["resend"]
        assert transport.send(link, b"third")  # the queue has room again, and takes this one
        resend(1)  # ... so the retry of the first does not fit
        assert len(outcomes.failures) == 2
        refused = outcomes.failures[1]
        assert (refused["link"], refused["reason"], refused["code"]) == ("fake-0", full, "queue_full")
        assert (refused["nbytes"], refused["fault"], refused["resend"]) == (len(b"first"), False, None)
        (await next_send(producers[0], 2))[3].succeed()
        await until(lambda: outcomes.acked, "the acknowledgement")
        await transport.close()

    run(scenario)


def test_an_unreachable_broker_fails_the_connect_with_its_address(
    producers: list[FakeProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(settings: Mapping[str, Any], index: int) -> FakeProducer:
        raise KafkaConnectionError("connection refused")

    monkeypatch.setattr(kafka_transport, "make_producer", unreachable)

    async def scenario() -> None:
        links = make_links(1)
        transport, outcomes = transport_for(links)
        reason = rf"cannot reach the Kafka broker at {BOOTSTRAP}: KafkaConnectionError: connection refused \(is it"
        with pytest.raises(TransportError, match=reason):
            await transport.connect(links[0])
        assert links[0].conn is None and not transport.is_connected(links[0])
        assert outcomes.failures == outcomes.not_sent_reasons == outcomes.problems == []  # the fleet gets the error
        await transport.close()

    run(scenario)


# ------------------------------------------------------------------------------------------ shared pools


def test_fleets_sharing_a_pool_each_hear_about_their_own_messages(producers: list[FakeProducer]) -> None:
    async def scenario() -> None:
        vans, trucks = make_links(1, "vans"), make_links(1, "trucks")
        a, outcomes_a = transport_for(vans, fleet="vans")
        b, outcomes_b = transport_for(trucks, fleet="trucks")
        await a.connect(vans[0])
        await b.connect(trucks[0])
        assert a.pool is b.pool and len(producers) == 2  # one pool of two producers
        assert a.send(vans[0], b"van")
        assert b.send(trucks[0], b"truck!")
        await next_send(producers[0], 2)  # both devices have index 0: the same producer
        by_key = {key: future for _, _, key, future in producers[0].sent}
        by_key[b"trucks-0"].fail(MessageSizeTooLargeError("too big"))
        by_key[b"vans-0"].succeed()
        await until(lambda: outcomes_a.acked and outcomes_b.failures, "both outcomes")
        assert [ack[:2] for ack in outcomes_a.acked] == [("vans-0", 3)] and outcomes_a.failures == []
        assert outcomes_b.acked == [] and [(f["link"], f["nbytes"]) for f in outcomes_b.failures] == [("trucks-0", 6)]
        assert a.describe()["produceLatencyMs"]["count"] == 1 and b.describe()["produceLatencyMs"]["count"] == 0
        # the first fleet closing leaves the pool to the other; the last one closes it
        await a.close()
        assert not any(p.closed for p in producers) and b.is_connected(trucks[0])
        assert b.send(trucks[0], b"later")
        (await next_send(producers[0], 3))[3].succeed()
        await until(lambda: outcomes_b.acked, "the acknowledgement after the other fleet left")
        assert len(outcomes_a.acked) == 1
        await b.close()
        assert all(p.closed for p in producers)

    run(scenario)


def test_fleets_with_other_settings_get_pools_of_their_own(producers: list[FakeProducer]) -> None:
    async def scenario() -> None:
        vans, trucks = make_links(1, "vans"), make_links(1, "trucks")
        a, _ = transport_for(vans, fleet="vans")
        b, _ = transport_for(trucks, fleet="trucks", acks="all")
        await a.connect(vans[0])
        await b.connect(trucks[0])
        assert a.pool is not b.pool and len(producers) == 4
        await a.close()
        await b.close()

    run(scenario)
