"""From a scenario (:mod:`iotix.model.scenario`) to fleets: plan every fleet first, then create them all or none.

:func:`plan_fleets` is pure (no simulator, no loop): it resolves each entry's model (a loaded id, or a file
that it loads into the registry), merges the connection overrides (the caller's beat the entry's, the entry's
beat the scenario's, which beat the model's), renders fleet names and device ids, and checks them: every
problem of every entry is reported at once as a :class:`~iotix.model.scenario.ScenarioError` naming the file
and the entry's JSON path, before anything is created.

:func:`create_fleets` runs on the runtime loop: it builds the planned fleets in order; when one cannot be
built (its name or a device id is taken by a fleet that already exists, ...), the fleets it built before are
deleted again and the error names the entry. Fleets that existed before are never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iotix.errors import ConfigurationError, IoTixError
from iotix.fleet.fleet import FleetOptions
from iotix.fleet.setup import ConnectionOverrides, FleetSetup
from iotix.model.errors import ModelError, Problem
from iotix.model.loader import ModelRegistry
from iotix.model.scenario import (
    ConnectionOverrideSpec,
    Scenario,
    ScenarioError,
    ScenarioFleet,
    check_scenario_name,
)
from iotix.model.types import DeviceModel

if TYPE_CHECKING:
    from iotix.fleet.fleet import Fleet
    from iotix.fleet.simulator import Simulator

__all__ = ["PlannedFleet", "ScenarioOverrides", "create_fleets", "plan_fleets"]


@dataclass(frozen=True)
class ScenarioOverrides:
    """What the caller (``Create Fleets From Scenario``) sets for every fleet of the scenario.

    Connection values and ``seed`` win over the file; ``name`` (empty: the file's) is the ``{scenario}`` of
    fleet names and device ids; ``options`` and ``delivery`` are those of
    :class:`~iotix.fleet.setup.FleetSetup`. The password exists only here, never in a file.
    """

    name: str = ""
    host: str = ""
    port: int | None = None
    qos: int | None = None
    username: str = ""
    password: str | None = field(default=None, repr=False)
    seed: int | None = None
    options: FleetOptions = field(default_factory=FleetOptions)
    delivery: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name:
            check_scenario_name(self.name)
        self.connection_overrides(ConnectionOverrideSpec())  # the caller's own values are checked at once

    def connection_overrides(self, below: ConnectionOverrideSpec) -> ConnectionOverrides:
        """The caller's connection values over ``below`` (the entry's over the scenario's), with the password."""
        spec = ConnectionOverrideSpec(host=self.host, port=self.port, qos=self.qos, username=self.username).over(below)
        return ConnectionOverrides(
            host=spec.host, port=spec.port, qos=spec.qos, username=spec.username, password=self.password
        )


@dataclass(frozen=True)
class PlannedFleet:
    """One fleet to create: the entry it comes from, its model, and the setup (name, ids, connection, ...)."""

    entry: ScenarioFleet
    model: DeviceModel
    setup: FleetSetup
    device_ids: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.setup.name

    def describe(self) -> str:
        """``fleets[2] (fleet 'home-camera', 2 x camera)``."""
        return f"{self.entry.path} (fleet '{self.name}', {self.entry.count} x {self.model.id})"


def _flatten(err: ModelError) -> str:
    return "; ".join(f"{path}: {message}" for path, message in err.problems) or str(err)


def _resolve_model(entry: ScenarioFleet, models: ModelRegistry) -> DeviceModel | Problem:
    where = f"{entry.path}.model"
    if entry.model_path is not None:
        for loaded in models.values():  # loaded from this very file already (perhaps by another path to it)
            if loaded.source is not None and loaded.source.resolve() == entry.model_path:
                return loaded
        try:
            model_id = models.load(entry.model_path)[0]
        except ModelError as err:
            return where, f"model file '{entry.model_path}' is invalid: {_flatten(err)}"
        except IoTixError as err:  # e.g. the id is already registered from another file
            return where, str(err)
        return models.get(model_id)
    try:
        return models.get(entry.model)
    except IoTixError as err:
        return where, f"{err}; load it first (Load Device Models) or give the path of a model file"


def _plan_one(
    scenario: Scenario, name: str, entry: ScenarioFleet, model: DeviceModel, overrides: ScenarioOverrides
) -> PlannedFleet | Problem:
    fleet_name = entry.fleet_name(name, model.id)
    seed = next((s for s in (overrides.seed, entry.seed, scenario.seed) if s is not None), None)
    try:
        connection = overrides.connection_overrides(entry.connection.over(scenario.connection))
    except ConfigurationError as err:
        return f"{entry.path}.connection", str(err)
    setup = FleetSetup(
        name=fleet_name,
        count=entry.count,
        id_pattern=entry.device_id_pattern(name),
        seed=seed,
        connection=connection,
        options=overrides.options,
        delivery=overrides.delivery,
    )
    try:
        setup.resolve(model)
    except ConfigurationError as err:
        return entry.path, f"fleet '{fleet_name}' of model '{model.id}': {err}"
    try:
        ids = setup.ids(fleet_name, model)
    except ConfigurationError as err:
        return f"{entry.path}.idPattern", str(err)
    return PlannedFleet(entry, model, setup, tuple(ids))


def _clash_problems(plans: list[PlannedFleet]) -> list[Problem]:
    """Fleet names and device ids that two entries (or two devices of one entry) would share."""
    problems: list[Problem] = []
    names: dict[str, PlannedFleet] = {}
    owners: dict[str, PlannedFleet] = {}
    for plan in plans:
        if plan.name in names:
            first = names[plan.name]
            problems.append(
                (f"{plan.entry.path}.name", f"fleet name '{plan.name}' is also the name of {first.entry.path}")
            )
        names.setdefault(plan.name, plan)
        for device_id in plan.device_ids:
            owner = owners.get(device_id)
            if owner is not None:
                where = "another device of this fleet" if owner is plan else f"a device of {owner.entry.path}"
                problems.append(
                    (
                        f"{plan.entry.path}.idPattern",
                        f"device id '{device_id}' is also the id of {where}; "
                        "use {index} or {n} and a pattern of its own",
                    )
                )
                break
            owners[device_id] = plan
    return problems


def plan_fleets(
    scenario: Scenario, models: ModelRegistry, overrides: ScenarioOverrides | None = None
) -> list[PlannedFleet]:
    """Plan every fleet of ``scenario`` (see the module docstring); :class:`ScenarioError` lists every problem.

    Models given as files are loaded into ``models`` on the way (as ``Load Device Models`` would).
    """
    overrides = overrides or ScenarioOverrides()
    name = overrides.name or scenario.name
    problems: list[Problem] = []
    plans: list[PlannedFleet] = []
    for entry in scenario.fleets:
        model = _resolve_model(entry, models)
        if not isinstance(model, DeviceModel):
            problems.append(model)
            continue
        plan = _plan_one(scenario, name, entry, model, overrides)
        if isinstance(plan, PlannedFleet):
            plans.append(plan)
        else:
            problems.append(plan)
    problems += _clash_problems(plans)
    if problems:
        raise ScenarioError(scenario.source, problems)
    return plans


async def create_fleets(sim: Simulator, plans: list[PlannedFleet], source: object = None) -> list[Fleet]:
    """Build every planned fleet in order, on the loop; all or none (see the module docstring).

    ``source`` (the scenario file) is named in the error.
    """
    created: list[Fleet] = []
    for plan in plans:
        try:
            created.append(sim.build_fleet(plan.model, plan.setup))
        except Exception as err:
            removed = [fleet.name for fleet in created]
            for fleet in reversed(created):
                with contextlib.suppress(Exception):
                    await sim.delete_fleet(fleet.name)
            if not isinstance(err, IoTixError):
                raise
            where = f"Scenario '{source}'" if source is not None else "Scenario"
            undone = (
                f" The {len(removed)} fleet(s) it created before were removed again ({', '.join(removed)})."
                if removed
                else " No fleet of it was created."
            )
            raise ConfigurationError(
                f"{where}: {plan.describe()} could not be created: {err}{undone} Fleets that existed before are "
                "untouched."
            ) from None
    return created
