"""Per-second time series of every fleet: the figures a team watches during a run and keeps after it.

The :class:`MetricsHub` of the simulator wakes once a second, on the wall clock's second boundary, and samples
every fleet into its :class:`FleetSeries`: the per-second deltas of the fleet's counters (read from its devices
and its delivery bookkeeping, which every outcome of the transport seam updates), gauges at the end of the
second, and the latency histograms of that second (send lateness corrected for coordinated omission, request
latency where the protocol has one, end-to-end latency where a receiver's tracker follows the fleet). Then it
hands the rows to its sinks (exports) and publishes a snapshot that other threads may read.

Memory: a row is a tuple of about 25 numbers (≈ 1 KB with its latency tuples); :data:`WINDOW_S` rows are kept,
one hour, ≈ 3.5 MB per fleet that runs for an hour. The interval histograms of the last :data:`HISTOGRAM_WINDOW_S`
seconds are kept encoded (HdrHistogram's compressed form, a few hundred bytes each) for latency over a window.
Everything here runs on the runtime loop, except reading :attr:`MetricsHub.published`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from iotix.errors import NotFoundError
from iotix.observe.histogram import Histogram, LatencyRecorder
from iotix.observe.tracker import live_trackers

if TYPE_CHECKING:
    from iotix.fleet.fleet import Fleet

log = logging.getLogger("iotix.metrics")

#: Seconds of rows kept per fleet.
WINDOW_S = 3600
#: Seconds of interval histograms kept per fleet (latency over a window).
HISTOGRAM_WINDOW_S = 900
#: Deleted fleets whose series are kept (for reports and charts after the fleet is gone).
DELETED_KEPT = 200
#: Events (dropouts, faults) kept per fleet.
EVENTS_KEPT = 1000

#: Counters: per-second deltas in rows, cumulative in :attr:`FleetSeries.totals`. Device attribute or None.
COUNTERS: tuple[str, ...] = (
    "sent",
    "acked",
    "failed",
    "dropped",
    "retries",
    "bytes",
    "connects",
    "disconnects",
    "reconnects",
    "connectFailures",
    "devicesDropped",
    "devicesRestored",
)
_DEVICE_COUNTERS = (
    ("sent", attrgetter("sent")),
    ("acked", attrgetter("acked")),
    ("failed", attrgetter("failed")),
    ("dropped", attrgetter("dropped")),
    ("bytes", attrgetter("bytes_sent")),
    ("connects", attrgetter("connects")),
    ("disconnects", attrgetter("disconnects")),
    ("reconnects", attrgetter("reconnects")),
    ("connectFailures", attrgetter("connect_failures")),
)
#: Gauges: values at the end of the second.
GAUGES: tuple[str, ...] = ("devices", "connected", "inError", "queued", "networkFaults", "backlogBytes")
#: Latency kinds and their row keys.
LATENCY_KEYS = {"lateness": "latenessMs", "request": "requestLatencyMs", "e2e": "e2eLatencyMs"}
_LATENCY_FIELDS = ("count", "p50", "p90", "p99", "max")

_get_state = attrgetter("state")
_get_queue = attrgetter("offline_queue")


@dataclass
class FleetSnapshot:
    """What a fleet's series takes from it each second: cumulative counters, gauges, this second's latencies.

    A plain fleet makes one from its devices (:func:`fleet_snapshot`); a sharded fleet adds up its shards'
    (:meth:`add`), merging their histograms exactly.
    """

    counters: dict[str, int]  # cumulative, the keys of COUNTERS
    reasons: dict[str, int]  # cumulative failures per reason
    devices: int = 0
    running: int = 0
    error: int = 0
    queued: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)
    backlog: int = 0
    latency: dict[str, Histogram] = field(default_factory=dict)  # this second's, per kind

    @classmethod
    def empty(cls) -> FleetSnapshot:
        return cls(dict.fromkeys(COUNTERS, 0), {})

    def add(self, other: FleetSnapshot) -> None:
        """Add another shard's snapshot into this one (faults are the same on every shard: kept once)."""
        for key, n in other.counters.items():
            self.counters[key] = self.counters.get(key, 0) + n
        for code, n in other.reasons.items():
            self.reasons[code] = self.reasons.get(code, 0) + n
        self.devices += other.devices
        self.running += other.running
        self.error += other.error
        self.queued += other.queued
        self.backlog += other.backlog
        if not self.faults:
            self.faults = other.faults
        for kind, hist in other.latency.items():
            self.latency.setdefault(kind, Histogram()).merge(hist)

    def encoded(self) -> dict[str, Any]:
        """A plain dict (histograms in HdrHistogram's portable form) to send between processes."""
        out = dict(self.__dict__)
        out["latency"] = {kind: hist.encode() for kind, hist in self.latency.items() if hist.count}
        return out

    @classmethod
    def decoded(cls, data: Mapping[str, Any]) -> FleetSnapshot:
        fields = dict(data)
        fields["latency"] = {kind: Histogram.decode(blob) for kind, blob in fields["latency"].items()}
        return cls(**fields)


