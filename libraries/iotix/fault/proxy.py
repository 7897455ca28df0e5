"""Fault proxies: TCP and UDP relays on the runtime loop that feed every byte through a target's faults.

A proxy listens on ``listen_host`` (127.0.0.1) at an ephemeral port and relays to one upstream address; the
bytes of each relayed connection pass through a :class:`~iotix.fault.faultset.Conduit` of the proxy's
:class:`~iotix.fault.faultset.FaultSet` (client -> upstream through ``conduit.up``, upstream -> client through
``conduit.down``). With no fault acting the pipes are idle and a chunk costs one attribute test and one
``write``. Everything runs on the runtime asyncio loop with protocols (not streams): no threads, no ``select()``.

Used three ways:

- standalone (:func:`start_proxy`, ``Start Network Fault Proxy``): a proxy that owns its FaultSet, in front of
  any TCP or UDP address (a test client's link, the system under test's link to its database);
- for HTTP fleets (:class:`UpstreamProxies`): one :class:`TcpProxy` per upstream address that aiohttp dials,
  sharing the fleet's FaultSet (aiohttp's connector maps the address to the proxy, so URL, ``Host`` and TLS
  SNI are unchanged; see :mod:`iotix.transport.http_pool`);
- for Kafka fleets (:class:`SocksProxy`): one SOCKS5 listener per producer pool, given to kafka-python as its
  documented ``proxy_url``: every broker connection (bootstrap and the brokers metadata names) says where it
  goes, so no broker address has to be known in advance and nothing of kafka-python is patched.

What the other side sees is what it would see on a real network (as far as user space allows):

- ``act("reset")`` (a ``reset`` fault, a limit, an outage in mode reset) ends both sockets with an RST
  (``SO_LINGER`` 0, then close); ``act("close")`` with a FIN each.
- An outage in mode ``refuse`` closes the listening socket, so a new connect gets a real ``ECONNREFUSED``;
  the port is bound again at ``bring_up``. The proxy learns of outages through the FaultSet's ``on_change``
  callbacks.
- Mode ``blackhole`` (and a blackhole fault, for new connections): the connection is accepted and then gets
  nothing. The kernel completes the TCP handshake before the proxy can decide, so a connect succeeds and then
  hangs: a SYN that goes unanswered needs root (a packet filter). What the client sends is read and dropped,
  so a client that gives up frees the socket.
- An upstream that cannot be reached: the client's connection is reset (a standalone proxy accepted it before
  it knew) and counted in ``stats['upstream_failures']``. Where the client asks first, the failure is the real
  one: :meth:`TcpProxy.preconnect` (HTTP) makes the connection upstream before the client dials the proxy, so
  the client's connect fails with the upstream's own error; a SOCKS client gets the SOCKS reply for it
  (``connection refused``, ``host unreachable``), which kafka-python turns into ``ECONNREFUSED``, unless the
  connect takes longer than :data:`SOCKS_REPLY_WAIT_S` (kafka-python busy-polls for the reply): then the reply
  is yes and a later failure resets the connection.

Not shaped: the TCP handshakes themselves (latency acts on the bytes of a connection, not on its SYN); the
proxy adds its loopback hop (two syscalls per chunk and direction) to every connection through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import secrets
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from iotix.fault.faultset import Conduit, FaultSet
from iotix.fault.spec import FaultError

log = logging.getLogger("iotix.fault.proxy")

#: A pipe that holds more than this many bytes (latency, bandwidth, a blackhole) pauses the side that feeds it,
#: so the sender meets TCP's back-pressure instead of the pipe's 4 MiB bound; reading resumes below LOW.
HIGH_BACKLOG = 256 * 1024
LOW_BACKLOG = 64 * 1024
#: Upstream connections are given up after this long (the client then sees a reset or a SOCKS failure).
CONNECT_TIMEOUT_S = 10.0
#: A connection made upstream ahead of its client (:meth:`TcpProxy.preconnect`) waits this long to be paired.
PREPARED_TTL_S = 10.0
#: Once both ends have sent their EOF, a relay whose last bytes are still held (a blackhole toward a client that
#: may have closed for good) is closed this long afterwards: timed-out clients must not pile up sockets.
LINGER_S = 30.0
#: A UDP client address whose flow saw no datagram for this long loses its upstream socket.
UDP_IDLE_S = 60.0
UDP_SWEEP_S = 10.0
#: Datagrams that wait for a new flow's upstream socket (a bound: more are dropped and counted).
UDP_PENDING = 256
#: A SOCKS client gets its reply when the upstream connection is made, or after this long (then a failure that
#: comes later resets the connection instead of a SOCKS error reply).
SOCKS_REPLY_WAIT_S = 0.25

_LINGER_RST = struct.pack("ii", 1, 0)

# Why a side's reading is paused (bits): the other socket's write buffer is full, the pipe holds too much, the
# upstream connection is not made yet.
_BUFFER = 1
_BACKLOG = 2
_CONNECT = 4


def parse_upstream(upstream: Any, what: str = "upstream") -> tuple[str, int]:
    """``'host:port'`` (``'[::1]:5683'`` for IPv6) as ``(host, port)``; a :class:`FaultError` otherwise."""
    text = str(upstream or "").strip()
    host, sep, port_text = text.rpartition(":")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise FaultError(
            f"{what} must be 'host:port' with a port between 1 and 65535 (IPv6 as '[::1]:port'), got {upstream!r}."
        )
    return host, int(port_text)


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET


def reset_transport(transport: asyncio.BaseTransport | None) -> None:
    """Close ``transport`` with an RST (``SO_LINGER`` 0): what a peer sees from a reset connection."""
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    transport.abort()  # type: ignore[attr-defined]


def _bind(host: str, port: int, kind: socket.SocketKind) -> socket.socket:
    """A bound (and for TCP listening) non-blocking socket; OSError as the kernel says."""
    sock = socket.socket(_family(host), kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _FaultWatch:
    """Calls ``changed`` when the FaultSet changes (an outage starts or ends), and once at the start.

    Through the FaultSet's ``on_change`` callbacks.
    """

    def __init__(self, faults: FaultSet, changed: Callable[[], None]) -> None:
        self.changed = changed
        self.hooks = faults.on_change
        self.hooks.append(changed)
        changed()

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.hooks.remove(self.changed)


# --- TCP --------------------------------------------------------------------------------------------------


class _Reader:
    """One socket's reading, paused while any reason (bits) holds."""

    __slots__ = ("paused", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.paused = 0

    def pause(self, why: int) -> None:
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self.paused |= why

    def resume(self, why: int) -> None:
        if self.paused & why:
            self.paused &= ~why
            if not self.paused and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()


class _Upstream(asyncio.Protocol):
    """The upstream socket of a relayed connection: forwards its events to the relay (None while prepared)."""

    def __init__(self, relay: _Relay | None = None) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.relay is None:  # made ahead of its client: nothing is read until it is paired
            self.transport.pause_reading()  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        down = relay.down  # type: ignore[union-attr]
        if down.idle:
            relay.client.write(data)  # type: ignore[union-attr]
        else:
            down.push(data)
            if down.backlog() > HIGH_BACKLOG:
                relay.ur.pause(_BACKLOG)  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        if self.relay is not None:
            self.relay.upstream_eof()
        return True

    def pause_writing(self) -> None:
        if self.relay is not None:
            self.relay.cr.pause(_BUFFER)

    def resume_writing(self) -> None:
        if self.relay is not None:
            self.relay.cr.resume(_BUFFER)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.relay is not None:
            self.relay.upstream_lost(exc)


class _Hung(asyncio.Protocol):
    """An accepted connection that gets nothing (blackhole): reads and drops, closes when the client gives up."""

    def __init__(self, proxy: TcpProxy, transport: asyncio.Transport) -> None:
        self.proxy = proxy
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.proxy.stats["bytes_blackholed"] += len(data)

    def eof_received(self) -> bool:
        return False  # the client closed: close ours (it would never have been answered)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.proxy._hung.discard(self)


class _Relay(asyncio.Protocol):
    """One relayed connection; it is the client socket's protocol, :class:`_Upstream` the upstream one's."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.conduit: Conduit | None = None
        self.up: Any = None  # conduit.up: client -> upstream
        self.down: Any = None  # conduit.down: upstream -> client
        self.cr = _Reader()  # the client socket's reading
        self.ur = _Reader()  # the upstream socket's reading
        self.eof_up = False  # EOF delivered upstream (write_eof)
        self.eof_down = False  # EOF delivered to the client
        self.client_eof = False  # EOF received from the client
        self.upstream_eof_seen = False  # EOF received from upstream
        self._linger: asyncio.TimerHandle | None = None
        self.closed = False
        self.upstream_addr: tuple[str, int] | None = proxy.upstream_addr
        self._connecting: asyncio.Task[None] | None = None
        self._check_pending = False

    # -- opening ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client = self.cr.transport = transport  # type: ignore[assignment]
        if self.proxy._admit(self, transport):  # type: ignore[arg-type]
            self.open()

    def open(self) -> None:
        """Attach to the faults and connect upstream (or take a connection made ahead); the client waits."""
        proxy = self.proxy
        proxy._relays.add(self)
        self.conduit = proxy.faults.attach(None, up=self._deliver_up, down=self._deliver_down, act=self.act)
        self.up, self.down = self.conduit.up, self.conduit.down
        self.cr.pause(_CONNECT)
        prepared = proxy._take_prepared()
        if prepared is not None:
            self._paired(prepared)
            return
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        proxy = self.proxy
        host, port = self.upstream_addr  # type: ignore[misc]
        loop = asyncio.get_running_loop()
        try:
            _, side = await asyncio.wait_for(
                loop.create_connection(lambda: _Upstream(self), host, port), proxy.connect_timeout
            )
        except asyncio.CancelledError:
            raise
        except (OSError, TimeoutError) as err:
            proxy._upstream_failed(host, port, err)
            self.connect_failed(err)
            return
        finally:
            self._connecting = None
        if self.closed:
            reset_transport(side.transport)
            return
        self.connected(side)

    def _paired(self, side: _Upstream) -> None:
        side.relay = self
        self.connected(side)
        side.transport.resume_reading()  # type: ignore[union-attr]

    def connected(self, side: _Upstream) -> None:
        """The upstream connection is made: relay."""
        self.upstream = self.ur.transport = side.transport
        self.cr.resume(_CONNECT)

    def connect_failed(self, err: BaseException) -> None:
        """The upstream cannot be reached: the client's connection is reset, as a real failure would."""
        self.end(reset=True)

    # -- client -> upstream -------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        up = self.up
        if up.idle:
            self.upstream.write(data)  # type: ignore[union-attr]
        else:
            up.push(data)
            if up.backlog() > HIGH_BACKLOG:
                self.cr.pause(_BACKLOG)

    def eof_received(self) -> bool:
        up = self.up
        if up is None:
            return False
        self.client_eof = True
        self._both_eofs()
        if up.idle:
            self._deliver_up(b"")
        else:
            up.push_eof()
        return True

    def _deliver_up(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is None or upstream.is_closing():
            return
        if data:
            upstream.write(data)
        else:
            if upstream.can_write_eof():
                upstream.write_eof()
            self.eof_up = True
            self._maybe_done()
        if self.cr.paused & _BACKLOG:
            self._schedule_check()

    # -- upstream -> client -------------------------------------------------------------------------------

    def upstream_eof(self) -> None:
        self.upstream_eof_seen = True
        self._both_eofs()
        down = self.down
        if down.idle:
            self._deliver_down(b"")
        else:
            down.push_eof()

    def _deliver_down(self, data: bytes) -> None:
        client = self.client
        if client is None or client.is_closing():
            return
        if data:
            client.write(data)
        else:
            if client.can_write_eof():
                client.write_eof()
            self.eof_down = True
            self._maybe_done()
        if self.ur.paused & _BACKLOG:
            self._schedule_check()

    # -- flow control -------------------------------------------------------------------------------------

    def pause_writing(self) -> None:  # the client's write buffer is full: stop reading upstream
        self.ur.pause(_BUFFER)

    def resume_writing(self) -> None:
        self.ur.resume(_BUFFER)

    def _schedule_check(self) -> None:
        if not self._check_pending:
            self._check_pending = True
            asyncio.get_running_loop().call_soon(self._check_backlog)

    def _check_backlog(self) -> None:
        """Resume a side paused for its pipe's backlog once the pipe has drained below LOW_BACKLOG."""
        self._check_pending = False
        if self.closed:
            return
        if self.cr.paused & _BACKLOG and self.up.backlog() <= LOW_BACKLOG:
            self.cr.resume(_BACKLOG)
        if self.ur.paused & _BACKLOG and self.down.backlog() <= LOW_BACKLOG:
            self.ur.resume(_BACKLOG)

    # -- ending -------------------------------------------------------------------------------------------

    def act(self, action: str) -> None:
        """The faults end the connection: ``reset`` (RST both ways) or ``close`` (FIN both ways)."""
        if self.closed:
            return
        if action == "reset":
            self.proxy.stats["connections_reset"] += 1
            self.end(reset=True)
        else:
            self.proxy.stats["connections_closed"] += 1
            self.end(reset=False)

    def _both_eofs(self) -> None:
        if self.client_eof and self.upstream_eof_seen and self._linger is None and not self.closed:
            self._linger = asyncio.get_running_loop().call_later(LINGER_S, self.end, False)

    def _maybe_done(self) -> None:
        if self.eof_up and self.eof_down:
            self.end(reset=False)

    def connection_lost(self, exc: BaseException | None) -> None:
        """The client's socket is gone: reset upstream when the client reset (or failed), else it was us."""
        if not self.closed:
            self.end(reset=exc is not None)

    def upstream_lost(self, exc: BaseException | None) -> None:
        if not self.closed:
            self.end(reset=exc is not None)

    def end(self, reset: bool = False) -> None:
        """Close both sockets (RST or FIN), cancel the connect, leave the faults."""
        if self.closed:
            return
        self.closed = True
        if self._linger is not None:
            self._linger.cancel()
        for transport in (self.client, self.upstream):
            if transport is None:
                continue
            if reset:
                reset_transport(transport)
            elif not transport.is_closing():
                transport.close()
        if self._connecting is not None:
            self._connecting.cancel()
        if self.conduit is not None:
            self.conduit.detach()
        self.proxy._relays.discard(self)


class _ProxyBase:
    """What the TCP and UDP proxies share: the upstream, the listening socket and its life through outages
    (closed in a refuse-mode outage so clients meet a real refusal, bound again on the same port after it)."""

    protocol = ""
    #: SOCK_STREAM or SOCK_DGRAM: the listening socket's type
    socket_type: socket.SocketKind

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        upstream: tuple[str, int] | None,
        faults: FaultSet,
        *,
        name: str,
        listen_host: str,
        owns_faults: bool,
    ) -> None:
        self.loop = loop
        self.upstream_addr = upstream
        self.faults = faults
        self.name = name
        self.host = listen_host
        self.port = 0
        self.owns_faults = owns_faults
        self.stats: dict[str, int] = {}
        #: the last upstream failure, in words (None until one happens)
        self.last_upstream_error: str | None = None
        self._reopening: asyncio.Task[None] | None = None
        self._closed = False
        self._watch: _FaultWatch | None = None

    @property
    def upstream(self) -> str:
        """``host:port`` the proxy relays to ("" for a SOCKS proxy: its clients name it)."""
        if self.upstream_addr is None:
            return ""
        host, port = self.upstream_addr
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def listening(self) -> bool:
        """Whether the listening socket is open (False during a refuse-mode outage and after close)."""
        raise NotImplementedError

    @property
    def connections(self) -> int:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "protocol": self.protocol,
            "host": self.host,
            "port": self.port,
            "upstream": self.upstream,
            "listening": self.listening,
            "connections": self.connections,
            **self.stats,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.host}:{self.port} -> {self.upstream or 'SOCKS'})"

    async def start(self, port: int = 0) -> None:
        """Listen on ``listen_host:port`` (0: a free port); an OSError when the port cannot be bound."""
        sock = _bind(self.host, port, self.socket_type)
        self.port = sock.getsockname()[1]
        await self._serve(sock)
        self._watch = _FaultWatch(self.faults, self._faults_changed)

    async def _serve(self, sock: socket.socket) -> None:
        """Start serving on the bound ``sock``; close it when that fails."""
        raise NotImplementedError

    def _stop_listening(self) -> None:
        raise NotImplementedError

    def _faults_changed(self) -> None:
        """The FaultSet changed: close the listening socket in a refuse-mode outage, reopen it afterwards."""
        if self._closed:
            return
        refuse = self.faults.outage == "refuse"
        if refuse and self.listening:
            log.info("fault proxy %s: refusing (port %d closed)", self.name, self.port)
            self._stop_listening()
        elif not refuse and not self.listening and self._reopening is None and self.port:
            self._reopening = self.loop.create_task(self._reopen())

    async def _reopen(self) -> None:
        try:
            sock = _bind(self.host, self.port, self.socket_type)
        except OSError as err:
            log.error(
                "fault proxy %s: cannot listen on %s:%d again after the outage: %s",
                self.name,
                self.host,
                self.port,
                err,
            )
            return
        finally:
            self._reopening = None
        if self._closed or self.faults.outage == "refuse":
            sock.close()
            return
        await self._serve(sock)
        if self._closed or self.faults.outage == "refuse":  # it changed while the server started
            self._stop_listening()
            return
        log.info("fault proxy %s: accepting again on port %d", self.name, self.port)

    def _close_base(self) -> bool:
        """The first part of ``close``: False when already closed."""
        if self._closed:
            return False
        self._closed = True
        if self._watch is not None:
            self._watch.close()
        self._stop_listening()
        if self._reopening is not None:
            self._reopening.cancel()
        return True


