"""CoAP devices in server mode (``mode: server``): every device is a CoAP server that clients observe.

Each device runs an aiocoap server context on a UDP port of its own (``serverPort + index``, or any free
port with ``serverPort: 0``) bound to ``host`` (default 127.0.0.1) with the resources

- ``/telemetry``: observable, the latest payload (the device's envelope, JSON or CBOR);
- ``/telemetry/<field>``: observable, one field's latest value as JSON;
- ``/commands/<name>``: POST, one per model command; handed to the fleet's outcomes like an MQTT command
  (``setInterval``, ``reboot`` act) and answered 2.04 Changed (4.00 when the fleet rejected it) with a
  JSON body;
- one observable resource per destination of the model's behaviors (the action's ``topic`` as a path, e.g.
  ``/alerts``): GET returns the latest event (empty before the first), observers get every event. Paths that
  use only the device's variables exist from the start; others appear with their first event (at most
  ``MAX_EVENT_PATHS`` per device). A command's later responses (an update's progress) go the same way;
- ``/.well-known/core``: the list of the above.

With the fleet's network faults (``spec.faults``), each device's datagrams pass the fault layer per peer:
:class:`_ServerTaps` stands between the device's aiocoap socket and its message layer, with one
:class:`iotix.fault.datagram.DatagramTap` per client address (upstream = from the device: responses and
notifications; downstream = to the device: requests), so faults can be chosen per device as in client mode.

``send`` stores the reading and notifies observers. ``drop`` closes the socket (the device stops answering);
a reconnect binds the same port again. Where a device answers (port and ``coap://host:port``) is
:meth:`CoapServerTransport.device_address`. Cost per device: one aiocoap context with its UDP socket (one
file descriptor) and resource objects; a whole server device measured 17.5 KB of RSS (4 fields,
2 commands), so ``ulimit -n`` bounds how many one process can hold.

The aiocoap server plumbing here is shared with the CoAP sink (:mod:`iotix.services.coap_server`): aiocoap
binds its server sockets with SO_REUSEPORT, which lets two sockets of one user share a port (and lets the
kernel hand out a port that is already in use when binding port 0). Ports are therefore picked and checked
here with an exclusive probe socket first (:func:`reserve_udp_port`). aiocoap's loggers of these contexts
are :data:`AIOCOAP_LOGGER`.

This module is imported only when a fleet uses server mode (by :func:`iotix.transport.coap.create`) or by
the sink.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import socket
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from iotix.behavior import compile_template
from iotix.encode import decode_envelope
from iotix.errors import ConfigurationError
from iotix.fault.datagram import DatagramTap
from iotix.observe.histogram import Histogram
from iotix.transport.base import Link, Outcomes, TransportError, TransportSpec
from iotix.transport.coap_base import CoapTransport, resolve_host

__all__ = [
    "AIOCOAP_LOGGER",
    "CoapServerTransport",
    "release_udp_port",
    "reserve_udp_port",
    "udp_port_of",
    "udp_socket_of",
]

#: aiocoap's own loggers for the server contexts of server-mode devices: outside the ``iotix`` tree (whose
#: DEBUG records go to the Robot log) and quiet unless someone lowers the level on purpose.
AIOCOAP_LOGGER = "aiocoap.iotix"
#: Event resources (a behavior's destinations) a server-mode device holds at most.
MAX_EVENT_PATHS = 64
if logging.getLogger(AIOCOAP_LOGGER).level == logging.NOTSET:
    logging.getLogger(AIOCOAP_LOGGER).setLevel(logging.WARNING)

# -- ports --------------------------------------------------------------------------------------------------

#: (host, port) pairs bound by this process's CoAP servers (devices and sinks), so two never share one.
_BOUND_PORTS: set[tuple[str, int]] = set()


def reserve_udp_port(host: str, port: int = 0, attempts: int = 50) -> int:
    """A UDP port on ``host`` that nobody holds right now (``port`` itself, or any free one for 0).

    Checked with a socket without SO_REUSEPORT, which the kernel refuses while any socket holds the port.
    The caller binds it next (aiocoap does, with SO_REUSEPORT) and calls :func:`release_udp_port` when
    done. Raises OSError (EADDRINUSE) when a given port is taken.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(attempts):
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, port))
            chosen = probe.getsockname()[1]
        if (host, chosen) not in _BOUND_PORTS:
            _BOUND_PORTS.add((host, chosen))
            return chosen
        if port:
            raise OSError(98, f"port {port} is already used by another CoAP server of this process")
    raise OSError(98, f"no free UDP port found on {host}")


