"""CoAP devices (RFC 7252) in two modes: clients that send their readings, servers that are observed.

:func:`create` picks the class by ``connection.mode``: :class:`CoapClientTransport` (here, the default) or
:class:`iotix.transport.coap_server_mode.CoapServerTransport` (``mode: server``, imported only when a fleet
uses it). Both derive from :class:`iotix.transport.coap_base.CoapTransport`, which reads the settings they
share. The wire format (messages, options, codes, transmission parameters) is
:mod:`iotix.transport.coap_codec`.

Client mode (the default)
    Each reading is a POST (or PUT) of the payload to ``coap://host:port/<path>`` (``path`` defaults to
    ``/telemetry/${deviceId}``) with content format 50 (JSON), 60 (CBOR) or 42 (raw bytes). All devices of
    a fleet share ONE UDP socket and a small message layer of our own (header, token, Uri-Path and
    Content-Format options built by :mod:`~iotix.transport.coap_codec`, which also reads the answers):

    - Confirmable (CON) requests are retransmitted per RFC 7252 section 4.2 with the model's timing: the
      first timeout is random in ``[ackTimeoutMs, 1.5 * ackTimeoutMs]`` and doubles with each of at most
      ``maxRetransmit`` retransmissions. An exchange that gets no ACK is a failure whose reason names the
      target and says ``timeout``; a 4.xx/5.xx answer (piggybacked or separate) is a failure with the code
      and the first bytes of the payload; 2.xx is reported as acknowledged. Every outcome goes to the
      fleet's outcomes object (:class:`~iotix.transport.base.Outcomes`). Empty ACKs followed by separate
      (CON or NON) responses are handled; the request latency (first transmission to response) goes into
      :attr:`CoapClientTransport.latency`.
    - Non-confirmable (NON) requests are fire and forget: sent means sent.
    - A behavior's event (``send`` with a ``topic``) is a POST of its payload to that path on the same server
      (content format 50 for a JSON object or list, 0 for text), CON or NON like the readings; its outcome
      is counted in ``eventsSent`` / ``eventsFailed`` (a failure becomes the device's last error), never as
      telemetry, and it is not retried.
    - ``send`` never blocks and never queues: it writes the datagram and returns. At most
      :attr:`CoapClientTransport.max_in_flight` CON exchanges are open per fleet (one per device, at least
      256, at most 8192); beyond that ``send`` reports the message as not sent (the reason becomes the
      device's last error) and returns False, so a dead or slow server shows up as counted failures at once
      instead of an ever-growing backlog.
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
    Each device runs an aiocoap server context on a UDP port of its own, with observable telemetry
    resources and one resource per command: see :mod:`iotix.transport.coap_server_mode`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from iotix.behavior import Template, compile_template
from iotix.fault.datagram import DatagramTap
from iotix.observe.histogram import LatencyRecorder
from iotix.transport.base import Link, Outcomes, TransportError, TransportSpec
from iotix.transport.coap_base import CoapTransport, enlarge_receive_buffer, resolve_host
from iotix.transport.coap_codec import (
    ACK,
    CODE_EMPTY,
    CODE_POST,
    CON,
    CONTENT_FORMATS,
    METHOD_CODES,
    MID_SPACE,
    NON,
    RST,
    CoapMessage,
    code_text,
    empty_message,
    encode_message,
    parse_message,
    request_options,
)

__all__ = [
    "ACK",
    "CON",
    "NON",
    "RST",
    "ClientEndpoint",
    "CoapClientTransport",
    "CoapTransport",
    "create",
    "empty_message",
    "encode_message",
    "enlarge_receive_buffer",
    "parse_message",
    "resolve_host",
]

log = logging.getLogger("iotix.transport.coap")

#: Bytes of the tokens the client puts on its requests.
TOKEN_LENGTH = 4

# -- the entry point ------------------------------------------------------------------------------------


def create(spec: TransportSpec, links: Sequence[Link], outcomes: Outcomes) -> CoapTransport:
    """The CoAP adapter of a fleet: client mode (default) or server mode, by ``connection.mode``."""
    mode = str(spec.connection.get("mode", "client"))
    if mode == "client":
        return CoapClientTransport(spec, links, outcomes)
    if mode == "server":
        from iotix.transport.coap_server_mode import CoapServerTransport

        return CoapServerTransport(spec, links, outcomes)
    raise TransportError(f"Fleet '{spec.fleet}': CoAP mode must be 'client' or 'server', got {mode!r}")


# -- client mode: the message layer ------------------------------------------------------------------------


class _Exchange:
    """One open CON request."""

    __slots__ = (
        "attempt",
        "datagram",
        "endpoint",
        "event",
        "first_sent",
        "first_try",
        "handle",
        "link",
        "mid",
        "options",
        "path",
        "payload",
        "timeout",
        "token",
        "tries",
    )

    def __init__(self, link: Link, endpoint: ClientEndpoint, mid: int, token: bytes, datagram: bytes) -> None:
        self.link = link
        self.endpoint = endpoint
        self.mid = mid
        self.token = token
        self.datagram = datagram
        self.path: str | None = None  # set when not the device's own path (a per-message path, an event's)
        self.event = False  # a behavior's event, not telemetry
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

    def __init__(self, owner: CoapClientTransport) -> None:
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
        if self.owner.faults is not None:  # the answer goes through its device's down pipe
            ex = self.by_mid.get(msg.mid) if msg.mtype >= ACK else self.by_token.get(msg.token)
            conn = ex.link.conn if ex is not None else None
            tap = conn.tap if conn is not None else None
            if tap is not None and not tap.down.idle:
                tap.receive(data)
                return
        self.handle(msg)

    def handle(self, msg: CoapMessage) -> None:
        """A datagram from the server (past the fault layer)."""
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
            answer = empty_message(ACK if ex is not None else RST, msg.mid)
            if ex is not None:
                self.owner.write(ex.link, self, answer)
            else:
                self.write(answer)
        if ex is not None:
            self.by_mid.pop(ex.mid, None)
            self.owner.separate_responses += 1
            self.owner.finish(ex, msg.code, msg.payload)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _ClientConn:
    """A client-mode device: whether it sends, its pre-encoded path options, its datagrams' fault-layer tap."""

    __slots__ = ("connected", "options", "path", "tap")

    def __init__(self, path: str, options: bytes) -> None:
        self.connected = False
        self.path = path
        self.options = options
        self.tap: DatagramTap | None = None  # with the fleet's network faults (see CoapClientTransport)


