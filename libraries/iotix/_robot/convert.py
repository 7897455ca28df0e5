"""Small conversions shared by the keyword libraries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def seconds(value: timedelta | float | int) -> float:
    """A Robot duration (already converted to timedelta) or a number as float seconds."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def neutralise_cell(value: Any) -> Any:
    """Make a CSV cell safe to open in a spreadsheet: text that would run as a formula gets a leading '."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value