class TcpProxy(_ProxyBase):
    """A TCP relay on the runtime loop in front of one upstream address, through a FaultSet (module docstring).

    ``faults`` is the target's FaultSet (a fleet's, or the proxy's own when ``owns_faults``: then
    :meth:`close` closes it too). Create with :func:`start_proxy` (standalone) or :meth:`start` after the
    constructor. ``stats`` counts connections accepted, reset, closed by a fault, refused, blackholed, and
    upstream failures.
    """

    protocol = "tcp"
    socket_type = socket.SOCK_STREAM
    relay_class: type[_Relay] = _Relay

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        upstream: tuple[str, int] | None,
        faults: FaultSet,
        *,
        name: str,
        listen_host: str = "127.0.0.1",
        owns_faults: bool = False,
        connect_timeout: float = CONNECT_TIMEOUT_S,
    ) -> None:
        super().__init__(loop, upstream, faults, name=name, listen_host=listen_host, owns_faults=owns_faults)
        self.connect_timeout = connect_timeout
        self.stats = {
            "connections_accepted": 0,
            "connections_reset": 0,
            "connections_closed": 0,
            "connections_refused": 0,
            "connections_blackholed": 0,
            "upstream_failures": 0,
            "bytes_blackholed": 0,
        }
        self._server: asyncio.AbstractServer | None = None
        self._relays: set[_Relay] = set()
        self._hung: set[_Hung] = set()
        self._prepared: deque[tuple[_Upstream, float]] = deque()
        self._prepared_timer: asyncio.TimerHandle | None = None

    # -- properties -----------------------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        """Whether the listening socket is open (False during a refuse-mode outage and after close)."""
        return self._server is not None

    @property
    def connections(self) -> int:
        """Connections open through the proxy now (relayed, connecting or held by a blackhole)."""
        return len(self._relays) + len(self._hung)

    def descriptors(self) -> int:
        """Sockets the proxy holds now: its listening socket, two per relayed connection, one per held one."""
        return int(self._server is not None) + 2 * len(self._relays) + len(self._hung) + len(self._prepared)

    # -- lifecycle ------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the listening socket and every connection through the proxy (and the FaultSet when owned)."""
        if not self._close_base():
            return
        for relay in list(self._relays):
            relay.end(reset=True)
        for hung in list(self._hung):
            hung.transport.abort()
        self._hung.clear()
        while self._prepared:
            side, _ = self._prepared.popleft()
            if side.transport is not None:
                side.transport.abort()
        if self._prepared_timer is not None:
            self._prepared_timer.cancel()
        if self.owns_faults:
            self.faults.close()

    # -- admission and outages ------------------------------------------------------------------------------

    def _refuse(self, transport: asyncio.Transport, mode: str) -> None:
        """Reset an accepted connection: mode "reset", or "refuse" in the moment before the listening socket
        closes (the nearest to a refusal once the kernel accepted)."""
        self.stats["connections_refused" if mode == "refuse" else "connections_reset"] += 1
        reset_transport(transport)
        if mode == "refuse":
            self._faults_changed()

    def _admit(self, relay: _Relay, transport: asyncio.Transport) -> bool:
        """A connection was accepted: whether it is relayed (else it was reset, or is held by a blackhole)."""
        self.stats["connections_accepted"] += 1
        mode = self.faults.admission(None)
        if mode is None:
            return True
        if mode == "blackhole":
            self.stats["connections_blackholed"] += 1
            hung = _Hung(self, transport)
            transport.set_protocol(hung)
            self._hung.add(hung)
            return False
        self._refuse(transport, mode)
        return False

    def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    async def _serve(self, sock: socket.socket) -> None:
        try:
            self._server = await self.loop.create_server(lambda: self.relay_class(self), sock=sock)
        except BaseException:
            sock.close()
            raise

    # -- upstream -------------------------------------------------------------------------------------------

    async def preconnect(self, timeout: float | None = None) -> None:
        """Connect upstream now, for the next client that connects to the proxy.

        A client that asks the proxy for its route first (the HTTP connector) calls this before it dials the
        proxy: an upstream that refuses or cannot be reached then fails the client's connect with the
        upstream's own error (an OSError raised here), as a direct connect would, instead of an accepted
        connection that is reset. Nothing is made while admission is not None (an outage, a blackhole): the
        accept then decides what the client sees.
        """
        if self.faults.admission(None, count=False) is not None or self.upstream_addr is None:
            return
        host, port = self.upstream_addr
        try:
            _, side = await asyncio.wait_for(
                self.loop.create_connection(_Upstream, host, port), timeout or self.connect_timeout
            )
        except (OSError, TimeoutError) as err:
            self._upstream_failed(host, port, err)
            raise
        if self._closed:
            side.transport.abort()  # type: ignore[union-attr]
            return
        self._prepared.append((side, self.loop.time() + PREPARED_TTL_S))
        if self._prepared_timer is None:
            self._prepared_timer = self.loop.call_later(PREPARED_TTL_S, self._expire_prepared)

    def _take_prepared(self) -> _Upstream | None:
        now = self.loop.time()
        prepared = self._prepared
        while prepared:
            side, expires = prepared.popleft()
            transport = side.transport
            if transport is not None and not transport.is_closing() and expires > now:
                return side
            if transport is not None:
                transport.abort()
        return None

    def _expire_prepared(self) -> None:
        self._prepared_timer = None
        now = self.loop.time()
        prepared = self._prepared
        while prepared and prepared[0][1] <= now:
            side, _ = prepared.popleft()
            if side.transport is not None:
                side.transport.abort()
        if prepared:
            self._prepared_timer = self.loop.call_at(prepared[0][1], self._expire_prepared)

    def _upstream_failed(self, host: str, port: int, err: BaseException) -> None:
        self.stats["upstream_failures"] += 1
        why = "no answer within the connect timeout" if isinstance(err, TimeoutError) else str(err) or repr(err)
        self.last_upstream_error = f"cannot connect to {host}:{port}: {why}"
        log.debug("fault proxy %s: %s", self.name, self.last_upstream_error)


