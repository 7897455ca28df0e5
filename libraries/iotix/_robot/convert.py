"""Small conversions shared by the keyword libraries."""

from __future__ import annotations

from datetime import timedelta


def seconds(value: timedelta | float | int) -> float:
    """A Robot duration (already converted to timedelta) or a number as float seconds."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)
