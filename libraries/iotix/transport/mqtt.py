"""MQTT devices: one real paho connection per device, all on the runtime's loop."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import TYPE_CHECKING, Any

from paho.mqtt.enums import MQTTErrorCode

from iotix.behavior import compile_template
from iotix.transport.base import Link, Outcomes, Transport, TransportError, TransportSpec
from iotix.transport.paho_driver import LoopClient
from iotix.transport.tls import FleetTls

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger("iotix.transport.mqtt")
OK = MQTTErrorCode.MQTT_ERR_SUCCESS
#: ``periodic`` runs about every 100 ms; keep-alive checks visit every client once per quarter keep-alive
#: period (at most every 5 s), a slice at a time, so 10,000 clients cost a few hundred calls a second.
PERIODIC_S = 0.1


def _on_connect(client: LoopClient, link: Link, flags: Any, reason_code: Any, properties: Any) -> None:
    client.connack_received(reason_code)


def _on_disconnect(client: LoopClient, link: Link, flags: Any, reason_code: Any, properties: Any) -> None:
    if client.connection_failed(str(reason_code)) or client.close_reported:
        return  # a failed attempt (connect raises), a close the owner made, or a loss already reported
    client.close_reported = True  # paho may report one keep-alive timeout twice
    client.outcomes.connection_lost(link, f"connection lost ({client.lost_reason or reason_code})")


def _on_publish(client: LoopClient, link: Link, mid: int, reason_code: Any, properties: Any) -> None:
    side = client.side_mids
    if side and mid in side:  # an alert or a command response, not telemetry: not in the telemetry counters
        side.discard(mid)
        return
    if getattr(reason_code, "is_failure", False):
        client.outcomes.failed(link, f"broker rejected publish: {reason_code}", fault=False)
    else:
        client.outcomes.acknowledged(link)


def watch_device_client(client: LoopClient, outcomes: Outcomes, *, count_acks: bool = False) -> None:
    """Route a device's client events to ``outcomes``: CONNACK and disconnects, and PUBACKs when ``count_acks``.

    The client's ``userdata`` must be the device's :class:`Link`; an unexpected disconnect is reported as
    ``connection_lost`` (once) unless ``client.close_reported`` is set. Used by adapters that open an MQTT
    connection for a device of another protocol (the hybrid IoTFlow devices of the HTTP adapter).
    """
    client.outcomes = outcomes
    client.on_connect = _on_connect
    client.on_disconnect = _on_disconnect
    if count_acks:
        client.on_publish = _on_publish


def publish_telemetry(link: Link, client: LoopClient, payload: bytes, qos: int, outcomes: Outcomes) -> bool:
    """Publish one telemetry payload to ``link.topic`` (QoS 0 on the corked fast path)."""
    if qos == 0:
        field = client.fast_topic
        if field is None:
            field = client.fast_topic = client.topic_field(link.topic or "")
        if client.publish_qos0(field, payload):
            return True
        outcomes.not_sent(link, "publish failed: not connected")
        return False
    info = client.publish(link.topic or "", payload, qos)
    if info.rc != OK:
        outcomes.not_sent(link, f"publish failed: {info.rc}")
        return False
    client.kick()
    return True


def publish_event(
    link: Link,
    client: LoopClient,
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    outcomes: Outcomes,
    *,
    acks: bool,
) -> bool:
    """Publish a message that is not telemetry (a behavior's event, a command's response) to ``topic``.

    With ``acks`` (the client reports PUBACKs to the outcomes) its PUBACK is kept out of the telemetry counters.
    """
    info = client.publish(topic, payload, qos, retain)
    if info.rc != OK:
        outcomes.not_sent(link, f"publish to {topic} failed: {info.rc}")
        return False
    if acks and qos > 0:
        if client.side_mids is None:
            client.side_mids = set()
        client.side_mids.add(info.mid)
    if client.has_output:
        client.kick()
    return True


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MqttTransport(Transport):
    """paho-mqtt 2.x clients (MQTT 3.1.1 or 5) driven by the runtime loop."""

    protocol = "mqtt"
    #: one connection per device: network faults act on chosen devices (their sockets are wrapped)
    per_device_faults = True

    def __init__(self, spec: TransportSpec, links: Sequence[Link], outcomes: Outcomes) -> None:
        super().__init__(spec, links, outcomes)
        conn = spec.connection
        self.host: str = str(conn.get("host") or conn.get("broker") or "localhost")
        default_port = 8883 if conn.get("tls") is not None else 1883
        self.port: int = int(conn.get("port") or default_port)
        #: every target as (host, port): the device with global index i connects to target i mod n
        #: (``connection.targets``, from ``host=h1:p1,h2:p2``; else the one host and port)
        self.targets: tuple[tuple[str, int], ...] = tuple(
            (str(h), int(p) if p is not None else default_port) for h, p in conn.get("targets") or ()
        ) or ((self.host, self.port),)
        #: local source addresses: the device with global index i binds its socket to address i mod m before it
        #: connects (``connection.sourceAddresses``, from ``source_addresses=``); empty: the kernel picks
        self.sources: tuple[str, ...] = tuple(conn.get("sourceAddresses") or ())
        self.qos: int = int(conn.get("qos", 0))
        self.keepalive: int = int(conn.get("keepAlive", 60))
        self.clean_session: bool = bool(conn.get("cleanSession", True))
        self.mqtt_version: str = str(conn.get("mqttVersion", "3.1.1"))
        self.connect_timeout: float = float(conn.get("connectTimeoutMs", 10000)) / 1000.0
        self.max_inflight: int = int(conn.get("maxInflight", 100))
        #: a QoS 1/2 PUBLISH unacknowledged this long gives the connection up (default: the keep-alive)
        self.ack_timeout: float = float(conn.get("pubackTimeoutMs", self.keepalive * 1000)) / 1000.0
        self.tls: FleetTls | None = FleetTls.of(spec)  # connection.tls: one SSL context per distinct file set
        self._client_id = compile_template(str(conn.get("clientIdPattern", "${deviceId}")))
        self._topic = compile_template(str(conn.get("topicPattern", "iotix/${deviceId}/telemetry")))
        self._will = conn.get("lastWill")
        self._commands: list[tuple[str, Any]] = []  # (command name, topic template)
        default_cmd = conn.get("commandTopicPattern")
        for cmd in spec.model.commands:
            pattern = cmd.topic or default_cmd
            if pattern:
                self._commands.append((cmd.name, compile_template(str(pattern))))
        #: per target: (address family, resolved address), resolved at its first connection
        self._addrs: list[tuple[int, tuple[Any, ...]] | None] = [None] * len(self.targets)
        self._misc_cursor = 0
        self._on_message_cb = self._on_message  # one bound method shared by every client

    @property
    def target(self) -> str:
        """``mqtt://host:port``; with several targets the first three and how many more
        (``mqtt://127.0.0.1:1883,127.0.0.1:1884,127.0.0.1:1885 (+3 more)``); ``describe`` lists them all."""
        scheme = "mqtts" if self.tls is not None else "mqtt"
        shown = ",".join(_host_port(h, p) for h, p in self.targets[:3])
        more = len(self.targets) - 3
        return f"{scheme}://{shown}" + (f" (+{more} more)" if more > 0 else "")

    # -- per-device names ---------------------------------------------------------------------------

    def topic_for(self, link: Link) -> str:
        return self._topic.render_text(link.variables())

    def command_topics(self, link: Link) -> dict[str, str]:
        variables = link.variables()
        out = {}
        for name, tmpl in self._commands:
            out[name] = tmpl.render_text({**variables, "command": name})
        return out

    def command_for_topic(self, link: Link, topic: str) -> str | None:
        for name, t in self.command_topics(link).items():
            if t == topic:
                return name
        return None

    def _on_message(self, client: LoopClient, link: Link, message: Any) -> None:
        name = self.command_for_topic(link, message.topic)
        if name is not None:
            self.outcomes.command_received(link, name, message.payload, message.topic)

    # -- connection ---------------------------------------------------------------------------------

    async def _resolve(self, which: int) -> tuple[int, tuple[Any, ...]]:
        """Address family and address of target ``which`` (resolved once)."""
        resolved = self._addrs[which]
        if resolved is None:
            host, port = self.targets[which]
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as err:
                raise TransportError(f"cannot resolve broker host '{host}': {err}") from None
            family, _, _, _, addr = infos[0]
            resolved = self._addrs[which] = (family, addr)
        return resolved

    def target_of(self, link: Link) -> tuple[str, int]:
        """The (host, port) the device connects to: target ``index mod n`` (its global index)."""
        return self.targets[link.index % len(self.targets)]

    def source_of(self, link: Link) -> str | None:
        """The local address the device binds to (address ``index mod m``), or None when none are given."""
        sources = self.sources
        return sources[link.index % len(sources)] if sources else None

    def _new_client(self, link: Link) -> LoopClient:
        variables = link.variables()
        client = LoopClient(
            asyncio.get_running_loop(),
            self._client_id.render_text(variables),
            mqtt_version=self.mqtt_version,
            clean_session=self.clean_session,
            userdata=link,
        )
        client.outcomes = self.outcomes
        client.max_inflight_messages_set(self.max_inflight)
        client.ack_timeout = self.ack_timeout
        creds = self.spec.credentials
        if creds.username is not None:
            client.username_pw_set(creds.username, creds.password)
        if self._will:
            w = self._will
            payload = compile_template(w.get("payload", "")).render(variables)
            if not isinstance(payload, (str, bytes)):
                payload = json.dumps(payload, separators=(",", ":"))
            client.will_set(
                compile_template(str(w["topic"])).render_text(variables),
                payload,
                int(w.get("qos", 0)),
                bool(w.get("retain", False)),
            )
        client.on_connect = _on_connect
        client.on_disconnect = _on_disconnect
        if self.qos > 0:
            client.on_publish = _on_publish
        if self._commands:
            client.on_message = self._on_message_cb
        return client

    async def connect(self, link: Link) -> None:
        which = link.index % len(self.targets)
        host, port = self.targets[which]
        family, addr = await self._resolve(which)
        source = self.source_of(link)
        if source is not None and family != socket.AF_INET:
            raise TransportError(
                f"device '{link.id}': broker {host}:{port} has an IPv6 address, but source_addresses are IPv4; "
                "give an IPv4 broker address or leave source_addresses out"
            )
        client: LoopClient | None = link.conn
        if client is None:
            client = link.conn = self._new_client(link)
        try:
            tls = self.tls.for_device(link) if self.tls is not None else None
            await client.open(
                host,
                port,
                keepalive=self.keepalive,
                timeout=self.connect_timeout,
                addr=addr,
                family=family,
                source=source,
                tls=tls,
                faults=self.spec.faults,
                owner=link.id,
            )
        except TransportError as err:
            raise TransportError(f"device '{link.id}': {err}") from None
        if self._commands:
            topics = [(t, 1) for t in self.command_topics(link).values()]
            client.subscribe(topics)
            client.kick()

    def is_connected(self, link: Link) -> bool:
        client = link.conn
        return client is not None and client.has_socket and client.is_connected()

    def send(
        self, link: Link, payload: bytes, topic: str | None = None, qos: int | None = None, retain: bool = False
    ) -> bool:
        client: LoopClient = link.conn
        if client is None:
            return False
        if topic is None and qos is None and self.qos == 0:  # telemetry at QoS 0: the hot path of a fleet
            field = client.fast_topic
            if field is None:
                field = client.fast_topic = client.topic_field(link.topic or "")
            if client.publish_qos0(field, payload):
                return True
            if client.has_socket:  # connected but not (yet, or no longer) in the MQTT session
                self.outcomes.not_sent(link, "publish failed: not connected")
            return False
        if not client.has_socket:
            return False
        if qos is None:
            qos = self.qos
        if topic is not None:  # not telemetry: keep its ack out of messagesAcked
            return publish_event(link, client, topic, payload, qos, retain, self.outcomes, acks=self.qos > 0)
        return publish_telemetry(link, client, payload, qos, self.outcomes)

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until QoS 1/2 messages in flight are acknowledged, before a stop."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            if not any(link.conn is not None and link.conn.in_flight for link in self.links):
                return
            await asyncio.sleep(0.02)

    async def disconnect(self, link: Link) -> None:
        client: LoopClient | None = link.conn
        if client is None:
            return
        client.close_reported = True
        client.close_gracefully()

    def drop(self, link: Link) -> None:
        client: LoopClient | None = link.conn
        if client is None:
            return
        client.close_reported = True
        client.abort()

    def describe(self) -> dict[str, Any]:
        """Adds how often a missing acknowledgement gave a connection up, and how many QoS 1/2 messages were
        sent again (DUP) on the new connection; with several targets all of them (``targets``), with source
        addresses all of them (``sourceAddresses``: lists, so the stats of a sharded fleet keep them as they are)."""
        clients = [link.conn for link in self.links if link.conn is not None]
        out = {
            **super().describe(),
            "ackTimeouts": sum(c.ack_timeouts for c in clients),
            "redelivered": sum(c.redelivered for c in clients),
        }
        if len(self.targets) > 1:
            out["targets"] = [_host_port(h, p) for h, p in self.targets]
        if self.sources:
            out["sourceAddresses"] = list(self.sources)
        return out

    def periodic(self, now: float) -> None:
        links = self.links
        n = len(links)
        if not n:
            return
        sweep_s = min(5.0, max(PERIODIC_S, self.keepalive / 4))
        chunk = max(1, -(-n * PERIODIC_S // sweep_s))
        start = self._misc_cursor % n
        for link in links[start : start + int(chunk)]:
            client = link.conn
            if client is not None:
                client.misc()
        self._misc_cursor = start + int(chunk)


def create(spec: TransportSpec, links: Sequence[Link], outcomes: Outcomes) -> MqttTransport:
    """The registry's entry (:mod:`iotix.transport.registry`)."""
    return MqttTransport(spec, links, outcomes)
