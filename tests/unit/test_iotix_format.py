"""Models written for iotix load as written: the five examples of its README byte for byte, a model of that
format written here, data roots for replay files, DEVICE_MODEL_PATH, and YAML alias bombs refused."""

from __future__ import annotations

import json
import os
import random
import statistics
import struct
import textwrap
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from iotix.cli import main
from iotix.errors import ConfigurationError
from iotix.generate import DeviceValues, build_generator, check_generator, clear_replay_cache
from iotix.generate.numeric import default_exponential_mean
from iotix.model import ModelError, ModelRegistry, load_model, load_model_dict, load_models
from iotix.model.loader import MAX_ALIAS_EXPANSION, default_model_path, pending_data_files

ROOT = Path(__file__).resolve().parents[2]
README_MODELS = ROOT / "tests" / "data" / "iotix-readme-models"
README_FILES = sorted(README_MODELS.glob("*.json"))
SCHEMA = ROOT / "libraries" / "iotix" / "model" / "schema" / "device-model.schema.json"
N = 20_000


@pytest.fixture(autouse=True)
def _no_data_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without IOTIX_DATA_PATH / DEVICE_MODEL_PATH and with an empty replay cache."""
    monkeypatch.delenv("IOTIX_DATA_PATH", raising=False)
    monkeypatch.delenv("DEVICE_MODEL_PATH", raising=False)
    clear_replay_cache()


def test_the_five_readme_models_are_there_byte_for_byte() -> None:
    assert [path.stem for path in README_FILES] == [
        "ecg-monitor-v1",
        "environmental-sensor-v1",
        "industrial-gateway-v1",
        "replay-sensor-v1",
        "simple-temperature",
    ]
    # the copy of ../shared/reference/iotix-readme-models, when that folder is there to compare with
    shared = ROOT.parent / "shared" / "reference" / "iotix-readme-models"
    for path in README_FILES:
        if (shared / path.name).is_file():
            assert path.read_bytes() == (shared / path.name).read_bytes()


@pytest.mark.parametrize("path", README_FILES, ids=[p.stem for p in README_FILES])
def test_each_readme_model_loads_unchanged(path: Path) -> None:
    model = load_model(path)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert model.id == raw["id"] == path.stem
    assert model.version == raw.get("version")  # optional: simple-temperature and replay-sensor-v1 have none
    assert model.connection["host"] == "mqtt-broker"  # connection.broker names the host
    assert [f.name for f in model.telemetry] == [f["name"] for f in raw["telemetry"]]
    for behavior, written in zip(model.behaviors, raw.get("behaviors", []), strict=True):
        assert behavior.condition == written["trigger"]["condition"]
    assert load_model_dict(raw, source=path) == model  # data in memory, as read


@pytest.mark.parametrize("path", README_FILES, ids=[p.stem for p in README_FILES])
def test_the_json_schema_accepts_each_readme_model_for_editors(path: Path) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    data = json.loads(path.read_text(encoding="utf-8"))
    assert [error.message for error in Draft202012Validator(schema).iter_errors(data)] == []


def test_iotix_validate_accepts_the_readme_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(README_MODELS)]) == 0
    out = capsys.readouterr().out
    assert "5 model files checked: 5 valid, 0 invalid" in out
    assert (
        "    note: field measurement replays '/data/historical/sensor-readings.csv', outside the model's folder and "
        "every data root: it is checked when a fleet is created" in out
    )


def test_readme_ecg_payload_length_follows_sample_size() -> None:
    model = load_model(README_MODELS / "ecg-monitor-v1.json")
    values = DeviceValues(model, "ecg-1", seed=1)
    readings = [values.sample(["ecgSamples"], 0.4 * i)["ecgSamples"] for i in range(5)]
    assert {len(reading) for reading in readings} == {200 * 16 // 8}  # 200 samples x 16 bit = 400 bytes
    samples = struct.unpack(">200h", readings[0])
    assert max(samples) > 500 or max(samples[:100]) != max(samples[100:])  # a signal, not silence
    assert values.sample(["leadStatus"], 0.0) == {"leadStatus": "connected"}


def test_readme_air_quality_is_exponential_with_the_documented_default_mean() -> None:
    model = load_model(README_MODELS / "environmental-sensor-v1.json")
    spec = model.get_field("airQualityIndex").generator
    assert "mean" not in spec
    generator = build_generator({**spec, "precision": 6}, "number", rng=random.Random(3))
    values = [generator.next(float(i)) for i in range(N)]
    assert default_exponential_mean(0, 500) == 50.0
    assert min(values) >= 0 and max(values) <= 500
    # Exp(50): the sample mean's standard error is 50 / sqrt(N) = 0.35; 5 of them
    assert abs(statistics.fmean(values) - 50.0) < 5 * 50.0 / N**0.5
    assert statistics.median(values) == pytest.approx(50.0 * 0.6931, rel=0.05)


def test_exponential_without_mean_needs_both_bounds() -> None:
    spec = {"type": "random", "distribution": "exponential", "max": 10}
    (problem,) = check_generator(spec, "number", None)
    assert problem[0] == "mean" and "unless min and max are both given" in problem[1]
    spec = {"type": "random", "distribution": "exponential", "min": 10, "max": 10}
    assert check_generator(spec, "number", None) == [
        ("max", "must be > min for the exponential distribution without a mean (the default mean is 0)")
    ]
    offset = build_generator(
        {"type": "random", "distribution": "exponential", "min": 10, "max": 110}, "number", rng=random.Random(5)
    )
    values = [offset.next(0.0) for _ in range(N)]
    assert abs(statistics.fmean(values) - 20.0) < 5 * 10.0 / N**0.5  # min + Exp((max - min) / 10)


# --------------------------------------------------------------------------------------------------
# ECG handler settings of the iotix format
# --------------------------------------------------------------------------------------------------


def ecg(config: dict[str, Any], seed: int = 7) -> bytes:
    spec = {"type": "custom", "handler": "ecg_generator", "config": config}
    return build_generator(spec, "binary", rng=random.Random(seed)).next(0.0)


@pytest.mark.parametrize(("bits", "code"), [(8, "b"), (16, "h"), (24, None), (32, "i")])
def test_ecg_sample_size_is_bits_per_sample(bits: int, code: str | None) -> None:
    reading = ecg({"samples": 120, "sampleSize": bits, "noise": 0})
    assert len(reading) == 120 * bits // 8
    if code is None:
        values = [int.from_bytes(reading[i : i + 3], "big", signed=True) for i in range(0, len(reading), 3)]
    else:
        values = list(struct.unpack(f">120{code}", reading))
    wide = list(struct.unpack(">120h", ecg({"samples": 120, "noise": 0})))
    if bits == 8:  # 16 µV per step
        assert all(abs(v * 16 - w) <= 8 for v, w in zip(values, wide, strict=True))
    else:  # 1 µV per step, as 16 bit
        assert values == wide


def test_ecg_noise_level_is_a_fraction_of_the_amplitude() -> None:
    assert ecg({"noiseLevel": 0.05}) == ecg({"noise": 0.05 * 1.2})
    assert ecg({"noiseLevel": 0.1, "amplitude": 2.0}) == ecg({"noise": 0.2, "amplitude": 2.0})
    assert ecg({"noiseLevel": 0.05}) != ecg({})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"noise": 0.1, "noiseLevel": 0.1}, "give noise (mV) or noiseLevel"),
        ({"sampleSize": 12}, "sampleSize (bits per sample) must be one of 8, 16, 24, 32, got 12"),
        ({"noiseLevel": -1}, "noiseLevel must be between 0 and 5, got -1"),
        ({"samplesize": 16}, "unknown ecg_generator setting(s) samplesize"),
    ],
)
def test_ecg_settings_problems(config: dict[str, Any], message: str) -> None:
    spec = {"type": "custom", "handler": "ecg_generator", "config": config}
    problems = check_generator(spec, "binary", None)
    assert any(path == "config" and message in text for path, text in problems), problems


# --------------------------------------------------------------------------------------------------
# A model of the iotix format written here
# --------------------------------------------------------------------------------------------------


def iotix_model(data_file: str) -> str:
    """A model as a QA engineer writes it from the iotix README: no version, broker, nested triggers,
    an exponential with min/max only, the ECG settings, an absolute replay file."""
    return textwrap.dedent(
        f"""\
        id: qa-ward-monitor
        name: Ward monitor
        type: sensor
        protocol: mqtt
        connection:
          broker: ward-broker
          port: 1883
          topicPattern: "ward/${{deviceId}}/vitals"
          qos: 1
        telemetry:
          - name: spo2
            type: integer
            unit: percent
            generator: {{type: random, min: 85, max: 100, distribution: normal, mean: 97, stddev: 1.5}}
            intervalMs: 1000
          - name: alarms
            type: integer
            generator: {{type: random, min: 0, max: 20, distribution: exponential}}
            intervalMs: 1000
          - name: ecg
            type: binary
            generator:
              type: custom
              handler: ecg_generator
              config: {{samples: 50, sampleSize: 24, samplingRate: 250, noiseLevel: 0.02}}
            intervalMs: 200
          - name: bedTemperature
            type: number
            generator: {{type: replay, dataFile: "{data_file}", column: celsius, loop: false}}
            intervalMs: 1000
        behaviors:
          - name: desaturation
            trigger: {{type: condition, condition: "spo2 < 90 && alarms >= 0"}}
            action: {{type: publish, topic: "ward/${{deviceId}}/alerts", payload: {{spo2: "${{spo2}}"}}}}
        """
    )


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A data root outside the model folder, with historical/beds.csv."""
    root = tmp_path / "mounted-data"
    (root / "historical").mkdir(parents=True)
    (root / "historical" / "beds.csv").write_text("ts,celsius\n1,36.5\n2,36.7\n3,37.9\n", encoding="utf-8")
    return root


