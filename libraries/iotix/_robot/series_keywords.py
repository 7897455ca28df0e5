"""Metrics component: per-second time series of fleets, assertions over windows, console progress."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from robot.api import logger
from robot.api.deco import keyword

from iotix._robot.component import LibraryComponent, awaited
from iotix._robot.context import KeywordError
from iotix._robot.convert import seconds
from iotix.observe.series import WINDOW_S

if TYPE_CHECKING:
    from iotix.observe.series import FleetSeries

#: Default window of the rate assertions.
DEFAULT_WINDOW = timedelta(seconds=10)


def window_seconds(window: timedelta | float, most: float = WINDOW_S) -> float:
    """A keyword's ``window`` in seconds: above 0 and at most ``most`` (what the series keeps)."""
    value = seconds(window)
    if not 0 < value <= most:
        raise KeywordError(
            f"window must be above 0 s and at most {most:g} s (what a fleet's figures keep), got {value:g} s."
        )
    return value


def _fmt(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


async def rows_for_window(series: FleetSeries, window_s: float) -> list[dict[str, Any]]:
    """The complete seconds among the last ``window_s`` (a second in which the fleet started or stopped is
    partial and left out); while the fleet runs and has fewer than the window, wait for them (up to the
    window and two seconds more). Runs on the loop."""
    loop = asyncio.get_running_loop()
    end = loop.time() + window_s + 2.0
    wanted = max(1, int(window_s))
    while True:
        rows = [r for r in series.rows(window_s) if not r["partial"]]
        fleet = series.fleet
        running = fleet is not None and fleet.state in ("starting", "running")
        if len(rows) >= wanted or not running or loop.time() >= end:
            return rows
        await asyncio.sleep(0.1)


class SeriesKeywords(LibraryComponent):
    """A fleet's figures second by second, and assertions on rates over a window."""

    def series(self, fleet: str) -> FleetSeries:
        """The series of fleet ``fleet`` (also of a deleted fleet whose series is kept)."""
        return self.call(self.simulator.metrics.require, fleet)  # type: ignore[no-any-return]

    @keyword
    def get_fleet_time_series(self, fleet: str, last: timedelta | None = None) -> list[dict[str, Any]]:
        """Returns the figures of ``fleet`` second by second: a list of dicts, oldest first.

        One row per wall-clock second while the fleet runs (kept for the last hour; ``last=30s`` returns only
        the last 30). Counters are what happened in that second, gauges are values at its end:

        | =Key= | =Value= |
        | ``time``, ``ts`` | end of the second (ISO 8601 UTC, epoch seconds) |
        | ``elapsed`` | seconds since the fleet's first row |
        | ``partial`` | True for a second in which the fleet started or stopped (rates leave it out) |
        | ``sent``, ``acked``, ``failed`` | messages handed over, acknowledged, failed |
        | ``dropped`` | readings not sent (offline queue full, QoS 0 while reconnecting) |
        | ``failedByReason`` | failures by reason code (``timeout``, ``http_503``, ``circuit_open``, ...) |
        | ``retries``, ``bytes`` | request retries, payload bytes sent |
        | ``connects``, ``disconnects``, ``reconnects``, ``connectFailures`` | connection events |
        | ``devicesDropped``, ``devicesRestored`` | devices switched off / brought back by dropouts |
        | ``devices``, ``connected``, ``inError`` | devices, devices up (running or error), in error |
        | ``queued`` | readings in offline queues |
        | ``networkFaults``, ``backlogBytes`` | active network faults, bytes they hold |
        | ``latenessMs`` | how late sends ran against each device's schedule (corrected for coordinated omission) |
        | ``requestLatencyMs`` | request/acknowledgement latency (HTTP, CoAP CON, Kafka); None for others |
        | ``e2eLatencyMs`` | end-to-end latency where a receiver tracks the fleet; None otherwise |

        Latencies are ``count``, ``p50``, ``p90``, ``p99``, ``max`` in milliseconds, or None in a second without any.

        | ${rows} =    Get Fleet Time Series    env    last=30s
        | FOR    ${row}    IN    @{rows}
        |     Should Be True    ${row}[failed] == 0
        | END
        """
        series = self.series(fleet)
        window = None if last is None else seconds(last)
        return self.call(series.rows, window)  # type: ignore[no-any-return]

    @keyword
    def message_rate_should_be(
        self,
        fleet: str,
        at_least: float | None = None,
        at_most: float | None = None,
        window: timedelta = DEFAULT_WINDOW,
    ) -> float:
        """Fails unless ``fleet`` sent between ``at_least`` and ``at_most`` messages a second, on average over
        the last ``window`` (default 10 s). Returns the rate.

        The rate is messages handed over to the transport per second (``sent`` of `Get Fleet Time Series`). Give
        one bound or both. When the fleet runs but has not run for the whole window yet, the keyword waits
        until it has (at most the window and two seconds).

        | Message Rate Should Be    env    at_least=950    at_most=1050    window=30s
        """
        if at_least is None and at_most is None:
            raise KeywordError("Message Rate Should Be needs at_least=, at_most= or both.")
        if at_least is not None and at_most is not None and at_least > at_most:
            raise KeywordError(f"at_least ({at_least:g}) must not be above at_most ({at_most:g}).")
        window_s = window_seconds(window)
        series = self.series(fleet)
        rows = self.call_wait(rows_for_window, series, window_s, limit=window_s + 2.0)
        if not rows:
            raise AssertionError(f"Fleet '{fleet}' has no figures yet: has it been started?")
        sent = sum(r["sent"] for r in rows)
        rate = sent / len(rows)
        span = f"over the last {len(rows)} s ({sent:,} messages)"
        logger.info(f"Fleet '{fleet}': {rate:,.1f} msg/s {span}.")
        if at_least is not None and rate < at_least:
            raise AssertionError(f"Fleet '{fleet}': {_fmt(rate)} msg/s {span}, not at least {_fmt(at_least)} msg/s.")
        if at_most is not None and rate > at_most:
            raise AssertionError(f"Fleet '{fleet}': {_fmt(rate)} msg/s {span}, not at most {_fmt(at_most)} msg/s.")
        return rate

    @keyword
    def error_rate_should_be_below(self, fleet: str, limit: float, window: timedelta = DEFAULT_WINDOW) -> float:
        """Fails when ``limit`` percent or more of ``fleet``'s messages failed over the last ``window``.

        Returns the error rate in percent. For request-based protocols (HTTP, CoAP CON, Kafka) it is failures
        per message attempted; for MQTT failures per message sent or failed. The failure message names the
        reasons (``timeout``, ``http_503``, ``circuit_open``, ...).

        | Error Rate Should Be Below    api    1    window=30s
        """
        if limit <= 0:
            raise KeywordError(f"limit must be above 0 %, got {limit:g}.")
        window_s = window_seconds(window)
        series = self.series(fleet)
        rows = self.call_wait(rows_for_window, series, window_s, limit=window_s + 2.0)
        if not rows:
            raise AssertionError(f"Fleet '{fleet}' has no figures yet: has it been started?")
        sent, acked, failed = (sum(r[key] for r in rows) for key in ("sent", "acked", "failed"))
        attempts = max(sent, acked + failed) if series.request_based else sent + failed
        pct = 100.0 * failed / attempts if attempts else 0.0
        reasons: dict[str, int] = {}
        for r in rows:
            for code, n in r["failedByReason"].items():
                reasons[code] = reasons.get(code, 0) + n
        why = ", ".join(f"{code} {n:,}" for code, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        detail = f"{failed:,} failed of {attempts:,} over the last {len(rows)} s" + (f": {why}" if why else "")
        logger.info(f"Fleet '{fleet}': error rate {pct:.2f} % ({detail}).")
        if pct >= limit:
            raise AssertionError(f"Fleet '{fleet}': error rate {pct:.2f} % ({detail}), not below {limit:g} %.")
        return pct

    @keyword
    def connected_devices_should_be(self, fleet: str, count: int, timeout: timedelta | None = None) -> None:
        """Waits until exactly ``count`` devices of ``fleet`` are up (running, or connected but in error),
        for up to ``timeout`` (default: the library's ``timeout``); fails naming the states of the others.

        | Connected Devices Should Be    env    1000    timeout=60s
        | Connected Devices Should Be    env    0
        """
        f = self.fleet(fleet)
        limit = self.timeout_or_default(timeout)

        async def connected() -> int:
            states = await awaited(f.count_states())
            return states["running"] + states["error"]

        async def reached() -> bool:
            return await connected() == count

        async def message() -> str:
            states = {k: v for k, v in (await awaited(f.count_states())).items() if v}
            listing = ", ".join(f"{k} {v:,}" for k, v in states.items())
            return (
                f"Fleet '{fleet}': {await connected():,} of {f.device_count:,} devices connected after {limit:g} s, "
                f"expected {count:,} (states: {listing})."
            )

        self.poll_until(limit, reached, message)

    @keyword
    def set_console_progress(self, interval: timedelta = timedelta(seconds=10)) -> None:
        """Writes a line per running fleet to the console every ``interval`` (its rate, devices connected,
        failures, p99 latency), as Locust's headless runs do; ``0`` switches the lines off.

        The default is every 10 seconds (``IOTIX_PROGRESS=0`` in the environment, or the Metrics library's
        ``progress`` import argument, change it for a whole run).

        | Set Console Progress    30s
        | Set Console Progress    0
        """
        value = seconds(interval)
        if value < 0:
            raise KeywordError(f"interval must be 0 (off) or above, got {value:g} s.")
        hub = self.simulator.metrics
        self.call(setattr, hub, "progress_interval_s", value)
