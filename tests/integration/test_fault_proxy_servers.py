"""Standalone fault proxies (``Start Network Fault Proxy``) in front of real servers, used by independent clients.

- Mosquitto with paho-mqtt clients: messages pass through, latency delays them by its amount, a blackhole keeps
  the connection open but silent so the broker's keep-alive expires and the last will is published (no FIN, no
  RST), a refuse-mode outage refuses connects and the port comes back;
- an aiohttp server with ``requests``: latency, a reset is a connection reset;
- the CoAP sink (aiocoap) with ``coap-client-notls`` (libcoap) over the UDP proxy: requests pass, 100 % loss
  upstream makes the client time out and nothing reaches the server.

The proxies run on a runtime loop of the test's own (as Robot keywords run them).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests
from aiohttp import web

from iotix.fault.proxy import TcpProxy, UdpProxy, start_proxy
from iotix.fault.spec import parse_fault
from iotix.runtime import Runtime
from iotix.services import find_mosquitto, start_local_broker
from iotix.services.coap_server import CoapSink

pytestmark = pytest.mark.integration

COAP_CLIENT = shutil.which("coap-client-notls") or shutil.which("coap-client")


@pytest.fixture
def rt() -> Iterator[Runtime]:
    runtime = Runtime()
    runtime.start()
    yield runtime
    runtime.stop()


def proxy_for(rt: Runtime, upstream: str, name: str, protocol: str = "tcp") -> Any:
    proxy = rt.call(start_proxy, rt.loop, upstream, name=name, protocol=protocol, seed=1)
    return proxy


def add(rt: Runtime, proxy: TcpProxy | UdpProxy, kind: str, **settings: Any) -> str:
    def run() -> str:
        spec = parse_fault(kind, settings, name=None, target=proxy.faults.target, datagram=proxy.protocol == "udp")
        return proxy.faults.add(spec).name

    return rt.call(run)


# --- MQTT (Mosquitto, paho) -----------------------------------------------------------------------------------


class Watcher:
    """A paho subscriber connected straight to the broker: arrival times per topic."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.arrivals: list[tuple[str, bytes, float]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watcher")
        self.client.on_message = lambda _c, _u, m: self.arrivals.append((m.topic, m.payload, time.monotonic()))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        assert subscribed.wait(10), "the watcher did not subscribe"

    def wait_for(self, topic: str, count: int, timeout: float) -> list[tuple[str, bytes, float]]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = [a for a in self.arrivals if a[0] == topic]
            if len(got) >= count:
                return got
            time.sleep(0.01)
        raise AssertionError(f"{count} message(s) on {topic} did not arrive within {timeout} s: {self.arrivals}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def device_client(host: str, port: int, keepalive: int) -> tuple[mqtt.Client, threading.Event, list[Any]]:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev-{time.monotonic_ns()}")
    client.will_set("it/fault/will", b"gone", qos=1)
    connected = threading.Event()
    disconnects: list[Any] = []
    client.on_connect = lambda *_a: connected.set()
    client.on_disconnect = lambda _c, _u, _f, rc, _p: disconnects.append((rc, time.monotonic()))
    client.connect(host, port, keepalive=keepalive)
    client.loop_start()
    assert connected.wait(10), "the device did not connect through the proxy"
    return client, connected, disconnects


@pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed")
def test_mqtt_through_a_proxy_latency_then_a_silent_partition_fires_the_will(rt: Runtime) -> None:
    broker = start_local_broker("mosquitto")
    watcher = Watcher(broker.host, broker.port, "it/fault/#")
    proxy = proxy_for(rt, f"{broker.host}:{broker.port}", "mqtt")
    client = None
    try:
        client, _, disconnects = device_client(proxy.host, proxy.port, keepalive=2)

        def publish_times(n: int, tag: str) -> list[float]:
            start = len(watcher.arrivals)
            sent = []
            for i in range(n):
                sent.append(time.monotonic())
                client.publish("it/fault/data", f"{tag}-{i}".encode(), qos=1)
                time.sleep(0.05)
            got = watcher.wait_for("it/fault/data", start + n, 10)[start:]
            assert [p for _, p, _ in got] == [f"{tag}-{i}".encode() for i in range(n)]  # all, in order
            return [t - s for (_, _, t), s in zip(got, sent, strict=True)]

        base = min(publish_times(10, "base"))
        add(rt, proxy, "latency", latency="200ms", direction="upstream")
        delayed = publish_times(10, "late")
        assert all(0.18 <= d - base <= 0.225 for d in delayed), (base, delayed)
        rt.call(proxy.faults.clear)

        add(rt, proxy, "blackhole")  # a partition: the connection stays open, nothing passes
        cut_at = time.monotonic()
        will = watcher.wait_for("it/fault/will", 1, 1.5 * 2 + 3)
        assert will[0][2] - cut_at >= 2.0  # the broker waited for its keep-alive, it was not told
        assert rt.call(lambda: proxy.stats["connections_reset"] + proxy.stats["connections_closed"]) == 0
        described = rt.call(proxy.faults.describe)
        assert described[0]["kind"] == "blackhole" and described[0]["bytes_held"] > 0  # PINGREQs held
        # the device was not told either: it found out by its own keep-alive (paho's timer), not by a FIN or RST
        assert all("Keep alive timeout" in str(rc) for rc, _ in disconnects), disconnects
    finally:
        if client is not None:
            client.loop_stop()
        rt.call(proxy.close)
        watcher.close()
        broker.stop()


@pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed")
def test_mqtt_connects_are_refused_during_a_refuse_outage_and_the_port_comes_back(rt: Runtime) -> None:
    broker = start_local_broker("mosquitto")
    proxy = proxy_for(rt, f"{broker.host}:{broker.port}", "mqtt")
    try:
        client, _, _ = device_client(proxy.host, proxy.port, keepalive=30)
        client.loop_stop()
        client.disconnect()
        rt.call(proxy.faults.take_down, "refuse", None)
        time.sleep(0.15)
        probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="refused")
        with pytest.raises(ConnectionRefusedError):
            probe.connect(proxy.host, proxy.port)
        rt.call(proxy.faults.bring_up)
        time.sleep(0.15)
        client, _, _ = device_client(proxy.host, proxy.port, keepalive=30)  # the same port again
        client.loop_stop()
        client.disconnect()
    finally:
        rt.call(proxy.close)
        broker.stop()


# --- HTTP (aiohttp server, requests) -----------------------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[web.AppRunner, int]:
        app = web.Application()

        async def ping(_request: web.Request) -> web.Response:
            return web.Response(text="pong")

        app.router.add_get("/ping", ping)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, runner.addresses[0][1]

    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield f"127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_http_through_a_proxy_latency_and_reset(rt: Runtime, http_server: str) -> None:
    proxy = proxy_for(rt, http_server, "web")
    url = f"http://{proxy.host}:{proxy.port}/ping"
    try:
        with requests.Session() as session:
            base = min(session.get(url, timeout=5).elapsed.total_seconds() for _ in range(5))
            add(rt, proxy, "latency", latency="200ms", direction="downstream")
            delayed = [session.get(url, timeout=5).elapsed.total_seconds() for _ in range(3)]
            assert all(0.18 <= d - base <= 0.225 for d in delayed), (base, delayed)
            rt.call(proxy.faults.clear)
            add(rt, proxy, "reset")
            with pytest.raises(requests.ConnectionError):
                session.get(url, timeout=5)
        assert rt.call(lambda: proxy.stats["connections_reset"]) >= 1
    finally:
        rt.call(proxy.close)


# --- CoAP (aiocoap sink, libcoap client) ------------------------------------------------------------------


@pytest.mark.skipif(COAP_CLIENT is None, reason="libcoap's coap-client is not installed")
def test_coap_through_a_udp_proxy_passes_and_total_loss_times_out(rt: Runtime) -> None:
    sink = rt.call(CoapSink.start)
    proxy = proxy_for(rt, f"127.0.0.1:{sink.port}", "coap", protocol="udp")
    url = f"coap://127.0.0.1:{proxy.port}/t/dev-1"

    def post(payload: str, wait_s: int) -> subprocess.CompletedProcess[str]:
        command = [str(COAP_CLIENT), "-m", "post", "-e", payload, "-B", str(wait_s), url]
        return subprocess.run(command, check=False, capture_output=True, text=True, timeout=wait_s + 20)

    try:
        done = post('{"v":1}', 5)
        assert done.returncode == 0, done.stderr
        assert rt.call(lambda: sink.count) == 1
        add(rt, proxy, "loss", probability="100%", direction="upstream")
        post('{"v":2}', 2)  # CON retransmissions, all lost: the client gives up
        assert rt.call(lambda: sink.count) == 1
        dropped = rt.call(lambda: proxy.faults.describe()[0]["packets_dropped"])
        assert dropped >= 1
        rt.call(proxy.faults.clear)
        assert post('{"v":3}', 5).returncode == 0
        assert rt.call(lambda: sink.count) == 2
    finally:
        rt.call(proxy.close)
        rt.call(sink.stop)
