"""SVG charts of a fleet's time series (iotix.observe.charts), drawn from a real FleetSeries.

The series is the core's own :class:`~iotix.observe.series.FleetSeries`, sampled second by second from a
small fake fleet (plain objects with the counters a fleet's devices have): the rows, events and histograms
are exactly those a running fleet produces, without a loop, a broker or a clock. ``FakeFleet`` and
``sampled_series`` are shared with test_run_report.py.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from iotix.observe.charts import (
    CHART_NAMES,
    CHART_TITLES,
    HEIGHT,
    MAX_POINTS,
    NO_DATA_TEXT,
    WIDTH,
    ChartData,
    Line,
    Marker,
    fleet_charts,
    fleet_charts_html,
    iter_svgs,
    markers,
    points,
)
from iotix.observe.histogram import LatencyRecorder
from iotix.observe.series import FleetSeries, FleetSnapshot, fleet_snapshot

T0 = 1_796_420_200.0
SVG = "{http://www.w3.org/2000/svg}"


class FakeFaults:
    """The part of a fleet's fault set the series reads: active faults and the backlog."""

    def __init__(self) -> None:
        self.active: list[dict[str, Any]] = []

    def describe(self) -> list[dict[str, Any]]:
        return list(self.active)

    def backlog(self) -> int:
        return 0


class FakeFleet:
    """What FleetSeries reads of a fleet: devices with counters, delivery, dropout counts, faults, latency."""

    def __init__(self, name: str = "env", count: int = 4, protocol: str = "mqtt", request_latency: bool = False):
        self.name = name
        self.model = SimpleNamespace(id="sensor", protocol=protocol)
        latency = LatencyRecorder() if request_latency else None
        self.transport = SimpleNamespace(target="127.0.0.1:1883", latency=latency, request_based=request_latency)
        self.state = "running"
        self.stopping = False
        self.devices = [
            SimpleNamespace(
                id=f"{name}-{i}",
                sent=0,
                acked=0,
                failed=0,
                dropped=0,
                bytes_sent=0,
                connects=1,
                disconnects=0,
                reconnects=0,
                connect_failures=0,
                state="running",
                offline_queue=None,
                last_error=None,
            )
            for i in range(count)
        ]
        self.delivery = SimpleNamespace(retries=0, reasons=Counter())
        self.devices_dropped = 0
        self.devices_restored = 0
        self.faults = FakeFaults()
        self.lateness = LatencyRecorder()

    @property
    def target(self) -> str:
        return self.transport.target

    @property
    def request_based(self) -> bool:
        return bool(self.transport.request_based)

    def metrics_snapshot(self) -> FleetSnapshot:
        return fleet_snapshot(self)  # type: ignore[arg-type]

    def second(self, per_device: int = 10, failed: int = 0, reason: str = "timeout") -> None:
        """One second of traffic: each device sends ``per_device`` messages, the first device fails ``failed``."""
        for device in self.devices:
            if device.state != "running":
                continue
            device.sent += per_device
            device.acked += per_device
            device.bytes_sent += per_device * 100
            for _ in range(per_device):
                self.lateness.record(0.002)
            if self.transport.latency is not None:
                for _ in range(per_device):
                    self.transport.latency.record(0.020)
        if failed:
            first = self.devices[0]
            first.failed += failed
            first.acked -= failed
            self.delivery.reasons[reason] += failed

    def drop(self, count: int) -> None:
        for device in self.devices[:count]:
            device.state = "dropped"
            device.disconnects += 1
        self.devices_dropped += count

    def restore(self, count: int) -> None:
        for device in self.devices[:count]:
            device.state = "running"
            device.reconnects += 1
        self.devices_restored += count


def sampled_series(seconds: int = 20, fleet: FakeFleet | None = None, *, events: bool = True) -> FleetSeries:
    """A FleetSeries of ``seconds`` rows; with ``events``: 2 devices dropped at second 5 and restored at 9,
    a latency fault from second 12 to 15, 3 timeouts at second 3."""
    fleet = fleet or FakeFleet()
    series = FleetSeries(fleet)  # type: ignore[arg-type]
    for i in range(1, seconds + 1):
        if events and i == 5:
            fleet.drop(2)
        if events and i == 9:
            fleet.restore(2)
        if events and i == 12:
            fleet.faults.active = [{"name": "latency-1", "kind": "latency", "summary": "latency 200ms", "devices": 2}]
        if events and i == 15:
            fleet.faults.active = []
        fleet.second(failed=3 if events and i == 3 else 0)
        series.sample(T0 + i)
    return series


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return [el.text for el in root.iter() if el.text]


