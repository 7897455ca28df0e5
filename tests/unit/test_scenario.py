"""Scenario files (iotix.model.scenario) and planning and creating their fleets (iotix.fleet.scenario).

Parsing and planning need no loop and no network; the all-or-nothing creation runs on a fresh loop with a
simulator whose fleets are never started (nothing connects).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from iotix.errors import ConfigurationError, NotFoundError
from iotix.fleet.fleet import FleetOptions
from iotix.fleet.scenario import PlannedFleet, ScenarioOverrides, create_fleets, plan_fleets
from iotix.fleet.setup import FleetSetup
from iotix.fleet.simulator import Simulator
from iotix.model.loader import ModelRegistry, load_models, model_files
from iotix.model.scenario import (
    ScenarioError,
    ScenarioNotFoundError,
    load_scenario,
    load_scenario_dict,
    looks_like_scenario,
)

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
SCENARIOS = MODELS / "scenarios"
PACKAGE_SCHEMA = ROOT / "libraries" / "iotix" / "model" / "schema" / "scenario.schema.json"
EDITOR_SCHEMA = MODELS / "schema" / "scenario.schema.json"

#: IoTFlow's presets (simulators/fleet_simulator.py of IoTFlow's connectivity layer), per IoTix model.
IOTFLOW_MIXES = {
    "home": {"temperature-sensor": 3, "door-lock": 2, "camera": 2, "air-quality-monitor": 1, "thermostat": 1},
    "office": {"temperature-sensor": 5, "door-lock": 3, "camera": 4, "air-quality-monitor": 2, "thermostat": 2},
    "factory": {"temperature-sensor": 10, "door-lock": 5, "camera": 8, "air-quality-monitor": 4, "thermostat": 3},
    "custom": {"temperature-sensor": 3, "camera": 2},
}


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_yaml(folder: Path, name: str, data: Any) -> Path:
    return write(folder, name, yaml.safe_dump(data, sort_keys=False))


def problems_of(data: Any, tmp_path: Path, name: str = "site.yaml") -> list[tuple[str, str]]:
    path = write_yaml(tmp_path, name, data)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"Scenario '{path}' is invalid (")
    return caught.value.problems


@pytest.fixture
def registry() -> ModelRegistry:
    models = ModelRegistry()
    models.load(MODELS)
    return models


def entry(model: str = "thermostat", count: int = 2, **more: Any) -> dict[str, Any]:
    return {"model": model, "count": count, **more}


# --------------------------------------------------------------------------------------------------
# The shipped presets
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(IOTFLOW_MIXES))
def test_the_presets_have_iotflow_s_mixes_of_the_shipped_models(preset: str) -> None:
    scenario = load_scenario(SCENARIOS / f"{preset}.yaml")
    plans = plan_fleets(scenario, ModelRegistry())  # the presets name model files: nothing needs loading first
    mix = Counter({plan.model.id: len(plan.device_ids) for plan in plans})
    assert mix == IOTFLOW_MIXES[preset]
    assert scenario.name == preset
    assert scenario.device_count == sum(IOTFLOW_MIXES[preset].values())
    assert {p.model.source for p in plans} <= set(model_files(MODELS))  # the shipped files themselves
    for plan in plans:
        assert plan.name.startswith(f"{preset}-")
        assert all(device_id.startswith(f"{preset}-") for device_id in plan.device_ids)


def test_the_preset_sizes_are_iotflow_s() -> None:
    sizes = {name: load_scenario(SCENARIOS / f"{name}.yaml").device_count for name in IOTFLOW_MIXES}
    assert sizes == {"home": 9, "office": 16, "factory": 30, "custom": 5}


def test_every_shipped_scenario_is_a_preset_and_no_model() -> None:
    assert sorted(p.stem for p in SCENARIOS.iterdir()) == sorted(IOTFLOW_MIXES)
    assert not any(SCENARIOS in path.parents for path in model_files(MODELS))  # Load Device Models skips them
    assert not any(m.source and SCENARIOS in m.source.parents for m in load_models(MODELS))


def test_the_home_preset_plans_names_and_ids() -> None:
    plans = plan_fleets(load_scenario(SCENARIOS / "home.yaml"), ModelRegistry())
    assert [(p.name, p.device_ids) for p in plans] == [
        ("home-temperature-sensors", ("home-temperature-01", "home-temperature-02", "home-temperature-03")),
        ("home-door-locks", ("home-door-lock-01", "home-door-lock-02")),
        ("home-cameras", ("home-camera-01", "home-camera-02")),
        ("home-air-quality-monitors", ("home-air-quality-01",)),
        ("home-thermostats", ("home-thermostat-01",)),
    ]


def test_schema_copies_are_identical_and_valid() -> None:
    assert EDITOR_SCHEMA.read_bytes() == PACKAGE_SCHEMA.read_bytes(), (
        "models/schema/scenario.schema.json must be an exact copy of libraries/iotix/model/schema/scenario.schema.json"
    )
    schema = json.loads(PACKAGE_SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    for path in SCENARIOS.iterdir():  # as an editor sees them, with $schema
        assert list(Draft202012Validator(schema).iter_errors(yaml.safe_load(path.read_text("utf-8")))) == []


# --------------------------------------------------------------------------------------------------
# A good file: references, defaults and what wins
# --------------------------------------------------------------------------------------------------


def test_models_by_id_and_by_relative_path(tmp_path: Path, registry: ModelRegistry) -> None:
    own = write(tmp_path, "models/my-lock.json", (MODELS / "door-lock.json").read_text("utf-8"))
    own.write_text(own.read_text("utf-8").replace('"door-lock"', '"my-lock"'), encoding="utf-8")
    path = write_yaml(
        tmp_path / "sites",
        "flat.yaml",
        {"fleets": [entry("thermostat", 2), entry("../models/my-lock.json", 1)]},
    )
    scenario = load_scenario(path)
    assert scenario.name == "flat"  # the file's stem
    assert scenario.fleets[1].model_path == own.resolve()
    plans = plan_fleets(scenario, registry)
    assert [(p.name, p.model.id, p.device_ids) for p in plans] == [
        ("flat-thermostat", "thermostat", ("flat-thermostat-0", "flat-thermostat-1")),
        ("flat-my-lock", "my-lock", ("flat-my-lock-0",)),
    ]
    assert "my-lock" in registry  # loaded on the way, as Load Device Models would


def test_a_model_loaded_through_another_path_to_its_file_is_reused(tmp_path: Path) -> None:
    models = ModelRegistry()
    models.load(MODELS / "scenarios" / ".." / "camera.yaml")  # ${CURDIR}/../models/camera.yaml in a suite
    plans = plan_fleets(load_scenario(SCENARIOS / "custom.yaml"), models)
    assert [p.model.id for p in plans] == ["temperature-sensor", "camera"]


def test_connection_and_seed_the_caller_beats_the_entry_beats_the_scenario(registry: ModelRegistry) -> None:
    data = {
        "name": "site",
        "seed": 5,
        "connection": {"host": "scenario-host", "port": 1884, "qos": 1, "username": "site-user"},
        "fleets": [
            entry("thermostat", 1),
            entry("camera", 1, seed=9, connection={"host": "entry-host", "qos": 2}),
        ],
    }
    scenario = load_scenario_dict(data)
    first, second = plan_fleets(scenario, registry)
    assert (first.setup.seed, first.setup.connection.host, first.setup.connection.port) == (5, "scenario-host", 1884)
    assert (second.setup.seed, second.setup.connection.host, second.setup.connection.qos) == (9, "entry-host", 2)
    assert second.setup.connection.username == "site-user"
    overrides = ScenarioOverrides(host="127.0.0.1", port=2883, seed=1, username="u", password="s3cret")
    for plan in plan_fleets(scenario, registry, overrides):
        conn = plan.setup.connection
        assert (conn.host, conn.port, conn.username, conn.password, plan.setup.seed) == (
            "127.0.0.1",
            2883,
            "u",
            "s3cret",
            1,
        )
        assert plan.setup.connection.qos in (1, 2)  # not given by the caller: the file's
        connection, credentials, _ = plan.setup.resolve(plan.model)
        assert connection["host"] == "127.0.0.1" and credentials.password == "s3cret"
    assert "s3cret" not in repr(overrides)


def test_the_caller_s_name_and_options_reach_every_fleet(registry: ModelRegistry) -> None:
    scenario = load_scenario(SCENARIOS / "home.yaml")
    options = FleetOptions(offline_queue_size=7)
    plans = plan_fleets(scenario, registry, ScenarioOverrides(name="home-2", options=options, delivery={"log_size": 3}))
    assert plans[0].name == "home-2-temperature-sensors"
    assert plans[0].device_ids[0] == "home-2-temperature-01"
    assert all(p.setup.options is options and p.setup.delivery == {"log_size": 3} for p in plans)


def test_scenario_data_is_told_from_a_model() -> None:
    assert looks_like_scenario({"fleets": []})
    assert not looks_like_scenario({"fleets": [], "telemetry": []})
    assert not looks_like_scenario(["fleets"])
    assert not looks_like_scenario(yaml.safe_load((MODELS / "camera.yaml").read_text("utf-8")))


# --------------------------------------------------------------------------------------------------
# Each kind of error: file, JSON path, what was expected
# --------------------------------------------------------------------------------------------------


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ScenarioNotFoundError) as caught:
        load_scenario(tmp_path / "nowhere.yaml")
    assert isinstance(caught.value, NotFoundError)
    assert (
        str(caught.value)
        == f"Scenario '{tmp_path / 'nowhere.yaml'}' is invalid (1 problem):\n  - (root): file not found"
    )


def test_yaml_syntax_and_tags_are_named_with_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "fleets:\n  - model: [thermostat\n")
    with pytest.raises(ScenarioError, match=r"broken\.yaml' is invalid.*\n  - \(root\): YAML syntax error at line"):
        load_scenario(path)
    path = write(tmp_path, "tagged.yaml", "fleets: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ScenarioError, match=r"YAML tag '!!python/object/apply:os.system'.* is not allowed"):
        load_scenario(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the top level must be a mapping with a 'fleets' list, got nothing (the file is empty)"),
        ("- thermostat\n", "the top level must be a mapping with a 'fleets' list, got list"),
    ],
)
def test_the_top_level_must_be_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(write(tmp_path, "odd.yaml", text))
    assert caught.value.problems == [("(root)", expected)]


def test_keys_are_checked_at_every_level(tmp_path: Path) -> None:
    problems = dict(problems_of({"nmae": "x", "fleets": [entry(idpattern="a-{n}")]}, tmp_path))
    assert sorted(problems) == ["fleets[0].idpattern", "nmae"]
    assert problems["fleets[0].idpattern"].startswith(
        "unknown key 'idpattern' (did you mean 'idPattern'? allowed: model, count,"
    )
    assert problems["nmae"].startswith("unknown top-level key 'nmae' (did you mean 'name'? allowed: $schema, name,")
    assert problems_of({"name": "x"}, tmp_path) == [("fleets", "required, but missing")]
    assert problems_of({"fleets": []}, tmp_path) == [("fleets", "must have at least 1 item, got 0")]


def test_counts_names_and_connections_say_what_was_expected(tmp_path: Path) -> None:
    data = {
        "name": "my site",
        "fleets": [
            entry(count=0),
            entry(count="3"),
            {"count": 1},
            entry(name="a/b"),
            entry(connection={"port": 70000, "qos": 3, "password": "hunter2"}),
        ],
    }
    problems = dict(problems_of(data, tmp_path))
    assert problems["fleets[0].count"] == "must be >= 1, got 0"
    assert problems["fleets[1].count"] == "expected an integer, got string '3'"
    assert problems["fleets[2].model"] == "required, but missing"
    assert problems["fleets[3].name"].startswith("must be letters, digits, '.', '_', '-' and the placeholders")
    assert problems["fleets[4].connection.port"] == "must be <= 65535, got 70000"
    assert problems["fleets[4].connection.qos"] == "expected one of: 0, 1, 2; got 3"
    assert problems["fleets[4].connection.password"].startswith(
        "a password is never written in a scenario file: give Create Fleets From Scenario a Secret password="
    )
    assert problems["name"].startswith("must be letters, digits, '.', '_' or '-', starting with a letter or digit")
    assert "hunter2" not in str(problems)


def test_names_placeholders_and_model_files_are_checked_while_reading(tmp_path: Path) -> None:
    data = {
        "fleets": [
            entry(name="{site}-locks"),
            entry("camera", 1, name="cams"),
            entry("thermostat", 1, name="cams"),
            entry("thermostat", 1),  # named "{scenario}-{model}" by default
            entry("thermostat", 1),
            entry("missing-model.yaml", 1),
        ]
    }
    problems = problems_of(data, tmp_path)
    assert problems == [
        ("fleets[0].name", "unknown placeholder {site} in '{site}-locks' (a fleet name may use {scenario}, {model})"),
        ("fleets[2].name", "fleet name 'cams' is the name of fleets[1] too; give each a name"),
        (
            "fleets[4].name",
            "fleet name '{scenario}-{model}' (for model 'thermostat') is the name of fleets[3] too; give each a name",
        ),
        (
            "fleets[5].model",
            f"model file '{tmp_path / 'missing-model.yaml'}' not found "
            f"(relative to the scenario's folder '{tmp_path}')",
        ),
    ]


def test_an_unusable_file_name_needs_a_name(tmp_path: Path) -> None:
    problems = problems_of({"fleets": [entry()]}, tmp_path, name="my site.yaml")
    assert problems == [("name", "required, since the file name 'my site' is not usable as a name")]


def test_unknown_and_invalid_models_are_named_per_entry(tmp_path: Path, registry: ModelRegistry) -> None:
    bad = write(tmp_path, "bad-model.yaml", "id: bad\nname: Bad\n")
    path = write_yaml(
        tmp_path, "site.yaml", {"fleets": [entry("thermostat"), entry("thermostatt"), entry("bad-model.yaml")]}
    )
    with pytest.raises(ScenarioError) as caught:
        plan_fleets(load_scenario(path), registry)
    (unknown_path, unknown), (invalid_path, invalid) = caught.value.problems
    assert unknown_path == "fleets[1].model"
    assert unknown.startswith("No device model with id 'thermostatt' (known: air-quality-monitor, camera,")
    assert unknown.endswith("; load it first (Load Device Models) or give the path of a model file")
    assert invalid_path == "fleets[2].model"
    assert invalid.startswith(f"model file '{bad.resolve()}' is invalid: ")
    assert "; telemetry: required, but missing" in invalid
    assert str(caught.value).startswith(f"Scenario '{path}' is invalid (2 problems):\n  - fleets[1].model: ")


def test_id_patterns_and_clashing_ids_are_named_per_entry(registry: ModelRegistry) -> None:
    scenario = load_scenario_dict(
        {
            "name": "site",
            "fleets": [
                entry("thermostat", 2, idPattern="dev-{serial}"),
                entry("camera", 2, name="a", idPattern="room-{n}"),
                entry("door-lock", 2, name="b", idPattern="room-{n}"),
                entry("thermostat", 2, name="c", idPattern="same"),
            ],
        },
        source="site.yaml",
    )
    with pytest.raises(ScenarioError) as caught:
        plan_fleets(scenario, registry)
    assert caught.value.problems == [
        (
            "fleets[0].idPattern",
            "id pattern 'dev-{serial}' is not usable ('serial'); use placeholders {index}, {index:05d}, {n} "
            "(1-based), {fleet} or {model}",
        ),
        (
            "fleets[2].idPattern",
            "device id 'room-1' is also the id of a device of fleets[1]; use {index} or {n} and a pattern of its own",
        ),
        (
            "fleets[3].idPattern",
            "device id 'same' is also the id of another device of this fleet; use {index} or {n} and a pattern of "
            "its own",
        ),
    ]


def test_the_caller_s_values_are_checked_at_once() -> None:
    with pytest.raises(ConfigurationError, match=r"^qos must be 0, 1 or 2, got 5\.$"):
        ScenarioOverrides(qos=5)
    with pytest.raises(ConfigurationError, match=r"^scenario name 'a b' is not usable: letters, digits"):
        ScenarioOverrides(name="a b")


def test_a_fleet_setup_problem_names_the_entry_and_the_fleet(registry: ModelRegistry) -> None:
    scenario = load_scenario_dict({"name": "s", "fleets": [entry("camera", 1)]}, source="s.yaml")
    with pytest.raises(ScenarioError) as caught:
        plan_fleets(scenario, registry, ScenarioOverrides(delivery={"max_retries": -1}))
    ((where, message),) = caught.value.problems
    assert where == "fleets[0]"
    assert message.startswith("fleet 's-camera' of model 'camera': ") and "maxRetries must be >= 0" in message


# --------------------------------------------------------------------------------------------------
# Creating the fleets: all or none, and fleets that existed are untouched
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def simulator() -> Iterator[tuple[asyncio.AbstractEventLoop, Simulator]]:
    loop = asyncio.new_event_loop()
    sim = Simulator(loop)
    try:
        yield loop, sim
    finally:
        loop.run_until_complete(sim.shutdown())
        loop.close()


def test_every_planned_fleet_is_created_in_order(simulator: Any) -> None:
    loop, sim = simulator
    plans = plan_fleets(load_scenario(SCENARIOS / "home.yaml"), ModelRegistry())
    fleets = loop.run_until_complete(create_fleets(sim, plans))
    assert [f.name for f in fleets] == [p.name for p in plans] == sim.fleet_names()
    assert Counter({f.model.id: len(f.devices) for f in fleets}) == IOTFLOW_MIXES["home"]
    assert all(f.state == "created" for f in fleets)


def test_a_fleet_that_cannot_be_created_removes_the_ones_before_and_leaves_others(
    simulator: Any, registry: ModelRegistry
) -> None:
    loop, sim = simulator
    neighbour = sim.build_fleet(
        registry.get("camera"), FleetSetup(name="neighbour", count=1, id_pattern="home-camera-{n:02d}")
    )
    plans = plan_fleets(load_scenario(SCENARIOS / "home.yaml"), registry)
    with pytest.raises(ConfigurationError) as caught:
        loop.run_until_complete(create_fleets(sim, plans, SCENARIOS / "home.yaml"))
    assert str(caught.value) == (
        f"Scenario '{SCENARIOS / 'home.yaml'}': fleets[2] (fleet 'home-cameras', 2 x camera) could not be created: "
        "Fleet 'home-cameras': device id 'home-camera-01' is already used by fleet 'neighbour'; use another "
        "id_pattern. The 2 fleet(s) it created before were removed again (home-temperature-sensors, "
        "home-door-locks). Fleets that existed before are untouched."
    )
    assert sim.fleet_names() == ["neighbour"]
    assert sim.fleets["neighbour"] is neighbour


def test_a_first_fleet_that_cannot_be_created_says_so(simulator: Any, registry: ModelRegistry) -> None:
    loop, sim = simulator
    sim.build_fleet(registry.get("thermostat"), FleetSetup(name="home-temperature-sensors", count=1))
    plans: list[PlannedFleet] = plan_fleets(load_scenario(SCENARIOS / "home.yaml"), registry)
    with pytest.raises(
        ConfigurationError,
        match=r"A fleet named 'home-temperature-sensors' already exists .*"
        r"No fleet of it was created\. Fleets that existed before are untouched\.$",
    ):
        loop.run_until_complete(create_fleets(sim, plans))
    assert sim.fleet_names() == ["home-temperature-sensors"]
