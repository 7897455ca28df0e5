"""Robot Framework keyword library: the figures of fleets (rates, failures, latency, loss) as numbers, time
series, assertions, exports (InfluxDB, Prometheus), charts in the log, run reports and a live page."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from robot.api import logger

from iotix import __version__
from iotix._robot.chart_keywords import ChartKeywords
from iotix._robot.context import SuiteCleanupListener
from iotix._robot.convert import seconds
from iotix._robot.export_keywords import ExportKeywords, export_problems
from iotix._robot.library import IoTixLibrary
from iotix._robot.live_keywords import LiveKeywords
from iotix._robot.report_keywords import ReportKeywords
from iotix._robot.series_keywords import SeriesKeywords
from iotix.errors import ConfigurationError

__all__ = ["Metrics", "__version__"]

#: Metrics' default timeout: a grace for messages still on their way, not a wait for something to happen.
METRICS_TIMEOUT = timedelta(seconds=5)


class _ChartsAfterEachTest:
    """Library listener of ``charts=True``: the charts of every fleet that ran during a test, at its end."""

    ROBOT_LISTENER_API_VERSION = 3

    def __init__(self, charts: ChartKeywords) -> None:
        self.charts = charts
        self.started = 0.0

    def start_test(self, data: Any, result: Any) -> None:
        self.started = time.time()

    def end_test(self, data: Any, result: Any) -> None:
        self.charts.log_charts_of_test(self.started)


class Metrics(IoTixLibrary):
    """Figures of fleets: what they did second by second, what arrived, and where the figures go.

    Fleets are those of ``iotix.DeviceFleet`` and receivers those of ``iotix.ProtocolClient`` (MQTT
    subscriptions, the local CoAP server and observations, the local IoTFlow backend, Kafka subscriptions):
    the libraries share them within the process.

    = Figures =

    Every fleet is sampled once a second, on the wall clock's second boundary, while it runs: messages sent,
    acknowledged, failed (by reason), dropped, retries, bytes, connection events, devices up and in error,
    and the latencies of that second (send lateness against each device's schedule, corrected for coordinated
    omission; request latency where the protocol has one; end-to-end latency where a receiver tracks the
    fleet), in HdrHistograms. `Get Fleet Time Series` returns the rows; the last hour is kept per fleet.
    `Message Rate Should Be`, `Error Rate Should Be Below`, `Connected Devices Should Be` and `Latency
    Should Be Below` judge them over a window.

    What arrived at a receiver (per-device loss, duplicates, reordering, end-to-end latency: receive time
    minus the envelope's ``ts``) is in `Get Telemetry Report` and `Loss Should Be Below`; ``source`` names
    the receiver, by default the one that can have heard the fleet.

    = Where the figures go =

    - InfluxDB (and anything that speaks its write API, such as VictoriaMetrics): `Start Metrics Export`;
      `Start Local Metrics Store` starts a local VictoriaMetrics.
    - Prometheus: `Start Metrics Endpoint` serves ``/metrics``.
    - Grafana: ready dashboards and provisioning files in ``tools/grafana`` of the repository.
    - The Robot log: `Log Fleet Charts`, or the ``charts=True`` import argument for every test.
    - Files: `Export Run Report` (html, md, csv, json).
    - A browser, live: `Start Live Dashboard`.
    - The console: a line per running fleet every 10 seconds (see `Set Console Progress`).

    = Timeouts =

    A report waits for messages still on their way for up to its ``timeout``; left out, that is the
    library's ``timeout``, 5 seconds unless set when the library is imported (see `Importing`). It is
    shorter than the other libraries' default because a report describes what arrived rather than waiting
    for something to happen: lost messages never arrive, and the report should not wait long for them.
    """

    def __init__(
        self, timeout: timedelta = METRICS_TIMEOUT, charts: bool = False, progress: timedelta | None = None
    ) -> None:
        """``timeout``: how long reports wait for messages still on their way unless given their own
        ``timeout`` (default 5 seconds).

        ``charts``: ``True`` logs the charts of every fleet that ran during a test at the end of that test
        (as `Log Fleet Charts` does).

        ``progress``: how often a progress line per running fleet goes to the console (``0``: never); left
        out, every 10 seconds, or what the ``IOTIX_PROGRESS`` environment variable says (seconds).

        | =Setting= | =Value= | =Value= | =Value= |
        | Library | iotix.Metrics | timeout=10s | charts=True |
        | Library | iotix.Metrics | progress=30s | |
        """
        charts_component = ChartKeywords(self)
        super().__init__(
            [ReportKeywords(self), SeriesKeywords(self), ExportKeywords(self), charts_component, LiveKeywords(self)],
            timeout=timeout,
        )
        if progress is not None:
            interval = seconds(progress)
            if interval < 0:
                raise ConfigurationError(f"progress must be 0 (off) or above, got {interval:g} s.")
            self.context.set_progress(interval)
        if charts:
            self.ROBOT_LIBRARY_LISTENER = [SuiteCleanupListener(), _ChartsAfterEachTest(charts_component)]

    def run_keyword(self, name: str, args: list[Any], kwargs: dict[str, Any] | None = None) -> Any:
        """Run a keyword, then warn about points the metrics export dropped or failed to write since the last
        Metrics keyword (a store that is down never fails a keyword; it is reported here)."""
        try:
            return super().run_keyword(name, args, kwargs)
        finally:
            for problem in export_problems(self.context):
                logger.warn(problem)
