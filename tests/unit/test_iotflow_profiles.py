"""The smart sensor models follow IoTFlow's simulation profiles as IoTFlow documents them.

IoTFlow's device simulator (IoTFlow connectivity layer, ``simulators/NEW_MQTT_SIMULATOR.md``, "Simulation
Profiles"; the same battery rates in ``simulators/new_mqtt_device_simulator.py``) documents four profiles:

| profile          | telemetry | heartbeat | battery drain |
| default          | 30 s      | 60 s      | 0.1 %/h       |
| high_frequency   | 5 s       | 30 s      | 0.5 %/h       |
| energy_efficient | 5 min     | 10 min    | 0.05 %/h      |
| industrial       | 10 s      | 30 s      | 0.3 %/h       |

and drains the battery linearly with the time the device has run (``100 - hours * rate``). These tests run the
models' battery generators over simulated hours and measure the rate, rather than reading it from the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from iotix.generate import DeviceValues
from iotix.model import DeviceModel, load_model

MODELS = Path(__file__).resolve().parents[2] / "models"

#: profile -> (telemetry interval ms, heartbeat interval ms, battery drain %/h), as IoTFlow documents them
PROFILES = {
    "default": (30_000, 60_000, 0.1),
    "high_frequency": (5_000, 30_000, 0.5),
    "energy_efficient": (300_000, 600_000, 0.05),
    "industrial": (10_000, 30_000, 0.3),
}

#: model file -> (profile, battery field)
MODEL_PROFILES = {
    "iotflow-smart-sensor.yaml": ("default", "battery_level"),
    "iotflow-smart-sensor-high-frequency.yaml": ("high_frequency", "battery_level"),
    "iotflow-smart-sensor-energy-efficient.yaml": ("energy_efficient", "battery_level"),
    "iotflow-smart-sensor-industrial.yaml": ("industrial", "battery_level"),
    "smart-sensor-default.yaml": ("default", "battery"),
    "smart-sensor-high-frequency.yaml": ("high_frequency", "battery"),
    "smart-sensor-energy-efficient.yaml": ("energy_efficient", "battery"),
    "smart-sensor-industrial.yaml": ("industrial", "battery"),
}


def _measured_drain_per_hour(model: DeviceModel, field: str, hours: float) -> tuple[float, float]:
    """(battery at t=0, drain per hour measured over ``hours`` of simulated time) of one device."""
    values = DeviceValues(model, "profile-0", seed=1)
    start = values.sample([field], 0.0)[field]
    later = values.sample([field], hours * 3600.0)[field]
    return start, (start - later) / hours


@pytest.mark.parametrize("file", list(MODEL_PROFILES))
def test_battery_drains_at_the_profile_rate(file: str) -> None:
    """Over 10 simulated hours the battery falls by 10 x the documented rate (within the field's rounding)."""
    profile, field = MODEL_PROFILES[file]
    model = load_model(MODELS / file)
    hours = 10.0
    start, rate = _measured_drain_per_hour(model, field, hours)
    precision = int(model.get_field(field).generator.get("precision", 6))
    tolerance = 10.0**-precision / hours  # one unit of the last shown decimal over the whole span
    assert start == 100.0
    assert rate == pytest.approx(PROFILES[profile][2], abs=tolerance), f"{file}: {rate:g} %/h"


@pytest.mark.parametrize("file", list(MODEL_PROFILES))
def test_battery_drain_is_linear_in_time(file: str) -> None:
    """After 100 simulated hours the drain is 100 x the rate: linear, as IoTFlow computes it, not per reading."""
    profile, field = MODEL_PROFILES[file]
    model = load_model(MODELS / file)
    _, rate = _measured_drain_per_hour(model, field, 100.0)
    assert rate == pytest.approx(PROFILES[profile][2], abs=0.001)


@pytest.mark.parametrize("file", list(MODEL_PROFILES))
def test_every_field_reports_at_the_profile_interval(file: str) -> None:
    profile, _ = MODEL_PROFILES[file]
    model = load_model(MODELS / file)
    assert {f.interval_ms for f in model.telemetry} == {PROFILES[profile][0]}


@pytest.mark.parametrize("file", [f for f in MODEL_PROFILES if f.startswith("iotflow-")])
def test_iotflow_heartbeat_at_the_profile_interval(file: str) -> None:
    profile, _ = MODEL_PROFILES[file]
    model = load_model(MODELS / file)
    assert model.connection["heartbeatIntervalMs"] == PROFILES[profile][1]
    assert model.metadata["profile"] == profile
