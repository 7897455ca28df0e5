"""Generators of scalar values: random, sequence, constant, sinusoidal, randomWalk, choice, battery.

Each ``make_*`` function reads a spec through a :class:`SpecReader` and returns a generator (or None when it
recorded problems). The generator classes precompute everything in ``__init__`` so that ``next`` is a few
arithmetic operations: it runs for every field of every device at every reading.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iotix.generate._spec import SpecReader
from iotix.generate._values import (
    FIELD_TYPES,
    NUMERIC_FIELD_TYPES,
    coerce_value,
    inline_scale,
    numeric_output,
    value_problem,
    with_precision,
)
from iotix.generate.base import Generator

_INF = math.inf
_log, _sqrt, _sin, _cos = math.log, math.sqrt, math.sin, math.cos
_TWO_PI = 2.0 * math.pi
DISTRIBUTIONS = ("uniform", "normal", "exponential")
#: An exponential ``random`` generator with ``min`` and ``max`` but no ``mean`` has mean (max - min) / this.
EXPONENTIAL_MEAN_DIVISOR = 10.0

Output = Callable[[float], Any]

#: parameter values shared by the generators of every device (see _const)
_CONSTANTS: dict[tuple[float, float], float] = {}


def _const(value: float) -> float:
    """``float(value)``, as one object for equal values: the generators of a field share their parameters across a
    fleet's devices (a float object is 24 bytes; a fleet of 100,000 devices has millions of them otherwise)."""
    number = float(value)
    if len(_CONSTANTS) >= 100_000:
        return number
    return _CONSTANTS.setdefault((number, math.copysign(1.0, number)), number)


# --- random -----------------------------------------------------------------------------------------------


class UniformGenerator(Generator):
    """Uniform in [low, high)."""

    __slots__ = ("_low", "_out", "_rng", "_scale", "_span")

    def __init__(self, low: float, high: float, rng: random.Random, out: Output) -> None:
        self._low = low
        self._span = _const(high - low)
        self._rng = rng
        self._out = out
        self._scale = _const(inline_scale(out, low, high))  # 0.0: call out

    def next(self, t: float) -> Any:
        value = self._low + self._span * self._rng.random()
        scale = self._scale
        if scale:
            return round(value * scale) / scale
        return self._out(value)


class NormalGenerator(Generator):
    """Normal(mean, stddev) clamped to [low, high].

    Box-Muller inline (the algorithm of ``random.gauss``, which makes two values per pair of uniforms and
    keeps the second): a third cheaper than calling ``rng.gauss``, the hottest call of a typical fleet.
    """

    __slots__ = ("_high", "_low", "_mean", "_out", "_rng", "_scale", "_spare", "_stddev")

    def __init__(self, mean: float, stddev: float, *, low: float, high: float, rng: random.Random, out: Output) -> None:
        self._mean = mean
        self._stddev = stddev
        self._low = low
        self._high = high
        self._rng = rng
        self._spare: float | None = None
        self._out = out
        self._scale = _const(inline_scale(out, low, high))  # 0.0: call out (also when unbounded)

    def next(self, t: float) -> Any:
        z = self._spare
        if z is None:
            angle = _TWO_PI * self._rng.random()
            radius = _sqrt(-2.0 * _log(1.0 - self._rng.random()))
            z = _cos(angle) * radius
            self._spare = _sin(angle) * radius
        else:
            self._spare = None
        value = self._mean + z * self._stddev
        if value < self._low:
            value = self._low
        elif value > self._high:
            value = self._high
        scale = self._scale
        if scale:
            return round(value * scale) / scale
        return self._out(value)


class ExponentialGenerator(Generator):
    """low + Exp(mean), clamped to high (inverse transform, as ``random.expovariate`` does, without the call)."""

    __slots__ = ("_high", "_low", "_mean", "_out", "_rng")

    def __init__(self, low: float, mean: float, high: float, rng: random.Random, out: Output) -> None:
        self._low = low
        self._mean = mean
        self._high = high
        self._rng = rng
        self._out = out

    def next(self, t: float) -> Any:
        value = self._low - self._mean * _log(1.0 - self._rng.random())
        if value > self._high:  # noqa: PLR1730 - a comparison is cheaper than min() on this hot path
            value = self._high
        return self._out(value)


