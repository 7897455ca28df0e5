"""The models shipped in ``models/`` load cleanly, follow the conventions, and the schema copies agree."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from iotix.model import DeviceModel, load_model, load_models
from iotix.model.loader import model_files

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
#: The five example models of the iotix README, byte for byte (from ../shared/reference/iotix-readme-models).
README_MODELS = ROOT / "tests" / "data" / "iotix-readme-models"
README_IDS = (
    "simple-temperature",
    "environmental-sensor-v1",
    "ecg-monitor-v1",
    "replay-sensor-v1",
    "industrial-gateway-v1",
)
PACKAGE_SCHEMA = ROOT / "libraries" / "iotix" / "model" / "schema" / "device-model.schema.json"
EDITOR_SCHEMA = MODELS / "schema" / "device-model.schema.json"
MODEL_FILES = list(model_files(MODELS))

EXPECTED_IDS = {
    "kafka-vehicle-telemetry",
    "cellular-asset-tracker",
    "simple-temperature",
    "environmental-sensor-v1",
    "ecg-monitor-v1",
    "replay-sensor-v1",
    "industrial-gateway-v1",
    "simple-temperature-plus",
    "environmental-sensor-plus",
    "ecg-monitor-plus",
    "replay-sensor-plus",
    "industrial-gateway-plus",
    "temperature-sensor",
    "door-lock",
    "camera",
    "air-quality-monitor",
    "thermostat",
    "smart-meter",
    "gps-tracker",
    "smart-sensor-default",
    "smart-sensor-high-frequency",
    "smart-sensor-energy-efficient",
    "smart-sensor-industrial",
    "coap-soil-sensor",
    "coap-smart-plug",
    "iotflow-smart-sensor",
    "iotflow-smart-sensor-high-frequency",
    "iotflow-smart-sensor-energy-efficient",
    "iotflow-smart-sensor-industrial",
    "iotflow-hybrid-sensor",
    "secure-env-sensor",
}


def _raw(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def _models() -> dict[str, DeviceModel]:
    return {model.id: model for model in load_models(MODELS)}


def test_schema_copies_are_identical() -> None:
    assert EDITOR_SCHEMA.read_bytes() == PACKAGE_SCHEMA.read_bytes(), (
        "models/schema/device-model.schema.json must be an exact copy of "
        "libraries/iotix/model/schema/device-model.schema.json"
    )


def test_schema_is_valid_draft_2020_12() -> None:
    schema = json.loads(PACKAGE_SCHEMA.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def _property_schemas(node: Any, where: str = "#") -> list[tuple[str, dict[str, Any]]]:
    """Every (location, schema) listed under a ``properties`` keyword, recursively."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            found.append((f"{where}/properties/{name}", sub))
        for key, value in node.items():
            found += _property_schemas(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found += _property_schemas(item, f"{where}/{index}")
    return found


def test_schema_properties_are_documented_for_editors() -> None:
    """Editors show ``description`` on completion; conditional branches only restate constraints."""
    schema = json.loads(PACKAGE_SCHEMA.read_text(encoding="utf-8"))
    undocumented = [
        where
        for where, sub in _property_schemas(schema)
        if "description" not in sub
        and "$ref" not in sub
        and "/then/" not in where
        and "/if/" not in where
        and not where.endswith("/properties/type")  # the generator ``type: const`` of each branch
    ]
    assert undocumented == []


def test_all_expected_models_are_shipped() -> None:
    assert set(_models()) == EXPECTED_IDS
    assert sum(1 for path in MODEL_FILES if path.suffix == ".json") >= 2


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.name for p in MODEL_FILES])
def test_shipped_model_loads(path: Path) -> None:
    model = load_model(path)
    assert model.id == path.stem
    assert model.source == path
    assert _raw(path)["$schema"] == "./schema/device-model.schema.json"
    if model.id in README_IDS:  # the iotix README's models, as written there: see test_readme_models_are_shipped
        return
    assert model.description
    if model.protocol == "mqtt":
        assert model.connection["host"] == "localhost"
        assert model.connection["port"] == (8883 if "tls" in model.connection else 1883)  # mqtts: 8883
        assert model.connection["topicPattern"] == "iotix/${modelId}/${deviceId}/telemetry"
    elif model.protocol == "coap":
        assert model.connection["mode"] in ("client", "server")
    elif model.protocol == "kafka":
        assert model.connection["bootstrap"] == "localhost:9092"
        assert "${" not in model.connection["topic"]  # one topic, keyed by device id
    else:
        assert model.protocol == "http"
        assert model.connection["flow"] == "iotflow"
        assert model.connection["url"] == "http://localhost:5000"