# --- SOCKS5 (Kafka) ---------------------------------------------------------------------------------------

_SOCKS_OK = 0
_SOCKS_FAILURE = 1
_SOCKS_NET_UNREACHABLE = 3
_SOCKS_HOST_UNREACHABLE = 4
_SOCKS_REFUSED = 5
_SOCKS_BAD_COMMAND = 7
_SOCKS_BAD_ADDRESS = 8


def _socks_reply(code: int) -> bytes:
    return bytes((5, code, 0, 1, 0, 0, 0, 0, 0, 0))


def _socks_code(err: BaseException) -> int:
    if isinstance(err, ConnectionRefusedError):
        return _SOCKS_REFUSED
    if isinstance(err, (socket.gaierror, TimeoutError)):
        return _SOCKS_HOST_UNREACHABLE
    if isinstance(err, OSError) and err.errno == errno.ENETUNREACH:
        return _SOCKS_NET_UNREACHABLE
    if isinstance(err, OSError) and err.errno == errno.EHOSTUNREACH:
        return _SOCKS_HOST_UNREACHABLE
    return _SOCKS_FAILURE


class _SocksRelay(_Relay):
    """A relayed connection whose upstream the client names in a SOCKS5 handshake (RFC 1928, RFC 1929 login)."""

    def __init__(self, proxy: TcpProxy) -> None:
        super().__init__(proxy)
        self._hs: bytearray | None = bytearray()  # handshake bytes; None once relaying
        self._stage = 0  # 0 greeting, 1 login, 2 request, 3 connecting
        self._mode: str | None = None  # admission at accept
        self._replied = False  # the SOCKS reply went out
        self._early: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client = self.cr.transport = transport  # type: ignore[assignment]
        self.proxy.stats["connections_accepted"] += 1
        self._mode = mode = self.proxy.faults.admission(None)  # once per connection: admission counts
        if mode in ("reset", "refuse"):
            self.proxy._refuse(transport, mode)  # type: ignore[arg-type]
            self.closed = True
        else:
            self.proxy._relays.add(self)  # closed with the proxy while its handshake is still going on

    def data_received(self, data: bytes) -> None:
        if self._hs is None:
            super().data_received(data)
            return
        self._hs += data
        try:
            self._handshake()
        except ValueError as err:
            log.debug("fault proxy %s: bad SOCKS5 handshake: %s", self.proxy.name, err)
            self.closed = True
            if self.client is not None:
                self.client.close()

    def eof_received(self) -> bool:
        if self._hs is not None:
            return False  # the client left during the handshake
        return super().eof_received()

    def _handshake(self) -> None:
        buf = self._hs
        assert buf is not None and self.client is not None
        proxy: SocksProxy = self.proxy  # type: ignore[assignment]
        if self._stage == 0:  # VER NMETHODS METHODS
            if len(buf) < 2 or len(buf) < 2 + buf[1]:
                return
            if buf[0] != 5:
                raise ValueError(f"version {buf[0]}")
            methods = bytes(buf[2 : 2 + buf[1]])
            del buf[: 2 + buf[1]]
            if 2 not in methods:  # a login is required: the proxy is for this process's own clients
                self.client.write(b"\x05\xff")
                raise ValueError("no username/password method offered")
            self.client.write(b"\x05\x02")
            self._stage = 1
        if self._stage == 1:  # VER ULEN UNAME PLEN PASSWD
            if len(buf) < 2 or len(buf) < 3 + buf[1] or len(buf) < 3 + buf[1] + buf[2 + buf[1]]:
                return
            ulen = buf[1]
            plen = buf[2 + ulen]
            password = bytes(buf[3 + ulen : 3 + ulen + plen])
            del buf[: 3 + ulen + plen]
            if not secrets.compare_digest(password, proxy.token.encode()):
                self.client.write(b"\x01\x01")
                raise ValueError("wrong login")
            self.client.write(b"\x01\x00")
            self._stage = 2
        if self._stage == 2:  # VER CMD RSV ATYP DST.ADDR DST.PORT
            if len(buf) < 5:
                return
            atyp = buf[3]
            if atyp == 1:
                end = 4 + 4
            elif atyp == 4:
                end = 4 + 16
            elif atyp == 3:
                end = 5 + buf[4]
            else:
                self.client.write(_socks_reply(_SOCKS_BAD_ADDRESS))
                raise ValueError(f"address type {atyp}")
            if len(buf) < end + 2:
                return
            if buf[1] != 1:
                self.client.write(_socks_reply(_SOCKS_BAD_COMMAND))
                raise ValueError(f"command {buf[1]} (only CONNECT)")
            if atyp == 1:
                host = socket.inet_ntop(socket.AF_INET, bytes(buf[4:8]))
            elif atyp == 4:
                host = socket.inet_ntop(socket.AF_INET6, bytes(buf[4:20]))
            else:
                host = bytes(buf[5:end]).decode("ascii", "replace")
            port = struct.unpack("!H", buf[end : end + 2])[0]
            del buf[: end + 2]
            self._stage = 3
            self.upstream_addr = (host, port)
            proxy.upstreams[f"{host}:{port}"] = proxy.upstreams.get(f"{host}:{port}", 0) + 1
            if self._mode == "blackhole":
                # the handshake is local; the connection it opens gets nothing
                self.client.write(_socks_reply(_SOCKS_OK))
                self.proxy._admit(self, self.client)
                self.closed = True
                return
            self.open()
            if not self.closed and self.upstream is None:
                self._early = asyncio.get_running_loop().call_later(SOCKS_REPLY_WAIT_S, self._reply_early)

    def _reply_early(self) -> None:
        """The upstream connect takes long (a broker that drops SYNs): say yes now, as a plain TCP proxy does,
        and reset the connection if it fails. kafka-python polls for the SOCKS reply in a busy loop, so the
        wait must stay short; a refused or local upstream answers well within it, and gets its real reply."""
        self._early = None
        if not self.closed and not self._replied and self.client is not None:
            self._replied = True
            self.client.write(_socks_reply(_SOCKS_OK))

    def connected(self, side: _Upstream) -> None:
        assert self.client is not None
        if self._early is not None:
            self._early.cancel()
            self._early = None
        if not self._replied:
            self._replied = True
            self.client.write(_socks_reply(_SOCKS_OK))
        rest, self._hs = bytes(self._hs or b""), None
        super().connected(side)
        if rest:  # bytes the client sent before the reply (it should not)
            self.data_received(rest)

    def connect_failed(self, err: BaseException) -> None:
        """The broker cannot be reached: the SOCKS reply says why (kafka-python reports ECONNREFUSED); after an
        early yes, the connection is reset."""
        if self._early is not None:
            self._early.cancel()
            self._early = None
        if self._replied:
            self.end(reset=True)
            return
        if self.client is not None and not self.client.is_closing():
            self.client.write(_socks_reply(_socks_code(err)))
        self.end(reset=False)


