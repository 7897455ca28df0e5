"""Kafka devices: telemetry produced to a topic, keyed by device id, through a small pool of producers.

A kafka-python ``KafkaProducer`` owns an I/O thread and its sockets, so one per device does not scale:
devices share a pool of ``connection.producers`` producers (default 2) per connection settings (bootstrap,
acks, compression, linger, max block), process-wide, so two fleets with the same settings share it too, unless
they run through the network-fault layer (the default): then each fleet has its own pool, reached through a
SOCKS5 proxy of its own, so a fault on one fleet never touches another's produce requests.
Device *i* of a fleet uses producer ``i % producers``: with the device id as the message key, one device's
messages go to one partition, in order (a retried message may land after a later one; the envelope's
``seq`` tells).

Why kafka-python and not aiokafka on the runtime loop: kafka-python is the dependency chosen for the
project, verified against Tansu, and it keeps the protocol work (batching, compression, request
encoding) off the loop that schedules 10,000 devices; aiokafka would run all of it on that loop.

``KafkaProducer.send`` can block (up to ``max_block_ms`` while it waits for topic metadata), so the loop
never calls it: each producer has a sender thread fed by a queue. Outcomes (the broker's acknowledgement
or the error) come back from kafka-python's I/O thread in batches to the loop, where they are counted:
a message counts as acknowledged when the broker acknowledged it (``acks``), as failed with the error
when it did not. ``maxBlockMs`` bounds how long a message may wait, in our queue and in the producer,
before it fails: a broker that is down gives failures within about ``maxBlockMs``, never a hang.

Every queued message carries the transport of its own fleet (its outcomes object and its latency
histogram): a pool serves several fleets, and each outcome goes back to the fleet that sent the message.

Security (:mod:`iotix.transport.kafka_security`): ``connection.tls`` and ``connection.sasl`` (with Create
Fleet ``username=``/``password=`` overriding the SASL login) become kafka-python's ``security_protocol``,
``ssl_context`` and ``sasl_*`` settings of every producer of the pool; pools are shared only by fleets with
the same security settings. When the producers cannot start, a probe of the first bootstrap server (with TLS
when the fleet uses it) says why: TLS handshake refused (unknown CA, host name, client certificate), a TLS
listener dialled without TLS, or a broker that answers but did not accept the SASL login.

Network faults (``spec.faults``, :mod:`iotix.fault`): every broker connection of the pool's producers goes
through a SOCKS5 fault proxy on the runtime loop (:class:`~iotix.fault.proxy.SocksProxy`), given to kafka-python
as its documented ``proxy_url`` (``socks5h``: the proxy resolves the broker's name). kafka-python asks the proxy
for the bootstrap servers and for every broker address that metadata names, so each of them is covered without
knowing them in advance, from kafka-python's own threads, with nothing patched. The proxy is started on the loop
before the first producer, and closed with the pool. TLS and SASL run inside the tunnel (SNI and certificate
checks stay the broker's). Such a pool is keyed by the FaultSet too: a fleet with its own faults never shares
producers with another fleet (the connections are shared by its devices: faults act on the whole fleet).

Health checks (``periodic``): a producer whose sender or I/O thread died, or that has been failing for
longer than ``HEALTH_WINDOW_S`` while the broker accepts TCP connections, is closed and replaced
(``producersReplaced``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from iotix.behavior import compile_template
from iotix.errors import ConfigurationError
from iotix.fault.proxy import SocksProxy, start_socks_proxy
from iotix.transport.base import Link, Outcomes, Transport, TransportError, TransportSpec
from iotix.transport.kafka_security import fleet_security
from iotix.transport.kafka_wire import parse_bootstrap, probe_kafka

if TYPE_CHECKING:
    from iotix.fault.faultset import FaultSet

log = logging.getLogger("iotix.transport.kafka")

DEFAULT_PRODUCERS = 2
DEFAULT_MAX_BLOCK_MS = 5000
#: A message waiting in a producer's queue beyond this many is refused (counted as failed): a memory bound.
MAX_QUEUED = 50_000
#: Health checks run this often; a producer failing for this long while the broker answers is replaced.
HEALTH_INTERVAL_S = 5.0
HEALTH_WINDOW_S = 15.0

# (link, payload, topic, key, handed over at (loop time), attempt, first attempt at, the fleet's transport,
#  whether it is telemetry: an event to a topic a model's behavior names is not)
_Item = tuple[Link, bytes, str, bytes, float, int, float, "KafkaTransport", bool]


def build_kafka_client(factory: Callable[..., Any], **config: Any) -> Any:
    """``factory(**config)`` (a kafka-python client class); when that fails, close the network client it made.

    kafka-python 3.0 bootstraps in the constructor and, when that fails, leaves its IO thread running; the
    client is made through the documented ``kafka_client`` option so it can be closed here.
    """
    make_default = factory.DEFAULT_CONFIG["kafka_client"]  # type: ignore[attr-defined]
    made: list[Any] = []

    def make_client(**kwargs: Any) -> Any:
        client = make_default(**kwargs)
        made.append(client)
        return client

    try:
        return factory(kafka_client=make_client, **config)
    except BaseException:
        for client in made:
            with contextlib.suppress(Exception):
                client.close()
        raise


def make_producer(settings: Mapping[str, Any], index: int) -> Any:
    """The ``KafkaProducer`` of pool member ``index`` for a pool's ``settings`` (blocking: bootstraps).

    The one place a pool makes a kafka-python producer (unit tests put a fake here).
    """
    from kafka import KafkaProducer

    s = settings
    return build_kafka_client(
        KafkaProducer,
        bootstrap_servers=s["bootstrap"].split(","),
        client_id=f"iotix-{index}",
        acks=s["acks"],
        compression_type=s["compression"],
        linger_ms=s["linger_ms"],
        max_block_ms=s["max_block_ms"],
        request_timeout_ms=s["max_block_ms"],
        delivery_timeout_ms=s["max_block_ms"] + s["linger_ms"],
        bootstrap_timeout_ms=s["max_block_ms"],
        retries=0,  # retries are ours: counted, with backoff, bounded (the fleet's delivery bookkeeping)
        enable_idempotence=False,
        **s["security"].client_config(),  # TLS and SASL (security_protocol, ssl_context, sasl_*)
        **({"proxy_url": s["proxy_url"]} if s.get("proxy_url") else {}),  # the fleet's fault proxy
    )


def _acks(value: Any) -> int | str:
    return "all" if str(value) in ("all", "-1") else int(value)


def _compression(value: Any) -> str | None:
    name = str(value or "none")
    return None if name == "none" else name


class PooledProducer:
    """One KafkaProducer with its sender thread. ``enqueue`` runs on the loop; the rest on the two threads."""

    def __init__(self, pool: ProducerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self.pending = 0  # handed over and not yet resolved (loop side)
        self.producer: Any = None
        self.thread: threading.Thread | None = None
        self.failing_since: float | None = None

    def start(self) -> None:
        """Create the producer (blocking: runs in an executor) and start the sender thread."""
        self.producer = make_producer(self.pool.settings, self.index)
        self.thread = threading.Thread(target=self._run, name=f"iotix-kafka-sender-{self.index}", daemon=True)
        self.thread.start()

    def healthy(self) -> bool:
        sender = getattr(self.producer, "_sender", None)
        return bool(self.thread and self.thread.is_alive() and sender is not None and sender.is_alive())

    def _run(self) -> None:
        pool = self.pool
        max_wait = pool.settings["max_block_ms"] / 1000.0
        clock = pool.loop.time
        producer = self.producer
        get = self.queue.get
        while True:
            item = get()
            if item is None:
                return
            waited = clock() - item[4]
            if waited > max_wait:
                pool.resolve(item, self, None, f"not sent: waited {waited:.1f} s for the producer (maxBlockMs)", True)
                continue
            try:
                future = producer.send(item[2], value=item[1], key=item[3])
            except Exception as err:  # KafkaTimeoutError after max_block_ms, a closed producer, a bad topic
                pool.resolve(item, self, None, _describe(err), getattr(err, "retriable", True))
                continue
            future.add_callback(pool.acked, item, self)
            future.add_errback(pool.refused, item, self)

    def stop(self, timeout: float) -> None:
        """Flush what is in flight (up to ``timeout``), stop the thread, close the producer (blocking)."""
        self.queue.put(None)
        if self.thread is not None:
            self.thread.join(timeout)
        producer = self.producer
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.flush(timeout=timeout)
            try:
                producer.close(timeout=timeout)
            except Exception:  # records pending and the broker gone: kafka-python leaves its I/O thread running
                with contextlib.suppress(Exception):
                    producer._sender.force_close()
                    producer.close(timeout=0)


def _describe(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return f"{type(err).__name__}: {text}" if type(err).__name__ not in text else text


class ProducerPool:
    """Producers shared by the Kafka fleets with the same settings (see the module docstring)."""

    def __init__(
        self,
        key: tuple[Any, ...],
        settings: dict[str, Any],
        size: int,
        loop: asyncio.AbstractEventLoop,
        faults: FaultSet | None = None,
    ):
        self.key = key
        self.settings = settings
        self.size = size
        self.loop = loop
        #: the fleet's network faults; every broker connection goes through :attr:`proxy` when set
        self.faults = faults
        self.proxy: SocksProxy | None = None
        self.users = 0
        self.producers: list[PooledProducer] = []
        self.replaced = 0
        self._starting: asyncio.Future[None] | None = None
        self._results: deque[tuple[_Item, PooledProducer, Any, str | None, bool, float]] = deque()
        self._wake_pending = False
        self._next_check = 0.0

    @property
    def target(self) -> str:
        return f"kafka://{self.settings['bootstrap']}"

    async def ready(self) -> None:
        """Start the producers once (concurrent callers wait for the same start)."""
        if self.producers:
            return
        if self._starting is None or (self._starting.done() and self._starting.exception() is not None):
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)

    async def _start_proxy(self) -> None:
        """The fault proxy the producers connect through (on the loop, before any producer exists)."""
        if self.faults is None or self.proxy is not None:
            return
        from kafka import KafkaProducer

        if "proxy_url" not in KafkaProducer.DEFAULT_CONFIG:
            raise TransportError(
                f"network faults on Kafka fleets need kafka-python's proxy_url setting (kafka-python 3.0.12 has "
                f"it), which the installed kafka-python lacks; upgrade it or create the fleet without the fault "
                f"layer ({self.faults.target})"
            )
        self.proxy = await start_socks_proxy(self.loop, self.faults, name=f"{self.faults.target} Kafka")
        self.settings["proxy_url"] = self.proxy.url

    async def _start(self) -> None:
        await self._start_proxy()
        producers = [PooledProducer(self, i) for i in range(self.size)]
        try:
            for p in producers:
                await self.loop.run_in_executor(None, p.start)
        except Exception as err:
            from kafka.errors import KafkaError

            for p in producers:
                if p.producer is not None:
                    await self.loop.run_in_executor(None, p.stop, 0.5)
            if isinstance(err, (KafkaError, OSError)):
                why = await self.loop.run_in_executor(None, self._diagnose)
                cut = self.faults.admission(None, count=False) if self.faults is not None else None
                if cut is not None:
                    why = f"the fleet's network faults cut it off ({cut}: see Get Network Faults)"
                security = self.settings["security"]
                how = f"; connecting with {security.describe()}" if security.protocol != "PLAINTEXT" else ""
                raise TransportError(
                    f"cannot reach the Kafka broker at {self.settings['bootstrap']}: {_describe(err)} "
                    f"(is it running? check host/port or connection.bootstrap){how}{f': {why}' if why else ''}"
                ) from None
            raise TransportError(f"cannot create a Kafka producer for {self.target}: {_describe(err)}") from None
        self.producers = producers
        log.info("kafka producer pool for %s: %d producers", self.settings["bootstrap"], self.size)

    # -- sending (loop) ----------------------------------------------------------------------------------------

    def enqueue(
        self,
        owner: KafkaTransport,
        link: Link,
        payload: bytes,
        topic: str,
        attempt: int = 0,
        first_try: float = 0.0,
        telemetry: bool = True,
    ) -> str:
        """Hand a message of ``owner``'s fleet to the link's producer; '' or the reason it was refused."""
        if not self.producers:
            return f"not sent: the producers for {self.target} are not running"
        producer = self.producers[link.index % self.size]
        if producer.pending >= MAX_QUEUED:
            return f"not sent: {producer.pending} messages already wait for producer {producer.index} of {self.target}"
        producer.pending += 1
        now = self.loop.time()
        producer.queue.put((link, payload, topic, link.id.encode(), now, attempt, first_try or now, owner, telemetry))
        return ""

    # -- outcomes (kafka-python's threads -> loop) -----------------------------------------------------------

    def acked(self, item: _Item, producer: PooledProducer, metadata: Any) -> None:
        self.resolve(item, producer, metadata, None, False)

    def refused(self, item: _Item, producer: PooledProducer, err: BaseException) -> None:
        self.resolve(item, producer, None, _describe(err), bool(getattr(err, "retriable", True)))

    def resolve(self, item: _Item, producer: PooledProducer, metadata: Any, error: str | None, retriable: bool) -> None:
        """Thread-safe: queue an outcome, wake the loop once per batch."""
        self._results.append((item, producer, metadata, error, retriable, self.loop.time()))
        if not self._wake_pending:
            self._wake_pending = True
            with contextlib.suppress(RuntimeError):  # the loop closed
                self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        self._wake_pending = False
        results = self._results
        while results:
            item, producer, _metadata, error, retriable, done = results.popleft()
            producer.pending -= 1
            link, payload, topic, _key, t0, attempt, first_try, owner, telemetry = item
            if not telemetry:
                owner.event_done(link, topic, error)
                continue
            latency = done - t0
            if error is None:
                producer.failing_since = None
                owner.latency.record(latency)
                owner.outcomes.acknowledged(link, len(payload), latency)
                continue
            if producer.failing_since is None:
                producer.failing_since = time.monotonic()
            # KafkaTimeoutError (delivery timeout), RequestTimedOutError (no answer to a request), maxBlockMs
            code = "timeout" if any(word in error for word in ("Timeout", "TimedOut", "maxBlockMs")) else "kafka_error"

            owner.outcomes.failed(
                link,
                f"Kafka produce to {topic} at {self.settings['bootstrap']} failed: {error}",
                code,
                len(payload),
                latency,
                fault=retriable,
                resend=functools.partial(self._resend, owner, link, payload, topic, first_try),
                attempt=attempt,
                first_try=first_try,
            )

    def _resend(
        self, owner: KafkaTransport, link: Link, payload: bytes, topic: str, first_try: float, attempt: int
    ) -> None:
        reason = self.enqueue(owner, link, payload, topic, attempt, first_try)
        if reason:
            owner.outcomes.failed(link, reason, "queue_full", len(payload), fault=False)

    # -- health ----------------------------------------------------------------------------------------------

    def check(self, now: float) -> None:
        """Replace producers that are dead, or failing while the broker accepts connections (loop)."""
        if now < self._next_check or not self.producers:
            return
        self._next_check = now + HEALTH_INTERVAL_S
        suspects = [
            p
            for p in self.producers
            if not p.healthy() or (p.failing_since is not None and time.monotonic() - p.failing_since > HEALTH_WINDOW_S)
        ]
        if suspects:
            self.loop.create_task(self._replace(suspects))

    async def _replace(self, suspects: list[PooledProducer]) -> None:
        dead = [p for p in suspects if not p.healthy()]
        stuck = [p for p in suspects if p.healthy()]
        if stuck and self.faults is not None and self.faults.admission(None, count=False) is not None:
            stuck = []  # the fleet's faults cut the broker off: a new producer would not do better
        if stuck and not await self.loop.run_in_executor(None, self._broker_accepts):
            stuck = []  # the broker is down: a new producer would not do better
        for old in dead + stuck:
            fresh = PooledProducer(self, old.index)
            try:
                await self.loop.run_in_executor(None, fresh.start)
            except Exception as err:
                log.warning("kafka producer %d for %s: replacement failed: %s", old.index, self.target, err)
                continue
            fresh.pending = old.pending
            self.producers[old.index] = fresh
            self.replaced += 1
            reason = "its threads died" if old in dead else "it kept failing while the broker answers"
            log.warning("kafka producer %d for %s replaced: %s", old.index, self.target, reason)
            # What waits in the old queue goes out through the new producer (same order).
            while True:
                try:
                    item = old.queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    fresh.queue.put(item)
            await self.loop.run_in_executor(None, old.stop, 1.0)

    def _diagnose(self) -> str | None:
        """Why no producer could connect, when a probe of the first server can tell (TLS handshake, not Kafka)."""
        security = self.settings["security"]
        try:
            host, port = parse_bootstrap(self.settings["bootstrap"])[0]
        except ConfigurationError as err:
            return str(err)
        problem = probe_kafka(host, port, 2.0, security.tls)
        if problem is None and security.mechanism is not None:
            return (
                f"the broker answers, but SASL {security.mechanism} authentication as '{security.username}' "
                "did not succeed (wrong user name or password, or a mechanism the broker does not offer)"
            )
        return problem

    def _broker_accepts(self) -> bool:
        for server in self.settings["bootstrap"].split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                with socket.create_connection((host or "localhost", int(port)), timeout=1.0):
                    return True
            except (OSError, ValueError):
                continue
        return False

    async def close(self) -> None:
        producers, self.producers = self.producers, []
        timeout = min(2.0, self.settings["max_block_ms"] / 1000.0)
        for p in producers:
            await self.loop.run_in_executor(None, p.stop, timeout)
        self._deliver()  # outcomes that arrived while closing
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            proxy.close()


#: Pools by settings, shared by the fleets of the process (all on the runtime loop).
_pools: dict[tuple[Any, ...], ProducerPool] = {}


def _settings(spec: TransportSpec) -> tuple[dict[str, Any], int]:
    connection, fleet_name = spec.connection, spec.fleet
    host, port = connection.get("host"), connection.get("port")
    if host or port:
        bootstrap = f"{host or 'localhost'}:{port or 9092}"
    else:
        bootstrap = str(connection.get("bootstrap") or "localhost:9092")
    compression = _compression(connection.get("compression"))
    if compression is not None:
        from kafka.codec import has_gzip, has_lz4, has_snappy, has_zstd

        available = {"gzip": has_gzip, "snappy": has_snappy, "lz4": has_lz4, "zstd": has_zstd}[compression]()
        if not available:
            raise TransportError(
                f"Fleet '{fleet_name}': connection.compression '{compression}' needs a Python package that is not "
                "installed (python-snappy, lz4 or zstandard); use gzip or none"
            )
    settings = {
        "bootstrap": bootstrap,
        "acks": _acks(connection.get("acks", 1)),
        "compression": compression,
        "linger_ms": int(connection.get("lingerMs", 5)),
        "max_block_ms": int(connection.get("maxBlockMs", DEFAULT_MAX_BLOCK_MS)),
    }
    return settings, int(connection.get("producers", DEFAULT_PRODUCERS))


class KafkaTransport(Transport):
    """Kafka devices of one fleet, producing through a shared :class:`ProducerPool`."""

    protocol = "kafka"
    request_based = True

    def __init__(self, spec: TransportSpec, links: Sequence[Link], outcomes: Outcomes) -> None:
        super().__init__(spec, links, outcomes)
        from iotix.observe.histogram import LatencyRecorder

        settings, size = _settings(spec)
        if size < 1:
            raise TransportError(f"Fleet '{spec.fleet}': connection.producers must be >= 1, got {size}")
        self.settings = settings
        self.security = fleet_security(spec)  # TLS and SASL; the pool's producers get it as settings["security"]
        self.size = size
        self.key: tuple[Any, ...] = (*sorted(settings.items()), ("security", self.security), size)
        if spec.faults is not None:  # its own pool: the faults of one fleet must not act on another's messages
            self.key = (*self.key, ("faults", id(spec.faults)))
        self._topic = compile_template(str(spec.connection["topic"]))
        self.latency = LatencyRecorder()
        self.pool: ProducerPool | None = None
        self.events_sent = 0  # behaviors' events to their own topics (not telemetry)
        self.events_failed = 0

    @property
    def target(self) -> str:
        return f"kafka://{self.settings['bootstrap']}"

    def descriptors(self) -> int:
        """Per pooled producer: a connection to each bootstrap server, its selector and its wake-up pair.

        Through the fault layer each connection holds two more sockets in this process (the proxy's accepted
        one and its upstream one), and the proxy its listening socket.
        """
        connections = len(str(self.settings["bootstrap"]).split(","))
        if self.spec.faults is None:
            return self.size * (connections + 3)
        return self.size * (3 * connections + 3) + 1

    def _acquire(self) -> ProducerPool:
        if self.pool is None:
            pool = _pools.get(self.key)
            if pool is None:
                settings = {**self.settings, "security": self.security}
                pool = _pools[self.key] = ProducerPool(
                    self.key, settings, self.size, asyncio.get_running_loop(), self.spec.faults
                )
            pool.users += 1
            self.pool = pool
        return self.pool

    def topic_for(self, link: Link) -> str:
        return self._topic.render_text(link.variables())

    async def connect(self, link: Link) -> None:
        try:
            await self._acquire().ready()
        except TransportError as err:
            raise TransportError(f"{err} (fleet '{self.name}')") from None
        if link.topic is None:
            link.topic = self.topic_for(link)
        link.conn = True

    def is_connected(self, link: Link) -> bool:
        return bool(link.conn) and self.pool is not None and bool(self.pool.producers)

    def send(
        self, link: Link, payload: bytes, topic: str | None = None, qos: int | None = None, retain: bool = False
    ) -> bool:
        """Produce telemetry to the device's topic, or (``topic`` given: a behavior's event) to ``topic``.

        Events are keyed by the device id too; their outcome is counted in ``eventsSent`` / ``eventsFailed``
        (a failure becomes the device's last error), not in the telemetry counters.
        """
        pool = self.pool
        if not link.conn or pool is None:
            return False
        if topic is not None:
            reason = pool.enqueue(self, link, payload, topic, telemetry=False)
            if reason:
                self.event_done(link, topic, reason)
            return not reason
        reason = pool.enqueue(self, link, payload, link.topic or self.topic_for(link))
        if reason:
            self.outcomes.not_sent(link, reason)  # the fleet counts the refused message as failed
            return False
        return True

    def event_done(self, link: Link, topic: str, error: str | None) -> None:
        """The outcome of an event (not telemetry) produced to ``topic`` (loop)."""
        if error is None:
            self.events_sent += 1
            return
        self.events_failed += 1
        self.outcomes.not_sent(link, f"event to Kafka topic {topic} at {self.settings['bootstrap']} failed: {error}")

    async def disconnect(self, link: Link) -> None:
        link.conn = None

    def drop(self, link: Link) -> None:
        link.conn = None  # what its producer already took still goes out: it left the device

    async def drain(self, timeout: float) -> None:
        pool = self.pool
        if pool is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(p.pending for p in pool.producers) and loop.time() < deadline:
            await asyncio.sleep(0.02)

    def periodic(self, now: float) -> None:
        if self.pool is not None:
            self.pool.check(now)

    async def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is None:
            return
        pool.users -= 1
        if pool.users <= 0:
            _pools.pop(pool.key, None)
            await pool.close()

    def describe(self) -> dict[str, Any]:
        pool = self.pool
        return {
            **super().describe(),
            "producers": len(pool.producers) if pool else 0,
            "producersReplaced": pool.replaced if pool else 0,
            "messagesInFlight": sum(p.pending for p in pool.producers) if pool else 0,
            "acks": self.settings["acks"],
            "compression": self.settings["compression"] or "none",
            "security": self.security.protocol,
            "produceLatencyMs": self.latency.summary(),
            "eventsSent": self.events_sent,
            "eventsFailed": self.events_failed,
        }


def create(spec: TransportSpec, links: Sequence[Link], outcomes: Outcomes) -> KafkaTransport:
    """The registry's entry (:mod:`iotix.transport.registry`)."""
    return KafkaTransport(spec, links, outcomes)
