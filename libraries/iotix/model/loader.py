"""Loading device models from JSON/YAML files, validating them, and keeping them in a registry.

* :func:`load_model` reads one file, :func:`load_models` a file or a folder tree, :func:`load_model_dict`
  validates data already in memory.
* Validation is the JSON Schema first (every error, as a readable path + message), then the semantic checks
  of :mod:`iotix.model.checks`. All problems of a file are reported together in one :class:`ModelError`;
  no failure ever escapes as a bare traceback.
* YAML is read with ``yaml.safe_load`` only: tags such as ``!!python/object`` are rejected, never run.
  Anchors and aliases (``&name``/``*name``) may reuse parts of a file, but a file whose aliases would add
  more than :data:`MAX_ALIAS_EXPANSION` values when expanded (an alias bomb) is refused.
* :func:`default_model_path` is where models are read from when no path is given: ``DEVICE_MODEL_PATH``
  (the iotix convention), else ``models/``.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from iotix.generate.replay import OutsideDataRoots, ReplayError, data_roots, resolve_data_file
from iotix.model.checks import semantic_problems
from iotix.model.errors import (
    ROOT,
    ModelCollectionError,
    ModelError,
    ModelNotFoundError,
    Problem,
    UnknownModelError,
)
from iotix.model.schema_errors import as_problems, kind, schema_problems
from iotix.model.types import BehaviorSpec, CommandSpec, DeviceModel, PayloadSpec, TelemetryField

__all__ = [
    "MAX_ALIAS_EXPANSION",
    "MODEL_PATH_ENV",
    "MODEL_SUFFIXES",
    "SKIPPED_DIRECTORIES",
    "ModelRegistry",
    "default_model_path",
    "load_model",
    "load_model_dict",
    "load_models",
    "model_files",
    "pending_data_files",
    "validate_model_dict",
]

#: File name endings read as models.
MODEL_SUFFIXES: tuple[str, ...] = (".json", ".yaml", ".yml")
#: Folders :func:`load_models` does not descend into (the schema copy, data files for replay and scenario
#: files, see :mod:`iotix.model.scenario`). Folders whose name starts with ``.`` or ``_`` are skipped too.
SKIPPED_DIRECTORIES: frozenset[str] = frozenset({"schema", "data", "scenarios"})

#: Values (YAML nodes) that aliases may add to a file when expanded, in all. Plain reuse of a generator or a
#: connection block stays far below it; a 9-level alias bomb (9 aliases per level) adds 387 million.
MAX_ALIAS_EXPANSION = 10_000
#: Environment variable naming the models folder (or file) used when no path is given (the iotix convention).
MODEL_PATH_ENV = "DEVICE_MODEL_PATH"
#: Where models are read from when no path is given and ``DEVICE_MODEL_PATH`` is not set (relative to the cwd).
DEFAULT_MODEL_PATH = Path("models")

_TAG_RE = re.compile(r"tag '([^']*)'")


def default_model_path() -> Path:
    """``DEVICE_MODEL_PATH`` when set (and not empty), else ``models`` (relative to the working directory)."""
    value = os.environ.get(MODEL_PATH_ENV, "").strip()
    return Path(value).expanduser() if value else DEFAULT_MODEL_PATH


def missing_default_path_message() -> str:
    """What to say when no path was given and :func:`default_model_path` does not exist."""
    if os.environ.get(MODEL_PATH_ENV, "").strip():
        return f"no such file or folder (named by {MODEL_PATH_ENV}, read because no path was given)"
    return (
        f"no such file or folder (no path was given and {MODEL_PATH_ENV} is not set, so models are read from "
        f"'{DEFAULT_MODEL_PATH}' in the working directory {Path.cwd()}): give a path or set {MODEL_PATH_ENV}"
    )


# --------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    if not path.exists():
        raise ModelNotFoundError(path, [(ROOT, "file not found")])
    if not path.is_file():
        raise ModelError(path, [(ROOT, "not a file")])
    if path.suffix.lower() not in MODEL_SUFFIXES:
        expected = ", ".join(MODEL_SUFFIXES)
        raise ModelError(path, [(ROOT, f"unsupported file type {path.suffix!r} (expected {expected})")])
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ModelError(path, [(ROOT, f"not UTF-8 text (invalid byte at offset {err.start})")]) from None
    except OSError as err:
        raise ModelError(path, [(ROOT, f"cannot read the file: {err.strerror or err}")]) from None


def _parse_yaml(text: str, path: Path) -> Any:
    """``yaml.safe_load`` in two steps, so the node graph is checked for an alias bomb before it is built."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problem = _alias_problem(node)
        if problem:
            raise ModelError(path, [(ROOT, problem)])
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ModelError(path, [(ROOT, _yaml_message(err))]) from None
    except RecursionError:
        raise ModelError(path, [(ROOT, "YAML nested too deeply (lists or mappings hundreds of levels deep)")]) from None
    finally:
        loader.dispose()


