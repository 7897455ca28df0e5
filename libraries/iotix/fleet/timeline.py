"""When devices start and when they drop out: pure functions of settings, a count and a seed.

Everything here returns offsets in **seconds** (floats) from the start of the launch or dropout;
settings are given in milliseconds like the keyword arguments. Nothing reads a clock: the fleet
runner adds the offsets to its own start time.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from typing import Any, TypeVar

from iotix.errors import ConfigurationError

__all__ = [
    "DropoutEvent",
    "DropoutPlan",
    "DropoutSettings",
    "DropoutStrategy",
    "LaunchSettings",
    "LaunchStrategy",
    "choose_dropout_devices",
    "dropout_count",
    "dropout_offsets",
    "launch_offsets",
    "plan_dropout",
]

_E = TypeVar("_E", bound=Enum)


# --------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------


def _as_enum(enum_type: type[_E], value: Any, field: str) -> _E:
    """``value`` (a member or its string value, any case) as a member of ``enum_type``."""
    if isinstance(value, enum_type):
        return value
    valid = ", ".join(member.value for member in enum_type)
    if isinstance(value, str):
        try:
            return enum_type(value.strip().lower())
        except ValueError:
            pass
    raise ConfigurationError(f"Unknown {field} {value!r}: valid values are {valid}.")


def _check_number(field: str, value: Any, minimum: float = 0) -> None:
    """``value`` must be a finite int/float (not a bool) and at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"{field} must be a finite number, got {value!r}.")
    if value < minimum:
        raise ConfigurationError(f"{field} must be at least {minimum}, got {value!r}.")


