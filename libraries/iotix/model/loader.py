"""Loading device models from JSON/YAML files, validating them, and keeping them in a registry.

* :func:`load_model` reads one file, :func:`load_models` a file or a folder tree, :func:`load_model_dict`
  validates data already in memory.
* Validation is the JSON Schema first (every error, as a readable path + message), then the semantic checks
  of :mod:`iotix.model.checks`. All problems of a file are reported together in one :class:`ModelError`;
  no failure ever escapes as a bare traceback.
* YAML is read with ``yaml.safe_load`` only: tags such as ``!!python/object`` are rejected, never run.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

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
    "MODEL_SUFFIXES",
    "SKIPPED_DIRECTORIES",
    "ModelRegistry",
    "load_model",
    "load_model_dict",
    "load_models",
    "model_files",
    "validate_model_dict",
]

#: File name endings read as models.
MODEL_SUFFIXES: tuple[str, ...] = (".json", ".yaml", ".yml")
#: Folders :func:`load_models` does not descend into (the schema copy and data files for replay).
#: Folders whose name starts with ``.`` or ``_`` are skipped too.
SKIPPED_DIRECTORIES: frozenset[str] = frozenset({"schema", "data"})

_TAG_RE = re.compile(r"tag '([^']*)'")


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
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ModelError(path, [(ROOT, _yaml_message(err))]) from None


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


def validate_model_dict(data: Any, base_dir: Path | None = None) -> list[Problem]:
    """Every problem of model data as ``(json path, message)``; empty when the model is valid."""
    if not isinstance(data, dict):
        got = "nothing (the file is empty)" if data is None else f"{kind(data)}"
        return [(ROOT, f"the top level must be a mapping of keys to values, got {got}")]
    found = schema_problems(data)
    broken = [parts for parts, _ in found]
    problems = [*as_problems(found), *semantic_problems(data, base_dir, broken)]
    return list(dict.fromkeys(problems))


def load_model_dict(data: Any, source: str | Path | None = None, base_dir: str | Path | None = None) -> DeviceModel:
    """Validate model ``data`` (as read from JSON/YAML) and build the :class:`DeviceModel`.

    ``source`` is where the data came from (kept on the model and named in errors); ``base_dir`` is where
    relative ``dataFile`` paths resolve, by default ``source``'s folder. The data is copied, never modified.
    Raises :class:`ModelError` listing every problem.
    """
    source = None if source is None else Path(source)
    if base_dir is None and source is not None:
        base_dir = source.parent
    base_dir = None if base_dir is None else Path(base_dir)
    problems = validate_model_dict(data, base_dir)
    if problems:
        raise ModelError(source, problems)
    return _build_model(copy.deepcopy(data), source, base_dir)


def _build_model(data: dict[str, Any], source: Path | None, base_dir: Path | None) -> DeviceModel:
    telemetry = tuple(_build_field(item) for item in data["telemetry"])
    return DeviceModel(
        id=data["id"],
        name=data["name"],
        version=data["version"],
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
    )


def _build_behavior(item: dict[str, Any]) -> BehaviorSpec:
    return BehaviorSpec(
        name=item["name"],
        condition=item["condition"],
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


# --------------------------------------------------------------------------------------------------
# Files and folders
# --------------------------------------------------------------------------------------------------


def load_model(path: str | Path) -> DeviceModel:
    """Load and validate one model file (``.json``, ``.yaml`` or ``.yml``).

    Raises :class:`ModelError` (:class:`ModelNotFoundError` when the file does not exist) listing every
    problem of the file.
    """
    path = Path(path)
    data = _read_document(path)
    return load_model_dict(data, source=path, base_dir=path.parent)


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


def load_models(path: str | Path) -> list[DeviceModel]:
    """Load a model file, or every model file in a folder tree (see :func:`model_files`).

    Every file is validated; when several are invalid, one :class:`ModelCollectionError` lists all their
    problems. Two files defining the same model id are an error too.
    """
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(path, [(ROOT, "no such file or folder")])
    if path.is_file():
        return [load_model(path)]
    files = list(model_files(path))
    if not files:
        suffixes = ", ".join(f"*{s}" for s in MODEL_SUFFIXES)
        raise ModelNotFoundError(path, [(ROOT, f"no model files ({suffixes}) in this folder")])
    models: list[DeviceModel] = []
    errors: list[ModelError] = []
    for file in files:
        try:
            models.append(load_model(file))
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

    def load(self, path: str | Path) -> list[str]:
        """Load a file or folder (see :func:`load_models`) and register every model; returns their ids.

        All or nothing: when one model cannot be registered, none is.
        """
        models = load_models(path)
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
