"""Scenario files: a site of several device models, one fleet per entry.

A scenario is a YAML (or JSON) file, read with ``yaml.safe_load`` like a model, validated against its own JSON
Schema (``schema/scenario.schema.json``, copied to ``models/schema/`` for editors) and then checked for what a
schema cannot say. Every problem of a file is reported at once in one :class:`ScenarioError` that names the
file and, per problem, the JSON path and what was expected::

    name: home
    fleets:
      - model: ../temperature-sensor.yaml    # a model file relative to this file, or a loaded model's id
        count: 3
        name: "{scenario}-temperature-sensors"
        idPattern: "{scenario}-temperature-{n:02d}"
        connection: {qos: 1}                 # optional overrides: host, port, qos, username

This module only reads and checks; :mod:`iotix.fleet.scenario` turns a :class:`Scenario` into fleets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iotix.errors import ConfigurationError, NotFoundError
from iotix.model.errors import ROOT, ModelError, ModelNotFoundError, Problem
from iotix.model.loader import MODEL_SUFFIXES, _read_document
from iotix.model.schema_errors import as_problems, format_path, kind, schema_problems, shipped_schema, validator_for

__all__ = [
    "SCENARIO_SCHEMA_FILE",
    "ConnectionOverrideSpec",
    "Scenario",
    "ScenarioError",
    "ScenarioFleet",
    "ScenarioNotFoundError",
    "check_scenario_name",
    "is_model_path",
    "load_scenario",
    "load_scenario_dict",
    "looks_like_scenario",
    "validate_scenario_dict",
]

SCENARIO_SCHEMA_FILE = "scenario.schema.json"
#: The placeholders a fleet name may use; an id pattern may use ``{scenario}`` besides those of Create Fleet.
NAME_PLACEHOLDERS = ("scenario", "model")
#: The default fleet name of an entry.
DEFAULT_FLEET_NAME = "{scenario}-{model}"

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NEVER_IN_FILES = (
    "a password is never written in a scenario file: give Create Fleets From Scenario a Secret password= "
    "(or use a model whose connection has it)"
)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class ScenarioError(ConfigurationError):
    """A scenario file (or dict) is not usable; ``problems`` lists every problem as ``(json_path, message)``."""

    def __init__(self, source: str | Path | None, problems: Iterable[Problem]) -> None:
        self.source: str | None = None if source is None else str(source)
        self.problems: list[Problem] = list(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        what = "Scenario" if self.source is None else f"Scenario '{self.source}'"
        lines = [f"{what} is invalid ({_plural(len(self.problems), 'problem')}):"]
        lines += [f"  - {path}: {message}" for path, message in self.problems]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._render()


class ScenarioNotFoundError(ScenarioError, NotFoundError):
    """The scenario file does not exist (also a :class:`iotix.errors.NotFoundError`)."""


@dataclass(frozen=True)
class ConnectionOverrideSpec:
    """What a scenario (or one of its fleets) changes of a model's connection. No password, ever."""

    host: str = ""
    port: int | None = None
    qos: int | None = None
    username: str = ""

    def over(self, base: ConnectionOverrideSpec) -> ConnectionOverrideSpec:
        """These overrides where given, ``base``'s elsewhere."""
        return ConnectionOverrideSpec(
            host=self.host or base.host,
            port=self.port if self.port is not None else base.port,
            qos=self.qos if self.qos is not None else base.qos,
            username=self.username or base.username,
        )