def _check_int(field: str, value: Any, minimum: int) -> None:
    """``value`` must be an int (not a bool) and at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{field} must be an integer, got {value!r}.")
    if value < minimum:
        raise ConfigurationError(f"{field} must be at least {minimum}, got {value}.")


def _check_count(count: Any) -> None:
    _check_int("The number of devices", count, 0)


# --------------------------------------------------------------------------------------------------
# Launch
# --------------------------------------------------------------------------------------------------


class LaunchStrategy(str, Enum):
    """How the devices of a fleet are started over time (see ``launch_offsets``)."""

    IMMEDIATE = "immediate"
    LINEAR = "linear"
    BATCH = "batch"
    EXPONENTIAL = "exponential"


@dataclass(frozen=True)
class LaunchSettings:
    """How to spread the start of a fleet. ``strategy`` may be given as a string (any case).

    ``delay_ms`` is the gap (linear), the gap between batches (batch) or the first gap (exponential);
    ``max_delay_ms`` caps the exponential gaps; ``exponent_base`` (>= 1) is their growth factor.
    """

    strategy: LaunchStrategy = LaunchStrategy.IMMEDIATE
    delay_ms: float = 0
    batch_size: int = 100
    max_delay_ms: float = 60000
    exponent_base: float = 1.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", _as_enum(LaunchStrategy, self.strategy, "launch strategy"))
        _check_number("delay_ms", self.delay_ms)
        _check_int("batch_size", self.batch_size, 1)
        _check_number("max_delay_ms", self.max_delay_ms)
        _check_number("exponent_base", self.exponent_base, 1)


def launch_offsets(count: int, settings: LaunchSettings) -> list[float]:
    """Start offsets in seconds for devices ``0 .. count-1``; non-decreasing, the first is 0.

    With ``d = delay_ms``, ``b = exponent_base`` and ``m = max_delay_ms``:

    * ``immediate``: every offset is 0.
    * ``linear``: device ``i`` starts at ``i * d``.
    * ``batch``: device ``i`` starts at ``(i // batch_size) * d`` (5,000 devices, batches of 100, 1 s:
      the last batch starts at 49 s).
    * ``exponential``: device 0 starts at 0; the gap between device ``i-1`` and device ``i``
      (``i >= 1``) is ``min(d * b**(i-1), m)``; offsets are the cumulative sums of the gaps.
      E.g. d=100 ms, b=2: 0, 0.1, 0.3, 0.7, 1.5, 3.1 s, ... until a gap reaches ``m``, then
      ``m`` apart.

    Offsets are computed in milliseconds and divided by 1000 once, so integral millisecond offsets
    are the closest floats (``0.3``, not ``0.30000000000000004``). O(count).
    """
    _check_count(count)
    strategy, delay = settings.strategy, settings.delay_ms
    if strategy is LaunchStrategy.IMMEDIATE or delay == 0:
        return [0.0] * count
    if strategy is LaunchStrategy.LINEAR:
        return [i * delay / 1000 for i in range(count)]
    if strategy is LaunchStrategy.BATCH:
        size = settings.batch_size
        return [(i // size) * delay / 1000 for i in range(count)]
    return _exponential_launch(count, delay, settings.exponent_base, settings.max_delay_ms)


def _exponential_launch(count: int, delay: float, base: float, cap: float) -> list[float]:
    """Cumulative sums of ``min(delay * base**k, cap)`` for k = 0, 1, ... (see ``launch_offsets``)."""
    if count == 0:
        return []
    offsets_ms = [0.0]
    total, gap = 0.0, float(delay)
    while len(offsets_ms) < count and gap < cap:
        total += gap
        offsets_ms.append(total)
        gap *= base
    # Every further gap is the cap: plain arithmetic, no growing sum of rounding errors.
    last = len(offsets_ms) - 1
    offsets_ms.extend(total + (j - last) * cap for j in range(len(offsets_ms), count))
    return [ms / 1000 for ms in offsets_ms]


# --------------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------------


class DropoutStrategy(str, Enum):
    """How the chosen devices drop out over time (see ``dropout_offsets``)."""

    IMMEDIATE = "immediate"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"
    RANDOM = "random"


@dataclass(frozen=True)
class DropoutSettings:
    """Which devices drop out and when. ``strategy`` may be given as a string (any case).

    ``count`` takes precedence over ``percentage`` (0..100); with neither, every device drops out.
    ``delay_ms`` is the gap (linear) or the first gap (exponential); ``duration_ms`` is the window
    of the random strategy; ``exponent_base`` (>= 1) is how fast exponential gaps shrink. With
    ``reconnect``, each device comes back ``reconnect_delay_ms`` after it dropped
    (``reconnect_delay_ms`` is ignored without ``reconnect``).
    """

    strategy: DropoutStrategy = DropoutStrategy.LINEAR
    count: int | None = None
    percentage: float | None = None
    delay_ms: float = 1000
    duration_ms: float = 60000
    exponent_base: float = 1.5
    reconnect: bool = False
    reconnect_delay_ms: float = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", _as_enum(DropoutStrategy, self.strategy, "dropout strategy"))
        if self.count is not None:
            _check_int("count", self.count, 0)
        if self.percentage is not None:
            _check_number("percentage", self.percentage)
            if self.percentage > 100:
                raise ConfigurationError(f"percentage must be between 0 and 100, got {self.percentage!r}.")
        _check_number("delay_ms", self.delay_ms)
        _check_number("duration_ms", self.duration_ms)
        _check_number("exponent_base", self.exponent_base, 1)
        if not isinstance(self.reconnect, bool):
            raise ConfigurationError(f"reconnect must be true or false, got {self.reconnect!r}.")
        _check_number("reconnect_delay_ms", self.reconnect_delay_ms)


@dataclass(frozen=True)
class DropoutEvent:
    """One device dropping out at ``drop_at`` seconds and, if planned, reconnecting at ``reconnect_at``."""

    device_id: str
    drop_at: float
    reconnect_at: float | None = None


DropoutPlan = list[DropoutEvent]


def _seed_text(seed: int | str | None) -> str:
    return "0" if seed is None else str(seed)


def dropout_count(fleet_size: int, settings: DropoutSettings) -> int:
    """How many of ``fleet_size`` devices drop out.

    ``count`` wins over ``percentage``; a percentage rounds half up (10 % of 25 = 2.5 -> 3), computed
    in decimal so ``0.7`` % of 500 is exactly 3.5 -> 4; with neither, every device drops out.
    A ``count`` larger than the fleet is a ``ConfigurationError``.
    """
    _check_count(fleet_size)
    if settings.count is not None:
        if settings.count > fleet_size:
            raise ConfigurationError(f"Cannot drop {settings.count} devices: the fleet has only {fleet_size}.")
        return settings.count
    if settings.percentage is not None:
        exact = Decimal(str(settings.percentage)) * fleet_size / 100
        return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return fleet_size


def choose_dropout_devices(
    device_ids: Sequence[str], settings: DropoutSettings, seed: int | str | None = None
) -> list[str]:
    """The devices that drop out, in the order they drop (see ``dropout_count`` for how many).

    The choice is a seeded sample (``random.Random(f"dropout:{seed}")``, seed ``None`` meaning 0):
    the same ids in the same order with the same seed always give the same result, independent of
    the process and of hash randomisation. Duplicate ids are an error.
    """
    ids = list(device_ids)
    if len(set(ids)) != len(ids):
        duplicates = sorted(device for device, seen in Counter(ids).items() if seen > 1)
        raise ConfigurationError(f"Duplicate device ids: {', '.join(duplicates)}.")
    k = dropout_count(len(ids), settings)
    return random.Random(f"dropout:{_seed_text(seed)}").sample(ids, k)


def dropout_offsets(n: int, settings: DropoutSettings, seed: int | str | None = None) -> list[float]:
    """Drop offsets in seconds for the ``n`` chosen devices, in drop order (non-decreasing).

    With ``d = delay_ms`` and ``b = exponent_base``:

    * ``immediate``: every offset is 0.
    * ``linear``: device ``i`` drops at ``i * d``.
    * ``exponential`` (an accelerating cascade): device 0 drops at 0; the gap before device ``i``
      (``i >= 1``) is ``d / b**(i-1)``; offsets are the cumulative sums (d=1000 ms, b=2: 0, 1, 1.5,
      1.75, ... s, approaching ``d * b / (b - 1)`` = 2 s; ``b = 1`` is linear).
    * ``random``: ``n`` times drawn uniformly from ``[0, duration_ms)`` with
      ``random.Random(f"dropout-times:{seed}")`` (seed ``None`` meaning 0), sorted.
    """
    _check_count(n)
    strategy, delay = settings.strategy, settings.delay_ms
    if strategy is DropoutStrategy.IMMEDIATE:
        return [0.0] * n
    if strategy is DropoutStrategy.LINEAR:
        return [i * delay / 1000 for i in range(n)]
    if strategy is DropoutStrategy.EXPONENTIAL:
        return _exponential_dropout(n, delay, settings.exponent_base)
    rng = random.Random(f"dropout-times:{_seed_text(seed)}")
    duration = settings.duration_ms
    return sorted(rng.random() * duration / 1000 for _ in range(n))


def _exponential_dropout(n: int, delay: float, base: float) -> list[float]:
    """Cumulative sums of ``delay / base**k`` for k = 0, 1, ... (see ``dropout_offsets``)."""
    offsets: list[float] = []
    total, gap = 0.0, float(delay)
    for _ in range(n):
        offsets.append(total / 1000)
        total += gap
        gap /= base
    return offsets


def plan_dropout(device_ids: Sequence[str], settings: DropoutSettings, seed: int | str | None = None) -> DropoutPlan:
    """Who drops out when (and comes back when): ``choose_dropout_devices`` + ``dropout_offsets``.

    ``reconnect_at`` is ``drop_at + reconnect_delay_ms / 1000`` with ``reconnect``, else ``None``.
    Events are in drop order.
    """
    chosen = choose_dropout_devices(device_ids, settings, seed)
    offsets = dropout_offsets(len(chosen), settings, seed)
    back = settings.reconnect_delay_ms / 1000
    return [
        DropoutEvent(device, at, at + back if settings.reconnect else None)
        for device, at in zip(chosen, offsets, strict=True)
    ]
