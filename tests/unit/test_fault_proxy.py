"""The fault proxies (:mod:`iotix.fault.proxy`) against echo servers the tests open on 127.0.0.1.

TCP: pass-through is byte-identical both ways (large transfers, half-close), latency delays, a blackhole holds
and releases in order, a reset is an RST, a refuse-mode outage closes the port (a real ECONNREFUSED) and
reopens it; an unreachable upstream resets the client. UDP: pass-through and loss. SOCKS5 (Kafka) and the
upstream map of HTTP fleets. No simulator, no fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from transport_fakes import run

from iotix.fault.faultset import FaultSet
from iotix.fault.proxy import (
    SocksProxy,
    TcpProxy,
    UdpProxy,
    UpstreamProxies,
    parse_upstream,
    start_proxy,
    start_socks_proxy,
)
from iotix.fault.spec import FaultError, parse_fault

# --- servers ----------------------------------------------------------------------------------------------


async def echo_server() -> asyncio.AbstractServer:
    """Echoes every byte; on EOF from the client it closes its side (after the echo)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()
        except ConnectionError:
            writer.transport.abort()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def digest_server() -> asyncio.AbstractServer:
    """Reads to EOF, then answers the SHA-256 of what it read followed by ``size`` bytes asked for in the
    first 8 bytes (a half-close: the client has finished sending before the answer starts)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        size = struct.unpack("!Q", data[:8])[0]
        writer.write(hashlib.sha256(data).digest())
        writer.write(pattern(size))
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def pattern(size: int) -> bytes:
    block = hashlib.sha256(b"iotix").digest() * 4096
    return (block * (size // len(block) + 1))[:size]


def port_of(server: asyncio.AbstractServer) -> int:
    return server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add(proxy: Any, kind: str, **settings: Any) -> str:
    spec = parse_fault(kind, settings, name=None, target=f"proxy '{proxy.name}'", datagram=proxy.protocol == "udp")
    return proxy.faults.add(spec).name


async def with_echo_proxy(scenario: Callable[[TcpProxy, int], Awaitable[None]], **kwargs: Any) -> None:
    server = await echo_server()
    proxy = await start_proxy(asyncio.get_running_loop(), f"127.0.0.1:{port_of(server)}", name="p", **kwargs)
    assert isinstance(proxy, TcpProxy)
    try:
        await scenario(proxy, port_of(server))
    finally:
        proxy.close()
        server.close()


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> float:
    t0 = time.monotonic()
    writer.write(data)
    assert await asyncio.wait_for(reader.readexactly(len(data)), 5) == data
    return time.monotonic() - t0


# --- parsing and errors -----------------------------------------------------------------------------------


def test_upstream_is_host_colon_port_with_a_valid_port() -> None:
    assert parse_upstream("broker:9092") == ("broker", 9092)
    assert parse_upstream("[::1]:5683") == ("::1", 5683)
    for bad in ("broker", "broker:", ":80", "host:0", "host:70000", "host:x", None):
        with pytest.raises(FaultError, match="must be 'host:port'"):
            parse_upstream(bad)


def test_start_proxy_names_the_proxy_in_every_error() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(FaultError, match=r"Network fault proxy 'db': upstream must be 'host:port'"):
            await start_proxy(loop, "db.local", name="db")
        with pytest.raises(FaultError, match=r"Network fault proxy 'db': protocol must be tcp or udp, got 'sctp'"):
            await start_proxy(loop, "db.local:5432", name="db", protocol="sctp")
        with pytest.raises(FaultError, match="name= must not be empty"):
            await start_proxy(loop, "db.local:5432", name=" ")
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(FaultError, match=rf"'db': cannot listen on 127.0.0.1:{port}: .*the port is taken"):
                await start_proxy(loop, "db.local:5432", name="db", listen_port=port)

    run(scenario)


def test_a_standalone_proxy_owns_a_fault_set_named_after_it() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        tcp = await start_proxy(loop, "127.0.0.1:9", name="db", seed=1)
        udp = await start_proxy(loop, "127.0.0.1:9", name="coap", protocol="udp")
        try:
            assert tcp.faults.target == "proxy 'db'" and not tcp.faults.datagram and not tcp.faults.per_device
            assert udp.faults.target == "proxy 'coap'" and udp.faults.datagram
            assert isinstance(udp, UdpProxy) and tcp.host == "127.0.0.1" and tcp.port > 0
            assert tcp.upstream == "127.0.0.1:9" and tcp.name == "db" and tcp.connections == 0
            assert tcp.descriptors() == 1 and udp.descriptors() == 1
        finally:
            tcp.close()
            udp.close()
        assert tcp.descriptors() == 0 and udp.descriptors() == 0

    run(scenario)


# --- TCP pass-through -------------------------------------------------------------------------------------


def test_without_faults_bytes_pass_unchanged_both_ways_with_half_close() -> None:
    async def scenario() -> None:
        server = await digest_server()
        proxy = await start_proxy(asyncio.get_running_loop(), f"127.0.0.1:{port_of(server)}", name="p")
        try:
            for sent_size, answer_size in ((9, 0), (8 * 1024 * 1024, 16 * 1024 * 1024)):
                body = struct.pack("!Q", answer_size) + os.urandom(sent_size - 8 if sent_size > 8 else 1)
                reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
                writer.write(body)
                writer.write_eof()  # half-close: the answer still comes back
                answer = await asyncio.wait_for(reader.read(), 30)
                writer.close()
                assert answer[:32] == hashlib.sha256(body).digest()
                assert answer[32:] == pattern(answer_size)
            assert proxy.stats["connections_accepted"] == 2 and proxy.stats["upstream_failures"] == 0
            await asyncio.sleep(0.05)
            assert proxy.connections == 0  # both sides closed once both EOFs passed
        finally:
            proxy.close()
            server.close()

    run(scenario)


def test_interleaved_echo_through_the_proxy_is_byte_identical() -> None:
    async def scenario(proxy: TcpProxy, _port: int) -> None:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        for i in range(200):
            await roundtrip(reader, writer, os.urandom(1 + i * 97))
        assert proxy.connections == 1 and proxy.descriptors() == 3  # listener + client side + upstream
        writer.close()

    run(lambda: with_echo_proxy(scenario))


# --- TCP faults -------------------------------------------------------------------------------------------


def test_latency_upstream_adds_its_delay_to_a_round_trip() -> None:
    async def scenario(proxy: TcpProxy, _port: int) -> None:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        base = min([await roundtrip(reader, writer, b"x" * 100) for _ in range(5)])
        add(proxy, "latency", latency="200ms", direction="upstream")
        delayed = [await roundtrip(reader, writer, b"y" * 100) for _ in range(5)]
        assert all(0.19 <= d - base <= 0.26 for d in delayed), (base, delayed)
        proxy.faults.clear()
        assert await roundtrip(reader, writer, b"z") < 0.1
        writer.close()

    run(lambda: with_echo_proxy(scenario))


def test_a_blackhole_holds_bytes_and_releases_them_in_order() -> None:
    async def scenario(proxy: TcpProxy, _port: int) -> None:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        await roundtrip(reader, writer, b"before")
        name = add(proxy, "blackhole")
        chunks = [f"chunk-{i:03d};".encode() for i in range(100)]
        for chunk in chunks:
            writer.write(chunk)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        assert proxy.faults.backlog() > 0 and not writer.is_closing()  # held, not closed (no FIN, no RST)
        proxy.faults.remove(name)
        expected = b"".join(chunks)
        assert await asyncio.wait_for(reader.readexactly(len(expected)), 5) == expected
        writer.close()

    run(lambda: with_echo_proxy(scenario))


def test_a_blackhole_pushes_back_on_a_fast_sender_instead_of_resetting_it() -> None:
    async def scenario(proxy: TcpProxy, _port: int) -> None:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        name = add(proxy, "blackhole", direction="upstream")
        data = os.urandom(12 * 1024 * 1024)  # three times the pipe's hold bound (4 MiB)
        writer.write(data)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(writer.drain(), 0.5)  # the sender is blocked by TCP, as behind a dead link
        assert proxy.faults.backlog() < 1024 * 1024 and proxy.connections == 1
        proxy.faults.remove(name)
        assert await asyncio.wait_for(reader.readexactly(len(data)), 30) == data
        writer.close()

    run(lambda: with_echo_proxy(scenario))


def test_a_reset_fault_gives_the_client_a_connection_reset() -> None:
    async def scenario(proxy: TcpProxy, _port: int) -> None:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        await roundtrip(reader, writer, b"hello")
        add(proxy, "reset", after=0)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(100), 5)
        assert proxy.stats["connections_reset"] == 1
        writer.close()

    run(lambda: with_echo_proxy(scenario))


def test_a_refuse_outage_closes_the_port_and_bring_up_reopens_the_same_port() -> None:
    async def scenario(proxy: TcpProxy, _port: int) -> None:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        await roundtrip(reader, writer, b"up")
        port = proxy.port
        proxy.faults.take_down("refuse", None)
        with pytest.raises(ConnectionResetError):  # open connections are reset
            await asyncio.wait_for(reader.read(10), 5)
        await asyncio.sleep(0.12)  # a FaultSet without change callbacks is polled
        assert not proxy.listening
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(proxy.host, port)
        proxy.faults.bring_up()
        await asyncio.sleep(0.12)
        assert proxy.listening and proxy.port == port
        reader, writer = await asyncio.open_connection(proxy.host, port)
        await roundtrip(reader, writer, b"back")
        writer.close()

    run(lambda: with_echo_proxy(scenario))


def test_a_blackhole_outage_accepts_new_connections_and_answers_nothing() -> None:
    async def scenario(proxy: TcpProxy, _port: int) -> None:
        proxy.faults.take_down("blackhole", None)
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)  # the kernel completes it
        writer.write(b"anyone?")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        assert proxy.stats["connections_blackholed"] == 1 and proxy.connections == 1
        writer.close()  # a client that gives up frees the proxy's socket
        await asyncio.sleep(0.1)
        assert proxy.connections == 0

    run(lambda: with_echo_proxy(scenario))


def test_a_reset_outage_accepts_then_resets() -> None:
    async def scenario(proxy: TcpProxy, _port: int) -> None:
        proxy.faults.take_down("reset", None)
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(10), 5)
        writer.close()

    run(lambda: with_echo_proxy(scenario))


def test_an_unreachable_upstream_resets_the_client_and_is_counted() -> None:
    async def scenario() -> None:
        proxy = await start_proxy(asyncio.get_running_loop(), f"127.0.0.1:{free_port()}", name="gone")
        try:
            reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(10), 5)
            writer.close()
            assert proxy.stats["upstream_failures"] == 1
            assert "cannot connect to 127.0.0.1" in (proxy.last_upstream_error or "")
            with pytest.raises(ConnectionRefusedError):  # a client that asks first gets the real error
                await proxy.preconnect(2.0)
        finally:
            proxy.close()

    run(scenario)


def test_a_bandwidth_limit_slows_a_sender_without_resetting_it() -> None:
    async def scenario(proxy: TcpProxy, _port: int) -> None:
        add(proxy, "bandwidth", rate="8MB/s", direction="upstream")
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        data = os.urandom(6 * 1024 * 1024)  # more than the pipe's hold bound: back-pressure must pause the sender
        t0 = time.monotonic()

        async def send() -> None:
            writer.write(data)
            await writer.drain()

        sender = asyncio.ensure_future(send())
        got = await asyncio.wait_for(reader.readexactly(len(data)), 20)
        await sender
        elapsed = time.monotonic() - t0
        assert got == data and 0.65 <= elapsed <= 2.0, elapsed
        writer.close()

    run(lambda: with_echo_proxy(scenario))


# --- UDP --------------------------------------------------------------------------------------------------


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append(data)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


async def udp_scenario(scenario: Callable[[UdpProxy, Any, _Client], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    server, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    upstream = f"127.0.0.1:{server.get_extra_info('sockname')[1]}"
    proxy = await start_proxy(loop, upstream, name="u", protocol="udp", seed=7)
    assert isinstance(proxy, UdpProxy)
    client = _Client()
    transport, _ = await loop.create_datagram_endpoint(lambda: client, remote_addr=(proxy.host, proxy.port))
    try:
        await scenario(proxy, transport, client)
    finally:
        transport.close()
        proxy.close()
        server.close()


def test_udp_datagrams_pass_unchanged_both_ways() -> None:
    async def scenario(proxy: UdpProxy, transport: Any, client: _Client) -> None:
        sent = [os.urandom(1 + i * 7) for i in range(200)]
        for data in sent:
            transport.sendto(data)
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.2)
        assert client.got == sent
        assert proxy.connections == 1 and proxy.descriptors() == 2 and proxy.stats["flows_opened"] == 1

    run(lambda: udp_scenario(scenario))


def test_udp_loss_drops_its_share_within_the_binomial_bound() -> None:
    async def scenario(proxy: UdpProxy, transport: Any, client: _Client) -> None:
        add(proxy, "loss", probability="30%", direction="upstream")
        n = 1000
        for i in range(n):
            transport.sendto(i.to_bytes(4, "big"))
            if i % 50 == 0:
                await asyncio.sleep(0.002)
        await asyncio.sleep(0.3)
        lost = n - len(client.got)
        bound = 4 * (n * 0.3 * 0.7) ** 0.5  # 4 sigma
        assert abs(lost - 300) <= bound, lost
        assert proxy.faults.describe()[0]["packets_dropped"] == lost

    run(lambda: udp_scenario(scenario))


def test_a_udp_refuse_outage_closes_the_port_and_bring_up_reopens_it() -> None:
    async def scenario(proxy: UdpProxy, transport: Any, client: _Client) -> None:
        proxy.faults.take_down("refuse", None)
        await asyncio.sleep(0.12)
        assert not proxy.listening
        transport.sendto(b"x")
        await asyncio.sleep(0.1)
        transport.sendto(b"x")  # the ICMP of the first makes the connected socket report ECONNREFUSED
        await asyncio.sleep(0.1)
        assert any(isinstance(e, ConnectionRefusedError) for e in client.errors) and not client.got
        proxy.faults.bring_up()
        await asyncio.sleep(0.12)
        transport.sendto(b"back")
        await asyncio.sleep(0.1)
        assert client.got == [b"back"]

    run(lambda: udp_scenario(scenario))


def test_idle_udp_flows_expire() -> None:
    async def scenario(proxy: UdpProxy, transport: Any, client: _Client) -> None:
        proxy.idle_s = 0.0
        transport.sendto(b"a")
        await asyncio.sleep(0.05)
        assert proxy.connections == 1
        proxy._sweep()
        assert proxy.connections == 0 and proxy.stats["flows_expired"] == 1
        transport.sendto(b"b")  # a new flow
        await asyncio.sleep(0.05)
        assert client.got == [b"a", b"b"] and proxy.stats["flows_opened"] == 2

    run(lambda: udp_scenario(scenario))


# --- SOCKS5 (Kafka) ---------------------------------------------------------------------------------------


async def socks_connect(
    proxy: SocksProxy, host: str, port: int, password: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """A SOCKS5 CONNECT with the username/password login, as kafka-python does it; returns the reply code."""
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(b"\x05\x01\x02")
    assert await reader.readexactly(2) == b"\x05\x02"
    secret = (password if password is not None else proxy.token).encode()
    writer.write(b"\x01\x05iotix" + bytes([len(secret)]) + secret)
    if await reader.readexactly(2) != b"\x01\x00":
        return reader, writer, -1
    name = host.encode()
    writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", port))
    reply = await reader.readexactly(10)
    return reader, writer, reply[1]


def test_a_socks_proxy_relays_to_the_address_each_client_names() -> None:
    async def scenario() -> None:
        server = await echo_server()
        faults = FaultSet(asyncio.get_running_loop(), "fleet 'k'", datagram=False, per_device=False, seed=None)
        proxy = await start_socks_proxy(asyncio.get_running_loop(), faults, name="k")
        try:
            assert proxy.url == f"socks5h://iotix:{proxy.token}@127.0.0.1:{proxy.port}"
            reader, writer, code = await socks_connect(proxy, "localhost", port_of(server))
            assert code == 0
            await roundtrip(reader, writer, b"kafka bytes")
            spec = parse_fault(
                "latency", {"latency": "150ms", "direction": "upstream"}, name=None, target="t", datagram=False
            )
            faults.add(spec)
            assert 0.14 <= await roundtrip(reader, writer, b"later") <= 0.25
            writer.close()
            assert proxy.upstreams == {f"localhost:{port_of(server)}": 1}
            _, writer, code = await socks_connect(proxy, "127.0.0.1", free_port())
            assert code == 5  # connection refused, as the broker's own port said
            writer.close()
            _, writer, code = await socks_connect(proxy, "localhost", port_of(server), password="guess")
            assert code == -1  # another local process cannot use it as an open relay
            writer.close()
        finally:
            proxy.close()
            faults.close()
            server.close()

    run(scenario)


def test_a_socks_client_gets_its_reply_early_when_the_upstream_connect_hangs() -> None:
    async def scenario() -> None:
        # A listening socket whose accept queue is full: the kernel drops further SYNs, so a connect hangs.
        full = socket.socket()
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(full.getsockname())
            fillers.append(filler)
        await asyncio.sleep(0.1)
        faults = FaultSet(asyncio.get_running_loop(), "fleet 'k'", datagram=False, per_device=False, seed=None)
        proxy = await start_socks_proxy(asyncio.get_running_loop(), faults, name="k")
        proxy.connect_timeout = 0.8
        try:
            t0 = time.monotonic()
            reader, writer, code = await socks_connect(proxy, "127.0.0.1", full.getsockname()[1])
            assert code == 0 and 0.2 <= time.monotonic() - t0 < 0.6  # not a busy wait for kafka-python
            with pytest.raises(ConnectionResetError):  # then the connect gives up: a reset, as a TCP proxy does
                await asyncio.wait_for(reader.read(1), 5)
            writer.close()
            assert proxy.stats["upstream_failures"] == 1
        finally:
            proxy.close()
            faults.close()
            for sock in [*fillers, full]:
                sock.close()

    run(scenario)


def test_a_socks_proxy_in_a_blackhole_answers_the_handshake_then_nothing() -> None:
    async def scenario() -> None:
        server = await echo_server()
        faults = FaultSet(asyncio.get_running_loop(), "fleet 'k'", datagram=False, per_device=False, seed=None)
        proxy = await start_socks_proxy(asyncio.get_running_loop(), faults, name="k")
        try:
            faults.add(parse_fault("blackhole", {}, name="bh", target="t", datagram=False))
            reader, writer, code = await socks_connect(proxy, "127.0.0.1", port_of(server))
            assert code == 0
            writer.write(b"produce")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.3)
            assert proxy.stats["connections_blackholed"] == 1
            writer.close()
        finally:
            proxy.close()
            faults.close()
            server.close()

    run(scenario)


# --- the upstream map of HTTP fleets ----------------------------------------------------------------------


def test_upstream_proxies_make_one_proxy_per_address_and_connect_ahead() -> None:
    async def scenario() -> None:
        server = await echo_server()
        faults = FaultSet(asyncio.get_running_loop(), "fleet 'h'", datagram=False, per_device=False, seed=None)
        proxies = UpstreamProxies(faults, name="fleet 'h'")
        try:
            port = port_of(server)
            routes = await asyncio.gather(*(proxies.route("127.0.0.1", port) for _ in range(3)))
            assert len(set(routes)) == 1 and len(proxies.proxies) == 1
            host, proxy_port = routes[0]
            reader, writer = await asyncio.open_connection(host, proxy_port)
            await roundtrip(reader, writer, b"via a prepared connection")
            writer.close()
            with pytest.raises(ConnectionRefusedError):
                await proxies.route("127.0.0.1", free_port(), timeout=2.0)
            assert len(proxies.proxies) == 2 and proxies.descriptors() >= 2
        finally:
            proxies.close()
            faults.close()
            server.close()
        assert proxies.descriptors() == 0

    run(scenario)


# --- HTTP fleets: the connector maps every server to its proxy ---------------------------------------------


def http_model(url: str, **connection: Any) -> dict[str, Any]:
    return {
        "id": "unit-http-faults",
        "name": "HTTP sensor behind faults",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "http",
        "connection": {"url": url, **connection},
        "telemetry": [
            {"name": "t", "type": "number", "intervalMs": 1000, "generator": {"type": "constant", "value": 1}}
        ],
    }


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_http_requests_go_through_the_fleets_proxy_with_url_and_host_unchanged(host: str) -> None:
    from aiohttp import web
    from transport_fakes import FakeOutcomes, make_links, make_spec, until

    from iotix.transport.http import create

    async def scenario() -> None:
        seen: list[tuple[str, str, int]] = []

        async def handle(request: web.Request) -> web.Response:
            peer = request.transport.get_extra_info("peername") if request.transport else ("", 0)
            seen.append((request.path, request.headers["Host"], peer[1]))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        faults = FaultSet(asyncio.get_running_loop(), "fleet 'h'", datagram=False, per_device=False, seed=None)
        outcomes = FakeOutcomes()
        links = make_links(1, fleet="h")
        spec = make_spec(
            http_model(f"http://{host}:{port}/t/${{deviceId}}", maxConnections=2), fleet="h", faults=faults
        )
        transport = create(spec, links, outcomes)
        try:
            assert transport.descriptors() == 3 * 2 + 1 and not transport.per_device_faults
            await transport.connect(links[0])
            assert transport.send(links[0], b'{"t":1}')
            await until(lambda: len(outcomes.acked) == 1, "the first answer")
            assert seen[0][:2] == ("/t/h-0", f"{host}:{port}")  # the URL and Host header of the real server
            (proxy,) = transport._fault_proxies.proxies.values()
            assert proxy.upstream == f"{host}:{port}" and proxy.stats["connections_accepted"] == 1
            assert seen[0][2] != proxy.port  # the server sees the proxy's upstream socket, not aiohttp's

            assert transport.send(links[0], b'{"t":1}')  # on the kept-alive connection: the base latency
            await until(lambda: len(outcomes.acked) == 2, "the second answer")
            base = outcomes.acked[1][2]
            faults.add(
                parse_fault(
                    "latency", {"latency": "200ms", "direction": "upstream"}, name="l", target="t", datagram=False
                )
            )
            assert transport.send(links[0], b'{"t":2}')
            await until(lambda: len(outcomes.acked) == 3, "the delayed answer")
            assert 0.19 <= outcomes.acked[2][2] - base <= 0.3, outcomes.acked
        finally:
            await transport.close()
            faults.close()
            await runner.cleanup()
        assert transport._fault_proxies.proxies == {}  # closed with the transport

    run(scenario)


def test_an_http_server_that_refuses_fails_as_without_the_proxy() -> None:
    from transport_fakes import FakeOutcomes, make_links, make_spec, until

    from iotix.transport.http import create

    async def scenario() -> None:
        port = free_port()
        faults = FaultSet(asyncio.get_running_loop(), "fleet 'h'", datagram=False, per_device=False, seed=None)
        outcomes = FakeOutcomes()
        links = make_links(1, fleet="h")
        transport = create(
            make_spec(http_model(f"http://127.0.0.1:{port}/t"), fleet="h", faults=faults), links, outcomes
        )
        try:
            await transport.connect(links[0])
            transport.send(links[0], b"{}")
            await until(lambda: outcomes.failures, "the failure")
            failure = outcomes.failures[0]
            assert failure["code"] == "connection_error" and failure["fault"]
            assert f"POST http://127.0.0.1:{port}/t failed: cannot connect to 127.0.0.1:{port}" in failure["reason"]
        finally:
            await transport.close()
            faults.close()

    run(scenario)
