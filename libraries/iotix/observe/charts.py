"""SVG charts of a fleet's per-second time series, drawn with pygal: message rate, latency percentiles,
devices connected, failures; dropouts and network faults marked on the time axis.

Charts are drawn from a :class:`ChartData`: plain copies of a :class:`~iotix.observe.series.FleetSeries`'
rows and events, taken on the runtime loop with :meth:`ChartData.of` (cheap), then rendered in any thread
(pygal takes 5-50 ms a chart: never on the loop). The SVG is self-contained and can be inlined in HTML: no XML
declaration, no script (pygal's tooltips script comes from a CDN and its config script is useless without it:
both are left out), no comments, a fixed size (:data:`WIDTH` x :data:`HEIGHT`). Hovering a marker shows its
event through a native SVG ``<title>``. A chart without data says :data:`NO_DATA_TEXT` rather than failing.

The x axis is seconds since the fleet started (since its first row when it never started). Long series are
bucketed to at most :data:`MAX_POINTS` points: message rates are the bucket's mean, failures, latencies and
devices in error its peak, devices connected its lowest value (a dip stays visible); the title then says how
many seconds one point covers.
"""

from __future__ import annotations

import html
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iotix.observe.series import LATENCY_KEYS

if TYPE_CHECKING:
    from iotix.observe.series import FleetSeries

WIDTH = 700
HEIGHT = 280
#: at most this many points per line; longer series are bucketed
MAX_POINTS = 600
NO_DATA_TEXT = "no data yet"
#: with more markers than this on a chart, their labels are left out (they stay in the hover title)
MAX_LABELLED_MARKERS = 12
#: at most this many markers of each kind per chart (the last ones)
MAX_MARKERS = 200
LABEL_CHARS = 30
#: a gap between two rows longer than this (seconds) interrupts the lines
GAP_S = 2.5

LATENCY_PERCENTILES = ("p50", "p90", "p99")

#: chart names, in the order they are shown
CHART_NAMES = ("rate", "latency", "devices", "failures")
CHART_TITLES = {
    "rate": "Message rate (msg/s)",
    "latency": "Latency (ms)",
    "devices": "Devices",
    "failures": "Failures (per second)",
}

DROPOUT_KINDS = ("dropout", "restore")
FAULT_KINDS = ("fault", "fault_end")
DROPOUT_COLOR = "#8c564b"
FAULT_COLOR = "#e377c2"
LATENCY_COLORS = {
    "lateness": ("#9ecae1", "#4292c6", "#08519c"),
    "request": ("#a1d99b", "#41ab5d", "#006d2c"),
    "e2e": ("#fdae6b", "#f16913", "#a63603"),
}

Row = Mapping[str, Any]
Aggregate = Callable[[list[float]], float]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@dataclass(frozen=True)
class ChartData:
    """What the charts of one fleet are drawn from: plain data, safe to hand to another thread."""

    fleet: str
    model: str = ""
    protocol: str = ""
    rows: Sequence[Row] = ()
    events: Sequence[Row] = ()
    #: epoch seconds the fleet started (None: never started; the first row is then the origin)
    started_at: float | None = None
    deleted: bool = False
    totals: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, series: FleetSeries, last_s: float | None = None, since: float | None = None) -> ChartData:
        """Copy what the charts need from ``series``: its last ``last_s`` seconds, or its rows after epoch
        second ``since`` (both left out: every row kept). Runs on the runtime loop (the rows are fresh dicts)."""
        rows = series.rows(last_s)
        if since is not None:
            rows = [row for row in rows if row["ts"] > since]
        events = [dict(event) for event in series.events]
        if last_s is not None or since is not None:
            # an event is stamped with the second (row) it happened in
            start = rows[0]["ts"] if rows else since if since is not None else time.time() - (last_s or 0)
            events = [event for event in events if event["ts"] >= start]
        return cls(
            fleet=series.name,
            model=series.model,
            protocol=series.protocol,
            rows=rows,
            events=events,
            started_at=series.started_at,
            deleted=series.deleted,
            totals=dict(series.totals),
        )

    @property
    def origin(self) -> float | None:
        """Epoch seconds of x = 0: the fleet's start, else the start its first row implies."""
        if self.started_at is not None:
            return self.started_at
        for row in self.rows:
            if row.get("ts") is not None:
                return float(row["ts"]) - float(row.get("elapsed") or 0.0)
        return None

    def x_of(self, row: Row) -> float:
        """Seconds since the fleet started, of a row or an event."""
        origin = self.origin
        ts = row.get("ts")
        if origin is not None and ts is not None:
            return float(ts) - origin
        return float(row.get("elapsed") or 0.0)

    @property
    def duration_s(self) -> float:
        """Seconds the rows cover (0 without rows)."""
        if not self.rows:
            return 0.0
        return self.x_of(self.rows[-1]) - self.x_of(self.rows[0]) + 1.0


