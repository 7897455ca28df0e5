"""Metrics component: InfluxDB export, the local metrics store and the Prometheus endpoint."""

from __future__ import annotations

from iotix._robot.component import LibraryComponent


class ExportKeywords(LibraryComponent):
    """Keywords of the Metrics library: InfluxDB export, the local metrics store and the Prometheus endpoint."""

    def log_charts_of_test(self, since_ts: float) -> int:
        return 0
