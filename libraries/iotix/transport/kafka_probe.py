"""A Kafka client for tests: creates topics, produces, and consumes what arrives, off the runtime loop.

It is what the ``ProtocolClient`` Kafka keywords drive (the twin of :mod:`iotix.transport.mqtt_probe`).
kafka-python clients block, so they never run on the runtime loop: admin and producer calls run in the
caller's thread, and each subscription polls its consumer, in a consumer group of its own with short
timeouts, in a thread of its own and hands what arrived to the loop, where it is kept (up to a bound) and
counted per device in the connection's :class:`~iotix.observe.tracker.TelemetryTracker`.

Failures are :class:`KafkaClientError` (a :class:`~iotix.transport.base.TransportError`) or, for a bad topic
name or partition count, :class:`~iotix.errors.ConfigurationError`; their messages name the broker and the
reason.
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
from typing import Any, TypeVar

from iotix.encode import decode_envelope
from iotix.errors import ConfigurationError
from iotix.observe.tracker import TelemetryTracker
from iotix.transport.base import TransportError
from iotix.transport.kafka import build_kafka_client
from iotix.transport.kafka_security import KafkaSecurity
from iotix.transport.kafka_wire import parse_bootstrap, probe_kafka
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
_Probe = TypeVar("_Probe", bound="KafkaProbe")


class KafkaClientError(TransportError):
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

    def __init__(self, connection: KafkaProbe, topic: str, consumer: Any, group_id: str) -> None:
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


class KafkaProbe:
    """A test connection to a Kafka cluster under an ``alias``: admin client, producer and subscriptions.

    Its methods block and are called from a caller's thread (a keyword's), never from the runtime ``loop``.
    Every subscription feeds :attr:`tracker` (named ``kafka:<alias>``), which counts per device what arrived.
    The producer waits for every replica (``acks='all'``) and is not idempotent, so that it keeps
    working after a broker restart (Tansu forgets producer ids).
    """

    def __init__(
        self,
        alias: str,
        bootstrap: str,
        loop: asyncio.AbstractEventLoop,
        admin: Any,
        producer: Any,
        security: KafkaSecurity | None = None,
    ) -> None:
        self.alias = alias
        self.bootstrap = bootstrap
        self.security = security or KafkaSecurity()
        self.loop = loop
        self.admin = admin
        self.producer = producer
        self.tracker = TelemetryTracker(f"{SOURCE_PREFIX}{alias}")
        self.subscriptions: dict[str, KafkaSubscription] = {}
        self.subscribed_at: float | None = None  # loop time when the first subscription began
        self.closed = False

    @classmethod
    def connect(
        cls: type[_Probe],
        alias: str,
        bootstrap: str,
        loop: asyncio.AbstractEventLoop,
        timeout: float = 5.0,
        security: KafkaSecurity | None = None,
    ) -> _Probe:
        """Connect to ``bootstrap`` (``host:port[,host:port]``); fail within about ``timeout`` seconds.

        Every server is first asked for its API versions on a socket of its own (with TLS when ``security``
        has TLS), so an unreachable or non-Kafka address, or a failed TLS handshake, fails quickly and says
        why. ``security`` (:func:`iotix.transport.kafka_security.client_security`) sets TLS and SASL.
        """
        security = security or KafkaSecurity()
        from kafka import KafkaAdminClient, KafkaProducer
        from kafka.errors import KafkaError

        servers = parse_bootstrap(bootstrap)
        deadline = time.monotonic() + timeout
        problems = []
        for host, port in servers:
            problem = probe_kafka(host, port, max(deadline - time.monotonic(), 0.1), security.tls)
            if problem is None:
                break
            problems.append(problem)
        else:
            raise KafkaClientError(f"no Kafka broker answers at {bootstrap}: {'; '.join(problems)}")
        ms = int(max(deadline - time.monotonic(), 1.0) * 1000)
        common = {"bootstrap_servers": bootstrap, "bootstrap_timeout_ms": ms, **security.client_config()}
        login = (
            f" (SASL {security.mechanism} as '{security.username}': wrong user name or password, or a mechanism "
            "the broker does not offer?)"
            if security.mechanism
            else ""
        )
        number = next(_client_numbers)
        try:
            admin = build_kafka_client(
                KafkaAdminClient, client_id=f"iotix-{alias}-admin-{number}", request_timeout_ms=10_000, **common
            )
        except (KafkaError, OSError) as err:
            raise KafkaClientError(f"no Kafka broker answers at {bootstrap}: {err}{login}") from None
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
            raise KafkaClientError(f"no Kafka broker answers at {bootstrap}: {err}{login}") from None
        return cls(alias, bootstrap, loop, admin, producer, security)

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
                **self.security.client_config(),
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
