"""Reading generator parameters while collecting problems instead of raising.

Every generator factory reads its spec through a :class:`SpecReader`. The same code then serves
``check_generator`` (which returns the problems) and ``build_generator`` (which raises them), so the checks
and the generators cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from iotix.generate._values import is_number, show

# Keys every generator accepts besides its own parameters.
COMMON_KEYS = frozenset({"type", "precision", "description"})

Problem = tuple[str, str]


class SpecReader:
    """Typed access to one generator spec; wrong or missing values are recorded as (path, message)."""

    __slots__ = ("gen_type", "problems", "spec")

    def __init__(self, spec: dict[str, Any], gen_type: str) -> None:
        self.spec = spec
        self.gen_type = gen_type
        self.problems: list[Problem] = []

    @property
    def ok(self) -> bool:
        """True while no problem has been recorded."""
        return not self.problems

    def problem(self, path: str, message: str) -> None:
        """Record a problem at ``path`` (relative to the generator spec)."""
        self.problems.append((path, message))

    def has(self, key: str) -> bool:
        """True if the spec gives ``key`` (a null value counts as not given)."""
        return self.spec.get(key) is not None

    def known(self, keys: Collection[str]) -> None:
        """Report every key that is neither common nor in ``keys`` (typos must not pass silently)."""
        allowed = COMMON_KEYS | set(keys)
        for key in self.spec:
            if key not in allowed:
                names = ", ".join(sorted(allowed - {"type"}))
                self.problem(str(key), f"unknown parameter for the '{self.gen_type}' generator (known: {names})")

    def field_type_in(self, field_type: str, allowed: Collection[str], produces: str) -> bool:
        """Report (at ``type``) a field type this generator cannot feed; True if it can."""
        if field_type in allowed:
            return True
        self.problem(
            "type",
            f"the '{self.gen_type}' generator produces {produces}; it cannot feed a '{field_type}' field "
            f"(use it for: {', '.join(allowed)})",
        )
        return False

    def number(self, key: str, default: float | None = None, *, required: bool = False) -> float | None:
        """A finite number (int or float, not bool), ``default`` when absent."""
        value = self.spec.get(key)
        if value is None:
            if required:
                self.problem(key, f"is required for the '{self.gen_type}' generator")
            return default
        if not is_number(value):
            self.problem(key, f"must be a number, got {show(value)}")
            return default
        return value

    def integer(self, key: str, default: int | None = None, *, required: bool = False) -> int | None:
        """An integer (a float with no fraction is accepted), ``default`` when absent."""
        value = self.spec.get(key)
        if value is None:
            if required:
                self.problem(key, f"is required for the '{self.gen_type}' generator")
            return default
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            self.problem(key, f"must be an integer, got {show(value)}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """A boolean, ``default`` when absent."""
        value = self.spec.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(key, f"must be true or false, got {show(value)}")
            return default
        return value

    def string(self, key: str, *, required: bool = False) -> str | None:
        """A non-empty string, None when absent."""
        value = self.spec.get(key)
        if value is None:
            if required:
                self.problem(key, f"is required for the '{self.gen_type}' generator")
            return None
        if not isinstance(value, str) or not value:
            self.problem(key, f"must be a non-empty string, got {show(value)}")
            return None
        return value

    def sequence(self, key: str, *, required: bool = False) -> list[Any] | None:
        """A list, None when absent."""
        value = self.spec.get(key)
        if value is None:
            if required:
                self.problem(key, f"is required for the '{self.gen_type}' generator")
            return None
        if not isinstance(value, list):
            self.problem(key, f"must be a list, got {show(value)}")
            return None
        return value

    def mapping(self, key: str) -> dict[str, Any] | None:
        """An object (dict), None when absent."""
        value = self.spec.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.problem(key, f"must be an object, got {show(value)}")
            return None
        return value

    def precision(self) -> int | None:
        """The optional ``precision`` (decimals to round to, 0..15)."""
        value = self.integer("precision")
        if value is not None and not 0 <= value <= 15:
            self.problem("precision", f"must be between 0 and 15, got {value}")
            return None
        return value

    # Relations between values -------------------------------------------------------------------------

    def ordered(self, low_key: str, low: float | None, high_key: str, high: float | None) -> bool:
        """Report ``high < low`` at ``high_key``; True when the pair is fine (or incomplete)."""
        if low is not None and high is not None and high < low:
            self.problem(high_key, f"must be >= {low_key} ({show(low)}), got {show(high)}")
            return False
        return True

    def positive(self, key: str, value: float | None) -> bool:
        """Report ``value <= 0``."""
        if value is not None and value <= 0:
            self.problem(key, f"must be > 0, got {show(value)}")
            return False
        return True

    def non_negative(self, key: str, value: float | None) -> bool:
        """Report ``value < 0``."""
        if value is not None and value < 0:
            self.problem(key, f"must be >= 0, got {show(value)}")
            return False
        return True

    def within(self, key: str, value: float | None, low: float | None, high: float | None) -> bool:
        """Report a ``value`` outside [low, high] (either bound may be missing)."""
        if value is None:
            return True
        if (low is not None and value < low) or (high is not None and value > high):
            lo = "-inf" if low is None else show(low)
            hi = "inf" if high is None else show(high)
            self.problem(key, f"must be within [min, max] = [{lo}, {hi}], got {show(value)}")
            return False
        return True
