"""CoAP devices (RFC 7252) in two modes: clients that send their readings, servers that are observed.

Client mode (the default)
    Each reading is a POST (or PUT) of the payload to ``coap://host:port/<path>`` (``path`` defaults to
    ``/telemetry/${deviceId}``) with content format 50 (JSON), 60 (CBOR) or 42 (raw bytes). All devices of
    a fleet share ONE UDP socket and a small message layer of our own (header, token, Uri-Path and
    Content-Format options built here; :func:`parse_message` reads the answers):

    - Confirmable (CON) requests are retransmitted per RFC 7252 section 4.2 with the model's timing: the
      first timeout is random in ``[ackTimeoutMs, 1.5 * ackTimeoutMs]`` and doubles with each of at most
      ``maxRetransmit`` retransmissions. An exchange that gets no ACK is a failure whose reason names the
      target and says ``timeout``; a 4.xx/5.xx answer (piggybacked or separate) is a failure with the code
      and the first bytes of the payload; 2.xx counts as acknowledged (``device.acked``). Empty ACKs
      followed by separate (CON or NON) responses are handled; the request latency (first transmission to
      response) goes into :attr:`CoapTransport.latency`.
    - Non-confirmable (NON) requests are fire and forget: sent means sent.
    - ``send`` never blocks and never queues: it writes the datagram and returns. At most
      :attr:`CoapTransport.max_in_flight` CON exchanges are open per fleet (one per device, at least 256,
      at most 8192); beyond that ``send`` returns False with the reason in the device's last error, so a
      dead or slow server shows up as counted failures at once instead of an ever-growing backlog.
    - Message ids are never reused on a socket: after 65,536 messages the fleet moves to a fresh socket
      (a new source port, i.e. a new endpoint for the server's duplicate detection, which remembers
      message ids for EXCHANGE_LIFETIME, 247 s with the default timing). The old socket stays open until
      its exchanges end. A single endpoint may not legally send more than ~265 CON messages per second
      with fresh ids; rotating is what lets one fleet send thousands per second without the server
      mistaking new requests for duplicates.

    Why not one aiocoap client ``Context`` per fleet: aiocoap keeps RFC 7252's NSTART = 1 per remote
    endpoint, so every request of the fleet waits for the previous one (about 1,100 requests/s on our
    machine, 0.45 ms of CPU each), and when one exchange times out it fails every request queued for the
    same server, not just its own. Devices that are independent clients must not behave like that.

    Cost per device: one ``_ClientConn`` (three slots, ~170 bytes with its path and pre-encoded options);
    a whole client device (generators, counters, schedule) measured 4-6 KB of RSS. Per fleet: one UDP
    socket (two while rotating) and ~250 bytes per open exchange.

Server mode (``mode: server``)
    Each device runs an aiocoap server context on a UDP port of its own (``serverPort + index``, or any
    free port with ``serverPort: 0``) bound to ``host`` (default 127.0.0.1) with the resources

    - ``/telemetry``: observable, the latest payload (the device's envelope, JSON or CBOR);
    - ``/telemetry/<field>``: observable, one field's latest value as JSON;
    - ``/commands/<name>``: POST, one per model command; recorded like an MQTT command (``setInterval``,
      ``reboot`` act) and answered 2.04 Changed (4.00 when the fleet rejected it) with a JSON body;
    - ``/.well-known/core``: the list of the above.

    ``send`` stores the reading and notifies observers. ``drop`` closes the socket (the device stops
    answering); a reconnect binds the same port again. Cost per device: one aiocoap context with its UDP
    socket (one file descriptor) and resource objects; a whole server device measured 17.5 KB of RSS
    (4 fields, 2 commands), so ``ulimit -n`` bounds how many one process can hold.

aiocoap binds its server sockets with SO_REUSEPORT, which lets two sockets of one user share a port (and
lets the kernel hand out a port that is already in use when binding port 0). Ports are therefore picked
and checked here with an exclusive probe socket first (:func:`reserve_udp_port`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import ipaddress
import json
import logging
import random
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from iotix.behavior import Template, compile_template
from iotix.encode import decode_envelope
from iotix.observe.histogram import Histogram
from iotix.transport.base import Transport, TransportError

if TYPE_CHECKING:
    from iotix.fleet.device import Device
    from iotix.fleet.fleet import Fleet

log = logging.getLogger("iotix.transport.coap")

#: aiocoap's own loggers for the server contexts of server-mode devices: outside the ``iotix`` tree (whose
#: DEBUG records go to the Robot log) and quiet unless someone lowers the level on purpose.
AIOCOAP_LOGGER = "aiocoap.iotix"
if logging.getLogger(AIOCOAP_LOGGER).level == logging.NOTSET:
    logging.getLogger(AIOCOAP_LOGGER).setLevel(logging.WARNING)

# -- wire format ------------------------------------------------------------------------------------------

CON, NON, ACK, RST = 0, 1, 2, 3
CODE_EMPTY, CODE_GET, CODE_POST, CODE_PUT = 0, 1, 2, 3
METHOD_CODES = {"POST": CODE_POST, "PUT": CODE_PUT}
OPT_URI_PATH = 11
OPT_CONTENT_FORMAT = 12
#: Content formats of the payload formats of a model (RFC 7252 section 12.3, RFC 8949).
CONTENT_FORMATS = {"json": 50, "cbor": 60, "raw": 42}
COAP_PORT = 5683
TOKEN_LENGTH = 4
MID_SPACE = 1 << 16
_HEADER = struct.Struct("!BBH")


class CoapMessage(NamedTuple):
    """The parts of a received message the client needs."""

    mtype: int
    code: int
    mid: int
    token: bytes
    payload: bytes


def _option_nibble(value: int) -> tuple[int, bytes]:
    """The 4-bit field and extension bytes for an option delta or length (RFC 7252 section 3.1)."""
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes((value - 13,))
    return 14, (value - 269).to_bytes(2, "big")


def encode_options(options: list[tuple[int, bytes]]) -> bytes:
    """Options (number, value) in the wire format; sorted by number, repeated options keep their order."""
    out = bytearray()
    previous = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        delta, delta_ext = _option_nibble(number - previous)
        length, length_ext = _option_nibble(len(value))
        out.append(delta << 4 | length)
        out += delta_ext + length_ext + value
        previous = number
    return bytes(out)


def _uint(value: int) -> bytes:
    """A CoAP uint option value: big endian, minimal length (0 is empty)."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def request_options(path: str, content_format: int | None) -> bytes:
    """Uri-Path options for ``path`` (``/a/b`` -> ``a``, ``b``) plus Content-Format, encoded."""
    options = [(OPT_URI_PATH, segment.encode()) for segment in path.strip("/").split("/") if segment]
    if content_format is not None:
        options.append((OPT_CONTENT_FORMAT, _uint(content_format)))
    return encode_options(options)


