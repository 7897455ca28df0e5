"""Metrics component: SVG charts in the Robot log and run reports."""

from __future__ import annotations

from iotix._robot.component import LibraryComponent


class ChartKeywords(LibraryComponent):
    """Keywords of the Metrics library: SVG charts in the Robot log and run reports."""

    def log_charts_of_test(self, since_ts: float) -> int:
        return 0
