"""The five device models of the iotix README, loaded from the files as written, make fleets against a real
Mosquitto; an independent ``mosquitto_sub`` checks that their payloads have the README's fields, types,
ranges and sizes (ECG: 200 samples x 16 bit = 400 bytes)."""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import Harness, all_running

from iotix.errors import ConfigurationError
from iotix.fleet.fleet import Fleet
from iotix.generate import clear_replay_cache
from iotix.model import DeviceModel, load_model
from iotix.services import find_mosquitto, start_local_broker

MOSQUITTO_SUB = shutil.which("mosquitto_sub")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed"),
    pytest.mark.skipif(MOSQUITTO_SUB is None, reason="mosquitto_sub is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
README_MODELS = ROOT / "tests" / "data" / "iotix-readme-models"
SHIPPED_DATA = ROOT / "models" / "data" / "sensor-readings.csv"
ENVELOPE = {"deviceId", "seq", "ts"}


@pytest.fixture(scope="module")
def broker() -> Iterator[Any]:
    b = start_local_broker("mosquitto")
    yield b
    b.stop()


@pytest.fixture
def h(broker: Any) -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


@dataclass
class Received:
    topic: str
    payload: dict[str, Any]


class Subscriber:
    """``mosquitto_sub -v`` on the broker: every message with its topic, as the broker delivered it."""

    def __init__(self, broker: Any, *topics: str) -> None:
        args = [str(MOSQUITTO_SUB), "-h", broker.host, "-p", str(broker.port), "-v", "-q", "1"]
        for topic in topics:
            args += ["-t", topic]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)  # subscribed before the fleet sends

    def stop(self) -> list[Received]:
        time.sleep(0.5)  # the last messages on their way
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        received = []
        for line in out.splitlines():
            topic, _, payload = line.partition(" ")
            received.append(Received(topic, json.loads(payload)))
        return received


def run_fleet(h: Harness, broker: Any, model: DeviceModel, name: str, count: int, sends: int) -> Fleet:
    """A fleet of ``model`` pointed at ``broker`` (the README's host mqtt-broker does not resolve here): started,
    running, and stopped once its devices together handed ``sends`` messages to the transport."""
    connection = {**model.connection, "host": broker.host, "port": broker.port}
    ids = [f"{name}-{i}" for i in range(count)]
    fleet = h.rt.call(lambda: h.sim.create_fleet(name, model, ids, connection=connection, seed=11))
    h.start(fleet)
    h.wait(lambda: all_running(fleet), 15, f"fleet {name} running")
    h.wait(lambda: fleet.stats()["messagesSent"] >= sends, 20, f"fleet {name} sent {sends} messages")
    h.stop(fleet)
    return fleet


def by_field(received: list[Received], field: str) -> list[Received]:
    return [message for message in received if field in message.payload]


def check_envelopes(received: list[Received], fleet: Fleet, topic: str, fields: set[str]) -> None:
    """Every message on the model's topic of its device, each device's seq counting up from 0."""
    sent = fleet.stats()["messagesSent"]
    assert len(received) == sent, f"mosquitto_sub got {len(received)} of {sent} messages"
    seqs: dict[str, list[int]] = {}
    for message in received:
        device = message.payload["deviceId"]
        assert message.topic == topic.replace("${deviceId}", device)
        assert ENVELOPE < set(message.payload) <= ENVELOPE | fields
        seqs.setdefault(device, []).append(message.payload["seq"])
    assert set(seqs) == set(fleet.device_ids())
    assert all(sorted(s) == list(range(len(s))) for s in seqs.values())


def numbers(received: list[Received], field: str) -> list[Any]:
    values = [message.payload[field] for message in by_field(received, field)]
    assert values, f"no reading of {field}"
    return values


def test_simple_temperature(h: Harness, broker: Any) -> None:
    model = load_model(README_MODELS / "simple-temperature.json")
    sub = Subscriber(broker, "devices/+/telemetry")
    fleet = run_fleet(h, broker, model, "readme-simple", count=30, sends=30)
    received = sub.stop()
    check_envelopes(received, fleet, "devices/${deviceId}/telemetry", {"temperature"})
    temperatures = numbers(received, "temperature")
    assert all(isinstance(t, float) and 20.0 <= t <= 30.0 for t in temperatures)
    assert max(temperatures) - min(temperatures) > 3  # uniform over 20..30, not a constant


