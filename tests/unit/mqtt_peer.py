"""A tiny MQTT 3.1.1 peer on 127.0.0.1 for the MQTT transport's unit tests: no broker, no routing.

It reads packets (a fixed header byte, whose high nibble is the type, then the remaining length as a
varint) and records what it saw. It answers CONNECT with CONNACK (return code ``connack_code``; when
``connack_gate`` is an event, only once it is set), QoS 1 PUBLISH with PUBACK (unless ``ack_publish`` is
off: the PUBACKs are then held until :meth:`MqttPeer.release_acks`), SUBSCRIBE with SUBACK and PINGREQ
with PINGRESP (unless ``answer_pings`` is off). A test can push a PUBLISH to a client
(:meth:`MqttPeer.push`) or close a client's connection (:meth:`MqttPeer.close`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + remaining_length(len(body)) + body


def utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


class Reader:
    """Reads the fields of one packet's body in order."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def take(self, n: int) -> bytes:
        data = self.body[self.pos : self.pos + n]
        self.pos += n
        return data

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def blob(self) -> bytes:
        return self.take(self.u16())

    def text(self) -> str:
        return self.blob().decode()

    def rest(self) -> bytes:
        return self.take(len(self.body) - self.pos)


@dataclass
class Connect:
    """What one CONNECT carried."""

    client_id: str
    keepalive: int
    clean_session: bool
    username: str | None = None
    password: bytes | None = None
    will_topic: str | None = None
    will_payload: bytes | None = None
    will_qos: int = 0
    will_retain: bool = False

    @classmethod
    def parse(cls, body: bytes) -> Connect:
        r = Reader(body)
        assert (r.text(), r.u8()) == ("MQTT", 4), "not an MQTT 3.1.1 CONNECT"
        flags, keepalive = r.u8(), r.u16()
        c = cls(client_id=r.text(), keepalive=keepalive, clean_session=bool(flags & 0x02))
        if flags & 0x04:
            c.will_topic, c.will_payload = r.text(), r.blob()
            c.will_qos, c.will_retain = (flags >> 3) & 0x03, bool(flags & 0x20)
        if flags & 0x80:
            c.username = r.text()
        if flags & 0x40:
            c.password = r.blob()
        return c


@dataclass
class Publish:
    client_id: str
    topic: str
    payload: bytes
    qos: int
    packet_id: int | None
    retain: bool


@dataclass
class Session:
    """One client connection as the peer sees it."""

    client_id: str
    writer: asyncio.StreamWriter
    subscriptions: list[tuple[str, int]] = field(default_factory=list)
    pings: int = 0
    disconnect_sent: bool = False  # the client sent DISCONNECT (a graceful close)
    closed: bool = False  # the connection is gone, whoever ended it
    next_id: int = 0

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.writer.write(data)


class MqttPeer:
    def __init__(self) -> None:
        self.connack_code = 0
        self.connack_gate: asyncio.Event | None = None  # when set here: CONNACK waits until it is set
        self.ack_publish = True
        self.answer_pings = True
        self.connects: list[Connect] = []
        self.publishes: list[Publish] = []
        self.sessions: dict[str, Session] = {}  # client id -> its latest connection
        self.held_acks: list[tuple[Session, int]] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> MqttPeer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close every connection and the server; wait for the connection handlers to finish."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in self._handlers:
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    # -- what the test does --------------------------------------------------------------------------

    def push(self, client_id: str, topic: str, payload: bytes, qos: int = 0) -> None:
        """Send a PUBLISH to the client (as a broker forwards a command)."""
        session = self.sessions[client_id]
        body = utf8(topic)
        if qos:
            session.next_id += 1
            body += session.next_id.to_bytes(2, "big")
        session.send(packet(PUBLISH << 4 | qos << 1, body + payload))

    def close(self, client_id: str) -> None:
        """End the client's connection from the peer's side."""
        self.sessions[client_id].writer.close()

    def release_acks(self) -> None:
        held, self.held_acks = self.held_acks, []
        for session, packet_id in held:
            session.send(packet(PUBACK << 4, packet_id.to_bytes(2, "big")))

    def published(self, client_id: str | None = None) -> list[Publish]:
        return [p for p in self.publishes if client_id is None or p.client_id == client_id]

    # -- serving -------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        session: Session | None = None
        try:
            while True:
                first = (await reader.readexactly(1))[0]
                n, shift = 0, 0
                while True:
                    byte = (await reader.readexactly(1))[0]
                    n |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = await reader.readexactly(n)
                kind = first >> 4
                if kind == CONNECT:
                    connect = Connect.parse(body)
                    self.connects.append(connect)
                    session = self.sessions[connect.client_id] = Session(connect.client_id, writer)
                    if self.connack_gate is not None:
                        await self.connack_gate.wait()
                    writer.write(packet(CONNACK << 4, bytes((0, self.connack_code))))
                    if self.connack_code:
                        await writer.drain()
                        break  # a refusal ends the connection
                elif session is None:
                    raise AssertionError(f"packet type {kind} before CONNECT")
                elif kind == PUBLISH:
                    self._publish(session, first, body)
                elif kind == SUBSCRIBE:
                    r = Reader(body)
                    packet_id = r.u16()
                    topics = []
                    while r.pos < len(body):
                        topics.append((r.text(), r.u8()))
                    session.subscriptions += topics
                    session.send(packet(SUBACK << 4, packet_id.to_bytes(2, "big") + bytes(q for _, q in topics)))
                elif kind == PINGREQ:
                    session.pings += 1
                    if self.answer_pings:
                        session.send(packet(PINGRESP << 4, b""))
                elif kind == DISCONNECT:
                    session.disconnect_sent = True
                    break
                # PUBACK (of a pushed QoS 1 message) and the rest: nothing to answer
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the peer stops: a handler ends without an error
        finally:
            if session is not None:
                session.closed = True
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _publish(self, session: Session, first: int, body: bytes) -> None:
        qos = (first >> 1) & 0x03
        r = Reader(body)
        topic = r.text()
        packet_id = r.u16() if qos else None
        self.publishes.append(Publish(session.client_id, topic, r.rest(), qos, packet_id, bool(first & 0x01)))
        if qos == 1 and packet_id is not None:
            if self.ack_publish:
                session.send(packet(PUBACK << 4, packet_id.to_bytes(2, "big")))
            else:
                self.held_acks.append((session, packet_id))
