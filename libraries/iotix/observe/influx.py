"""Export of the fleets' per-second figures to InfluxDB 2 (or anything that speaks its write API, such as
VictoriaMetrics), through influxdb-client's batching write API, off the runtime loop.

Names (shared with the Prometheus endpoint of :mod:`iotix.observe.prometheus`, so that one PromQL dashboard
works on Prometheus and on VictoriaMetrics, which names field ``f`` of measurement ``m`` ``m_f``):

- measurement ``iotix``: tags ``fleet``, ``model``, ``protocol``, ``run_id``, ``suite``, ``test`` and the
  user's tags; fields :data:`COUNTER_FIELDS` (cumulative since the fleet was created, integers) and
  :data:`GAUGE_FIELDS` (values at the end of the second, integers);
- measurement ``iotix_latency``: the same tags and ``kind`` (``lateness``, ``request``, ``e2e``); fields
  ``p50_seconds``, ``p90_seconds``, ``p99_seconds``, ``max_seconds`` (floats) and ``count`` (integer) of that
  second, only for kinds that have samples in that second;
- measurement ``iotix_failures``: the same tags and ``reason``; field ``total`` (cumulative failures of that
  reason, integer).

Every point has the timestamp of its row (the end of the second it describes), millisecond precision.

How a slow or dead time-series database is kept away from the fleets: the hub's sink (:meth:`InfluxExport.sink`,
on the runtime loop) only copies a few numbers into a list under a lock. A thread of its own turns them into
points every ``interval_s`` and hands them to the batching write API, which writes batches from its own thread
with a bounded number of retries. Points buffered plus points handed over and not yet written or failed never
exceed ``max_buffered``: beyond that the sink drops new points and counts them (``pointsDropped``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import WriteOptions, WriteType
from reactivex.scheduler import ThreadPoolScheduler

from iotix.errors import ConfigurationError
from iotix.observe.series import COUNTERS, GAUGES, LATENCY_KEYS

if TYPE_CHECKING:
    from iotix.observe.series import FleetSeries

__all__ = [
    "COUNTER_FIELDS",
    "FAILURES_MEASUREMENT",
    "GAUGE_FIELDS",
    "LATENCY_FIELDS",
    "LATENCY_MEASUREMENT",
    "MEASUREMENT",
    "RESERVED_TAGS",
    "ExportRecord",
    "InfluxExport",
    "build_points",
    "record_of",
]

log = logging.getLogger("iotix.metrics.influx")

MEASUREMENT = "iotix"
LATENCY_MEASUREMENT = "iotix_latency"
FAILURES_MEASUREMENT = "iotix_failures"

#: Row counters (cumulative values from the series' totals) -> field names.
COUNTER_FIELDS: dict[str, str] = {
    "sent": "messages_sent_total",
    "acked": "messages_acked_total",
    "failed": "messages_failed_total",
    "dropped": "messages_dropped_total",
    "retries": "retries_total",
    "bytes": "bytes_sent_total",
    "connects": "connects_total",
    "disconnects": "disconnects_total",
    "reconnects": "reconnects_total",
    "connectFailures": "connect_failures_total",
    "devicesDropped": "devices_dropped_total",
    "devicesRestored": "devices_restored_total",
}
#: Row gauges -> field names.
GAUGE_FIELDS: dict[str, str] = {
    "devices": "devices",
    "connected": "devices_connected",
    "inError": "devices_in_error",
    "queued": "messages_queued",
    "networkFaults": "network_faults",
    "backlogBytes": "network_backlog_bytes",
}
#: Keys of a row's latency summary (milliseconds) -> field names (seconds; ``count`` stays a count).
LATENCY_FIELDS: dict[str, str] = {
    "p50": "p50_seconds",
    "p90": "p90_seconds",
    "p99": "p99_seconds",
    "max": "max_seconds",
    "count": "count",
}
#: Tags that IoTix sets itself; user tags may not use these keys.
RESERVED_TAGS = ("fleet", "model", "protocol", "run_id", "suite", "test", "kind", "reason")

assert set(COUNTER_FIELDS) == set(COUNTERS), "every counter of the series has a field name"
assert set(GAUGE_FIELDS) == set(GAUGES), "every gauge of the series has a field name"

#: Points in one HTTP write (VictoriaMetrics and InfluxDB take far more; this keeps a request small).
BATCH_SIZE = 5_000
#: Bounded retries of a failed batch: 3 more tries, 0.5 s then 1 s then 2 s, all within 10 s.
RETRY_OPTIONS = {
    "max_retries": 3,
    "retry_interval": 500,
    "max_retry_delay": 2_000,
    "max_retry_time": 10_000,
    "exponential_base": 2,
}
#: HTTP timeout of one write request, milliseconds.
HTTP_TIMEOUT_MS = 5_000
#: influxdb-client's loggers of failed and retried writes: the export counts those itself (stats, problems).
_CLIENT_LOGGERS = ("influxdb_client.client.write_api", "influxdb_client.client.write.retry")
#: urllib3 warns about every retry of a write (only records about the write API's path are taken from it).
_URLLIB3_LOGGER = "urllib3.connectionpool"
_WRITE_PATH = "/api/v2/write"


class _ToDebug(logging.Filter):
    """Turn the per-batch warnings and errors of a failing write into DEBUG records of
    ``iotix.metrics.influx``: a TSDB that is down is reported once per Metrics keyword (see
    :meth:`InfluxExport.problems_since_last_call`), not once per batch and retry on the console."""

    def __init__(self, only_containing: str | None = None) -> None:
        super().__init__()
        self._only = only_containing

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._only is not None and self._only not in message:
            return True
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s", record.name, message)
        return False


def _quiet_client_loggers() -> None:
    filters = [(name, _ToDebug()) for name in _CLIENT_LOGGERS] + [(_URLLIB3_LOGGER, _ToDebug(_WRITE_PATH))]
    for name, new in filters:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ToDebug) for f in logger.filters):
            logger.addFilter(new)


class HubView(Protocol):
    """What the export reads of the :class:`~iotix.observe.series.MetricsHub` (on the loop)."""

    run_id: str
    labels: dict[str, str]


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """What the sink copies of one (series, row) pair: enough to build its points off the loop."""

    ts: float
    tags: tuple[tuple[str, str], ...]
    totals: tuple[tuple[str, int], ...]
    gauges: tuple[tuple[str, int], ...]
    latency: tuple[tuple[str, Mapping[str, float]], ...]
    failures: tuple[tuple[str, int], ...]

    @property
    def points(self) -> int:
        """How many points this record becomes."""
        return 1 + len(self.latency) + len(self.failures)


def record_of(
    series: FleetSeries, row: Mapping[str, Any], run_id: str, labels: Mapping[str, str], tags: Mapping[str, str]
) -> ExportRecord:
    """Copy what the points of ``row`` need (on the loop: cheap, no formatting). ``labels`` are the hub's
    (``suite``, ``test``), ``tags`` the user's."""
    all_tags = {**tags, **series.labels(), "run_id": run_id}
    for key in ("suite", "test"):
        value = labels.get(key)
        if value:
            all_tags[key] = value
    latency = []
    for kind, key in LATENCY_KEYS.items():
        summary = row.get(key)
        if summary and summary.get("count"):
            latency.append((kind, summary))
    return ExportRecord(
        ts=float(row["ts"]),
        tags=tuple(all_tags.items()),
        totals=tuple((key, series.totals.get(key, 0)) for key in COUNTER_FIELDS),
        gauges=tuple((key, row.get(key, 0)) for key in GAUGE_FIELDS),
        latency=tuple(latency),
        failures=tuple(series.failures_total.items()),
    )


