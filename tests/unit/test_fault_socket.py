"""The fault layer's socket wrapper (iotix.fault.sock) on a real TCP pair on 127.0.0.1, and paho's use of it.

The wrapped end plays the device (paho: ``send``, ``recv`` and a reader callback registered through the
wrapper); the other end plays the broker and reads and writes the kernel socket directly, so what it sees is
what is on the wire: bytes, their timing, a FIN (EOF) or an RST (ConnectionResetError).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from mqtt_peer import MqttPeer
from transport_fakes import FakeOutcomes, make_links, make_spec, run, until

from iotix.fault.faultset import FaultSet
from iotix.fault.sock import FaultSocket, close_deferred, wrap_socket
from iotix.fault.spec import parse_fault
from iotix.transport.base import TransportError
from iotix.transport.mqtt import MqttTransport, create
from iotix.transport.paho_driver import LoopClient

TARGET = "fleet 'unit'"


def add(faults: FaultSet, kind: str, owners: list[str] | None = None, **settings: Any) -> str:
    spec = parse_fault(kind, settings, name=None, target=TARGET, datagram=False)
    return faults.add(spec, owners).name


async def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(device end, broker end), both non-blocking."""
    loop = asyncio.get_running_loop()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    device = socket.socket()
    device.setblocking(False)
    await loop.sock_connect(device, server.getsockname())
    broker, _ = await loop.sock_accept(server)
    server.close()
    broker.setblocking(False)
    return device, broker


class Device:
    """What paho does with its socket: write with ``send``, read in a reader callback until it would block."""

    def __init__(self, sock: FaultSocket) -> None:
        self.sock = sock
        self.got = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.wakeups = 0
        sock.add_reader(sock, self.readable)

    def readable(self) -> None:
        self.wakeups += 1
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            except OSError as err:
                self.error = err
                self.sock.remove_reader(self.sock)
                return
            if not data:
                self.eof = True
                self.sock.remove_reader(self.sock)
                return
            self.got += data

    def write(self, data: bytes) -> None:
        """Everything, in order (as paho's queue would: what ``send`` does not take is retried)."""
        view = memoryview(data)
        while view:
            n = self.sock.send(view)
            view = view[n:]


async def fault_pair(owner: str = "dev-1") -> tuple[FaultSet, FaultSocket, socket.socket, Device]:
    loop = asyncio.get_running_loop()
    faults = FaultSet(loop, TARGET, datagram=False, per_device=True, seed=7)
    device, broker = await tcp_pair()
    sock = wrap_socket(device, loop, faults, owner)
    return faults, sock, broker, Device(sock)


async def broker_reads(broker: socket.socket, count: int, timeout: float = 5.0) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    async with asyncio.timeout(timeout):
        while len(out) < count:
            data = await loop.sock_recv(broker, 65536)
            if not data:
                break
            out += data
    return bytes(out)