def make_random(r: SpecReader, field_type: str, rng: random.Random, base_dir: Path | None) -> Generator | None:
    """``random``: uniform (default), normal or exponential, clamped to [min, max] when given.

    An exponential without ``mean`` but with ``min`` and ``max`` (the iotix format) gets
    :func:`default_exponential_mean`.
    """
    r.known(("distribution", "min", "max", "mean", "stddev"))
    r.field_type_in(field_type, NUMERIC_FIELD_TYPES, "numbers")
    precision = r.precision()
    distribution = r.spec.get("distribution", "uniform")
    low = r.number("min")
    high = r.number("max")
    r.ordered("min", low, "max", high)
    mean = r.number("mean")
    stddev = r.number("stddev")
    if distribution == "uniform":
        for key, value in (("min", low), ("max", high)):
            if value is None and key not in {p for p, _ in r.problems}:
                r.problem(key, "is required for the uniform distribution")
        for key in ("mean", "stddev"):
            if r.has(key):
                r.problem(key, "is not used by the uniform distribution (it needs only min and max)")
    elif distribution == "normal":
        has_range = low is not None and high is not None
        if mean is None and not has_range and not r.has("mean"):
            r.problem("mean", "is required for the normal distribution unless min and max are both given")
        if stddev is None and not has_range and not r.has("stddev"):
            r.problem("stddev", "is required for the normal distribution unless min and max are both given")
        r.non_negative("stddev", stddev)
    elif distribution == "exponential":
        has_range = low is not None and high is not None
        if mean is None and not has_range and not r.has("mean"):
            r.problem(
                "mean",
                "is required for the exponential distribution (the mean of the exponential part) unless min and "
                f"max are both given (then the mean is (max - min) / {EXPONENTIAL_MEAN_DIVISOR:g})",
            )
        r.positive("mean", mean)
        if mean is None and has_range and low == high:
            r.problem("max", "must be > min for the exponential distribution without a mean (the default mean is 0)")
        if r.has("stddev"):
            r.problem("stddev", "is not used by the exponential distribution")
    else:
        r.problem(
            "distribution",
            f"unknown distribution {distribution!r} (expected one of: {', '.join(DISTRIBUTIONS)})",
        )
    if not r.ok:
        return None
    out = numeric_output(field_type, precision)
    if distribution == "uniform":
        assert low is not None and high is not None
        return UniformGenerator(_const(low), _const(high), rng, out)
    clamp_low = -_INF if low is None else _const(low)
    clamp_high = _INF if high is None else _const(high)
    if distribution == "normal":
        if mean is None:
            assert low is not None and high is not None
            mean = (low + high) / 2.0
        if stddev is None:
            assert low is not None and high is not None
            stddev = (high - low) / 6.0
        return NormalGenerator(_const(mean), _const(stddev), low=clamp_low, high=clamp_high, rng=rng, out=out)
    if mean is None:
        assert low is not None and high is not None
        mean = default_exponential_mean(low, high)
    return ExponentialGenerator(0.0 if low is None else _const(low), _const(mean), clamp_high, rng, out)


def default_exponential_mean(low: float, high: float) -> float:
    """The mean of an exponential ``random`` generator given only ``min`` and ``max``: (max - min) / 10.

    Most values then lie near ``min`` (63 % below min + mean, 99.3 % below min + half the range) and about
    one reading in 22,000 is clamped to ``max``: an AQI of 0..500 averages 50.
    """
    return (float(high) - float(low)) / EXPONENTIAL_MEAN_DIVISOR


# --- sequence ---------------------------------------------------------------------------------------------


