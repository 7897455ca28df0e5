"""An MQTT client for tests: subscribes, publishes and collects what arrives, on the runtime loop.

It is what ``ProtocolClient`` keywords drive: every message on a subscription is kept (up to a bound) for
``Wait Until Messages Received`` and fed to a :class:`~iotix.observe.tracker.TelemetryTracker`, which
knows per device what arrived, what is missing and what came twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from iotix.encode import decode_envelope
from iotix.errors import ConfigurationError
from iotix.observe.tracker import TelemetryTracker
from iotix.transport.base import TransportError, check_port
from iotix.transport.paho_driver import LoopClient

if TYPE_CHECKING:
    from iotix.transport.tls import ClientTls

log = logging.getLogger("iotix.probe")

#: How often a test receiver retries after losing its broker.
RECONNECT_INTERVAL_S = 0.05
#: Messages kept per subscription; older ones are discarded (and counted) beyond this.
MAX_KEPT = 200_000
#: The longest topic MQTT allows: a UTF-8 string of at most 65,535 bytes.
MAX_TOPIC_BYTES = 65_535


def _topic_text_problem(topic: str, what: str) -> str | None:
    if not topic:
        return f"{what} cannot be empty"
    if "\x00" in topic:
        return f"{what} cannot contain the null character (U+0000)"
    size = len(topic.encode("utf-8", "surrogatepass"))
    if size > MAX_TOPIC_BYTES:
        return f"{what} is at most {MAX_TOPIC_BYTES:,} bytes of UTF-8, this one has {size:,}"
    return None


def topic_filter_problem(topic: str) -> str | None:
    """Why ``topic`` is not a valid MQTT subscription filter (MQTT 3.1.1 and 5, section 4.7), or None.

    ``#`` must be a whole level and the last one (``a/#``); ``+`` must be a whole level (``a/+/c``).
    """
    problem = _topic_text_problem(topic, "a topic filter")
    if problem:
        return problem
    levels = topic.split("/")
    for k, level in enumerate(levels):
        if "#" in level and level != "#":
            stem = level.replace("#", "")
            example = "/".join([*levels[:k], stem, "#"] if stem else [*levels[:k], "#"])
            return f"'#' must be a whole level (as in '{example}'), but level {k + 1} is '{level}'"
        if level == "#" and k < len(levels) - 1:
            rest = "/".join(levels[k + 1 :])
            return (
                f"'#' must be the last level: it matches everything below it, so nothing can follow it "
                f"(as in '{'/'.join(levels[: k + 1])}'), but '/{rest}' follows it"
            )
        if "+" in level and level != "+":
            example = "/".join([*levels[:k], "+", *levels[k + 1 :]])
            return f"'+' must be a whole level (as in '{example}'), but level {k + 1} is '{level}'"
    return None


def topic_name_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be published to (empty, a wildcard, a null character, too long), or None."""
    problem = _topic_text_problem(topic, "a topic")
    if problem:
        return problem
    wildcards = [repr(c) for c in "+#" if c in topic]
    if wildcards:
        are = "is a wildcard" if len(wildcards) == 1 else "are wildcards"
        return f"a message goes to one topic: {' and '.join(wildcards)} {are}, for subscriptions only"
    return None


@dataclass(slots=True)
class ReceivedMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    received_at: float  # epoch seconds

    def as_dict(self) -> dict[str, Any]:
        try:
            text: str | None = self.payload.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        return {
            "topic": self.topic,
            "payload": text if text is not None else self.payload.hex(),
            "qos": self.qos,
            "retain": self.retain,
            "receivedAt": self.received_at,
        }


def filter_covers(outer: str, inner: str) -> bool:
    """Whether every topic that filter ``inner`` matches is also matched by filter ``outer``.

    ``inner`` may be a topic name (then: whether ``outer`` matches it) or a filter with ``+`` and ``#``:
    ``a/#`` covers ``a/+/b``, ``a/+/b`` covers ``a/x/b`` and itself, ``a/x/b`` does not cover ``a/+/b``.
    """
    outer_levels, inner_levels = outer.split("/"), inner.split("/")
    for k, level in enumerate(outer_levels):
        if level == "#":
            return True  # the rest, and the parent level itself (``a/#`` matches ``a``)
        if k >= len(inner_levels):
            return False
        if level == "+":
            if inner_levels[k] == "#":
                return False
            continue
        if level != inner_levels[k]:
            return False
    return len(inner_levels) == len(outer_levels)


