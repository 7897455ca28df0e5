"""Latency histograms: HdrHistogram (the ``hdrhistogram`` package) behind the small API IoTix uses.

Values go in as seconds and are kept in microseconds from 1 µs to one hour with two significant digits (a
relative error below 1 %): 3,328 counters, 26 KB per histogram. Histograms of the same layout merge exactly,
so per-interval histograms add up to the cumulative one and the histograms of several processes (shards)
add up to the fleet's; :meth:`Histogram.encode` gives HdrHistogram's compressed, portable form.

:meth:`Histogram.record_corrected` corrects for coordinated omission: a send that ran ``d`` seconds late on a
schedule of one every ``interval`` seconds also records the ``d - interval``, ``d - 2 * interval``, ... that
the sends skipped during the stall would have shown, so a device stalled for 2 s shows 2 s (and 1 s) rather
than one late sample among many punctual ones.
"""

from __future__ import annotations

import math
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 2
PERCENTILES = (50.0, 90.0, 99.0)
#: The most samples one corrected recording adds for a stall (see Histogram.record_corrected).
MAX_CORRECTIONS = 1000


class Histogram:
    """Latencies (seconds in, milliseconds in :meth:`summary`) in an HdrHistogram; record is O(1)."""

    __slots__ = ("_h",)

    def __init__(self, hdr: HdrHistogram | None = None) -> None:
        self._h = hdr if hdr is not None else HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    # -- recording ----------------------------------------------------------------------------------------

    def record(self, seconds: float) -> None:
        us = int(seconds * 1_000_000)
        self._h.record_value(0 if us < 0 else us if us < HIGHEST_US else HIGHEST_US)

    def record_corrected(self, seconds: float, expected_interval_s: float) -> None:
        """Record ``seconds`` and, when it exceeds ``expected_interval_s``, the samples a stall swallowed.

        At most :data:`MAX_CORRECTIONS` are added (a 60 s stall on a 10 ms schedule would be 6,000 calls on the
        loop): beyond that they are spread evenly over the stall, each standing for several."""
        self.record_corrected_us(int(seconds * 1_000_000), int(expected_interval_s * 1_000_000))

    def record_corrected_us(self, us: int, interval_us: int, count: int = 1) -> None:
        """:meth:`record_corrected` in whole microseconds, ``count`` times (a batch of equal values at once)."""
        us = 0 if us < 0 else us if us < HIGHEST_US else HIGHEST_US
        if us <= interval_us or interval_us <= 0:
            self._h.record_value(us, count)
            return
        steps = us // interval_us
        if steps <= MAX_CORRECTIONS:
            self._h.record_corrected_value(us, interval_us, count)
            return
        per = steps // MAX_CORRECTIONS  # each recorded sample stands for ``per`` swallowed sends
        self._h.record_value(us, count)
        value = us - per * interval_us
        while value >= interval_us:
            self._h.record_value(value, per * count)
            value -= per * interval_us

    def merge(self, other: Histogram | LatencyRecorder) -> None:
        if isinstance(other, LatencyRecorder):
            other = other.cumulative()
        if other._h.total_count:
            self._h.add(other._h)

    def reset(self) -> None:
        self._h.reset()

    def copy(self) -> Histogram:
        clone = Histogram()
        clone.merge(self)
        return clone

    # -- reading ------------------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return int(self._h.total_count)

    @property
    def min(self) -> float:
        """Smallest value (seconds); +inf when empty."""
        return self._h.get_min_value() / 1_000_000 if self._h.total_count else math.inf

    @property
    def max(self) -> float:
        """Largest value (seconds, HdrHistogram's highest equivalent value); -inf when empty."""
        return self._h.get_max_value() / 1_000_000 if self._h.total_count else -math.inf

    @property
    def mean(self) -> float | None:
        return self._h.get_mean_value() / 1_000_000 if self._h.total_count else None

    def percentile(self, p: float) -> float | None:
        """The value (seconds) at or below which ``p`` percent of the recorded values lie; None when empty."""
        if not self._h.total_count:
            return None
        return float(self._h.get_value_at_percentile(p)) / 1_000_000

    def percentiles(self, ps: tuple[float, ...] = PERCENTILES) -> dict[float, float]:
        """Several percentiles (seconds) in one pass; empty dict when empty."""
        if not self._h.total_count:
            return {}
        return {p: v / 1_000_000 for p, v in self._h.get_percentile_to_value_dict(list(ps)).items()}

    def summary(self) -> dict[str, float | int | None]:
        """count, min, mean, p50, p90, p99, max in milliseconds (None when empty)."""
        if not self._h.total_count:
            return {"count": 0, "min": None, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
        pct = self.percentiles()
        return {
            "count": self.count,
            "min": _ms(self.min),
            "mean": _ms(self.mean),
            "p50": _ms(pct[50.0]),
            "p90": _ms(pct[90.0]),
            "p99": _ms(pct[99.0]),
            "max": _ms(self.max),
        }

    def brief(self) -> dict[str, Any] | None:
        """count, p50, p90, p99, max in milliseconds; None when empty (a time-series row's latency)."""
        if not self._h.total_count:
            return None
        pct = self.percentiles()
        return {
            "count": self.count,
            "p50": _ms(pct[50.0]),
            "p90": _ms(pct[90.0]),
            "p99": _ms(pct[99.0]),
            "max": _ms(self.max),
        }

    # -- exchange ------------------------------------------------------------------------------------------

    def encode(self) -> str:
        """HdrHistogram's compressed base64 form (V2 encoding), to store or to send to another process."""
        encoded = self._h.encode()
        return encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded)

    @classmethod
    def decode(cls, encoded: str | bytes) -> Histogram:
        return cls(HdrHistogram.decode(encoded))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or math.isinf(seconds) else round(seconds * 1000, 3)


class LatencyRecorder:
    """A cumulative histogram plus the one of the current interval (HdrHistogram's interval recorder idea).

    Values go into :attr:`interval`; :meth:`take_interval` hands that histogram over (for a time-series row)
    and folds it into the total. :meth:`cumulative` is everything recorded so far.
    """

    __slots__ = ("_total", "interval")

    def __init__(self) -> None:
        self.interval = Histogram()
        self._total = Histogram()

    def record(self, seconds: float) -> None:
        self.interval.record(seconds)

    def record_corrected(self, seconds: float, expected_interval_s: float) -> None:
        self.interval.record_corrected(seconds, expected_interval_s)

    def record_corrected_us(self, us: int, interval_us: int, count: int = 1) -> None:
        self.interval.record_corrected_us(us, interval_us, count)

    def take_interval(self) -> Histogram:
        """The histogram of the interval that ends now (a fresh one starts); it is added to the total."""
        done = self.interval
        self.interval = Histogram()
        self._total.merge(done)
        return done

    def cumulative(self) -> Histogram:
        merged = self._total.copy()
        merged.merge(self.interval)
        return merged

    # The reading side of the Histogram API, over everything recorded (for callers that want totals).
    @property
    def count(self) -> int:
        return self._total.count + self.interval.count

    def __getattr__(self, name: str) -> Any:
        if name in _READERS:
            return getattr(self.cumulative(), name)
        raise AttributeError(name)


#: What a LatencyRecorder answers from its cumulative histogram.
_READERS = frozenset({"min", "max", "mean", "percentile", "percentiles", "summary", "brief", "encode"})