def _point(measurement: str, tags: tuple[tuple[str, str], ...], ts_ms: int) -> Point:
    point = Point(measurement)
    for key, value in tags:
        if value != "":
            point.tag(key, value)
    return point.time(ts_ms, WritePrecision.MS)


def build_points(record: ExportRecord) -> list[Point]:
    """The points of one record: one ``iotix``, one ``iotix_latency`` per kind with samples, one
    ``iotix_failures`` per failure reason seen so far."""
    ts_ms = round(record.ts * 1000)
    main = _point(MEASUREMENT, record.tags, ts_ms)
    for key, value in record.totals:
        main.field(COUNTER_FIELDS[key], int(value))
    for key, value in record.gauges:
        main.field(GAUGE_FIELDS[key], int(value))
    points = [main]
    for kind, summary in record.latency:
        point = _point(LATENCY_MEASUREMENT, (*record.tags, ("kind", kind)), ts_ms)
        for key, name in LATENCY_FIELDS.items():
            value = summary.get(key)
            if value is None:
                continue
            point.field(name, int(value) if key == "count" else float(value) / 1000.0)
        points.append(point)
    for reason, total in record.failures:
        point = _point(FAILURES_MEASUREMENT, (*record.tags, ("reason", reason)), ts_ms)
        points.append(point.field("total", int(total)))
    return points