def _alias_problem(root: yaml.Node) -> str | None:
    """Why the aliases of this YAML node graph are refused, or None.

    An alias is the anchored node itself, shared: the graph stays small however often it is used, but
    anything that serialises the data (a report, a copy written as JSON) expands every alias. The expanded
    size is counted without expanding (once per distinct node), and a self-referencing alias is refused.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _RecursiveAlias(node)
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(key_node) + size(value_node) for key_node, value_node in node.value)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    try:
        expanded = size(root)
    except _RecursiveAlias as err:
        mark = err.node.start_mark
        return (
            f"YAML anchor at line {mark.line + 1}, column {mark.column + 1} contains an alias of itself: "
            "recursive data is not accepted"
        )
    added = expanded - len(sizes)
    if added <= MAX_ALIAS_EXPANSION:
        return None
    return (
        f"YAML aliases (*name) would add {added:,} values to the {len(sizes):,} written in the file when "
        f"expanded (an alias bomb?): a model may reuse parts with &anchor and *alias, but aliases may add at "
        f"most {MAX_ALIAS_EXPANSION:,} values in all; write the data out instead"
    )


class _RecursiveAlias(Exception):
    def __init__(self, node: yaml.Node) -> None:
        super().__init__()
        self.node = node


def _yaml_message(err: yaml.YAMLError) -> str:
    """``YAML syntax error at line 3, column 7: ...``; language-specific tags get their own message."""
    problem = getattr(err, "problem", None) or str(err)
    where = _yaml_position(err)
    tag = _TAG_RE.search(problem) if isinstance(err, yaml.constructor.ConstructorError) else None
    if tag:
        shown = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        return f"YAML tag '{shown}'{where} is not allowed: only plain YAML data is accepted (safe_load)"
    context = getattr(err, "context", None)
    detail = f"{problem} ({context})" if context else problem
    return f"YAML syntax error{where}: {detail}"


def _yaml_position(err: yaml.YAMLError) -> str:
    """`` at line 3, column 7`` (1-based) from a YAML error's mark, or ``""``."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is None:
        return ""
    return f" at line {mark.line + 1}, column {mark.column + 1}"


def _parse_json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        message = f"JSON syntax error at line {err.lineno}, column {err.colno}: {err.msg}"
        raise ModelError(path, [(ROOT, message)]) from None


def _read_document(path: Path) -> Any:
    text = _read_text(path)
    if path.suffix.lower() == ".json":
        return _parse_json(text, path)
    return _parse_yaml(text, path)


# --------------------------------------------------------------------------------------------------
# Validation and construction
# --------------------------------------------------------------------------------------------------


def validate_model_dict(data: Any, base_dir: Path | None = None, data_dirs: Iterable[str | Path] = ()) -> list[Problem]:
    """Every problem of model data as ``(json path, message)``; empty when the model is valid.

    ``data_dirs``: data roots replay files may lie under besides ``base_dir`` (``IOTIX_DATA_PATH`` too).
    """
    if not isinstance(data, dict):
        got = "nothing (the file is empty)" if data is None else f"{kind(data)}"
        return [(ROOT, f"the top level must be a mapping of keys to values, got {got}")]
    found = schema_problems(data)
    broken = [parts for parts, _ in found]
    problems = [*as_problems(found), *semantic_problems(data, base_dir, broken, data_dirs)]
    return list(dict.fromkeys(problems))


def load_model_dict(
    data: Any,
    source: str | Path | None = None,
    base_dir: str | Path | None = None,
    data_dirs: Iterable[str | Path] = (),
) -> DeviceModel:
    """Validate model ``data`` (as read from JSON/YAML) and build the :class:`DeviceModel`.

    ``source`` is where the data came from (kept on the model and named in errors); ``base_dir`` is where
    relative ``dataFile`` paths resolve, by default ``source``'s folder. ``data_dirs`` are more folders a
    ``dataFile`` may lie under (kept on the model; ``IOTIX_DATA_PATH`` is read too). The data is copied, never
    modified. Raises :class:`ModelError` listing every problem.
    """
    source = None if source is None else Path(source)
    if base_dir is None and source is not None:
        base_dir = source.parent
    base_dir = None if base_dir is None else Path(base_dir)
    roots = tuple(Path(d) for d in data_dirs)
    problems = validate_model_dict(data, base_dir, roots)
    if problems:
        raise ModelError(source, problems)
    return _build_model(copy.deepcopy(data), source, base_dir, roots)


