"""One timer for every send of every device: a heap of due times, drained in ticks.

A sleeping task per device or per telemetry attribute costs a wake-up each; at 10,000 devices that is
10,000 wake-ups a second. Here all sends that are due within one tick fire together from a single timer,
so the loop wakes at most ``1 / tick`` times a second whatever the fleet size, and a device costs one heap
entry per telemetry group. Sends are scheduled on absolute due times (``due + interval``), so they do not
drift; each firing records how late it ran against its schedule.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("iotix.scheduler")

#: Default coalescing window: sends due within this many seconds of each other fire in one wake-up.
DEFAULT_TICK_S = 0.005

# fire(device, group, due, now) -> next due time, or None to stop this entry
FireFn = Callable[[Any, int, float, float], "float | None"]


class _Entry:
    """One scheduled stream of sends (a device's telemetry group); reused across firings."""

    __slots__ = ("device", "fire", "gen", "group")

    def __init__(self, device: Any, group: int, gen: int, fire: FireFn) -> None:
        self.device = device
        self.group = group
        self.gen = gen
        self.fire = fire


class Scheduler:
    """Runs on one asyncio loop; not thread-safe (call from the loop thread).

    The heap holds ``(due, slot)`` pairs of a float and an int: tuples of atomic values, which the
    garbage collector stops tracking. Only the long-lived :class:`_Entry` objects point at devices, so
    firing 10,000 sends a second promotes nothing into the old generation and full collections (which
    stall the loop for a large fleet) stay rare.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = DEFAULT_TICK_S) -> None:
        self._loop = loop
        self._tick = tick
        self._heap: list[tuple[float, int]] = []
        self._entries: list[_Entry | None] = []
        self._free: list[int] = []
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        self._last_run = 0.0
        self.fired = 0
        self.errors = 0
        self.wall_ms = int(time.time() * 1000)  # wall clock (epoch ms) at the start of the current run

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def tick(self) -> float:
        """The coalescing window (seconds): sends due within it fire in one wake-up."""
        return self._tick

    def add(self, due: float, device: Any, group: int, gen: int, fire: FireFn) -> None:
        """Fire ``fire(device, group, due, now)`` at loop time ``due`` while ``device.gen == gen``."""
        entry = _Entry(device, group, gen, fire)
        if self._free:
            slot = self._free.pop()
            self._entries[slot] = entry
        else:
            slot = len(self._entries)
            self._entries.append(entry)
        heapq.heappush(self._heap, (due, slot))
        if due < self._armed_at:
            self._arm()

    def _arm(self) -> None:
        if not self._heap:
            return
        when = max(self._heap[0][0], self._last_run + self._tick)
        if self._handle is not None:
            if self._armed_at <= when:
                return
            self._handle.cancel()
        self._armed_at = when
        self._handle = self._loop.call_at(when, self._run)

    def _run(self) -> None:
        self._handle = None
        self._armed_at = float("inf")
        now = self._loop.time()
        self.wall_ms = int(time.time() * 1000)
        self._last_run = now
        horizon = now + self._tick / 2
        heap, entries, free = self._heap, self._entries, self._free
        pop, push = heapq.heappop, heapq.heappush
        fired = 0
        while heap and heap[0][0] <= horizon:
            due, slot = pop(heap)
            entry = entries[slot]
            assert entry is not None
            device = entry.device
            if device.gen != entry.gen:
                entries[slot] = None
                free.append(slot)
                continue
            try:
                nxt = entry.fire(device, entry.group, due, now)
                # Due again within this tick (an interval shorter than the tick): fire it again at once rather
                # than through the heap; these sends go out together anyway (one write per connection and tick).
                while nxt is not None and nxt <= horizon and device.gen == entry.gen:
                    fired += 1
                    nxt = entry.fire(device, entry.group, nxt, now)
            except Exception as err:
                self.errors += 1
                log.exception("scheduled send of %r failed", device)
                report = getattr(getattr(device, "fleet", None), "report_error", None)
                if report is not None:  # the next keyword touching the fleet reports it
                    report(f"sending for device '{getattr(device, 'id', device)}' failed: {err!r}")
                nxt = due + 1.0
            fired += 1
            if nxt is None:
                entries[slot] = None
                free.append(slot)
            else:
                push(heap, (nxt, slot))
        self.fired += fired
        self._arm()

    def clear(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._armed_at = float("inf")
        self._heap.clear()
        self._entries.clear()
        self._free.clear()