def release_udp_port(host: str, port: int) -> None:
    _BOUND_PORTS.discard((host, port))


def udp_socket_of(context: Any) -> Any:
    """The UDP socket of an aiocoap server context (udp6 transport), or None."""
    message_interface = message_interface_of(context)
    transport = getattr(message_interface, "transport", None)
    return transport.get_extra_info("socket") if transport is not None else None


def message_interface_of(context: Any) -> Any:
    """The udp6 message interface (the socket's protocol) of an aiocoap server context, or None."""
    for interface in getattr(context, "request_interfaces", ()):
        manager = getattr(interface, "token_interface", None)
        message_interface = getattr(manager, "message_interface", None)
        transport = getattr(message_interface, "transport", None)
        if transport is not None and transport.get_extra_info("socket") is not None:
            return message_interface
    return None


# -- the fault layer ------------------------------------------------------------------------------------------

#: Peers (client addresses) a server-mode device keeps a fault-layer tap for; the oldest goes beyond that.
MAX_TAPPED_PEERS = 64


class _Peer:
    """One client of a server-mode device, as the fault layer sees it: a tap and where its datagrams go."""

    __slots__ = ("address", "ancdata_in", "ancdata_out", "flags_in", "flags_out", "tap", "taps")

    def __init__(self, taps: _ServerTaps, address: Any) -> None:
        self.taps = taps
        self.address = address
        self.ancdata_out: Any = []
        self.flags_out = 0
        self.ancdata_in: Any = []
        self.flags_in = 0
        self.tap = DatagramTap(taps.faults, taps.owner, send=self._send, receive=self._receive)

    def _send(self, data: bytes) -> None:
        self.taps.real_sendmsg(data, self.ancdata_out, self.flags_out, self.address)

    def _receive(self, data: bytes) -> None:
        self.taps.real_received(data, self.ancdata_in, self.flags_in, self.address)


class _ServerTaps:
    """A server-mode device's datagrams through the fleet's network faults, one tap per peer.

    It replaces (on the instances) the ``sendmsg`` of the device's aiocoap socket transport and the
    ``datagram_msg_received`` of its message interface: aiocoap's message layer (deduplication,
    retransmission of CON notifications) then runs above the faults, as it would above a real network.
    """

    __slots__ = ("closed", "faults", "owner", "peers", "real_received", "real_sendmsg")

    def __init__(self, faults: Any, owner: str, message_interface: Any) -> None:
        self.faults = faults
        self.owner = owner
        self.peers: dict[Any, _Peer] = {}
        self.closed = False
        transport = message_interface.transport
        self.real_sendmsg = transport.sendmsg
        self.real_received = message_interface.datagram_msg_received
        transport.sendmsg = self.sendmsg
        message_interface.datagram_msg_received = self.received

    def _peer(self, address: Any) -> _Peer:
        peer = self.peers.get(address)
        if peer is None:
            if len(self.peers) >= MAX_TAPPED_PEERS:
                oldest = next(iter(self.peers))
                self.peers.pop(oldest).tap.close()
            peer = self.peers[address] = _Peer(self, address)
        return peer

    def sendmsg(self, data: bytes, ancdata: Any, flags: int, address: Any) -> None:
        if self.closed:  # the context is shutting down
            self.real_sendmsg(data, ancdata, flags, address)
            return
        peer = self._peer(address)
        peer.ancdata_out, peer.flags_out = ancdata, flags
        peer.tap.send(data)

    def received(self, data: bytes, ancdata: Any, flags: int, address: Any) -> None:
        if self.closed:
            self.real_received(data, ancdata, flags, address)
            return
        peer = self._peer(address)
        peer.ancdata_in, peer.flags_in = ancdata, flags
        peer.tap.receive(data)

    def close(self) -> None:
        self.closed = True
        for peer in self.peers.values():
            peer.tap.close()
        self.peers.clear()


def udp_port_of(context: Any) -> int | None:
    """The local UDP port of an aiocoap server context (udp6 transport), or None."""
    sock = udp_socket_of(context)
    return int(sock.getsockname()[1]) if sock is not None else None


# -- a device's resources -------------------------------------------------------------------------------------