def encode_message(mtype: int, code: int, mid: int, token: bytes, options: bytes, payload: bytes) -> bytes:
    """One CoAP message: header, token, pre-encoded options, payload marker and payload."""
    head = _HEADER.pack(0x40 | mtype << 4 | len(token), code, mid)
    if payload:
        return b"".join((head, token, options, b"\xff", payload))
    return b"".join((head, token, options))


def empty_message(mtype: int, mid: int) -> bytes:
    """An empty ACK or RST for message id ``mid``."""
    return _HEADER.pack(0x40 | mtype << 4, CODE_EMPTY, mid)


def parse_message(data: bytes) -> CoapMessage | None:
    """Header, token and payload of a datagram; None when it is not a well-formed CoAP 1 message."""
    if len(data) < 4:
        return None
    first, code, mid = _HEADER.unpack_from(data)
    tkl = first & 0x0F
    if first >> 6 != 1 or tkl > 8 or len(data) < 4 + tkl:
        return None
    token = data[4 : 4 + tkl]
    pos = 4 + tkl
    end = len(data)
    while pos < end:
        byte = data[pos]
        if byte == 0xFF:
            if pos + 1 == end:
                return None  # a payload marker must be followed by a payload
            return CoapMessage(first >> 4 & 3, code, mid, token, data[pos + 1 :])
        pos = _skip_option(data, pos)
        if pos < 0:
            return None
    return CoapMessage(first >> 4 & 3, code, mid, token, b"")


def _skip_option(data: bytes, pos: int) -> int:
    """Position after the option starting at ``pos``; -1 when it is malformed or truncated."""
    byte = data[pos]
    pos += 1
    delta, length = byte >> 4, byte & 0x0F
    if delta == 15 or length == 15:
        return -1
    pos += (delta == 13) + 2 * (delta == 14)
    if length == 13:
        if pos >= len(data):
            return -1
        length = 13 + data[pos]
        pos += 1
    elif length == 14:
        if pos + 2 > len(data):
            return -1
        length = 269 + int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
    pos += length
    return pos if pos <= len(data) else -1


