"""Metrics component: SVG charts in the Robot log and run reports."""

from __future__ import annotations

import html
import os
from collections.abc import MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from weakref import WeakKeyDictionary

from robot.api import logger
from robot.api.deco import keyword
from robot.libraries.BuiltIn import BuiltIn, RobotNotRunningError

from iotix._robot.component import LibraryComponent
from iotix._robot.context import KeywordError
from iotix._robot.convert import seconds
from iotix.observe.charts import ChartData, fleet_charts_html
from iotix.observe.report import build_report, take_snapshot_async, write_report

if TYPE_CHECKING:
    from iotix._robot.component import ComponentContext
    from iotix.observe.series import FleetSeries, MetricsHub

ReportFormat = Literal["html", "md", "csv", "json"]


def chart_data_of(hub: MetricsHub, fleet: str, last_s: float | None) -> ChartData:
    """The chart data of ``fleet`` (a live fleet, else the last deleted one of that name). On the loop."""
    return ChartData.of(hub.require(fleet), last_s)


def chart_data_since(hub: MetricsHub, since_ts: float, charted: MutableMapping[FleetSeries, float]) -> list[ChartData]:
    """The chart data, from epoch second ``since_ts`` on, of every fleet with rows since then that ``charted``
    (series -> the last row charted) has not seen: a fleet deleted at the end of one test has a last row
    stamped with the end of that second, which may fall into the next test. On the loop."""
    out = []
    for series in hub.all_series():
        latest = series.latest()
        if latest is None or latest["ts"] <= max(since_ts, charted.get(series, since_ts)):
            continue
        charted[series] = latest["ts"]
        out.append(ChartData.of(series, since=since_ts))
    return out


def _link_target(path: Path) -> str:
    """``path`` as a link from the Robot log: relative to the log's folder when there is a log, else a file URI."""
    try:
        log_file = BuiltIn().get_variable_value("${LOG FILE}", "NONE")
    except RobotNotRunningError:
        log_file = "NONE"
    absolute = path.resolve()
    if log_file and str(log_file).upper() != "NONE":
        try:
            return Path(os.path.relpath(absolute, Path(str(log_file)).resolve().parent)).as_posix()
        except ValueError:  # another drive (Windows)
            pass
    return absolute.as_uri()


class ChartKeywords(LibraryComponent):
    """Keywords of the Metrics library: SVG charts in the Robot log and run reports."""

    def __init__(self, ctx: ComponentContext) -> None:
        super().__init__(ctx)
        #: the last row of each series charted at the end of a test (``charts=True``)
        self._charted: WeakKeyDictionary[FleetSeries, float] = WeakKeyDictionary()

    @keyword
    def log_fleet_charts(self, fleet: str, last: timedelta | None = None) -> None:
        """Embeds charts of ``fleet``'s figures in the log: message rate, latency percentiles, devices
        connected, failures; dropouts and network faults are marked on the time axis.

        The charts show the fleet's per-second figures (kept for the last hour), or only those of the
        ``last`` so many seconds; the x axis is seconds since the fleet started. A fleet deleted earlier in
        the run still has its figures (those of the last 200 deleted fleets are kept). A fleet that has not
        run yet gets charts that say so. The charts are inline SVG, readable offline.

        | Log Fleet Charts    env
        | Log Fleet Charts    env    last=5 min

        To chart every fleet at the end of every test that ran one, import the library with ``charts=True``.
        """
        last_s = None
        if last is not None:
            last_s = seconds(last)
            if last_s <= 0:
                raise KeywordError(f"last must be above 0 s, got {last_s:g} s.")
        data = self.call(chart_data_of, self.simulator.metrics, fleet, last_s)
        logger.info(fleet_charts_html(data), html=True)

    @keyword
    def export_run_report(
        self, path: Path, format: ReportFormat | None = None, fleets: list[str] | str | None = None
    ) -> Path:
        """Writes a report of the run's figures to ``path`` and returns the path.

        ``format`` (by default from ``path``'s extension):

        - ``html``: one self-contained page (inline CSS and SVG: it opens offline): a summary table, then per
          fleet its totals, mean and peak rates, latency summaries, devices, charts, worst devices and events;
          the run's timeline of dropouts and network faults.
        - ``md``: a short Markdown summary for a CI comment: a table of the fleets (devices, sent, acked,
          failed, dropped, loss, p99 latency), failures by reason, the timeline.
        - ``csv``: Locust's three files: ``path`` (stats: a line per fleet and an ``Aggregated`` one),
          ``<stem>_stats_history.csv`` (a line per fleet and second, and an ``Aggregated`` one per second) and
          ``<stem>_failures.csv`` (failures by reason); a stem ending in ``_stats`` loses it first, as in
          Locust's names (``run_stats.csv``, ``run_stats_history.csv``, ``run_failures.csv``). Locust's columns
          come first, ours follow.
        - ``json``: everything: every fleet's per-second rows, totals, failures by reason, latency summaries
          and HdrHistograms, events and worst devices.

        ``fleets``: the fleet, or a list of the fleets, to report on (default: every fleet with figures, the
        deleted ones too).
        Loss is device-side (failed and dropped messages); what arrived at a receiver is in
        `Get Telemetry Report`. The folder of ``path`` is created when missing.

        | Export Run Report    ${OUTPUT DIR}/run.html
        | Export Run Report    ${OUTPUT DIR}/summary.md    fleets=${{['env', 'api']}}
        | Export Run Report    ${OUTPUT DIR}/env.json    fleets=env
        | ${stats} =    Export Run Report    ${OUTPUT DIR}/run_stats.csv
        """
        names = [fleets] if isinstance(fleets, str) else fleets
        run = self.call(take_snapshot_async, self.simulator.metrics, names)
        data = build_report(run)
        written = write_report(data, path, format)
        listing = ", ".join(
            f'<a href="{html.escape(_link_target(p), quote=True)}">{html.escape(p.name)}</a>' for p in written
        )
        logger.info(f"Run report of {len(data['fleets'])} fleet(s) written: {listing}", html=True)
        return written[0]

    def log_charts_of_test(self, since_ts: float) -> int:
        """Logs the charts of every fleet with figures since epoch second ``since_ts`` (from then on); returns
        how many fleets were charted. Nothing to do (0) before anything created the simulator. Called at the
        end of each test when the library is imported with ``charts=True``: a problem drawing them is a
        warning, never a failure of the test."""
        if not self.context.has_simulator:  # nothing ran yet: do not start the runtime
            return 0
        try:
            charted = self.call(chart_data_since, self.simulator.metrics, since_ts, self._charted)
            for data in charted:
                logger.info(fleet_charts_html(data), html=True)
        except Exception as err:
            logger.warn(f"Drawing the charts of the test's fleets failed: {err}")
            return 0
        return len(charted)