def fleet_snapshot(fleet: Fleet) -> FleetSnapshot:
    """The snapshot of a plain fleet; takes its latency intervals (so one reader per fleet)."""
    devices = fleet.devices
    counters: dict[str, int] = {key: sum(map(get, devices)) for key, get in _DEVICE_COUNTERS}
    counters["retries"] = fleet.delivery.retries
    counters["devicesDropped"] = fleet.devices_dropped
    counters["devicesRestored"] = fleet.devices_restored
    states = Counter(map(_get_state, devices))
    faults = fleet.faults
    lat = {"lateness": fleet.lateness.take_interval()}
    request = getattr(fleet.transport, "latency", None)
    if isinstance(request, LatencyRecorder):
        lat["request"] = request.take_interval()
    return FleetSnapshot(
        counters=counters,
        reasons=dict(fleet.delivery.reasons),
        devices=len(devices),
        running=states.get("running", 0),
        error=states.get("error", 0),
        queued=sum(map(len, filter(None, map(_get_queue, devices)))),
        faults=faults.describe() if faults is not None else [],
        backlog=faults.backlog() if faults is not None else 0,
        latency=lat,
    )


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC with a Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _devices(n: int) -> str:
    return "1 device" if n == 1 else f"{n:,} devices"


def _lat_tuple(hist: Histogram) -> tuple[int, float, float, float, float] | None:
    brief = hist.brief()
    return None if brief is None else tuple(brief[k] for k in _LATENCY_FIELDS)  # type: ignore[return-value]


