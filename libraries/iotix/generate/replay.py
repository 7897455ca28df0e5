"""The ``replay`` generator: values from a CSV column, a JSON list or an inline list, in order.

Files are read once per process and the resulting tuple is shared by every device replaying them (a
module-level cache keyed by resolved path, column, field type and precision, and invalidated when the
file's modification time or size changes). A device only keeps its position.

Where a ``dataFile`` may lie: under the model's folder, or under a *data root* the user names
(``IOTIX_DATA_PATH``, folders separated by ``os.pathsep``, and ``data_dir=`` of ``Load Device Models``). The
path is resolved first (``..`` and symlinks), so nothing escapes every root. An absolute ``dataFile`` outside
every root (the iotix deployment's ``/data/historical/...``) does not stop a model from loading: it is
checked when a fleet is created (:func:`build_generator`), and refused then unless it lies under a root.
"""

from __future__ import annotations

import csv
import json
import os
import random
import threading
from collections.abc import Iterable
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


#: Environment variable naming data roots: folders (separated by ``os.pathsep``) replay data files may lie under.
DATA_PATH_ENV = "IOTIX_DATA_PATH"


class OutsideDataRoots(ReplayError):
    """A data file outside the model's folder and every data root."""


def env_data_roots() -> tuple[Path, ...]:
    """The data roots ``IOTIX_DATA_PATH`` names (empty entries skipped, ``~`` expanded)."""
    raw = os.environ.get(DATA_PATH_ENV, "")
    return tuple(Path(entry.strip()).expanduser() for entry in raw.split(os.pathsep) if entry.strip())


def data_roots(extra: Iterable[str | Path] = ()) -> tuple[Path, ...]:
    """``extra`` roots (e.g. ``data_dir=``) followed by those of ``IOTIX_DATA_PATH``, without repeats."""
    roots = [Path(root).expanduser() for root in extra]
    roots += env_data_roots()
    return tuple(dict.fromkeys(roots))


class PendingReplay(Generator):
    """Stands in, while a model is checked, for a replay whose absolute ``dataFile`` lies outside every data
    root: the file is checked when a fleet is created. Never sends: ``next`` raises the reason."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def next(self, t: float) -> Any:
        raise ConfigurationError(self.reason)


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


def make_replay(
    r: SpecReader,
    field_type: str,
    rng: random.Random,
    base_dir: Path | None,
    *,
    roots: Iterable[Path] = (),
    defer_outside: bool = False,
) -> Generator | None:
    """``replay``: ``values`` inline, or ``dataFile`` (+ ``column`` for CSV); ``loop`` (default true).

    ``roots`` are the data roots besides ``base_dir`` (see the module docstring). With ``defer_outside``
    (model checks), an absolute ``dataFile`` outside every root gives a :class:`PendingReplay` instead of a
    problem.
    """
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
        try:
            values = _file_values(r, field_type, precision, base_dir, tuple(roots))
        except OutsideDataRoots as exc:
            if defer_outside and Path(str(r.spec["dataFile"])).is_absolute():
                return PendingReplay(str(exc))
            r.problem(exc.path, str(exc))
            return None
        except ReplayError as exc:
            r.problem(exc.path, str(exc))
            return None
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
    r: SpecReader, field_type: str, precision: int | None, base_dir: Path | None, roots: tuple[Path, ...]
) -> tuple[Any, ...] | None:
    """The values of the data file; raises :class:`OutsideDataRoots` (other problems are recorded)."""
    name = r.string("dataFile")
    column = r.string("column")
    if name is None:
        return None
    if Path(name).suffix.lower() != ".json" and column is None:
        if not r.has("column"):  # else a malformed column, already reported
            r.problem("column", "is required for a CSV 'dataFile' (the header row names the columns)")
        return None
    path = resolve_data_file(name, base_dir, roots)
    try:
        return load_values(path, column, field_type, precision, display=name)
    except ReplayError as exc:
        r.problem(exc.path, str(exc))
    except OSError as exc:
        r.problem("dataFile", f"cannot read '{name}': {exc.strerror or exc}")
    return None


def resolve_data_file(name: str, base_dir: Path | None, roots: Iterable[Path] = ()) -> Path:
    """The absolute path of data file ``name`` (relative to ``base_dir``, default the cwd).

    After resolving ``..`` and symlinks it must lie under ``base_dir`` or one of ``roots``: otherwise
    :class:`OutsideDataRoots` says how to allow it. A missing file or a folder is a :class:`ReplayError`.
    """
    home = (base_dir if base_dir is not None else Path.cwd()).resolve()
    allowed = [home, *(Path(root).expanduser().resolve() for root in roots)]
    try:
        candidate = (home / name).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise ReplayError("dataFile", f"cannot resolve '{name}': {exc}") from None
    if not any(candidate.is_relative_to(root) for root in allowed):
        raise OutsideDataRoots("dataFile", _outside_message(name, candidate, home, allowed[1:]))
    if not candidate.exists():
        raise ReplayError("dataFile", f"file '{name}' not found (looked in {candidate.parent})")
    if not candidate.is_file():
        raise ReplayError("dataFile", f"'{name}' is not a file ({candidate})")
    return candidate


def _outside_message(name: str, candidate: Path, home: Path, roots: list[Path]) -> str:
    literal = Path(os.path.normpath(home / name))
    via = f" (it resolves to {candidate})" if literal != candidate else ""
    listing = ", ".join(f"{root}{'' if root.is_dir() else ' (missing)'}" for root in roots) or "none"
    allow = (
        f"add the folder to {DATA_PATH_ENV} (folders separated by '{os.pathsep}') or pass it as data_dir= to "
        f"Load Device Models (--data-dir of iotix validate and sample); data roots now: {listing}"
    )
    if not Path(name).is_absolute():
        return f"path '{name}'{via} escapes the model's folder; keep data files under {home}, or {allow}"
    return (
        f"path '{name}'{via} is outside the model's folder ({home}) and every data root: to allow it, {allow}; "
        "or point dataFile at a file in the model's folder (IoTix ships models/data/sensor-readings.csv)"
    )


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