def code_text(code: int) -> str:
    """``"5.00 Internal Server Error"`` for 160."""
    from aiocoap.numbers.codes import Code

    try:
        return str(Code(code))
    except ValueError:
        return f"{code >> 5}.{code & 0x1F:02d}"


def dotted_code(code: int) -> str:
    """``"2.05"`` for 69."""
    return f"{code >> 5}.{code & 0x1F:02d}"


# -- timing -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoapTiming:
    """RFC 7252 transmission parameters (section 4.8) of a fleet."""

    ack_timeout: float = 2.0
    max_retransmit: int = 4
    ack_random_factor: float = 1.5

    def first_timeout(self, rng: random.Random) -> float:
        return rng.uniform(self.ack_timeout, self.ack_timeout * self.ack_random_factor)

    @property
    def max_transmit_wait(self) -> float:
        """Longest time from the first transmission until a sender gives up (93 s by default)."""
        return self.ack_timeout * (2 ** (self.max_retransmit + 1) - 1) * self.ack_random_factor


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


#: Receive buffer asked for on the sockets that take bursts (the fleet's client socket, the sink): a fleet
#: whose devices fire in the same tick sends thousands of datagrams at once, and the default buffer
#: (208 KB, ~200 datagrams) drops the rest. The kernel caps it at net.core.rmem_max.
RECEIVE_BUFFER_BYTES = 4 << 20