class FleetSeries:
    """The time series of one fleet. Rows are stored as tuples and handed out as dicts (see :meth:`rows`)."""

    def __init__(self, fleet: Fleet, window_s: int = WINDOW_S, histogram_window_s: int = HISTOGRAM_WINDOW_S) -> None:
        self.fleet: Fleet | None = fleet
        self.name = fleet.name
        self.model = fleet.model.id
        self.protocol = fleet.model.protocol
        self.target = fleet.target
        self.request_based = fleet.request_based
        self.deleted = False
        self.started_at: float | None = None  # wall time of the second before the first row
        self.totals: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.failures_total: dict[str, int] = {}
        self._rows: deque[tuple[Any, ...]] = deque(maxlen=window_s)
        self._hists: deque[tuple[float, dict[str, str]]] = deque(maxlen=histogram_window_s)
        self._events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self._faults_seen: dict[str, str] = {}
        self._cumulative: dict[str, Histogram] = {}  # every latency of the rows, per kind
        self._was_active = False
        self._partial = True
        self.last_faults: list[dict[str, Any]] = []

    def labels(self) -> dict[str, str]:
        return {"fleet": self.name, "model": self.model, "protocol": self.protocol}

    # -- sampling (on the loop) ----------------------------------------------------------------------------

    def due(self) -> bool:
        """Whether this second gets a row: the fleet runs, or it just stopped (its last second)."""
        fleet = self.fleet
        if fleet is None:
            return False
        active = fleet.state in ("starting", "running")
        due = active or self._was_active
        # partial: the fleet started, is stopping or stopped during this second
        self._partial = not self._was_active or not active or fleet.stopping
        self._was_active = active
        return due

    def sample(self, ts: float) -> dict[str, Any]:
        """Sample the fleet for the second that ends at wall time ``ts``; returns the row."""
        fleet = self.fleet
        assert fleet is not None
        if self.started_at is None:
            self.started_at = ts - 1.0
        snap: FleetSnapshot = fleet.metrics_snapshot()
        totals = self.totals
        deltas = tuple(snap.counters[key] - totals[key] for key in COUNTERS)
        totals.update(snap.counters)
        reasons = self._reasons(snap.reasons)
        described = snap.faults
        gauges = (snap.devices, snap.running + snap.error, snap.error, snap.queued, len(described), snap.backlog)
        lat = dict(snap.latency)
        e2e = self._e2e()
        if e2e is not None:
            lat["e2e"] = e2e
        for kind, hist in lat.items():
            self._cumulative.setdefault(kind, Histogram()).merge(hist)
        encoded = {kind: hist.encode() for kind, hist in lat.items() if hist.count}
        if encoded:
            self._hists.append((ts, encoded))
        row = (
            ts,
            self._partial,
            *deltas,
            *gauges,
            reasons,
            *(_lat_tuple(lat[kind]) if kind in lat else None for kind in LATENCY_KEYS),
        )
        self._rows.append(row)
        self._note_events(ts, deltas, described)
        self.last_faults = described
        return self._as_dict(row)

    def _reasons(self, reasons: Mapping[str, int]) -> dict[str, int] | None:
        """Failures by reason in this second (None when none), and the cumulative figures."""
        delta: dict[str, int] = {}
        total = self.failures_total
        for code, n in reasons.items():
            d = n - total.get(code, 0)
            if d:
                delta[code] = d
                total[code] = n
        return delta or None

    def _e2e(self) -> Histogram | None:
        """This second's end-to-end latency of the fleet, from every live receiver tracker that follows it."""
        e2e: Histogram | None = None
        for tracker in live_trackers():
            recorder = tracker.groups.get(self.name)
            if recorder is None:
                continue
            interval = recorder.take_interval()
            if e2e is None:
                e2e = interval
            else:
                e2e.merge(interval)
        return e2e

    def _note_events(self, ts: float, deltas: tuple[int, ...], described: list[dict[str, Any]]) -> None:
        dropped = deltas[COUNTERS.index("devicesDropped")]
        restored = deltas[COUNTERS.index("devicesRestored")]
        if dropped:
            self._events.append({"ts": ts, "kind": "dropout", "text": f"{_devices(dropped)} dropped"})
        if restored:
            self._events.append({"ts": ts, "kind": "restore", "text": f"{_devices(restored)} reconnecting"})
        current = {}
        for entry in described:
            who = "all devices" if entry["devices"] == "all" else _devices(entry["devices"])
            current[entry["name"]] = f"{entry['name']} ({entry['kind']}: {entry['summary']}; {who})"
        for name, text in current.items():
            if name not in self._faults_seen:
                self._events.append({"ts": ts, "kind": "fault", "text": f"{text} started"})
        for name, text in self._faults_seen.items():
            if name not in current:
                self._events.append({"ts": ts, "kind": "fault_end", "text": f"{text} ended"})
        self._faults_seen = current

    def settle(self) -> dict[str, Any] | None:
        """A fleet that stopped since the last round gets its last row now (so that the rows add up to its
        counters at once); no later round adds one. Returns the row, or None when nothing was due."""
        fleet = self.fleet
        if fleet is None or not self._was_active or fleet.state in ("starting", "running"):
            return None
        self._was_active = False
        self._partial = True  # the fleet stopped during this second: its row ends now (never in the future)
        return self.sample(time.time())

    def detach(self) -> None:
        """The fleet is deleted: keep the series, forget the fleet."""
        self.fleet = None
        self.deleted = True
        for text in self._faults_seen.values():
            self._events.append({"ts": time.time(), "kind": "fault_end", "text": f"{text} ended"})
        self._faults_seen = {}
        self.last_faults = []

    # -- reading ---------------------------------------------------------------------------------------------

    def _as_dict(self, row: tuple[Any, ...]) -> dict[str, Any]:
        ts = row[0]
        out: dict[str, Any] = {
            "time": iso(ts),
            "ts": ts,
            "elapsed": round(ts - (self.started_at or ts), 3),
            "partial": row[1],
        }
        i = 2
        for key in COUNTERS:
            out[key] = row[i]
            i += 1
        for key in GAUGES:
            out[key] = row[i]
            i += 1
        out["failedByReason"] = dict(row[i]) if row[i] else {}
        i += 1
        for key in LATENCY_KEYS.values():
            lat = row[i]
            out[key] = None if lat is None else dict(zip(_LATENCY_FIELDS, lat, strict=True))
            i += 1
        return out

    def rows(self, last_s: float | None = None) -> list[dict[str, Any]]:
        """The rows (one per second, oldest first); ``last_s``: only those of the last so many seconds."""
        rows: Iterable[tuple[Any, ...]] = self._rows
        if last_s is not None and self._rows:
            since = self._rows[-1][0] - last_s
            rows = [r for r in self._rows if r[0] > since]
        return [self._as_dict(r) for r in rows]

    def latest(self) -> dict[str, Any] | None:
        return self._as_dict(self._rows[-1]) if self._rows else None

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self._events)

    def latency_window(self, kind: str, seconds: float) -> Histogram:
        """The ``kind`` latencies of the last ``seconds`` (merged interval histograms; at most
        :data:`HISTOGRAM_WINDOW_S`)."""
        merged = Histogram()
        if not self._hists:
            return merged
        since = self._hists[-1][0] - seconds
        for ts, encoded in self._hists:
            if ts > since and kind in encoded:
                merged.merge(Histogram.decode(encoded[kind]))
        return merged

    def latency_total(self, kind: str) -> Histogram:
        """Every ``kind`` latency of the fleet's rows (the exact merge of their histograms; also for a deleted
        fleet, and never another fleet's that had the same name)."""
        total = self._cumulative.get(kind)
        return total.copy() if total is not None else Histogram()


