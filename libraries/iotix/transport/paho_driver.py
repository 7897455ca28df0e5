"""paho-mqtt clients driven by the runtime's asyncio loop: no thread, no paho network loop, no socketpair.

paho's own ``loop_start()`` costs a thread per client and its select loop stops working near 340 clients
per process. Here every client's socket is registered with the asyncio loop instead:

- the TCP connection is opened with ``loop.sock_connect`` (non-blocking) and handed to paho, which then
  sends CONNECT on it;
- readable sockets call paho's packet reader until the socket is drained;
- a publish writes immediately (paho does that when no write-registration callback is set); only when the
  kernel buffer is full is a writer registered until paho's queue is empty;
- keep-alive is driven by :meth:`LoopClient.misc`, called periodically by the owner.

This uses two private paho methods (``_packet_read`` and ``_loop_rc_handle``) to drain a socket in one
wake-up; paho is pinned below 3.0 and the integration tests exercise them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from iotix.transport.base import TransportError

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
        self._corker = corker_for(loop)
        self._clean_start = clean_session
        self._connack: asyncio.Future[Any] | None = None
        self.on_socket_open = _on_socket_open
        self.on_socket_close = _on_socket_close
        self.suppress_exceptions = True

    # paho calls this from reconnect(): hand it the socket we connected without blocking.
    def _create_socket_connection(self) -> socket.socket:
        sock, self._pending_sock = self._pending_sock, None
        if sock is None:
            raise OSError("IoTix: no connected socket was prepared for this client")
        sock.setblocking(True)  # paho sets it non-blocking again after an (optional) TLS handshake
        return sock

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
    ) -> None:
        """Connect TCP (and TLS when configured), send CONNECT and wait for CONNACK.

        Raises :class:`TransportError` naming the broker and the reason.
        """
        loop = self._aio_loop
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
        self._pending_sock = sock
        self._connack = loop.create_future()
        try:
            rc = self.reconnect()
        except ssl.SSLError as err:
            self._abort_pending(sock)
            raise TransportError(f"TLS handshake with {target} failed: {err.reason or err}") from None
        except (OSError, ValueError) as err:
            self._abort_pending(sock)
            raise TransportError(f"cannot connect to broker {target}: {err}") from None
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.abort()
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

    def _abort_pending(self, sock: socket.socket) -> None:
        self._pending_sock = None
        sock.close()
        self.abort()

    def connack_received(self, reason_code: Any) -> None:
        """To be called from ``on_connect``."""
        fut = self._connack
        if fut is not None and not fut.done():
            fut.set_result(reason_code)

    def connection_failed(self, reason: str) -> None:
        """To be called from ``on_disconnect`` while CONNECT is pending."""
        fut = self._connack
        if fut is not None and not fut.done():
            fut.set_exception(TransportError(f"connection closed before CONNACK: {reason}"))

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
