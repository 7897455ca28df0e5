"""Run reports (iotix.observe.report) from a real MetricsHub holding real FleetSeries of fake fleets
(see test_charts.py): the snapshot, the data, and each format as a reader of the file sees it."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_charts import T0, FakeFleet, sampled_series

from iotix.errors import ConfigurationError, NotFoundError
from iotix.observe.charts import iter_svgs
from iotix.observe.histogram import Histogram
from iotix.observe.report import (
    FORMATS,
    HISTORY_COLUMNS,
    STATS_COLUMNS,
    build_report,
    collect_report,
    csv_paths,
    report_format,
    take_snapshot_async,
    write_report,
)
from iotix.observe.series import MetricsHub

#: Locust 2.x's own column names (locust/stats.py, StatsCSV and StatsCSVFileWriter)
LOCUST_PERCENTILES = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]
LOCUST_STATS = [
    "Type",
    "Name",
    "Request Count",
    "Failure Count",
    "Median Response Time",
    "Average Response Time",
    "Min Response Time",
    "Max Response Time",
    "Average Content Size",
    "Requests/s",
    "Failures/s",
    *LOCUST_PERCENTILES,
]
LOCUST_HISTORY = [
    "Timestamp",
    "User Count",
    "Type",
    "Name",
    "Requests/s",
    "Failures/s",
    *LOCUST_PERCENTILES,
    "Total Request Count",
    "Total Failure Count",
    "Total Median Response Time",
    "Total Average Response Time",
    "Total Min Response Time",
    "Total Max Response Time",
    "Total Average Content Size",
]
LOCUST_FAILURES = ["Method", "Name", "Error", "Occurrences"]


@pytest.fixture
def hub() -> Iterator[MetricsHub]:
    """A hub with two live fleets (mqtt "env" with dropouts, faults and timeouts; http "api" with request
    latency, 10 s) and a deleted one ("old", 5 s)."""
    loop = asyncio.new_event_loop()  # the hub only keeps it; nothing runs on it here
    hub = MetricsHub(loop)
    hub.labels = {"suite": "Metrics", "test": "Reports"}
    hub.series["env"] = sampled_series(20)
    hub.series["api"] = sampled_series(10, FakeFleet("api", protocol="http", request_latency=True), events=False)
    old = sampled_series(5, FakeFleet("old", count=2), events=False)
    old.detach()
    hub.deleted.append(old)
    yield hub
    loop.close()


def test_report_data_of_every_fleet(hub: MetricsHub) -> None:
    data = collect_report(hub)
    json.dumps(data)  # plain data
    assert data["runId"] == hub.run_id and data["labels"] == {"suite": "Metrics", "test": "Reports"}
    assert [f["name"] for f in data["fleets"]] == ["old", "env", "api"]
    env = next(f for f in data["fleets"] if f["name"] == "env")
    assert env["totals"]["sent"] == 720 and env["totals"]["failed"] == 3
    assert env["failuresByReason"] == {"timeout": 3}
    assert env["rates"]["sent"] == {"mean": 36.0, "peak": 40}
    assert env["devices"] == {
        "count": 4,
        "connected": 4,
        "connectedMin": 2,
        "connectedMax": 4,
        "inError": 0,
        "inErrorMax": 0,
    }
    assert env["lossPercent"] == round(100 * 3 / 720, 4)
    assert env["primaryLatency"] == "lateness" and env["latency"]["lateness"]["p50"] == pytest.approx(2.0, rel=0.02)
    assert [e["kind"] for e in env["events"]] == ["dropout", "restore", "fault", "fault_end"]
    assert len(env["rows"]) == 20 and env["durationS"] == 20.0
    # worst devices: the one that failed 3 and was dropped first, then the other dropped one
    assert [d["deviceId"] for d in env["worstDevices"]] == ["env-0", "env-1"]
    assert env["worstDevices"][0]["failed"] == 3 and env["worstDevices"][0]["disconnects"] == 1
    api = next(f for f in data["fleets"] if f["name"] == "api")
    assert api["primaryLatency"] == "request" and api["latency"]["request"]["p99"] == pytest.approx(20, rel=0.02)
    old = data["fleets"][0]
    assert old["deleted"] and old["state"] == "deleted" and old["worstDevices"] == []
    agg = data["aggregated"]
    assert agg["totals"]["sent"] == 720 + 400 + 100 and agg["latencyKind"] == "mixed"
    assert agg["latency"]["count"] == 720 + 400 + 100  # env and old: lateness; api: request latency
    assert Histogram.decode(agg["latency"]["histogram"]).count == agg["latency"]["count"]
    assert [e["fleet"] for e in data["timeline"]] == ["env"] * 4


def test_report_of_chosen_fleets_and_unknown_ones(hub: MetricsHub) -> None:
    assert [f["name"] for f in collect_report(hub, ["api", "old"])["fleets"]] == ["api", "old"]
    with pytest.raises(NotFoundError, match=r"No fleet named 'nope' has figures \(fleets with figures: 'api', "):
        collect_report(hub, ["nope"])


def test_the_async_snapshot_is_the_same(hub: MetricsHub) -> None:
    loop = asyncio.new_event_loop()
    try:
        run = loop.run_until_complete(take_snapshot_async(hub, ["env"]))
    finally:
        loop.close()
    data = build_report(run)
    assert [f["name"] for f in data["fleets"]] == ["env"] and data["fleets"][0]["totals"]["sent"] == 720


@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [
        ("r.html", None, "html"),
        ("r.HTM", None, "html"),
        ("r.md", None, "md"),
        ("r.csv", None, "csv"),
        ("r.json", None, "json"),
        ("r.txt", "markdown", "md"),
        ("r", "JSON", "json"),
        ("r.html", "md", "md"),
    ],
)
def test_format_from_argument_or_extension(name: str, fmt: str | None, expected: str) -> None:
    assert report_format(Path(name), fmt) == expected


def test_an_unknown_format_fails_listing_the_formats(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="the formats are html, md, csv, json"):
        write_report({}, tmp_path / "report.txt")
    with pytest.raises(ConfigurationError, match=r"format 'pdf'.*html, md, csv, json"):
        write_report({}, tmp_path / "report.html", "pdf")
    assert not list(tmp_path.iterdir())


EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def test_html_report_is_one_self_contained_file(hub: MetricsHub, tmp_path: Path) -> None:
    hub.series["env"].fleet.devices[0].last_error = "timeout <after 5 s>"  # type: ignore[union-attr]
    [path] = write_report(collect_report(hub), tmp_path / "report.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert not EXTERNAL.search(page), "a report must open offline: no src/href to another site"
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert hub.run_id in page and "Metrics / Reports" in page
    for name in ("env", "api", "old"):
        assert f'id="fleet-{name}"' in page
    svgs = list(iter_svgs(page))
    assert len(svgs) == 12  # 4 charts x 3 fleets
    for svg in svgs:
        ET.fromstring(svg)
    assert "Worst devices" in page and "env-0" in page and "timeout &lt;after 5 s&gt;" in page
    assert "2 devices dropped" in page and "latency-1 (latency: latency 200ms; 2 devices) started" in page
    assert "Timeline of dropouts and network faults" in page


def test_markdown_summary(hub: MetricsHub, tmp_path: Path) -> None:
    [path] = write_report(collect_report(hub), tmp_path / "summary.md")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"## IoTix run {hub.run_id} (Metrics / Reports)"
    header = lines.index("| Fleet | Protocol | Devices | Sent | Acked | Failed | Dropped | Loss % | p99 ms |")
    rows = lines[header + 2 : header + 5]
    assert [r.split("|")[1].strip() for r in rows] == ["old (deleted)", "env", "api"]
    env = [c.strip() for c in rows[1].split("|")[1:-1]]
    assert env[:8] == ["env", "mqtt", "4", "720", "717", "3", "0", "0.417"]
    assert env[8].endswith("(lateness)")
    assert "(request)" in rows[2]
    assert "- **env**: timeout 3" in lines
    timeline = lines[lines.index("### Timeline (UTC)") + 2 :]
    assert len(timeline) == 4 and timeline[0].endswith("**env**: 2 devices dropped")


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def test_csv_files_are_locusts(hub: MetricsHub, tmp_path: Path) -> None:
    paths = write_report(collect_report(hub), tmp_path / "run_stats.csv")
    assert [p.name for p in paths] == ["run_stats.csv", "run_stats_history.csv", "run_failures.csv"]
    columns, stats = read_csv(paths[0])
    assert columns[: len(LOCUST_STATS)] == LOCUST_STATS and columns == list(STATS_COLUMNS)
    assert [(s["Type"], s["Name"]) for s in stats] == [
        ("MQTT", "old"),
        ("MQTT", "env"),
        ("HTTP", "api"),
        ("", "Aggregated"),
    ]
    env, agg = stats[1], stats[3]
    assert (env["Request Count"], env["Failure Count"], env["Acked Count"]) == ("720", "3", "717")
    assert env["Requests/s"] == "36.0" and env["Failures/s"] == "0.15"
    assert float(env["Median Response Time"]) == pytest.approx(2.0, rel=0.02)
    assert float(env["99%"]) == pytest.approx(2.0, rel=0.02) and env["Latency Kind"] == "lateness"
    assert env["Average Content Size"] == "100.0"
    assert stats[2]["Latency Kind"] == "request" and float(stats[2]["50%"]) == pytest.approx(20, rel=0.02)
    assert agg["Request Count"] == "1220" and agg["Failure Count"] == "3" and agg["Latency Kind"] == "mixed"

    columns, history = read_csv(paths[1])
    assert columns[: len(LOCUST_HISTORY)] == LOCUST_HISTORY and columns == list(HISTORY_COLUMNS)
    env_rows = [h for h in history if h["Name"] == "env"]
    assert len(env_rows) == 20
    assert env_rows[0]["Timestamp"] == str(int(T0 + 1)) and env_rows[-1]["Total Request Count"] == "720"
    assert env_rows[2]["Failures/s"] == "3.00" and env_rows[2]["Total Failure Count"] == "3"
    assert env_rows[5]["User Count"] == "2" and env_rows[4]["devicesDropped"] == "2"
    assert json.loads(env_rows[2]["Failed By Reason"]) == {"timeout": 3}
    assert env_rows[0]["66%"] == "N/A" and float(env_rows[0]["99%"]) == pytest.approx(2.0, rel=0.02)
    # one Aggregated line per second, after that second's fleets, adding them up
    seconds = sorted({h["Timestamp"] for h in history})
    aggregated = [h for h in history if h["Name"] == "Aggregated"]
    assert len(aggregated) == len(seconds) == 20
    first = [h for h in history if h["Timestamp"] == str(int(T0 + 1))]
    assert [h["Name"] for h in first] == ["old", "env", "api", "Aggregated"]
    assert first[-1]["Requests/s"] == "100.00" and first[-1]["User Count"] == "10"

    columns, failures = read_csv(paths[2])
    assert columns == LOCUST_FAILURES
    assert failures == [{"Method": "MQTT", "Name": "env", "Error": "timeout", "Occurrences": "3"}]


def test_csv_paths_follow_locusts_names() -> None:
    assert [p.name for p in csv_paths(Path("out/report.csv"))] == [
        "report.csv",
        "report_stats_history.csv",
        "report_failures.csv",
    ]


def test_json_has_everything(hub: MetricsHub, tmp_path: Path) -> None:
    [path] = write_report(collect_report(hub), tmp_path / "deep" / "report.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert {"runId", "labels", "startedAt", "endedAt", "fleets", "aggregated", "timeline"} <= set(data)
    env = data["fleets"][1]
    assert len(env["rows"]) == 20 and env["rows"][0]["sent"] == 40 and len(env["events"]) == 4
    assert env["latency"]["lateness"]["percentiles"]["99.9%"] == pytest.approx(2.0, rel=0.02)


def test_an_empty_hub_still_reports(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        data = collect_report(MetricsHub(loop))
    finally:
        loop.close()
    for fmt in FORMATS:
        for path in write_report(data, tmp_path / f"empty.{fmt}"):
            assert path.stat().st_size > 0
    assert "No fleet has figures." in (tmp_path / "empty.html").read_text(encoding="utf-8")


def test_a_fleet_that_never_ran(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        hub = MetricsHub(loop)
        from iotix.observe.series import FleetSeries

        hub.series["idle"] = FleetSeries(FakeFleet("idle"))  # type: ignore[arg-type]
        data = collect_report(hub)
    finally:
        loop.close()
    idle = data["fleets"][0]
    assert idle["startedAt"] is None and idle["rows"] == [] and idle["lossPercent"] is None
    for fmt in FORMATS:
        write_report(data, tmp_path / f"idle.{fmt}")
    assert "no data yet" in (tmp_path / "idle.html").read_text(encoding="utf-8")