def _batch_points(data: bytes | str) -> int:
    """Points in a batch body of the write API (line protocol, one point a line)."""
    if not data:
        return 0
    newline = b"\n" if isinstance(data, bytes) else "\n"
    return data.count(newline) + 1  # type: ignore[arg-type]


def _clean_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    clean: dict[str, str] = {}
    for key, value in (tags or {}).items():
        name = str(key)
        if name in RESERVED_TAGS:
            raise ConfigurationError(
                f"Metrics export tag '{name}' is set by IoTix itself ({', '.join(RESERVED_TAGS)}): use another name."
            )
        if not name:
            raise ConfigurationError("Metrics export tags need a non-empty name.")
        clean[name] = str(value)
    return clean


class InfluxExport:
    """Write every fleet's per-second figures to an InfluxDB 2 write API; see the module documentation.

    ``url`` is the server (``http://127.0.0.1:8086``; VictoriaMetrics' own URL works), ``token`` its API token
    (never shown in a repr, a status or a message), ``org`` and ``bucket`` where the points go. ``hub`` gives the
    run id and the current suite and test (read on the loop, with each row); ``tags`` are added to every point.
    Register :meth:`sink` with the hub (``hub.add_sink(export.sink)``, on the loop) and :meth:`close` the export
    when done.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        org: str,
        bucket: str,
        interval_s: float = 1.0,
        tags: Mapping[str, Any] | None = None,
        max_buffered: int = 100_000,
        *,
        hub: HubView | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"Metrics export url must start with http:// or https://, got {url!r}.")
        if not bucket:
            raise ConfigurationError("Metrics export needs a bucket.")
        if interval_s <= 0:
            raise ConfigurationError(f"Metrics export interval must be more than 0 seconds, got {interval_s:g}.")
        if max_buffered < 1:
            raise ConfigurationError(f"Metrics export max_buffered must be at least 1, got {max_buffered}.")
        self.url = url.rstrip("/")
        self.org = org
        self.bucket = bucket
        self.interval_s = float(interval_s)
        self.tags = _clean_tags(tags)
        self.max_buffered = int(max_buffered)
        self._hub = hub
        self._secret = token or ""
        self._lock = threading.Lock()
        self._buffer: list[ExportRecord] = []
        self._pending = 0  # points buffered + handed to the write API and not yet written or failed
        self._queued_total = 0
        self._written = 0
        self._failed = 0
        self._dropped = 0
        self._retries = 0
        self._last_error: str | None = None
        self._reported = (0, 0)
        self._closed = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._scheduler = ThreadPoolScheduler(1)
        _quiet_client_loggers()
        # InfluxDB 2 wants "Authorization: Token <token>"; without one (VictoriaMetrics) no header is sent.
        self._client = InfluxDBClient(url=self.url, token=self._secret or None, org=org or "-", timeout=HTTP_TIMEOUT_MS)
        options = WriteOptions(
            write_type=WriteType.batching,
            batch_size=BATCH_SIZE,
            flush_interval=int(min(self.interval_s, 1.0) * 1000),
            max_close_wait=1_000,
            write_scheduler=self._scheduler,
            **RETRY_OPTIONS,
        )
        self._write_api = self._client.write_api(
            write_options=options,
            success_callback=self._on_success,
            error_callback=self._on_error,
            retry_callback=self._on_retry,
        )
        self._thread = threading.Thread(target=self._run, name="iotix-influx-export", daemon=True)
        self._thread.start()

    # -- on the loop ---------------------------------------------------------------------------------------

    def sink(self, pairs: list[tuple[FleetSeries, dict[str, Any]]]) -> None:
        """The hub's sink (runs on the loop): copy each row's figures into the buffer, or drop them when the
        buffer plus the points being written reach ``max_buffered``."""
        if not pairs or self._closed:
            return
        hub = self._hub
        run_id = hub.run_id if hub is not None else ""
        labels = dict(hub.labels) if hub is not None else {}
        records = [record_of(series, row, run_id, labels, self.tags) for series, row in pairs]
        self.offer(records)

    def offer(self, records: list[ExportRecord]) -> None:
        """Buffer ``records`` (thread-safe, never blocks on I/O); a record that does not fit is dropped whole."""
        with self._lock:
            for record in records:
                n = record.points
                if self._pending + n > self.max_buffered:
                    self._dropped += n
                    continue
                self._pending += n
                self._queued_total += n
                self._buffer.append(record)

    # -- the export thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self._write_buffered()

    def _write_buffered(self) -> None:
        with self._lock:
            records, self._buffer = self._buffer, []
        if not records:
            return
        points: list[Point] = []
        for record in records:
            points.extend(build_points(record))
        try:
            self._write_api.write(bucket=self.bucket, org=self.org or "-", record=points)
        except Exception as err:  # the write API refuses only when it is closed; count, never raise
            self._count_failed(len(points), err)

    # -- callbacks of the write API's thread ---------------------------------------------------------------

    def _on_success(self, _conf: tuple[str, str, str], data: bytes | str) -> None:
        n = _batch_points(data)
        with self._lock:
            if self._closed:
                return
            self._pending -= n
            self._written += n

    def _on_error(self, _conf: tuple[str, str, str], data: bytes | str, error: Exception) -> None:
        self._count_failed(_batch_points(data), error)

    def _on_retry(self, _conf: tuple[str, str, str], _data: bytes | str, error: Exception) -> None:
        with self._lock:
            self._retries += 1
            self._last_error = self._describe(error)

    def _count_failed(self, n: int, error: BaseException) -> None:
        with self._lock:
            if self._closed:
                return
            self._pending -= n
            self._failed += n
            self._last_error = self._describe(error)

    def _describe(self, error: BaseException) -> str:
        """The error as text without the token, on one line, at most 300 characters."""
        text = f"{type(error).__name__}: {error}"
        if self._secret:
            text = text.replace(self._secret, "***")
        text = " ".join(text.split())
        return text if len(text) <= 300 else text[:297] + "..."

    # -- status --------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``pointsQueued`` (buffered or being written now), ``pointsWritten``, ``pointsFailed`` (refused or
        unreachable after the retries, or still unwritten at :meth:`close`), ``pointsDropped`` (the buffer was
        full), ``lastError`` (text, or None). Every point made is in exactly one of the first four."""
        with self._lock:
            return {
                "pointsQueued": self._pending,
                "pointsWritten": self._written,
                "pointsFailed": self._failed,
                "pointsDropped": self._dropped,
                "lastError": self._last_error,
            }

    def problems_since_last_call(self) -> str | None:
        """A message when points were dropped or failed since the last call, else None."""
        with self._lock:
            dropped, failed, last_error = self._dropped, self._failed, self._last_error
            before_dropped, before_failed = self._reported
            self._reported = (dropped, failed)
        new_dropped, new_failed = dropped - before_dropped, failed - before_failed
        if not new_dropped and not new_failed:
            return None
        parts = []
        if new_dropped:
            parts.append(f"{new_dropped:,} points dropped (more than {self.max_buffered:,} waiting to be written)")
        if new_failed:
            parts.append(f"{new_failed:,} points failed")
        text = f"Metrics export to {self.url}: " + " and ".join(parts) + " since the last report"
        return text + (f"; last error: {last_error}" if last_error else "") + "."

    @property
    def closed(self) -> bool:
        return self._closed

    # -- closing -------------------------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> dict[str, Any]:
        """Write what is buffered, wait up to ``timeout`` seconds for it to be written, stop the threads; points
        still unwritten then count as failed. Returns :meth:`stats`. A second call only returns the stats."""
        if self._closed or self._stop.is_set():
            return self.stats()
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        self._thread.join(max(0.1, deadline - time.monotonic()))
        self._write_buffered()
        while time.monotonic() < deadline:
            with self._lock:
                if self._pending <= 0:
                    break
            time.sleep(0.02)
        try:
            self._write_api.close()  # flushes the batch window; waits at most max_close_wait (1 s)
        except Exception as err:
            log.debug("closing the write API failed: %s", self._describe(err))
        # Batches still queued behind a retrying one are abandoned (counted below), not left to delay the exit.
        self._scheduler.executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            if self._pending > 0:
                self._failed += self._pending
                self._last_error = self._last_error or f"{self._pending} points were not written within {timeout:g} s"
                self._pending = 0
            self._closed = True
        self._client.close()
        return self.stats()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<InfluxExport {self.url} org={self.org!r} bucket={self.bucket!r} {state}>"
