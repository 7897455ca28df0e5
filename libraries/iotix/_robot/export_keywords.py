"""Metrics component: InfluxDB export, the local metrics store and the Prometheus endpoint.

What these keywords start is process-wide (:class:`ExportState`): one local metrics store, one export and one
endpoint per process, each stopped when the suite that started it ends (and at exit). The export's sink runs
on the runtime loop and only copies numbers; its writes happen on threads of its own, so a time-series
database that is slow or down never slows a fleet. What it had to drop or could not write is reported by the
next Metrics keyword (:func:`export_problems`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypedDict

from robot.api import logger
from robot.api.deco import keyword
from robot.api.types import Secret

from iotix._robot.component import LibraryComponent
from iotix._robot.context import Context, KeywordError
from iotix._robot.convert import seconds
from iotix.observe.influx import InfluxExport
from iotix.observe.prometheus import MetricsEndpoint
from iotix.observe.series import MetricsHub
from iotix.services.victoria import MetricsStore, MetricsStoreError, start_local_metrics_store

__all__ = ["ExportKeywords", "ExportState", "ExportStatus", "MetricSample", "export_problems"]

STORE = "local metrics store"
EXPORT = "metrics export"
ENDPOINT = "metrics endpoint"
#: How long Stop Metrics Export waits for the hub's next per-second round (it comes within a second).
NEXT_ROUND_LIMIT_S = 2.0


class ExportStatus(TypedDict):
    """Figures of the metrics export (`Get Metrics Export Status`, `Stop Metrics Export`)."""

    pointsQueued: int
    pointsWritten: int
    pointsFailed: int
    pointsDropped: int
    lastError: str | None


class MetricSample(TypedDict):
    """One series of an instant PromQL query (`Query Local Metrics Store`)."""

    metric: dict[str, str]
    value: float


@dataclass
class ExportState:
    """The process' local metrics store, metrics export and Prometheus endpoint."""

    store: MetricsStore | None = None
    export: InfluxExport | None = None
    endpoint: MetricsEndpoint | None = None
    last_stats: dict[str, Any] | None = None

    async def aclose(self) -> None:
        """At runtime shutdown (on the loop): stop all three; the blocking parts run in threads."""
        export, self.export = self.export, None
        if export is not None:
            await asyncio.to_thread(export.close, 5.0)
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            await asyncio.to_thread(endpoint.close)
        store, self.store = self.store, None
        if store is not None:
            await asyncio.to_thread(store.stop)


def export_problems(context: Context) -> list[str]:
    """Messages about points the running export dropped or could not write since the last call (the Metrics
    library reports them after each of its keywords)."""
    export = context.state(ExportState).export
    if export is None:
        return []
    problem = export.problems_since_last_call()
    return [problem] if problem else []


async def _after_next_round(hub: MetricsHub, limit: float) -> None:
    """Return once the hub has handed a round of rows to its sinks (at most ``limit`` s; at once when the
    hub has no fleets and so no clock). Runs on the loop."""
    if not hub.series:
        return
    done = asyncio.get_running_loop().create_future()

    def marker(_pairs: list[Any]) -> None:
        if not done.done():
            done.set_result(None)

    hub.add_sink(marker)  # after the export's sink: called after it in the same round
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, limit)
    finally:
        hub.remove_sink(marker)


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def _format_stats(stats: dict[str, Any]) -> str:
    text = (
        f"{stats['pointsWritten']:,} points written, {stats['pointsFailed']:,} failed, "
        f"{stats['pointsDropped']:,} dropped, {stats['pointsQueued']:,} waiting"
    )
    return text + (f"; last error: {stats['lastError']}" if stats.get("lastError") else "")


