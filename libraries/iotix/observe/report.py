"""Run reports from the metrics hub: one self-contained HTML file, a Markdown summary, Locust-style CSV, JSON.

Two steps, so that the runtime loop is held only for copying:

1. :func:`take_snapshot` (ON THE LOOP): copies what the report needs from the hub's fleet series (rows,
   events, totals, failures by reason, cumulative latency histograms) and, while a fleet still exists, its
   worst devices. Reading a few thousand rows and devices takes milliseconds.
2. :func:`build_report` (any thread): turns the snapshot into plain, JSON-able data (latency summaries and
   percentiles, mean and peak rates, device figures, the run's timeline). :func:`write_report` then writes it
   in one of :data:`FORMATS`; the HTML report draws its charts (:mod:`iotix.observe.charts`) at that point.

:func:`collect_report` does both at once for callers already on the loop.

Which latency stands for a fleet's "response time" (CSV, Markdown): the request latency where the protocol
has one (HTTP, CoAP confirmable, Kafka), else the end-to-end latency where a receiver tracked the fleet, else
the send lateness. Loss is device-side: messages that failed or were dropped (never sent: device offline,
queue full) out of those sent and dropped; what a receiver saw is in ``Get Telemetry Report``.
"""

from __future__ import annotations

import asyncio
import csv
import heapq
import html
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iotix.errors import ConfigurationError
from iotix.observe.charts import ChartData, fleet_charts_html
from iotix.observe.histogram import Histogram
from iotix.observe.series import COUNTERS, GAUGES, LATENCY_KEYS, iso

if TYPE_CHECKING:
    from iotix.fleet.device import Device
    from iotix.observe.series import FleetSeries, MetricsHub

FORMATS = ("html", "md", "csv", "json")
_SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".csv": "csv", ".json": "json"}
#: the latency that stands for a fleet's response time, in order of preference
PRIMARY_LATENCY = ("request", "e2e", "lateness")
#: Locust's default percentiles (``PERCENTILES_TO_REPORT``) and their CSV column names
LOCUST_PERCENTILES = (50.0, 66.0, 75.0, 80.0, 90.0, 95.0, 98.0, 99.0, 99.9, 99.99, 100.0)
LOCUST_PERCENTILE_COLUMNS = tuple(f"{p:g}%" for p in LOCUST_PERCENTILES)
#: Locust's ``_stats.csv`` columns (``StatsCSV.requests_csv_columns``); ours follow
STATS_COLUMNS = (
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
    *LOCUST_PERCENTILE_COLUMNS,
    "Latency Kind",
    "Acked Count",
    "Dropped Count",
    "Loss %",
    "Devices",
)
#: Locust's ``_stats_history.csv`` columns (``StatsCSVFileWriter.stats_history_csv_columns``); ours follow
HISTORY_COLUMNS = (
    "Timestamp",
    "User Count",
    "Type",
    "Name",
    "Requests/s",
    "Failures/s",
    *LOCUST_PERCENTILE_COLUMNS,
    "Total Request Count",
    "Total Failure Count",
    "Total Median Response Time",
    "Total Average Response Time",
    "Total Min Response Time",
    "Total Max Response Time",
    "Total Average Content Size",
    "Time",
    "Elapsed",
    *(key for key in COUNTERS if key not in ("sent", "failed")),
    *GAUGES,
    *(f"{kind} {p}" for kind in LATENCY_KEYS for p in ("p50", "p90", "p99", "max")),
    "Failed By Reason",
)
#: Locust's ``_failures.csv`` columns
FAILURE_COLUMNS = ("Method", "Name", "Error", "Occurrences")
NA = "N/A"
WORST_DEVICES = 10
TIMELINE_MD_LINES = 30


