"""Chaos component: devices dropping out (and coming back) by a dropout timeline."""

from __future__ import annotations

from datetime import timedelta

from robot.api import logger
from robot.api.deco import keyword

from iotix._robot.component import LibraryComponent
from iotix._robot.context import KeywordError
from iotix._robot.convert import seconds
from iotix.errors import error_context
from iotix.fleet.timeline import DropoutSettings, DropoutStrategy


class DropoutKeywords(LibraryComponent):
    """Drop devices of a fleet, wait for the dropout, bring them back."""

    @keyword
    def drop_devices(
        self,
        fleet: str,
        strategy: DropoutStrategy = DropoutStrategy.LINEAR,
        count: int | None = None,
        percentage: float | None = None,
        delay: timedelta = timedelta(seconds=1),
        duration: timedelta = timedelta(seconds=60),
        exponent_base: float = 1.5,
        reconnect: bool = False,
        reconnect_delay: timedelta = timedelta(0),
        seed: int | None = None,
    ) -> list[str]:
        """Drops devices of ``fleet`` following a timeline; returns the ids chosen, in drop order.

        - ``count`` devices, or ``percentage`` of the fleet (``count`` wins; neither means all).
        - ``immediate``: all at once; ``linear``: one every ``delay``; ``exponential``: an accelerating
          cascade, the gaps shrink by ``exponent_base``; ``random``: at uniform times within ``duration``.
        - ``reconnect``: each device comes back ``reconnect_delay`` after it dropped.

        Returns at once; the drops follow in the background. `Wait Until Dropout Is Complete` waits.
        The fleet must have been started (`Start Fleet`); a stopped fleet has nothing to drop.

        | ${dropped} =    Drop Devices    env    strategy=exponential    count=10    delay=2s
        | ...    reconnect=True    reconnect_delay=5s    seed=7
        """
        f = self.fleet(fleet)

        def start() -> list[str]:
            if f.state in ("created", "stopped"):
                raise KeywordError(
                    f"Fleet '{fleet}' is {'not started' if f.state == 'created' else 'stopped'}: only devices of "
                    "a started fleet can drop out; use Start Fleet first."
                )
            with error_context(f"Fleet '{fleet}'"):
                settings = DropoutSettings(
                    strategy=strategy,
                    count=count,
                    percentage=percentage,
                    delay_ms=seconds(delay) * 1000,
                    duration_ms=seconds(duration) * 1000,
                    exponent_base=exponent_base,
                    reconnect=reconnect,
                    reconnect_delay_ms=seconds(reconnect_delay) * 1000,
                )
                return f.start_dropout(settings, seed)

        ids = self.call(start)
        logger.info(
            f"Fleet '{fleet}': dropping {len(ids)} devices ({strategy.value}"
            f"{', reconnecting' if reconnect else ''}): {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}"
        )
        return ids

    @keyword
    def wait_until_dropout_is_complete(self, fleet: str, timeout: timedelta | None = None) -> None:
        """Waits until every drop (and reconnect) of the fleet's current dropout has happened, and every
        device meant to come back is running again.

        ``timeout`` defaults to what is left of the dropout's plan plus the library's ``timeout``: a dropout
        may be planned over minutes, and the devices it brings back then need the time any device needs to
        connect. Fails with how many steps are done and which devices are not back.

        | Drop Devices    env    count=10    delay=2s    reconnect=True    reconnect_delay=5s
        | Wait Until Dropout Is Complete    env
        """
        f = self.fleet(fleet)

        def limit() -> float:
            if not f.has_dropout:
                raise KeywordError(f"Fleet '{fleet}' has no dropout: use Drop Devices first.")
            return seconds(timeout) if timeout is not None else f.dropout_time_left() + self.timeout

        wait_s = self.call(limit)
        if not self.call_wait(f.wait_for_dropout, wait_s, limit=wait_s):
            raise AssertionError(self.call(f.dropout_report, wait_s))
        logger.info(f"Dropout of fleet '{fleet}' complete.")

    @keyword
    def reconnect_devices(self, fleet: str) -> list[str]:
        """Brings every dropped device of ``fleet`` back now; returns their ids."""
        f = self.fleet(fleet)
        ids = self.call(f.restore_dropped)
        logger.info(f"Fleet '{fleet}': reconnecting {len(ids)} dropped devices.")
        return ids
