"""JSON Schema validation of model data, with each error turned into a readable ``(path, message)``.

jsonschema's own messages (``'x' is not valid under any of the given schemas``) are written for schema
authors; model authors want the JSON path of the offending value, what was expected and what they wrote.
The schema may carry two non-standard keywords that VS Code also understands: ``patternErrorMessage``
(used for ``pattern`` failures) and ``errorMessage`` (used here for ``required``, ``anyOf`` and ``oneOf``
failures of the schema object that carries it, e.g. "required for protocol 'http'").
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from iotix.model.errors import ROOT, Problem

SCHEMA_FILE = "device-model.schema.json"

PathParts = tuple[str | int, ...]

_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true or false)",
    "object": "an object (mapping)",
    "array": "a list",
    "null": "null",
}


@cache
def shipped_schema(file: str) -> dict[str, Any]:
    """A JSON Schema shipped with the package (``model/schema/<file>``)."""
    text = resources.files("iotix.model").joinpath("schema", file).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def validator_for(file: str) -> Draft202012Validator:
    """A validator of the shipped JSON Schema ``file``, made once."""
    return Draft202012Validator(shipped_schema(file))


def schema() -> dict[str, Any]:
    """The device model JSON Schema shipped with the package."""
    return shipped_schema(SCHEMA_FILE)


# --------------------------------------------------------------------------------------------------
# Paths and values in messages
# --------------------------------------------------------------------------------------------------


def format_path(parts: Iterable[str | int]) -> str:
    """``("telemetry", 2, "generator", "max")`` -> ``telemetry[2].generator.max``; empty -> ``(root)``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.replace("_", "").replace("-", "").replace("$", "").isalnum():
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text or ROOT


def show(value: Any, limit: int = 60) -> str:
    """A value as the model author would recognise it: JSON-like, strings quoted, shortened."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 4] + "...'"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    return f"{type(value).__name__} {value!s:.{limit}}"


def kind(value: Any) -> str:
    """JSON type name of a value (``date`` and friends for YAML-only types)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _got(value: Any) -> str:
    """``string '5000'``, ``5``, ``an object``: what the author wrote, with its type when useful."""
    if isinstance(value, (dict, list)) or value is None:
        return show(value)
    return f"{kind(value)} {show(value)}"


def _yaml_quote_hint(expected_strings: bool, value: Any) -> str:
    """Hint for YAML's implicit typing: ``off`` is a boolean and ``1.2`` a number unless quoted."""
    if not expected_strings:
        return ""
    if isinstance(value, bool):
        return " (quote it: in YAML, unquoted yes/no/on/off/true/false are booleans)"
    if isinstance(value, (int, float)):
        return " (quote it: in YAML, an unquoted 5 or 1.2 is a number)"
    return ""


def _did_you_mean(word: Any, choices: Sequence[str]) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


def _sort_key(parts: Sequence[str | int]) -> tuple[tuple[int, str | int], ...]:
    return tuple((0, p) if isinstance(p, int) else (1, p) for p in parts)


# --------------------------------------------------------------------------------------------------
# One message per jsonschema keyword
# --------------------------------------------------------------------------------------------------


def _type_message(error: ValidationError) -> str:
    expected = error.validator_value
    names = [expected] if isinstance(expected, str) else list(expected)
    wanted = " or ".join(_TYPE_NAMES.get(name, name) for name in names)
    hint = _yaml_quote_hint(names == ["string"], error.instance)
    return f"expected {wanted}, got {_got(error.instance)}{hint}"


def _enum_message(error: ValidationError, parts: PathParts) -> str:
    options = list(error.validator_value)
    all_strings = all(isinstance(o, str) for o in options)
    listing = ", ".join(o if all_strings else show(o) for o in options)
    suggestion = _did_you_mean(error.instance, [o for o in options if isinstance(o, str)])
    hint = _yaml_quote_hint(all_strings, error.instance)
    if len(parts) >= 2 and parts[-2:] == ("generator", "type"):
        return f"unknown generator type {show(error.instance)} ({suggestion}expected one of: {listing})"
    if parts == ("protocol",):
        return f"unknown protocol {show(error.instance)} ({suggestion}expected one of: {listing})"
    return f"expected one of: {listing}; got {show(error.instance)}{hint}" + (
        f" ({suggestion.strip()})" if suggestion else ""
    )