def test_every_chart_is_valid_self_contained_svg_of_a_fixed_size() -> None:
    charts = fleet_charts(ChartData.of(sampled_series()))
    assert list(charts) == list(CHART_NAMES)
    for name, svg in charts.items():
        assert not svg.startswith("<?xml"), "an XML declaration cannot be inlined in HTML"
        root = parse(svg)
        assert (root.get("width"), root.get("height")) == (str(WIDTH), str(HEIGHT))
        assert CHART_TITLES[name] in texts(root)
        assert "<script" not in svg
        assert not re.search(r"""(?:href|src)\s*=\s*["']?(?:https?:)?//""", svg), "nothing fetched from a URL"
        assert "<!--" not in svg
        # something is drawn: a path per line
        assert any(el.get("class", "").startswith("line") for el in root.iter(f"{SVG}path")), name


def test_message_rate_chart_draws_the_rows() -> None:
    data = ChartData.of(sampled_series(events=False))
    svg = fleet_charts(data)["rate"]
    legend = texts(parse(svg))
    assert {"sent", "acked", "failed"} <= set(legend)
    # 4 devices x 10 messages every second: the sent line is flat at 40
    sent = points(data, Line("sent", lambda r: r["sent"], max, "#000"), 1)
    assert sent == [(float(i), 40.0) for i in range(1, 21)]


def test_dropouts_and_faults_are_marked_on_the_time_axis_with_labels() -> None:
    data = ChartData.of(sampled_series())
    found = markers(data)
    assert [(m.x, m.kind, m.label) for m in found["dropouts"]] == [
        (5.0, "dropout", "2 devices dropped"),
        (9.0, "restore", "2 devices reconnecting"),
    ]
    assert [(m.x, m.kind) for m in found["faults"]] == [(12.0, "fault"), (15.0, "fault_end")]
    assert [m.label for m in found["faults"]] == ["latency-1 started", "latency-1 ended"]
    for name, svg in fleet_charts(data).items():
        root = parse(svg)
        words = texts(root)
        assert "dropouts (1)" in words and "network faults (1)" in words, name
        # the label is printed at the marker and is the hover title of its dot
        assert "2 devices dropped" in words
        titles = [el.text for el in root.iter(f"{SVG}title")]
        assert "2 devices dropped" in titles and "2 devices reconnecting" in titles
        dashed = [el for el in root.iter(f"{SVG}path") if "dasharray" in (el.get("style") or "")]
        assert dashed or "stroke-dasharray" in svg


def test_no_events_no_markers() -> None:
    svg = fleet_charts(ChartData.of(sampled_series(events=False)))["devices"]
    words = texts(parse(svg))
    assert not any(w.startswith(("dropouts", "network faults")) for w in words)


@pytest.mark.parametrize(
    "data",
    [ChartData("nothing"), ChartData.of(FleetSeries(FakeFleet())), ChartData("no rows", events=[{"ts": T0}])],  # type: ignore[arg-type]
    ids=["bare", "fresh-series", "events-without-rows"],
)
def test_a_fleet_without_rows_gets_no_data_yet_charts(data: ChartData) -> None:
    charts = fleet_charts(data)
    for name, svg in charts.items():
        words = texts(parse(svg))
        assert NO_DATA_TEXT in words, name
        assert CHART_TITLES[name] in words


def test_latency_chart_shows_the_kinds_present() -> None:
    lateness_only = texts(parse(fleet_charts(ChartData.of(sampled_series(events=False)))["latency"]))
    assert {"lateness p50", "lateness p90", "lateness p99"} <= set(lateness_only)
    assert not any(w.startswith(("request", "e2e")) for w in lateness_only)
    with_request = sampled_series(events=False, fleet=FakeFleet(protocol="http", request_latency=True))
    words = texts(parse(fleet_charts(ChartData.of(with_request))["latency"]))
    assert {"lateness p99", "request p50", "request p99"} <= set(words)