class SequenceGenerator(Generator):
    """base, base+step, base+2*step, ...; past the bound it restarts at ``reset`` (wrap) or holds the bound.

    Values are computed as ``base + k*step`` rather than accumulated, so float steps do not drift.
    """

    __slots__ = ("_base", "_bound", "_k", "_out", "_reset", "_step", "_tolerance", "_wrap")

    def __init__(self, start: float, step: float, *, bound: float, reset: float, wrap: bool, out: Output) -> None:
        self._base = start
        self._k = 0
        self._step = step
        # The bound in the direction of travel (max for a positive step, min for a negative one), as a
        # signed distance so one comparison serves both directions.
        self._bound = bound
        self._reset = reset
        self._wrap = wrap
        self._tolerance = abs(step) * 1e-9
        self._out = out

    def next(self, t: float) -> Any:
        step = self._step
        value = self._base + self._k * step
        overshoot = (value - self._bound) if step > 0 else (self._bound - value)
        if overshoot > self._tolerance:
            if self._wrap:
                self._base = value = self._reset
                self._k = 1
                return self._out(value)
            return self._out(self._bound)
        self._k += 1
        if overshoot > 0:  # within float noise of the bound: it is the bound
            value = self._bound
        return self._out(value)


def make_sequence(r: SpecReader, field_type: str, rng: random.Random, base_dir: Path | None) -> Generator | None:
    """``sequence``: start, start+step, ... wrapping to the other end (or holding at the bound)."""
    r.known(("start", "step", "min", "max", "wrap"))
    r.field_type_in(field_type, NUMERIC_FIELD_TYPES, "numbers")
    precision = r.precision()
    low = r.number("min")
    high = r.number("max")
    step = r.number("step", 1)
    wrap = r.boolean("wrap", True)
    r.ordered("min", low, "max", high)
    if step == 0:
        r.problem("step", "must not be 0")
    default_start = (high if high is not None else 0) if (step or 1) < 0 else (low if low is not None else 0)
    start = r.number("start", default_start)
    r.within("start", start, low, high)
    if not r.ok:
        return None
    assert step is not None and start is not None
    if step > 0:
        bound = _INF if high is None else float(high)
        reset = start if low is None else low
    else:
        bound = -_INF if low is None else float(low)
        reset = start if high is None else high
    return SequenceGenerator(
        start, step, bound=bound, reset=reset, wrap=wrap, out=numeric_output(field_type, precision)
    )


# --- constant ---------------------------------------------------------------------------------------------