class _ServerConn:
    """A server-mode device: its aiocoap context, port, latest reading and resources."""

    __slots__ = (
        "closing",
        "ctx",
        "events",
        "fields",
        "flushing",
        "latest",
        "pending",
        "port",
        "reply",
        "site",
        "taps",
        "telemetry",
        "values",
    )

    def __init__(self) -> None:
        self.ctx: Any = None
        self.taps: _ServerTaps | None = None  # the fault layer's taps of the current context
        self.pending: deque[bytes] = deque()  # readings not yet notified (several in one loop step)
        self.flushing = False
        self.port = 0
        self.closing: asyncio.Task[None] | None = None
        self.latest = b""
        self.values: dict[str, Any] = {}
        self.telemetry: Any = None
        self.fields: dict[str, Any] = {}
        self.reply: bytes | None = None  # a command's response body while a command is being handled
        self.site: Any = None  # the resource tree (events add resources to it)
        self.events: dict[str, Any] = {}  # path -> the resource of a behavior's events


def _json_value(value: Any) -> bytes:
    """A field value as JSON (bytes of binary fields in base64)."""
    if isinstance(value, (bytes, bytearray)):
        value = base64.b64encode(value).decode("ascii")
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def event_path(topic: str) -> str:
    """A behavior's destination as the path of a device resource: ``alerts/x`` -> ``/alerts/x``."""
    return "/" + "/".join(part for part in topic.split("/") if part)


@functools.cache
def _resource_classes() -> tuple[type, type, type, type]:
    """The resource classes of server-mode devices (built on first use: aiocoap is imported lazily)."""
    import aiocoap
    from aiocoap import resource

    class TelemetryResource(resource.ObservableResource):
        """``/telemetry``: the latest payload; every reading is one notification."""

        rt = "iotix.telemetry"

        def __init__(self, conn: _ServerConn, content_format: int) -> None:
            super().__init__()
            self.conn = conn
            self.ct = content_format

        @property
        def observed(self) -> bool:
            return bool(self._observations)

        def notify(self, payload: bytes) -> None:
            """Send ``payload`` to every observer (a message each: aiocoap fills in token and id)."""
            for observation in list(self._observations):
                observation.trigger(aiocoap.Message(code=aiocoap.CONTENT, payload=payload, content_format=self.ct))

        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(payload=self.conn.latest, content_format=self.ct)

    class FieldResource(resource.ObservableResource):
        """``/telemetry/<field>``: one field's latest value as JSON."""

        ct = 50
        rt = "iotix.telemetry.field"

        def __init__(self, conn: _ServerConn, name: str) -> None:
            super().__init__()
            self.conn = conn
            self.name = name

        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(payload=_json_value(self.conn.values.get(self.name)), content_format=50)

    class CommandResource(resource.Resource):
        """``/commands/<name>``: POST runs the command."""

        rt = "iotix.command"

        def __init__(self, transport: CoapServerTransport, link: Link, name: str) -> None:
            super().__init__()
            self.transport = transport
            self.link = link
            self.name = name

        async def render_post(self, request: Any) -> Any:
            return self.transport.handle_command(self.link, self.name, bytes(request.payload))

    class EventResource(resource.ObservableResource):
        """A behavior's destination: the latest event (JSON or text); every event is one notification."""

        rt = "iotix.event"

        def __init__(self) -> None:
            super().__init__()
            self.latest = b""
            self.ct = 50

        def publish(self, payload: bytes) -> None:
            self.latest = payload
            self.ct = 0 if payload.lstrip()[:1] not in (b"{", b"[") else 50
            for observation in list(self._observations):
                observation.trigger(aiocoap.Message(code=aiocoap.CONTENT, payload=payload, content_format=self.ct))

        async def render_get(self, request: Any) -> Any:
            return aiocoap.Message(payload=self.latest, content_format=self.ct)

    return TelemetryResource, FieldResource, CommandResource, EventResource


def _build_site(transport: CoapServerTransport, link: Link, conn: _ServerConn) -> Any:
    """The resource tree of one server-mode device."""
    from aiocoap import resource

    telemetry_cls, field_cls, command_cls, _ = _resource_classes()
    site = resource.Site()
    conn.telemetry = telemetry_cls(conn, transport.content_format)
    site.add_resource(["telemetry"], conn.telemetry)
    conn.fields = {}
    for name in transport.field_names:
        conn.fields[name] = field_cls(conn, name)
        site.add_resource(["telemetry", name], conn.fields[name])
    for name in transport.command_names:
        site.add_resource(["commands", name], command_cls(transport, link, name))
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader, impl_info=None))
    conn.site = site
    conn.events = {}
    variables = link.variables()
    for template in transport.event_paths:
        if template.names <= variables.keys():  # else it uses a reading's values: it appears with its first event
            transport.event_resource(conn, event_path(template.render_text(variables)))
    return site