@dataclass(eq=False)
class Waiter:
    """Someone waiting for ``want`` messages of a subscription (those matching ``topic``, when given)."""

    want: int
    got: int
    future: asyncio.Future[None]
    topic: str | None = None


@dataclass
class Subscription:
    """A subscription to ``topic``; with ``share``, the shared subscription ``$share/<share>/<topic>`` (MQTT 5,
    and Mosquitto for 3.1.1 too): the broker hands each message to one of the group's subscribers.

    With ``keep=False`` messages are counted (per topic), not kept: a receiver that only feeds its tracker.
    """

    topic: str
    qos: int
    messages: list[ReceivedMessage] = field(default_factory=list)
    discarded: int = 0
    waiters: list[Waiter] = field(default_factory=list)
    share: str | None = None
    keep: bool = True
    counts: dict[str, int] = field(default_factory=dict)  # per topic, when not kept

    @property
    def wire_filter(self) -> str:
        """The filter sent to the broker."""
        return f"$share/{self.share}/{self.topic}" if self.share else self.topic

    def add(self, msg: ReceivedMessage) -> None:
        if self.keep:
            self.messages.append(msg)
            if len(self.messages) > MAX_KEPT:
                drop = len(self.messages) - MAX_KEPT
                del self.messages[:drop]
                self.discarded += drop
        else:
            self.discarded += 1
            self.counts[msg.topic] = self.counts.get(msg.topic, 0) + 1
        for waiter in self.waiters:
            if waiter.topic is None or filter_covers(waiter.topic, msg.topic):
                waiter.got += 1
                if waiter.got >= waiter.want and not waiter.future.done():
                    waiter.future.set_result(None)

    @property
    def total(self) -> int:
        return len(self.messages) + self.discarded

    def matching(self, topic: str) -> list[ReceivedMessage]:
        """The kept messages of this subscription on ``topic`` (a topic name or a narrower filter)."""
        if topic == self.topic:
            return list(self.messages)
        return [m for m in self.messages if filter_covers(topic, m.topic)]

    def count(self, topic: str) -> int:
        """How many messages arrived on ``topic`` (this subscription's filter, or a narrower one)."""
        if topic == self.topic:
            return self.total
        if self.keep:
            return len(self.matching(topic))
        return sum(n for t, n in self.counts.items() if filter_covers(topic, t))


class RemoteSubscription(Protocol):
    """A subscription of a connection whose messages other processes receive (a sharded subscription):
    what arrives is counted there, fed to the connection's tracker by :meth:`refresh`, and not kept here."""

    topic: str

    async def count(self, topic: str) -> int:
        """How many messages arrived on ``topic`` (the subscription's filter or a narrower one)."""

    async def refresh(self) -> None:
        """Bring the connection's tracker up to date with what the other processes received."""

    async def close(self) -> None:
        """Stop receiving (the other processes end)."""


def _on_connect(client: LoopClient, probe: MqttProbe, flags: Any, reason_code: Any, properties: Any) -> None:
    client.connack_received(reason_code)


def _on_disconnect(client: LoopClient, probe: MqttProbe, flags: Any, reason_code: Any, properties: Any) -> None:
    client.connection_failed(str(reason_code))
    if not probe.closing and probe.connected_at and probe._reconnect_task is None:
        probe.lost(str(reason_code))


def _on_message(client: LoopClient, probe: MqttProbe, message: Any) -> None:
    probe.received(message)


def _on_subscribe(client: LoopClient, probe: MqttProbe, mid: int, reason_codes: Any, properties: Any) -> None:
    probe.acked(mid, reason_codes)


def _on_publish(client: LoopClient, probe: MqttProbe, mid: int, reason_code: Any, properties: Any) -> None:
    probe.acked(mid, [reason_code])


