"""DeviceFleet component: fleets of several models at once, from a scenario file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from robot.api import logger
from robot.api.deco import keyword
from robot.api.types import Secret

from iotix._robot.component import LibraryComponent
from iotix._robot.convert import seconds
from iotix.errors import error_context
from iotix.fleet.fleet import FleetOptions
from iotix.fleet.scenario import PlannedFleet, ScenarioOverrides, create_fleets, plan_fleets
from iotix.model.scenario import load_scenario


class ScenarioKeywords(LibraryComponent):
    """Scenarios: a site of several device models, one fleet per entry of a scenario file."""

    @keyword
    def create_fleets_from_scenario(
        self,
        path: Path,
        name: str = "",
        seed: int | None = None,
        host: str = "",
        port: int | None = None,
        username: str = "",
        password: Secret = None,  # not "Secret | None": with a union Robot echoes a plain-text value in its error
        qos: int | None = None,
        offline_queue_size: int = 1000,
        reconnect_base: timedelta = timedelta(seconds=0.5),
        reconnect_cap: timedelta = timedelta(seconds=30),
        transmission_log: int = 100,
    ) -> list[str]:
        """Creates one fleet per entry of the scenario file ``path`` and returns their names, in file order.

        A scenario (YAML, see the project's ``docs/scenarios.md``) lists models with counts, fleet names,
        device id patterns and optional connection overrides and seeds; the project ships IoTFlow's site
        presets in ``models/scenarios/`` (``home``: 9 devices, ``office``: 16, ``factory``: 30, and a
        ``custom`` mix). Nothing connects yet: start the fleets with `Start Fleet`.

        - ``name``: the scenario's name in fleet names and device ids (``{scenario}``); default the file's
          ``name``. Give another one to create the same site twice, or per pabot process
          (``name=home-${PABOTQUEUEINDEX}``).
        - ``seed``: the seed of every fleet (default: each entry's ``seed``, else the file's, else 0).
        - ``host``, ``port``, ``username``, ``password`` (a ``Secret``), ``qos``: override the connection of
          every fleet; they win over the scenario's and its entries' ``connection``, which win over the models'.
          A scenario file never holds a password.
        - ``offline_queue_size``, ``reconnect_base``, ``reconnect_cap``, ``transmission_log``: as in
          `Create Fleet`, for every fleet.

        Every entry is checked before any fleet is created: an invalid file, an unknown model, a fleet name or
        device id given twice fail with the file, the entry's JSON path (``fleets[2].idPattern``) and what was
        expected. When a fleet cannot be created (its name or a device id is taken by an existing fleet), the
        fleets of the scenario created before it are removed again and the error names the entry; fleets that
        existed before are untouched. The fleets are deleted when the suite that created them ends.

        | ${fleets} =    Create Fleets From Scenario    ${MODELS}/scenarios/home.yaml
        | ...    host=${BROKER}[host]    port=${BROKER}[port]
        | FOR    ${fleet}    IN    @{fleets}
        |     Start Fleet    ${fleet}
        | END
        | ${second home} =    Create Fleets From Scenario    ${MODELS}/scenarios/home.yaml    name=home-2
        """
        with error_context("Create Fleets From Scenario"):
            overrides = ScenarioOverrides(
                name=name,
                host=host,
                port=port,
                qos=qos,
                username=username,
                password=password.value if password is not None else None,
                seed=seed,
                options=FleetOptions(
                    offline_queue_size=offline_queue_size,
                    reconnect_base_s=seconds(reconnect_base),
                    reconnect_cap_s=seconds(reconnect_cap),
                ),
                delivery={"log_size": transmission_log},
            )
        scenario = load_scenario(path)
        plans = plan_fleets(scenario, self.models, overrides)
        sim = self.simulator

        async def create() -> list[tuple[str, str]]:
            fleets = await create_fleets(sim, plans, scenario.source)
            return [(fleet.name, fleet.target) for fleet in fleets]

        created = self.call(create)
        for fleet_name, _ in created:
            self.own_fleet(fleet_name)
        logger.info(_summary(overrides.name or scenario.name, path, plans, dict(created)))
        return [fleet_name for fleet_name, _ in created]


def _summary(name: str, path: Path, plans: list[PlannedFleet], targets: dict[str, str]) -> str:
    devices = sum(len(plan.device_ids) for plan in plans)
    lines = [f"Created {len(plans)} fleets of scenario '{name}' ({path}), {devices} devices:"]
    for plan in plans:
        ids = plan.device_ids
        shown = f"ids {ids[0]} .. {ids[-1]}" if len(ids) > 1 else f"id {ids[0]}"
        lines.append(
            f"  {plan.name}: {len(ids)} x {plan.model.id} ({plan.model.protocol}) -> {targets.get(plan.name, '?')}; "
            + shown
        )
    return "\n".join(lines)