def as_chart_data(source: ChartData | FleetSeries, last_s: float | None = None) -> ChartData:
    """``source`` as chart data (a FleetSeries is copied: do that on the runtime loop)."""
    return source if isinstance(source, ChartData) else ChartData.of(source, last_s)


# -- lines and markers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One line of a chart: a value per row, aggregated per bucket."""

    title: str
    value: Callable[[Row], float | None]
    aggregate: Aggregate
    color: str


def _field(name: str) -> Callable[[Row], float | None]:
    def get(row: Row) -> float | None:
        value = row.get(name)
        return None if value is None else float(value)

    return get


def _latency(key: str, percentile: str) -> Callable[[Row], float | None]:
    def get(row: Row) -> float | None:
        summary = row.get(key)
        if not summary or not summary.get("count"):
            return None
        value = summary.get(percentile)
        return None if value is None else float(value)

    return get


def bucket_size(count: int, max_points: int = MAX_POINTS) -> int:
    """Rows per point so that ``count`` rows make at most ``max_points`` points."""
    return max(1, math.ceil(count / max_points))


def points(data: ChartData, line: Line, size: int) -> list[tuple[float, float] | None]:
    """The (x, y) points of ``line``: one per bucket of ``size`` rows; None where the line is interrupted
    (no value in a bucket, or a gap in the rows)."""
    out: list[tuple[float, float] | None] = []
    previous_x: float | None = None
    rows = data.rows
    for start in range(0, len(rows), size):
        bucket = rows[start : start + size]
        x = data.x_of(bucket[0])
        if previous_x is not None and x - previous_x > GAP_S * size and out and out[-1] is not None:
            out.append(None)
        previous_x = data.x_of(bucket[-1])
        values = [v for v in (line.value(row) for row in bucket) if v is not None]
        if values:
            out.append((round(x, 3), round(line.aggregate(values), 3)))
        elif out and out[-1] is not None:
            out.append(None)
    return out


@dataclass(frozen=True)
class Marker:
    """An event marked on the time axis."""

    x: float
    kind: str
    text: str

    @property
    def label(self) -> str:
        """A short label: a fault's name and whether it started or ended, a dropout's text."""
        short = self.text
        if self.kind in FAULT_KINDS:  # "latency-1 (latency: latency 200ms; all devices) started"
            name = self.text.split(" (", 1)[0].split(":", 1)[0]
            short = f"{name} {'started' if self.kind == 'fault' else 'ended'}"
        return short if len(short) <= LABEL_CHARS else short[: LABEL_CHARS - 1] + "…"


def markers(data: ChartData) -> dict[str, list[Marker]]:
    """The dropout and fault events of ``data`` within its rows' time span, by group ("dropouts", "faults")."""
    groups: dict[str, list[Marker]] = {"dropouts": [], "faults": []}
    if not data.rows:
        return groups
    first, last = data.x_of(data.rows[0]) - 1.0, data.x_of(data.rows[-1]) + 1.0
    for event in data.events:
        kind = str(event.get("kind", ""))
        group = "dropouts" if kind in DROPOUT_KINDS else "faults" if kind in FAULT_KINDS else None
        if group is None or event.get("ts") is None:
            continue
        x = data.x_of(event)
        if first <= x <= last:
            groups[group].append(Marker(round(x, 3), kind, str(event.get("text", kind))))
    return {name: found[-MAX_MARKERS:] for name, found in groups.items()}


# -- rendering ---------------------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _clean_svg(root: Any) -> Any:
    """pygal xml filter: drop scripts and comments; give each labelled dot a native hover ``<title>``."""
    unwanted = [
        (parent, child)
        for parent in root.iter()
        for child in parent
        if not isinstance(child.tag, str) or _local(child.tag) == "script"
    ]
    for parent, child in unwanted:
        parent.remove(child)
    for text in root.iter():
        # a marker's printed label: to the right of its line, or to the left near the right edge
        if isinstance(text.tag, str) and _local(text.tag) == "text" and text.get("class") == "label":
            x = float(text.get("x") or 0.0)
            right = x > WIDTH * 0.6
            text.set("x", f"{x - 3 if right else x + 3:.2f}")
            text.set("text-anchor", "end" if right else "start")
    for group in root.iter():
        if not isinstance(group.tag, str) or _local(group.tag) != "g" or group.get("class") != "dots":
            continue
        descs = {child.get("class"): child.text for child in group if _local(child.tag) == "desc"}
        label = descs.get("label")
        if label:
            title = group.makeelement(group.tag[: -len("g")] + "title", {})
            title.text = label
            group.insert(0, title)
    return root


