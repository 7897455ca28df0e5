"""Robot Framework keyword library: break devices on purpose (dropouts and reconnects)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from robot.api import logger
from robot.api.deco import keyword, library

from iotix._robot.context import KeywordError, SuiteCleanupListener, get_context
from iotix._robot.convert import seconds
from iotix.errors import ConfigurationError
from iotix.fleet.device import DeviceState
from iotix.fleet.timeline import DropoutSettings, DropoutStrategy

__version__ = "0.1.0"


@library(scope="GLOBAL", version=__version__, auto_keywords=False, listener=SuiteCleanupListener(), doc_format="ROBOT")
class Chaos:
    """Device dropouts: devices that lose power or network, in patterns, and come back (or not).

    A dropped device closes its connection abruptly (no MQTT DISCONNECT, so the broker publishes its
    last will) and stops sending. With ``reconnect`` it comes back after ``reconnect_delay`` and goes on
    where it stopped: its ``seq`` continues, so receivers see no gap for the time it was off.

    Which devices drop is reproducible: the same ``seed`` picks the same devices in the same order.
    """

    def __init__(self) -> None:
        self._ctx = get_context()

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
        f = self._ctx.simulator.fleet(fleet)
        if f.state in ("created", "stopped"):
            raise KeywordError(
                f"Fleet '{fleet}' is {'not started' if f.state == 'created' else 'stopped'}: only devices of a "
                "started fleet can drop out; use Start Fleet first."
            )
        try:
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
            ids = self._ctx.call(f.start_dropout, settings, seed)
        except ConfigurationError as err:
            message = str(err)
            if not message.startswith(f"Fleet '{fleet}'"):
                message = f"Fleet '{fleet}': {message}"
            raise KeywordError(message) from None
        logger.info(
            f"Fleet '{fleet}': dropping {len(ids)} devices ({strategy.value}"
            f"{', reconnecting' if reconnect else ''}): {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}"
        )
        return ids

    @keyword
    def wait_until_dropout_is_complete(self, fleet: str, timeout: timedelta = timedelta(seconds=120)) -> None:
        """Waits until every drop (and reconnect) of the fleet's current dropout has happened, and every
        device meant to come back is running again."""
        f = self._ctx.simulator.fleet(fleet)
        limit = seconds(timeout)

        async def wait() -> bool:
            task = f.dropout_task
            if task is None:
                raise KeywordError(f"Fleet '{fleet}' has no dropout: use Drop Devices first.")
            loop = asyncio.get_running_loop()
            end = loop.time() + limit
            try:
                await asyncio.wait_for(asyncio.shield(task), limit)
            except TimeoutError:
                return False
            back = [e.device_id for e in f.dropout_plan if e.reconnect_at is not None]
            while any(f.by_id[d].state is not DeviceState.RUNNING for d in back):
                if loop.time() >= end:
                    return False
                await asyncio.sleep(0.05)
            return True

        if not self._ctx.call(wait, timeout=limit + 10):

            def state() -> str:
                back = [e.device_id for e in f.dropout_plan if e.reconnect_at is not None]
                not_back = [d for d in back if f.by_id[d].state is not DeviceState.RUNNING]
                msg = (
                    f"Dropout of fleet '{fleet}' not complete after {limit:g} s: {f.dropouts_done} of "
                    f"{f.dropout_steps} steps done"
                )
                if not_back:
                    d = f.by_id[not_back[0]]
                    msg += (
                        f"; {len(not_back)} device(s) not back, e.g. {d.id} ({d.state.value}"
                        f"{': ' + d.last_error if d.last_error else ''})"
                    )
                return msg + "."

            raise AssertionError(self._ctx.call(state))
        logger.info(f"Dropout of fleet '{fleet}' complete.")

    @keyword
    def reconnect_devices(self, fleet: str) -> list[str]:
        """Brings every dropped device of ``fleet`` back now; returns their ids."""
        f = self._ctx.simulator.fleet(fleet)

        def restore() -> list[str]:
            return [d.id for d in f.devices if f.restore_device(d)]

        ids = self._ctx.call(restore)
        logger.info(f"Fleet '{fleet}': reconnecting {len(ids)} dropped devices.")
        return ids