# -- client mode: the transport ---------------------------------------------------------------------------------


class CoapClientTransport(CoapTransport):
    """CoAP client devices of one fleet: requests over one shared UDP socket (see the module docstring)."""

    mode = "client"

    def __init__(self, spec: TransportSpec, links: Sequence[Link], outcomes: Outcomes) -> None:
        super().__init__(spec, links, outcomes)
        self.faults = spec.faults
        self.request_based = self.confirmable
        self._path: Template = compile_template(str(spec.connection.get("path", "/telemetry/${deviceId}")))
        self._path_per_message = bool(self._path.names & {"seq", "ts"})
        self.max_in_flight = min(self.MAX_IN_FLIGHT, max(self.MIN_IN_FLIGHT, len(links)))
        self.in_flight = 0
        self.separate_responses = 0  # answers that came after an empty ACK (a busy server)
        self.retransmissions = 0
        self.events_sent = 0  # behaviors' events (not telemetry): answered 2.xx, or sent NON
        self.events_failed = 0
        self.latency = LatencyRecorder()  # request latency (first transmission -> response) of CON requests
        self._code = METHOD_CODES[self.method]
        self._addr: tuple[int, tuple[Any, ...]] | None = None
        self._endpoint: ClientEndpoint | None = None
        self._opening: asyncio.Task[ClientEndpoint] | None = None
        self._spare: asyncio.Task[ClientEndpoint] | None = None
        self._retired: list[ClientEndpoint] = []
        self._other_paths: dict[str, bytes] = {}
        self._rng = random.Random(f"coap:{spec.fleet}")
        self._rotation_warned = False

    @property
    def target(self) -> str:
        return f"coap://{self.url_host}:{self.port}"

    def descriptors(self) -> int:
        """One UDP socket for the fleet, two while it rotates, and a spare being opened."""
        return 3

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            inFlight=self.in_flight,
            retransmissions=self.retransmissions,
            separateResponses=self.separate_responses,
            requestLatencyMs=self.latency.summary(),
            eventsSent=self.events_sent,
            eventsFailed=self.events_failed,
        )
        return info

    def topic_for(self, link: Link) -> str:
        """The device's resource path: where it sends its readings."""
        return self._render_path(link, link.seq, 0)

    def _render_path(self, link: Link, seq: int, ts_ms: int) -> str:
        text = self._path.render_text({**link.variables(), "seq": seq, "ts": ts_ms})
        return text if text.startswith("/") else "/" + text

    def uri(self, path: str) -> str:
        return f"{self.target}{path}"

    # -- connect / disconnect ------------------------------------------------------------------------------

    async def connect(self, link: Link) -> None:
        await self._ensure_endpoint()
        conn: _ClientConn | None = link.conn
        if conn is None:
            path = self._render_path(link, 0, 0)
            conn = link.conn = _ClientConn(path, request_options(path, self.content_format))
        if self.faults is not None and conn.tap is None:
            conn.tap = DatagramTap(self.faults, link.id, send=self._send_late, receive=self._receive_late)
        conn.connected = True

    def is_connected(self, link: Link) -> bool:
        conn: _ClientConn | None = link.conn
        return conn is not None and conn.connected

    async def disconnect(self, link: Link) -> None:
        conn: _ClientConn | None = link.conn
        if conn is not None:
            conn.connected = False  # its open exchanges finish normally

    def drop(self, link: Link) -> None:
        conn: _ClientConn | None = link.conn
        if conn is None:
            return
        conn.connected = False
        self._cancel_exchanges(link)
        if conn.tap is not None:  # a switched-off device: what its pipes still hold is gone with it
            conn.tap.close()
            conn.tap = None

    # -- the fault layer ----------------------------------------------------------------------------------------

    def write(self, link: Link, endpoint: ClientEndpoint, datagram: bytes) -> bool:
        """Send one of ``link``'s datagrams: straight to the socket, or through its tap when a fault acts on it.

        With the fleet's network faults each device has a :class:`~iotix.fault.datagram.DatagramTap` (faults
        may be chosen per device although the devices share the socket): its up pipe delivers the datagram
        later, lost, duplicated or corrupted, to the fleet's current socket (:meth:`_send_late`). Answers
        take the device's down pipe (``ClientEndpoint.datagram_received``). An outage (Take Target Down)
        makes the datagrams vanish whatever its mode: UDP has no connection to refuse or reset.
        """
        conn: _ClientConn | None = link.conn
        tap = conn.tap if conn is not None else None
        if tap is None or tap.up.idle:
            return endpoint.write(datagram)
        transport = endpoint.transport
        if transport is None or transport.is_closing():
            return False
        tap.send(datagram)
        return True

    def _send_late(self, datagram: bytes) -> None:
        """A device's datagram that its up pipe delivers now (on the fleet's current socket)."""
        endpoint = self._endpoint
        if endpoint is not None:
            endpoint.write(datagram)

    def _receive_late(self, data: bytes) -> None:
        """A server's datagram that a device's down pipe delivers now: handled by the socket whose exchange it
        answers (the current one, or one retired by a rotation)."""
        msg = parse_message(data)  # again: it may have been corrupted on the way
        if msg is None:
            return
        endpoints = [e for e in (self._endpoint, *self._retired) if e is not None]
        for endpoint in endpoints:
            if (msg.mid in endpoint.by_mid) if msg.mtype >= ACK else (msg.token in endpoint.by_token):
                endpoint.handle(msg)
                return
        if endpoints:
            endpoints[0].handle(msg)  # late or duplicate: answered (RST to a CON) or ignored as without faults

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

    # -- sending ---------------------------------------------------------------------------------------------

    def send(
        self, link: Link, payload: bytes, topic: str | None = None, qos: int | None = None, retain: bool = False
    ) -> bool:
        conn: _ClientConn | None = link.conn
        if conn is None or not conn.connected:
            return False
        endpoint = self._endpoint
        if endpoint is None or endpoint.transport is None:
            self.outcomes.not_sent(link, f"CoAP {self.method} {self.uri(conn.path)}: no socket (fleet stopped?)")
            return False
        if topic is not None:
            return self._send_event(link, endpoint, topic, payload)
        path, options = self._path_and_options(link, conn)
        if not self.confirmable:
            datagram = encode_message(NON, self._code, endpoint.take_mid(), b"", options, payload)
            self._after_take(endpoint)
            return self.write(link, endpoint, datagram)
        if self.in_flight >= self.max_in_flight:
            self.outcomes.not_sent(
                link,
                f"CoAP {self.method} {self.uri(path or conn.path)}: not sent, {self.in_flight} confirmable "
                f"requests of the fleet are already waiting for an answer (limit {self.max_in_flight})",
            )
            return False
        self._start_exchange(link, endpoint, options, payload, path)
        return True

    def _send_event(self, link: Link, endpoint: ClientEndpoint, topic: str, payload: bytes) -> bool:
        """A behavior's event: a POST of ``payload`` to the path ``topic`` (see the module docstring)."""
        path = topic if topic.startswith("/") else "/" + topic
        text = payload.lstrip()[:1] not in (b"{", b"[")
        key = f"{int(text)}{path}"
        options = self._other_paths.get(key)
        if options is None:
            options = request_options(path, 0 if text else CONTENT_FORMATS["json"])
            if len(self._other_paths) < 1024:
                self._other_paths[key] = options
        if not self.confirmable:
            sent = self.write(
                link, endpoint, encode_message(NON, CODE_POST, endpoint.take_mid(), b"", options, payload)
            )
            self._after_take(endpoint)
            self._event_done(link, path, None if sent else "the socket is closed")
            return sent
        if self.in_flight >= self.max_in_flight:
            self._event_done(link, path, f"not sent, {self.in_flight} confirmable requests of the fleet are open")
            return False
        self._start_exchange(link, endpoint, options, payload, path, event=True)
        return True

    def _event_done(self, link: Link, path: str, error: str | None) -> None:
        if error is None:
            self.events_sent += 1
            return
        self.events_failed += 1
        self.outcomes.not_sent(link, f"event: CoAP POST {self.uri(path)}: {error}")

    def _path_and_options(self, link: Link, conn: _ClientConn) -> tuple[str | None, bytes]:
        """(None, the device's options) normally; a per-message path when the path uses ``seq`` or ``ts``."""
        if self._path_per_message:
            path = self._render_path(link, link.seq, int(time.time() * 1000))
            return path, request_options(path, self.content_format)
        return None, conn.options

    def _start_exchange(
        self,
        link: Link,
        endpoint: ClientEndpoint,
        options: bytes,
        payload: bytes,
        path: str | None,
        attempt: int = 0,
        first_try: float = 0.0,
        *,
        event: bool = False,
    ) -> None:
        mid, token = endpoint.take_mid(), endpoint.take_token()
        code = CODE_POST if event else self._code
        ex = _Exchange(link, endpoint, mid, token, encode_message(CON, code, mid, token, options, payload))
        ex.path = path
        ex.event = event
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
        self.write(link, endpoint, ex.datagram)
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
                log.warning("fleet %s: no fresh CoAP socket ready; reusing message ids", self.name)

    # -- answers and timeouts ----------------------------------------------------------------------------------

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
            self.write(ex.link, ex.endpoint, ex.datagram)
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
        if ex.event:  # not telemetry: no outcome, no latency, no retry
            ok = code is not None and code >> 5 == 2
            answer = "reset (RST) by the server" if code is None else code_text(code)
            self._event_done(ex.link, ex.path or "", None if ok else answer)
            if self._retired:
                self._close_idle_retired()
            return
        if code is not None:
            self.latency.record(latency)
        if code is not None and code >> 5 == 2:
            self.outcomes.acknowledged(ex.link, len(ex.payload), latency)
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
        if ex.event:
            self._event_done(ex.link, ex.path or "", reason)
        else:
            self._report(ex, reason, "timeout")
        if self._retired:
            self._close_idle_retired()

    def _report(self, ex: _Exchange, reason: str, code: str, fault: bool = True, latency: float | None = None) -> None:
        link = ex.link
        outcomes = self.outcomes
        path = ex.path or (link.conn.path if link.conn is not None else "")

        def resend(attempt: int) -> None:
            endpoint = self._endpoint
            conn: _ClientConn | None = link.conn
            if endpoint is None or endpoint.transport is None or conn is None or not conn.connected:
                outcomes.failed(link, f"not retried, the device or fleet stopped: {reason}", "stopped", fault=False)
            elif self.in_flight >= self.max_in_flight:
                outcomes.failed(link, f"not retried, {self.in_flight} requests in flight", "in_flight", fault=False)
            else:
                self._start_exchange(link, endpoint, ex.options, ex.payload, ex.path, attempt, ex.first_try)

        outcomes.failed(
            link,
            f"CoAP {self.method} {self.uri(path)}: {reason}",
            code,
            len(ex.payload),
            latency,
            fault=fault,
            resend=resend,
            attempt=ex.attempt,
            first_try=ex.first_try,
        )

    def _cancel_exchanges(self, link: Link) -> None:
        """Forget a dropped device's open exchanges (a switched-off device retransmits nothing)."""
        for endpoint in (self._endpoint, *self._retired):
            if endpoint is None:
                continue
            for ex in [e for e in endpoint.by_token.values() if e.link is link]:
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

    # -- fleet-wide ---------------------------------------------------------------------------------------------

    async def close(self, drain_s: float = 1.0) -> None:
        """Wait up to ``drain_s`` for open exchanges, then close the sockets."""
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
        for link in self.links:
            conn = link.conn
            if isinstance(conn, _ClientConn) and conn.tap is not None:
                conn.tap.close()
                conn.tap = None
        if self._spare is not None:
            self._spare.cancel()
            with contextlib.suppress(BaseException):
                endpoint = await self._spare
                endpoint.close()
            self._spare = None