def _build_model(
    data: dict[str, Any], source: Path | None, base_dir: Path | None, roots: tuple[Path, ...] = ()
) -> DeviceModel:
    telemetry = tuple(_build_field(item) for item in data["telemetry"])
    return DeviceModel(
        id=data["id"],
        name=data["name"],
        version=data.get("version"),
        type=data["type"],
        protocol=data["protocol"],
        connection=_build_connection(data["connection"]),
        telemetry=telemetry,
        description=data.get("description", ""),
        commands=tuple(_build_command(item) for item in data.get("commands", [])),
        behaviors=tuple(_build_behavior(item) for item in data.get("behaviors", [])),
        metadata=data.get("metadata", {}),
        payload=_build_payload(data.get("payload", {}), telemetry),
        source=source,
        base_dir=base_dir,
        data_roots=roots,
    )


def _build_connection(connection: dict[str, Any]) -> dict[str, Any]:
    """The connection as written, with the ``broker`` alias copied to ``host``."""
    if "broker" in connection and "host" not in connection:
        connection = {**connection, "host": connection["broker"]}
    return connection


def _build_field(item: dict[str, Any]) -> TelemetryField:
    return TelemetryField(
        name=item["name"],
        type=item["type"],
        interval_ms=item["intervalMs"],
        generator=item["generator"],
        unit=item.get("unit"),
        description=item.get("description"),
    )


def _build_command(item: dict[str, Any]) -> CommandSpec:
    return CommandSpec(
        name=item["name"],
        topic=item.get("topic"),
        response_topic=item.get("responseTopic"),
        parameters=tuple(item.get("parameters", [])),
        description=item.get("description"),
        failure_rate=float(item.get("failureRate", 0.0)),
        duration_ms=item.get("durationMs"),
    )


def _build_behavior(item: dict[str, Any]) -> BehaviorSpec:
    """A behavior; its condition written flat or (the iotix format) as ``trigger: {type: condition, ...}``."""
    condition = item["condition"] if "condition" in item else item["trigger"]["condition"]
    return BehaviorSpec(
        name=item["name"],
        condition=condition,
        action=item["action"],
        cooldown_ms=item.get("cooldownMs", 0),
        description=item.get("description"),
    )


def _build_payload(payload: dict[str, Any], telemetry: tuple[TelemetryField, ...]) -> PayloadSpec:
    """The payload spec; for ``raw`` without ``field``, ``field`` is set to the only binary field."""
    fmt = payload.get("format", "json")
    chosen = payload.get("field")
    if fmt == "raw" and chosen is None:
        chosen = next(f.name for f in telemetry if f.type == "binary")
    return PayloadSpec(format=fmt, binary_encoding=payload.get("binaryEncoding", "base64"), field=chosen)


def pending_data_files(model: DeviceModel) -> list[tuple[str, str]]:
    """``(field name, dataFile)`` of the replay fields whose file is checked only when a fleet is created.

    Those are absolute ``dataFile`` paths outside the model's folder and every data root (the model's
    ``data_roots`` and ``IOTIX_DATA_PATH`` now), such as the iotix deployment's ``/data/historical/...``.
    """
    roots = data_roots(model.data_roots)
    pending = []
    for item in model.telemetry:
        name = item.generator.get("dataFile") if item.generator.get("type") == "replay" else None
        if not isinstance(name, str) or not Path(name).is_absolute():
            continue
        try:
            resolve_data_file(name, model.base_dir, roots)
        except OutsideDataRoots:
            pending.append((item.name, name))
        except ReplayError:
            pass  # under a root: the model check has looked at it
    return pending


# --------------------------------------------------------------------------------------------------
# Files and folders
# --------------------------------------------------------------------------------------------------


def load_model(path: str | Path, data_dirs: Iterable[str | Path] = ()) -> DeviceModel:
    """Load and validate one model file (``.json``, ``.yaml`` or ``.yml``).

    ``data_dirs``: folders replay data files may lie under besides the file's folder (see
    :func:`load_model_dict`). Raises :class:`ModelError` (:class:`ModelNotFoundError` when the file does not
    exist) listing every problem of the file.
    """
    path = Path(path)
    data = _read_document(path)
    return load_model_dict(data, source=path, base_dir=path.parent, data_dirs=data_dirs)