def _pygal() -> Any:
    import pygal  # lazily: importing the Metrics library should not pay for it

    return pygal


def _style(colors: Sequence[str]) -> Any:
    from pygal.style import Style

    return Style(
        colors=tuple(colors) or ("#1f77b4",),
        background="white",
        plot_background="white",
        font_family="Helvetica, Arial, sans-serif",
        title_font_size=13,
        label_font_size=9,
        major_label_font_size=9,
        legend_font_size=10,
        value_font_size=9,
        value_label_font_size=9,
        no_data_font_size=18,
        guide_stroke_color="#dddddd",
        major_guide_stroke_color="#bbbbbb",
        guide_stroke_dasharray="2,2",
        major_guide_stroke_dasharray="2,2",
        stroke_width="1.5",
    )


def _seconds_label(x: float) -> str:
    return f"{x:g} s"


def render_chart(
    title: str,
    data: ChartData,
    lines: Sequence[Line],
    *,
    subtitle: str = "",
    size: int | None = None,
) -> str:
    """One XY chart of ``lines`` over ``data``'s rows with its event markers, as an SVG string."""
    size = size or bucket_size(len(data.rows))
    computed = [(line, points(data, line, size)) for line in lines]
    drawn = [(line, pts) for line, pts in computed if any(p is not None for p in pts)]
    marks = markers(data) if drawn else {"dropouts": [], "faults": []}
    full_title = title + (f" · {size} s per point" if size > 1 else "") + (f" · {subtitle}" if subtitle else "")
    labelled = sum(len(found) for found in marks.values()) <= MAX_LABELLED_MARKERS
    colors = [line.color for line, _ in drawn]
    colors += [color for name, color in (("dropouts", DROPOUT_COLOR), ("faults", FAULT_COLOR)) if marks[name]]
    chart = _pygal().XY(
        width=WIDTH,
        height=HEIGHT,
        explicit_size=True,
        js=[],
        disable_xml_declaration=True,
        style=_style(colors),
        title=full_title,
        show_dots=False,
        allow_interruptions=True,
        include_x_axis=True,
        legend_at_bottom=True,
        legend_at_bottom_columns=min(6, max(1, len(colors))),
        truncate_legend=-1,
        print_labels=labelled,
        x_value_formatter=_seconds_label,
        no_data_text=NO_DATA_TEXT,
    )
    chart.add_xml_filter(_clean_svg)
    top = max((p[1] for _, pts in drawn for p in pts if p is not None), default=1.0) or 1.0
    for line, pts in drawn:
        chart.add(line.title, pts)
    # labels of successive markers alternate between two heights, so that neighbours overlap less
    for name, legend, heights in (("dropouts", "dropouts", (1.0, 0.9)), ("faults", "network faults", (0.78, 0.68))):
        found = marks[name]
        if not found:
            continue
        starts = sum(m.kind in ("dropout", "fault") for m in found)
        marker_points: list[Any] = []
        for i, mark in enumerate(found):
            peak = round(top * heights[i % 2], 3)
            marker_points += [(mark.x, 0.0), {"value": (mark.x, peak), "label": mark.label}, None]
        chart.add(
            f"{legend} ({starts})",
            marker_points,
            show_dots=True,
            dots_size=2,
            stroke_style={"width": 1.2, "dasharray": "4,3"},
        )
    return _FLOAT.sub(r"\1", str(chart.render()))


#: coordinates with more than two decimals (pygal writes 16): two are plenty at this size and halve the SVG
_FLOAT = re.compile(r"(\d\.\d\d)\d+")


def rate_chart(data: ChartData) -> str:
    """Messages sent, acknowledged and failed per second."""
    lines = [
        Line("sent", _field("sent"), _mean, "#1f77b4"),
        Line("acked", _field("acked"), _mean, "#2ca02c"),
        Line("failed", _field("failed"), _mean, "#d62728"),
    ]
    return render_chart(CHART_TITLES["rate"], data, lines)


def latency_kinds(data: ChartData) -> list[str]:
    """The latency kinds with at least one sample in ``data``'s rows."""
    return [kind for kind, key in LATENCY_KEYS.items() if any((row.get(key) or {}).get("count") for row in data.rows)]


def latency_chart(data: ChartData) -> str:
    """p50, p90 and p99 (ms) of each latency kind present (send lateness, request, end to end)."""
    lines = [
        Line(f"{kind} {p}", _latency(LATENCY_KEYS[kind], p), max, color)
        for kind in latency_kinds(data)
        for p, color in zip(LATENCY_PERCENTILES, LATENCY_COLORS[kind], strict=True)
    ]
    return render_chart(CHART_TITLES["latency"], data, lines)


