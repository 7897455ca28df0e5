"""Metrics component: figures about a fleet's telemetry at a receiver (loss, duplicates, latency)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from robot.api import logger
from robot.api.deco import keyword

from iotix._robot.component import LibraryComponent, awaited
from iotix._robot.context import KeywordError
from iotix._robot.convert import seconds
from iotix._robot.series_keywords import window_seconds
from iotix._robot.telemetry import collect, expected_now, pick_source
from iotix._robot.types import TelemetryReport
from iotix.observe.receivers import Source
from iotix.observe.series import HISTOGRAM_WINDOW_S

if TYPE_CHECKING:
    from iotix.fleet.fleet import Fleet

#: The latency kinds of a fleet (see Latency Should Be Below).
LatencyKind = Literal["e2e", "request", "lateness"]
LATENCY_KINDS = ("e2e", "request", "lateness")


async def latency_when_arrived(fleet: Fleet, source: Source, percentile: float, timeout: float) -> float | None:
    """The ``percentile`` latency (seconds) of ``fleet`` at ``source`` once the messages the fleet had sent
    when this began have arrived (and at least one has), or once ``timeout`` has passed; None when nothing
    arrived. Does not wait for a fleet that is not running and of which nothing arrived. Runs on the loop."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    expected = await expected_now(fleet, source)
    ids = await awaited(fleet.device_ids())
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
    def loss_should_be_below(
        self, fleet: str, limit: float, source: str = "", timeout: timedelta | None = None
    ) -> float:
        """Fails when ``limit`` percent or more of the messages ``fleet`` sent did not arrive at receiver
        ``source`` (as in `Get Telemetry Report`: sequence gaps, after waiting up to ``timeout`` for messages
        still on their way). Returns the loss in percent.

        | Loss Should Be Below    env    0.1
        | Loss Should Be Below    env    5    source=alerts    timeout=10s
        """
        if limit <= 0:
            raise KeywordError(f"limit must be above 0 %, got {limit:g}.")
        report = self._report(fleet, source, timeout)
        pct = float(report["lossPercent"])
        src = pick_source(self.context, source, self.fleet(fleet)).name
        silent = f"; {report['silentDevices']:,} devices silent" if report["silentDevices"] else ""
        detail = f"{report['lost']:,} of {report['expected']:,} messages lost at '{src}'{silent}"
        logger.info(f"Fleet '{fleet}': loss {pct:.3f} % ({detail}).")
        if pct >= limit:
            raise AssertionError(f"Fleet '{fleet}': loss {pct:.3f} % ({detail}), not below {limit:g} %.")
        return pct

    @keyword
    def latency_should_be_below(
        self,
        fleet: str,
        limit: timedelta,
        percentile: float = 99.0,
        source: str = "",
        timeout: timedelta | None = None,
        window: timedelta | None = None,
        kind: LatencyKind = "e2e",
    ) -> float:
        """Fails when the ``percentile`` latency of ``fleet`` is ``limit`` or more. Returns it in milliseconds.

        ``kind``: ``e2e`` (default) is the end-to-end latency of the fleet's telemetry at receiver ``source``
        (as in `Get Telemetry Report`); ``request`` the request/acknowledgement latency of HTTP, CoAP CON and
        Kafka fleets; ``lateness`` how late sends ran against each device's schedule (corrected for
        coordinated omission).

        ``window``: judge only the latencies of the last ``window`` (complete seconds of `Get Fleet Time
        Series`, at most 15 minutes), for instance the recovery after a fault. Without it, every latency so far.

        Without ``window``, an ``e2e`` check first waits, up to ``timeout`` (default: the library's
        ``timeout``), until every message the fleet had sent when it started has arrived and at least one
        has: the slowest messages are the last to arrive, and judging without them would flatter the latency.
        Then it judges what arrived (also when the wait ran out: lost messages have no latency). It fails at
        once when nothing has arrived and the fleet is not running, and after ``timeout`` when still nothing
        has arrived. ``timeout=0s`` judges what has arrived at once.

        | Latency Should Be Below    env    200ms    percentile=99
        | Latency Should Be Below    env    1s    percentile=50    timeout=20s
        | Latency Should Be Below    env    300ms    window=30s
        | Latency Should Be Below    api    500ms    kind=request    window=1min
        """
        if not 0 < percentile <= 100:
            raise KeywordError(f"percentile must be in (0, 100], got {percentile}.")
        if kind not in LATENCY_KINDS:
            raise KeywordError(f"kind must be one of {', '.join(LATENCY_KINDS)}, got '{kind}'.")
        limit_ms = seconds(limit) * 1000
        if kind == "e2e" and window is None:
            value, where = self._arrived_latency(fleet, percentile, source, timeout)
        else:
            value, where = self._series_latency(fleet, percentile, kind, window)
        ms = value * 1000
        logger.info(f"Fleet '{fleet}': p{percentile:g} latency {ms:.1f} ms (limit {limit_ms:g} ms) [{where}].")
        if ms >= limit_ms:
            raise AssertionError(
                f"Fleet '{fleet}': p{percentile:g} latency is {ms:.1f} ms, not below {limit_ms:g} ms [{where}]."
            )
        return ms

    def _arrived_latency(
        self, fleet: str, percentile: float, source: str, timeout: timedelta | None
    ) -> tuple[float, str]:
        f = self.fleet(fleet)
        src = pick_source(self.context, source, f)
        wait = self.timeout_or_default(timeout)
        value = self.call_wait(latency_when_arrived, f, src, percentile, wait, limit=wait)
        if value is None:
            running = self.call(lambda: f.state in ("starting", "running"))
            within = f" within {wait:g} s" if running else ""
            raise AssertionError(
                f"No telemetry from fleet '{fleet}' arrived at '{src.name}'{within}: no latency to check."
            )
        return value, f"receiver '{src.name}'"

    def _series_latency(self, fleet: str, percentile: float, kind: str, window: timedelta | None) -> tuple[float, str]:
        hub = self.simulator.metrics
        window_s = None if window is None else window_seconds(window, HISTOGRAM_WINDOW_S)

        def look() -> tuple[float | None, int]:
            series = hub.require(fleet)
            hist = series.latency_total(kind) if window_s is None else series.latency_window(kind, window_s)
            return hist.percentile(percentile), hist.count

        value, count = self.call(look)
        what = {"e2e": "end-to-end latency", "request": "request latency", "lateness": "send lateness"}[kind]
        span = "so far" if window_s is None else f"over the last {window_s:g} s"
        if value is None:
            hint = " (is a receiver tracking the fleet?)" if kind == "e2e" else ""
            raise AssertionError(f"Fleet '{fleet}' has no {what} {span}{hint}: nothing to check.")
        return value, f"{what} {span}, {count:,} samples"

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
