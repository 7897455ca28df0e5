"""Metrics component: figures about a fleet's telemetry at a receiver (loss, duplicates, latency)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robot.api import logger
from robot.api.deco import keyword

from iotix._robot.component import LibraryComponent
from iotix._robot.context import KeywordError
from iotix._robot.convert import seconds
from iotix._robot.telemetry import collect, expected_ranges, pick_source
from iotix._robot.types import TelemetryReport
from iotix.observe.receivers import Source

if TYPE_CHECKING:
    from iotix.fleet.fleet import Fleet


async def latency_when_arrived(fleet: Fleet, source: Source, percentile: float, timeout: float) -> float | None:
    """The ``percentile`` latency (seconds) of ``fleet`` at ``source`` once the messages the fleet had sent
    when this began have arrived (and at least one has), or once ``timeout`` has passed; None when nothing
    arrived. Does not wait for a fleet that is not running and of which nothing arrived. Runs on the loop."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    expected = expected_ranges(fleet, source)
    ids = fleet.device_ids()
    while True:
        if source.refresh is not None:
            await source.refresh()
        value = source.tracker.latency_of(ids).percentile(percentile)
        in_flight = source.tracker.report(expected).lost
        if value is not None and not in_flight:
            return value
        if value is None and not in_flight and fleet.state not in ("starting", "running"):
            return None  # nothing sent, nothing on its way, nothing going to be sent
        if loop.time() >= end:
            return value
        await asyncio.sleep(0.05)


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

        Returns the measured value in milliseconds. The latency is that of the messages of the fleet that
        arrived at receiver ``source`` (as in `Get Telemetry Report`).

        First the keyword waits, up to ``timeout`` (default: the library's ``timeout``), until every message
        the fleet had sent when it started has arrived and at least one has: the slowest messages are the
        last to arrive, and judging without them would flatter the latency. Then it judges what arrived
        (also when the wait ran out: lost messages have no latency). It fails at once when nothing has
        arrived and the fleet is not running, and after ``timeout`` when still nothing has arrived.
        ``timeout=0s`` judges what has arrived at once.

        | Latency Should Be Below    env    200ms    percentile=99
        | Latency Should Be Below    env    1s    percentile=50    timeout=20s
        """
        f = self.fleet(fleet)
        src = pick_source(self.context, source, f)
        if not 0 < percentile <= 100:
            raise KeywordError(f"percentile must be in (0, 100], got {percentile}.")
        wait = self.timeout_or_default(timeout)
        value = self.call_wait(latency_when_arrived, f, src, percentile, wait, limit=wait)
        if value is None:
            running = self.call(lambda: f.state in ("starting", "running"))
            within = f" within {wait:g} s" if running else ""
            raise AssertionError(
                f"No telemetry from fleet '{fleet}' arrived at '{src.name}'{within}: no latency to check."
            )
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