class ExportKeywords(LibraryComponent):
    """Keywords of the Metrics library: InfluxDB export, the local metrics store and the Prometheus endpoint."""

    @property
    def _state(self) -> ExportState:
        return self.context.state(ExportState)

    # -- local metrics store ----------------------------------------------------------------------------

    @keyword("Start Local Metrics Store")
    def start_local_metrics_store(self, port: int = 0) -> str:
        """Starts a local VictoriaMetrics (the Debian package ``victoria-metrics``) on 127.0.0.1 and returns its
        URL (``http://127.0.0.1:<port>``); ``port=0`` picks a free port.

        It takes InfluxDB points (the URL is the ``url`` of `Start Metrics Export`) and answers PromQL
        (`Query Local Metrics Store`; a Grafana Prometheus datasource can point at it too). Its data lives in a
        temporary folder, removed when it stops. One per process: a second call returns the running one. It
        stops when the suite that started it ends.

        | ${store} =    Start Local Metrics Store
        | Start Metrics Export    ${store}
        """
        state = self._state
        running = state.store
        if running is not None and running.is_running:
            return running.url
        try:
            store = start_local_metrics_store(port)
        except MetricsStoreError as err:
            raise KeywordError(str(err)) from None
        state.store = store
        self.context.own(STORE, self.stop_local_metrics_store)
        logger.info(f"Local metrics store (VictoriaMetrics) listening on {store.url}; its log: {store.log_path}.")
        return store.url

    @keyword("Stop Local Metrics Store")
    def stop_local_metrics_store(self) -> None:
        """Stops the store of `Start Local Metrics Store`, and removes its data (nothing if none runs)."""
        store, self._state.store = self._state.store, None
        if store is not None:
            store.stop()
            self.context.disown(STORE)
            logger.info("Local metrics store stopped.")

    @keyword("Query Local Metrics Store")
    def query_local_metrics_store(self, promql: str) -> list[MetricSample]:
        """Runs an instant PromQL query on the local metrics store, now, and returns one dictionary per series:
        ``metric`` (its labels, ``__name__`` included when the query keeps it) and ``value`` (a number).

        Everything written to the store so far is made searchable first. Series names follow the export's
        (see `Start Metrics Export`): ``iotix_messages_sent_total``, ``iotix_devices_connected``, ...

        | ${sent} =    Query Local Metrics Store    iotix_messages_sent_total{fleet="env"}
        | Should Be Equal As Numbers    ${sent}[0][value]    ${stats}[messagesSent]
        | ${rate} =    Query Local Metrics Store    sum(rate(iotix_messages_sent_total[10s]))
        """
        store = self._state.store
        if store is None or not store.is_running:
            raise KeywordError("No local metrics store is running: use Start Local Metrics Store first.")
        try:
            store.flush()
            results = store.query(promql)
        except MetricsStoreError as err:
            raise KeywordError(f"Query '{promql}' failed: {err}") from None
        samples: list[MetricSample] = []
        for result in results:
            value = result.get("value") or [None, None]
            samples.append({"metric": dict(result.get("metric") or {}), "value": _number(value[1])})
        logger.info(f"Query '{promql}' returned {len(samples)} series.")
        return samples

    # -- InfluxDB export -----------------------------------------------------------------------------------

    @keyword("Start Metrics Export")
    def start_metrics_export(
        self,
        url: str,
        token: Secret = None,  # not "Secret | None": with a union Robot echoes a plain-text value in its error
        org: str = "",
        bucket: str = "iotix",
        interval: timedelta = timedelta(seconds=1),
        tags: dict[str, str] | None = None,
    ) -> None:
        """Writes every fleet's figures of every second to an InfluxDB 2 write API (``/api/v2/write``) at
        ``url``, until `Stop Metrics Export` or the end of the suite that started it.

        ``token`` (a Robot ``Secret``, never logged) is the API token; leave it out for a server without
        authentication (VictoriaMetrics). ``org`` and ``bucket`` say where the points go (InfluxDB 2 needs
        both; VictoriaMetrics ignores them). Points are written every ``interval``, in batches. ``tags``
        (a dictionary) are added to every point.

        Measurements (tags ``fleet``, ``model``, ``protocol``, ``run_id``, ``suite``, ``test`` and ``tags``;
        timestamps: the second each point describes, in milliseconds; details in docs/metrics-export.md):

        - ``iotix``: counters since the fleet was created (``messages_sent_total``, ``messages_acked_total``,
          ``messages_failed_total``, ``messages_dropped_total``, ``retries_total``, ``bytes_sent_total``,
          ``connects_total``, ``disconnects_total``, ``reconnects_total``, ``connect_failures_total``,
          ``devices_dropped_total``, ``devices_restored_total``) and values at the end of the second
          (``devices``, ``devices_connected``, ``devices_in_error``, ``messages_queued``, ``network_faults``,
          ``network_backlog_bytes``);
        - ``iotix_latency``, tag ``kind`` (lateness, request, e2e): ``p50_seconds``, ``p90_seconds``,
          ``p99_seconds``, ``max_seconds`` and ``count`` of that second;
        - ``iotix_failures``, tag ``reason``: ``total``, failures of that reason since the fleet was created.

        VictoriaMetrics and a Prometheus scraping `Start Metrics Endpoint` name them ``iotix_messages_sent_total``,
        ``iotix_latency_p99_seconds``, ``iotix_failures_total``: the Grafana dashboards of ``tools/grafana``
        work on both.

        A database that is slow or down never slows the fleets: up to 100,000 points wait to be written;
        beyond that new points are dropped and counted, and the next Metrics keyword warns about points
        dropped or not written. One export per process. See `Get Metrics Export Status`.

        | ${store} =    Start Local Metrics Store
        | Start Metrics Export    ${store}    tags={"team": "iot"}
        | Start Metrics Export    https://influx.example.com    token=${INFLUX_TOKEN}    org=qa    bucket=soak
        """
        state = self._state
        if state.export is not None:
            raise KeywordError(
                f"A metrics export to {state.export.url} is running: stop it with Stop Metrics Export first."
            )
        hub = self.simulator.metrics
        export = InfluxExport(
            url,
            token.value if token is not None else None,
            org,
            bucket,
            interval_s=seconds(interval),
            tags=tags,
            hub=hub,
        )
        try:
            self.call(hub.add_sink, export.sink)
        except BaseException:
            export.close(1.0)
            raise
        state.export = export
        self.context.own(EXPORT, self.stop_metrics_export)
        bucket_text = f" bucket '{bucket}'" + (f" of org '{org}'" if org else "")
        logger.info(f"Exporting fleet metrics to {export.url}{bucket_text} every {seconds(interval):g} s.")

    @keyword("Stop Metrics Export")
    def stop_metrics_export(self, timeout: timedelta | None = None) -> ExportStatus:
        """Stops the export of `Start Metrics Export` and returns its figures (see `Get Metrics Export Status`).

        It first waits for the next per-second sample (under a second), so that what the fleets did before
        this keyword is exported, then writes what is waiting and waits up to ``timeout`` (default: the
        library's) for it to be written; points not written by then count as failed. Warns when points were
        dropped or failed. Fails when no export was started.

        | Stop Fleet    env
        | ${status} =    Stop Metrics Export
        | Should Be Equal As Integers    ${status}[pointsDropped]    0
        """
        state = self._state
        export = state.export
        if export is None:
            if state.last_stats is not None:
                return state.last_stats  # type: ignore[return-value]
            raise KeywordError("No metrics export is running: use Start Metrics Export first.")
        hub = self.simulator.metrics
        limit = self.timeout_or_default(timeout)
        try:
            self.call(hub.settle_all)  # fleets stopped since the last round: their last second, now
            self.call_wait(_after_next_round, hub, NEXT_ROUND_LIMIT_S, limit=NEXT_ROUND_LIMIT_S)
        finally:
            self.call(hub.remove_sink, export.sink)
            state.export = None
            self.context.disown(EXPORT)
            stats = export.close(limit)
            state.last_stats = stats
        message = f"Metrics export to {export.url} stopped: {_format_stats(stats)}."
        if stats["pointsDropped"] or stats["pointsFailed"]:
            logger.warn(message)
        else:
            logger.info(message)
        return stats  # type: ignore[return-value]

    @keyword("Get Metrics Export Status")
    def get_metrics_export_status(self) -> ExportStatus:
        """Returns the figures of the running metrics export (or of the last one, once stopped):

        | =Key=             | =Value= |
        | ``pointsQueued``  | points waiting to be written now |
        | ``pointsWritten`` | points the server accepted |
        | ``pointsFailed``  | points the server refused or could not be reached for (after retries) |
        | ``pointsDropped`` | points dropped because too many were waiting (the server was slow or down) |
        | ``lastError``     | the last write error (never the token), or None |

        | ${status} =    Get Metrics Export Status
        | Should Be Equal As Integers    ${status}[pointsFailed]    0
        """
        state = self._state
        if state.export is not None:
            return state.export.stats()  # type: ignore[return-value]
        if state.last_stats is not None:
            return state.last_stats  # type: ignore[return-value]
        raise KeywordError("No metrics export was started: use Start Metrics Export first.")

    # -- Prometheus endpoint ---------------------------------------------------------------------------------

    @keyword("Start Metrics Endpoint")
    def start_metrics_endpoint(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Serves every fleet's figures for Prometheus at ``http://host:port/metrics`` and returns that URL;
        ``port=0`` picks a free port.

        Series names and labels are those of `Start Metrics Export` (``iotix_messages_sent_total{fleet, model,
        protocol, run_id}``, ...) without ``suite`` and ``test``; counters are Prometheus counters, the rest
        gauges of the last second. Bound to 127.0.0.1 unless ``host`` says otherwise. One per process: a
        second call returns the running one. It stops when the suite that started it ends.

        | ${url} =    Start Metrics Endpoint    port=9464
        """
        state = self._state
        if state.endpoint is not None and not state.endpoint.closed:
            return state.endpoint.url
        endpoint = MetricsEndpoint(self.simulator.metrics, host=host, port=port)
        state.endpoint = endpoint
        self.context.own(ENDPOINT, self.stop_metrics_endpoint)
        logger.info(f"Metrics endpoint serving {endpoint.url}.")
        return endpoint.url

    @keyword("Stop Metrics Endpoint")
    def stop_metrics_endpoint(self) -> None:
        """Stops the endpoint of `Start Metrics Endpoint` (nothing if none runs)."""
        endpoint, self._state.endpoint = self._state.endpoint, None
        if endpoint is not None:
            endpoint.close()
            self.context.disown(ENDPOINT)
            logger.info("Metrics endpoint stopped.")