def test_environmental_sensor(h: Harness, broker: Any) -> None:
    model = load_model(README_MODELS / "environmental-sensor-v1.json")
    sub = Subscriber(broker, "devices/+/telemetry")
    count = 40
    # every field is due at the start: (temperature, humidity) every 5 s, pressure 10 s, airQualityIndex 30 s
    fleet = run_fleet(h, broker, model, "readme-env", count=count, sends=3 * count)
    received = sub.stop()
    check_envelopes(
        received, fleet, "devices/${deviceId}/telemetry", {"temperature", "pressure", "humidity", "airQualityIndex"}
    )
    groups = {frozenset(m.payload) - ENVELOPE for m in received}
    assert groups == {frozenset({"temperature", "humidity"}), frozenset({"pressure"}), frozenset({"airQualityIndex"})}
    temperature = numbers(received, "temperature")
    assert all(isinstance(v, float) and 15.0 <= v <= 35.0 for v in temperature)
    assert 22.0 - 3.0 < sum(temperature) / len(temperature) < 22.0 + 3.0  # normal(22, 3): mean within 5 sigma/sqrt(n)
    assert all(isinstance(v, float) and 980.0 <= v <= 1040.0 for v in numbers(received, "pressure"))
    assert all(isinstance(v, float) and 20.0 <= v <= 90.0 for v in numbers(received, "humidity"))
    aqi = numbers(received, "airQualityIndex")
    assert all(type(v) is int and 0 <= v <= 500 for v in aqi)
    assert sum(aqi) / len(aqi) < 150  # exponential with the default mean (max - min) / 10 = 50


def test_ecg_monitor_sends_400_bytes_and_raises_the_trigger_alert(h: Harness, broker: Any) -> None:
    model = load_model(README_MODELS / "ecg-monitor-v1.json")
    sub = Subscriber(broker, "devices/+/ecg", "devices/+/alerts")
    count = 5
    ids = [f"readme-ecg-{i}" for i in range(count)]
    connection = {**model.connection, "host": broker.host, "port": broker.port}
    fleet = h.rt.call(lambda: h.sim.create_fleet("readme-ecg", model, ids, connection=connection, seed=3))
    h.start(fleet)
    h.wait(lambda: all_running(fleet), 15, "ECG fleet running")
    device = fleet.devices[0]
    h.rt.call(lambda: device.values.set_override("heartRate", 130))  # > 120: the arrhythmia trigger holds
    h.wait(lambda: fleet.stats()["messagesSent"] >= count * 8, 20, "ECG readings sent")
    h.stop(fleet)
    received = sub.stop()
    alerts = [m for m in received if m.topic.endswith("/alerts")]
    telemetry = [m for m in received if m.topic.endswith("/ecg")]
    check_envelopes(telemetry, fleet, "devices/${deviceId}/ecg", {"ecgSamples", "heartRate", "leadStatus"})
    ecg = numbers(telemetry, "ecgSamples")
    assert len(ecg) >= count * 4
    assert {len(base64.b64decode(v, validate=True)) for v in ecg} == {400}  # 200 samples x 16 bit
    heart_rates = [
        m.payload["heartRate"] for m in by_field(telemetry, "heartRate") if m.payload["deviceId"] != device.id
    ]
    assert heart_rates and all(type(v) is int and 60 <= v <= 100 for v in heart_rates)
    assert set(numbers(telemetry, "leadStatus")) == {"connected"}
    assert alerts, "the arrhythmia alert (trigger: {type: condition, ...}) was not published"
    assert {m.topic for m in alerts} == {f"devices/{device.id}/alerts"}
    assert alerts[0].payload == {"type": "arrhythmia", "heartRate": 130}