# ----------------------------------------------------------------------------------------------------------
# 1. The snapshot (on the loop)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class FleetSnapshot:
    """What one fleet's report is made of, copied on the loop."""

    name: str
    model: str
    protocol: str
    target: str
    request_based: bool
    deleted: bool
    state: str
    started_at: float | None
    rows: list[dict[str, Any]]
    events: list[dict[str, Any]]
    totals: dict[str, int]
    failures: dict[str, int]
    latency: dict[str, Histogram]
    worst_devices: list[dict[str, Any]]


@dataclass
class RunSnapshot:
    run_id: str
    labels: dict[str, str]
    started_at: float
    taken_at: float
    fleets: list[FleetSnapshot] = field(default_factory=list)


def select_series(hub: MetricsHub, fleets: Iterable[str] | None = None) -> list[FleetSeries]:
    """The series of the fleets named (the live fleet's, else the last deleted one of that name); all of them
    (deleted fleets first) when ``fleets`` is None. An unknown name fails, listing the fleets with figures."""
    if fleets is None:
        hub.settle_all()  # a fleet stopped since the last round gets its last row now
        return hub.all_series()
    return [hub.require(name) for name in fleets]


def _score(device: Device) -> tuple[int, int]:
    state = str(device.state)
    # stopping a fleet disconnects each device once: that one is no trouble
    disconnects = device.disconnects - 1 if state == "stopped" and device.disconnects else device.disconnects
    trouble = device.failed + device.dropped + disconnects + device.reconnects + device.connect_failures
    return (trouble + (1 if state == "error" else 0), device.failed)


def worst_devices(devices: Sequence[Device], limit: int = WORST_DEVICES) -> list[dict[str, Any]]:
    """The ``limit`` devices with most failed and dropped messages, disconnects (but the one of stopping),
    reconnects and connect failures (a device in error counts one more); devices without any are left out."""
    worst = heapq.nlargest(limit, devices, key=_score)
    return [
        {
            "deviceId": d.id,
            "state": str(d.state),
            "sent": d.sent,
            "failed": d.failed,
            "dropped": d.dropped,
            "disconnects": d.disconnects,
            "reconnects": d.reconnects,
            "connectFailures": d.connect_failures,
            "lastError": d.last_error,
        }
        for d in worst
        if _score(d)[0] > 0
    ]


def snapshot_fleet(series: FleetSeries, worst: int = WORST_DEVICES) -> FleetSnapshot:
    """Copy one fleet's figures (on the loop)."""
    fleet = series.fleet
    latency = {kind: series.latency_total(kind) for kind in LATENCY_KEYS}
    return FleetSnapshot(
        name=series.name,
        model=series.model,
        protocol=series.protocol,
        target=series.target,
        request_based=series.request_based,
        deleted=series.deleted,
        state="deleted" if fleet is None else str(fleet.state),
        started_at=series.started_at,
        rows=series.rows(),
        events=[dict(event) for event in series.events],
        totals=dict(series.totals),
        failures=dict(series.failures_total),
        latency={kind: hist for kind, hist in latency.items() if hist.count},
        worst_devices=worst_devices(fleet.devices, worst) if fleet is not None else [],
    )


def take_snapshot(hub: MetricsHub, fleets: Iterable[str] | None = None, worst: int = WORST_DEVICES) -> RunSnapshot:
    """Copy what a report of ``fleets`` (default: every fleet with figures) needs. Runs on the loop."""
    run = RunSnapshot(hub.run_id, dict(hub.labels), hub.started_at, time.time())
    run.fleets = [snapshot_fleet(series, worst) for series in select_series(hub, fleets)]
    return run


async def take_snapshot_async(
    hub: MetricsHub, fleets: Iterable[str] | None = None, worst: int = WORST_DEVICES
) -> RunSnapshot:
    """:func:`take_snapshot` that lets the loop run between fleets (for many fleets with long histories)."""
    run = RunSnapshot(hub.run_id, dict(hub.labels), hub.started_at, time.time())
    for series in select_series(hub, fleets):
        run.fleets.append(snapshot_fleet(series, worst))
        await asyncio.sleep(0)
    return run