class MetricsHub:
    """The series of every fleet of one simulator, sampled each wall-clock second; sinks and a snapshot."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.series: dict[str, FleetSeries] = {}
        self.deleted: deque[FleetSeries] = deque(maxlen=DELETED_KEPT)
        self.sinks: list[Callable[[list[tuple[FleetSeries, dict[str, Any]]]], None]] = []
        self.run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        self.labels: dict[str, str] = {}
        #: replaced (never mutated) after every sampling round: safe to read from any thread
        self.published: dict[str, dict[str, Any]] = {}
        self.started_at = time.time()
        self.progress_interval_s = 0.0
        self.progress_writer: Callable[[str], None] | None = None
        self._progress_last = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._next_ts = 0.0
        self._last_ts = 0.0
        self.sink_errors = 0

    # -- fleets --------------------------------------------------------------------------------------------

    def track(self, fleet: Fleet) -> FleetSeries:
        series = self.series[fleet.name] = FleetSeries(fleet)
        self._arm()
        return series

    def untrack(self, name: str) -> None:
        """The fleet ``name`` is deleted: its last second is sampled, its series kept among the deleted."""
        series = self.series.pop(name, None)
        if series is None:
            return
        row = series.settle()  # it ran until now: its last second
        if row is not None:
            self._hand_to_sinks([(series, row)])
        series.detach()
        self.deleted.append(series)

    def find(self, name: str) -> FleetSeries | None:
        """The series of fleet ``name``: the live fleet's (settled: a stopped fleet has its last row), else the
        last deleted one of that name."""
        series = self.series.get(name)
        if series is not None:
            row = series.settle()
            if row is not None:
                self._hand_to_sinks([(series, row)])
            return series
        for old in reversed(self.deleted):
            if old.name == name:
                return old
        return None

    def settle_all(self) -> None:
        """Give every fleet that stopped since the last round its last row now (and to the sinks)."""
        for name in list(self.series):
            self.find(name)

    def require(self, name: str) -> FleetSeries:
        """:meth:`find`, or NotFoundError naming the fleets that have figures."""
        series = self.find(name)
        if series is None:
            known = ", ".join(f"'{n}'" for n in sorted({s.name for s in self.all_series()})) or "none"
            raise NotFoundError(f"No fleet named '{name}' has figures (fleets with figures: {known}).")
        return series

    def all_series(self) -> list[FleetSeries]:
        """Deleted fleets' series first (oldest first), then the live ones."""
        return [*self.deleted, *self.series.values()]

    def add_sink(self, sink: Callable[[list[tuple[FleetSeries, dict[str, Any]]]], None]) -> None:
        self.sinks.append(sink)

    def remove_sink(self, sink: Callable[[list[tuple[FleetSeries, dict[str, Any]]]], None]) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    # -- the clock -----------------------------------------------------------------------------------------

    def _arm(self) -> None:
        if self._handle is not None:
            return
        wall = time.time()
        self._next_ts = float(int(wall)) + 1.0  # the second this round closes
        self._handle = self.loop.call_later(max(self._next_ts - wall, 0.001), self._tick)

    def _tick(self) -> None:
        self._handle = None
        now = time.time()
        # Stamped with the second it was armed for; a round that ran more than a second late closes the
        # second it runs in. Never twice the same second (a late round followed by a punctual one).
        ts = self._next_ts if now - self._next_ts < 1.0 else float(int(now))
        if ts > self._last_ts:
            self._last_ts = ts
            try:
                self.sample(ts)
            except Exception:  # the clock must keep going whatever one round did
                log.exception("sampling the fleets' metrics failed")
        if self.series:
            self._arm()

    def sample(self, ts: float) -> list[tuple[FleetSeries, dict[str, Any]]]:
        """One round: a row for every fleet that is due, then the sinks, the snapshot and progress lines."""
        pairs = []
        for series in list(self.series.values()):
            try:
                if series.due():
                    pairs.append((series, series.sample(ts)))
            except Exception as err:  # one fleet's failure must not cost the others their second
                log.exception("sampling fleet %s failed", series.name)
                if series.fleet is not None:
                    series.fleet.report_error(f"sampling its figures failed: {err!r}")
        self._publish()
        self._hand_to_sinks(pairs)
        self._progress(ts)
        return pairs

    def _hand_to_sinks(self, pairs: list[tuple[FleetSeries, dict[str, Any]]]) -> None:
        for sink in list(self.sinks):
            try:
                sink(pairs)
            except Exception:
                self.sink_errors += 1
                log.exception("a metrics sink failed")

    def _publish(self) -> None:
        published = {}
        for name, series in self.series.items():
            fleet = series.fleet
            published[name] = {
                "labels": {**series.labels(), "run_id": self.run_id},
                "state": fleet.state if fleet is not None else "deleted",
                "totals": dict(series.totals),
                "failures": dict(series.failures_total),
                "row": series.latest(),
                "faults": series.last_faults,
            }
        self.published = published

    # -- console progress ----------------------------------------------------------------------------------

    def _progress(self, ts: float) -> None:
        if self.progress_interval_s <= 0 or self.progress_writer is None:
            return
        if not self._progress_last:  # the first round: the first lines come one interval later
            self._progress_last = ts
        if ts - self._progress_last < self.progress_interval_s:
            return
        self._progress_last = ts
        for series in self.series.values():
            fleet = series.fleet
            if fleet is None or fleet.state not in ("starting", "running"):
                continue
            line = progress_line(series, self.progress_interval_s)
            if line:
                try:
                    self.progress_writer(line)
                except Exception:
                    log.exception("writing a progress line failed")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def progress_line(series: FleetSeries, window_s: float) -> str | None:
    """One console line for a running fleet: its rate over ``window_s``, devices connected, failures, p99."""
    rows = series.rows(window_s)
    if not rows:
        return None
    last = rows[-1]
    rate = sum(r["sent"] for r in rows) / len(rows)
    failed = sum(r["failed"] for r in rows)
    p99 = series.latency_window("e2e" if last["e2eLatencyMs"] else "lateness", window_s).percentile(99)
    what = "end-to-end" if last["e2eLatencyMs"] else "lateness"
    latency = f", p99 {what} {p99 * 1000:.1f} ms" if p99 is not None else ""
    return (
        f"[iotix] {last['time'][11:19]} {series.name}: {rate:,.0f} msg/s, "
        f"{last['connected']:,}/{last['devices']:,} connected, {failed:,} failed in {len(rows)} s, "
        f"{series.totals['sent']:,} sent in all{latency}"
    )
