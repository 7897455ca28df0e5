"""The ``replay`` generator: values from a CSV column, a JSON list or an inline list, in order.

Files are read once per process and the resulting tuple is shared by every device replaying them (a
module-level cache keyed by resolved path, column, field type and precision, and invalidated when the
file's modification time or size changes). A device only keeps its position.
"""

from __future__ import annotations

import csv
import json
import random
import threading
from pathlib import Path
from typing import Any

from iotix.errors import ConfigurationError
from iotix.generate._spec import SpecReader
from iotix.generate._values import FIELD_TYPES, coerce_value, value_problem, with_precision
from iotix.generate.base import Generator

_CacheKey = tuple[str, "str | None", str, "int | None"]
_cache: dict[_CacheKey, tuple[tuple[int, int], tuple[Any, ...]]] = {}
_cache_lock = threading.Lock()


class ReplayError(ConfigurationError):
    """A data file problem, with the spec key it belongs to (``dataFile`` or ``column``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class ReplayGenerator(Generator):
    """The values in order; at the end start over (``loop``) or hold the last one."""

    __slots__ = ("_index", "_last", "_loop", "values")

    def __init__(self, values: tuple[Any, ...], loop: bool) -> None:
        self.values = values  # shared between devices: never mutate
        self._index = 0
        self._last = len(values) - 1
        self._loop = loop

    def next(self, t: float) -> Any:
        index = self._index
        value = self.values[index]
        if index < self._last:
            self._index = index + 1
        elif self._loop:
            self._index = 0
        return value


def make_replay(r: SpecReader, field_type: str, rng: random.Random, base_dir: Path | None) -> Generator | None:
    """``replay``: ``values`` inline, or ``dataFile`` (+ ``column`` for CSV); ``loop`` (default true)."""
    r.known(("values", "dataFile", "column", "loop"))
    precision = r.precision()
    loop = r.boolean("loop", True)
    if field_type not in FIELD_TYPES:
        r.problem("type", f"unknown field type {field_type!r}")
        return None
    if r.has("values") and r.has("dataFile"):
        r.problem("values", "give either 'values' (an inline list) or 'dataFile', not both")
        return None
    if r.has("values"):
        values = _inline_values(r, field_type, precision)
    elif r.has("dataFile"):
        values = _file_values(r, field_type, precision, base_dir)
    else:
        r.problem("dataFile", "the 'replay' generator needs 'dataFile' (a CSV or JSON file) or 'values' (a list)")
        return None
    if not r.ok or values is None:
        return None
    return ReplayGenerator(values, loop)


def _inline_values(r: SpecReader, field_type: str, precision: int | None) -> tuple[Any, ...] | None:
    if r.has("column"):
        r.problem("column", "only applies to a CSV 'dataFile', not to inline 'values'")
    values = r.sequence("values")
    if values is None:
        return None
    if not values:
        r.problem("values", "must not be empty")
        return None
    for i, value in enumerate(values):
        problem = value_problem(value, field_type)
        if problem:
            r.problem(f"values[{i}]", f"{problem} (field type '{field_type}')")
    if not r.ok:
        return None
    return tuple(with_precision(coerce_value(v, field_type), field_type, precision) for v in values)


def _file_values(
    r: SpecReader, field_type: str, precision: int | None, base_dir: Path | None
) -> tuple[Any, ...] | None:
    name = r.string("dataFile")
    column = r.string("column")
    if name is None:
        return None
    try:
        path = resolve_data_file(name, base_dir)
        if path.suffix.lower() != ".json" and column is None:
            if r.has("column"):
                return None  # malformed column: already reported
            raise ReplayError("column", "is required for a CSV 'dataFile' (the header row names the columns)")
        return load_values(path, column, field_type, precision, display=name)
    except ReplayError as exc:
        r.problem(exc.path, str(exc))
    except OSError as exc:
        r.problem("dataFile", f"cannot read '{name}': {exc.strerror or exc}")
    return None


def resolve_data_file(name: str, base_dir: Path | None) -> Path:
    """The absolute path of data file ``name``, which must stay inside ``base_dir`` (default: the cwd)."""
    root = (base_dir if base_dir is not None else Path.cwd()).resolve()
    candidate = (root / name).resolve()
    if not candidate.is_relative_to(root):
        raise ReplayError("dataFile", f"path '{name}' escapes the model's folder; keep data files under {root}")
    if not candidate.exists():
        raise ReplayError("dataFile", f"file '{name}' not found (looked in {candidate.parent})")
    if not candidate.is_file():
        raise ReplayError("dataFile", f"'{name}' is not a file ({candidate})")
    return candidate


def load_values(
    path: Path,
    column: str | None,
    field_type: str,
    precision: int | None = None,
    *,
    display: str | None = None,
) -> tuple[Any, ...]:
    """The values of ``column`` in CSV ``path`` (or of JSON list ``path``), converted to ``field_type``.

    Cached per process: the same (file, column, type, precision) returns the very same tuple until the file
    changes. Raises :class:`ReplayError` naming the file, line and column of a bad cell.
    """
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    key: _CacheKey = (str(path), column, field_type, precision)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        label = display or path.name
        if path.suffix.lower() == ".json":
            raw = _read_json(path, column, label)
        else:
            assert column is not None
            raw = _read_csv(path, column, label)
        values = tuple(with_precision(v, field_type, precision) for v in _convert(raw, field_type, column, label))
        if not values:
            raise ReplayError("dataFile", f"{label} has no values")
        _cache[key] = (stamp, values)
        return values


def clear_replay_cache() -> None:
    """Forget every loaded data file (tests; a long-lived process that rewrites its data files)."""
    with _cache_lock:
        _cache.clear()


def _read_csv(path: Path, column: str, label: str) -> list[tuple[str, Any]]:
    """(location, cell) pairs of ``column``; location reads like ``line 4``."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ReplayError("dataFile", f"{label} is empty (a CSV data file needs a header row)")
        names = [name.strip() for name in header]
        if column not in names:
            raise ReplayError("column", f"column '{column}' not in {label} (columns: {', '.join(names)})")
        index = names.index(column)
        cells: list[tuple[str, Any]] = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if index >= len(row):
                raise ReplayError("dataFile", f"{label} line {reader.line_num} has no value for column '{column}'")
            cells.append((f"line {reader.line_num}", row[index]))
    return cells


def _read_json(path: Path, column: str | None, label: str) -> list[tuple[str, Any]]:
    """(location, item) pairs of the JSON list (of ``item[column]`` when a column is given)."""
    try:
        with path.open(encoding="utf-8-sig") as handle:
            data = json.load(handle)
    except ValueError as exc:
        raise ReplayError("dataFile", f"{label} is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise ReplayError("dataFile", f"{label} must hold a JSON list, got {type(data).__name__}")
    if column is None:
        return [(f"item {i}", item) for i, item in enumerate(data)]
    items: list[tuple[str, Any]] = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or column not in item:
            raise ReplayError("column", f"{label} item {i} has no key '{column}'")
        items.append((f"item {i}", item[column]))
    return items


def _convert(raw: list[tuple[str, Any]], field_type: str, column: str | None, label: str) -> list[Any]:
    where = "" if column is None else f", column '{column}'"
    values = []
    for location, value in raw:
        try:
            values.append(coerce_value(value, field_type))
        except ConfigurationError as exc:
            raise ReplayError("dataFile", f"{label} {location}{where}: {exc}") from None
    return values
