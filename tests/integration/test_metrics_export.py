"""The InfluxDB export against a real VictoriaMetrics (Debian ``victoria-metrics``, InfluxDB write API) and
MQTT fleets against a real Mosquitto: every point written is stored, field by field; a store that is down
or goes down neither slows a fleet nor grows memory, and what is lost is counted and reported."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest
from harness import BrokerHarness

from iotix.fleet.fleet import Fleet
from iotix.observe.influx import InfluxExport
from iotix.observe.series import FleetSeries
from iotix.services import (
    MetricsStore,
    find_mosquitto,
    find_victoria_metrics,
    pick_free_port,
    start_local_broker,
    start_local_metrics_store,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed"),
    pytest.mark.skipif(find_victoria_metrics() is None, reason="VictoriaMetrics is not installed"),
]

#: Written here independently of iotix.observe.influx: field name -> (where, key) of what the hub handed over.
FIELDS = {
    "messages_sent_total": ("totals", "sent"),
    "messages_acked_total": ("totals", "acked"),
    "messages_failed_total": ("totals", "failed"),
    "messages_dropped_total": ("totals", "dropped"),
    "retries_total": ("totals", "retries"),
    "bytes_sent_total": ("totals", "bytes"),
    "connects_total": ("totals", "connects"),
    "disconnects_total": ("totals", "disconnects"),
    "reconnects_total": ("totals", "reconnects"),
    "connect_failures_total": ("totals", "connectFailures"),
    "devices_dropped_total": ("totals", "devicesDropped"),
    "devices_restored_total": ("totals", "devicesRestored"),
    "devices": ("row", "devices"),
    "devices_connected": ("row", "connected"),
    "devices_in_error": ("row", "inError"),
    "messages_queued": ("row", "queued"),
    "network_faults": ("row", "networkFaults"),
    "network_backlog_bytes": ("row", "backlogBytes"),
}
INTERVAL_MS = 50  # 20 messages a second per device
DEVICES = 20
RATE = DEVICES * 1000 // INTERVAL_MS  # 400 messages a second


def model_dict(model_id: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "name": "export sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {"host": "127.0.0.1", "port": 1883, "topicPattern": "exp/${deviceId}", "qos": 0},
        "telemetry": [
            {
                "name": "temperature",
                "type": "number",
                "intervalMs": INTERVAL_MS,
                "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
            }
        ],
    }


class Harness(BrokerHarness):
    """Fleets pointed at the broker; a recorder of what the hub hands to its sinks; exports to close."""

    def __init__(self, broker: Any) -> None:
        super().__init__(broker)
        self.handed: list[dict[str, Any]] = []
        hub = self.sim.metrics
        self.rt.call(hub.add_sink, self._record)
        self.on_close(lambda: self.rt.call(hub.remove_sink, self._record))

    def _record(self, pairs: list[tuple[FleetSeries, dict[str, Any]]]) -> None:
        for series, row in pairs:  # on the loop, in the same round as the export's sink
            self.handed.append(
                {
                    "fleet": series.name,
                    "ts": row["ts"],
                    "totals": dict(series.totals),
                    "row": dict(row),
                    "failures": dict(series.failures_total),
                }
            )

    def export(self, url: str, **kwargs: Any) -> tuple[InfluxExport, list[float]]:
        """An export registered with the hub, and the CPU time each call of its sink took on the loop (s;
        thread CPU time, so that a busy machine preempting the loop does not count)."""
        export = InfluxExport(url, None, "", "iotix", hub=self.sim.metrics, **kwargs)
        durations: list[float] = []

        def timed(pairs: list[tuple[FleetSeries, dict[str, Any]]]) -> None:
            start = time.thread_time()
            export.sink(pairs)
            durations.append(time.thread_time() - start)

        self.rt.call(self.sim.metrics.add_sink, timed)
        self.on_close(lambda: self.rt.call(self.sim.metrics.remove_sink, timed))
        self.on_close(lambda: export.close(1.0))
        return export, durations

    def run(self, fleet: Fleet, seconds: float) -> None:
        """Run ``fleet`` ``seconds``, stop it, and wait for the hub's round with its last second."""
        self.start(fleet)
        self.running(fleet)
        time.sleep(seconds)
        self.stop(fleet)
        rows = len(self.handed)
        end = time.monotonic() + 3.0
        while len(self.handed) == rows and time.monotonic() < end:
            time.sleep(0.05)

    def points_handed(self, samples: bool = False) -> int:
        """The points the handed rows make: one main, one per latency kind with samples, one per reason; with
        ``samples`` the samples they make in a Prometheus-style store (a sample per field: 18, 5 and 1)."""
        total = 0
        for item in self.handed:
            row = item["row"]
            kinds = sum(
                1 for key in ("latenessMs", "requestLatencyMs", "e2eLatencyMs") if (row[key] or {}).get("count")
            )
            failures = len(item["failures"])
            total += len(FIELDS) + 5 * kinds + failures if samples else 1 + kinds + failures
        return total


@pytest.fixture(scope="module")
def broker() -> Iterator[Any]:
    b = start_local_broker("mosquitto")
    yield b
    b.stop()


@pytest.fixture(scope="module")
def store() -> Iterator[MetricsStore]:
    s = start_local_metrics_store()
    yield s
    s.stop()


@pytest.fixture
def h(broker: Any) -> Iterator[Harness]:
    harness = Harness(broker)
    yield harness
    harness.close()


