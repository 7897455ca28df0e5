"""The per-second time series of a fleet (iotix.observe.series), on a small fake fleet: pure logic."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from iotix.observe import series as series_module
from iotix.observe.histogram import LatencyRecorder
from iotix.observe.series import COUNTERS, FleetSeries, MetricsHub, fleet_snapshot, progress_line
from iotix.observe.tracker import TelemetryTracker


class FakeDevice:
    def __init__(self) -> None:
        self.sent = self.acked = self.failed = self.dropped = self.bytes_sent = 0
        self.connects = self.disconnects = self.reconnects = self.connect_failures = 0
        self.state = "running"
        self.offline_queue: list[Any] | None = None


class FakeFaults:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def describe(self) -> list[dict[str, Any]]:
        return self.entries

    def backlog(self) -> int:
        return 0


def fake_fleet(name: str = "f", devices: int = 3) -> Any:
    fleet = SimpleNamespace(
        name=name,
        target="127.0.0.1:1883",
        request_based=False,
        model=SimpleNamespace(id="m", protocol="mqtt"),
        transport=SimpleNamespace(target="127.0.0.1:1883", request_based=False),
        devices=[FakeDevice() for _ in range(devices)],
        delivery=SimpleNamespace(retries=0, reasons=Counter()),
        devices_dropped=0,
        devices_restored=0,
        faults=FakeFaults(),
        lateness=LatencyRecorder(),
        state="running",
        stopping=False,
    )
    fleet.metrics_snapshot = lambda: fleet_snapshot(fleet)
    return fleet


def send(fleet: Any, n: int, nbytes: int = 10) -> None:
    for d in fleet.devices:
        d.sent += n
        d.bytes_sent += n * nbytes
        for _ in range(n):
            fleet.lateness.record(0.002)


def test_rows_hold_per_second_deltas_and_gauges_and_totals_the_sums() -> None:
    fleet = fake_fleet()
    series = FleetSeries(fleet)
    for second in range(3):
        send(fleet, 2)
        fleet.delivery.reasons["timeout"] += second
        fleet.devices[0].failed += second
        assert series.due()
        series.sample(1000.0 + second)
    rows = series.rows()
    assert [r["sent"] for r in rows] == [6, 6, 6]
    assert [r["bytes"] for r in rows] == [60, 60, 60]
    assert [r["failed"] for r in rows] == [0, 1, 2]
    assert [r["failedByReason"] for r in rows] == [{}, {"timeout": 1}, {"timeout": 2}]
    assert series.totals["sent"] == 18 and series.failures_total == {"timeout": 3}
    assert [r["elapsed"] for r in rows] == [1.0, 2.0, 3.0]
    assert [r["partial"] for r in rows] == [True, False, False]  # started during the first second
    assert rows[0]["time"] == "1970-01-01T00:16:40Z"
    assert rows[1]["devices"] == rows[1]["connected"] == 3
    assert rows[1]["latenessMs"]["count"] == 6 and rows[1]["latenessMs"]["p99"] == pytest.approx(2.0, rel=0.01)
    assert rows[1]["requestLatencyMs"] is None and rows[1]["e2eLatencyMs"] is None
    assert set(COUNTERS) <= set(rows[0])


def test_a_stopped_fleet_gets_its_last_partial_row_once_and_then_none() -> None:
    fleet = fake_fleet()
    series = FleetSeries(fleet)
    assert series.due()
    send(fleet, 1)
    series.sample(10.0)
    send(fleet, 1)
    fleet.state = "stopped"
    last = series.settle()
    assert last is not None and last["partial"] and last["sent"] == 3
    assert series.settle() is None
    assert not series.due()
    assert sum(r["sent"] for r in series.rows()) == series.totals["sent"] == 6


def test_connected_counts_running_and_error_and_in_error_only_error() -> None:
    fleet = fake_fleet(devices=4)
    fleet.devices[0].state = "error"
    fleet.devices[1].state = "reconnecting"
    fleet.devices[2].offline_queue = [1, 2, 3]
    series = FleetSeries(fleet)
    series.due()
    row = series.sample(1.0)
    assert (row["connected"], row["inError"], row["queued"]) == (3, 1, 3)  # 2 running + 1 in error


def test_dropouts_and_faults_become_events_on_the_time_axis() -> None:
    fleet = fake_fleet()
    series = FleetSeries(fleet)
    series.due()
    series.sample(1.0)
    fleet.devices_dropped = 2
    fleet.faults.entries = [{"name": "latency-1", "kind": "latency", "summary": "200ms", "devices": 2}]
    series.due()
    series.sample(2.0)
    fleet.devices_restored = 2
    fleet.faults.entries = []
    series.due()
    series.sample(3.0)
    events = [(e["ts"], e["kind"], e["text"]) for e in series.events]
    assert events == [
        (2.0, "dropout", "2 devices dropped"),
        (2.0, "fault", "latency-1 (latency: 200ms; 2 devices) started"),
        (3.0, "restore", "2 devices reconnecting"),
        (3.0, "fault_end", "latency-1 (latency: 200ms; 2 devices) ended"),
    ]
    assert series.rows()[1]["networkFaults"] == 1


def test_latency_over_a_window_merges_only_its_seconds() -> None:
    fleet = fake_fleet(devices=1)
    series = FleetSeries(fleet)
    for second, latency in enumerate((0.001, 0.001, 0.5, 0.5)):
        series.due()
        fleet.lateness.record(latency)
        series.sample(100.0 + second)
    assert series.latency_window("lateness", 2).percentile(50) == pytest.approx(0.5, rel=0.01)
    assert series.latency_window("lateness", 4).count == 4
    assert series.latency_total("lateness").count == 4


def test_end_to_end_latency_comes_from_the_trackers_that_follow_the_fleet() -> None:
    fleet = fake_fleet(name="e2e-fleet", devices=1)
    tracker = TelemetryTracker("probe", group_of=lambda device_id: "e2e-fleet")
    series = FleetSeries(fleet)
    series.due()
    tracker.record("d1", 0, ts_ms=1000.0, now=1.25)
    row = series.sample(2.0)
    assert row["e2eLatencyMs"]["count"] == 1 and row["e2eLatencyMs"]["p50"] == pytest.approx(250, rel=0.01)
    series.due()
    assert series.sample(3.0)["e2eLatencyMs"] is None  # nothing arrived in that second
    assert tracker.latency_of(["d1"]).count == 1  # the tracker's own total is untouched


def test_the_row_window_is_bounded() -> None:
    series = FleetSeries(fake_fleet(devices=1), window_s=5)
    for second in range(12):
        series.due()
        series.sample(float(second))
    assert len(series) == 5 and series.rows()[0]["ts"] == 7.0
    assert len(series.rows(2)) == 2


def test_the_hub_hands_rows_to_sinks_publishes_a_snapshot_and_keeps_deleted_series() -> None:
    loop = asyncio.new_event_loop()
    try:
        hub = MetricsHub(loop)
        fleet = fake_fleet(name="hub-fleet")
        hub.track(fleet)
        got: list[Any] = []
        hub.add_sink(got.extend)
        hub.add_sink(lambda pairs: 1 / 0)  # a failing sink does not stop the others
        send(fleet, 1)
        hub.sample(5.0)
        assert [(s.name, r["sent"]) for s, r in got] == [("hub-fleet", 3)]
        assert hub.sink_errors == 1
        snap = hub.published["hub-fleet"]
        assert snap["totals"]["sent"] == 3 and snap["labels"]["run_id"] == hub.run_id
        fleet.state = "stopped"
        hub.untrack("hub-fleet")
        assert "hub-fleet" not in hub.series
        kept = hub.find("hub-fleet")
        assert kept is not None and kept.deleted and kept.fleet is None
        hub.close()
    finally:
        loop.close()


def test_progress_lines_start_one_interval_after_the_first_round() -> None:
    loop = asyncio.new_event_loop()
    try:
        hub = MetricsHub(loop)
        lines: list[str] = []
        hub.progress_writer = lines.append
        hub.progress_interval_s = 10
        fleet = fake_fleet(name="prog")
        hub.track(fleet)
        for second in range(21):
            send(fleet, 1)
            hub.sample(100.0 + second)
        assert len(lines) == 2
        assert lines[0].startswith("[iotix] 00:01:50 prog: 3 msg/s, 3/3 connected, 0 failed in 10 s")
        assert progress_line(hub.series["prog"], 10) is not None
        hub.close()
    finally:
        loop.close()


def test_the_seconds_of_a_stopping_fleet_are_partial_on_the_clock_too() -> None:
    fleet = fake_fleet()
    series = FleetSeries(fleet)
    for second in range(3):
        series.due()
        series.sample(float(second))
    fleet.stopping = True  # Fleet.stop drains: state still says running
    assert series.due()
    series.sample(3.0)
    fleet.state, fleet.stopping = "stopped", False
    assert series.due()  # its last second, taken by the clock rather than settle()
    series.sample(4.0)
    assert not series.due()
    assert [r["partial"] for r in series.rows()] == [True, False, False, True, True]


def test_a_late_round_never_stamps_a_second_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rounds are stamped with the second they were armed for; one more than a second late closes the second it
    runs in; a second is never stamped twice (a late round then a punctual one)."""
    loop = asyncio.new_event_loop()
    try:
        hub = MetricsHub(loop)
        hub.track(fake_fleet(name="late"))
        for armed_for, ran_at in ((10.0, 10.001), (11.0, 11.7), (12.0, 12.002), (13.0, 14.3), (14.0, 14.9)):
            hub.close()
            hub._next_ts = armed_for
            monkeypatch.setattr(series_module.time, "time", lambda ran_at=ran_at: ran_at)
            hub._tick()
        hub.close()
        assert [r["ts"] for r in hub.series["late"].rows()] == [10.0, 11.0, 12.0, 14.0]
    finally:
        loop.close()


def test_a_deleted_fleets_latency_is_every_row_not_only_the_kept_histograms() -> None:
    fleet = fake_fleet(devices=1)
    series = FleetSeries(fleet, histogram_window_s=2)
    for second in range(5):
        series.due()
        fleet.lateness.record(0.001 * (second + 1))
        series.sample(float(second))
    series.detach()
    total = series.latency_total("lateness")
    assert total.count == 5 and total.max == pytest.approx(0.005, rel=0.01)
    assert series.latency_window("lateness", 10).count == 2  # what the window keeps


def test_a_long_stall_on_a_fast_schedule_is_corrected_in_bounded_steps() -> None:
    from iotix.observe.histogram import MAX_CORRECTIONS, Histogram

    h = Histogram()
    h.record_corrected(60.0, 0.01)  # 6,000 swallowed sends
    assert h.count == pytest.approx(6000, rel=0.01)
    assert h.percentile(50) == pytest.approx(30.0, rel=0.02)
    assert h.max == pytest.approx(60.0, rel=0.01)
    over = Histogram()
    over.record_corrected(7200.0, 7200.0)  # above the histogram's hour: clamped, not lost
    assert over.count == 1
    assert MAX_CORRECTIONS == 1000
