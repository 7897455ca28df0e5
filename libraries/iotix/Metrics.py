"""Robot Framework keyword library: telemetry figures of a fleet (loss, duplicates, latency), as numbers."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from robot.api import logger
from robot.api.deco import keyword, library

from iotix._robot.context import KeywordError, SuiteCleanupListener, get_context
from iotix._robot.convert import seconds
from iotix._robot.telemetry import collect, pick_source

__version__ = "0.1.0"


@library(scope="GLOBAL", version=__version__, auto_keywords=False, listener=SuiteCleanupListener(), doc_format="ROBOT")
class Metrics:
    """Figures about what a fleet's telemetry did on the way: per-device loss, duplicates, reordering and
    end-to-end latency (receive time minus the envelope's ``ts``), from a receiver of ProtocolClient."""

    def __init__(self) -> None:
        self._ctx = get_context()

    def _report(self, fleet: str, source: str, timeout: timedelta) -> dict[str, Any]:
        f = self._ctx.simulator.fleet(fleet)
        src = pick_source(self._ctx, source, f)
        limit = seconds(timeout)
        check = self._ctx.call(collect, f, src, limit, timeout=limit + 10)
        return check.report.as_dict()

    @keyword
    def get_telemetry_report(
        self, fleet: str, source: str = "", timeout: timedelta = timedelta(seconds=5)
    ) -> dict[str, Any]:
        """Returns what arrived from ``fleet`` at receiver ``source``: ``expected``, ``received``, ``lost``,
        ``lossPercent``, ``duplicates``, ``outOfOrder``, ``silentDevices``, ``latencyMs`` (count, min,
        mean, p50, p90, p99, max) and ``worstDevices``.

        Waits up to ``timeout`` for messages still on their way.
        """
        return self._report(fleet, source, timeout)

    @keyword
    def latency_should_be_below(
        self,
        fleet: str,
        limit: timedelta,
        percentile: float = 99.0,
        source: str = "",
        timeout: timedelta = timedelta(seconds=5),
    ) -> float:
        """Fails when the ``percentile`` end-to-end latency of ``fleet``'s telemetry is ``limit`` or more.

        Returns the measured value in milliseconds.

        | Latency Should Be Below    env    200ms    percentile=99
        """
        f = self._ctx.simulator.fleet(fleet)
        src = pick_source(self._ctx, source, f)
        if not 0 < percentile <= 100:
            raise KeywordError(f"percentile must be in (0, 100], got {percentile}.")
        value = self._ctx.call(lambda: src.tracker.latency_of(f.by_id).percentile(percentile))
        if value is None:
            raise AssertionError(f"No telemetry from fleet '{fleet}' arrived at '{src.name}': no latency to check.")
        ms = value * 1000
        limit_ms = seconds(limit) * 1000
        logger.info(f"Fleet '{fleet}': p{percentile:g} latency {ms:.1f} ms (limit {limit_ms:g} ms).")
        if ms >= limit_ms:
            raise AssertionError(
                f"Fleet '{fleet}': p{percentile:g} latency is {ms:.1f} ms, not below "
                f"{limit_ms:g} ms [receiver '{src.name}']."
            )
        return ms

    @keyword
    def export_telemetry_report(
        self, fleet: str, path: Path, source: str = "", timeout: timedelta = timedelta(seconds=5)
    ) -> Path:
        """Writes `Get Telemetry Report` plus the fleet's counters as JSON to ``path``."""
        report = self._report(fleet, source, timeout)
        stats = self._ctx.call(self._ctx.simulator.fleet(fleet).stats)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"fleet": stats, "telemetry": report}, indent=2), encoding="utf-8")
        logger.info(f"Telemetry report of fleet '{fleet}' written to {path}.")
        return path
