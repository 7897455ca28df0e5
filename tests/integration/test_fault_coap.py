"""Network faults on CoAP fleets (UDP) against a real aiocoap sink, proven by what the sink received.

Client-mode devices share one UDP socket, and each device's datagrams pass a tap of its own
(:class:`iotix.fault.datagram.DatagramTap`): faults chosen per device, losses per datagram. Server-mode
devices get taps on their own sockets, one per peer.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from harness import Harness as BaseHarness

from iotix.fault.datagram import DatagramTap
from iotix.fault.spec import parse_fault
from iotix.fleet.fleet import Fleet
from iotix.services.coap_server import CoapSink
from iotix.transport.coap_client import CoapClientError, coap_request

pytestmark = pytest.mark.integration


def model_dict(interval_ms: int = 100, **connection: Any) -> dict[str, Any]:
    return {
        "id": "fault-coap",
        "name": "CoAP fault sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "coap",
        "connection": {"host": "127.0.0.1", "port": 5683, **connection},
        "telemetry": [
            {
                "name": "temperature",
                "type": "number",
                "intervalMs": interval_ms,
                "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
            }
        ],
        "payload": {"format": "json"},
    }


class Harness(BaseHarness):
    def sink(self) -> CoapSink:
        sink = self.rt.call(CoapSink.start)
        self.on_close(lambda: self.rt.call(sink.stop))
        return sink

    def add_fault(self, fleet: Fleet, kind: str, devices: list[str] | None = None, **settings: Any) -> str:
        def add() -> str:
            assert fleet.faults is not None
            spec = parse_fault(kind, settings, name=None, target=f"fleet '{fleet.name}'", datagram=True)
            return fleet.faults.add(spec, devices).name

        return self.rt.call(add)

    def fault_stats(self, fleet: Fleet) -> dict[str, dict[str, Any]]:
        assert fleet.faults is not None
        return {entry["name"]: entry for entry in self.rt.call(fleet.faults.describe)}


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def binomial_bound(n: int, p: float, sigmas: float = 4.0) -> float:
    return sigmas * math.sqrt(n * p * (1 - p))


def test_con_requests_with_a_fifth_lost_both_ways_are_retransmitted_until_every_reading_arrives(h: Harness) -> None:
    sink = h.sink()
    data = model_dict(interval_ms=200, port=sink.port, ackTimeoutMs=100, maxRetransmit=6)
    fleet = h.fleet("con", data, 10, seed=5)
    h.add_fault(fleet, "loss", probability="20%")  # both directions: requests and their ACKs
    h.start(fleet)
    h.running(fleet)
    assert all(isinstance(d.conn.tap, DatagramTap) for d in fleet.devices)
    time.sleep(3.0)
    expected = h.rt.call(fleet.expected_sequences)  # every reading handed over so far ...
    n = sum(stop for _, stop in expected.values())
    assert n >= 10 * 14

    def all_arrived() -> bool:
        return sink.tracker.report(expected).lost == 0

    h.wait(all_arrived, 15, "every reading at the sink")  # ... arrives, the fault still acting
    report = h.rt.call(lambda: sink.tracker.report(expected))
    assert report.duplicates == 0, report.as_dict()  # retransmissions of answered requests are deduplicated
    retransmissions = h.rt.call(lambda: fleet.transport.retransmissions)
    stats = h.fault_stats(fleet)["loss-1"]
    # a request is retransmitted when it or its ACK was lost: 1 - 0.8 * 0.8 = 36 % of transmissions
    assert retransmissions >= 0.2 * n, (retransmissions, n)
    assert stats["packets_dropped"] >= 0.5 * retransmissions
    assert fleet.stats()["messagesFailed"] <= 1
    h.stop(fleet)


def test_non_requests_with_a_fifth_lost_upstream_lose_a_fifth_at_the_sink(h: Harness) -> None:
    sink = h.sink()
    fleet = h.fleet("non", model_dict(interval_ms=50, port=sink.port, confirmable=False), 10, seed=9)
    h.add_fault(fleet, "loss", probability="20%", direction="upstream")
    h.start(fleet)
    h.running(fleet)
    time.sleep(3.0)
    h.stop(fleet)
    time.sleep(0.3)
    report = h.rt.call(lambda: sink.tracker.report(fleet.expected_sequences()))
    n = report.expected
    assert n >= 10 * 50
    assert abs(report.lost - 0.2 * n) <= binomial_bound(n, 0.2), report.as_dict()
    assert h.fault_stats(fleet)["loss-1"]["packets_dropped"] == report.lost


def test_faults_act_on_the_chosen_devices_of_the_shared_socket_only(h: Harness) -> None:
    sink = h.sink()
    fleet = h.fleet("pick", model_dict(interval_ms=100, port=sink.port, confirmable=False), 4)
    h.add_fault(fleet, "blackhole", ["pick-2"])
    h.start(fleet)
    h.running(fleet)
    time.sleep(1.0)
    h.stop(fleet)
    time.sleep(0.2)
    report = h.rt.call(lambda: sink.tracker.report(fleet.expected_sequences()))
    lost = {d.device_id: d.lost for d in report.devices}
    assert lost["pick-2"] == next(d.expected for d in report.devices if d.device_id == "pick-2") > 0
    assert lost["pick-0"] == lost["pick-1"] == lost["pick-3"] == 0


def test_an_outage_makes_datagrams_vanish_until_the_target_is_up(h: Harness) -> None:
    sink = h.sink()
    data = model_dict(interval_ms=100, port=sink.port, ackTimeoutMs=50, maxRetransmit=1)
    fleet = h.fleet("out", data, 3)
    h.start(fleet)
    h.running(fleet)
    h.wait(lambda: fleet.stats()["messagesAcked"] >= 6, what="acks before the outage")
    h.rt.call(fleet.faults.take_down, "refuse", None)
    failed = fleet.stats()["messagesFailed"]
    h.wait(lambda: fleet.stats()["messagesFailed"] >= failed + 3, what="timeouts during the outage")
    assert "timeout" in fleet.devices[0].last_error  # no refusal on UDP: the datagrams vanished
    outage = h.fault_stats(fleet)["target-down"]
    assert outage["packets_dropped"] >= 3
    h.rt.call(fleet.faults.bring_up)
    acked = fleet.stats()["messagesAcked"]
    h.wait(lambda: fleet.stats()["messagesAcked"] >= acked + 6, what="acks after the outage")
    h.stop(fleet)


def test_a_server_mode_device_answers_late_under_latency(h: Harness) -> None:
    fleet = h.fleet("srv", model_dict(interval_ms=200, mode="server"), 2)
    h.start(fleet)
    h.running(fleet)
    ports = [fleet.transport.server_port_of(d) for d in fleet.devices]  # type: ignore[attr-defined]

    async def timed_get(port: int) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        code, _ = await coap_request("GET", f"coap://127.0.0.1:{port}/telemetry", timeout=5)
        assert code == "2.05"
        return loop.time() - start

    assert h.rt.call(timed_get, ports[0]) < 0.15
    h.add_fault(fleet, "latency", ["srv-0"], latency="300ms", direction="downstream")
    assert 0.29 <= h.rt.call(timed_get, ports[0]) < 0.6  # the request reaches the device late
    assert h.rt.call(timed_get, ports[1]) < 0.15  # the other device is not affected
    h.add_fault(fleet, "blackhole", ["srv-1"])

    async def unanswered() -> str:
        try:
            await coap_request("GET", f"coap://127.0.0.1:{ports[1]}/telemetry", timeout=1)
        except CoapClientError as err:
            return str(err)
        return "answered"

    assert "timeout" in h.rt.call(unanswered)
    h.stop(fleet)