def enlarge_receive_buffer(sock: Any, size: int = RECEIVE_BUFFER_BYTES) -> None:
    """Ask for a bigger UDP receive buffer (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def udp_socket_of(context: Any) -> Any:
    """The UDP socket of an aiocoap server context (udp6 transport), or None."""
    for interface in getattr(context, "request_interfaces", ()):
        manager = getattr(interface, "token_interface", None)
        message_interface = getattr(manager, "message_interface", None)
        transport = getattr(message_interface, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            return sock
    return None


def udp_port_of(context: Any) -> int | None:
    """The local UDP port of an aiocoap server context (udp6 transport), or None."""
    sock = udp_socket_of(context)
    return int(sock.getsockname()[1]) if sock is not None else None


async def resolve_host(host: str, port: int) -> tuple[int, tuple[Any, ...]]:
    """(family, sockaddr) of ``host`` for UDP; IP literals without a lookup."""
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(host.strip("[]"))
        return (socket.AF_INET6, (str(ip), port, 0, 0)) if ip.version == 6 else (socket.AF_INET, (str(ip), port))
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, addr = infos[0]
    return family, addr


# -- client mode: the message layer ------------------------------------------------------------------------


class _Exchange:
    """One open CON request."""

    __slots__ = (
        "attempt",
        "datagram",
        "device",
        "endpoint",
        "first_sent",
        "first_try",
        "handle",
        "mid",
        "options",
        "path",
        "payload",
        "timeout",
        "token",
        "tries",
    )

    def __init__(self, device: Device, endpoint: ClientEndpoint, mid: int, token: bytes, datagram: bytes) -> None:
        self.device = device
        self.endpoint = endpoint
        self.mid = mid
        self.token = token
        self.datagram = datagram
        self.path: str | None = None  # set when not the device's own path (a behavior's topic)
        self.first_sent = 0.0
        self.timeout = 0.0
        self.tries = 0  # transmissions so far; 0 after an empty ACK (waiting for a separate response)
        self.handle: asyncio.TimerHandle | None = None
        self.options = b""  # kept with the payload for an application-level retry (a new exchange)
        self.payload = b""
        self.attempt = 0  # 0: the first exchange of this message; n: its n-th retry
        self.first_try = 0.0


class ClientEndpoint(asyncio.DatagramProtocol):
    """One UDP socket connected to the target: message ids, tokens, retransmissions, answers."""

    def __init__(self, owner: CoapTransport) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None
        self.by_mid: dict[int, _Exchange] = {}
        self.by_token: dict[bytes, _Exchange] = {}
        self.next_mid = random.randrange(MID_SPACE)
        self.next_token = random.randrange(1 << 32)
        self.used = 0  # message ids handed out
        self.icmp_error: str | None = None
        self.icmp_at = 0.0  # loop time of the last ICMP error

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        enlarge_receive_buffer(transport.get_extra_info("socket"))

    def error_received(self, exc: Exception) -> None:
        # An ICMP error (e.g. port unreachable) on the connected socket; it names no message. Exchanges keep
        # retransmitting (the server may come back) and their timeout reason mentions it.
        self.icmp_error = f"{type(exc).__name__}: {exc}"
        self.icmp_at = asyncio.get_running_loop().time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        msg = parse_message(data)
        if msg is None:
            return
        if msg.mtype >= ACK:  # ACK or RST
            self._on_ack_or_reset(msg)
        elif msg.code >= 64:  # a CON or NON response (separate response)
            self._on_separate_response(msg)
        elif msg.mtype == CON:  # a ping or a request: we are no server
            self.write(empty_message(RST, msg.mid))

    # ids

    def take_mid(self) -> int:
        mid = self.next_mid
        self.next_mid = (mid + 1) & 0xFFFF
        self.used += 1
        return mid

    def take_token(self) -> bytes:
        value = self.next_token
        self.next_token = (value + 1) & 0xFFFFFFFF
        return value.to_bytes(TOKEN_LENGTH, "big")

    def write(self, datagram: bytes) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.sendto(datagram)
        return True

    # answers

    def _on_ack_or_reset(self, msg: CoapMessage) -> None:
        ex = self.by_mid.pop(msg.mid, None)
        if ex is None:
            return  # late or duplicate
        if msg.mtype == RST:
            self.owner.finish(ex, None, b"")
        elif msg.code == CODE_EMPTY:  # separate response follows: stop retransmitting, keep waiting
            self.owner.await_separate_response(ex)
        else:
            self.owner.finish(ex, msg.code, msg.payload)

    def _on_separate_response(self, msg: CoapMessage) -> None:
        ex = self.by_token.get(msg.token)
        if msg.mtype == CON:
            self.write(empty_message(ACK if ex is not None else RST, msg.mid))
        if ex is not None:
            self.by_mid.pop(ex.mid, None)
            self.owner.separate_responses += 1
            self.owner.finish(ex, msg.code, msg.payload)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _ClientConn:
    """A client-mode device: whether it sends, and its pre-encoded path options."""

    __slots__ = ("connected", "options", "path")

    def __init__(self, path: str, options: bytes) -> None:
        self.connected = False
        self.path = path
        self.options = options


# -- server mode -------------------------------------------------------------------------------------------


class _ServerConn:
    """A server-mode device: its aiocoap context, port, latest reading and resources."""

    __slots__ = ("closing", "ctx", "fields", "flushing", "latest", "pending", "port", "reply", "telemetry", "values")

    def __init__(self) -> None:
        self.ctx: Any = None
        self.pending: deque[bytes] = deque()  # readings not yet notified (several in one loop step)
        self.flushing = False
        self.port = 0
        self.closing: asyncio.Task[None] | None = None
        self.latest = b""
        self.values: dict[str, Any] = {}
        self.telemetry: Any = None
        self.fields: dict[str, Any] = {}
        self.reply: bytes | None = None  # a command's response body while a command is being handled


def _json_value(value: Any) -> bytes:
    """A field value as JSON (bytes of binary fields in base64)."""
    if isinstance(value, (bytes, bytearray)):
        value = base64.b64encode(value).decode("ascii")
    return json.dumps(value, separators=(",", ":"), default=str).encode()


@functools.cache
def _resource_classes() -> tuple[type, type, type]:
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

        def __init__(self, transport: CoapTransport, device: Device, name: str) -> None:
            super().__init__()
            self.transport = transport
            self.device = device
            self.name = name

        async def render_post(self, request: Any) -> Any:
            return self.transport.handle_command(self.device, self.name, bytes(request.payload))

    return TelemetryResource, FieldResource, CommandResource


def _build_site(transport: CoapTransport, device: Device, conn: _ServerConn) -> Any:
    """The resource tree of one server-mode device."""
    from aiocoap import resource

    telemetry_cls, field_cls, command_cls = _resource_classes()
    site = resource.Site()
    conn.telemetry = telemetry_cls(conn, transport.content_format)
    site.add_resource(["telemetry"], conn.telemetry)
    conn.fields = {}
    for name in transport.field_names:
        conn.fields[name] = field_cls(conn, name)
        site.add_resource(["telemetry", name], conn.fields[name])
    for name in transport.command_names:
        site.add_resource(["commands", name], command_cls(transport, device, name))
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader, impl_info=None))
    return site


# -- the transport ------------------------------------------------------------------------------------------


class CoapTransport(Transport):
    """CoAP client or server devices of one fleet (see the module docstring)."""

    protocol = "coap"
    #: Per fleet, CON exchanges open at once: one per device, clamped to this range.
    MIN_IN_FLIGHT = 256
    MAX_IN_FLIGHT = 8192

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(fleet)
        conn = fleet.connection
        self.mode: str = str(conn.get("mode", "client"))
        if self.mode not in ("client", "server"):
            raise TransportError(f"Fleet '{fleet.name}': CoAP mode must be 'client' or 'server', got {self.mode!r}")
        self.host: str = str(conn.get("host") or conn.get("broker") or ("127.0.0.1" if self.mode == "server" else ""))
        if not self.host:
            self.host = "localhost"
        self.port: int = int(conn.get("port") or COAP_PORT)
        self.method: str = str(conn.get("method", "POST")).upper()
        if self.method not in METHOD_CODES:
            raise TransportError(f"Fleet '{fleet.name}': CoAP method must be POST or PUT, got {self.method!r}")
        self.confirmable: bool = bool(conn.get("confirmable", True))
        self.request_based = self.mode == "client" and self.confirmable
        self.server_port: int = int(conn.get("serverPort", 0) or 0)
        self.timing = CoapTiming(float(conn.get("ackTimeoutMs", 2000)) / 1000.0, int(conn.get("maxRetransmit", 4)))
        self.content_format: int = CONTENT_FORMATS.get(fleet.model.payload.format, 42)
        self.field_names: tuple[str, ...] = fleet.model.field_names
        self.command_names: tuple[str, ...] = tuple(c.name for c in fleet.model.commands)
        self._path: Template = compile_template(str(conn.get("path", "/telemetry/${deviceId}")))
        self._path_per_message = bool(self._path.names & {"seq", "ts"})
        self.max_in_flight = min(self.MAX_IN_FLIGHT, max(self.MIN_IN_FLIGHT, len(fleet.devices)))
        self.in_flight = 0
        self.separate_responses = 0  # answers that came after an empty ACK (a busy server)
        self.retransmissions = 0
        self.latency = Histogram()  # request latency (first transmission -> response) of CON requests
        self._code = METHOD_CODES[self.method]
        self._addr: tuple[int, tuple[Any, ...]] | None = None
        self._endpoint: ClientEndpoint | None = None
        self._opening: asyncio.Task[ClientEndpoint] | None = None
        self._spare: asyncio.Task[ClientEndpoint] | None = None
        self._retired: list[ClientEndpoint] = []
        self._other_paths: dict[str, bytes] = {}
        self._rng = random.Random(f"coap:{fleet.name}")
        self._rotation_warned = False

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.mode == "server":
            return f"coap-server://{host}:{self.server_port or 'any'}"
        return f"coap://{host}:{self.port}"

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            mode=self.mode,
            method=self.method,
            confirmable=self.confirmable,
            inFlight=self.in_flight,
            retransmissions=self.retransmissions,
            separateResponses=self.separate_responses,
            requestLatencyMs=self.latency.summary(),
        )
        return info

    def topic_for(self, device: Device) -> str:
        """The device's resource path: where it sends (client) or where its readings live (server)."""
        if self.mode == "server":
            return "/telemetry"
        return self._render_path(device, device.seq, 0)

    def _render_path(self, device: Device, seq: int, ts_ms: int) -> str:
        text = self._path.render_text({**device.variables(), "seq": seq, "ts": ts_ms})
        return text if text.startswith("/") else "/" + text

    def uri(self, path: str) -> str:
        return f"{self.target}{path}"

    # -- connect / disconnect ------------------------------------------------------------------------------

    async def connect(self, device: Device) -> None:
        if self.mode == "server":
            await self._start_server(device)
            return
        await self._ensure_endpoint()
        conn: _ClientConn | None = device.conn
        if conn is None:
            path = self._render_path(device, 0, 0)
            conn = device.conn = _ClientConn(path, request_options(path, self.content_format))
        conn.connected = True

    def is_connected(self, device: Device) -> bool:
        conn = device.conn
        if conn is None:
            return False
        return conn.ctx is not None if self.mode == "server" else conn.connected

    async def disconnect(self, device: Device) -> None:
        conn = device.conn
        if conn is None:
            return
        if self.mode == "server":
            self._stop_server(conn)
            if conn.closing is not None:
                await conn.closing
            return
        conn.connected = False  # its open exchanges finish normally

    def drop(self, device: Device) -> None:
        conn = device.conn
        if conn is None:
            return
        if self.mode == "server":
            self._stop_server(conn)
            return
        conn.connected = False
        self._cancel_exchanges(device)

    # -- client mode -----------------------------------------------------------------------------------------

    async def _ensure_endpoint(self) -> ClientEndpoint:
        """The fleet's socket, opened by the first device that connects (the others wait for it)."""
        if self._endpoint is not None and self._endpoint.transport is not None:
            return self._endpoint
        if self._opening is None or self._opening.done():
            self._opening = asyncio.get_running_loop().create_task(self._open_first_endpoint())
        return await asyncio.shield(self._opening)

    async def _open_first_endpoint(self) -> ClientEndpoint:
        if self._addr is None:
            try:
                self._addr = await resolve_host(self.host, self.port)
            except OSError as err:
                raise TransportError(f"cannot resolve CoAP host '{self.host}' ({self.target}): {err}") from None
        self._endpoint = await self._open_endpoint()
        return self._endpoint

    async def _open_endpoint(self) -> ClientEndpoint:
        assert self._addr is not None
        family, addr = self._addr
        loop = asyncio.get_running_loop()
        try:
            _, endpoint = await loop.create_datagram_endpoint(
                lambda: ClientEndpoint(self), remote_addr=addr, family=family
            )
        except OSError as err:
            raise TransportError(f"cannot open a UDP socket to {self.target}: {err}") from None
        return endpoint

    def send(
        self, device: Device, payload: bytes, topic: str | None = None, qos: int | None = None, retain: bool = False
    ) -> bool:
        conn = device.conn
        if conn is None:
            return False
        if self.mode == "server":
            return self._publish_reading(device, conn, payload, topic)
        if not conn.connected:
            return False
        endpoint = self._endpoint
        if endpoint is None or endpoint.transport is None:
            device.last_error = f"CoAP {self.method} {self.uri(conn.path)}: no socket (fleet stopped?)"
            return False
        path, options = self._path_and_options(device, conn, topic)
        if not self.confirmable:
            datagram = encode_message(NON, self._code, endpoint.take_mid(), b"", options, payload)
            self._after_take(endpoint)
            return endpoint.write(datagram)
        if self.in_flight >= self.max_in_flight:
            device.last_error = (
                f"CoAP {self.method} {self.uri(path or conn.path)}: not sent, {self.in_flight} confirmable "
                f"requests of the fleet are already waiting for an answer (limit {self.max_in_flight})"
            )
            return False
        self._start_exchange(device, endpoint, options, payload, path)
        return True

    def _path_and_options(self, device: Device, conn: _ClientConn, topic: str | None) -> tuple[str | None, bytes]:
        """(None, the device's options) normally; a behavior's topic or a per-message path otherwise."""
        if topic is not None and topic != device.topic:
            path = topic if topic.startswith("/") else "/" + topic
            options = self._other_paths.get(path)
            if options is None:
                options = request_options(path, CONTENT_FORMATS["json"])
                if len(self._other_paths) < 1024:
                    self._other_paths[path] = options
            return path, options
        if self._path_per_message:
            path = self._render_path(device, device.seq, int(time.time() * 1000))
            return path, request_options(path, self.content_format)
        return None, conn.options

    def _start_exchange(
        self,
        device: Device,
        endpoint: ClientEndpoint,
        options: bytes,
        payload: bytes,
        path: str | None,
        attempt: int = 0,
        first_try: float = 0.0,
    ) -> None:
        mid, token = endpoint.take_mid(), endpoint.take_token()
        ex = _Exchange(device, endpoint, mid, token, encode_message(CON, self._code, mid, token, options, payload))
        ex.path = path
        ex.options = options
        ex.payload = payload
        ex.attempt = attempt
        endpoint.by_mid[mid] = ex
        endpoint.by_token[token] = ex
        self.in_flight += 1
        loop = asyncio.get_running_loop()
        ex.first_sent = loop.time()
        ex.first_try = first_try or ex.first_sent
        ex.timeout = self.timing.first_timeout(self._rng)
        ex.tries = 1
        ex.handle = loop.call_later(ex.timeout, self._on_timer, ex)
        endpoint.write(ex.datagram)
        self._after_take(endpoint)

    def _after_take(self, endpoint: ClientEndpoint) -> None:
        """Prepare the next socket at half the message-id space, switch to it when the space is used up."""
        used = endpoint.used
        if used == MID_SPACE // 2 and self._spare is None:
            self._spare = asyncio.get_running_loop().create_task(self._open_endpoint())
        elif used >= MID_SPACE and endpoint is self._endpoint:
            spare = self._spare
            if spare is not None and spare.done() and not spare.cancelled() and spare.exception() is None:
                self._retired.append(endpoint)
                self._endpoint = spare.result()
                self._spare = None
                self._close_idle_retired()
            elif not self._rotation_warned:
                self._rotation_warned = True
                log.warning("fleet %s: no fresh CoAP socket ready; reusing message ids", self.fleet.name)

    def _on_timer(self, ex: _Exchange) -> None:
        if ex.tries == 0:  # an empty ACK came, the separate response did not
            ex.endpoint.by_token.pop(ex.token, None)
            self._fail(ex, f"timeout, no response within {self.timing.max_transmit_wait:.1f} s after the empty ACK")
            return
        if ex.tries <= self.timing.max_retransmit:
            ex.tries += 1
            ex.timeout *= 2
            self.retransmissions += 1
            ex.handle = asyncio.get_running_loop().call_later(ex.timeout, self._on_timer, ex)
            ex.endpoint.write(ex.datagram)
            return
        ex.endpoint.by_mid.pop(ex.mid, None)
        ex.endpoint.by_token.pop(ex.token, None)
        elapsed = asyncio.get_running_loop().time() - ex.first_sent
        endpoint = ex.endpoint
        icmp = f" (ICMP: {endpoint.icmp_error})" if endpoint.icmp_error and endpoint.icmp_at >= ex.first_sent else ""
        self._fail(ex, f"timeout, no ACK after {ex.tries} transmissions in {elapsed:.1f} s{icmp}")

    def await_separate_response(self, ex: _Exchange) -> None:
        """An empty ACK: stop retransmitting and wait for the response until MAX_TRANSMIT_WAIT."""
        if ex.handle is not None:
            ex.handle.cancel()
        ex.tries = 0
        loop = asyncio.get_running_loop()
        remaining = max(0.0, ex.first_sent + self.timing.max_transmit_wait - loop.time())
        ex.handle = loop.call_later(remaining, self._on_timer, ex)

    def finish(self, ex: _Exchange, code: int | None, payload: bytes) -> None:
        """An answer arrived (None: RST). 2.xx acknowledges; anything else is a failure with the code."""
        if ex.handle is not None:
            ex.handle.cancel()
        ex.endpoint.by_token.pop(ex.token, None)
        self.in_flight -= 1
        latency = asyncio.get_running_loop().time() - ex.first_sent
        if code is not None:
            self.latency.record(latency)
        if code is not None and code >> 5 == 2:
            self.fleet.delivery.succeeded(ex.device, len(ex.payload), latency)
        elif code is None:
            self._report(ex, "reset (RST) by the server", "reset", latency=latency)
        else:
            text = payload[:64].decode("utf-8", "replace")
            reason = f"{code_text(code)}{': ' + text if text else ''}"
            # 5.xx: the server is to blame (retry, breaker); 4.xx: the request is.
            self._report(ex, reason, f"coap_{code >> 5}.{code & 0x1F:02d}", code >> 5 == 5, latency)
        if self._retired:
            self._close_idle_retired()

    def _fail(self, ex: _Exchange, reason: str) -> None:
        """No answer after the RFC 7252 retransmissions."""
        self.in_flight -= 1
        self._report(ex, reason, "timeout")
        if self._retired:
            self._close_idle_retired()

    def _report(self, ex: _Exchange, reason: str, code: str, fault: bool = True, latency: float | None = None) -> None:
        device = ex.device
        path = ex.path or (device.conn.path if device.conn is not None else "")

        def resend(attempt: int) -> None:
            endpoint = self._endpoint
            conn = device.conn
            if endpoint is None or endpoint.transport is None or conn is None or not conn.connected:
                self.fleet.delivery_failed(device, f"not retried, the device or fleet stopped: {reason}", "stopped")
            elif self.in_flight >= self.max_in_flight:
                self.fleet.delivery_failed(device, f"not retried, {self.in_flight} requests in flight", "in_flight")
            else:
                self._start_exchange(device, endpoint, ex.options, ex.payload, ex.path, attempt, ex.first_try)

        self.fleet.delivery.failed(
            device,
            f"CoAP {self.method} {self.uri(path)}: {reason}",
            code,
            len(ex.payload),
            latency,
            fault=fault,
            resend=resend,
            attempt=ex.attempt,
            first_try=ex.first_try,
        )

    def _cancel_exchanges(self, device: Device) -> None:
        """Forget a dropped device's open exchanges (a switched-off device retransmits nothing)."""
        for endpoint in (self._endpoint, *self._retired):
            if endpoint is None:
                continue
            for ex in [e for e in endpoint.by_token.values() if e.device is device]:
                self._discard(ex)

    def _discard(self, ex: _Exchange) -> None:
        if ex.handle is not None:
            ex.handle.cancel()
        ex.endpoint.by_mid.pop(ex.mid, None)
        ex.endpoint.by_token.pop(ex.token, None)
        self.in_flight -= 1

    def _close_idle_retired(self) -> None:
        keep = []
        for endpoint in self._retired:
            if endpoint.by_token:
                keep.append(endpoint)
            else:
                endpoint.close()
        self._retired = keep

    # -- server mode ---------------------------------------------------------------------------------------------

    async def _start_server(self, device: Device) -> None:
        import aiocoap

        conn: _ServerConn | None = device.conn
        if conn is None:
            conn = device.conn = _ServerConn()
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
        wanted = conn.port or (self.server_port + device.index if self.server_port else 0)
        try:
            port = reserve_udp_port(bind_host, wanted)
        except OSError as err:
            raise TransportError(f"device '{device.id}': cannot listen on UDP {bind_host}:{wanted}: {err}") from None
        site = _build_site(self, device, conn)
        try:
            conn.ctx = await aiocoap.Context.create_server_context(
                site, bind=(bind_host, port), transports=["udp6"], loggername=AIOCOAP_LOGGER
            )
        except OSError as err:
            release_udp_port(bind_host, port)
            raise TransportError(f"device '{device.id}': cannot listen on UDP {bind_host}:{port}: {err}") from None
        conn.port = port

    def _stop_server(self, conn: _ServerConn) -> None:
        """Close the device's context in the background; ``connect`` waits for it before binding again."""
        ctx, conn.ctx = conn.ctx, None
        if ctx is None:
            return
        host = str(self._addr[1][0]) if self._addr else self.host

        async def shutdown() -> None:
            try:
                await ctx.shutdown()
            finally:
                release_udp_port(host, conn.port)

        conn.closing = asyncio.get_running_loop().create_task(shutdown())

    def server_port_of(self, device: Device) -> int | None:
        """The UDP port a server-mode device listens (or listened) on."""
        conn = device.conn
        return conn.port if isinstance(conn, _ServerConn) and conn.port else None

    def _publish_reading(self, device: Device, conn: _ServerConn, payload: bytes, topic: str | None) -> bool:
        if conn.ctx is None:
            return False
        if topic is not None and topic != device.topic:
            if conn.reply is not None:  # the response of the command being handled
                conn.reply = payload
                return True
            return False  # server-mode devices publish nothing but their telemetry resources
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

    def handle_command(self, device: Device, name: str, payload: bytes) -> Any:
        """A POST to ``/commands/<name>``: recorded and applied by the fleet, answered with a JSON body."""
        import aiocoap

        conn: _ServerConn = device.conn
        conn.reply = b""
        try:
            self.fleet.command_received(device, name, payload, f"/commands/{name}")
            body = conn.reply
        finally:
            conn.reply = None
        record = device.commands[-1] if device.commands else {}
        status = str(record.get("status", "ok"))
        if not body:
            body = json.dumps(
                {"deviceId": device.id, "command": name, "status": status, "ts": int(time.time() * 1000)},
                separators=(",", ":"),
            ).encode()
        code = aiocoap.CHANGED if status == "ok" else aiocoap.BAD_REQUEST
        return aiocoap.Message(code=code, payload=body, content_format=50)

    # -- fleet-wide ---------------------------------------------------------------------------------------------

    async def close(self, drain_s: float = 1.0) -> None:
        """Wait up to ``drain_s`` for open exchanges, then close the sockets (server contexts are closed)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + drain_s
        while self.in_flight > 0 and loop.time() < end:
            await asyncio.sleep(0.02)
        for endpoint in (self._endpoint, *self._retired):
            if endpoint is None:
                continue
            for ex in list(endpoint.by_token.values()):
                self._discard(ex)
            endpoint.close()
        self._endpoint, self._retired = None, []
        if self._spare is not None:
            self._spare.cancel()
            with contextlib.suppress(BaseException):
                endpoint = await self._spare
                endpoint.close()
            self._spare = None
        for device in self.fleet.devices:
            conn = device.conn
            if isinstance(conn, _ServerConn):
                self._stop_server(conn)
                if conn.closing is not None:
                    with contextlib.suppress(Exception):
                        await conn.closing