class MqttProbe:
    """One test connection to a broker (an ``alias`` in the keywords)."""

    def __init__(self, alias: str, client_id: str, *, mqtt_version: str = "3.1.1") -> None:
        self.alias = alias
        self.client_id = client_id
        self.client = LoopClient(
            asyncio.get_running_loop(), client_id, mqtt_version=mqtt_version, clean_session=True, userdata=self
        )
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = _on_connect
        self.client.on_disconnect = _on_disconnect
        self.client.on_message = _on_message
        self.client.on_subscribe = _on_subscribe
        self.client.on_publish = _on_publish
        self.subscriptions: dict[str, Subscription] = {}
        #: sharded subscriptions: received by other processes, merged into :attr:`tracker` on refresh
        self.remote: dict[str, RemoteSubscription] = {}
        self.tracker = TelemetryTracker(alias)
        self.closing = False
        self.host = ""
        self.port = 0
        self.tls: ClientTls | None = None
        self.connected_at = 0.0
        self.subscribed_at: float | None = None  # loop time of the first acknowledged subscription
        self.errors: list[str] = []
        self._credentials: tuple[str | None, str | None] = (None, None)  # for sharded receivers; never logged
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._on_message_hooks: list[Callable[[ReceivedMessage], None]] = []
        self._reconnect_task: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None

    def credentials(self) -> tuple[str | None, str | None]:
        """The user name and password this connection logged in with (for the receivers of a sharded
        subscription, which log in the same way); never log them."""
        return self._credentials

    @property
    def target(self) -> str:
        return f"{'mqtts' if self.tls is not None else 'mqtt'}://{self.host}:{self.port}"

    async def connect(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 30,
        timeout: float = 10.0,
        tls: ClientTls | None = None,
    ) -> None:
        """Connect (over TLS with ``tls``, also on every reconnect); raises :class:`TransportError`."""
        try:
            check_port(port)
        except ConfigurationError as err:
            raise ConfigurationError(f"Cannot connect '{self.alias}' to MQTT broker {host}:{port}: {err}") from None
        self.host, self.port, self.tls = host, port, tls
        if username is not None:
            self.client.username_pw_set(username, password)
            self._credentials = (username, password)
        await self.client.open(host, port, keepalive=keepalive, timeout=timeout, tls=tls)
        self.connected_at = time.time()
        self._keepalive_task = asyncio.get_running_loop().create_task(self._keep_alive(keepalive))
        log.info("probe '%s' connected to %s as '%s'", self.alias, self.target, self.client_id)

    async def _keep_alive(self, keepalive: int) -> None:
        """PINGREQ when idle, so a quiet subscription is not closed by the broker."""
        while not self.closing:
            await asyncio.sleep(min(1.0, keepalive / 4))
            self.client.misc()

    def lost(self, reason: str) -> None:
        """The broker went away after we had connected: note it and come back (subscriptions renewed).

        A test receiver retries every 50 ms (not with growing backoff like devices), so that after a broker
        restart it is back, subscribed, before most devices resend: what devices publish before it is
        subscribed again is lost to it, as it would be to any subscriber without a persistent session.
        """
        self.errors.append(f"connection to {self.target} lost: {reason}")
        log.warning("probe '%s': connection to %s lost (%s); reconnecting", self.alias, self.target, reason)
        self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            while not self.closing:
                await asyncio.sleep(RECONNECT_INTERVAL_S)
                try:
                    await self.client.open(self.host, self.port, timeout=5.0, tls=self.tls)
                except TransportError:
                    continue
                if self.subscriptions:
                    self.client.subscribe([(sub.wire_filter, sub.qos) for sub in self.subscriptions.values()])
                self.client.kick()
                log.info("probe '%s' reconnected to %s", self.alias, self.target)
                return
        finally:
            self._reconnect_task = None

    async def _wait_ack(self, info_rc: Any, mid: int, what: str, timeout: float) -> Any:
        if info_rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransportError(f"{what} failed on '{self.alias}': {mqtt.error_string(info_rc)}")
        fut = self._acks.setdefault(mid, asyncio.get_running_loop().create_future())
        self.client.kick()
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise TransportError(
                f"{what} on '{self.alias}' was not acknowledged by {self.target} within {timeout:g} s"
            ) from None
        finally:
            self._acks.pop(mid, None)

    def acked(self, mid: int, reason_codes: Any) -> None:
        fut = self._acks.get(mid)
        if fut is None:
            fut = self._acks[mid] = asyncio.get_running_loop().create_future()
        if not fut.done():
            fut.set_result(reason_codes)

    async def subscribe(
        self, topic: str, qos: int = 0, timeout: float = 10.0, *, share: str | None = None, keep: bool = True
    ) -> None:
        """Subscribe to ``topic``; ``share`` and ``keep`` as in :class:`Subscription`."""
        problem = topic_filter_problem(topic)
        if problem:
            raise ConfigurationError(f"'{self.alias}' cannot subscribe to '{topic}': {problem}.")
        if topic in self.remote:
            raise ConfigurationError(
                f"'{self.alias}' already has a sharded subscription to '{topic}'; disconnect it first."
            )
        if topic not in self.subscriptions:
            self.subscriptions[topic] = Subscription(topic, qos, share=share, keep=keep)
        wire = self.subscriptions[topic].wire_filter
        rc, mid = self.client.subscribe(wire, qos)
        codes = await self._wait_ack(rc, mid, f"subscribing to '{wire}'", timeout)
        failed = [c for c in (codes or []) if getattr(c, "is_failure", False)]
        if failed:
            del self.subscriptions[topic]
            raise TransportError(f"broker {self.target} refused the subscription to '{wire}': {failed[0]}")
        if self.subscribed_at is None:
            self.subscribed_at = asyncio.get_running_loop().time()

    async def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, timeout: float = 10.0
    ) -> None:
        problem = topic_name_problem(topic)
        if problem:
            raise ConfigurationError(f"'{self.alias}' cannot publish to '{topic}': {problem}.")
        info = self.client.publish(topic, payload, qos, retain)
        if qos == 0:
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise TransportError(f"publishing to '{topic}' failed on '{self.alias}': {mqtt.error_string(info.rc)}")
            self.client.kick()
            return
        await self._wait_ack(info.rc, info.mid, f"publishing to '{topic}' (QoS {qos})", timeout)

    def received(self, message: Any) -> None:
        now = time.time()
        msg = ReceivedMessage(message.topic, bytes(message.payload), message.qos, bool(message.retain), now)
        topic = msg.topic
        matched = False
        for sub in self.subscriptions.values():
            if sub.topic == topic or mqtt.topic_matches_sub(sub.topic, topic):
                sub.add(msg)
                matched = True
        if matched and not msg.retain:
            self.tracker.record_envelope(decode_envelope(msg.payload), now)

    def listens_to(self, topic: str) -> int:
        """2: subscribed to ``topic`` itself; 1: to a filter that covers it (see :func:`filter_covers`); 0: no.

        Sharded subscriptions (:attr:`remote`) count too."""
        if topic in self.subscriptions or topic in self.remote:
            return 2
        return int(any(filter_covers(sub, topic) for sub in (*self.subscriptions, *self.remote)))

    def remote_for(self, topic: str) -> RemoteSubscription | None:
        """The sharded subscription that answers for ``topic``: ``topic`` itself, else one whose filter covers
        it when no subscription of this process does; None when a subscription of this process answers."""
        if topic in self.remote:
            return self.remote[topic]
        if topic in self.subscriptions or any(filter_covers(s, topic) for s in self.subscriptions):
            return None
        return next((r for t, r in self.remote.items() if filter_covers(t, topic)), None)

    async def refresh(self) -> None:
        """Bring :attr:`tracker` up to date with what the sharded subscriptions received."""
        for remote in list(self.remote.values()):
            await remote.refresh()

    def subscription(self, topic: str) -> Subscription:
        """The subscription ``topic``, else the oldest one whose filter covers ``topic``."""
        sub = self.subscriptions.get(topic)
        if sub is None:
            covering = [s for s in self.subscriptions.values() if filter_covers(s.topic, topic)]
            if covering:
                return max(covering, key=lambda s: s.total)
            known = ", ".join(f"'{t}'" for t in self.subscriptions) or "none"
            raise TransportError(
                f"'{self.alias}' is not subscribed to '{topic}' (subscriptions: {known}); use Subscribe To Topic first."
            )
        return sub

    def messages_on(self, topic: str) -> list[ReceivedMessage]:
        """What arrived on ``topic``: a subscription, or a topic (filter) within one."""
        return self.subscription(topic).matching(topic)

    async def wait_for(self, topic: str, count: int, timeout: float) -> list[ReceivedMessage]:
        """Wait until ``count`` messages arrived on ``topic`` (as in :meth:`messages_on`); return them all."""
        sub = self.subscription(topic)
        exact = sub.topic == topic
        have = sub.total if exact else len(sub.matching(topic))
        if have < count:
            waiter = Waiter(count, have, asyncio.get_running_loop().create_future(), None if exact else topic)
            sub.waiters.append(waiter)
            try:
                async with asyncio.timeout(timeout):
                    await waiter.future
            except TimeoutError:
                pass
            finally:
                sub.waiters.remove(waiter)
        return sub.matching(topic)

    async def close(self) -> None:
        self.closing = True
        for task in (self._reconnect_task, self._keepalive_task):
            if task is not None:
                task.cancel()
        self.client.close_gracefully()
        remote, self.remote = list(self.remote.values()), {}
        for sub in remote:
            try:
                await sub.close()
            except Exception as err:  # the others must still stop
                log.warning("probe '%s': stopping the sharded subscription '%s' failed: %s", self.alias, sub.topic, err)