def _bound_message(error: ValidationError) -> str:
    ops = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    return f"must be {ops[str(error.validator)]} {show(error.validator_value)}, got {show(error.instance)}"


def _items_message(error: ValidationError) -> str:
    limit = error.validator_value
    count = len(error.instance)
    word = "item" if limit == 1 else "items"
    bound = "at least" if error.validator == "minItems" else "at most"
    return f"must have {bound} {limit} {word}, got {count}"


def _length_message(error: ValidationError) -> str:
    if error.validator == "minLength" and error.validator_value == 1:
        return "must not be empty"
    bound = "at least" if error.validator == "minLength" else "at most"
    return f"must be {bound} {error.validator_value} characters long, got {len(error.instance)}"


def _pattern_message(error: ValidationError) -> str:
    custom = error.schema.get("patternErrorMessage") if isinstance(error.schema, dict) else None
    expected = custom or f"must match the pattern {error.validator_value}"
    return f"{expected}, got {show(error.instance)}"


def _custom_message(error: ValidationError) -> str | None:
    return error.schema.get("errorMessage") if isinstance(error.schema, dict) else None


def _required_problems(error: ValidationError, parts: PathParts) -> list[tuple[PathParts, str]]:
    message = _custom_message(error) or "required, but missing"
    instance = error.instance if isinstance(error.instance, dict) else {}
    return [((*parts, key), message) for key in error.validator_value if key not in instance]


def _additional_problems(error: ValidationError, parts: PathParts) -> list[tuple[PathParts, str]]:
    allowed = list(error.schema.get("properties", {})) if isinstance(error.schema, dict) else []
    listing = ", ".join(allowed)
    where = "top-level key" if not parts else "key"
    problems = []
    for key in error.instance:
        if key in allowed:
            continue
        suggestion = _did_you_mean(key, allowed)
        problems.append(((*parts, key), f"unknown {where} {show(key)} ({suggestion}allowed: {listing})"))
    return problems


def _combinator_message(error: ValidationError, parts: PathParts) -> list[tuple[PathParts, str]]:
    custom = _custom_message(error)
    if custom:
        return [(parts, custom)]
    best = best_match(error.context or [])
    if best is None:
        return [(parts, error.message)]
    return _convert(best)


def _convert(error: ValidationError) -> list[tuple[PathParts, str]]:
    """The problems one jsonschema error stands for (``required`` and ``additionalProperties`` errors
    may name several keys)."""
    parts: PathParts = tuple(error.absolute_path)
    keyword = error.validator
    if keyword == "required":
        return _required_problems(error, parts)
    if keyword == "additionalProperties":
        return _additional_problems(error, parts)
    if keyword in ("anyOf", "oneOf"):
        return _combinator_message(error, parts)
    if keyword == "type":
        return [(parts, _type_message(error))]
    if keyword == "enum":
        return [(parts, _enum_message(error, parts))]
    if keyword == "const":
        return [(parts, f"expected {show(error.validator_value)}, got {show(error.instance)}")]
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return [(parts, _bound_message(error))]
    if keyword in ("minItems", "maxItems"):
        return [(parts, _items_message(error))]
    if keyword in ("minLength", "maxLength"):
        return [(parts, _length_message(error))]
    if keyword == "pattern":
        return [(parts, _pattern_message(error))]
    return [(parts, error.message)]


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def schema_problems(data: Any, validator: Draft202012Validator | None = None) -> list[tuple[PathParts, str]]:
    """Every schema violation in ``data`` as ``(path parts, message)``, in document-path order, without
    duplicates. ``validator`` checks against another schema (scenario files); default: the device model's."""
    errors = sorted(
        (validator or validator_for(SCHEMA_FILE)).iter_errors(data), key=lambda e: _sort_key(tuple(e.absolute_path))
    )
    return list(dict.fromkeys(problem for error in errors for problem in _convert(error)))


def as_problems(problems: Iterable[tuple[PathParts, str]]) -> Iterator[Problem]:
    """``(path parts, message)`` -> ``(path string, message)``."""
    for parts, message in problems:
        yield format_path(parts), message