class SocksProxy(TcpProxy):
    """A SOCKS5 listener that relays each connection to the address its client names, through the FaultSet.

    For kafka-python (its documented ``proxy_url``): bootstrap servers and every broker address from metadata
    go through it without being known in advance. The handshake is answered by the proxy itself (not shaped by
    the faults); a login with a random per-proxy password keeps other local processes from using it as an open
    relay. ``upstreams`` counts connections per address asked for.
    """

    relay_class = _SocksRelay

    def __init__(self, loop: asyncio.AbstractEventLoop, faults: FaultSet, *, name: str, **kwargs: Any) -> None:
        super().__init__(loop, None, faults, name=name, **kwargs)
        self.token = secrets.token_hex(16)
        self.upstreams: dict[str, int] = {}

    @property
    def url(self) -> str:
        """kafka-python's ``proxy_url``: ``socks5h`` (the proxy resolves broker names) with the login."""
        return f"socks5h://iotix:{self.token}@{self.host}:{self.port}"

    def _admit(self, relay: _Relay, transport: asyncio.Transport) -> bool:
        # Only called for a blackhole after the handshake (reset/refuse are handled at accept).
        self.stats["connections_blackholed"] += 1
        hung = _Hung(self, transport)
        transport.set_protocol(hung)
        self._hung.add(hung)
        return False

    async def preconnect(self, timeout: float | None = None) -> None:
        return None  # the client names its upstream in the handshake