@dataclass(frozen=True)
class ScenarioFleet:
    """One entry of ``fleets``: ``count`` devices of one model.

    ``model`` is the reference as written; ``model_path`` is the model file it names (absolute, resolved
    against the scenario's folder) or ``None`` for a model id. ``name`` and ``id_pattern`` are templates
    (``{scenario}``, ``{model}``; the id pattern also ``{index}``, ``{n}``, ``{fleet}``).
    """

    index: int
    model: str
    count: int
    model_path: Path | None = None
    name: str = DEFAULT_FLEET_NAME
    id_pattern: str = ""
    seed: int | None = None
    description: str = ""
    connection: ConnectionOverrideSpec = field(default_factory=ConnectionOverrideSpec)

    @property
    def path(self) -> str:
        """The entry's JSON path, as problems name it: ``fleets[2]``."""
        return f"fleets[{self.index}]"

    def fleet_name(self, scenario: str, model_id: str) -> str:
        return self.name.replace("{scenario}", scenario).replace("{model}", model_id)

    def device_id_pattern(self, scenario: str) -> str:
        """The id pattern with ``{scenario}`` filled in (empty: Create Fleet's default, ``<fleet>-{index}``)."""
        return self.id_pattern.replace("{scenario}", scenario)


@dataclass(frozen=True)
class Scenario:
    """A validated scenario file: its name, defaults and fleets (see the module docstring)."""

    name: str
    fleets: tuple[ScenarioFleet, ...]
    description: str = ""
    seed: int | None = None
    connection: ConnectionOverrideSpec = field(default_factory=ConnectionOverrideSpec)
    source: Path | None = None

    @property
    def device_count(self) -> int:
        return sum(entry.count for entry in self.fleets)


# --------------------------------------------------------------------------------------------------
# Schema and checks
# --------------------------------------------------------------------------------------------------


def scenario_schema() -> dict[str, Any]:
    """The scenario JSON Schema shipped with the package."""
    return shipped_schema(SCENARIO_SCHEMA_FILE)


def is_model_path(ref: str) -> bool:
    """A ``model`` reference names a file when it ends in ``.json``, ``.yaml`` or ``.yml``; else it is an id."""
    return ref.lower().endswith(MODEL_SUFFIXES)


def looks_like_scenario(data: Any) -> bool:
    """Data read from a file is a scenario rather than a model: a mapping with ``fleets`` and no ``telemetry``."""
    return isinstance(data, dict) and "fleets" in data and "telemetry" not in data


def _schema_problems(data: dict[str, Any]) -> list[Problem]:
    found = []
    for parts, message in schema_problems(data, validator_for(SCENARIO_SCHEMA_FILE)):
        is_password = len(parts) >= 2 and parts[-2:] == ("connection", "password")
        found.append((parts, _NEVER_IN_FILES if is_password else message))
    return list(as_problems(found))


def _placeholder_problems(text: Any, where: str, allowed: tuple[str, ...]) -> list[Problem]:
    if not isinstance(text, str):
        return []
    unknown = [p for p in _PLACEHOLDER.findall(text) if p not in allowed]
    if not unknown:
        return []
    listing = ", ".join(f"{{{p}}}" for p in allowed)
    return [(where, f"unknown placeholder {{{unknown[0]}}} in {text!r} (a fleet name may use {listing})")]


def _model_problems(entry: dict[str, Any], where: str, base_dir: Path | None) -> list[Problem]:
    ref = entry.get("model")
    if not isinstance(ref, str) or not is_model_path(ref):
        return []
    path = Path(ref) if base_dir is None else base_dir / ref
    if not path.is_file():
        relative = "" if base_dir is None else f" (relative to the scenario's folder '{base_dir}')"
        return [(f"{where}.model", f"model file '{path}' not found{relative}")]
    return []


def _semantic_problems(data: dict[str, Any], base_dir: Path | None) -> list[Problem]:
    """What the schema cannot say: placeholders of fleet names, names given twice, model files that are missing."""
    problems: list[Problem] = []
    fleets = data.get("fleets")
    if not isinstance(fleets, list):
        return problems
    names: dict[str, int] = {}
    for i, entry in enumerate(fleets):
        if not isinstance(entry, dict):
            continue
        where = format_path(("fleets", i))
        problems += _model_problems(entry, where, base_dir)
        name = entry.get("name", DEFAULT_FLEET_NAME)
        problems += _placeholder_problems(name, f"{where}.name", NAME_PLACEHOLDERS)
        ref = entry.get("model")
        if not isinstance(name, str) or not isinstance(ref, str):
            continue
        if "{model}" in name and is_model_path(ref):
            continue  # the model's id is known once the file is loaded: checked when the fleets are planned
        key = name.replace("{model}", ref)
        if key in names:
            shown = f"fleet name {name!r}" + (f" (for model {ref!r})" if "{model}" in name else "")
            problems.append((f"{where}.name", f"{shown} is the name of fleets[{names[key]}] too; give each a name"))
        names.setdefault(key, i)
    return problems


