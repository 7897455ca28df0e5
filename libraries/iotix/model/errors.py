"""Errors raised while loading device models.

Every failure to read or validate a model file is a :class:`ModelError` that lists *all* the problems
found in the file, each as ``(json_path, message)``: ``("telemetry[2].generator.max", "must be >= min
(10), got 5")``. A problem that concerns the whole file (syntax error, top level not a mapping) uses the
path ``(root)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from iotix.errors import ConfigurationError, NotFoundError

ROOT = "(root)"

Problem = tuple[str, str]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class ModelError(ConfigurationError):
    """A device model file (or dict) is not usable.

    Attributes:
        source: the file the model came from, as a string, or ``None`` for a model given as a dict.
        problems: every problem found, as ``(json_path, message)`` pairs.
    """

    def __init__(self, source: str | Path | None, problems: Iterable[Problem]) -> None:
        self.source: str | None = None if source is None else str(source)
        self.problems: list[Problem] = list(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        what = "Device model" if self.source is None else f"Device model '{self.source}'"
        lines = [f"{what} is invalid ({_plural(len(self.problems), 'problem')}):"]
        lines += [f"  - {path}: {message}" for path, message in self.problems]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._render()


class ModelNotFoundError(ModelError, NotFoundError):
    """The model file or folder does not exist (also a :class:`iotix.errors.NotFoundError`)."""


class ModelCollectionError(ModelError):
    """Several model files of one folder are invalid: one error that lists every file's problems.

    ``errors`` holds the per-file errors; ``problems`` is their concatenation, each path prefixed with the
    file (``models/a.yaml: telemetry[0].name``).
    """

    def __init__(self, source: str | Path | None, errors: Sequence[ModelError]) -> None:
        self.errors: list[ModelError] = list(errors)
        problems = [(f"{err.source}: {path}", msg) for err in self.errors for path, msg in err.problems]
        super().__init__(source, problems)

    def _render(self) -> str:
        where = "" if self.source is None else f" in '{self.source}'"
        head = (
            f"{_plural(len(self.errors), 'device model file')}{where} are invalid "
            f"({_plural(len(self.problems), 'problem')} in total):"
        )
        return "\n".join([head, *(err._render() for err in self.errors)])


class UnknownModelError(NotFoundError, KeyError):
    """No model with this id is registered. Also a ``KeyError``, so registries behave like mappings."""

    def __init__(self, model_id: str, known: Sequence[str]) -> None:
        self.model_id = model_id
        self.known = list(known)
        listing = ", ".join(self.known) or "none loaded"
        super().__init__(f"No device model with id {model_id!r} (known: {listing})")

    def __str__(self) -> str:
        return str(self.args[0])