def devices_chart(data: ChartData) -> str:
    """Devices of the fleet, connected, and in error."""
    lines = [
        Line("devices", _field("devices"), max, "#7f7f7f"),
        Line("connected", _field("connected"), min, "#1f77b4"),
        Line("in error", _field("inError"), max, "#d62728"),
    ]
    return render_chart(CHART_TITLES["devices"], data, lines)


def failures_chart(data: ChartData) -> str:
    """Messages failed and dropped, disconnects and reconnects per second."""
    lines = [
        Line("failed", _field("failed"), max, "#d62728"),
        Line("dropped", _field("dropped"), max, "#ff7f0e"),
        Line("disconnects", _field("disconnects"), max, "#9467bd"),
        Line("reconnects", _field("reconnects"), max, "#17becf"),
    ]
    return render_chart(CHART_TITLES["failures"], data, lines)


CHARTS: dict[str, Callable[[ChartData], str]] = {
    "rate": rate_chart,
    "latency": latency_chart,
    "devices": devices_chart,
    "failures": failures_chart,
}


def fleet_charts(source: ChartData | FleetSeries) -> dict[str, str]:
    """The four charts of a fleet as SVG strings, by name (:data:`CHART_NAMES`)."""
    data = as_chart_data(source)
    return {name: CHARTS[name](data) for name in CHART_NAMES}


# -- the HTML fragment -------------------------------------------------------------------------------------


def _utc(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts))


def _count(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, int | float) else "-"


def caption(data: ChartData) -> str:
    """One line of HTML: fleet, model, protocol, duration, and what it sent."""
    parts = [f"Fleet <b>{html.escape(data.fleet)}</b>"]
    if data.deleted:
        parts[0] += " (deleted)"
    if data.model:
        parts.append(f"model {html.escape(data.model)}")
    if data.protocol:
        parts.append(html.escape(data.protocol))
    if data.rows:
        first, last = data.rows[0].get("ts"), data.rows[-1].get("ts")
        span = f"{data.duration_s:g} s"
        if first is not None and last is not None:
            span += f" ({_utc(float(first))} to {_utc(float(last) + 1)} UTC)"
        parts.append(span)
    else:
        parts.append("no rows yet")
    totals = data.totals or {
        key: sum(int(row.get(key) or 0) for row in data.rows) for key in ("sent", "acked", "failed")
    }
    parts.append(" · ".join(f"{key} {_count(totals.get(key))}" for key in ("sent", "acked", "failed")))
    return ", ".join(parts)


def events_list(data: ChartData, limit: int = 50) -> str:
    """The fleet's dropouts and faults as a collapsed HTML list (empty string without events)."""
    events = [e for e in data.events if e.get("kind") in DROPOUT_KINDS + FAULT_KINDS]
    if not events:
        return ""
    items = "".join(
        f"<li>{data.x_of(e):+.0f} s ({_utc(float(e['ts']))} UTC): {html.escape(str(e.get('text', e.get('kind'))))}</li>"
        for e in events[-limit:]
    )
    more = f" (the last {limit})" if len(events) > limit else ""
    return (
        f'<details style="margin:2px 0"><summary>{len(events)} dropout and fault events{more}</summary>'
        f'<ul style="margin:2px 0">{items}</ul></details>'
    )


def fleet_charts_html(source: ChartData | FleetSeries, last_s: float | None = None) -> str:
    """One HTML fragment with a caption, the four charts and the fleet's events, for
    ``logger.info(fragment, html=True)`` or a report. A FleetSeries is read directly: on the runtime loop
    only; elsewhere pass a :class:`ChartData` taken there."""
    data = as_chart_data(source, last_s)
    charts = "".join(f'<div class="iotix-chart">{svg}</div>' for svg in fleet_charts(data).values())
    return (
        '<div class="iotix-fleet-charts" style="font-family:Helvetica,Arial,sans-serif;font-size:12px">'
        f'<p style="margin:2px 0">{caption(data)}</p>'
        f'<div style="display:flex;flex-wrap:wrap;gap:6px">{charts}</div>'
        f"{events_list(data)}</div>"
    )


def iter_svgs(fragment: str) -> Iterable[str]:
    """The ``<svg>...</svg>`` elements of an HTML fragment, in order (for tests and reports)."""
    start = 0
    while (begin := fragment.find("<svg", start)) >= 0:
        end = fragment.index("</svg>", begin) + len("</svg>")
        yield fragment[begin:end]
        start = end