# --- UDP --------------------------------------------------------------------------------------------------


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, proxy: UdpProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.proxy._from_client(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.proxy.stats["client_errors"] += 1


class _UdpFlow(asyncio.DatagramProtocol):
    """One client address: its own upstream socket and conduit (so upstream answers find their client)."""

    def __init__(self, proxy: UdpProxy, addr: Any) -> None:
        self.proxy = proxy
        self.addr = addr
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] | None = []  # datagrams waiting for the upstream socket
        self.last = proxy.loop.time()
        self.closed = False
        self.conduit = proxy.faults.attach(None, up=self._deliver_up, down=self._deliver_down, act=self.act)
        self.up = self.conduit.up
        self.down = self.conduit.down
        self._opening: asyncio.Task[None] | None = proxy.loop.create_task(self._open())

    async def _open(self) -> None:
        proxy = self.proxy
        host, port = proxy.upstream_addr
        try:
            await proxy.loop.create_datagram_endpoint(lambda: self, remote_addr=(host, port))
        except OSError as err:
            proxy.stats["upstream_failures"] += 1
            proxy.last_upstream_error = f"cannot open a UDP socket to {host}:{port}: {err}"
            log.debug("fault proxy %s: %s", proxy.name, proxy.last_upstream_error)
            self.close()
        finally:
            self._opening = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.closed:
            transport.close()
            return
        pending, self.pending = self.pending, None
        for data in pending or ():
            self.transport.sendto(data)  # type: ignore[union-attr]

    def _deliver_up(self, data: bytes) -> None:
        if not data or self.closed:
            return
        transport = self.transport
        if transport is not None:
            transport.sendto(data)
        elif self.pending is not None and len(self.pending) < UDP_PENDING:
            self.pending.append(data)
        else:
            self.proxy.stats["datagrams_dropped"] += 1

    def datagram_received(self, data: bytes, addr: Any) -> None:  # from upstream
        self.last = self.proxy.loop.time()
        down = self.down
        if down.idle:
            self._deliver_down(data)
        else:
            down.push(data)

    def _deliver_down(self, data: bytes) -> None:
        listener = self.proxy._transport
        if data and listener is not None and not self.closed:
            listener.sendto(data, self.addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP from upstream (port unreachable: ECONNREFUSED): user space cannot pass it on to the client
        self.proxy.stats["upstream_failures"] += 1
        self.proxy.last_upstream_error = f"{self.proxy.upstream}: {exc}"

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def act(self, action: str) -> None:
        """A fault ends the flow (reset, limit): its upstream socket closes; the next datagram starts anew."""
        self.proxy.stats["connections_reset" if action == "reset" else "connections_closed"] += 1
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.proxy.flows.get(self.addr) is self:
            del self.proxy.flows[self.addr]
        self.conduit.detach()
        if self._opening is not None:
            self._opening.cancel()
        if self.transport is not None:
            self.transport.close()


class UdpProxy(_ProxyBase):
    """A UDP relay in front of one upstream address: an upstream socket per client address (expiring after
    ``UDP_IDLE_S`` without traffic), datagrams through the FaultSet (``datagram=True``).

    A refuse-mode outage closes the listening socket, so a client's datagrams meet ICMP port unreachable (a
    connected UDP socket reports ``ECONNREFUSED``); blackhole and reset drop the datagrams of new clients.
    """

    protocol = "udp"
    socket_type = socket.SOCK_DGRAM

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        upstream: tuple[str, int],
        faults: FaultSet,
        *,
        name: str,
        listen_host: str = "127.0.0.1",
        owns_faults: bool = False,
        idle_s: float = UDP_IDLE_S,
    ) -> None:
        super().__init__(loop, upstream, faults, name=name, listen_host=listen_host, owns_faults=owns_faults)
        self.idle_s = idle_s
        self.flows: dict[Any, _UdpFlow] = {}
        self.stats = {
            "flows_opened": 0,
            "flows_expired": 0,
            "connections_reset": 0,
            "connections_closed": 0,
            "datagrams_refused": 0,
            "datagrams_dropped": 0,
            "upstream_failures": 0,
            "client_errors": 0,
        }
        self._transport: asyncio.DatagramTransport | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def listening(self) -> bool:
        return self._transport is not None

    @property
    def connections(self) -> int:
        """Client addresses with an upstream socket now."""
        return len(self.flows)

    def descriptors(self) -> int:
        return int(self._transport is not None) + len(self.flows)

    async def start(self, port: int = 0) -> None:
        await super().start(port)
        self._sweeper = self.loop.call_later(UDP_SWEEP_S, self._sweep)

    async def _serve(self, sock: socket.socket) -> None:
        try:
            transport, _ = await self.loop.create_datagram_endpoint(lambda: _UdpListener(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        self._transport = transport

    def _stop_listening(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    def _from_client(self, data: bytes, addr: Any) -> None:
        flow = self.flows.get(addr)
        if flow is None:
            if self.faults.admission(None) is not None:  # an outage, a blackhole: a new client gets nothing
                self.stats["datagrams_refused"] += 1
                return
            flow = self.flows[addr] = _UdpFlow(self, addr)
            self.stats["flows_opened"] += 1
        flow.last = self.loop.time()
        up = flow.up
        if up.idle:
            flow._deliver_up(data)
        else:
            up.push(data)

    def _sweep(self) -> None:
        """Close the flows that saw nothing for ``idle_s`` (both directions count)."""
        deadline = self.loop.time() - self.idle_s
        for flow in [f for f in self.flows.values() if f.last < deadline]:
            self.stats["flows_expired"] += 1
            flow.close()
        if not self._closed:
            self._sweeper = self.loop.call_later(UDP_SWEEP_S, self._sweep)

    def close(self) -> None:
        if not self._close_base():
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
        for flow in list(self.flows.values()):
            flow.close()
        if self.owns_faults:
            self.faults.close()


# --- factories --------------------------------------------------------------------------------------------


async def start_proxy(
    loop: asyncio.AbstractEventLoop,
    upstream: str,
    *,
    protocol: str = "tcp",
    name: str,
    listen_host: str = "127.0.0.1",
    listen_port: int = 0,
    seed: int | str | None = None,
) -> TcpProxy | UdpProxy:
    """A standalone fault proxy (``Start Network Fault Proxy``) with a FaultSet of its own (``proxy.faults``,
    target ``proxy '<name>'``), listening on ``listen_host:listen_port`` (0: a free port).

    Raises :class:`FaultError` naming the proxy for a bad upstream, protocol, name or port, or a port that
    cannot be bound (taken).
    """
    what = f"Network fault proxy '{name}'"
    if not str(name or "").strip():
        raise FaultError("Network fault proxy: name= must not be empty (faults are added to a proxy by its name).")
    kind = str(protocol or "").strip().lower()
    if kind not in ("tcp", "udp"):
        raise FaultError(f"{what}: protocol must be tcp or udp, got {protocol!r}.")
    addr = parse_upstream(upstream, f"{what}: upstream")
    if isinstance(listen_port, bool) or not isinstance(listen_port, int) or not 0 <= listen_port <= 65535:
        raise FaultError(f"{what}: listen port must be 0 (a free port) or 1-65535, got {listen_port!r}.")
    faults = FaultSet(loop, f"proxy '{name}'", datagram=kind == "udp", per_device=False, seed=seed)
    proxy: TcpProxy | UdpProxy
    if kind == "udp":
        proxy = UdpProxy(loop, addr, faults, name=name, listen_host=listen_host, owns_faults=True)
    else:
        proxy = TcpProxy(loop, addr, faults, name=name, listen_host=listen_host, owns_faults=True)
    try:
        await proxy.start(listen_port)
    except OSError as err:
        proxy.close()
        why = err.strerror or str(err)
        hint = " (the port is taken: give another port, or 0 for a free one)" if err.errno == errno.EADDRINUSE else ""
        raise FaultError(f"{what}: cannot listen on {listen_host}:{listen_port}: {why}{hint}.") from None
    except BaseException:
        proxy.close()
        raise
    return proxy


async def start_socks_proxy(
    loop: asyncio.AbstractEventLoop, faults: FaultSet, *, name: str, listen_host: str = "127.0.0.1"
) -> SocksProxy:
    """A :class:`SocksProxy` on a free port, relaying through ``faults`` (which it does not own)."""
    proxy = SocksProxy(loop, faults, name=name, listen_host=listen_host)
    await proxy.start(0)
    return proxy


class UpstreamProxies:
    """The TCP proxies of one client that dials several upstream addresses (an HTTP fleet): one per address,
    created on first use, all through the same FaultSet.

    :meth:`route` returns where to connect instead of ``(host, port)``, after making the upstream connection
    ahead (:meth:`TcpProxy.preconnect`), so a refused upstream fails the caller's connect with its own error.
    """

    def __init__(self, faults: FaultSet, *, name: str, listen_host: str = "127.0.0.1") -> None:
        self.faults = faults
        self.name = name
        self.listen_host = listen_host
        self.proxies: dict[tuple[str, int], TcpProxy] = {}
        self._starting: dict[tuple[str, int], asyncio.Future[TcpProxy]] = {}

    async def proxy_for(self, host: str, port: int) -> TcpProxy:
        """The proxy in front of ``host:port`` (started on first use; concurrent callers share the start)."""
        key = (host, port)
        proxy = self.proxies.get(key)
        if proxy is not None:
            return proxy
        starting = self._starting.get(key)
        if starting is None:
            starting = self._starting[key] = asyncio.ensure_future(self._start(key))
        try:
            return await asyncio.shield(starting)
        finally:
            if starting.done() and self._starting.get(key) is starting:
                del self._starting[key]

    async def _start(self, key: tuple[str, int]) -> TcpProxy:
        loop = asyncio.get_running_loop()
        host, port = key
        proxy = TcpProxy(loop, key, self.faults, name=f"{self.name} -> {host}:{port}", listen_host=self.listen_host)
        await proxy.start(0)
        self.proxies[key] = proxy
        return proxy

    async def route(self, host: str, port: int, timeout: float | None = None) -> tuple[str, int]:
        """``(proxy host, proxy port)`` to dial for ``host:port``; an OSError when the upstream cannot be reached.

        During a refuse-mode outage the proxy's port is closed; the refusal is raised here at once, counted by
        the FaultSet and saying that a network fault caused it (the client would otherwise read the proxy's
        own address in the kernel's message).
        """
        proxy = await self.proxy_for(host, port)
        if self.faults.outage == "refuse":
            self.faults.admission(None)  # counts the refused connection on the outage
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused (network fault: target down)")
        await proxy.preconnect(timeout)
        return proxy.host, proxy.port

    def descriptors(self) -> int:
        return sum(p.descriptors() for p in self.proxies.values())

    def describe(self) -> list[dict[str, Any]]:
        return [p.describe() for p in self.proxies.values()]

    def close(self) -> None:
        """Close every proxy (they are made again on next use: a fleet may start again)."""
        for starting in self._starting.values():
            starting.cancel()
        self._starting.clear()
        proxies, self.proxies = self.proxies, {}
        for proxy in proxies.values():
            proxy.close()


__all__ = [
    "CONNECT_TIMEOUT_S",
    "SocksProxy",
    "TcpProxy",
    "UdpProxy",
    "UpstreamProxies",
    "parse_upstream",
    "reset_transport",
    "start_proxy",
    "start_socks_proxy",
]
