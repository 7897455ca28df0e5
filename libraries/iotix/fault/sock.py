"""A connected TCP socket (plain or TLS) routed through one conduit of a fault set: what paho gets as its socket.

:class:`FaultSocket` wraps the ``socket.socket`` or ``ssl.SSLSocket`` that :mod:`iotix.transport.paho_driver`
connected, and paho reads and writes it like any socket. It sits above TLS, so faults act on the plaintext
MQTT stream (MQTT packet faults work over TLS too) and the bytes on the wire follow the same timing.

The fast path: with no fault acting, ``send`` and ``recv`` are one attribute test and the real call. The
benchmark target of the fault layer is at most 15 % more CPU per message with no fault active, which an
extra proxy hop (two more system calls and a loopback delivery per message) could not meet.

With a fault acting:

- ``send`` pushes the bytes into the conduit's up pipe and returns their length. The pipe delivers them when
  they are due and the wrapper writes them to the real socket; what the kernel does not take waits in a
  write buffer, in order. That buffer is retried when the socket is writable, through a writer callback
  that the wrapper *multiplexes* with paho's: asyncio allows one writer callback per file descriptor, so
  the driver registers paho's reader and writer through :meth:`add_reader` / :meth:`add_writer` here, never
  on the loop directly. While the buffer is not empty the descriptor's writer is ours (paho's is kept
  aside and handed back once the buffer is written), and a ``send`` on an idle pipe raises
  ``BlockingIOError`` instead of overtaking the buffer, so paho keeps its own queue (back-pressure).
- ``recv`` serves the bytes that the down pipe delivered; it reads the real socket into the pipe (whole
  chunks, not paho's one-byte reads) and raises ``BlockingIOError`` until bytes are due. When the pipe
  delivers later (a timer), paho's reader is called from the loop (``call_soon``), as a readable socket
  would. The real socket's end (EOF, or an error) goes through the pipe too (``push_eof``): a slow_close
  delays it, a hold (blackhole) keeps it.
- The pipe's actions: ``reset`` closes the real socket with SO_LINGER 0 (an RST to the peer), and paho sees
  ``ConnectionResetError`` on its next read or write; ``close`` shuts the real socket down (a FIN to the
  peer) and paho reads EOF.

Closing during a hold (the partition semantics): a partitioned device's connection stays open but silent,
no FIN and no RST, so the broker's keep-alive expires and it publishes the device's last will. When paho
closes the socket while the up pipe is not idle (its own keep-alive gave up during a blackhole, or bytes
are still delayed), the close goes through the pipe as an EOF: the real socket is closed only when the pipe
delivers it (after the delayed bytes, later by a slow_close, never while a hold keeps it). Until then the
socket is *deferred*: it keeps its descriptor and its conduit (so lifting the hold reaches it). The
fleet ends deferred sockets when it stops (:func:`close_deferred`); a device has at most one deferred socket (a
second one closes the first for real). While a device is cut off it opens no new socket (admission answers
"blackhole" without one), so a partition adds no descriptor; only a reconnect while a closed connection's
delayed bytes (latency, slow_close) are still on their way holds two for that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iotix.fault.pipe import IDLE_PIPE

if TYPE_CHECKING:
    from iotix.fault.faultset import FaultSet

__all__ = ["FaultSocket", "close_deferred", "wrap_socket"]

#: Bytes read from the real socket per ``recv`` while the down pipe is not idle (then pushed whole).
READ_CHUNK = 65536
#: Reads per ``recv`` at most (a TLS socket may hold more decrypted bytes than one read takes).
READ_BURST = 16
#: Write-buffer size above which ``send`` pushes back (raises ``BlockingIOError``) instead of queueing more.
WRITE_HIGH = 1 << 20

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


#: id(fault set) -> {deferred socket: None} (insertion-ordered), see the module docstring
def _raiser(err: BaseException) -> Callable[..., Any]:
    def fail(*args: Any) -> Any:
        raise err

    return fail


def _eof(*args: Any) -> bytes:
    return b""


class FaultSocket:
    """A connected stream socket whose bytes pass one conduit of a fault set (see the module docstring).

    Use from the loop's thread only. ``owner`` is the device id (faults may be chosen per device).
    """

    __slots__ = (
        "_close_when_written",
        "_closed_by_paho",
        "_conduit",
        "_down_eof",
        "_down_error",
        "_faults",
        "_fd",
        "_loop",
        "_owner",
        "_pwriter",
        "_rbuf",
        "_reader",
        "_reading",
        "_real",
        "_real_ended",
        "_recv",
        "_send",
        "_up_eof",
        "_wake_pending",
        "_wbuf",
        "_writer_mine",
        "down",
        "tls",
        "up",
        "wrapped",
    )

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        #: the real socket (``ssl.SSLSocket`` for TLS); kept after the real close for ``repr`` only
        self.wrapped = sock
        self.tls = isinstance(sock, ssl.SSLSocket)
        self._real: socket.socket | None = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._send: Callable[[Any], int] = sock.send
        self._recv: Callable[[int], bytes] = sock.recv
        self.up: Any = IDLE_PIPE
        self.down: Any = IDLE_PIPE
        self._conduit: Any = None
        self._owner: str | None = None
        self._faults: FaultSet | None = None  # the fault set of the conduit (where a deferred close is listed)
        self._rbuf = bytearray()  # bytes the down pipe delivered, not yet read by paho
        self._wbuf = bytearray()  # bytes the up pipe delivered that the kernel did not take yet
        self._reader: tuple[Any, ...] | None = None  # paho's reader callback and its arguments
        self._pwriter: tuple[Any, ...] | None = None  # paho's writer callback and its arguments
        self._reading = False  # the real descriptor is registered for reading
        self._writer_mine = False  # the real descriptor's writer is ours (flushing _wbuf)
        self._wake_pending = False
        self._down_eof = False  # the down pipe delivered the end of the stream
        self._down_error: BaseException | None = None  # why the real socket ended, when not by EOF
        self._up_eof = False  # paho closed: the real socket closes once the up pipe delivers the EOF
        self._close_when_written = False  # the up pipe delivered that EOF while bytes still wait in _wbuf
        self._real_ended = False  # the real socket's end (EOF or error) was read and pushed into the down pipe
        self._closed_by_paho = False

    # -- the conduit -------------------------------------------------------------------------------------------

    def attach(self, faults: FaultSet, owner: str | None) -> None:
        """Route this socket through a new conduit of ``faults`` (a :class:`iotix.fault.faultset.FaultSet`)."""
        conduit = faults.attach(owner, up=self._deliver_up, down=self._deliver_down, act=self._act)
        self._conduit = conduit
        self._owner = owner
        self._faults = faults
        self.up = conduit.up
        self.down = conduit.down

    def _detach(self) -> None:
        conduit, self._conduit = self._conduit, None
        self.up = self.down = IDLE_PIPE
        if conduit is not None:
            conduit.detach()

    # -- what paho calls ---------------------------------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview) -> int:
        if self.up.idle and not self._wbuf:
            return self._send(data)
        return self._send_slow(data)

    def recv(self, bufsize: int) -> bytes:
        if self.down.idle and not self._rbuf:
            return self._recv(bufsize)
        return self._recv_slow(bufsize)

    def pending(self) -> int:
        """Bytes readable without waiting for the descriptor: delivered ones, and TLS's decrypted ones."""
        n = len(self._rbuf)
        real = self._real
        if self.tls and real is not None:
            n += real.pending()  # type: ignore[attr-defined]
        return n

    def fileno(self) -> int:
        return self._fd if self._real is not None else -1

    def setblocking(self, flag: bool) -> None:
        if self._real is not None:
            self._real.setblocking(flag)

    def setsockopt(self, *args: Any) -> None:
        if self._real is not None:
            self._real.setsockopt(*args)

    def getsockopt(self, *args: Any) -> Any:
        if self._real is None:
            raise OSError(9, "Bad file descriptor")
        return self._real.getsockopt(*args)

    def getpeername(self) -> Any:
        return self.wrapped.getpeername()

    def getsockname(self) -> Any:
        return self.wrapped.getsockname()

    def __getattr__(self, name: str) -> Any:
        # anything else a socket has (family, type, gettimeout, getpeercert, version, cipher, ...)
        return getattr(self.wrapped, name)

    def __repr__(self) -> str:
        state = "open" if self._real is not None else "closed"
        if self._up_eof and self._real is not None:
            state = "deferred close"
        return f"<FaultSocket {state} owner={self._owner!r} fd={self._fd} tls={self.tls}>"

    def close(self) -> None:
        """paho closed the connection: close the real socket now, or once the up pipe passes the close on."""
        if self._closed_by_paho:
            return
        self._closed_by_paho = True
        self._reader = self._pwriter = None
        self._rbuf.clear()
        if self._real is None:
            return
        if self._conduit is None or (self.up.idle and not self._wbuf):
            self._close_real()
            return
        self._defer()
        self._up_eof = True
        self.up.push_eof()  # delivered as b"" after the bytes before it; a hold keeps it

    # -- paho's reader and writer (the driver registers them here, see the module docstring) -------------------

    def add_reader(self, fileobj: Any, callback: Callable[..., Any], *args: Any) -> None:
        self._reader = (callback, *args)
        if self._real is not None and not self._down_eof and self._down_error is None:
            self._loop.add_reader(self._fd, callback, *args)
            self._reading = True
        if self._rbuf or self._down_eof:
            self._wake()

    def remove_reader(self, fileobj: Any) -> None:
        self._reader = None
        self._stop_reading()

    def add_writer(self, fileobj: Any, callback: Callable[..., Any], *args: Any) -> None:
        self._pwriter = (callback, *args)
        if self._real is not None and not self._writer_mine:
            self._loop.add_writer(self._fd, callback, *args)

    def remove_writer(self, fileobj: Any) -> None:
        self._pwriter = None
        if self._real is not None and not self._writer_mine:
            self._loop.remove_writer(self._fd)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            if self._real is not None:
                self._loop.remove_reader(self._fd)

    def _wake(self) -> None:
        """Have paho's reader run soon: bytes (or the end) were delivered without the descriptor being readable."""
        if not self._wake_pending and self._reader is not None:
            self._wake_pending = True
            self._loop.call_soon(self._run_reader)

    def _run_reader(self) -> None:
        self._wake_pending = False
        reader = self._reader
        if reader is not None:
            reader[0](*reader[1:])

    # -- upstream ----------------------------------------------------------------------------------------------

    def _send_slow(self, data: bytes | bytearray | memoryview) -> int:
        if self.up.idle:  # the pipe went idle but written bytes still wait: they go first
            self._flush()
            if self._wbuf:
                raise BlockingIOError(11, "fault layer: earlier bytes still wait for the socket")
            return self._send(data)
        if len(self._wbuf) >= WRITE_HIGH:
            raise BlockingIOError(11, "fault layer: the socket does not take the delivered bytes")
        if self._real is None:
            return self._send(data)  # the terminal error (reset, closed)
        n = len(data)
        self.up.push(bytes(data))
        return n

    def _deliver_up(self, data: bytes) -> None:
        """The up pipe's bytes are due: write them to the real socket (b"": paho's close is due)."""
        if self._real is None:
            return
        if not data:
            if self._wbuf:
                self._close_when_written = True  # closed when the buffer is written (_on_writable)
            else:
                self._close_real()
            return
        if self._wbuf:
            self._wbuf += data
            return
        try:
            n = self._send(data)
        except _WOULD_BLOCK:
            n = 0
        except OSError as err:
            self._failed(err)
            return
        if n < len(data):
            self._wbuf += data[n:]
            self._take_writer()

    def _flush(self) -> None:
        wbuf = self._wbuf
        if not wbuf or self._real is None:
            return
        try:
            n = self._send(wbuf)
        except _WOULD_BLOCK:
            return
        except OSError as err:
            self._failed(err)
            return
        del wbuf[:n]

    def _take_writer(self) -> None:
        if not self._writer_mine and self._real is not None:
            self._writer_mine = True
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        self._flush()
        if self._wbuf or self._real is None:
            return
        self._writer_mine = False
        if self._close_when_written:
            self._close_real()
        elif self._pwriter is not None:
            self._loop.add_writer(self._fd, *self._pwriter)  # hand the descriptor's writer back to paho
        else:
            self._loop.remove_writer(self._fd)

    # -- downstream --------------------------------------------------------------------------------------------

    def _recv_slow(self, bufsize: int) -> bytes:
        rbuf = self._rbuf
        if not rbuf and not self._down_eof:
            if self.down.idle:
                return self._recv(bufsize)
            self._pull()
        if rbuf:
            chunk = bytes(rbuf[:bufsize])
            del rbuf[:bufsize]
            return chunk
        if self._down_eof:
            if self._down_error is not None:
                raise self._down_error
            return b""
        raise BlockingIOError(11, "fault layer: no bytes due yet")

    def _pull(self) -> None:
        """Read what the real socket has into the down pipe (its end too)."""
        for _ in range(READ_BURST):
            if self._real is None or self._real_ended:
                return
            try:
                data = self._recv(READ_CHUNK)
            except _WOULD_BLOCK:
                return
            except OSError as err:
                if self._real is None:  # reset by the fault layer while reading
                    return
                self._down_error = err
                data = b""
            if not data:
                self._real_ended = True
                self._stop_reading()  # the descriptor stays readable (EOF): stop the selector's wake-ups
                self.down.push_eof()
                return
            self.down.push(data)
        real = self._real
        if self.tls and real is not None and real.pending():  # type: ignore[attr-defined]
            self._wake()  # decrypted bytes that no readiness event announces: read them next time round

    def _deliver_down(self, data: bytes) -> None:
        """The down pipe's bytes are due (b"": the end of the stream): paho reads them."""
        if self._closed_by_paho or self._down_eof:
            return
        if data:
            self._rbuf += data
        else:
            self._down_eof = True
        self._wake()

    # -- the pipe's actions and the real close -----------------------------------------------------------------

    def _act(self, action: str) -> None:
        """``reset``: RST to the peer, ConnectionResetError for paho; ``close``: FIN to the peer, EOF for paho."""
        real = self._real
        if real is None:
            return
        if action == "reset":
            with contextlib.suppress(OSError):
                real.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            err = ConnectionResetError(104, "Connection reset by peer (network fault)")
            self._send = self._recv = _raiser(err)
            self._rbuf.clear()
            self._down_eof, self._down_error = True, err
            self._close_real()
        else:
            with contextlib.suppress(OSError):
                real.shutdown(socket.SHUT_WR)  # a FIN (on TLS without close_notify, as a cut link gives)
            self._send = _raiser(BrokenPipeError(32, "Broken pipe (connection closed by a network fault)"))
            self._recv = _eof
            self._down_eof = True
            self._wbuf.clear()
            self._stop_reading()
            if self._closed_by_paho:
                self._close_real()
            else:
                self._detach()  # the real socket closes when paho closes it
        self._wake()

    def _failed(self, err: OSError) -> None:
        """Writing delivered bytes failed (the peer reset or closed): paho learns it on its next call."""
        self._send = _raiser(err)
        self._wbuf.clear()
        if self._closed_by_paho:
            self._close_real()
        else:
            self._wake()

    def _defer(self) -> None:
        assert self._faults is not None
        deferred = self._faults.deferred
        if self._owner is not None:
            for other in [s for s in deferred if s._owner == self._owner]:
                other._close_real()  # at most one deferred socket per device
        deferred[self] = None

    def _close_real(self) -> None:
        real, self._real = self._real, None
        if real is None:
            return
        loop = self._loop
        if self._reading or self._reader is not None:
            loop.remove_reader(self._fd)
        if self._writer_mine or self._pwriter is not None:
            loop.remove_writer(self._fd)
        self._reading = self._writer_mine = False
        self._wbuf.clear()
        if self._faults is not None:
            self._faults.deferred.pop(self, None)
        real.close()
        self._detach()
        if not self._closed_by_paho and self._down_error is None:
            self._send = self._recv = _raiser(OSError(9, "Bad file descriptor"))


def wrap_socket(
    sock: socket.socket, loop: asyncio.AbstractEventLoop, faults: FaultSet, owner: str | None
) -> FaultSocket:
    """``sock`` (connected, TLS handshake done) routed through a new conduit of ``faults``."""
    wrapper = FaultSocket(sock, loop)
    wrapper.attach(faults, owner)
    return wrapper


def close_deferred(faults: FaultSet) -> int:
    """Close the deferred sockets of ``faults`` now (the fleet stops); returns how many."""
    group = list(faults.deferred)
    for sock in group:
        sock._close_real()
    return len(group)
