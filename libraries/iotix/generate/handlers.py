"""Custom generator handlers: the registry, ``package.module:function`` resolution, and the ``custom`` type.

A handler is a factory ``handler(config: dict, rng: random.Random) -> Callable[[float], Any]``. The factory
runs once per device (and once more when a model is checked), so it should be cheap and free of side
effects; the callable it returns is called with ``t`` for every reading and its result is converted to the
field type.
"""

from __future__ import annotations

import importlib
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iotix.errors import ConfigurationError
from iotix.generate._spec import SpecReader
from iotix.generate._values import FIELD_TYPES, output_coercer
from iotix.generate.base import Generator
from iotix.generate.ecg import ecg_generator

HandlerFactory = Callable[[dict[str, Any], random.Random], Callable[[float], Any]]

_registry: dict[str, HandlerFactory] = {}
_registry_lock = threading.Lock()


def register_handler(name: str, factory: HandlerFactory) -> None:
    """Make ``factory`` available to models as ``handler: <name>`` (a later registration replaces it)."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ConfigurationError(f"handler name must be a non-empty string without ':', got {name!r}")
    if not callable(factory):
        raise ConfigurationError(f"handler '{name}' must be callable, got {type(factory).__name__}")
    with _registry_lock:
        _registry[name] = factory


def registered_handlers() -> tuple[str, ...]:
    """The names registered so far, sorted."""
    return tuple(sorted(_registry))


def resolve_handler(name: str) -> HandlerFactory:
    """The factory registered as ``name``, or the function ``package.module:function`` names (imported)."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"handler must be a non-empty string, got {name!r}")
    factory = _registry.get(name)
    if factory is not None:
        return factory
    if ":" not in name:
        raise ConfigurationError(
            f"unknown handler '{name}' (registered: {', '.join(registered_handlers()) or 'none'}); "
            "or give 'package.module:function'"
        )
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"handler '{name}' must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import module '{module_name}' for handler '{name}': {exc}") from None
    except Exception as exc:  # the user's module failed while importing
        raise ConfigurationError(
            f"importing module '{module_name}' for handler '{name}' failed: {type(exc).__name__}: {exc}"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigurationError(f"module '{module_name}' has no function '{attribute}' (handler '{name}')")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigurationError(f"'{name}' is a {type(target).__name__}, not a function")
    return target


class CustomGenerator(Generator):
    """Calls the handler's callable and converts its result to the field type."""

    __slots__ = ("_call", "_out")

    def __init__(self, call: Callable[[float], Any], out: Callable[[Any], Any]) -> None:
        self._call = call
        self._out = out

    def next(self, t: float) -> Any:
        return self._out(self._call(t))


def make_custom(r: SpecReader, field_type: str, rng: random.Random, base_dir: Path | None) -> Generator | None:
    """``custom``: ``handler`` (registered name or ``package.module:function``) with its ``config``."""
    r.known(("handler", "config"))
    precision = r.precision()
    name = r.string("handler", required=True)
    config = r.mapping("config") or {}
    if field_type not in FIELD_TYPES:
        r.problem("type", f"unknown field type {field_type!r}")
    factory = None
    if name is not None:
        try:
            factory = resolve_handler(name)
        except ConfigurationError as exc:
            r.problem("handler", str(exc))
    if not r.ok or factory is None:
        return None
    try:
        call = factory(dict(config), rng)  # a copy: the model's dict must stay untouched
    except Exception as exc:  # a user's factory may raise anything; report it against the config
        r.problem("config", f"handler '{name}' rejected its config: {exc}")
        return None
    if not callable(call):
        r.problem("handler", f"handler '{name}' returned a {type(call).__name__}, not a callable")
        return None
    return CustomGenerator(call, output_coercer(field_type, precision))


register_handler("ecg_generator", ecg_generator)