def test_iotflow_profiles_intervals_and_battery_drain() -> None:
    """default 30 s, high_frequency 5 s, energy_efficient 5 min, industrial 10 s; drain follows the rate."""
    models = _models()
    interval = {m: models[m].telemetry[0].interval_ms for m in models if m.startswith("iotflow-smart-sensor")}
    assert interval == {
        "iotflow-smart-sensor": 30000,
        "iotflow-smart-sensor-high-frequency": 5000,
        "iotflow-smart-sensor-energy-efficient": 300000,
        "iotflow-smart-sensor-industrial": 10000,
    }
    drain = {m: models[m].get_field("battery_level").generator["drainPerHour"] for m in interval}
    assert sorted(drain, key=drain.get) == [
        "iotflow-smart-sensor-energy-efficient",
        "iotflow-smart-sensor",
        "iotflow-smart-sensor-industrial",
        "iotflow-smart-sensor-high-frequency",
    ]
    hf = models["iotflow-smart-sensor-high-frequency"].field_names
    assert {"accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"} <= set(hf)
    assert {"vibration", "power_consumption"} <= set(models["iotflow-smart-sensor-industrial"].field_names)


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.name for p in MODEL_FILES])
def test_shipped_model_is_valid_for_editors(path: Path) -> None:
    """The file as an editor sees it (with ``$schema``) passes the raw JSON Schema."""
    schema = json.loads(EDITOR_SCHEMA.read_text(encoding="utf-8"))
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(_raw(path))]
    assert errors == []


@pytest.mark.parametrize("model_id", README_IDS)
def test_readme_models_are_shipped_field_by_field(model_id: str) -> None:
    """The models shipped under the iotix README's ids are the README's models (besides ``$schema``); only
    the replay model's absolute dataFile is the data file shipped with IoTix."""
    (reference,) = README_MODELS.glob(f"{model_id}.json")
    (shipped,) = [path for path in MODEL_FILES if path.stem == model_id]
    expected, got = _raw(reference), _raw(shipped)
    assert got.pop("$schema") == "./schema/device-model.schema.json"
    if model_id == "replay-sensor-v1":
        generator = expected["telemetry"][0]["generator"]
        assert generator["dataFile"] == "/data/historical/sensor-readings.csv"
        generator["dataFile"] = "data/sensor-readings.csv"
        assert (MODELS / "data" / "sensor-readings.csv").is_file()
    assert got == expected


def test_shipped_readme_replay_file_has_the_readme_column() -> None:
    with (MODELS / "data" / "sensor-readings.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["timestamp", "value"] and len(rows) == 288
    values = [float(row["value"]) for row in rows]
    assert 15 < min(values) < max(values) < 30
    model = _models()["replay-sensor-v1"]
    assert model.get_field("measurement").generator == {
        "type": "replay",
        "dataFile": "data/sensor-readings.csv",
        "column": "value",
        "loop": True,
    }


def test_ecg_monitor() -> None:
    model = _models()["ecg-monitor-plus"]
    ecg = model.get_field("ecg")
    assert ecg.type == "binary" and ecg.interval_ms == 400
    assert ecg.generator["handler"] == "ecg_generator"
    assert ecg.generator["config"]["samples"] == 200 and ecg.generator["config"]["samplingRate"] == 500
    heart_rate = model.get_field("heartRate")
    assert heart_rate.type == "integer" and heart_rate.interval_ms == 1000
    assert (heart_rate.generator["min"], heart_rate.generator["max"]) == (40, 180)
    assert model.get_field("leadStatus").generator["values"] == ["connected", "lead_off"]
    (alert,) = model.behaviors
    assert alert.name == "arrhythmia-alert"
    assert alert.condition == "heartRate > 120 || heartRate < 50"
    assert "${heartRate}" in json.dumps(alert.action["payload"])
    assert model.payload.format == "json" and model.payload.binary_encoding == "base64"


def test_industrial_gateway() -> None:
    model = _models()["industrial-gateway-plus"]
    assert model.type == "gateway"
    assert {c.name for c in model.commands} == {"reboot", "updateFirmware"}
    update = next(c for c in model.commands if c.name == "updateFirmware")
    assert {p["name"]: p["type"] for p in update.parameters} == {"version": "string", "url": "string"}
    assert all(c.response_topic for c in model.commands)
    assert [b.condition for b in model.behaviors] == ["cpuUsage > 90"]


def test_smart_sensor_battery_drain_follows_the_profile() -> None:
    models = _models()
    drain = {
        profile: models[f"smart-sensor-{profile}"].get_field("battery").generator["drainPerHour"]
        for profile in ("high-frequency", "industrial", "default", "energy-efficient")
    }
    assert list(drain.values()) == sorted(drain.values(), reverse=True)
    assert len(set(drain.values())) == 4
    intervals = {
        profile: models[f"smart-sensor-{profile}"].get_field("temperature").interval_ms
        for profile in ("default", "high-frequency", "energy-efficient", "industrial")
    }
    assert intervals == {"default": 30_000, "high-frequency": 5_000, "energy-efficient": 300_000, "industrial": 10_000}


def test_replay_data_file() -> None:
    with (MODELS / "data" / "building-a-temperature.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["timestamp", "temperature", "humidity"]
    assert 150 <= len(rows) <= 250
    temperatures = [float(row["temperature"]) for row in rows]
    assert 15 < min(temperatures) < max(temperatures) < 30
    model = _models()["replay-sensor-plus"]
    generator = model.get_field("temperature").generator
    assert generator["dataFile"] == "data/building-a-temperature.csv" and generator["loop"] is True
