"""The base of keyword components: a small class of keywords of one area that takes a small context.

As in SeleniumLibrary (``LibraryComponent(ctx)``) and Browser, a component never gets the whole library:
it gets ``ctx``, anything with two attributes,

- ``context``: the process-wide :class:`~iotix._robot.context.Context` (runtime, simulator, models, what
  each suite owns), shared by all four libraries;
- ``timeout``: the library's default timeout in seconds (its ``timeout`` import argument),

so a component is testable with a fake ``ctx`` (``types.SimpleNamespace(context=..., timeout=5.0)``).
Keywords reach loop-owned state only through :meth:`LibraryComponent.call`, never directly.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from iotix._robot.context import KeywordError
from iotix._robot.convert import seconds

if TYPE_CHECKING:
    from iotix._robot.context import Context
    from iotix.fleet.device import Device
    from iotix.fleet.fleet import Fleet
    from iotix.fleet.simulator import Simulator
    from iotix.model.loader import ModelRegistry

T = TypeVar("T")

#: How long one bridge call may take unless the keyword says otherwise (Context.call's default).
CALL_TIMEOUT_S = 60.0
#: Added to a wait's own limit for the bridge call that runs the wait: the wait ends itself first.
WAIT_MARGIN_S = 10.0


async def awaited(value: T | Awaitable[T]) -> T:
    """``value``, awaited when it is awaitable: a sharded fleet answers with coroutines where a plain fleet
    answers at once (see :class:`iotix.cluster.sharded.ShardedFleet`)."""
    if inspect.isawaitable(value):
        return await value
    return value


class ComponentContext(Protocol):
    """What a component needs of its library (an :class:`~iotix._robot.library.IoTixLibrary`)."""

    @property
    def context(self) -> Context: ...

    @property
    def timeout(self) -> float: ...


class LibraryComponent:
    """Base class of keyword components: the process context, its simulator, the bridge, the default timeout."""

    def __init__(self, ctx: ComponentContext) -> None:
        self.ctx = ctx

    @property
    def context(self) -> Context:
        """The process-wide context (shared by every library instance of the process)."""
        return self.ctx.context

    @property
    def simulator(self) -> Simulator:
        """The process's one simulator (created, with the runtime thread, on first use)."""
        return self.ctx.context.simulator

    @property
    def models(self) -> ModelRegistry:
        return self.ctx.context.models

    @property
    def timeout(self) -> float:
        """The library's default timeout, seconds."""
        return self.ctx.timeout

    def timeout_or_default(self, timeout: timedelta | float | None) -> float:
        """A keyword's ``timeout`` in seconds; ``None`` (left at its default) is the library's timeout."""
        return self.ctx.timeout if timeout is None else seconds(timeout)

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = CALL_TIMEOUT_S, **kwargs: Any) -> Any:
        """Run ``fn`` on the runtime loop and return its result (see :meth:`Context.call`)."""
        return self.ctx.context.call(fn, *args, timeout=timeout, **kwargs)

    def call_wait(self, fn: Callable[..., Any], *args: Any, limit: float, **kwargs: Any) -> Any:
        """Run a wait of ``limit`` seconds on the loop; the bridge allows a margin so the wait ends itself."""
        return self.ctx.context.call(fn, *args, timeout=limit + WAIT_MARGIN_S, **kwargs)

    # -- shared look-ups (through the bridge) -------------------------------------------------------------

    def fleet(self, name: str) -> Fleet:
        """The fleet named ``name`` (NotFoundError, listing the fleets, when there is none)."""
        return self.call(self.simulator.fleet, name)

    def checked_fleet(self, name: str) -> Fleet:
        """The fleet named ``name``; fails with what went wrong in its background work since it was last asked."""
        sim = self.simulator

        def checked() -> Fleet:
            fleet = sim.fleet(name)
            errors = fleet.take_errors()
            if errors:
                raise KeywordError(f"Fleet '{name}' reported errors in the background: " + "; ".join(errors))
            return fleet

        return self.call(checked)

    def own_fleet(self, name: str) -> None:
        """The running suite created fleet ``name``: it is deleted when that suite ends."""
        context, sim = self.context, self.simulator
        context.own(f"fleet '{name}'", lambda: context.call(sim.delete_fleet, name))

    def device(self, device_id: str) -> Device:
        """The device ``device_id`` of any fleet (NotFoundError when no fleet has it)."""
        return self.call(self.simulator.find_device, device_id)

    def poll_until(
        self,
        timeout: float,
        condition: Callable[[], bool | Awaitable[bool]],
        message: Callable[[], str | Awaitable[str]],
        interval: float = 0.1,
    ) -> None:
        """Check ``condition`` on the loop until it holds, for up to ``timeout`` seconds (0: once); fail with
        ``message()`` (built on the loop) when it does not.

        Every ``interval`` (0.1 s, the cadence these checks always had: the HTTP resilience suite reads a
        transmission log right after `Circuit Should Be` and expects the first refused send in it).
        """

        async def poll() -> str | None:
            loop = asyncio.get_running_loop()
            end = loop.time() + timeout
            while not await awaited(condition()):
                if loop.time() >= end:
                    return await awaited(message())
                await asyncio.sleep(interval)
            return None

        failure = self.call_wait(poll, limit=timeout)
        if failure is not None:
            raise AssertionError(failure)
