"""Network faults on HTTP and Kafka fleets, against a real aiohttp server and a real Kafka broker (Tansu).

The fleets' pooled connections go through fault proxies (:mod:`iotix.fault.proxy`): aiohttp's connections
through a TCP proxy per server, kafka-python's broker connections through a SOCKS5 proxy. Proven here: latency
raises the reported request/produce latency by the fault's amount; a blackhole makes requests time out, opens
the circuit breaker and moves devices to ``error``; removing it closes the breaker and delivery resumes. The
server and the broker see what arrived (an independent confluent-kafka consumer reads the topic).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest
from aiohttp import web
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from harness import Harness

from iotix.fault.spec import parse_fault
from iotix.fleet.delivery import DeliverySettings
from iotix.fleet.device import DeviceState
from iotix.fleet.fleet import Fleet
from iotix.observe.histogram import Histogram
from iotix.services.kafka_broker import KafkaBroker, start_local_kafka_broker

pytestmark = pytest.mark.integration

#: what the breaker and the error state need to react within a few seconds
FAST_DELIVERY = DeliverySettings(
    max_retries=0, retry_base_s=0.05, retry_cap_s=0.1, circuit_threshold=5, circuit_cooldown_s=1.0, error_threshold=2
)


def add_fault(h: Harness, fleet: Fleet, kind: str, **settings: Any) -> str:
    """Add a fault to the fleet on the loop, as ``Add Network Fault`` does; returns its name."""

    def add() -> str:
        assert fleet.faults is not None
        spec = parse_fault(kind, settings, name=None, target=fleet.faults.target, datagram=False)
        return fleet.faults.add(spec).name

    return h.rt.call(add)


def remove_fault(h: Harness, fleet: Fleet, name: str) -> None:
    h.rt.call(lambda: fleet.faults.remove(name))  # type: ignore[union-attr]


def mean_latency_after(h: Harness, fleet: Fleet, count: int, what: str) -> float:
    """The mean latency (s) the transport reports for the next ``count`` acknowledged messages, counted from
    0.5 s on (requests already on the wire when a fault was added are answered by then)."""
    time.sleep(0.5)
    h.rt.call(lambda: setattr(fleet.transport, "latency", Histogram()))
    h.wait(lambda: fleet.transport.latency.count >= count, timeout=30, what=what)
    return h.rt.call(lambda: fleet.transport.latency.mean)


def assert_blackhole_opens_the_circuit_and_healing_closes_it(h: Harness, fleet: Fleet) -> None:
    name = add_fault(h, fleet, "blackhole")
    h.wait(lambda: fleet.stats()["circuitState"] == "open", timeout=20, what="the circuit to open")
    h.wait(lambda: all(d.state is DeviceState.ERROR for d in fleet.devices), timeout=20, what="devices in error")
    stats = fleet.stats()
    assert stats["failuresByReason"].get("timeout", 0) > 0, stats["failuresByReason"]
    described = h.rt.call(fleet.faults.describe)  # type: ignore[union-attr]
    assert described[0]["kind"] == "blackhole" and described[0]["bytes_held"] > 0
    acked = stats["messagesAcked"]
    remove_fault(h, fleet, name)
    h.wait(lambda: fleet.stats()["messagesAcked"] > acked + 10, timeout=30, what="delivery after healing")
    h.wait(lambda: fleet.stats()["circuitState"] == "closed", timeout=20, what="the circuit to close")
    h.wait(lambda: all(d.state is DeviceState.RUNNING for d in fleet.devices), timeout=20, what="devices running")


# --- HTTP ---------------------------------------------------------------------------------------------------


class CountingServer:
    """An aiohttp server in its own thread that answers 200 at once and counts requests."""

    def __init__(self) -> None:
        self.count = 0
        self.hosts: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner, self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.url = f"http://127.0.0.1:{self.port}"

    async def _start(self) -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.count += 1
        self.hosts.add(request.headers.get("Host", ""))
        return web.Response(text="ok")

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@pytest.fixture
def server():
    s = CountingServer()
    yield s
    s.close()


def http_model(url: str, interval_ms: int = 100, **connection: Any) -> dict[str, Any]:
    return {
        "id": "it-http-faults",
        "name": "HTTP sensor behind network faults",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "http",
        "connection": {"url": url, **connection},
        "telemetry": [
            {
                "name": "temperature",
                "type": "number",
                "intervalMs": interval_ms,
                "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
            }
        ],
    }


def test_http_latency_raises_the_request_latency_by_the_faults_amount(h: Harness, server: CountingServer) -> None:
    # 16 requests/s over 10 connections: with 200 ms per request the pool still has room (no queueing)
    fleet = h.fleet("hlat", http_model(server.url + "/t/${deviceId}", interval_ms=250, maxConnections=10), 4)
    assert fleet.faults is not None and not fleet.transport.per_device_faults
    h.start(fleet)
    h.running(fleet)
    base = mean_latency_after(h, fleet, 40, "acks without a fault")
    name = add_fault(h, fleet, "latency", latency="200ms", direction="upstream")
    delayed = mean_latency_after(h, fleet, 40, "acks with 200 ms latency")
    # every request waits out the 200 ms on its way up; what it waited before may partly overlap them (a busy
    # machine's baseline varies by tens of ms), so: at least the latency, at most the baseline + 10 % + 5 ms
    assert 0.2 <= delayed <= base + 0.2 * 1.1 + 0.005, (base, delayed)
    remove_fault(h, fleet, name)
    healed = mean_latency_after(h, fleet, 40, "acks after the fault")
    assert healed < base + 0.05, (base, healed)
    proxies = fleet.transport._fault_proxies.proxies  # type: ignore[attr-defined]
    assert list(proxies) == [("127.0.0.1", server.port)] and server.hosts == {f"127.0.0.1:{server.port}"}
    assert fleet.stats()["messagesFailed"] == 0
    h.stop(fleet)
    assert fleet.transport._fault_proxies.proxies == {}  # type: ignore[attr-defined]


def test_http_blackhole_opens_the_circuit_and_moves_devices_to_error_and_healing_recovers(
    h: Harness, server: CountingServer
) -> None:
    data = http_model(server.url + "/t/${deviceId}", timeoutMs=800, maxConnections=4)
    fleet = h.fleet("hbh", data, 4, delivery=FAST_DELIVERY)
    h.start(fleet)
    h.wait(lambda: fleet.stats()["messagesAcked"] >= 20, what="acks before the fault")
    assert_blackhole_opens_the_circuit_and_healing_closes_it(h, fleet)
    h.stop(fleet)


def test_http_outage_in_mode_refuse_fails_connects_as_a_down_server_would(h: Harness, server: CountingServer) -> None:
    fleet = h.fleet("hdown", http_model(server.url + "/t", timeoutMs=800), 2, delivery=FAST_DELIVERY)
    h.start(fleet)
    h.wait(lambda: fleet.stats()["messagesAcked"] >= 10, what="acks before the outage")
    h.rt.call(lambda: fleet.faults.take_down("refuse", None))  # type: ignore[union-attr]
    h.wait(lambda: fleet.stats()["circuitState"] == "open", timeout=20, what="the circuit to open")
    log = h.rt.call(lambda: [e["error"] for d in fleet.devices for e in d.tlog.entries(100) if e["error"]])
    refused = f"cannot connect to 127.0.0.1:{server.port}: Connection refused (network fault: target down)"
    assert any(refused in error for error in log), log
    outage = h.rt.call(fleet.faults.describe)[0]  # type: ignore[union-attr]
    assert outage["name"] == "target-down" and outage["connections_refused"] >= 1
    acked = fleet.stats()["messagesAcked"]
    h.rt.call(fleet.faults.bring_up)  # type: ignore[union-attr]
    h.wait(lambda: fleet.stats()["messagesAcked"] > acked + 10, timeout=30, what="delivery after bring up")
    h.stop(fleet)


# --- Kafka --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker() -> KafkaBroker:
    b = start_local_kafka_broker()
    yield b
    b.stop()


def kafka_model(topic: str, interval_ms: int = 100, **connection: Any) -> dict[str, Any]:
    return {
        "id": "it-kafka-faults",
        "name": "Kafka sensor behind network faults",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "kafka",
        "connection": {"bootstrap": "localhost:9092", "topic": topic, "acks": 1, "lingerMs": 0, **connection},
        "telemetry": [
            {
                "name": "speed",
                "type": "number",
                "intervalMs": interval_ms,
                "generator": {"type": "random", "min": 0, "max": 90, "precision": 1},
            }
        ],
    }


def create_topic(broker: KafkaBroker) -> str:
    name = f"it-faults-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(10)
    return name


def count_messages(broker: KafkaBroker, topic: str, expected: int, timeout: float = 20.0) -> int:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    count = 0
    deadline = time.monotonic() + timeout
    try:
        while count < expected and time.monotonic() < deadline:
            count += sum(1 for m in consumer.consume(1000, 0.5) if m.error() is None)
    finally:
        consumer.close()
    return count


def test_kafka_latency_raises_the_produce_latency_and_every_broker_connection_is_proxied(
    h: Harness, broker: KafkaBroker
) -> None:
    topic = create_topic(broker)
    conn = {"host": broker.host, "port": broker.port}
    fleet = h.fleet("klat", kafka_model(topic), 4, connection=conn)
    h.start(fleet)
    h.running(fleet)
    base = mean_latency_after(h, fleet, 40, "acks without a fault")
    name = add_fault(h, fleet, "latency", latency="200ms", direction="upstream")
    delayed = mean_latency_after(h, fleet, 40, "acks with 200 ms latency")
    # every request waits out the 200 ms on its way up; what it waited before may partly overlap them (a busy
    # machine's baseline varies by tens of ms), so: at least the latency, at most the baseline + 10 % + 5 ms
    assert 0.2 <= delayed <= base + 0.2 * 1.1 + 0.005, (base, delayed)
    remove_fault(h, fleet, name)
    pool = fleet.transport.pool  # type: ignore[attr-defined]
    proxy = pool.proxy
    assert proxy is not None and pool.settings["proxy_url"] == proxy.url
    # bootstrap and the broker that metadata names both went through the proxy (kafka-python asked it)
    assert f"{broker.host}:{broker.port}" in proxy.upstreams and proxy.stats["upstream_failures"] == 0
    h.stop(fleet)
    stats = fleet.stats()
    assert stats["messagesFailed"] == 0
    assert count_messages(broker, topic, stats["messagesAcked"]) == stats["messagesAcked"]  # the broker has them
    assert pool.proxy is None and proxy.descriptors() == 0  # closed with the pool


def test_kafka_blackhole_opens_the_circuit_and_moves_devices_to_error_and_healing_recovers(
    h: Harness, broker: KafkaBroker
) -> None:
    topic = create_topic(broker)
    conn = {"host": broker.host, "port": broker.port}
    fleet = h.fleet("kbh", kafka_model(topic, maxBlockMs=1000), 4, connection=conn, delivery=FAST_DELIVERY)
    h.start(fleet)
    h.wait(lambda: fleet.stats()["messagesAcked"] >= 20, what="acks before the fault")
    assert_blackhole_opens_the_circuit_and_healing_closes_it(h, fleet)
    h.stop(fleet)


def test_a_kafka_fleet_with_faults_does_not_share_producers_with_another_fleet(h: Harness, broker: KafkaBroker) -> None:
    topic = create_topic(broker)
    conn = {"host": broker.host, "port": broker.port}
    a = h.fleet("ksa", kafka_model(topic), 2, connection=conn)
    b = h.fleet("ksb", kafka_model(topic), 2, connection=conn, ids=["ksb-x", "ksb-y"])
    h.start(a)
    h.start(b)
    h.wait(lambda: a.stats()["messagesAcked"] >= 4 and b.stats()["messagesAcked"] >= 4, what="acks")
    assert a.transport.pool is not b.transport.pool  # type: ignore[attr-defined]
    name = add_fault(h, a, "blackhole")
    acked = b.stats()["messagesAcked"]
    h.wait(lambda: b.stats()["messagesAcked"] > acked + 10, what="the other fleet to go on")
    remove_fault(h, a, name)
    h.stop(a)
    h.stop(b)