def test_long_series_are_bucketed_keeping_dips_and_peaks() -> None:
    rows = [
        {"ts": T0 + i, "elapsed": float(i), "sent": 100 if i % 2 else 0, "connected": 5 if i == 1000 else 10}
        for i in range(1, 3601)
    ]
    data = ChartData("long", rows=rows, started_at=T0)
    sent = points(data, Line("sent", lambda r: r["sent"], sum_mean, "#000"), 6)
    assert len(sent) == 600 <= MAX_POINTS
    assert {p[1] for p in sent if p} == {50.0}  # the mean rate
    connected = points(data, Line("connected", lambda r: r["connected"], min, "#000"), 6)
    assert min(p[1] for p in connected if p) == 5.0  # one second's dip stays visible
    svg = fleet_charts(data)["rate"]
    assert "6 s per point" in svg
    assert len(svg) < 150_000


def sum_mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_a_gap_in_the_rows_interrupts_the_lines() -> None:
    rows = [{"ts": T0 + i, "sent": 1} for i in (1, 2, 3, 10, 11)]
    data = ChartData("gappy", rows=rows, started_at=T0)
    assert points(data, Line("sent", lambda r: r["sent"], max, "#000"), 1) == [
        (1.0, 1.0),
        (2.0, 1.0),
        (3.0, 1.0),
        None,
        (10.0, 1.0),
        (11.0, 1.0),
    ]


def test_chart_data_of_part_of_a_series() -> None:
    series = sampled_series()
    since = ChartData.of(series, since=T0 + 10)
    assert [row["ts"] for row in since.rows] == [T0 + i for i in range(11, 21)]
    assert [e["kind"] for e in since.events] == ["fault", "fault_end"]
    last = ChartData.of(series, last_s=5)
    assert len(last.rows) == 5 and last.events == []
    assert last.x_of(last.rows[0]) == 16.0  # still seconds since the fleet started


def test_marker_labels_are_short() -> None:
    long = Marker(1.0, "dropout", "a very long text about a dropout that goes on and on")
    assert len(long.label) == 30 and long.label.endswith("…")
    assert Marker(1.0, "fault_end", "loss-2 (loss: 20%; 5 devices) ended").label == "loss-2 ended"
    assert Marker(1.0, "dropout", "12 devices dropped").label == "12 devices dropped"


def test_fleet_charts_html_is_one_fragment_with_caption_charts_and_events() -> None:
    fleet = FakeFleet(name="<env>")
    fragment = fleet_charts_html(ChartData.of(sampled_series(fleet=fleet)))
    svgs = list(iter_svgs(fragment))
    assert len(svgs) == 4
    for svg in svgs:
        parse(svg)
    assert "Fleet <b>&lt;env&gt;</b>" in fragment
    assert "model sensor" in fragment and "mqtt" in fragment and "20 s" in fragment
    assert "sent 720" in fragment  # 20 s x 4 devices x 10, less 4 s x 2 dropped devices x 10
    assert "4 dropout and fault events" in fragment
    assert "<script" not in fragment
    # well-formed as a whole (the fragment is inlined as it is)
    ET.fromstring(fragment)


def test_fleet_charts_html_of_a_series_reads_it_directly() -> None:
    fragment = fleet_charts_html(sampled_series(events=False), last_s=5)
    assert "5 s" in fragment and len(list(iter_svgs(fragment))) == 4


def test_a_deleted_fleet_says_so() -> None:
    series = sampled_series(events=False)
    series.detach()
    assert "(deleted)" in fleet_charts_html(ChartData.of(series))


def test_charts_at_the_end_of_each_test_chart_each_second_once() -> None:
    """``charts=True``: at the end of a test, the fleets with rows since it started, but not rows already
    charted at the end of the previous test (a fleet deleted in a teardown gets a last row stamped with the
    end of that second, which can fall after the next test started)."""
    from weakref import WeakKeyDictionary

    from iotix._robot.chart_keywords import chart_data_since

    hub = SimpleNamespace(all_series=lambda: [series])
    series = sampled_series(10, events=False)
    charted: WeakKeyDictionary[FleetSeries, float] = WeakKeyDictionary()
    [first] = chart_data_since(hub, T0 + 4.5, charted)  # type: ignore[arg-type]
    assert [row["ts"] for row in first.rows] == [T0 + i for i in range(5, 11)]
    assert chart_data_since(hub, T0 + 9.5, charted) == []  # the next test: the second T0 + 10 was charted
    assert chart_data_since(hub, T0 + 10.5, charted) == []  # nothing since
    series.fleet.second()  # type: ignore[union-attr]
    series.sample(T0 + 11)
    [again] = chart_data_since(hub, T0 + 10.5, charted)  # type: ignore[arg-type]
    assert [row["ts"] for row in again.rows] == [T0 + 11]