def test_industrial_gateway(h: Harness, broker: Any) -> None:
    model = load_model(README_MODELS / "industrial-gateway-v1.json")
    assert model.connection["qos"] == 2
    sub = Subscriber(broker, "gateways/+/data")
    count = 30
    # due at the start: (cpuUsage, memoryUsage) every 10 s, connectedDevices every 30 s
    fleet = run_fleet(h, broker, model, "readme-gw", count=count, sends=2 * count)
    received = sub.stop()
    check_envelopes(received, fleet, "gateways/${deviceId}/data", {"cpuUsage", "memoryUsage", "connectedDevices"})
    assert all(isinstance(v, float) and 10.0 <= v <= 80.0 for v in numbers(received, "cpuUsage"))
    assert set(numbers(received, "memoryUsage")) == {40}  # sequence: the first reading is start (40)
    assert all(type(v) is int and 5 <= v <= 50 for v in numbers(received, "connectedDevices"))
    assert {c.name: c.topic for c in model.commands} == {
        "reboot": "gateways/${deviceId}/commands/reboot",
        "updateFirmware": "gateways/${deviceId}/commands/update",
    }


def first_values(path: Path, count: int) -> list[float]:
    with path.open(encoding="utf-8") as handle:
        return [float(row["value"]) for row in csv.DictReader(handle)][:count]


def test_replay_sensor_as_written_is_refused_until_its_folder_is_a_data_root(
    h: Harness, broker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README file loads unchanged; its fleet needs /data/historical as a data root, which cannot be made
    here, so the whole path is shown with the same model pointing at a data root in a temp folder."""
    monkeypatch.delenv("IOTIX_DATA_PATH", raising=False)
    clear_replay_cache()
    written = load_model(README_MODELS / "replay-sensor-v1.json")
    connection = {**written.connection, "host": broker.host, "port": broker.port}
    with pytest.raises(
        ConfigurationError, match=r"'/data/historical/sensor-readings.csv' is outside .*IOTIX_DATA_PATH"
    ):
        h.rt.call(lambda: h.sim.create_fleet("refused", written, ["refused-0"], connection=connection))

    historical = tmp_path / "data" / "historical"
    historical.mkdir(parents=True)
    shutil.copy(SHIPPED_DATA, historical / "sensor-readings.csv")
    data = json.loads((README_MODELS / "replay-sensor-v1.json").read_text(encoding="utf-8"))
    data["telemetry"][0]["generator"]["dataFile"] = str(historical / "sensor-readings.csv")
    models = tmp_path / "models"
    models.mkdir()
    (models / "replay-sensor-v1.json").write_text(json.dumps(data), encoding="utf-8")
    monkeypatch.setenv("IOTIX_DATA_PATH", os.pathsep.join([str(tmp_path / "nothing-here"), str(tmp_path / "data")]))
    model = load_model(models / "replay-sensor-v1.json")
    sub = Subscriber(broker, "devices/+/telemetry")
    count = 4
    fleet = run_fleet(h, broker, model, "readme-replay", count=count, sends=3 * count)
    received = sub.stop()
    check_envelopes(received, fleet, "devices/${deviceId}/telemetry", {"measurement"})
    expected = first_values(SHIPPED_DATA, 10)
    for device in fleet.device_ids():
        mine = sorted((m.payload for m in received if m.payload["deviceId"] == device), key=lambda p: p["seq"])
        values = [p["measurement"] for p in mine]
        assert len(values) >= 3 and values == expected[: len(values)]


def test_shipped_replay_sensor_replays_the_shipped_file(h: Harness, broker: Any) -> None:
    model = load_model(ROOT / "models" / "replay-sensor-v1.yaml")
    sub = Subscriber(broker, "devices/+/telemetry")
    fleet = run_fleet(h, broker, model, "shipped-replay", count=3, sends=6)
    received = sub.stop()
    check_envelopes(received, fleet, "devices/${deviceId}/telemetry", {"measurement"})
    values = [m.payload["measurement"] for m in received if m.payload["deviceId"] == "shipped-replay-0"]
    assert values == first_values(SHIPPED_DATA, len(values)) and values
