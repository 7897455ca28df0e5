"""paho-mqtt clients driven by the runtime's asyncio loop: no thread, no paho network loop, no socketpair.

paho's own ``loop_start()`` costs a thread per client and its select loop stops working near 340 clients
per process. Here every client's socket is registered with the asyncio loop instead:

- the TCP connection is opened with ``loop.sock_connect`` (non-blocking) and handed to paho, which then
  sends CONNECT on it;
- readable sockets call paho's packet reader until the socket is drained;
- a publish writes immediately (paho does that when no write-registration callback is set); only when the
  kernel buffer is full is a writer registered until paho's queue is empty;
- keep-alive is driven by :meth:`LoopClient.misc`, called periodically by the owner;
- TLS (``open(..., tls=...)``): the handshake runs here, non-blocking on the loop
  (:func:`iotix.transport.tls.tls_handshake`), and paho gets the finished ``ssl.SSLSocket`` (paho's own
  TLS path would block the loop in ``do_handshake``). A failure is explained in words: expired certificate,
  unknown CA, host name mismatch, client certificate refused by the broker (with TLS 1.3 that refusal
  arrives after the handshake, while CONNACK is awaited).

Network faults (``open(..., faults=..., owner=...)``, see :mod:`iotix.fault`): a new connection first asks
the fleet's fault set for admission (an outage or a partition refuses, resets or leaves it unanswered, as a
real network would); an admitted connection is wrapped, after TCP connect and TLS handshake, in a
:class:`iotix.fault.sock.FaultSocket` that paho uses as its socket. Its reader and writer callbacks are then
registered through the wrapper (:func:`_io_of`), which shares the descriptor's one writer slot with its own
write buffer.

This uses two private paho methods (``_packet_read`` and ``_loop_rc_handle``) to drain a socket in one
wake-up; paho is pinned below 3.0 and the integration tests exercise them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import struct
import sys
import time
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from iotix.fault.sock import FaultSocket, wrap_socket
from iotix.transport.base import TransportError
from iotix.transport.tls import tls_handshake

if TYPE_CHECKING:
    from iotix.fault.faultset import FaultSet
    from iotix.transport.tls import ClientTls

MQTT_ERR_AGAIN = MQTTErrorCode.MQTT_ERR_AGAIN
#: states of an outgoing QoS 1/2 message that wait for the broker (PUBACK, PUBREC, PUBCOMP)
_AWAITING_ACK = frozenset({mqtt.mqtt_ms_wait_for_puback, mqtt.mqtt_ms_wait_for_pubrec, mqtt.mqtt_ms_wait_for_pubcomp})
_CONNECTED = mqtt._ConnectionState.MQTT_CS_CONNECTED
#: Packets processed per readable event before yielding back to the loop (fairness between clients).
READ_BURST = 512
#: When a connection attempt meets a blackholed target: the moments (seconds after the start) at which a
#: kernel would retransmit its SYN (Linux: 1, 3, 7, 15 s, ...); the attempt succeeds at the first one after
#: the blackhole lifted, or fails at the connect timeout.
SYN_RETRIES = (1.0, 3.0, 7.0, 15.0, 31.0, 63.0)


def _io_of(client: LoopClient, sock: Any) -> Any:
    """Where ``sock``'s reader and writer are registered: the loop, or the fault layer's wrapper (which shares
    the descriptor's one writer slot with its own buffer). Same signatures: ``add_reader(sock, cb, *args)``."""
    return sock if sock.__class__ is FaultSocket else client._aio_loop


def _on_socket_open(client: LoopClient, userdata: Any, sock: Any) -> None:
    _io_of(client, sock).add_reader(sock, _readable, client)


def _on_socket_close(client: LoopClient, userdata: Any, sock: Any) -> None:
    io = _io_of(client, sock)
    io.remove_reader(sock)
    if client._writer_on:
        io.remove_writer(sock)
        client._writer_on = False


def _readable(client: LoopClient) -> None:
    for _ in range(READ_BURST):
        if client._sock is None:
            return
        rc = client._packet_read()
        if rc == MQTT_ERR_AGAIN:
            break
        if rc > 0:
            client._loop_rc_handle(rc)
            return
    else:
        # Burst used up. A plain socket stays readable; a TLS socket may hold decrypted bytes that no
        # readiness event announces, and the fault layer bytes it delivered: come back for them.
        sock = client._sock
        if isinstance(sock, (ssl.SSLSocket, FaultSocket)) and sock.pending():
            client._aio_loop.call_soon(_readable, client)
    if client._out_packet:
        client.kick()


def _writable(client: LoopClient) -> None:
    client.loop_write()
    if not client._out_packet and client._writer_on:
        client._writer_on = False
        sock = client._sock
        if sock is not None:
            _io_of(client, sock).remove_writer(sock)


#: Linux's IP_BIND_ADDRESS_NO_PORT (24): bind() takes the address but leaves the port to connect(), which then
#: picks one unique for the (source, destination) pair instead of one unique for the source address alone.
IP_BIND_ADDRESS_NO_PORT: int | None = getattr(
    socket, "IP_BIND_ADDRESS_NO_PORT", 24 if sys.platform.startswith("linux") else None
)


def bind_source(sock: socket.socket, address: str) -> None:
    """Bind ``sock`` (not yet connected) to the local ``address``, leaving the port to ``connect``.

    With ``IP_BIND_ADDRESS_NO_PORT`` (Linux) every (source, destination) pair has its own 28,232 ephemeral
    ports; without it (other systems) the port is taken at bind time and each source address has them once.
    """
    if IP_BIND_ADDRESS_NO_PORT is not None:
        with contextlib.suppress(OSError):  # an older kernel: bind takes a port now
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    sock.bind((address, 0))


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


#: QoS 0 PUBLISH fixed headers (type and remaining length) by remaining length, filled as lengths occur
_HEADERS: dict[int, bytes] = {}


def _publish_header(n: int) -> bytes:
    """The fixed header of a QoS 0 PUBLISH whose variable header and payload take ``n`` bytes (cached)."""
    header = b"\x30" + _remaining_length(n)
    if len(_HEADERS) < 65536:  # payload sizes of a fleet are few; a bound keeps a pathological mix from growing
        _HEADERS[n] = header
    return header


class Corker:
    """Collects clients with corked QoS 0 packets and flushes them all once per loop iteration."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[LoopClient] = []
        self._scheduled = False

    def add(self, client: LoopClient) -> None:
        self._dirty.append(client)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        for client in dirty:
            client.flush_pending()


_corkers: dict[asyncio.AbstractEventLoop, Corker] = {}


def corker_for(loop: asyncio.AbstractEventLoop) -> Corker:
    corker = _corkers.get(loop)
    if corker is None:
        for old in [lp for lp in _corkers if lp.is_closed()]:
            del _corkers[old]
        corker = _corkers[loop] = Corker(loop)
    return corker


class _NoLock:
    """Stands in for paho's locks that only guard ``with`` blocks: a loop client is used from one thread."""

    __slots__ = ()

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        return None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        return None


_NO_LOCK = _NoLock()
_NO_FILTERS = mqtt.MQTTMatcher()  # shared until message_callback_add gives a client its own


class _PacketQueue(list):  # type: ignore[type-arg]
    """paho's outgoing packet queue as a list: empty most of the time, where a deque holds a 0.7 KB block."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


#: What paho's ``Client.__init__`` sets on an instance (a probe client: no socket, no thread).
_PAHO_DEFAULTS: dict[str, Any] = dict(vars(mqtt.Client(CallbackAPIVersion.VERSION2, client_id="iotix-probe")))
#: paho attributes with the same value in every IoTix client, never changed by IoTix: class attributes of
#: LoopClient (paho's own defaults, or the shared stand-ins below) instead of per-client slots. paho still may set
#: one on a client (``username_pw_set``, ``will_set``, ``tls_set``, ...): it then lives in that client's dict.
_CONSTANTS: dict[str, Any] = {
    **{
        name: _PAHO_DEFAULTS[name]
        for name in (
            "_manual_ack",
            "_transport",
            "_sockpairR",
            "_sockpairW",
            "_connect_timeout",
            "_client_mode",
            "_callback_api_version",
            "_username",
            "_password",
            "_reconnect_min_delay",
            "_reconnect_max_delay",
            "_reconnect_on_failure",
            "_max_queued_messages",
            "_connect_properties",
            "_will_properties",
            "_will",
            "_will_topic",
            "_will_payload",
            "_will_qos",
            "_will_retain",
            "_bind_address",
            "_bind_port",
            "_thread",
            "_thread_terminate",
            "_ssl",
            "_ssl_context",
            "_tls_insecure",
            "_logger",
            "_registered_write",
            "_on_log",
            "_on_pre_connect",
            "_on_connect_fail",
            "_on_subscribe",
            "_on_unsubscribe",
            "_on_socket_register_write",
            "_on_socket_unregister_write",
            "_websocket_path",
            "_websocket_extra_headers",
        )
        if name in _PAHO_DEFAULTS
    },
    # locks that only guard ``with`` blocks (``_in_callback_mutex`` is also probed with ``acquire(False)`` to
    # learn whether a callback runs: it stays a real lock per client)
    "_callback_mutex": _NO_LOCK,
    "_msgtime_mutex": _NO_LOCK,
    "_out_message_mutex": _NO_LOCK,
    "_in_message_mutex": _NO_LOCK,
    "_reconnect_delay_mutex": _NO_LOCK,
    "_mid_generate_mutex": _NO_LOCK,
    "_proxy": {},  # paho replaces, never mutates, its proxy settings
    "_on_message_filtered": _NO_FILTERS,
    "_on_socket_open": staticmethod(_on_socket_open),
    "_on_socket_close": staticmethod(_on_socket_close),
    "suppress_exceptions": True,
}
#: LoopClient's own attributes (slots, as paho's are)
_OWN_ATTRIBUTES = (
    "_aio_loop",
    "_corker",
    "_pending_sock",
    "_writer_on",
    "fast_topic",
    "_pending",
    "side_mids",
    "outcomes",
    "close_reported",
    "_connack",
    "_tls",
    "_tls_failure",
    "ack_timeout",
    "ack_timeouts",
    "redelivered",
    "lost_reason",
)
_SLOTS = tuple(name for name in dict.fromkeys((*_PAHO_DEFAULTS, *_OWN_ATTRIBUTES)) if name not in _CONSTANTS)


class LoopClient(mqtt.Client):
    """A paho client whose socket lives on an asyncio loop. Use only from that loop's thread.

    paho sets some 90 attributes per client: in an instance dict they take 3.3 KB per device. Here those that
    are the same for every client are class attributes (:data:`_CONSTANTS`: the locks that only guard ``with``
    blocks are one shared no-op), the others live in slots, and the outgoing queue is a list: a client costs
    about 1.5 KB instead of 5.5 KB. An attribute not listed (set by a later paho version, or added here without
    adding it to :data:`_OWN_ATTRIBUTES`) still works, in the instance dict.
    """

    __slots__ = _SLOTS

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client_id: str,
        *,
        mqtt_version: str = "3.1.1",
        clean_session: bool = True,
        userdata: Any = None,
    ) -> None:
        protocol = mqtt.MQTTv5 if str(mqtt_version) in ("5", "5.0") else mqtt.MQTTv311
        super().__init__(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            clean_session=None if protocol == mqtt.MQTTv5 else clean_session,
            userdata=userdata,
        )
        spare = self.__dict__  # paho's constants, which the class holds (_CONSTANTS)
        for name in _CONSTANTS:
            spare.pop(name, None)
        if not spare:
            spare.clear()  # give the emptied table back
        self._out_packet = _PacketQueue()  # type: ignore[assignment]
        self._aio_loop = loop
        self._pending_sock: socket.socket | None = None
        self._writer_on = False
        self.fast_topic: bytes | None = None  # the owner's cached topic_field() of its telemetry topic
        self._pending: bytes | bytearray | None = None  # corked QoS 0 packets (see Corker)
        self.side_mids: set[int] | None = None  # mids of QoS 1/2 messages that are not telemetry
        self.outcomes: Any = None  # where the owning transport's callbacks report (iotix.transport.base.Outcomes)
        #: the end of the current connection is accounted for (the owner closed it, or it was reported lost once)
        self.close_reported = False
        self._corker = corker_for(loop)
        self._clean_start = clean_session
        self._connack: asyncio.Future[Any] | None = None
        self._tls: ClientTls | None = None  # TLS settings of the current connection attempt
        self._tls_failure: BaseException | None = None  # why a TLS connection ended before CONNACK
        # on_socket_open, on_socket_close and suppress_exceptions are class attributes (_CONSTANTS)
        #: seconds a QoS 1/2 PUBLISH may wait for its acknowledgement before the connection is given up (0: never)
        self.ack_timeout = 0.0
        self.ack_timeouts = 0  # connections given up for a missing acknowledgement
        self.redelivered = 0  # QoS 1/2 messages sent again (DUP) on a new connection
        self.lost_reason: str | None = None  # why this client gave the connection up itself, if it did

    def message_callback_add(self, sub: str, callback: Any) -> None:
        if self._on_message_filtered is _NO_FILTERS:
            self._on_message_filtered = mqtt.MQTTMatcher()
        super().message_callback_add(sub, callback)

    # paho calls this from reconnect(): hand it the socket we connected without blocking.
    def _create_socket_connection(self) -> socket.socket:
        sock, self._pending_sock = self._pending_sock, None
        if sock is None:
            raise OSError("IoTix: no connected socket was prepared for this client")
        if not isinstance(sock, (ssl.SSLSocket, FaultSocket)):
            sock.setblocking(True)  # paho sets it non-blocking again right after
        return sock

    def _tls_sock_recv(self, bufsize: int) -> bytes:
        """paho's ``_sock_recv`` for TLS connections: remembers why the connection ended before CONNACK."""
        try:
            data = mqtt.Client._sock_recv(self, bufsize)
        except BlockingIOError:
            raise
        except OSError as err:
            if self._connack is not None:
                self._tls_failure = err
            raise
        if not data and self._connack is not None:
            self._tls_failure = EOFError("connection closed")
        return data

    def _tls_sock_send(self, buf: bytes | bytearray) -> int:
        """paho's ``_sock_send`` for TLS connections: a send that fails before CONNACK looks for the broker's
        TLS alert (its reason) that may already be waiting to be read."""
        try:
            return mqtt.Client._sock_send(self, buf)
        except BlockingIOError:
            raise
        except OSError as err:
            if self._connack is not None:
                self._tls_failure = self._waiting_alert() or err
            raise

    def _waiting_alert(self) -> ssl.SSLError | None:
        """A TLS alert the broker sent that has not been read yet, or None."""
        sock = self._sock
        if isinstance(sock, FaultSocket):
            sock = sock.wrapped  # the alert is in the TLS layer, below the fault layer
        if not isinstance(sock, ssl.SSLSocket):
            return None
        try:
            sock.recv(1)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        except ssl.SSLError as err:
            return err if err.reason else None
        except OSError:
            return None
        return None

    @property
    def is_open(self) -> bool:
        return self._sock is not None and self.is_connected()

    async def open(
        self,
        host: str,
        port: int,
        *,
        keepalive: int = 60,
        timeout: float = 10.0,
        addr: tuple[Any, ...] | None = None,
        family: int = socket.AF_INET,
        properties: Any = None,
        tls: ClientTls | None = None,
        faults: FaultSet | None = None,
        owner: str | None = None,
        source: str | None = None,
    ) -> None:
        """Connect TCP (and TLS with ``tls``), send CONNECT and wait for CONNACK; each within ``timeout``.

        Raises :class:`TransportError` naming the broker and the reason. Until it returns, the end of the
        connection is not reported as lost (:attr:`close_reported`): a failed attempt raises instead.

        ``faults`` (the fleet's :class:`iotix.fault.faultset.FaultSet`) routes the connection through the
        network-fault layer as the device ``owner``: admission first (see :meth:`_admit`), then the
        connected (and TLS) socket is wrapped in a :class:`iotix.fault.sock.FaultSocket`.

        ``source`` (an IPv4 address of this machine) is the local address of the connection: the socket is
        bound to it before connecting (see :func:`bind_source`), so that connections spread over several source
        addresses do not share one pool of ephemeral ports.
        """
        loop = self._aio_loop
        self.close_reported = True
        if self._host != host or self._port != port or self._keepalive != keepalive:
            self.connect_async(
                host,
                port,
                keepalive,
                clean_start=self._clean_start if self._protocol == mqtt.MQTTv5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                properties=properties,
            )
        target = f"{host}:{port}"
        started = loop.time()
        if faults is not None and faults.active:
            await self._admit(faults, owner, target, timeout)
        remaining = max(0.001, timeout - (loop.time() - started))
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        if source is not None:
            try:
                bind_source(sock, source)
            except OSError as err:
                sock.close()
                reason = os.strerror(err.errno) if err.errno else str(err)
                raise TransportError(
                    f"cannot use source address {source} for broker {target}: {reason} (source addresses must be "
                    "addresses of this machine; any 127.x.y.z works for a local broker)"
                ) from None
        try:
            async with asyncio.timeout(remaining):
                await loop.sock_connect(sock, addr or (host, port))
        except TimeoutError:
            sock.close()
            raise TransportError(f"no answer from broker {target} within {timeout:g} s") from None
        except OSError as err:
            sock.close()
            reason = os.strerror(err.errno) if err.errno else str(err)
            raise TransportError(f"cannot reach broker {target}: {reason}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._tls, self._tls_failure = tls, None
        if tls is not None:
            sock = await self._handshake(tls, sock, host, target, timeout)
            self._sock_recv = self._tls_sock_recv  # type: ignore[method-assign]
            self._sock_send = self._tls_sock_send  # type: ignore[method-assign]
        elif "_sock_recv" in self.__dict__:
            del self._sock_recv, self._sock_send
        if faults is not None:
            sock = wrap_socket(sock, loop, faults, owner)  # type: ignore[assignment]
        self._pending_sock = sock
        self._connack = loop.create_future()
        try:
            rc = self.reconnect()
        except (OSError, ValueError) as err:
            self._abort_pending(sock)
            self._drop_connack()
            if tls is not None:
                raise TransportError(self._tls_message(target, err)) from None
            raise TransportError(f"cannot connect to broker {target}: {err}") from None
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.abort()
            failure = self._drop_connack()  # the connection may have failed while CONNECT was written
            if failure is not None:
                raise failure
            if tls is not None:
                raise TransportError(self._tls_message(target, self._tls_failure))
            raise TransportError(f"cannot send CONNECT to {target}: {mqtt.error_string(rc)}")
        self.kick()
        try:
            async with asyncio.timeout(timeout):
                reason = await self._connack
        except TimeoutError:
            self.abort()
            raise TransportError(f"broker {target} did not answer CONNECT within {timeout:g} s") from None
        except TransportError:
            self.abort()
            raise
        finally:
            self._connack = None
        if reason is not None and getattr(reason, "is_failure", False):
            self.abort()
            raise TransportError(f"broker {target} refused the connection: {reason}")
        if self._sock is None:  # closed between CONNACK and now: nobody would report it
            raise TransportError(f"broker {target} closed the connection right after CONNACK")
        self.close_reported = False
        self.lost_reason = None

    async def _admit(self, faults: FaultSet, owner: str | None, target: str, timeout: float) -> None:
        """Ask the fault set whether a new connection gets through; raise as a real network would when not.

        ``refuse``: "Connection refused" at once (an RST answers the SYN); ``reset``: "Connection reset by
        peer"; ``blackhole``: no answer, so the attempt waits, looking again at the moments a kernel would
        retransmit its SYN (:data:`SYN_RETRIES`): it goes on at the first one after the blackhole lifted,
        else fails with "no answer" at the connect timeout. Each reason says that a network fault caused it.
        (The fault set counts what it refuses; it is asked again only when its faults changed.)
        """
        verdict = faults.admission(owner)
        if verdict is None:
            return
        loop = self._aio_loop
        start = loop.time()
        if verdict == "blackhole":
            seen = (faults.faults, faults.outage)
            for at in (*(t for t in SYN_RETRIES if t < timeout), timeout):
                await asyncio.sleep(max(0.0, start + at - loop.time()))
                if at >= timeout:
                    break
                now = (faults.faults, faults.outage)
                if now != seen:
                    seen = now
                    verdict = faults.admission(owner)
                    if verdict != "blackhole":
                        break
        if verdict is None:
            return
        if verdict == "blackhole":
            raise TransportError(f"no answer from broker {target} within {timeout:g} s (network fault: blackhole)")
        why = "Connection reset by peer" if verdict == "reset" else "Connection refused"
        raise TransportError(f"cannot reach broker {target}: {why} (network fault: target down)")

    async def _handshake(
        self, tls: ClientTls, sock: socket.socket, host: str, target: str, timeout: float
    ) -> ssl.SSLSocket:
        """The TLS handshake on the loop; a failure becomes a :class:`TransportError` in words."""
        try:
            async with asyncio.timeout(timeout):
                return await tls_handshake(tls.context, sock, host)
        except TimeoutError:
            sock.close()
            raise TransportError(f"TLS handshake with broker {target} did not finish within {timeout:g} s") from None
        except (OSError, ValueError) as err:  # ssl.SSLError, reset; ssl.CertificateError is a ValueError
            sock.close()
            raise TransportError(f"TLS handshake with broker {target} failed: {tls.explain(err, host)}") from None

    def _tls_message(self, target: str, err: BaseException | None) -> str:
        """Why a TLS connection ended after its handshake and before CONNACK."""
        assert self._tls is not None
        host = target.rpartition(":")[0]
        return f"TLS connection to broker {target} failed: {self._tls.explain(err, host, after_handshake=True)}"

    def _drop_connack(self) -> BaseException | None:
        """Forget the CONNACK future of a failed attempt; returns the failure it already holds, if any."""
        fut, self._connack = self._connack, None
        if fut is None:
            return None
        if fut.done():
            return fut.exception() if not fut.cancelled() else None
        fut.cancel()
        return None

    def _abort_pending(self, sock: socket.socket) -> None:
        self._pending_sock = None
        sock.close()
        self.abort()

    def connack_received(self, reason_code: Any) -> None:
        """To be called from ``on_connect`` (paho calls it before it resends what was in flight: those messages
        have DUP set since ``reconnect``, and are counted in :attr:`redelivered`)."""
        if not getattr(reason_code, "is_failure", False):
            self.redelivered += sum(1 for m in self._out_messages.values() if m.qos and m.dup)
        fut = self._connack
        if fut is not None and not fut.done():
            fut.set_result(reason_code)

    def connection_failed(self, reason: str) -> bool:
        """To be called from ``on_disconnect``: True when a CONNECT was pending (the attempt fails with the reason;
        no established connection was lost)."""
        fut = self._connack
        if fut is None or fut.done():
            return False
        if self._tls is not None:
            target = f"{self._host}:{self._port}"
            fut.set_exception(TransportError(self._tls_message(target, self._tls_failure)))
        else:
            fut.set_exception(TransportError(f"connection closed before CONNACK: {reason}"))
        return True

    def topic_field(self, topic: str) -> bytes:
        """The encoded topic part of a QoS 0 PUBLISH (with the empty property block of MQTT 5)."""
        t = topic.encode()
        field = len(t).to_bytes(2, "big") + t
        return field + b"\x00" if self._protocol == mqtt.MQTTv5 else field

    def publish_qos0(self, topic_field: bytes, payload: bytes) -> bool:
        """Send a QoS 0 PUBLISH without paho's per-message bookkeeping (the hot path of a fleet).

        QoS 0 needs no message id, no retry and no acknowledgement, so the packet is built here. It is
        corked: packets of one loop iteration are written together right after it (see :class:`Corker`),
        so a device that sends several messages in one scheduler tick costs one system call, not several.
        """
        if self._sock is None or self._state is not _CONNECTED:
            return False
        n = len(topic_field) + len(payload)
        header = _HEADERS.get(n)
        if header is None:
            header = _publish_header(n)
        pending = self._pending
        if pending is None:
            self._pending = header + topic_field + payload
            self._corker.add(self)
        else:  # a second message in the same loop iteration: one buffer, one system call for all of them
            if pending.__class__ is bytes:
                pending = self._pending = bytearray(pending)
            pending += header
            pending += topic_field
            pending += payload
        return True

    def flush_pending(self) -> None:
        """Write the corked packets; what the kernel does not take goes behind paho's queue, in order."""
        data, self._pending = self._pending, None
        sock = self._sock
        if not data or sock is None:
            return  # the connection went away: the packets are lost in transit, as on a real network
        if self._out_packet:
            self._packet_queue(0, bytes(data), 0, 0)
            self.kick()
            return
        try:
            sent = sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        except OSError:
            return  # broken connection; the reader reports it
        if sent < len(data):
            self._packet_queue(0, bytes(data[sent:]), 0, 0)
            self.kick()

    @property
    def wire_socket(self) -> socket.socket | None:
        """The socket on the wire, below the fault layer's wrapper (an ``ssl.SSLSocket`` for TLS), or None."""
        sock = self._sock
        return sock.wrapped if isinstance(sock, FaultSocket) else sock  # type: ignore[return-value]

    @property
    def has_socket(self) -> bool:
        """Whether a connection (possibly still before CONNACK) is open."""
        return self._sock is not None

    @property
    def has_output(self) -> bool:
        """Whether bytes wait in paho's queue for the socket."""
        return bool(self._out_packet)

    @property
    def in_flight(self) -> bool:
        """Whether messages wait to be written or acknowledged (QoS 1/2 in flight) on an open connection."""
        return self._sock is not None and bool(self._out_messages or self._out_packet)

    def kick(self) -> None:
        """Register a writer when paho has bytes the socket did not take."""
        sock = self._sock
        if self._out_packet and not self._writer_on and sock is not None:
            self._writer_on = True
            _io_of(self, sock).add_writer(sock, _writable, self)

    def misc(self) -> None:
        """Keep-alive processing (PINGREQ, dead-peer detection) and the acknowledgement timeout."""
        if self._sock is not None:
            if self.ack_timeout and self._out_messages and self._ack_overdue():
                return
            self.loop_misc()
            self.kick()

    def _ack_overdue(self) -> bool:
        """Whether the oldest QoS 1/2 message in flight waited longer than :attr:`ack_timeout` for its
        acknowledgement; then the connection is given up (as paho gives it up after a missed PINGRESP).

        MQTT resends an unacknowledged PUBLISH only on a new connection ([MQTT-4.4.0-1]); paho follows it, so a
        PUBLISH lost on a live connection (a broker that dropped it, a network fault that ate it) would hold its
        in-flight slot forever and the device would go silent once the window is full. Reconnecting resends
        every message in flight with the DUP flag (counted in :attr:`redelivered`).
        """
        oldest = next(iter(self._out_messages.values()))
        if oldest.qos == 0 or oldest.state not in _AWAITING_ACK or not oldest.timestamp:
            return False
        if time.monotonic() - oldest.timestamp <= self.ack_timeout:
            return False
        self.ack_timeouts += 1
        self.lost_reason = f"no acknowledgement of a QoS {oldest.qos} PUBLISH within {self.ack_timeout:g} s"
        self._sock_close()
        self._state = mqtt._ConnectionState.MQTT_CS_CONNECTION_LOST
        self._do_on_disconnect(packet_from_broker=False, v1_rc=MQTTErrorCode.MQTT_ERR_KEEPALIVE)
        return True

    def abort(self) -> None:
        """Close the TCP connection abruptly (RST, no DISCONNECT): the broker publishes the last will."""
        sock = self._sock
        if sock is None:
            return
        try:
            # on the fault layer's wrapper too: its real close may wait for a hold to lift, then it is an RST
            if isinstance(sock, (socket.socket, FaultSocket)):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self._sock_close()
        self._state = mqtt._ConnectionState.MQTT_CS_CONNECTION_LOST

    def close_gracefully(self) -> None:
        """Write what is corked, send DISCONNECT (no last will) and close."""
        if self._sock is not None:
            if self._pending:
                self.flush_pending()
            self.disconnect()
            # paho writes DISCONNECT immediately; whatever did not fit is lost with the connection anyway.
            self._sock_close()


for _name, _value in _CONSTANTS.items():
    setattr(LoopClient, _name, _value)