class ConstantGenerator(Generator):
    """Always the same value (shared: callers must not mutate object values)."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def next(self, t: float) -> Any:
        return self._value


def make_constant(r: SpecReader, field_type: str, rng: random.Random, base_dir: Path | None) -> Generator | None:
    """``constant``: always ``value``."""
    r.known(("value",))
    precision = r.precision()
    if "value" not in r.spec:
        r.problem("value", "is required for the 'constant' generator")
        return None
    value = r.spec["value"]
    problem = value_problem(value, field_type)
    if problem:
        r.problem("value", f"{problem} (field type '{field_type}')")
    if not r.ok:
        return None
    return ConstantGenerator(with_precision(coerce_value(value, field_type), field_type, precision))


# --- sinusoidal -------------------------------------------------------------------------------------------


class SinusoidalGenerator(Generator):
    """offset + amplitude*sin(2π(t/period + phase)) + N(0, noise), clamped to [low, high]."""

    __slots__ = ("_amplitude", "_high", "_low", "_noise", "_offset", "_omega", "_out", "_phase", "_rng")

    def __init__(
        self,
        period_s: float,
        *,
        amplitude: float,
        offset: float,
        noise: float,
        phase: float,
        low: float,
        high: float,
        rng: random.Random,
        out: Output,
    ) -> None:
        self._omega = _const(_TWO_PI / period_s)
        self._phase = _const(_TWO_PI * phase)
        self._amplitude = amplitude
        self._offset = offset
        self._noise = noise
        self._rng = rng
        self._low = low
        self._high = high
        self._out = out

    def next(self, t: float) -> Any:
        value = self._offset + self._amplitude * math.sin(self._omega * t + self._phase)
        if self._noise:
            value += self._rng.gauss(0.0, self._noise)
        if value < self._low:
            value = self._low
        elif value > self._high:
            value = self._high
        return self._out(value)


def make_sinusoidal(r: SpecReader, field_type: str, rng: random.Random, base_dir: Path | None) -> Generator | None:
    """``sinusoidal``: a sine wave over logical time, with optional Gaussian noise and clamp."""
    r.known(("periodMs", "amplitude", "offset", "noise", "phase", "min", "max"))
    r.field_type_in(field_type, NUMERIC_FIELD_TYPES, "numbers")
    precision = r.precision()
    period_ms = r.number("periodMs", required=True)
    r.positive("periodMs", period_ms)
    amplitude = r.number("amplitude", 1.0)
    offset = r.number("offset", 0.0)
    noise = r.number("noise", 0.0)
    r.non_negative("noise", noise)
    phase = r.number("phase", 0.0)
    low = r.number("min")
    high = r.number("max")
    r.ordered("min", low, "max", high)
    if not r.ok:
        return None
    assert period_ms is not None and amplitude is not None and offset is not None
    assert noise is not None and phase is not None
    return SinusoidalGenerator(
        period_ms / 1000.0,
        amplitude=_const(amplitude),
        offset=_const(offset),
        noise=_const(noise),
        phase=_const(phase),
        low=-_INF if low is None else _const(low),
        high=_INF if high is None else _const(high),
        rng=rng,
        out=numeric_output(field_type, precision),
    )


# --- randomWalk -------------------------------------------------------------------------------------------


class RandomWalkGenerator(Generator):
    """start, then previous + U(-step, step) reflected into [low, high]."""

    __slots__ = ("_high", "_low", "_out", "_rng", "_scale", "_step2", "_value")

    def __init__(self, start: float, step: float, *, low: float, high: float, rng: random.Random, out: Output) -> None:
        self._value = start
        self._step2 = _const(2.0 * step)
        self._low = low
        self._high = high
        self._rng = rng
        self._out = out
        self._scale = _const(inline_scale(out, low, high))  # 0.0: call out

    def next(self, t: float) -> Any:
        value = self._value
        following = value + self._step2 * (self._rng.random() - 0.5)
        if following > self._high:
            following = 2.0 * self._high - following
        elif following < self._low:
            following = 2.0 * self._low - following
        # A step wider than the range can overshoot even after one reflection.
        if following > self._high:
            following = self._high
        elif following < self._low:
            following = self._low
        self._value = following
        scale = self._scale
        if scale:
            return round(value * scale) / scale
        return self._out(value)


def make_random_walk(r: SpecReader, field_type: str, rng: random.Random, base_dir: Path | None) -> Generator | None:
    """``randomWalk``: bounded random walk; the first reading is ``start``."""
    r.known(("start", "step", "min", "max"))
    r.field_type_in(field_type, NUMERIC_FIELD_TYPES, "numbers")
    precision = r.precision()
    low = r.number("min", required=True)
    high = r.number("max", required=True)
    r.ordered("min", low, "max", high)
    default_step = None if low is None or high is None else (high - low) / 100.0
    step = r.number("step", default_step)
    if r.has("step"):
        r.positive("step", step)
    default_start = None if low is None or high is None else (low + high) / 2.0
    start = r.number("start", default_start)
    r.within("start", start, low, high)
    if not r.ok:
        return None
    assert low is not None and high is not None and step is not None and start is not None
    return RandomWalkGenerator(
        _const(start),
        _const(step),
        low=_const(low),
        high=_const(high),
        rng=rng,
        out=numeric_output(field_type, precision),
    )


# --- choice -----------------------------------------------------------------------------------------------


class UniformChoiceGenerator(Generator):
    """One of the values, all equally likely."""

    __slots__ = ("_count", "_rng", "_values")

    def __init__(self, values: tuple[Any, ...], rng: random.Random) -> None:
        self._values = values
        self._count = len(values)
        self._rng = rng

    def next(self, t: float) -> Any:
        return self._values[int(self._rng.random() * self._count)]


class WeightedChoiceGenerator(Generator):
    """One of the values with probability weight/total (a zero weight is never picked)."""

    __slots__ = ("_cumulative", "_last", "_rng", "_total", "_values")

    def __init__(self, values: tuple[Any, ...], weights: list[float], rng: random.Random) -> None:
        cumulative: list[float] = []
        total = 0.0
        for weight in weights:
            total += weight
            cumulative.append(total)
        self._values = values
        self._cumulative = tuple(cumulative)
        self._total = total
        self._last = max(i for i, weight in enumerate(weights) if weight > 0)
        self._rng = rng

    def next(self, t: float) -> Any:
        index = bisect_right(self._cumulative, self._rng.random() * self._total)
        if index > self._last:  # noqa: PLR1730 - float rounding at the very top of the range; cheaper than min()
            index = self._last
        return self._values[index]


def make_choice(r: SpecReader, field_type: str, rng: random.Random, base_dir: Path | None) -> Generator | None:
    """``choice``: a (weighted) pick among ``values``."""
    r.known(("values", "weights"))
    precision = r.precision()
    values = r.sequence("values", required=True)
    if values is not None and not values:
        r.problem("values", "must not be empty")
    if values:
        for i, value in enumerate(values):
            problem = value_problem(value, field_type)
            if problem:
                r.problem(f"values[{i}]", f"{problem} (field type '{field_type}')")
    weights = _read_weights(r, None if values is None else len(values))
    if not r.ok or field_type not in FIELD_TYPES:
        return None
    assert values is not None
    coerced = tuple(with_precision(coerce_value(v, field_type), field_type, precision) for v in values)
    if weights is None:
        return UniformChoiceGenerator(coerced, rng)
    return WeightedChoiceGenerator(coerced, weights, rng)


def _read_weights(r: SpecReader, count: int | None) -> list[float] | None:
    weights = r.sequence("weights")
    if weights is None:
        return None
    if count is not None and len(weights) != count:
        r.problem("weights", f"must have one weight per value ({count}), got {len(weights)}")
    numbers: list[float] = []
    for i, weight in enumerate(weights):
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight):
            r.problem(f"weights[{i}]", f"must be a number, got {weight!r}")
        elif weight < 0:
            r.problem(f"weights[{i}]", f"must be >= 0, got {weight}")
        else:
            numbers.append(float(weight))
    if weights and len(numbers) == len(weights) and not any(numbers):
        r.problem("weights", "must not all be 0")
    return numbers


# --- battery ----------------------------------------------------------------------------------------------


class BatteryGenerator(Generator):
    """start - drain*t (+ noise), kept within [floor, start]."""

    __slots__ = ("_drain_per_s", "_floor", "_noise", "_out", "_rng", "_start")

    def __init__(
        self,
        start: float,
        drain_per_hour: float,
        *,
        floor: float,
        noise: float,
        rng: random.Random,
        out: Output,
    ) -> None:
        self._start = start
        self._drain_per_s = _const(drain_per_hour / 3600.0)
        self._floor = floor
        self._noise = noise
        self._rng = rng
        self._out = out

    def next(self, t: float) -> Any:
        value = self._start - self._drain_per_s * t
        if self._noise:
            value += self._rng.gauss(0.0, self._noise)
        if value < self._floor:
            value = self._floor
        elif value > self._start:
            value = self._start
        return self._out(value)


def make_battery(r: SpecReader, field_type: str, rng: random.Random, base_dir: Path | None) -> Generator | None:
    """``battery``: linear drain over logical time down to ``floor``."""
    r.known(("start", "drainPerHour", "floor", "noise"))
    r.field_type_in(field_type, NUMERIC_FIELD_TYPES, "numbers")
    precision = r.precision()
    start = r.number("start", 100.0)
    drain = r.number("drainPerHour", 1.0)
    r.non_negative("drainPerHour", drain)
    floor = r.number("floor", 0.0)
    r.ordered("floor", floor, "start", start)
    noise = r.number("noise", 0.0)
    r.non_negative("noise", noise)
    if not r.ok:
        return None
    assert start is not None and drain is not None and floor is not None and noise is not None
    return BatteryGenerator(
        _const(start),
        _const(drain),
        floor=_const(floor),
        noise=_const(noise),
        rng=rng,
        out=numeric_output(field_type, precision),
    )