def write_model(folder: Path, text: str, name: str = "ward.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_an_iotix_format_model_written_here_loads_with_a_data_root(tmp_path: Path, data_root: Path) -> None:
    data_file = data_root / "historical" / "beds.csv"
    path = write_model(tmp_path / "models", iotix_model(str(data_file)))
    model = load_model(path, [data_root])
    assert model.version is None and model.connection["host"] == "ward-broker"
    assert model.data_roots == (data_root,)
    (desaturation,) = model.behaviors
    assert desaturation.condition == "spo2 < 90 && alarms >= 0"
    assert pending_data_files(model) == []
    values = DeviceValues(model, "bed-1", seed=2)
    readings = [values.sample(["bedTemperature", "ecg", "alarms"], float(i)) for i in range(4)]
    assert [r["bedTemperature"] for r in readings] == [36.5, 36.7, 37.9, 37.9]  # loop: false holds the last
    assert {len(r["ecg"]) for r in readings} == {50 * 3}
    assert all(isinstance(r["alarms"], int) and 0 <= r["alarms"] <= 20 for r in readings)


def test_a_data_root_can_come_from_iotix_data_path(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_model(tmp_path / "models", iotix_model(str(data_root / "historical" / "beds.csv")))
    monkeypatch.setenv("IOTIX_DATA_PATH", os.pathsep.join([str(tmp_path / "elsewhere"), str(data_root)]))
    model = load_model(path)
    assert DeviceValues(model, "bed-1").sample(["bedTemperature"], 0.0) == {"bedTemperature": 36.5}


def test_an_absolute_data_file_outside_every_root_loads_and_is_refused_when_a_fleet_is_made(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_file = str(data_root / "historical" / "beds.csv")
    path = write_model(tmp_path / "models", iotix_model(data_file))
    model = load_model(path)  # loads: the file is checked when a fleet is created
    assert pending_data_files(model) == [("bedTemperature", data_file)]
    with pytest.raises(ConfigurationError) as refused:
        DeviceValues(model, "bed-1")
    message = str(refused.value)
    assert message.startswith("model 'qa-ward-monitor', telemetry field 'bedTemperature': ")
    assert f"path '{data_file}' is outside the model's folder ({(tmp_path / 'models').resolve()})" in message
    assert "IOTIX_DATA_PATH" in message and "data_dir= to Load Device Models" in message
    assert "data roots now: none" in message and "models/data/sensor-readings.csv" in message
    monkeypatch.setenv("IOTIX_DATA_PATH", str(data_root))  # set after loading: read when the fleet is made
    assert DeviceValues(model, "bed-1").sample(["bedTemperature"], 0.0) == {"bedTemperature": 36.5}


def test_the_readme_replay_model_needs_its_folder_as_a_data_root(tmp_path: Path) -> None:
    model = load_model(README_MODELS / "replay-sensor-v1.json")
    with pytest.raises(
        ConfigurationError, match=r"'/data/historical/sensor-readings.csv' is outside .*IOTIX_DATA_PATH"
    ):
        DeviceValues(model, "replay-1")


def test_data_files_under_a_root_are_checked_when_the_model_loads(tmp_path: Path, data_root: Path) -> None:
    path = write_model(tmp_path / "models", iotix_model(str(data_root / "historical" / "missing.csv")))
    with pytest.raises(ModelError) as missing:
        load_model(path, [data_root])
    assert "telemetry[3].generator.dataFile: file '" in str(missing.value)
    assert "missing.csv' not found" in str(missing.value)
    wrong_column = iotix_model(str(data_root / "historical" / "beds.csv")).replace("column: celsius", "column: kelvin")
    with pytest.raises(ModelError, match=r"column 'kelvin' not in"):
        load_model(write_model(tmp_path / "other", wrong_column), [data_root])


def test_dot_dot_and_symlinks_out_of_every_root_stay_refused(tmp_path: Path, data_root: Path) -> None:
    models = tmp_path / "models"
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "s.csv").write_text("celsius\n1\n", encoding="utf-8")
    # `..` out of the model's folder to a place that is no data root: refused when the model loads
    escape = write_model(models, iotix_model("../secret/s.csv"), "escape.yaml")
    with pytest.raises(ModelError, match=r"path '../secret/s.csv' escapes the model's folder; .*data roots now: "):
        load_model(escape, [data_root])
    # `..` into a data root is inside a root: accepted
    into_root = write_model(models, iotix_model("../mounted-data/historical/beds.csv"), "into.yaml")
    assert load_model(into_root, [data_root]).id == "qa-ward-monitor"
    # a symlink in a data root (or the model folder) that points out of every root: refused, absolute or not
    (data_root / "historical" / "link.csv").symlink_to(outside / "s.csv")
    linked = write_model(tmp_path / "m2", iotix_model(str(data_root / "historical" / "link.csv")))
    model = load_model(linked, [data_root])
    with pytest.raises(ConfigurationError, match=r"link.csv' \(it resolves to .*secret/s.csv\) is outside"):
        DeviceValues(model, "bed-1")
    (models / "local-link.csv").symlink_to(outside / "s.csv")
    local = write_model(models, iotix_model("local-link.csv"), "local.yaml")
    with pytest.raises(ModelError, match=r"local-link.csv' \(it resolves to .*\) escapes the model's folder"):
        load_model(local, [data_root])


def test_a_behavior_gives_its_condition_once(tmp_path: Path) -> None:
    text = iotix_model("x.csv").replace(
        'trigger: {type: condition, condition: "spo2 < 90 && alarms >= 0"}',
        'trigger: {type: condition, condition: "spo2 < 90"}\n    condition: "spo2 < 80"',
    )
    data_file = tmp_path / "models" / "x.csv"
    data_file.parent.mkdir(parents=True)
    data_file.write_text("celsius\n36\n", encoding="utf-8")
    with pytest.raises(
        ModelError, match=r"behaviors\[0\]: a behavior needs its condition: condition: \.\.\. or trigger"
    ):
        load_model(write_model(tmp_path / "models", text))
    bad = iotix_model("x.csv").replace('condition: "spo2 < 90 && alarms >= 0"', 'condition: "pulse > 3"')
    with pytest.raises(
        ModelError, match=r"behaviors\[0\]\.trigger\.condition: invalid condition 'pulse > 3': unknown name 'pulse'"
    ):
        load_model(write_model(tmp_path / "models", bad, "bad.yaml"))
    other = iotix_model("x.csv").replace("type: condition,", "type: schedule,")
    with pytest.raises(ModelError, match=r"behaviors\[0\]\.trigger\.type: expected one of: condition"):
        load_model(write_model(tmp_path / "models", other, "other.yaml"))


# --------------------------------------------------------------------------------------------------
# DEVICE_MODEL_PATH
# --------------------------------------------------------------------------------------------------


def test_models_are_read_from_device_model_path_else_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_model_path() == Path("models")
    with pytest.raises(
        ModelError, match=r"no path was given and DEVICE_MODEL_PATH is not set, so models are read from 'models'"
    ):
        ModelRegistry().load()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "simple-temperature.json").write_bytes(
        (README_MODELS / "simple-temperature.json").read_bytes()
    )
    assert ModelRegistry().load() == ["simple-temperature"]
    monkeypatch.setenv("DEVICE_MODEL_PATH", str(README_MODELS))
    assert default_model_path() == README_MODELS
    assert sorted(ModelRegistry().load()) == sorted(p.stem for p in README_FILES)
    assert len(load_models()) == 5
    monkeypatch.setenv("DEVICE_MODEL_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match=r"no such file or folder \(named by DEVICE_MODEL_PATH"):
        load_models()


def test_iotix_validate_without_a_path_reads_device_model_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["validate"]) == 1
    assert "give a path or set DEVICE_MODEL_PATH" in capsys.readouterr().out
    monkeypatch.setenv("DEVICE_MODEL_PATH", str(README_MODELS))
    assert main(["validate"]) == 0
    assert "5 model files checked: 5 valid, 0 invalid" in capsys.readouterr().out


def test_iotix_validate_and_sample_take_data_dirs(
    tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_model(tmp_path / "models", iotix_model(str(data_root / "historical" / "beds.csv")))
    assert main(["validate", str(path)]) == 0
    assert "note: field bedTemperature replays" in capsys.readouterr().out
    assert main(["validate", str(path), "--data-dir", str(data_root)]) == 0
    assert "note:" not in capsys.readouterr().out
    assert main(["sample", str(path), "-n", "3"]) == 1
    assert "IOTIX_DATA_PATH" in capsys.readouterr().err
    assert main(["sample", str(path), "-n", "14", "--data-dir", str(data_root)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["bedTemperature"] for line in lines if "bedTemperature" in line][:3] == [36.5, 36.7, 37.9]


# --------------------------------------------------------------------------------------------------
# YAML anchors and aliases
# --------------------------------------------------------------------------------------------------


MINIMAL = textwrap.dedent(
    """\
    id: anchors
    name: Anchors
    type: sensor
    protocol: mqtt
    connection: {broker: localhost, topicPattern: "t/${deviceId}"}
    telemetry:
      - {name: a, type: number, intervalMs: 1000, generator: &g {type: random, min: 0, max: 10}}
      - {name: b, type: number, intervalMs: 1000, generator: *g}
      - {name: c, type: number, intervalMs: 1000, generator: *g}
    """
)


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """``metadata`` holding the classic 'billion laughs': each level a list of ``width`` aliases of the last."""
    lines = ["metadata:", '  l0: &l0 ["lol"]']
    for level in range(1, levels + 1):
        aliases = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"  l{level}: &l{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def test_plain_reuse_with_anchors_and_aliases_loads(tmp_path: Path) -> None:
    model = load_model(write_model(tmp_path, MINIMAL, "anchors.yaml"))
    assert [f.generator for f in model.telemetry] == [{"type": "random", "min": 0, "max": 10}] * 3
    small = MINIMAL + alias_bomb(levels=3, width=3)  # 39 values added: reuse, not a bomb
    assert load_model(write_model(tmp_path, small, "small.yaml")).metadata["l3"][0][0][0] == ["lol"]


def test_a_yaml_alias_bomb_under_metadata_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = write_model(tmp_path, MINIMAL + alias_bomb(), "bomb.yaml")
    with pytest.raises(ModelError) as refused:
        load_model(path)
    message = str(refused.value)
    assert message.startswith(f"Device model '{path}' is invalid (1 problem):")
    # the nine levels add 926,177,094 values (level k: 1 + 9 x level k-1, from ["lol"]), the two *g 14 more
    assert "(root): YAML aliases (*name) would add 926,177,108 values to the" in message
    assert f"aliases may add at most {MAX_ALIAS_EXPANSION:,} values in all" in message
    assert main(["validate", str(path)]) == 1  # iotix validate says the same


def test_the_alias_bound_is_exact(tmp_path: Path) -> None:
    plain = MINIMAL.replace("generator: *g", "generator: {type: random, min: 0, max: 10}")
    base = "metadata:\n  base: &b " + json.dumps(list(range(99))) + "\n  one: &one 1\n  copies: ["
    # 100 aliases of a list of 100 values (the list and its 99 items) add exactly 10,000 values
    within = plain + base + ", ".join(["*b"] * 100) + "]\n"
    assert len(load_model(write_model(tmp_path, within, "within.yaml")).metadata["copies"]) == 100
    beyond = plain + base + ", ".join(["*b"] * 100) + ", *one]\n"  # one alias of a scalar more
    with pytest.raises(ModelError, match="would add 10,001 values to the"):
        load_model(write_model(tmp_path, beyond, "beyond.yaml"))


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = write_model(tmp_path, MINIMAL + "metadata:\n  loop: &loop [1, *loop]\n", "loop.yaml")
    with pytest.raises(ModelError, match=r"YAML anchor at line 11, column 9 contains an alias of itself"):
        load_model(path)


def test_yaml_nested_too_deeply_is_a_model_error(tmp_path: Path) -> None:
    path = write_model(tmp_path, MINIMAL + "metadata: {deep: " + "[" * 5000 + "]" * 5000 + "}\n", "deep.yaml")
    with pytest.raises(ModelError, match=r"\(root\): YAML nested too deeply"):
        load_model(path)
