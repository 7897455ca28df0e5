"""Field-type rules for values: strict checks for values written in a model, lenient coercion for the rest.

*Strict* (:func:`value_problem`) is for values a model author typed (``constant.value``, ``choice.values``,
inline ``replay.values``): ``"12"`` is not a number there, it is a mistake worth reporting.

*Lenient* (:func:`coerce_value`) is for values that arrive as text (CSV cells, Robot Framework keyword
arguments for overrides): ``"12"`` becomes ``12.0`` for a number field.

:func:`numeric_output` and :func:`output_coercer` return the cheap per-reading converters generators apply.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from functools import cache
from typing import Any

from iotix.errors import ConfigurationError

FIELD_TYPES: tuple[str, ...] = ("number", "integer", "boolean", "string", "binary", "object")
NUMERIC_FIELD_TYPES: tuple[str, ...] = ("number", "integer", "string")

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def show(value: Any) -> str:
    """Render a value from a spec for a message: numbers as written, everything else with repr."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:50]}...({type(value).__name__} of length {_length(value)})"


def _length(value: Any) -> str:
    try:
        return str(len(value))
    except TypeError:
        return "?"


def is_number(value: Any) -> bool:
    """True for a finite int or float (booleans are not numbers here, although Python says they are)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def value_problem(value: Any, field_type: str) -> str | None:
    """Why ``value`` (as written in a model) does not fit ``field_type``, or None if it does."""
    if field_type == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return None
        if isinstance(value, float) and value.is_integer():
            return None
        return f"{show(value)} is not an integer"
    if field_type == "number":
        return None if is_number(value) else f"{show(value)} is not a number"
    if field_type == "boolean":
        return None if isinstance(value, bool) else f"{show(value)} is not a boolean (true or false)"
    if field_type == "string":
        return None if isinstance(value, str) else f"{show(value)} is not a string"
    if field_type == "object":
        return None if isinstance(value, dict) else f"{show(value)} is not an object"
    if field_type == "binary":
        if isinstance(value, (bytes, bytearray)):
            return None
        if isinstance(value, str):
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return f"{show(value)} is not valid base64"
            return None
        return f"{show(value)} is not base64 text"
    return f"unknown field type {field_type!r}"


def coerce_value(value: Any, field_type: str) -> Any:
    """Convert ``value`` to the Python type of ``field_type``, accepting text forms.

    number -> float, integer -> int (rounded), boolean -> bool (``true/false/1/0/yes/no/on/off``),
    string -> str, binary -> bytes (text is read as base64), object -> dict (text is read as JSON).
    Raises :class:`ConfigurationError` when that is not possible.
    """
    converter = _COERCERS.get(field_type)
    if converter is None:
        raise ConfigurationError(f"unknown field type {field_type!r} (expected one of: {', '.join(FIELD_TYPES)})")
    return converter(value)


def _to_number(value: Any) -> float:
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ConfigurationError(f"{value!r} is not a number") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ConfigurationError(f"{show(value)} is not a number")
    if not math.isfinite(number):
        raise ConfigurationError(f"{show(value)} is not a finite number")
    return number


def _to_integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
        try:
            return round(_to_number(value))
        except ConfigurationError:
            raise ConfigurationError(f"{value!r} is not an integer") from None
    return round(_to_number(value))


def _to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ConfigurationError(f"{show(value)} is not a boolean (true/false, 1/0, yes/no, on/off)")


def _to_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    raise ConfigurationError(f"{show(value)} is not a string")


def _to_binary(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(f"{value!r} is not valid base64") from None
    raise ConfigurationError(f"{show(value)} is not binary (bytes or base64 text)")


def _to_object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    raise ConfigurationError(f"{show(value)} is not an object")


_COERCERS: dict[str, Callable[[Any], Any]] = {
    "number": _to_number,
    "integer": _to_integer,
    "boolean": _to_boolean,
    "string": _to_string,
    "binary": _to_binary,
    "object": _to_object,
}


def with_precision(value: Any, field_type: str, precision: int | None) -> Any:
    """Round an already coerced number-field value to ``precision`` decimals (other types unchanged)."""
    if precision is not None and field_type == "number":
        return round(value, precision)
    return value


@cache
def numeric_output(field_type: str, precision: int | None) -> Callable[[float], Any]:
    """The per-reading converter for a generator that computes floats (shared by all generators alike).

    integer -> ``round`` (an int), number -> ``float`` or rounded to ``precision``, string -> the number as
    text (with ``precision`` decimals when given).
    """
    if field_type == "integer":
        return round
    if field_type == "number":
        return float if precision is None else decimal_rounder(precision)
    if field_type == "string":
        if precision is None:
            return str
        fmt = f"{{:.{precision}f}}".format
        return fmt
    raise ConfigurationError(f"a numeric generator cannot produce {field_type!r} values")


def decimal_rounder(digits: int) -> Callable[[float], float]:
    """``value -> value rounded to digits decimals``, as a float.

    ``round(value * 10**digits) / 10**digits`` is several times faster than ``round(value, digits)`` and gives
    the same float except within an ulp of a halfway case (irrelevant for simulated readings). Huge values,
    where the scaling could overflow or lose digits, take the exact path.
    """
    scale = 10.0**digits
    limit = 1e15 / scale

    def rounded(value: float) -> float:
        if -limit < value < limit:
            return round(value * scale) / scale
        return round(float(value), digits)

    rounded.scale = scale  # type: ignore[attr-defined]  # generators whose values stay within limit inline it
    rounded.limit = limit  # type: ignore[attr-defined]
    return rounded


def inline_scale(out: Callable[[float], Any], low: float, high: float) -> float:
    """The ``scale`` of a :func:`decimal_rounder` ``out`` when every value in [low, high] takes its fast path, so a
    generator may round inline (``round(value * scale) / scale``, one call less per reading); else 0.0."""
    scale = getattr(out, "scale", 0.0)
    if scale and max(abs(low), abs(high)) < out.limit:  # type: ignore[attr-defined]
        return float(scale)
    return 0.0


def output_coercer(field_type: str, precision: int | None) -> Callable[[Any], Any]:
    """The per-reading converter for values of unknown type (custom handlers): fast when already right."""
    if field_type == "number":
        if precision is None:
            return _to_number
        digits = precision

        def number(value: Any) -> float:
            return round(_to_number(value), digits)

        return number
    if field_type == "binary":
        return _to_binary
    if field_type == "object":
        return _to_object
    return _COERCERS[field_type]