def stored(store: MetricsStore, selector: str, expected: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Every series ``selector`` matches, once they hold ``expected`` samples in all (or after ``timeout``)."""
    end = time.monotonic() + timeout
    while True:
        store.flush()
        series = store.export(selector, start=time.time() - 3600)
        if sum(len(s["values"]) for s in series) >= expected or time.monotonic() >= end:
            return series
        time.sleep(0.2)


def test_every_point_written_is_stored_field_by_field(h: Harness, store: MetricsStore) -> None:
    export, durations = h.export(store.url, interval_s=0.5, tags={"case": "every-point"})
    fleet = h.fleet("exp-all", model_dict("exp-all"), DEVICES)
    h.run(fleet, 3.0)
    stats = export.close(10.0)
    run_id = h.sim.metrics.run_id
    mine = [item for item in h.handed if item["fleet"] == "exp-all"]
    assert len(mine) >= 4
    assert stats == {
        "pointsQueued": 0,
        "pointsWritten": h.points_handed(),
        "pointsFailed": 0,
        "pointsDropped": 0,
        "lastError": None,
    }
    selector = f'{{__name__=~"iotix.*", run_id="{run_id}"}}'
    series = stored(store, selector, h.points_handed(samples=True))
    by_name = {s["metric"]["__name__"]: s for s in series if "kind" not in s["metric"] and "reason" not in s["metric"]}
    assert set(by_name) == {f"iotix_{field}" for field in FIELDS}
    expected_ts = [round(item["ts"] * 1000) for item in mine]
    for field, (where, key) in FIELDS.items():
        s = by_name[f"iotix_{field}"]
        assert s["metric"] == {
            "__name__": f"iotix_{field}",
            "fleet": "exp-all",
            "model": "exp-all",
            "protocol": "mqtt",
            "run_id": run_id,
            "case": "every-point",
        }
        assert s["timestamps"] == expected_ts, field
        assert s["values"] == [item[where][key] for item in mine], field
    # the last stored count of sent messages is the fleet's own
    assert by_name["iotix_messages_sent_total"]["values"][-1] == fleet.stats()["messagesSent"] > 0
    latency = {s["metric"]["__name__"]: s for s in series if s["metric"].get("kind") == "lateness"}
    with_lateness = [item for item in mine if (item["row"]["latenessMs"] or {}).get("count")]
    assert set(latency) == {
        f"iotix_latency_{f}" for f in ("p50_seconds", "p90_seconds", "p99_seconds", "max_seconds", "count")
    }
    assert latency["iotix_latency_count"]["values"] == [item["row"]["latenessMs"]["count"] for item in with_lateness]
    assert latency["iotix_latency_p99_seconds"]["values"] == pytest.approx(
        [item["row"]["latenessMs"]["p99"] / 1000 for item in with_lateness]
    )
    assert sum(len(s["values"]) for s in series) == h.points_handed(samples=True)
    assert max(durations) < 0.02  # the sink's share of the loop: copying, no I/O (GC pauses included)


def per_second_sent(h: Harness, fleet: str, start: float, end: float) -> list[int]:
    return [item["row"]["sent"] for item in h.handed if item["fleet"] == fleet and start < item["ts"] <= end]


def rates_hold(rates: list[float]) -> bool:
    """The fleet kept its rate: the median second within 5 %, and no second off by more than 25 % (a send
    scheduled at a second's boundary may land in either second)."""
    return (
        bool(rates)
        and abs(statistics.median(rates) - RATE) <= RATE * 0.05
        and all(abs(rate - RATE) <= RATE * 0.25 for rate in rates)
    )


def test_a_store_that_is_down_costs_the_fleet_nothing_and_losses_are_counted(h: Harness) -> None:
    export, durations = h.export(f"http://127.0.0.1:{pick_free_port()}", interval_s=0.2, max_buffered=4)
    fleet = h.fleet("exp-down", model_dict("exp-down"), DEVICES)
    started = time.time()
    h.run(fleet, 5.0)
    rates = per_second_sent(h, "exp-down", started + 1.5, time.time() - 1.5)
    assert rates_hold(rates), rates
    stats = export.stats()
    assert stats["pointsWritten"] == 0
    assert stats["pointsDropped"] > 0
    assert stats["pointsQueued"] <= 4  # bounded: buffered + being retried
    assert "Connection refused" in (stats["lastError"] or "")
    problem = export.problems_since_last_call()
    assert problem is not None and "points dropped" in problem and export.url in problem
    begun = time.monotonic()
    final = export.close(1.0)
    assert time.monotonic() - begun < 3.0
    assert final["pointsWritten"] + final["pointsFailed"] + final["pointsDropped"] == h.points_handed()
    assert max(durations) < 0.02


def test_a_store_that_stops_mid_run_keeps_what_it_got_and_the_rest_is_counted(h: Harness) -> None:
    store = start_local_metrics_store()
    try:
        export, durations = h.export(store.url, interval_s=0.2, max_buffered=4)
        fleet = h.fleet("exp-stop", model_dict("exp-stop"), DEVICES)
        h.start(fleet)
        h.running(fleet)
        time.sleep(2.5)
        written_before = export.stats()["pointsWritten"]
        assert written_before > 0
        store.stop(keep_files=True)
        stopped = time.time()
        time.sleep(4.0)
        h.stop(fleet)
        rates = per_second_sent(h, "exp-stop", stopped + 1.0, time.time() - 1.0)
        assert rates_hold(rates), rates
        stats = export.close(1.0)
        assert stats["pointsDropped"] > 0
        assert stats["pointsWritten"] + stats["pointsFailed"] + stats["pointsDropped"] == h.points_handed()
        problem = export.problems_since_last_call()
        assert problem is not None and "points dropped" in problem
        # what was written before the stop is in the store when it comes back on the same data
        store.start()
        run_id = h.sim.metrics.run_id
        series = stored(store, f'iotix_messages_sent_total{{run_id="{run_id}"}}', 1, timeout=5.0)
        assert series and len(series[0]["values"]) >= 2
        assert max(durations) < 0.02
    finally:
        store.stop()