def validate_scenario_dict(data: Any, base_dir: Path | None = None) -> list[Problem]:
    """Every problem of scenario data as ``(json path, message)``; empty when the scenario is valid."""
    if not isinstance(data, dict):
        got = "nothing (the file is empty)" if data is None else kind(data)
        return [(ROOT, f"the top level must be a mapping with a 'fleets' list, got {got}")]
    problems = [*_schema_problems(data), *_semantic_problems(data, base_dir)]
    return list(dict.fromkeys(problems))


# --------------------------------------------------------------------------------------------------
# Construction
# --------------------------------------------------------------------------------------------------


def _connection(data: dict[str, Any] | None) -> ConnectionOverrideSpec:
    data = data or {}
    return ConnectionOverrideSpec(
        host=data.get("host", ""), port=data.get("port"), qos=data.get("qos"), username=data.get("username", "")
    )


def _fleet(index: int, data: dict[str, Any], base_dir: Path | None) -> ScenarioFleet:
    ref = data["model"]
    model_path = None
    if is_model_path(ref):
        model_path = Path(ref) if base_dir is None else (base_dir / ref)
        model_path = model_path.resolve()
    return ScenarioFleet(
        index=index,
        model=ref,
        count=data["count"],
        model_path=model_path,
        name=data.get("name", DEFAULT_FLEET_NAME),
        id_pattern=data.get("idPattern", ""),
        seed=data.get("seed"),
        description=data.get("description", ""),
        connection=_connection(data.get("connection")),
    )


def load_scenario_dict(data: Any, source: str | Path | None = None, base_dir: str | Path | None = None) -> Scenario:
    """Validate scenario ``data`` (as read from YAML/JSON) and build the :class:`Scenario`.

    ``source`` is the file it came from (named in errors; its stem is the default name); ``base_dir`` is where
    relative model paths resolve, by default ``source``'s folder. Raises :class:`ScenarioError`.
    """
    source = None if source is None else Path(source)
    if base_dir is None and source is not None:
        base_dir = source.parent
    base_dir = None if base_dir is None else Path(base_dir)
    problems = validate_scenario_dict(data, base_dir)
    default_name = source.stem if source is not None else "scenario"
    if not problems and "name" not in data and not _NAME.match(default_name):
        problems = [("name", f"required, since the file name {default_name!r} is not usable as a name")]
    if problems:
        raise ScenarioError(source, problems)
    return Scenario(
        name=data.get("name", default_name),
        fleets=tuple(_fleet(i, entry, base_dir) for i, entry in enumerate(data["fleets"])),
        description=data.get("description", ""),
        seed=data.get("seed"),
        connection=_connection(data.get("connection")),
        source=source,
    )


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate one scenario file (``.yaml``, ``.yml`` or ``.json``).

    Raises :class:`ScenarioError` listing every problem of the file (:class:`ScenarioNotFoundError` when
    the file does not exist).
    """
    path = Path(path)
    try:
        data = _read_document(path)
    except ModelNotFoundError as err:
        raise ScenarioNotFoundError(path, err.problems) from None
    except ModelError as err:
        raise ScenarioError(path, err.problems) from None
    return load_scenario_dict(data, source=path, base_dir=path.parent)


def check_scenario_name(name: str) -> str:
    """``name`` if it can stand for a scenario in fleet names and ids; ConfigurationError otherwise."""
    if not _NAME.match(name):
        raise ConfigurationError(
            f"scenario name {name!r} is not usable: letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name
