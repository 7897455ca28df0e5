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

This uses two private paho methods (``_packet_read`` and ``_loop_rc_handle``) to drain a socket in one
wake-up; paho is pinned below 3.0 and the integration tests exercise them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from iotix.transport.base import TransportError
from iotix.transport.tls import tls_handshake

if TYPE_CHECKING:
    from iotix.transport.tls import ClientTls

MQTT_ERR_AGAIN = MQTTErrorCode.MQTT_ERR_AGAIN
_CONNECTED = mqtt._ConnectionState.MQTT_CS_CONNECTED
#: Packets processed per readable event before yielding back to the loop (fairness between clients).
READ_BURST = 512


def _on_socket_open(client: LoopClient, userdata: Any, sock: Any) -> None:
    client._aio_loop.add_reader(sock, _readable, client)


def _on_socket_close(client: LoopClient, userdata: Any, sock: Any) -> None:
    loop = client._aio_loop
    loop.remove_reader(sock)
    if client._writer_on:
        loop.remove_writer(sock)
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
        # readiness event announces: come back for them.
        sock = client._sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            client._aio_loop.call_soon(_readable, client)
    if client._out_packet:
        client.kick()


def _writable(client: LoopClient) -> None:
    client.loop_write()
    if not client._out_packet and client._writer_on:
        client._writer_on = False
        if client._sock is not None:
            client._aio_loop.remove_writer(client._sock)


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


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


class LoopClient(mqtt.Client):
    """A paho client whose socket lives on an asyncio loop. Use only from that loop's thread."""

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
        self.on_socket_open = _on_socket_open
        self.on_socket_close = _on_socket_close
        self.suppress_exceptions = True

    # paho calls this from reconnect(): hand it the socket we connected without blocking.
    def _create_socket_connection(self) -> socket.socket:
        sock, self._pending_sock = self._pending_sock, None
        if sock is None:
            raise OSError("IoTix: no connected socket was prepared for this client")
        if not isinstance(sock, ssl.SSLSocket):
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
    ) -> None:
        """Connect TCP (and TLS with ``tls``), send CONNECT and wait for CONNACK; each within ``timeout``.

        Raises :class:`TransportError` naming the broker and the reason. Until it returns, the end of the
        connection is not reported as lost (:attr:`close_reported`): a failed attempt raises instead.
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
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        target = f"{host}:{port}"
        try:
            async with asyncio.timeout(timeout):
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
        """To be called from ``on_connect``."""
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
        if self._sock is None or self._state != _CONNECTED:
            return False
        n = len(topic_field) + len(payload)
        if n < 128:
            packet = bytes((0x30, n)) + topic_field + payload
        elif n < 16384:
            packet = bytes((0x30, (n & 0x7F) | 0x80, n >> 7)) + topic_field + payload
        else:
            packet = b"\x30" + _remaining_length(n) + topic_field + payload
        pending = self._pending
        if pending is None:
            self._pending = packet
            self._corker.add(self)
        elif pending.__class__ is bytes:
            self._pending = bytearray(pending) + packet
        else:
            pending += packet
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
        if self._out_packet and not self._writer_on and self._sock is not None:
            self._writer_on = True
            self._aio_loop.add_writer(self._sock, _writable, self)

    def misc(self) -> None:
        """Keep-alive processing (PINGREQ, dead-peer detection)."""
        if self._sock is not None:
            self.loop_misc()
            self.kick()

    def abort(self) -> None:
        """Close the TCP connection abruptly (RST, no DISCONNECT): the broker publishes the last will."""
        sock = self._sock
        if sock is None:
            return
        try:
            raw = sock if isinstance(sock, socket.socket) else None
            if raw is not None:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
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