# ----------------------------------------------------------------------------------------------------------
# 2. The report data (any thread)
# ----------------------------------------------------------------------------------------------------------


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def latency_figures(hist: Histogram) -> dict[str, Any]:
    """A histogram's summary (ms), Locust's percentiles (ms, keyed by column name) and its encoded form."""
    percentiles = hist.percentiles(LOCUST_PERCENTILES)
    return {
        **hist.summary(),
        "percentiles": {
            column: _round(percentiles[p] * 1000 if p in percentiles else None)
            for p, column in zip(LOCUST_PERCENTILES, LOCUST_PERCENTILE_COLUMNS, strict=True)
        },
        "histogram": hist.encode(),
    }


def loss_percent(totals: Mapping[str, int]) -> float | None:
    """Device-side loss: failed + dropped out of sent + dropped, in percent (None when nothing was sent)."""
    attempted = totals.get("sent", 0) + totals.get("dropped", 0)
    if not attempted:
        return None
    return round(100.0 * (totals.get("failed", 0) + totals.get("dropped", 0)) / attempted, 4)


def _rates(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for key in ("sent", "acked", "failed", "dropped"):
        values = [row.get(key) or 0 for row in rows]
        out[key] = {"mean": round(sum(values) / len(values), 3) if values else 0.0, "peak": max(values, default=0)}
    return out


def _devices(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {
            "count": None,
            "connected": None,
            "connectedMin": None,
            "connectedMax": None,
            "inError": None,
            "inErrorMax": None,
        }
    last = rows[-1]
    return {
        "count": last.get("devices"),
        "connected": last.get("connected"),
        "connectedMin": min(row.get("connected") or 0 for row in rows),
        "connectedMax": max(row.get("connected") or 0 for row in rows),
        "inError": last.get("inError"),
        "inErrorMax": max(row.get("inError") or 0 for row in rows),
    }


def primary_latency(latency: Mapping[str, Any]) -> str | None:
    """The latency kind that stands for the response time: request, else end to end, else lateness."""
    return next((kind for kind in PRIMARY_LATENCY if kind in latency), None)


def fleet_data(snap: FleetSnapshot) -> dict[str, Any]:
    """One fleet's report data (plain, JSON-able)."""
    rows = snap.rows
    end_ts = rows[-1]["ts"] if rows else None
    duration = end_ts - snap.started_at if end_ts is not None and snap.started_at is not None else 0.0
    latency = {kind: latency_figures(hist) for kind, hist in snap.latency.items()}
    return {
        "name": snap.name,
        "model": snap.model,
        "protocol": snap.protocol,
        "target": snap.target,
        "requestBased": snap.request_based,
        "deleted": snap.deleted,
        "state": snap.state,
        "startTs": snap.started_at,
        "startedAt": iso(snap.started_at) if snap.started_at is not None else None,
        "endTs": end_ts,
        "endedAt": iso(end_ts) if end_ts is not None else None,
        "durationS": round(duration, 3),
        "rowsKept": len(rows),
        "totals": snap.totals,
        "lossPercent": loss_percent(snap.totals),
        "failuresByReason": snap.failures,
        "rates": _rates(rows),
        "latency": latency,
        "primaryLatency": primary_latency(latency),
        "devices": _devices(rows),
        "worstDevices": snap.worst_devices,
        "events": snap.events,
        "rows": rows,
    }


def _aggregated(fleets: Sequence[dict[str, Any]], snaps: Sequence[FleetSnapshot]) -> dict[str, Any]:
    totals = {key: sum(f["totals"].get(key, 0) for f in fleets) for key in COUNTERS}
    failures: dict[str, int] = {}
    for f in fleets:
        for reason, n in f["failuresByReason"].items():
            failures[reason] = failures.get(reason, 0) + n
    merged = Histogram()
    kinds = set()
    for f, snap in zip(fleets, snaps, strict=True):
        kind = f["primaryLatency"]
        if kind is not None:
            merged.merge(snap.latency[kind])
            kinds.add(kind)
    starts = [f["startTs"] for f in fleets if f["startTs"] is not None]
    ends = [f["endTs"] for f in fleets if f["endTs"] is not None]
    return {
        "totals": totals,
        "lossPercent": loss_percent(totals),
        "failuresByReason": failures,
        "latency": latency_figures(merged) if merged.count else None,
        "latencyKind": (kinds.pop() if len(kinds) == 1 else "mixed") if kinds else None,
        "devices": sum(f["devices"]["count"] or 0 for f in fleets),
        "durationS": round(max(ends) - min(starts), 3) if starts and ends else 0.0,
    }


def build_report(run: RunSnapshot) -> dict[str, Any]:
    """The report data of a snapshot: plain, JSON-able (any thread)."""
    fleets = [fleet_data(snap) for snap in run.fleets]
    timeline = sorted(({"fleet": f["name"], **event} for f in fleets for event in f["events"]), key=lambda e: e["ts"])
    starts = [f["startTs"] for f in fleets if f["startTs"] is not None]
    start = min(starts) if starts else run.started_at
    return {
        "runId": run.run_id,
        "labels": run.labels,
        "startTs": start,
        "startedAt": iso(start),
        "endTs": run.taken_at,
        "endedAt": iso(run.taken_at),
        "fleets": fleets,
        "aggregated": _aggregated(fleets, run.fleets),
        "timeline": timeline,
    }


def collect_report(hub: MetricsHub, fleets: Iterable[str] | None = None, worst: int = WORST_DEVICES) -> dict[str, Any]:
    """The report data of ``fleets`` (default: every fleet with figures). Runs ON THE LOOP; keywords use
    :func:`take_snapshot` there and :func:`build_report` in their own thread instead."""
    return build_report(take_snapshot(hub, fleets, worst))


# ----------------------------------------------------------------------------------------------------------
# 3. Writing (the caller's thread)
# ----------------------------------------------------------------------------------------------------------


def report_format(path: Path, fmt: str | None = None) -> str:
    """The format asked for, else the one ``path``'s extension names; fails listing the formats."""
    chosen = (fmt or "").strip().lower().lstrip(".") or _SUFFIXES.get(path.suffix.lower(), "")
    if chosen == "markdown":
        chosen = "md"
    if chosen not in FORMATS:
        what = f"format '{fmt}'" if fmt else f"the extension of '{path}'"
        raise ConfigurationError(
            f"Cannot write a run report in {what}: the formats are {', '.join(FORMATS)} "
            "(give format= or a path ending in .html, .md, .csv or .json)."
        )
    return chosen


def write_report(data: Mapping[str, Any], path: Path | str, fmt: str | None = None) -> list[Path]:
    """Write the report ``data`` (:func:`build_report`) to ``path`` as ``fmt`` (default: from the extension);
    returns the files written (CSV writes three: stats, history, failures)."""
    path = Path(path)
    chosen = report_format(path, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    if chosen == "csv":
        return write_csv(data, path)
    text = {"html": render_html, "md": render_markdown, "json": render_json}[chosen](data)
    path.write_text(text, encoding="utf-8")
    return [path]


# -- JSON ----------------------------------------------------------------------------------------------------


def render_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=1, default=str)


# -- CSV (Locust's files) ------------------------------------------------------------------------------------


def csv_paths(path: Path) -> tuple[Path, Path, Path]:
    """``<path>`` (stats), ``<stem>_stats_history.csv``, ``<stem>_failures.csv``; a stem ending in
    ``_stats`` is Locust's own naming (``run_stats.csv`` -> ``run_stats_history.csv``, ``run_failures.csv``)."""
    stem = path.stem[: -len("_stats")] if path.stem.endswith("_stats") and len(path.stem) > 6 else path.stem
    return path, path.with_name(f"{stem}_stats_history.csv"), path.with_name(f"{stem}_failures.csv")


def _num(value: Any, digits: int = 3) -> Any:
    if value is None:
        return NA
    if isinstance(value, float):
        return round(value, digits)
    return value


def _stats_line(
    kind: str,
    name: str,
    totals: Mapping[str, int],
    latency: Mapping[str, Any] | None,
    latency_kind: str | None,
    duration: float,
    loss: float | None,
    devices: Any,
) -> list[Any]:
    sent, failed = totals.get("sent", 0), totals.get("failed", 0)
    per_s = duration if duration > 0 else None
    pct = latency["percentiles"] if latency else {}
    return [
        kind,
        name,
        sent,
        failed,
        _num(latency and latency["p50"]),
        _num(latency and latency["mean"]),
        _num(latency and latency["min"]),
        _num(latency and latency["max"]),
        round(totals.get("bytes", 0) / sent, 1) if sent else 0,
        round(sent / per_s, 3) if per_s else 0,
        round(failed / per_s, 3) if per_s else 0,
        *(_num(pct.get(column)) for column in LOCUST_PERCENTILE_COLUMNS),
        latency_kind or NA,
        totals.get("acked", 0),
        totals.get("dropped", 0),
        _num(loss),
        _num(devices),
    ]


def _history_lines(fleet: Mapping[str, Any]) -> Iterable[tuple[float, list[Any]]]:
    rows = fleet["rows"]
    kind = fleet["primaryLatency"]
    key = LATENCY_KEYS.get(kind or "", "")
    totals = fleet["totals"]
    # cumulative counts at each row: the totals minus what came after it
    after_sent = sum(row["sent"] for row in rows)
    after_failed = sum(row["failed"] for row in rows)
    after_bytes = sum(row["bytes"] for row in rows)
    for row in rows:
        after_sent -= row["sent"]
        after_failed -= row["failed"]
        after_bytes -= row["bytes"]
        sent_so_far = totals.get("sent", 0) - after_sent
        lat = row.get(key) or {}
        pct = {"50%": lat.get("p50"), "90%": lat.get("p90"), "99%": lat.get("p99"), "100%": lat.get("max")}
        line = [
            int(row["ts"]),
            row.get("connected", 0),
            fleet["protocol"].upper(),
            fleet["name"],
            f"{row['sent']:.2f}",
            f"{row['failed']:.2f}",
            *(_num(pct.get(column)) for column in LOCUST_PERCENTILE_COLUMNS),
            sent_so_far,
            totals.get("failed", 0) - after_failed,
            NA,
            NA,
            NA,
            NA,
            round((totals.get("bytes", 0) - after_bytes) / sent_so_far, 1) if sent_so_far else 0,
            row.get("time", ""),
            row.get("elapsed", ""),
            *(row.get(k, 0) for k in COUNTERS if k not in ("sent", "failed")),
            *(row.get(k, 0) for k in GAUGES),
            *(_num((row.get(key) or {}).get(p)) for key in LATENCY_KEYS.values() for p in ("p50", "p90", "p99", "max")),
            json.dumps(row.get("failedByReason") or {}, sort_keys=True),
        ]
        yield row["ts"], line


def _aggregated_history(lines: list[list[Any]], ts: float) -> list[Any]:
    """Locust's per-second "Aggregated" history line: the fleets' figures of that second added up."""

    def total(column: str) -> float:
        i = HISTORY_COLUMNS.index(column)
        return sum(float(line[i]) for line in lines if line[i] not in (NA, ""))

    summed = set(HISTORY_COLUMNS[HISTORY_COLUMNS.index("Elapsed") + 1 : HISTORY_COLUMNS.index("lateness p50")])
    out: list[Any] = []
    for column in HISTORY_COLUMNS:
        if column == "Timestamp":
            out.append(int(ts))
        elif column in ("User Count", "Total Request Count", "Total Failure Count") or column in summed:
            out.append(int(total(column)))
        elif column in ("Requests/s", "Failures/s"):
            out.append(f"{total(column):.2f}")
        elif column == "Type":
            out.append("")
        elif column == "Name":
            out.append("Aggregated")
        elif column == "Time":
            out.append(lines[0][HISTORY_COLUMNS.index("Time")])
        elif column == "Failed By Reason":
            reasons: dict[str, int] = {}
            for line in lines:
                for reason, n in json.loads(line[-1]).items():
                    reasons[reason] = reasons.get(reason, 0) + n
            out.append(json.dumps(reasons, sort_keys=True))
        elif column == "Elapsed":
            out.append("")
        else:
            out.append(NA)
    return out


def write_csv(data: Mapping[str, Any], path: Path) -> list[Path]:
    """Locust's three CSV files: stats (a line per fleet and "Aggregated"), per-second history, failures."""
    stats_path, history_path, failures_path = csv_paths(path)
    fleets = data["fleets"]
    with stats_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(STATS_COLUMNS)
        for f in fleets:
            kind = f["primaryLatency"]
            writer.writerow(
                _stats_line(
                    f["protocol"].upper(),
                    f["name"],
                    f["totals"],
                    f["latency"].get(kind or ""),
                    kind,
                    f["durationS"],
                    f["lossPercent"],
                    f["devices"]["count"],
                )
            )
        agg = data["aggregated"]
        writer.writerow(
            _stats_line(
                "",
                "Aggregated",
                agg["totals"],
                agg["latency"],
                agg["latencyKind"],
                agg["durationS"],
                agg["lossPercent"],
                agg["devices"],
            )
        )
    by_second: dict[float, list[list[Any]]] = {}
    for f in fleets:
        for ts, line in _history_lines(f):
            by_second.setdefault(ts, []).append(line)
    with history_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HISTORY_COLUMNS)
        for ts in sorted(by_second):
            lines = by_second[ts]
            writer.writerows(lines)
            writer.writerow(_aggregated_history(lines, ts))
    with failures_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(FAILURE_COLUMNS)
        for f in fleets:
            method = f["protocol"].upper()
            for reason, count in sorted(f["failuresByReason"].items(), key=lambda item: -item[1]):
                writer.writerow([method, f["name"], reason, count])
            if f["totals"].get("dropped"):
                writer.writerow(
                    [method, f["name"], "dropped (never sent: device offline or queue full)", f["totals"]["dropped"]]
                )
    return [stats_path, history_path, failures_path]


# -- Markdown ------------------------------------------------------------------------------------------------


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    if isinstance(value, float):
        return f"{value:,.3g}{unit}" if abs(value) < 100 else f"{value:,.0f}{unit}"
    return f"{value}{unit}"


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts))