def model_files(folder: Path) -> Iterator[Path]:
    """The model files under ``folder``, recursively and sorted, skipping schema, data and hidden folders."""
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_dir():
            if entry.name not in SKIPPED_DIRECTORIES:
                yield from model_files(entry)
        elif entry.suffix.lower() in MODEL_SUFFIXES:
            yield entry


def load_models(path: str | Path | None = None, data_dirs: Iterable[str | Path] = ()) -> list[DeviceModel]:
    """Load a model file, or every model file in a folder tree (see :func:`model_files`).

    ``path`` defaults to :func:`default_model_path`; ``data_dirs`` as in :func:`load_model`. Every file is
    validated; when several are invalid, one :class:`ModelCollectionError` lists all their problems. Two
    files defining the same model id are an error too.
    """
    defaulted = path is None
    path = default_model_path() if path is None else Path(path)
    data_dirs = tuple(data_dirs)
    if not path.exists():
        message = missing_default_path_message() if defaulted else "no such file or folder"
        raise ModelNotFoundError(path, [(ROOT, message)])
    if path.is_file():
        return [load_model(path, data_dirs)]
    files = list(model_files(path))
    if not files:
        suffixes = ", ".join(f"*{s}" for s in MODEL_SUFFIXES)
        raise ModelNotFoundError(path, [(ROOT, f"no model files ({suffixes}) in this folder")])
    models: list[DeviceModel] = []
    errors: list[ModelError] = []
    for file in files:
        try:
            models.append(load_model(file, data_dirs))
        except ModelError as err:
            errors.append(err)
    errors += _duplicate_id_errors(models)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ModelCollectionError(path, errors)
    return models


def _duplicate_id_errors(models: list[DeviceModel]) -> list[ModelError]:
    first: dict[str, DeviceModel] = {}
    errors = []
    for model in models:
        if model.id in first:
            errors.append(_duplicate_id_error(model, first[model.id]))
        else:
            first[model.id] = model
    return errors


def _duplicate_id_error(model: DeviceModel, existing: DeviceModel) -> ModelError:
    where = f"'{existing.source}'" if existing.source is not None else "a model given as data"
    return ModelError(model.source, [("id", f"duplicate model id {model.id!r}: already defined in {where}")])


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


class ModelRegistry:
    """Loaded models by id. Dict-like (``registry[id]``, ``in``, ``len``, iteration over ids).

    Adding a model whose id is already registered from a *different* file is an error naming both
    files; re-adding a model from the same file replaces it (reloading).
    """

    def __init__(self) -> None:
        self._models: dict[str, DeviceModel] = {}

    def add(self, model: DeviceModel) -> None:
        """Register ``model`` (see the class docstring for duplicates)."""
        self._check_can_add(model)
        self._models[model.id] = model

    def _check_can_add(self, model: DeviceModel) -> None:
        existing = self._models.get(model.id)
        if existing is None or existing == model:
            return
        if existing.source is not None and existing.source == model.source:
            return
        raise _duplicate_id_error(model, existing)

    def load(self, path: str | Path | None = None, data_dirs: Iterable[str | Path] = ()) -> list[str]:
        """Load a file or folder (see :func:`load_models`; default :func:`default_model_path`) and register
        every model; returns their ids. ``data_dirs``: folders replay data files may lie under.

        All or nothing: when one model cannot be registered, none is.
        """
        models = load_models(path, data_dirs)
        for model in models:
            self._check_can_add(model)
        for model in models:
            self._models[model.id] = model
        return [model.id for model in models]

    def get(self, model_id: str) -> DeviceModel:
        """The model with this id; :class:`UnknownModelError` (a :class:`iotix.errors.NotFoundError` and a
        ``KeyError``, listing the known ids) if there is none."""
        try:
            return self._models[model_id]
        except KeyError:
            raise UnknownModelError(model_id, self.ids) from None

    def resolve(self, ref: str) -> DeviceModel:
        """A model by id, or by the path of a model file (``.json``, ``.yaml``, ``.yml``), loaded on the way."""
        if ref.endswith((".json", ".yaml", ".yml")) and Path(ref).is_file():
            return self.get(self.load(Path(ref))[0])
        return self.get(ref)

    def __getitem__(self, model_id: str) -> DeviceModel:
        return self.get(model_id)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._models

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    @property
    def ids(self) -> list[str]:
        """Registered model ids, sorted."""
        return sorted(self._models)

    def values(self) -> list[DeviceModel]:
        """The registered models."""
        return list(self._models.values())

    def items(self) -> list[tuple[str, DeviceModel]]:
        """``(id, model)`` pairs."""
        return list(self._models.items())

    def __repr__(self) -> str:
        return f"ModelRegistry({self.ids})"
