"""Metrics component: figures about a fleet's telemetry at a receiver (loss, duplicates, latency)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from robot.api import logger
from robot.api.deco import keyword

from iotix._robot.component import LibraryComponent
from iotix._robot.context import KeywordError
from iotix._robot.convert import seconds
from iotix._robot.telemetry import collect, pick_source
from iotix._robot.types import TelemetryReport


class ReportKeywords(LibraryComponent):
    """Telemetry reports of a fleet at a receiver, and latency checks."""

    def _report(self, fleet: str, source: str, timeout: timedelta | None) -> dict[str, Any]:
        f = self.fleet(fleet)
        src = pick_source(self.context, source, f)
        limit = self.timeout_or_default(timeout)
        check = self.call_wait(collect, f, src, limit, limit=limit)
        return check.report.as_dict()

    @keyword
    def get_telemetry_report(self, fleet: str, source: str = "", timeout: timedelta | None = None) -> TelemetryReport:
        """Returns what arrived from ``fleet`` at receiver ``source`` (see ``source`` of ProtocolClient's
        ``Telemetry Should Be Received From Fleet``; by default the receiver that can have heard the fleet).

        | =Key= | =Value= |
        | ``devices`` | devices of the fleet |
        | ``expected`` | messages the devices sent that the receiver could expect |
        | ``received`` | of those, how many arrived |
        | ``lost``, ``lossPercent`` | what did not arrive (sequence gaps), and in percent of ``expected`` |
        | ``duplicates`` | messages that arrived more than once |
        | ``outOfOrder`` | messages that arrived after a later one of their device |
        | ``silentDevices`` | devices of which nothing arrived |
        | ``invalidMessages`` | messages at the receiver that were not IoTix envelopes |
        | ``latencyMs`` | end-to-end latency: ``count``, ``min``, ``mean``, ``p50``, ``p90``, ``p99``, ``max`` |
        | ``worstDevices`` | the devices that lost most: ``deviceId``, ``lost``, ``received``, ... |

        Waits up to ``timeout`` (default: the library's ``timeout``, 5 seconds unless set at import) for
        messages still on their way, then reports what arrived; it does not fail for a loss.

        | ${report} =    Get Telemetry Report    env
        | Should Be True    ${report}[lossPercent] < 0.1
        """
        return self._report(fleet, source, timeout)

    @keyword
    def latency_should_be_below(
        self,
        fleet: str,
        limit: timedelta,
        percentile: float = 99.0,
        source: str = "",
        timeout: timedelta | None = None,
    ) -> float:
        """Fails when the ``percentile`` end-to-end latency of ``fleet``'s telemetry is ``limit`` or more.

        Returns the measured value in milliseconds. The latency is that of the messages that have arrived at
        receiver ``source`` (as in `Get Telemetry Report`); ``timeout`` is accepted for symmetry with the
        other keywords and not waited for.

        | Latency Should Be Below    env    200ms    percentile=99
        """
        f = self.fleet(fleet)
        src = pick_source(self.context, source, f)
        if not 0 < percentile <= 100:
            raise KeywordError(f"percentile must be in (0, 100], got {percentile}.")
        value = self.call(lambda: src.tracker.latency_of(f.device_ids()).percentile(percentile))
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
        self, fleet: str, path: Path, source: str = "", timeout: timedelta | None = None
    ) -> Path:
        """Writes `Get Telemetry Report` plus the fleet's counters (``Get Fleet Stats``) as JSON to ``path``:
        ``{"fleet": <counters>, "telemetry": <report>}``. ``timeout`` is as in `Get Telemetry Report`."""
        report = self._report(fleet, source, timeout)
        stats = self.call(self.fleet(fleet).stats)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"fleet": stats, "telemetry": report}, indent=2), encoding="utf-8")
        logger.info(f"Telemetry report of fleet '{fleet}' written to {path}.")
        return path