def _title(data: Mapping[str, Any]) -> str:
    labels = data.get("labels") or {}
    where = " / ".join(str(labels[k]) for k in ("suite", "test") if labels.get(k))
    return f"IoTix run {data['runId']}" + (f" ({where})" if where else "")


def _p99(fleet: Mapping[str, Any]) -> tuple[float | None, str]:
    kind = fleet.get("primaryLatency")
    if kind is None:
        return None, ""
    return fleet["latency"][kind]["p99"], kind


def render_markdown(data: Mapping[str, Any]) -> str:
    """A short Markdown summary for a CI comment: a table of the fleets, failures by reason, the timeline."""
    lines = [
        f"## {_md(_title(data))}",
        "",
        f"{data['startedAt']} to {data['endedAt']}, {len(data['fleets'])} fleet(s).",
        "",
        "| Fleet | Protocol | Devices | Sent | Acked | Failed | Dropped | Loss % | p99 ms |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for f in data["fleets"]:
        t = f["totals"]
        p99, kind = _p99(f)
        name = _md(f["name"]) + (" (deleted)" if f["deleted"] else "")
        lines.append(
            f"| {name} | {_md(f['protocol'])} | {_fmt(f['devices']['count'])} | {_fmt(t['sent'])} | "
            f"{_fmt(t['acked'])} | {_fmt(t['failed'])} | {_fmt(t['dropped'])} | {_fmt(f['lossPercent'])} | "
            f"{_fmt(p99)}{f' ({kind})' if kind else ''} |"
        )
    failing = [f for f in data["fleets"] if f["failuresByReason"]]
    if failing:
        lines += ["", "### Failures by reason", ""]
        for f in failing:
            reasons = sorted(f["failuresByReason"].items(), key=lambda item: -item[1])
            lines.append(f"- **{_md(f['name'])}**: " + ", ".join(f"{_md(r)} {n:,}" for r, n in reasons))
    timeline = data["timeline"]
    if timeline:
        lines += ["", "### Timeline (UTC)", ""]
        for event in timeline[:TIMELINE_MD_LINES]:
            lines.append(f"- {_clock(event['ts'])} **{_md(event['fleet'])}**: {_md(event['text'])}")
        if len(timeline) > TIMELINE_MD_LINES:
            lines.append(f"- … and {len(timeline) - TIMELINE_MD_LINES} more events (see the HTML or JSON report)")
    return "\n".join(lines) + "\n"


# -- HTML ----------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:Helvetica,Arial,sans-serif;font-size:13px;color:#222;margin:16px 24px;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 6px;border-bottom:1px solid #ccc}
h3{font-size:13px;margin:12px 0 4px}
table{border-collapse:collapse;margin:4px 0 8px;background:white}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f0f0f0}td.t,th.t{text-align:left}
.meta{color:#555}.bad{color:#b00020;font-weight:bold}.fleet{margin-bottom:24px}
.grid{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], text_columns: int = 1) -> str:
    def cell(tag: str, i: int, value: Any) -> str:
        cls = ' class="t"' if i < text_columns else ""
        return f"<{tag}{cls}>{value}</{tag}>"

    head = "".join(cell("th", i, _e(h)) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary_table(data: Mapping[str, Any]) -> str:
    rows = []
    for f in data["fleets"]:
        t = f["totals"]
        p99, kind = _p99(f)
        failed = _fmt(t["failed"])
        rows.append(
            [
                f'<a href="#fleet-{_e(f["name"])}">{_e(f["name"])}</a>' + (" (deleted)" if f["deleted"] else ""),
                _e(f["model"]),
                _e(f["protocol"]),
                _fmt(f["devices"]["count"]),
                _fmt(f["durationS"], " s"),
                _fmt(t["sent"]),
                _fmt(t["acked"]),
                f'<span class="bad">{failed}</span>' if t["failed"] else failed,
                _fmt(t["dropped"]),
                _fmt(f["lossPercent"]),
                _fmt(f["rates"]["sent"]["mean"]),
                _fmt(p99) + (f" ({_e(kind)})" if kind else ""),
            ]
        )
    agg = data["aggregated"]
    if len(data["fleets"]) > 1:
        t = agg["totals"]
        lat = agg["latency"]
        rows.append(
            [
                "<b>all fleets</b>",
                "",
                "",
                _fmt(agg["devices"]),
                _fmt(agg["durationS"], " s"),
                _fmt(t["sent"]),
                _fmt(t["acked"]),
                _fmt(t["failed"]),
                _fmt(t["dropped"]),
                _fmt(agg["lossPercent"]),
                "",
                _fmt(lat["p99"] if lat else None),
            ]
        )
    header = [
        "Fleet",
        "Model",
        "Protocol",
        "Devices",
        "Duration",
        "Sent",
        "Acked",
        "Failed",
        "Dropped",
        "Loss %",
        "Mean msg/s",
        "p99 ms",
    ]
    return _table(header, rows, text_columns=3)


def _fleet_section(fleet: Mapping[str, Any]) -> str:
    t = fleet["totals"]
    totals = _table(["Counter", "Total"], [[_e(k), _fmt(t.get(k, 0))] for k in COUNTERS])
    rates = _table(
        ["Per second", "Mean", "Peak"],
        [[k, _fmt(v["mean"]), _fmt(v["peak"])] for k, v in fleet["rates"].items()],
    )
    devices = _table(["Devices", "Value"], [[_e(k), _fmt(v)] for k, v in fleet["devices"].items()])
    latency_rows = [
        [_e(kind), _fmt(lat["count"]), *(_fmt(lat[k]) for k in ("min", "mean", "p50", "p90", "p99", "max"))]
        for kind, lat in fleet["latency"].items()
    ]
    latency = (
        _table(["Latency (ms)", "Count", "Min", "Mean", "p50", "p90", "p99", "Max"], latency_rows)
        if latency_rows
        else "<p>No latency recorded.</p>"
    )
    reasons = sorted(fleet["failuresByReason"].items(), key=lambda item: -item[1])
    failures = _table(["Failure reason", "Count"], [[_e(r), _fmt(n)] for r, n in reasons]) if reasons else ""
    worst = fleet["worstDevices"]
    worst_html = (
        _table(
            [
                "Device",
                "State",
                "Sent",
                "Failed",
                "Dropped",
                "Disconnects",
                "Reconnects",
                "Connect failures",
                "Last error",
            ],
            [
                [
                    _e(d["deviceId"]),
                    _e(d["state"]),
                    _fmt(d["sent"]),
                    _fmt(d["failed"]),
                    _fmt(d["dropped"]),
                    _fmt(d["disconnects"]),
                    _fmt(d["reconnects"]),
                    _fmt(d["connectFailures"]),
                    _e(d["lastError"] or ""),
                ]
                for d in worst
            ],
            text_columns=2,
        )
        if worst
        else "<p>No device failed, dropped messages or lost its connection"
        + (" (the fleet is deleted: its devices are gone)." if fleet["deleted"] else ".")
        + "</p>"
    )
    chart_data = ChartData(
        fleet=fleet["name"],
        model=fleet["model"],
        protocol=fleet["protocol"],
        rows=fleet["rows"],
        events=fleet["events"],
        started_at=fleet["startTs"],
        deleted=fleet["deleted"],
        totals=fleet["totals"],
    )
    meta = (
        f"{_e(fleet['model'])}, {_e(fleet['protocol'])} to {_e(fleet['target'])}, state {_e(fleet['state'])}, "
        f"{_e(fleet['startedAt'] or 'never started')} to {_e(fleet['endedAt'] or '-')}"
        f" ({fleet['rowsKept']} seconds of rows kept)"
    )
    return (
        f'<section class="fleet" id="fleet-{_e(fleet["name"])}"><h2>Fleet {_e(fleet["name"])}</h2>'
        f'<p class="meta">{meta}</p>'
        f'<div class="grid"><div>{totals}</div><div>{rates}{devices}</div><div>{latency}{failures}</div></div>'
        f"{fleet_charts_html(chart_data)}"
        f"<h3>Worst devices</h3>{worst_html}</section>"
    )


def _timeline(data: Mapping[str, Any]) -> str:
    events = data["timeline"]
    if not events:
        return "<p>No dropout and no network fault during the run.</p>"
    return _table(
        ["Time (UTC)", "Fleet", "Event", "What"],
        [[_clock(e["ts"]), _e(e["fleet"]), _e(e["kind"]), _e(e["text"])] for e in events],
        text_columns=4,
    )


def render_html(data: Mapping[str, Any]) -> str:
    """One self-contained HTML page: inline CSS and SVG, no script, nothing fetched from anywhere."""
    labels = data.get("labels") or {}
    label_text = ", ".join(f"{_e(k)}: {_e(v)}" for k, v in labels.items() if v)
    sections = "".join(_fleet_section(f) for f in data["fleets"]) or "<p>No fleet has figures.</p>"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(_title(data))}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(_title(data))}</h1>"
        f'<p class="meta">Run id {_e(data["runId"])}; from {_e(data["startedAt"])} to {_e(data["endedAt"])}'
        f"{'; ' + label_text if label_text else ''}. Written by IoTix.</p>"
        f"<h2>Summary</h2>{_summary_table(data)}"
        f"{sections}"
        f"<h2>Timeline of dropouts and network faults</h2>{_timeline(data)}"
        "</body></html>\n"
    )