async def silent(broker: socket.socket, seconds: float) -> bool:
    """Whether the broker end gets nothing at all (no byte, no FIN, no RST) for ``seconds``."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(seconds):
            await loop.sock_recv(broker, 1)
    except TimeoutError:
        return True
    return False


def scenario(test: Callable[[], Awaitable[None]]) -> None:
    run(test, timeout=30.0)


# ------------------------------------------------------------------------------------------------ pass-through


def test_without_faults_bytes_pass_unchanged_both_ways_on_the_fast_path() -> None:
    async def main() -> None:
        faults, sock, broker, dev = await fault_pair()
        loop = asyncio.get_running_loop()
        assert sock.up.idle and sock.down.idle  # attached, and nothing acts
        up = os.urandom(300_000)
        down = os.urandom(300_000)

        async def device_writes() -> None:
            view = memoryview(up)
            while view:
                try:
                    view = view[sock.send(view) :]
                except BlockingIOError:
                    await asyncio.sleep(0.001)

        writer = loop.create_task(device_writes())
        assert await broker_reads(broker, len(up)) == up
        await writer
        await loop.sock_sendall(broker, down)
        await until(lambda: len(dev.got) >= len(down), "the device read everything")
        assert bytes(dev.got) == down
        assert sock.fileno() == sock.wrapped.fileno() and sock.getpeername() == broker.getsockname()
        sock.close()
        assert await broker_reads(broker, 1) == b""  # a FIN at once
        assert not faults.conduits  # detached
        broker.close()

    scenario(main)


# --------------------------------------------------------------------------------------------------- latency


def test_latency_delays_each_direction_by_its_setting() -> None:
    async def main() -> None:
        faults, sock, broker, dev = await fault_pair()
        loop = asyncio.get_running_loop()
        add(faults, "latency", latency="150ms")
        assert not sock.up.idle
        start = loop.time()
        dev.write(b"hello broker")
        assert await broker_reads(broker, 12) == b"hello broker"
        assert 0.14 <= loop.time() - start < 0.4
        start = loop.time()
        await loop.sock_sendall(broker, b"hello device")
        await until(lambda: bytes(dev.got) == b"hello device", "the device read the bytes")
        assert 0.14 <= loop.time() - start < 0.4
        sock.close()
        broker.close()

    scenario(main)


def test_a_fault_on_other_devices_leaves_this_connection_on_the_fast_path() -> None:
    async def main() -> None:
        faults, sock, broker, dev = await fault_pair(owner="dev-1")
        add(faults, "blackhole", owners=["dev-2"])
        assert sock.up.idle and sock.down.idle
        dev.write(b"x")
        assert await broker_reads(broker, 1) == b"x"
        sock.close()
        broker.close()

    scenario(main)


# --------------------------------------------------------------------------------------------------- blackhole


def test_a_blackhole_holds_both_ways_and_releases_in_order_when_removed() -> None:
    async def main() -> None:
        faults, sock, broker, dev = await fault_pair()
        loop = asyncio.get_running_loop()
        name = add(faults, "blackhole")
        chunks = [os.urandom(1000) for _ in range(20)]
        for chunk in chunks:
            dev.write(chunk)
        await loop.sock_sendall(broker, b"from the broker")
        assert await silent(broker, 0.3)
        assert dev.got == b"" and not dev.eof
        assert faults.backlog() == 20_000 + len(b"from the broker")
        faults.remove(name)
        assert await broker_reads(broker, 20_000) == b"".join(chunks)
        await until(lambda: bytes(dev.got) == b"from the broker", "the held bytes reach the device")
        dev.write(b"after")
        assert await broker_reads(broker, 5) == b"after"
        sock.close()
        broker.close()

    scenario(main)


def test_the_brokers_close_during_a_hold_reaches_the_device_only_when_it_lifts() -> None:
    async def main() -> None:
        faults, sock, broker, dev = await fault_pair()
        name = add(faults, "blackhole", direction="downstream")
        broker.sendall(b"last words")
        broker.shutdown(socket.SHUT_WR)
        await asyncio.sleep(0.3)
        assert not dev.eof and dev.got == b""
        assert dev.wakeups <= 3  # the readable EOF does not spin the loop
        faults.remove(name)
        await until(lambda: dev.eof, "the device sees the EOF")
        assert dev.got == b"last words"
        sock.close()
        broker.close()

    scenario(main)


# ----------------------------------------------------------------------------------------------- reset, close


def test_a_reset_fault_sends_an_rst_and_the_device_sees_connection_reset() -> None:
    async def main() -> None:
        faults, sock, broker, dev = await fault_pair()
        loop = asyncio.get_running_loop()
        add(faults, "reset", after="50ms")
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(5):
                await loop.sock_recv(broker, 10)
        await until(lambda: dev.error is not None, "the device notices the reset")
        assert isinstance(dev.error, ConnectionResetError)
        with pytest.raises(ConnectionResetError):
            sock.send(b"more")
        assert sock.fileno() == -1 and not faults.conduits
        sock.close()
        broker.close()

    scenario(main)


def test_an_outage_in_refuse_mode_resets_open_connections() -> None:
    async def main() -> None:
        faults, sock, broker, dev = await fault_pair()
        loop = asyncio.get_running_loop()
        faults.take_down("refuse", None)
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(5):
                await loop.sock_recv(broker, 10)
        await until(lambda: isinstance(dev.error, ConnectionResetError), "the device notices the reset")
        assert faults.admission("dev-1") == "refuse"
        sock.close()
        broker.close()

    scenario(main)


def test_a_timeout_fault_closes_with_a_fin_and_the_device_reads_eof() -> None:
    async def main() -> None:
        faults, sock, broker, dev = await fault_pair()
        add(faults, "timeout", timeout="100ms")
        dev.write(b"never arrives")
        assert await broker_reads(broker, 1) == b""  # FIN, and the held bytes are gone
        await until(lambda: dev.eof, "the device reads EOF")
        with pytest.raises(BrokenPipeError):
            sock.send(b"x")
        sock.close()
        assert sock.fileno() == -1
        broker.close()

    scenario(main)


# ------------------------------------------------------------------------------------------- deferred close


def test_closing_during_a_hold_keeps_the_connection_open_and_silent() -> None:
    """A partitioned device whose keep-alive gives up closes its socket: the broker must see no FIN."""

    async def main() -> None:
        faults, sock, broker, dev = await fault_pair()
        name = add(faults, "blackhole")
        dev.write(b"PINGREQ")
        sock.close()
        assert len(faults.deferred) == 1
        assert await silent(broker, 0.4)  # no byte, no FIN, no RST
        faults.remove(name)  # the hold lifts: what was held, then the FIN
        assert await broker_reads(broker, 100) == b"PINGREQ"
        assert len(faults.deferred) == 0 and not faults.conduits
        broker.close()

    scenario(main)


def test_closing_under_latency_sends_the_fin_after_the_delayed_bytes() -> None:
    async def main() -> None:
        faults, sock, broker, dev = await fault_pair()
        loop = asyncio.get_running_loop()
        add(faults, "latency", latency="120ms")
        start = loop.time()
        dev.write(b"DISCONNECT")
        sock.close()
        assert await broker_reads(broker, 100) == b"DISCONNECT"
        assert await broker_reads(broker, 1) == b""
        assert loop.time() - start >= 0.11
        broker.close()

    scenario(main)


def test_deferred_sockets_close_when_the_transport_closes_them_and_one_per_device() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        faults = FaultSet(loop, TARGET, datagram=False, per_device=True, seed=1)
        add(faults, "blackhole")
        pairs = [await tcp_pair() for _ in range(3)]
        socks = [wrap_socket(d, loop, faults, owner) for (d, _), owner in zip(pairs, ["a", "a", "b"], strict=True)]
        for s in socks:
            s.close()
        assert len(faults.deferred) == 2  # device a's first deferred socket was closed for real
        assert await broker_reads(pairs[0][1], 1) == b""
        assert await silent(pairs[2][1], 0.2)
        assert close_deferred(faults) == 2 and len(faults.deferred) == 0
        for _, broker in pairs[1:]:
            assert await broker_reads(broker, 1) == b""
            broker.close()
        pairs[0][1].close()

    scenario(main)


# ----------------------------------------------------------------------------------------------- write buffer


def test_bytes_the_kernel_does_not_take_wait_in_order_and_share_the_writer_with_paho() -> None:
    async def main() -> None:
        faults, sock, broker, dev = await fault_pair()
        loop = asyncio.get_running_loop()
        sock.wrapped.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        broker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        name = add(faults, "latency", latency="10ms")
        data = os.urandom(3 << 20)
        sent = 0
        while sent < len(data):  # until the wrapper pushes back
            try:
                sent += sock.send(data[sent : sent + 65536])
            except BlockingIOError:
                break
        await asyncio.sleep(0.1)  # delivered, mostly into the write buffer
        assert sock._wbuf  # the kernel did not take it all
        faults.remove(name)
        with pytest.raises(BlockingIOError):  # the pipe is idle, but earlier bytes go first
            sock.send(b"overtake")
        paho_writes = []
        sock.add_writer(sock, lambda: paho_writes.append(loop.time()))  # as paho_driver's kick() does
        assert not paho_writes
        reader = loop.create_task(broker_reads(broker, sent, timeout=10))
        await until(lambda: paho_writes, "paho's writer gets the descriptor back once the buffer is written")
        sock.remove_writer(sock)
        dev.write(data[sent:])  # the fast path again
        rest = await broker_reads(broker, len(data) - sent, timeout=10)
        assert await reader + rest == data
        sock.close()
        broker.close()

    scenario(main)


# --------------------------------------------------------------------------------------- paho over the wrapper


def mqtt_model() -> dict[str, Any]:
    return {
        "id": "unit-mqtt",
        "name": "MQTT unit sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {"host": "127.0.0.1", "port": 1883, "topicPattern": "t/${deviceId}", "qos": 0, "keepAlive": 30},
        "telemetry": [
            {"name": "temperature", "type": "number", "intervalMs": 1000, "generator": {"type": "constant", "value": 1}}
        ],
    }


def with_peer(test: Callable[[MqttPeer, FaultSet, MqttTransport, list[Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        peer = await MqttPeer().start()
        faults = FaultSet(asyncio.get_running_loop(), TARGET, datagram=False, per_device=True, seed=3)
        links = make_links(3)
        transport = create(make_spec(mqtt_model(), {"port": peer.port}, faults=faults), links, FakeOutcomes())
        try:
            await test(peer, faults, transport, links)
        finally:
            for link in links:
                transport.drop(link)
            await transport.close()
            await peer.stop()

    scenario(main)


def test_the_mqtt_transport_wraps_each_device_and_says_faults_are_per_device() -> None:
    async def test(peer: MqttPeer, faults: FaultSet, transport: MqttTransport, links: list[Any]) -> None:
        assert MqttTransport.per_device_faults is True
        for link in links:
            await transport.connect(link)
            link.topic = transport.topic_for(link)
        assert all(isinstance(link.conn._sock, FaultSocket) for link in links)
        assert all(link.conn.wire_socket is link.conn._sock.wrapped for link in links)
        assert {c.owner for c in faults.conduits} == {link.id for link in links}
        for link in links:
            assert transport.send(link, b"one")
        await until(lambda: len(peer.publishes) == 3, "3 PUBLISH at the peer")

    with_peer(test)


def test_an_mqtt_fault_drops_publish_packets_of_the_chosen_device_only() -> None:
    async def test(peer: MqttPeer, faults: FaultSet, transport: MqttTransport, links: list[Any]) -> None:
        for link in links:
            await transport.connect(link)
            link.topic = transport.topic_for(link)
        spec = parse_fault("mqtt", {"packet": "PUBLISH", "action": "drop"}, name="drop", target=TARGET, datagram=False)
        faults.add(spec, [links[0].id])
        for _ in range(5):
            for link in links:
                assert transport.send(link, b"reading")
            await asyncio.sleep(0.01)
        await until(lambda: len(peer.publishes) >= 10, "the others' PUBLISH at the peer")
        await asyncio.sleep(0.2)
        senders = [p.client_id for p in peer.publishes]
        assert links[0].id not in senders and len(senders) == 10
        assert faults.describe()[0]["packets_dropped"] == 5
        assert transport.is_connected(links[0])  # the connection itself is fine

    with_peer(test)


def test_admission_refuses_resets_or_leaves_a_new_connection_unanswered() -> None:
    async def test(peer: MqttPeer, faults: FaultSet, transport: MqttTransport, links: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        faults.take_down("refuse", None)
        with pytest.raises(TransportError) as refused:
            await transport.connect(links[0])
        assert str(refused.value) == (
            f"device '{links[0].id}': cannot reach broker 127.0.0.1:{peer.port}: Connection refused "
            "(network fault: target down)"
        )
        faults.take_down("reset", None)
        with pytest.raises(TransportError, match="Connection reset by peer"):
            await transport.connect(links[0])
        faults.bring_up()
        add(faults, "blackhole", owners=[links[1].id])
        client = LoopClient(loop, "bare")
        start = loop.time()
        with pytest.raises(TransportError, match=r"no answer from broker .* within 0.3 s \(network fault: blackhole\)"):
            await client.open("127.0.0.1", peer.port, timeout=0.3, faults=faults, owner=links[1].id)
        assert loop.time() - start >= 0.29
        assert "bare" not in {c.client_id for c in peer.connects}
        await transport.connect(links[2])  # not covered: connects
        stats = {entry["name"]: entry for entry in faults.describe()}
        assert stats["blackhole-1"]["connections_refused"] == 1

    with_peer(test)


def test_a_connection_attempt_goes_on_when_the_blackhole_lifts_before_its_timeout() -> None:
    async def test(peer: MqttPeer, faults: FaultSet, transport: MqttTransport, links: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        name = add(faults, "blackhole")
        loop.call_later(0.3, faults.remove, name)
        start = loop.time()
        await transport.connect(links[0])  # at the first SYN retry (1 s), as a kernel would
        assert 0.9 <= loop.time() - start < 3.0
        assert transport.is_connected(links[0])

    with_peer(test)
