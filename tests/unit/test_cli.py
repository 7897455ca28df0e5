"""Unit tests of the ``iotix`` console command (iotix.cli): ``validate`` and ``sample``."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from iotix import __version__
from iotix.cli import DEFAULT_START_TS, main
from iotix.model.loader import model_files

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
ENV_MODEL = MODELS / "environmental-sensor-plus.yaml"
ECG_MODEL = MODELS / "ecg-monitor-plus.yaml"


def model_data(model_id: str = "cli-test", **overrides: Any) -> dict[str, Any]:
    """A small valid model as data (``overrides`` replace top-level keys)."""
    data: dict[str, Any] = {
        "id": model_id,
        "name": "CLI test",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {"host": "localhost", "port": 1883, "topicPattern": "t/${deviceId}"},
        "telemetry": [
            {
                "name": "temperature",
                "type": "number",
                "intervalMs": 1000,
                "generator": {"type": "random", "min": 0, "max": 10},
            }
        ],
    }
    data.update(overrides)
    return data


def write_model(folder: Path, name: str, data: dict[str, Any]) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def broken_data(model_id: str = "broken") -> dict[str, Any]:
    """A model whose only problem is ``telemetry[0].generator.max`` below ``min``."""
    data = model_data(model_id)
    data["telemetry"][0]["generator"] = {"type": "random", "min": 10, "max": 5}
    return data


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def lines_of(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


# --------------------------------------------------------------------------------------------------
# General
# --------------------------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"iotix {__version__}"


@pytest.mark.parametrize(
    "argv",
    # ``validate`` without a path is not one: it reads DEVICE_MODEL_PATH, else models/ (test_validate_without_path_...)
    [
        [],
        ["validate", "--data-dir"],
        ["frobnicate"],
        ["sample"],
        ["sample", "x", "--count", "-1"],
        ["sample", "x", "--count", "a"],
    ],
)
def test_usage_errors_exit_2_without_traceback(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "usage: iotix" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------------------------------
# iotix validate
# --------------------------------------------------------------------------------------------------


def test_validate_all_shipped_models(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", str(MODELS))
    assert code == 0, out
    assert err == ""
    ok_lines = [line for line in out.splitlines() if line.startswith("ok  ")]
    files = list(model_files(MODELS))
    assert len(ok_lines) == len(files) >= 16
    for line, file in zip(ok_lines, files, strict=True):
        assert line.startswith(f"ok  {file}  (id ")
    assert f"ok  {ENV_MODEL}  (id environmental-sensor-plus, mqtt, 4 fields)" in ok_lines
    assert out.splitlines()[-1] == f"{len(files)} model files checked: {len(files)} valid, 0 invalid"


def test_validate_one_file_singular_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_model(tmp_path, "one.json", model_data("one"))
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 0
    assert out.splitlines()[0] == f"ok  {path}  (id one, mqtt, 1 field)"


def test_validate_broken_file_reports_json_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_model(tmp_path, "bad.json", broken_data())
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 1
    assert f"Device model '{path}' is invalid (1 problem):" in out
    assert "  - telemetry[0].generator.max: " in out
    assert "ok  " not in out
    assert "Traceback" not in out


def test_validate_mix_of_good_and_broken(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "models"
    good = write_model(folder, "a-good.json", model_data("good"))
    bad = write_model(folder / "sub", "b-bad.json", broken_data())
    syntax = folder / "c-syntax.yaml"
    syntax.write_text("id: [unclosed\n", encoding="utf-8")
    other = write_model(tmp_path, "other.json", model_data("other"))
    code, out, _ = run(capsys, "validate", str(folder), str(other))
    assert code == 1
    assert f"ok  {good}  (id good, mqtt, 1 field)" in out
    assert f"ok  {other}  (id other, mqtt, 1 field)" in out  # later paths are still checked
    assert f"Device model '{bad}' is invalid" in out
    assert "telemetry[0].generator.max" in out
    assert f"Device model '{syntax}' is invalid" in out
    assert "YAML syntax error at line" in out
    assert out.splitlines()[-1] == "4 model files checked: 2 valid, 2 invalid"


def test_validate_missing_path_is_named_and_others_still_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.yaml"
    code, out, err = run(capsys, "validate", str(missing), str(ENV_MODEL))
    assert code == 1
    assert f"'{missing}'" in out
    assert "no such file or folder" in out
    assert f"ok  {ENV_MODEL}" in out
    assert "Traceback" not in out + err


def test_validate_empty_folder_and_unsupported_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    notes = tmp_path / "notes.txt"
    notes.write_text("hello", encoding="utf-8")
    code, out, _ = run(capsys, "validate", str(tmp_path / "empty"), str(notes))
    assert code == 1
    assert "no model files" in out
    assert "unsupported file type '.txt'" in out


def test_validate_duplicate_ids_in_a_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    first = write_model(tmp_path, "a.json", model_data("same"))
    second = write_model(tmp_path, "b.json", model_data("same"))
    code, out, _ = run(capsys, "validate", str(tmp_path))
    assert code == 1
    assert f"ok  {first}" in out
    assert f"Device model '{second}' is invalid" in out
    assert f"duplicate model id 'same': already defined in '{first}'" in out


def test_validate_quiet_prints_only_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "validate", "--quiet", str(MODELS))
    assert (code, out) == (0, "")
    bad = write_model(tmp_path, "bad.json", broken_data())
    code, out, _ = run(capsys, "validate", "-q", str(ENV_MODEL), str(bad))
    assert code == 1
    assert out.startswith(f"Device model '{bad}' is invalid")
    assert "ok  " not in out
    assert "checked" not in out


def test_validate_as_a_subprocess() -> None:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(
        [sys.executable, "-m", "iotix.cli", "validate", "models"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    assert "ok  models/environmental-sensor-plus.yaml  (id environmental-sensor-plus, mqtt, 4 fields)" in done.stdout


# --------------------------------------------------------------------------------------------------
# iotix sample
# --------------------------------------------------------------------------------------------------


def test_sample_follows_the_fleet_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "sample", str(ENV_MODEL), "--count", "12")
    assert (code, err) == (0, "")
    messages = lines_of(out)
    temp_humidity, pressure, aqi = ["temperature", "humidity"], ["pressure"], ["airQualityIndex"]
    # groups in model order of first appearance: 10 s (temperature, humidity), 30 s, 60 s
    expected = [
        (0, temp_humidity),
        (0, pressure),
        (0, aqi),
        (10_000, temp_humidity),
        (20_000, temp_humidity),
        (30_000, temp_humidity),
        (30_000, pressure),
        (40_000, temp_humidity),
        (50_000, temp_humidity),
        (60_000, temp_humidity),
        (60_000, pressure),
        (60_000, aqi),
    ]
    assert [(m["ts"] - DEFAULT_START_TS, list(m)[3:]) for m in messages] == expected
    assert [m["seq"] for m in messages] == list(range(12))
    assert {m["deviceId"] for m in messages} == {"environmental-sensor-plus-0"}
    assert all(list(m)[:3] == ["deviceId", "seq", "ts"] for m in messages)
    assert all(980 <= m["pressure"] <= 1040 for m in messages if "pressure" in m)
    assert all(isinstance(m["airQualityIndex"], int) for m in messages if "airQualityIndex" in m)


def test_sample_default_count_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sample", str(ENV_MODEL))
    assert code == 0
    assert len(out.splitlines()) == 5
    code, out, _ = run(capsys, "sample", str(ENV_MODEL), "-n", "4", "--device-id", "env-7", "--start-ts", "1000")
    assert code == 0
    messages = lines_of(out)
    assert [m["ts"] for m in messages] == [1000, 1000, 1000, 11_000]
    assert {m["deviceId"] for m in messages} == {"env-7"}
    code, out, _ = run(capsys, "sample", str(ENV_MODEL), "--count", "0")
    assert (code, out) == (0, "")


def test_sample_prints_json_payloads_as_sent(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sample", str(ENV_MODEL), "-n", "1")
    assert code == 0
    line = out.splitlines()[0]
    assert line.startswith('{"deviceId":"environmental-sensor-plus-0","seq":0,"ts":1700000000000,"temperature":')
    assert " " not in line  # compact, as the encoder sends it


def test_sample_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sample", str(ENV_MODEL), "--count", "20", "--seed", "42"]
    first = run(capsys, *argv)
    second = run(capsys, *argv)
    assert first == second
    assert first[0] == 0
    # 7 and "7" are the same seed; the default seed is 0
    assert run(capsys, "sample", str(ENV_MODEL))[1] == run(capsys, "sample", str(ENV_MODEL), "--seed", "0")[1]


def test_sample_seed_and_device_id_change_the_values(capsys: pytest.CaptureFixture[str]) -> None:
    def values(*extra: str) -> list[dict[str, Any]]:
        code, out, _ = run(capsys, "sample", str(ENV_MODEL), "--count", "10", *extra)
        assert code == 0
        return [{k: v for k, v in m.items() if k not in ("deviceId", "seq", "ts")} for m in lines_of(out)]

    base = values("--seed", "1")
    assert values("--seed", "2") != base
    assert values("--seed", "1", "--device-id", "other") != base
    assert values("--seed", "1") == base


def test_sample_ecg_binary_is_base64_of_400_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sample", str(ECG_MODEL), "--count", "10")
    assert code == 0
    messages = lines_of(out)
    ecg = [m for m in messages if "ecg" in m]
    # ecg every 400 ms, heartRate every 1000 ms, leadStatus every 5000 ms; all at t=0 first, ties in model order
    assert [(m["ts"] - DEFAULT_START_TS, *list(m)[3:]) for m in messages] == [
        (0, "ecg"),
        (0, "heartRate"),
        (0, "leadStatus"),
        (400, "ecg"),
        (800, "ecg"),
        (1000, "heartRate"),
        (1200, "ecg"),
        (1600, "ecg"),
        (2000, "ecg"),
        (2000, "heartRate"),
    ]
    samples = [base64.b64decode(m["ecg"], validate=True) for m in ecg]
    assert all(len(s) == 400 for s in samples)
    assert len(set(samples)) == len(samples)  # the waveform continues, readings differ


def test_sample_by_model_id(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    by_path = run(capsys, "sample", str(ENV_MODEL), "--count", "3")
    monkeypatch.chdir(ROOT)  # the default models folder is ./models
    assert run(capsys, "sample", "environmental-sensor-plus", "--count", "3") == by_path
    monkeypatch.chdir("/")
    assert run(capsys, "sample", "environmental-sensor-plus", "--count", "3", "--models", str(MODELS)) == by_path


def test_sample_by_id_in_a_models_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write_model(tmp_path, "sub/not-named-after-id.json", model_data("hidden-id"))
    write_model(tmp_path, "broken.json", broken_data())  # a broken neighbour does not stop the lookup
    code, out, _ = run(capsys, "sample", "hidden-id", "--models", str(tmp_path), "-n", "2")
    assert code == 0
    assert [m["deviceId"] for m in lines_of(out)] == ["hidden-id-0", "hidden-id-0"]


def test_sample_unknown_model_id(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write_model(tmp_path, "a.json", model_data("known-a"))
    write_model(tmp_path, "broken.json", broken_data())
    code, out, err = run(capsys, "sample", "no-such-model", "--models", str(tmp_path))
    assert code == 1
    assert out == ""
    assert "no model with id 'no-such-model'" in err
    assert "known-a" in err
    assert "broken.json" in err  # files that could not be loaded are mentioned
    assert "Traceback" not in err


def test_sample_unknown_id_without_models_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "sample", "anything", "--models", str(tmp_path / "none"))
    assert (code, out) == (1, "")
    assert "no models folder" in err


def test_sample_missing_or_broken_model_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "sample", str(tmp_path / "missing.yaml"))
    assert (code, out) == (1, "")
    assert f"Device model '{tmp_path / 'missing.yaml'}' is invalid" in err
    bad = write_model(tmp_path, "bad.json", broken_data())
    code, out, err = run(capsys, "sample", str(bad))
    assert (code, out) == (1, "")
    assert f"Device model '{bad}' is invalid (1 problem):" in err
    assert "telemetry[0].generator.max" in err


def test_sample_broken_model_named_after_the_id(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write_model(tmp_path, "broken.json", broken_data("broken"))
    code, _, err = run(capsys, "sample", "broken", "--models", str(tmp_path))
    assert code == 1
    assert "telemetry[0].generator.max" in err


def binary_model(payload: dict[str, Any]) -> dict[str, Any]:
    """A model with a binary field every 500 ms (cycling inline values) and a counter every 1000 ms."""
    blobs = [base64.b64encode(bytes([i, 255, 0])).decode() for i in range(3)]
    return model_data(
        "binary-test",
        telemetry=[
            {"name": "counter", "type": "integer", "intervalMs": 1000, "generator": {"type": "sequence"}},
            {"name": "blob", "type": "binary", "intervalMs": 500, "generator": {"type": "replay", "values": blobs}},
        ],
        payload=payload,
    )


def test_sample_cbor_is_decoded_with_bytes_as_base64(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_model(tmp_path, "cbor.json", binary_model({"format": "cbor"}))
    code, out, _ = run(capsys, "sample", str(path), "-n", "5", "--start-ts", "0")
    assert code == 0
    assert lines_of(out) == [
        {"deviceId": "binary-test-0", "seq": 0, "ts": 0, "counter": 0},
        {"deviceId": "binary-test-0", "seq": 1, "ts": 0, "blob": base64.b64encode(bytes([0, 255, 0])).decode()},
        {"deviceId": "binary-test-0", "seq": 2, "ts": 500, "blob": base64.b64encode(bytes([1, 255, 0])).decode()},
        {"deviceId": "binary-test-0", "seq": 3, "ts": 1000, "counter": 1},
        {"deviceId": "binary-test-0", "seq": 4, "ts": 1000, "blob": base64.b64encode(bytes([2, 255, 0])).decode()},
    ]


def test_sample_raw_skips_groups_without_the_raw_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_model(tmp_path, "raw.json", binary_model({"format": "raw"}))
    code, out, _ = run(capsys, "sample", str(path), "-n", "4", "--start-ts", "0")
    assert code == 0
    assert lines_of(out) == [
        {"deviceId": "binary-test-0", "seq": seq, "ts": ts, "raw": base64.b64encode(bytes([i, 255, 0])).decode()}
        for seq, (ts, i) in enumerate([(0, 0), (500, 1), (1000, 2), (1500, 0)])
    ]