# -- the transport ------------------------------------------------------------------------------------------


class CoapServerTransport(CoapTransport):
    """CoAP server devices of one fleet: one aiocoap server context per device (see the module docstring)."""

    mode = "server"
    default_host = "127.0.0.1"

    def __init__(self, spec: TransportSpec, links: Sequence[Link], outcomes: Outcomes) -> None:
        super().__init__(spec, links, outcomes)
        self.field_names: tuple[str, ...] = spec.model.field_names
        self.command_names: tuple[str, ...] = tuple(c.name for c in spec.model.commands)
        self.event_paths = [compile_template(str(b.action.get("topic", ""))) for b in spec.model.behaviors]
        self.events_sent = 0  # behaviors' events published on the devices' event resources
        self.events_failed = 0
        self._addr: tuple[int, tuple[Any, ...]] | None = None
        last = self.server_port + len(links) - 1
        if self.server_port and last > 65535:
            lower = f"serverPort {65536 - len(links)} or lower, or " if len(links) < 65535 else "serverPort "
            raise ConfigurationError(
                f"Fleet '{spec.fleet}': serverPort {self.server_port} gives its {len(links):,} devices the UDP ports "
                f"{self.server_port}-{last}, beyond the last port, 65535; use {lower}0 (any free port)."
            )

    @property
    def target(self) -> str:
        return f"coap-server://{self.url_host}:{self.server_port or 'any'}"

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        # the keys of client mode, so a fleet's stats look alike in both modes: a server sends no requests
        info.update(
            inFlight=0,
            retransmissions=0,
            separateResponses=0,
            requestLatencyMs=Histogram().summary(),
            eventsSent=self.events_sent,
            eventsFailed=self.events_failed,
        )
        return info

    def topic_for(self, link: Link) -> str:
        """Where the device's readings live."""
        return "/telemetry"

    def server_port_of(self, link: Link) -> int | None:
        """The UDP port the device listens (or listened) on."""
        conn = link.conn
        return conn.port if isinstance(conn, _ServerConn) and conn.port else None

    def device_address(self, link: Link) -> dict[str, Any] | None:
        """Where the device answers: ``port`` and ``url`` (``coap://host:port``); None before it listened."""
        port = self.server_port_of(link)
        if not port:
            return None
        return {"port": port, "url": f"coap://{self.url_host}:{port}"}

    # -- connect / disconnect ------------------------------------------------------------------------------

    async def connect(self, link: Link) -> None:
        import aiocoap

        conn: _ServerConn | None = link.conn
        if conn is None:
            conn = link.conn = _ServerConn()
        if conn.closing is not None:
            await conn.closing
            conn.closing = None
        if conn.ctx is not None:
            return
        if self._addr is None:
            try:
                self._addr = await resolve_host(self.host, 0)
            except OSError as err:
                raise TransportError(f"cannot resolve CoAP bind host '{self.host}': {err}") from None
        bind_host = str(self._addr[1][0])
        wanted = conn.port or (self.server_port + link.index if self.server_port else 0)
        try:
            port = reserve_udp_port(bind_host, wanted)
        except OSError as err:
            raise TransportError(f"device '{link.id}': cannot listen on UDP {bind_host}:{wanted}: {err}") from None
        site = _build_site(self, link, conn)
        try:
            conn.ctx = await aiocoap.Context.create_server_context(
                site, bind=(bind_host, port), transports=["udp6"], loggername=AIOCOAP_LOGGER
            )
        except OSError as err:
            release_udp_port(bind_host, port)
            raise TransportError(f"device '{link.id}': cannot listen on UDP {bind_host}:{port}: {err}") from None
        conn.port = port
        faults = self.spec.faults
        if faults is not None:
            message_interface = message_interface_of(conn.ctx)
            if message_interface is not None:
                conn.taps = _ServerTaps(faults, link.id, message_interface)

    def is_connected(self, link: Link) -> bool:
        conn: _ServerConn | None = link.conn
        return conn is not None and conn.ctx is not None

    async def disconnect(self, link: Link) -> None:
        conn: _ServerConn | None = link.conn
        if conn is None:
            return
        self._stop_server(conn)
        if conn.closing is not None:
            await conn.closing

    def drop(self, link: Link) -> None:
        conn: _ServerConn | None = link.conn
        if conn is not None:
            self._stop_server(conn)

    def _stop_server(self, conn: _ServerConn) -> None:
        """Close the device's context in the background; ``connect`` waits for it before binding again."""
        ctx, conn.ctx = conn.ctx, None
        if conn.taps is not None:
            conn.taps.close()
            conn.taps = None
        if ctx is None:
            return
        host = str(self._addr[1][0]) if self._addr else self.host

        async def shutdown() -> None:
            try:
                await ctx.shutdown()
            finally:
                release_udp_port(host, conn.port)

        conn.closing = asyncio.get_running_loop().create_task(shutdown())

    # -- readings and commands -------------------------------------------------------------------------------

    def send(
        self, link: Link, payload: bytes, topic: str | None = None, qos: int | None = None, retain: bool = False
    ) -> bool:
        conn: _ServerConn | None = link.conn
        if conn is None or conn.ctx is None:
            return False
        if topic is not None:
            if conn.reply is not None:  # the response of the command being handled
                conn.reply = payload
                return True
            return self._publish_event(link, conn, topic, payload)
        conn.latest = payload
        if conn.telemetry.observed:
            conn.pending.append(payload)
            if not conn.flushing:
                conn.flushing = True
                self._flush_notifications(conn)
        if conn.fields:
            envelope = decode_envelope(payload)
            if envelope:
                for name, res in conn.fields.items():
                    if name in envelope:
                        conn.values[name] = envelope[name]
                        res.updated_state()
        return True

    def event_resource(self, conn: _ServerConn, path: str) -> Any:
        """The device's event resource at ``path``, added on first use; None when the path is one of the
        device's own resources or the device has ``MAX_EVENT_PATHS`` already."""
        found = conn.events.get(path)
        if found is not None or conn.site is None:
            return found
        parts = tuple(part for part in path.split("/") if part)
        if not parts or parts[0] in ("telemetry", "commands", ".well-known") or len(conn.events) >= MAX_EVENT_PATHS:
            return None
        event_cls = _resource_classes()[3]
        found = conn.events[path] = event_cls()
        conn.site.add_resource(parts, found)
        return found

    def _publish_event(self, link: Link, conn: _ServerConn, topic: str, payload: bytes) -> bool:
        """A behavior's event (or a command's later response): published on the device's resource at ``topic``."""
        path = event_path(topic)
        res = self.event_resource(conn, path)
        if res is None:
            self.events_failed += 1
            own = path.split("/")[1] in ("", "telemetry", "commands", ".well-known")
            why = "is one of the device's own resources" if own else f"would be event path {MAX_EVENT_PATHS + 1}"
            self.outcomes.not_sent(link, f"event: coap://{self.url_host}:{conn.port}{path} {why}")
            return False
        res.publish(payload)
        self.events_sent += 1
        return True

    def _flush_notifications(self, conn: _ServerConn) -> None:
        """One notification per loop step: aiocoap keeps only the last trigger of a step per observer.

        After a notification the gate stays closed for one more step, in which the observers' tasks (woken
        before this callback runs again) take it; only then may the next one be triggered.
        """
        if conn.pending and conn.ctx is not None:
            conn.telemetry.notify(conn.pending.popleft())
            asyncio.get_running_loop().call_soon(self._flush_notifications, conn)
        else:
            conn.pending.clear()
            conn.flushing = False

    def handle_command(self, link: Link, name: str, payload: bytes) -> Any:
        """A POST to ``/commands/<name>``: handed to the outcomes, answered with their status in a JSON body.

        A response the fleet sends while applying the command (the command's ``responseTopic``) becomes
        the body; otherwise it is ``{"deviceId", "command", "status", "ts"}``.
        """
        import aiocoap

        conn: _ServerConn = link.conn
        conn.reply = b""
        try:
            status = self.outcomes.command_received(link, name, payload, f"/commands/{name}")
            body = conn.reply
        finally:
            conn.reply = None
        if not body:
            body = json.dumps(
                {"deviceId": link.id, "command": name, "status": status, "ts": int(time.time() * 1000)},
                separators=(",", ":"),
            ).encode()
        code = aiocoap.CHANGED if status in ("ok", "accepted") else aiocoap.BAD_REQUEST
        return aiocoap.Message(code=code, payload=body, content_format=50)

    # -- fleet-wide ---------------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the devices' server contexts (and wait for them)."""
        for link in self.links:
            conn = link.conn
            if isinstance(conn, _ServerConn):
                self._stop_server(conn)
                if conn.closing is not None:
                    with contextlib.suppress(Exception):
                        await conn.closing
