"""``check_generator`` and ``build_generator``: one code path reads a spec, the two differ in what they do
with the problems it finds."""

from __future__ import annotations

import random
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

from iotix.errors import ConfigurationError
from iotix.generate._spec import Problem, SpecReader
from iotix.generate._values import FIELD_TYPES
from iotix.generate.base import Generator, Maker
from iotix.generate.gps import make_gps
from iotix.generate.handlers import make_custom
from iotix.generate.numeric import (
    make_battery,
    make_choice,
    make_constant,
    make_random,
    make_random_walk,
    make_sequence,
    make_sinusoidal,
)
from iotix.generate.replay import PendingReplay, data_roots, make_replay

MAKERS: dict[str, Maker] = {
    "random": make_random,
    "sequence": make_sequence,
    "constant": make_constant,
    "replay": make_replay,
    "sinusoidal": make_sinusoidal,
    "randomWalk": make_random_walk,
    "choice": make_choice,
    "battery": make_battery,
    "gps": make_gps,
    "custom": make_custom,
}
GENERATOR_TYPES: tuple[str, ...] = tuple(MAKERS)


def _make(
    spec: Any,
    field_type: str,
    rng: random.Random,
    base_dir: Path | None,
    roots: Iterable[str | Path] = (),
    *,
    checking: bool = False,
) -> tuple[Generator | None, list[Problem]]:
    """Read ``spec`` and build its generator; the problems found (the generator is None if any).

    ``roots``: data roots for replay files besides ``base_dir``, to which ``IOTIX_DATA_PATH`` is added.
    ``checking``: a model check, where an absolute replay file outside every root is left for later.
    """
    if not isinstance(spec, dict):
        return None, [("", f"must be an object with a 'type', got {type(spec).__name__}")]
    gen_type = spec.get("type")
    if gen_type is None:
        return None, [("type", f"is required (one of: {', '.join(GENERATOR_TYPES)})")]
    if not isinstance(gen_type, str) or gen_type not in MAKERS:
        return None, [("type", f"unknown generator type {gen_type!r} (expected one of: {', '.join(GENERATOR_TYPES)})")]
    if field_type not in FIELD_TYPES:
        return None, [("", f"unknown field type {field_type!r} (expected one of: {', '.join(FIELD_TYPES)})")]
    reader = SpecReader(spec, gen_type)
    maker = MAKERS[gen_type]
    if gen_type == "replay":
        maker = partial(make_replay, roots=data_roots(roots), defer_outside=checking)
    generator = maker(reader, field_type, rng, base_dir)
    if reader.problems:
        return None, reader.problems
    assert generator is not None
    return generator, []


def check_generator(
    spec: dict[str, Any], field_type: str, base_dir: Path | None, data_dirs: Iterable[str | Path] = ()
) -> list[tuple[str, str]]:
    """The problems of a generator spec for a field of ``field_type``, as (path in the spec, message).

    Covers what a JSON schema cannot: relations between values (``max >= min``), data files (present, inside
    the model's folder, with the column, numeric cells), handlers (registered or importable, config accepted,
    output usable as the field type), value types against the field type. The path is relative to the
    generator spec (``"max"``, ``"values[2]"``, ``"route[1]"``); ``""`` means the spec as a whole. Never
    raises: malformed input is a problem like any other.

    Replay files may lie under ``base_dir`` or a data root (``data_dirs`` and ``IOTIX_DATA_PATH``); an
    absolute one outside every root is not a problem here: :func:`build_generator` refuses it.
    """
    try:
        generator, problems = _make(spec, field_type, random.Random(0), base_dir, data_dirs, checking=True)
        if generator is not None and not isinstance(generator, PendingReplay):
            problems = _probe(generator, spec, field_type)
        return problems
    except Exception as exc:  # a bug here must not break model loading
        return [("", f"could not check the generator: {type(exc).__name__}: {exc}")]


def _probe(generator: Generator, spec: dict[str, Any], field_type: str) -> list[Problem]:
    """Produce one value from a throwaway generator, to catch handlers returning unusable values."""
    try:
        generator.next(0.0)
    except Exception as exc:
        path = "handler" if spec.get("type") == "custom" else "type"
        return [(path, f"produces values a '{field_type}' field cannot hold: {exc}")]
    return []


def build_generator(
    spec: dict[str, Any],
    field_type: str,
    *,
    rng: random.Random,
    base_dir: Path | None = None,
    data_dirs: Iterable[str | Path] = (),
) -> Generator:
    """The generator of ``spec`` for a field of ``field_type``, drawing randomness from ``rng``.

    Replay files must lie under ``base_dir`` or a data root (``data_dirs`` and ``IOTIX_DATA_PATH``).

    Raises :class:`ConfigurationError` listing every problem if the spec is unusable (callers validate with
    :func:`check_generator` first; this is the safety net).
    """
    generator, problems = _make(spec, field_type, rng, base_dir, data_dirs)
    if generator is None:
        gen_type = spec.get("type") if isinstance(spec, dict) else None
        kind = f"'{gen_type}' generator" if isinstance(gen_type, str) else "generator"
        details = "; ".join(f"{path}: {message}" if path else message for path, message in problems)
        raise ConfigurationError(f"invalid {kind} for a '{field_type}' field: {details}")
    return generator


def needs_rng(spec: dict[str, Any]) -> bool:
    """False only for specs that certainly never draw random numbers (so a device can skip their RNG)."""
    gen_type = spec.get("type")
    if gen_type in ("sequence", "constant", "replay"):
        return False
    if gen_type in ("sinusoidal", "battery"):
        return bool(spec.get("noise"))
    if gen_type == "gps":
        return spec.get("mode", "route" if spec.get("route") is not None else "randomWalk") != "route"
    return True
