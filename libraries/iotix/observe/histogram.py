"""A small log-linear histogram for latencies (HDR-like, fixed memory, O(1) record)."""

from __future__ import annotations

import math

# Values are recorded in microseconds. Buckets: exact below 64 us, then 32 sub-buckets per power of two,
# i.e. a relative error below ~3 %, up to 2**40 us (12 days): 64 + 34 * 32 = 1,152 counters.
_SUB = 32
_SUB_BITS = 5
_LINEAR = 64
_MAX_EXP = 40


def _index(us: int) -> int:
    if us < _LINEAR:
        return max(us, 0)
    exp = us.bit_length() - 1  # >= 6
    if exp >= _MAX_EXP:
        return _LINEAR + (_MAX_EXP - 6) * _SUB - 1
    sub = (us >> (exp - _SUB_BITS)) & (_SUB - 1)
    return _LINEAR + (exp - 6) * _SUB + sub


def _value(index: int) -> float:
    """The midpoint (in microseconds) of bucket ``index``."""
    if index < _LINEAR:
        return float(index)
    exp = (index - _LINEAR) // _SUB + 6
    sub = (index - _LINEAR) % _SUB
    low = (1 << exp) + (sub << (exp - _SUB_BITS))
    width = 1 << (exp - _SUB_BITS)
    return low + width / 2


class Histogram:
    """Counts of values (seconds) in log-linear buckets; percentiles within ~3 %."""

    __slots__ = ("_counts", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._counts = [0] * (_LINEAR + (_MAX_EXP - 6) * _SUB)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def record(self, seconds: float) -> None:
        us = int(seconds * 1_000_000)
        if us < _LINEAR:
            index = us if us > 0 else 0
        else:
            exp = us.bit_length() - 1
            index = (
                _LINEAR + (exp - 6) * _SUB + ((us >> (exp - _SUB_BITS)) & (_SUB - 1))
                if exp < _MAX_EXP
                else len(self._counts) - 1
            )
        self._counts[index] += 1
        self.count += 1
        self.total += seconds
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)

    def merge(self, other: Histogram) -> None:
        counts = self._counts
        for i, c in enumerate(other._counts):
            if c:
                counts[i] += c
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> float | None:
        """The value (seconds) below which ``p`` percent of the recorded values lie; None when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * p / 100.0))
        seen = 0
        for i, c in enumerate(self._counts):
            seen += c
            if seen >= rank:
                return min(max(_value(i) / 1_000_000, self.min), self.max)
        return self.max

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def summary(self) -> dict[str, float | int | None]:
        """count, min, mean, p50, p90, p99, max in milliseconds (None when empty)."""

        def ms(v: float | None) -> float | None:
            return None if v is None or math.isinf(v) else round(v * 1000, 3)

        return {
            "count": self.count,
            "min": ms(self.min if self.count else None),
            "mean": ms(self.mean),
            "p50": ms(self.percentile(50)),
            "p90": ms(self.percentile(90)),
            "p99": ms(self.percentile(99)),
            "max": ms(self.max if self.count else None),
        }
