"""``DeviceValues``: every telemetry generator of one device, with manual overrides."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from iotix.errors import ConfigurationError, NotFoundError
from iotix.generate._values import coerce_value
from iotix.generate.base import Generator
from iotix.generate.factory import build_generator, needs_rng
from iotix.generate.rng import DeviceRandom, device_rng, device_stream

if TYPE_CHECKING:
    # Only for annotations: a model is read through its attributes. iotix.model imports iotix.generate at
    # run time (model checks validate generator parameters with ``check_generator``).
    from iotix.model.types import DeviceModel


class _UnusedRandom(random.Random):
    """Handed to generators that never draw random numbers, so devices need not own an RNG for them.

    Every draw fails loudly: if a generator used it, devices would share one sequence and lose determinism.
    """

    def random(self) -> float:
        raise RuntimeError("this generator was built without an RNG (iotix.generate.factory.needs_rng is wrong)")

    def getrandbits(self, k: int) -> int:
        return int(self.random())


_NO_RNG = _UnusedRandom(0)


#: telemetry field names of a model -> their positions: one dict for all devices of models with those fields
_INDEXES: dict[tuple[str, ...], dict[str, int]] = {}


def _field_index(model: DeviceModel) -> dict[str, int]:
    """The position of each telemetry field of ``model`` (one dict shared by all its devices)."""
    names = tuple(field.name for field in model.telemetry)
    index = _INDEXES.get(names)
    if index is None:
        index = {name: i for i, name in enumerate(names)}
        if len(_INDEXES) < 10_000:
            _INDEXES[names] = index
    return index


class DeviceValues:
    """The values of one device's telemetry fields, reproducible from (model id, device id, seed).

    The built-in generators of a device share one random stream (``device_stream(model.id, device_id, seed)``,
    a :class:`~iotix.generate.rng.DeviceRandom` of 40 bytes: a ``random.Random`` holds 2.5 KB of state, which
    would be a third of what a device costs in a 100,000-device run). So a device's values are reproducible for
    the same model, device id and seed, but adding or reordering fields of a model changes them. Custom handlers
    get a ``random.Random`` of their own (``stream=field name``), since user code may draw any number of values.
    An override replaces a field's value while it is set, but the field's generator keeps advancing, so after
    ``clear_override`` the sequence continues as if it had never been overridden.
    """

    __slots__ = ("_generators", "_index", "_overrides", "device_id", "model")

    def __init__(self, model: DeviceModel, device_id: str, seed: int | str | None = None) -> None:
        self.model = model
        self.device_id = device_id
        generators: dict[str, Generator] = {}
        shared: DeviceRandom | None = None
        for field in model.telemetry:
            spec = field.generator
            rng: random.Random | DeviceRandom
            if not needs_rng(spec):
                rng = _NO_RNG
            elif spec.get("type") == "custom":
                rng = device_rng(model.id, device_id, seed, field.name)
            else:
                if shared is None:
                    shared = device_stream(model.id, device_id, seed)
                rng = shared
            try:
                generators[field.name] = build_generator(
                    spec, field.type, rng=rng, base_dir=model.base_dir, data_dirs=model.data_roots
                )
            except ConfigurationError as exc:
                raise ConfigurationError(f"model '{model.id}', telemetry field '{field.name}': {exc}") from None
        # A tuple per device and one name -> position map per model: a dict per device would cost 0.2 KB more.
        self._index = _field_index(model)
        self._generators = tuple(generators[name] for name in self._index)
        self._overrides: dict[str, Any] | None = None

    @property
    def groups(self) -> list[tuple[int, tuple[str, ...]]]:
        """(interval_ms, field names) for fields sharing an interval, in model order of first appearance."""
        by_interval: dict[int, list[str]] = {}
        for field in self.model.telemetry:
            by_interval.setdefault(field.interval_ms, []).append(field.name)
        return [(interval, tuple(names)) for interval, names in by_interval.items()]

    def sample(self, field_names: Iterable[str], t: float) -> dict[str, Any]:
        """The next value of each named field at logical time ``t`` (seconds), in the order given."""
        generators, index = self._generators, self._index
        values: dict[str, Any] = {}
        try:
            for name in field_names:  # a loop, not a comprehension: no function call per sample (Python 3.11)
                values[name] = generators[index[name]].next(t)
        except KeyError as exc:
            raise self._unknown(str(exc.args[0])) from None
        overrides = self._overrides
        if overrides:
            for name in values:
                if name in overrides:
                    values[name] = overrides[name]
        return values

    def set_override(self, field: str, value: Any) -> None:
        """Report ``value`` (converted to the field type; text is accepted) for ``field`` until cleared."""
        if field not in self._index:
            raise self._unknown(field)
        converted = coerce_value(value, self.model.get_field(field).type)
        if self._overrides is None:
            self._overrides = {}
        self._overrides[field] = converted

    def clear_override(self, field: str) -> None:
        """Go back to generated values for ``field`` (no-op if it has no override)."""
        if field not in self._index:
            raise self._unknown(field)
        if self._overrides:
            self._overrides.pop(field, None)
            if not self._overrides:
                self._overrides = None

    @property
    def overrides(self) -> dict[str, Any]:
        """A copy of the overrides currently set."""
        return dict(self._overrides or {})

    def _unknown(self, field: str) -> NotFoundError:
        return NotFoundError(
            f"model '{self.model.id}' has no telemetry field '{field}' (fields: {', '.join(self.model.field_names)})"
        )
