"""Unit tests of iotix.generate: every generator type, checks, handlers, determinism and overrides."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import statistics
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from iotix.errors import ConfigurationError, NotFoundError
from iotix.generate import (
    DeviceValues,
    build_generator,
    check_generator,
    clear_replay_cache,
    device_rng,
    register_handler,
    registered_handlers,
    resolve_handler,
)
from iotix.generate.gps import distance_m
from iotix.generate.rng import DeviceRandom, device_stream
from iotix.model.types import DeviceModel, TelemetryField

N = 20_000


def make(spec: dict[str, Any], field_type: str = "number", *, seed: int = 1, base_dir: Path | None = None) -> Any:
    return build_generator(spec, field_type, rng=random.Random(seed), base_dir=base_dir)


def take(spec: dict[str, Any], field_type: str = "number", count: int = N, **kwargs: Any) -> list[Any]:
    generator = make(spec, field_type, **kwargs)
    return [generator.next(float(i)) for i in range(count)]


def model(*fields: TelemetryField, model_id: str = "test-model", base_dir: Path | None = None) -> DeviceModel:
    return DeviceModel(
        id=model_id,
        name="Test",
        version="1.0.0",
        type="sensor",
        protocol="mqtt",
        connection={"host": "localhost", "topicPattern": "t/${deviceId}"},
        telemetry=fields,
        base_dir=base_dir,
    )


def field(name: str, generator: dict[str, Any], field_type: str = "number", interval_ms: int = 1000) -> TelemetryField:
    return TelemetryField(name, field_type, interval_ms, generator)  # type: ignore[arg-type]


def problems_of(spec: Any, field_type: str = "number", base_dir: Path | None = None) -> list[tuple[str, str]]:
    result = check_generator(spec, field_type, base_dir)
    assert isinstance(result, list)
    return result


def assert_problem(problems: list[tuple[str, str]], path: str, fragment: str) -> None:
    assert any(p == path and fragment in m for p, m in problems), f"no ({path!r}, ...{fragment!r}...) in {problems}"


# --- random -----------------------------------------------------------------------------------------------


def test_uniform_stays_in_bounds_and_mean_is_central() -> None:
    values = take({"type": "random", "min": 10, "max": 20})
    assert all(10 <= v < 20 for v in values)
    assert all(isinstance(v, float) for v in values)
    standard_error = (10 / math.sqrt(12)) / math.sqrt(N)
    assert abs(statistics.fmean(values) - 15) < 5 * standard_error


def test_normal_mean_and_stddev() -> None:
    values = take({"type": "random", "distribution": "normal", "mean": 50, "stddev": 5})
    assert abs(statistics.fmean(values) - 50) < 5 * 5 / math.sqrt(N)
    assert abs(statistics.stdev(values) - 5) < 0.05 * 5


def test_normal_defaults_from_min_max_and_clamps() -> None:
    values = take({"type": "random", "distribution": "normal", "min": 0, "max": 60})
    assert all(0 <= v <= 60 for v in values)
    assert abs(statistics.fmean(values) - 30) < 5 * 10 / math.sqrt(N)
    assert abs(statistics.stdev(values) - 10) < 0.05 * 10


def test_normal_clamp_is_hit() -> None:
    values = take({"type": "random", "distribution": "normal", "mean": 0, "stddev": 10, "min": -1, "max": 1})
    assert min(values) == -1 and max(values) == 1


def test_exponential_mean_offset_by_min() -> None:
    values = take({"type": "random", "distribution": "exponential", "mean": 2, "min": 1})
    assert all(v >= 1 for v in values)
    assert abs(statistics.fmean(values) - 3) < 5 * 2 / math.sqrt(N)


def test_exponential_clamped_to_max() -> None:
    values = take({"type": "random", "distribution": "exponential", "mean": 2, "min": 0, "max": 0.5})
    assert all(0 <= v <= 0.5 for v in values)
    hits = values.count(0.5)
    assert hits > 0.7 * N  # P(Exp(mean 2) > 0.5) = e^-0.25 = 0.78


def test_integer_field_rounds_to_int() -> None:
    values = take({"type": "random", "min": 0, "max": 10}, "integer", count=1000)
    assert all(type(v) is int and 0 <= v <= 10 for v in values)


def test_precision_rounds_numbers() -> None:
    values = take({"type": "random", "min": 0, "max": 10, "precision": 2}, count=1000)
    assert all(v == round(v, 2) for v in values)
    assert len(set(values)) > 100


def test_string_field_gets_text() -> None:
    values = take({"type": "random", "min": 0, "max": 10, "precision": 1}, "string", count=100)
    assert all(isinstance(v, str) and len(v.split(".")[1]) == 1 for v in values)


# --- sequence ---------------------------------------------------------------------------------------------


def test_sequence_wraps_to_min() -> None:
    assert take({"type": "sequence", "min": 0, "max": 3}, "integer", count=9) == [0, 1, 2, 3, 0, 1, 2, 3, 0]


def test_sequence_start_and_step_wrap() -> None:
    assert take({"type": "sequence", "start": 2, "min": 0, "max": 3}, "integer", count=5) == [2, 3, 0, 1, 2]
    assert take({"type": "sequence", "min": 0, "max": 5, "step": 2}, "integer", count=5) == [0, 2, 4, 0, 2]


def test_sequence_without_wrap_holds_at_max() -> None:
    spec = {"type": "sequence", "max": 3, "wrap": False}
    assert take(spec, "integer", count=6) == [0, 1, 2, 3, 3, 3]
    assert take({**spec, "step": 2}, "integer", count=4) == [0, 2, 3, 3]


def test_sequence_negative_step() -> None:
    spec = {"type": "sequence", "min": 0, "max": 3, "step": -1}
    assert take(spec, "integer", count=6) == [3, 2, 1, 0, 3, 2]
    assert take({**spec, "wrap": False}, "integer", count=6) == [3, 2, 1, 0, 0, 0]


def test_sequence_unbounded_counts_forever() -> None:
    assert take({"type": "sequence", "start": 10, "step": 5}, "integer", count=4) == [10, 15, 20, 25]


def test_sequence_float_step_does_not_drift() -> None:
    values = take({"type": "sequence", "min": 0, "max": 1, "step": 0.1, "precision": 1}, count=12)
    assert values == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.0]


# --- constant ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field_type", "expected"),
    [
        (5, "number", 5.0),
        (5, "integer", 5),
        ("on", "string", "on"),
        (True, "boolean", True),
        ({"a": 1}, "object", {"a": 1}),
    ],
)
def test_constant(value: Any, field_type: str, expected: Any) -> None:
    values = take({"type": "constant", "value": value}, field_type, count=3)
    assert values == [expected] * 3
    assert type(values[0]) is type(expected)


def test_constant_binary_from_base64() -> None:
    assert take({"type": "constant", "value": "AAEC"}, "binary", count=1) == [b"\x00\x01\x02"]


# --- replay -----------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_replay_cache() -> None:
    clear_replay_cache()


def test_replay_inline_loops() -> None:
    assert take({"type": "replay", "values": [1, 2, 3]}, "integer", count=7) == [1, 2, 3, 1, 2, 3, 1]


def test_replay_inline_holds_last_without_loop() -> None:
    assert take({"type": "replay", "values": [1, 2, 3], "loop": False}, "integer", count=5) == [1, 2, 3, 3, 3]


def write_csv(directory: Path, name: str = "data.csv") -> Path:
    path = directory / name
    path.write_text("timestamp, temperature ,label\n1,20.5,a\n2,21,b\n\n3, 22.25 ,c\n", encoding="utf-8")
    return path


def test_replay_csv_column(tmp_path: Path) -> None:
    write_csv(tmp_path)
    spec = {"type": "replay", "dataFile": "data.csv", "column": "temperature"}
    assert take(spec, count=4, base_dir=tmp_path) == [20.5, 21.0, 22.25, 20.5]
    assert take(spec, "integer", count=3, base_dir=tmp_path) == [20, 21, 22]
    assert take({**spec, "column": "label"}, "string", count=3, base_dir=tmp_path) == ["a", "b", "c"]


def test_replay_csv_in_subfolder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data")
    spec = {"type": "replay", "dataFile": "data/data.csv", "column": "temperature", "loop": False}
    assert take(spec, count=4, base_dir=tmp_path) == [20.5, 21.0, 22.25, 22.25]


def test_replay_json_list_and_objects(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text(json.dumps([1.5, 2.5, "3.5"]))
    (tmp_path / "rows.json").write_text(json.dumps([{"v": 1}, {"v": 2}]))
    assert take({"type": "replay", "dataFile": "list.json"}, count=4, base_dir=tmp_path) == [
        1.5,
        2.5,
        3.5,
        1.5,
    ]
    spec = {"type": "replay", "dataFile": "rows.json", "column": "v"}
    assert take(spec, "integer", count=3, base_dir=tmp_path) == [1, 2, 1]


def test_replay_file_is_read_once_and_shared(tmp_path: Path) -> None:
    path = write_csv(tmp_path)
    spec = {"type": "replay", "dataFile": "data.csv", "column": "temperature"}
    first = make(spec, base_dir=tmp_path, seed=1)
    second = make(spec, base_dir=tmp_path, seed=2)
    assert first.values is second.values
    assert problems_of(spec, base_dir=tmp_path) == []
    assert make(spec, base_dir=tmp_path).values is first.values
    # a changed file is read again
    path.write_text("temperature\n99\n", encoding="utf-8")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    assert make(spec, base_dir=tmp_path).values == (99.0,)


def test_replay_non_numeric_cell_names_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("t,temperature\n1,20\n2,warm\n", encoding="utf-8")
    spec = {"type": "replay", "dataFile": "bad.csv", "column": "temperature"}
    problems = problems_of(spec, base_dir=tmp_path)
    assert_problem(problems, "dataFile", "bad.csv line 3, column 'temperature': 'warm' is not a number")
    with pytest.raises(ConfigurationError, match="line 3"):
        make(spec, base_dir=tmp_path)


def test_replay_file_problems(tmp_path: Path) -> None:
    write_csv(tmp_path, "x.csv")
    root = tmp_path.resolve()
    missing = problems_of({"type": "replay", "dataFile": "y.csv", "column": "a"}, base_dir=tmp_path)
    assert missing == [("dataFile", f"file 'y.csv' not found (looked in {root})")]
    escape = problems_of({"type": "replay", "dataFile": "../../etc/passwd", "column": "a"}, base_dir=tmp_path)
    assert escape == [
        (
            "dataFile",
            f"path '../../etc/passwd' escapes the model's folder; keep data files under {root}, or add the folder to "
            f"IOTIX_DATA_PATH (folders separated by '{os.pathsep}') or pass it as data_dir= to Load Device Models "
            "(--data-dir of iotix validate and sample); data roots now: none",
        )
    ]
    # An absolute path outside every data root (the iotix deployment's /data/historical/...) passes the model
    # check and is refused when the generator is built for a fleet, saying how to allow it.
    absolute = {"type": "replay", "dataFile": "/etc/passwd", "column": "a"}
    assert problems_of(absolute, base_dir=tmp_path) == []
    with pytest.raises(
        ConfigurationError, match=r"path '/etc/passwd' is outside the model's folder .* IOTIX_DATA_PATH"
    ):
        make(absolute, base_dir=tmp_path)
    column = problems_of({"type": "replay", "dataFile": "x.csv", "column": "temp"}, base_dir=tmp_path)
    assert column == [("column", "column 'temp' not in x.csv (columns: timestamp, temperature, label)")]
    no_column = problems_of({"type": "replay", "dataFile": "x.csv"}, base_dir=tmp_path)
    assert_problem(no_column, "column", "is required for a CSV 'dataFile'")
    both = problems_of({"type": "replay", "dataFile": "x.csv", "values": [1]}, base_dir=tmp_path)
    assert_problem(both, "values", "not both")
    assert_problem(problems_of({"type": "replay"}), "dataFile", "needs 'dataFile'")
    assert_problem(problems_of({"type": "replay", "values": []}), "values", "must not be empty")
    assert_problem(problems_of({"type": "replay", "values": [1, "x"]}), "values[1]", "'x' is not a number")
    (tmp_path / "d.json").write_text("{}")
    assert_problem(problems_of({"type": "replay", "dataFile": "d.json"}, base_dir=tmp_path), "dataFile", "JSON list")
    (tmp_path / "empty.csv").write_text("")
    empty = problems_of({"type": "replay", "dataFile": "empty.csv", "column": "a"}, base_dir=tmp_path)
    assert_problem(empty, "dataFile", "is empty")


# --- choice -----------------------------------------------------------------------------------------------


def test_choice_weights_frequencies() -> None:
    values = take({"type": "choice", "values": ["a", "b", "c"], "weights": [1, 3, 0]}, "string")
    share = values.count("a") / N
    assert abs(share - 0.25) < 5 * math.sqrt(0.25 * 0.75 / N)
    assert "c" not in values


def test_choice_unweighted_is_uniform() -> None:
    values = take({"type": "choice", "values": [1, 2, 3, 4]}, "integer")
    for v in (1, 2, 3, 4):
        assert abs(values.count(v) / N - 0.25) < 5 * math.sqrt(0.25 * 0.75 / N)


def test_choice_zero_weights_at_the_edges_never_chosen() -> None:
    values = take({"type": "choice", "values": [True, False, True], "weights": [0, 1, 0]}, "boolean")
    assert set(values) == {False}


# --- battery ----------------------------------------------------------------------------------------------


def test_battery_exact_values_and_floor() -> None:
    generator = make({"type": "battery", "start": 100, "drainPerHour": 10, "floor": 20})
    assert generator.next(0.0) == 100.0
    assert generator.next(3600.0) == 90.0
    assert generator.next(1800.0) == 95.0
    assert generator.next(8 * 3600.0) == 20.0
    assert generator.next(100 * 3600.0) == 20.0


def test_battery_noise_stays_within_floor_and_start() -> None:
    spec = {"type": "battery", "start": 50, "drainPerHour": 3600, "floor": 10, "noise": 5}
    generator = make(spec)
    values = [generator.next(float(t)) for t in range(100)]
    assert all(10 <= v <= 50 for v in values)
    assert values[-1] == 10


# --- sinusoidal -------------------------------------------------------------------------------------------


def test_sinusoidal_exact_without_noise() -> None:
    generator = make({"type": "sinusoidal", "periodMs": 4000, "amplitude": 2, "offset": 10})
    for t, expected in (
        (0.0, 10.0),
        (1.0, 12.0),
        (2.0, 10.0),
        (3.0, 8.0),
        (4.0, 10.0),
        (0.5, 10 + 2 * math.sin(math.pi / 4)),
    ):
        assert generator.next(t) == pytest.approx(expected, abs=1e-9)


def test_sinusoidal_phase_clamp_and_noise() -> None:
    phased = make({"type": "sinusoidal", "periodMs": 4000, "amplitude": 2, "offset": 10, "phase": 0.25})
    assert phased.next(0.0) == pytest.approx(12.0)
    clamped = make({"type": "sinusoidal", "periodMs": 4000, "amplitude": 2, "max": 1})
    assert clamped.next(1.0) == 1.0
    noisy = make({"type": "sinusoidal", "periodMs": 1000, "amplitude": 0, "noise": 2})
    values = [noisy.next(float(t)) for t in range(N)]
    assert abs(statistics.stdev(values) - 2) < 0.05 * 2


# --- randomWalk -------------------------------------------------------------------------------------------


def test_random_walk_bounds_and_steps() -> None:
    values = take({"type": "randomWalk", "min": 0, "max": 10, "step": 3, "start": 9})
    assert values[0] == 9
    assert all(0 <= v <= 10 for v in values)
    assert all(abs(b - a) <= 3 + 1e-9 for a, b in itertools.pairwise(values))
    assert max(values) > 9.5 and min(values) < 0.5  # it does reach both ends


def test_random_walk_defaults() -> None:
    values = take({"type": "randomWalk", "min": 0, "max": 100}, count=100)
    assert values[0] == 50
    assert all(abs(b - a) <= 1 + 1e-9 for a, b in itertools.pairwise(values))


# --- gps --------------------------------------------------------------------------------------------------


ROUTE = [[45.0, 7.0], [45.0, 7.1], [45.1, 7.1]]


def point(value: dict[str, float]) -> tuple[float, float]:
    return (value["lat"], value["lon"])


def test_gps_route_starts_at_first_point_and_moves_at_speed() -> None:
    generator = make({"type": "gps", "route": ROUTE, "speedKmh": 36, "loop": False}, "object")
    assert generator.next(0.0) == {"lat": 45.0, "lon": 7.0}
    metres_per_s = 10.0
    previous = (45.0, 7.0)
    for t in (10.0, 100.0, 400.0, 700.0):  # the first segment is ~7.9 km: 790 s at 10 m/s
        here = point(generator.next(t))
        assert distance_m((45.0, 7.0), here) == pytest.approx(metres_per_s * t, rel=0.01)
        assert distance_m(previous, here) > 0
        previous = here


def test_gps_route_stays_on_segments() -> None:
    generator = make({"type": "gps", "route": ROUTE, "speedKmh": 100, "loop": True}, "object")
    segments = [(ROUTE[0], ROUTE[1]), (ROUTE[1], ROUTE[2]), (ROUTE[2], ROUTE[0])]
    for step in range(300):
        here = point(generator.next(step * 10.0))
        detours = [distance_m(a, here) + distance_m(here, b) - distance_m(a, b) for a, b in segments]
        assert min(detours) < 1.0, (step, here)


def test_gps_route_end_and_loop() -> None:
    total = sum(distance_m(a, b) for a, b in ((ROUTE[0], ROUTE[1]), (ROUTE[1], ROUTE[2])))
    stop = make({"type": "gps", "route": ROUTE, "speedKmh": 36, "loop": False}, "object")
    assert point(stop.next(total / 10 + 100)) == (45.1, 7.1)
    loop = make({"type": "gps", "route": ROUTE, "speedKmh": 36}, "object")
    closing = total + distance_m(ROUTE[2], ROUTE[0])
    assert distance_m(point(loop.next(closing / 10)), (45.0, 7.0)) < 0.01
    assert distance_m(point(loop.next(closing / 10 + 10)), (45.0, 7.0)) == pytest.approx(100, rel=0.01)


def test_gps_precision() -> None:
    generator = make({"type": "gps", "route": ROUTE, "precision": 4}, "object")
    value = generator.next(33.3)
    assert value["lon"] == round(value["lon"], 4)


def test_gps_random_walk_within_radius() -> None:
    spec = {"type": "gps", "mode": "randomWalk", "center": [45.0, 7.0], "radiusM": 200, "stepM": 25}
    values = take(spec, "object", count=5000)
    assert values[0] == {"lat": 45.0, "lon": 7.0}
    distances = [distance_m((45.0, 7.0), point(v)) for v in values]
    assert max(distances) <= 200 * 1.001
    assert max(distances) > 150  # it does wander
    assert all(distance_m(point(a), point(b)) <= 25 * 1.01 for a, b in itertools.pairwise(values))


# --- ecg --------------------------------------------------------------------------------------------------


def ecg_samples(config: dict[str, Any], readings: int, seed: int = 3) -> list[int]:
    generator = make({"type": "custom", "handler": "ecg_generator", "config": config}, "binary", seed=seed)
    samples: list[int] = []
    for n in range(readings):
        payload = generator.next(n * 0.4)
        samples.extend(struct.unpack(f">{len(payload) // 2}h", payload))
    return samples


def test_ecg_reading_is_400_bytes_of_int16() -> None:
    generator = make({"type": "custom", "handler": "ecg_generator"}, "binary")
    payload = generator.next(0.0)
    assert isinstance(payload, bytes) and len(payload) == 400
    values = struct.unpack(">200h", payload)
    assert all(-32768 <= v <= 32767 for v in values)
    assert max(values) - min(values) > 100  # not flat


def test_ecg_r_peaks_follow_heart_rate() -> None:
    samples = ecg_samples({"heartRate": 60, "samplingRate": 500, "noise": 0}, readings=20)  # 8 s
    top = max(samples)
    assert 1000 < top < 1400  # R = 1.2 mV (+ wander)
    peaks = [
        i
        for i in range(1, len(samples) - 1)
        if samples[i] > 0.6 * top and samples[i] == max(samples[max(0, i - 100) : i + 100])
    ]
    gaps = [b - a for a, b in itertools.pairwise(peaks)]
    assert len(peaks) >= 7
    assert all(abs(gap - 500) <= 2 for gap in gaps), gaps
    # the R peak is the largest wave of each beat
    for p in peaks[1:-1]:
        assert samples[p] == max(samples[p - 250 : p + 250])


def test_ecg_is_continuous_across_readings() -> None:
    short = ecg_samples({"samples": 100, "noise": 0}, readings=4)
    long = ecg_samples({"samples": 400, "noise": 0}, readings=1)
    assert short == long


def test_ecg_noise_and_determinism() -> None:
    assert ecg_samples({}, 2, seed=5) == ecg_samples({}, 2, seed=5)
    assert ecg_samples({}, 2, seed=5) != ecg_samples({}, 2, seed=6)


def test_ecg_config_problems() -> None:
    spec = {"type": "custom", "handler": "ecg_generator", "config": {"heartRate": 1000}}
    assert_problem(problems_of(spec, "binary"), "config", "heartRate must be between 20 and 300")
    typo = {"type": "custom", "handler": "ecg_generator", "config": {"heartrate": 60}}
    assert_problem(problems_of(typo, "binary"), "config", "unknown ecg_generator setting(s) heartrate")
    assert_problem(problems_of({"type": "custom", "handler": "ecg_generator"}, "number"), "handler", "'number'")


# --- custom handlers --------------------------------------------------------------------------------------


def test_custom_module_function_handler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "iotix_test_handlers.py").write_text(
        textwrap.dedent(
            """
            def ramp(config, rng):
                step = config.get("step", 1)
                def value(t):
                    return t * step + rng.random() * 0
                return value

            def broken(config, rng):
                raise ValueError("step must be positive")

            NOT_CALLABLE = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = {"type": "custom", "handler": "iotix_test_handlers:ramp", "config": {"step": 2}}
    generator = make(spec, "integer")
    assert [generator.next(t) for t in (0.0, 1.0, 2.5)] == [0, 2, 5]
    assert problems_of(spec, "integer") == []
    assert_problem(
        problems_of({"type": "custom", "handler": "iotix_test_handlers:nope"}),
        "handler",
        "module 'iotix_test_handlers' has no function 'nope'",
    )
    assert_problem(
        problems_of({"type": "custom", "handler": "iotix_no_such_module:f"}),
        "handler",
        "cannot import module",
    )
    assert_problem(
        problems_of({"type": "custom", "handler": "iotix_test_handlers:broken"}),
        "config",
        "step must be positive",
    )
    assert_problem(
        problems_of({"type": "custom", "handler": "iotix_test_handlers:NOT_CALLABLE"}),
        "handler",
        "not a function",
    )


def test_register_and_resolve_handler() -> None:
    def factory(config: dict[str, Any], rng: random.Random) -> Any:
        return lambda t: config["word"]

    register_handler("test_word", factory)
    assert resolve_handler("test_word") is factory
    assert "test_word" in registered_handlers() and "ecg_generator" in registered_handlers()
    generator = make({"type": "custom", "handler": "test_word", "config": {"word": "hi"}}, "string")
    assert generator.next(0.0) == "hi"
    with pytest.raises(ConfigurationError, match="unknown handler 'nope'"):
        resolve_handler("nope")
    with pytest.raises(ConfigurationError):
        register_handler("a:b", factory)


def test_custom_handler_returning_non_callable() -> None:
    register_handler("test_not_callable", lambda config, rng: 42)
    assert_problem(problems_of({"type": "custom", "handler": "test_not_callable"}), "handler", "not a callable")


# --- determinism ------------------------------------------------------------------------------------------


MIXED = (
    field("temperature", {"type": "random", "distribution": "normal", "mean": 21, "stddev": 2, "precision": 2}),
    field("humidity", {"type": "randomWalk", "min": 20, "max": 80, "step": 1}),
    field("state", {"type": "choice", "values": ["ok", "warn"], "weights": [9, 1]}, "string", 5000),
    field("counter", {"type": "sequence", "max": 1000}, "integer", 5000),
    field("battery", {"type": "battery", "drainPerHour": 1, "noise": 0.1}, "number", 60000),
)


def run(device_id: str, seed: Any = None, count: int = 100) -> list[dict[str, Any]]:
    values = DeviceValues(model(*MIXED), device_id, seed)
    names = tuple(f.name for f in MIXED)
    return [values.sample(names, float(t)) for t in range(count)]


def test_same_device_same_values() -> None:
    assert run("dev-1") == run("dev-1")
    assert run("dev-1", 7) == run("dev-1", "7")
    assert run("dev-1") == run("dev-1", 0)


def test_other_device_or_seed_other_values() -> None:
    assert run("dev-1") != run("dev-2")
    assert run("dev-1") != run("dev-1", 1)
    starts = {tuple(r["temperature"] for r in run(f"dev-{i}", count=5)) for i in range(20)}
    assert len(starts) == 20


def test_builtin_fields_share_one_stream_per_device() -> None:
    """One RNG per device (memory), so sampling order matters but a run repeats exactly."""
    values = DeviceValues(model(*MIXED), "dev-1", None)
    rngs = {id(g._rng) for g in values._generators if hasattr(g, "_rng")}
    assert len(rngs) == 1
    shared = next(g._rng for g in values._generators if hasattr(g, "_rng"))
    assert isinstance(shared, DeviceRandom)  # 40 bytes, where a random.Random holds 2.5 KB
    again = DeviceValues(model(*MIXED), "dev-1", None)
    names = [f.name for f in MIXED]
    first = [values.sample(names, float(t)) for t in range(20)]
    assert first == [again.sample(names, float(t)) for t in range(20)]


def test_device_rng_is_stable_across_processes() -> None:
    here = device_rng("m", "d", None, "f").random()
    code = "from iotix.generate import device_rng; print(repr(device_rng('m', 'd', None, 'f').random()))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert float(out.stdout) == here
    assert device_rng("m", "d", None, "g").random() != here
    assert device_rng("m", "d", 0, "f").random() == here


def test_device_stream_is_stable_across_processes_and_uniform() -> None:
    stream = device_stream("m", "d", None)
    here = [stream.random() for _ in range(3)]
    code = (
        "from iotix.generate.rng import device_stream as s; r = s('m', 'd', None); print([r.random() for _ in 'ab1'])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "54321"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == repr(here)
    assert device_stream("m", "d", 1).random() != here[0] and device_stream("m", "e", None).random() != here[0]
    rng = DeviceRandom(7)
    draws = [rng.random() for _ in range(N)]
    assert all(0.0 <= x < 1.0 for x in draws)
    # uniform: mean 1/2, sd of the mean sqrt(1/12/N) = 0.002; each decile holds 10 % (sd 0.2 %)
    assert abs(sum(draws) / N - 0.5) < 0.01
    deciles = [0] * 10
    for x in draws:
        deciles[int(x * 10)] += 1
    assert all(abs(n / N - 0.1) < 0.01 for n in deciles), deciles


def test_device_stream_gauss_has_the_asked_mean_and_spread() -> None:
    rng = DeviceRandom(11)
    xs = [rng.gauss(5.0, 2.0) for _ in range(N)]
    mean = sum(xs) / N
    sd = (sum((x - mean) ** 2 for x in xs) / (N - 1)) ** 0.5
    assert abs(mean - 5.0) < 0.1  # sd of the mean: 2 / sqrt(N) = 0.014
    assert abs(sd - 2.0) < 0.1


# --- DeviceValues -----------------------------------------------------------------------------------------


def test_groups_by_interval_in_model_order() -> None:
    values = DeviceValues(model(*MIXED), "d", None)
    assert values.groups == [
        (1000, ("temperature", "humidity")),
        (5000, ("state", "counter")),
        (60000, ("battery",)),
    ]


def test_override_returns_value_and_sequence_resumes() -> None:
    values = DeviceValues(model(field("counter", {"type": "sequence"}, "integer")), "d", None)
    names = ("counter",)
    assert [values.sample(names, 0)["counter"] for _ in range(2)] == [0, 1]
    values.set_override("counter", "42")
    assert values.overrides == {"counter": 42}
    assert [values.sample(names, 0)["counter"] for _ in range(2)] == [42, 42]
    values.clear_override("counter")
    assert values.sample(names, 0) == {"counter": 4}
    values.clear_override("counter")  # not set: fine


def test_override_coercion_and_unknown_field() -> None:
    values = DeviceValues(model(*MIXED), "d", None)
    values.set_override("temperature", "99.5")
    assert values.sample(("temperature", "humidity"), 0)["temperature"] == 99.5
    with pytest.raises(ConfigurationError, match="not a number"):
        values.set_override("temperature", "hot")
    with pytest.raises(NotFoundError, match="no telemetry field 'nope'"):
        values.set_override("nope", 1)
    with pytest.raises(NotFoundError, match="no telemetry field 'nope'"):
        values.sample(("nope",), 0)


def test_replay_file_relative_to_model_base_dir(tmp_path: Path) -> None:
    write_csv(tmp_path)
    spec = {"type": "replay", "dataFile": "data.csv", "column": "temperature"}
    devices = [DeviceValues(model(field("t", spec), base_dir=tmp_path), f"d{i}", None) for i in range(3)]
    assert [d.sample(("t",), 0) for d in devices] == [{"t": 20.5}] * 3


def test_generators_have_slots() -> None:
    specs: list[tuple[dict[str, Any], str]] = [
        ({"type": "random", "min": 0, "max": 1}, "number"),
        ({"type": "sequence"}, "integer"),
        ({"type": "replay", "values": [1]}, "number"),
        ({"type": "gps", "route": ROUTE}, "object"),
        ({"type": "custom", "handler": "ecg_generator"}, "binary"),
    ]
    for spec, field_type in specs:
        assert not hasattr(make(spec, field_type), "__dict__")
    assert not hasattr(DeviceValues(model(*MIXED), "d", None), "__dict__")


# --- check_generator --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field_type", "path", "fragment"),
    [
        ({"type": "random", "min": 10, "max": 5}, "number", "max", "must be >= min (10), got 5"),
        (
            {"type": "foo"},
            "number",
            "type",
            "unknown generator type 'foo' (expected one of: random, sequence,",
        ),
        ({}, "number", "type", "is required"),
        ({"type": "custom", "handler": "foo"}, "number", "handler", "unknown handler 'foo' (registered: "),
        ({"type": "custom", "handler": "foo"}, "number", "handler", "; or give 'package.module:function'"),
        ({"type": "custom"}, "number", "handler", "is required"),
        (
            {"type": "choice", "values": [1, 2], "weights": [1]},
            "number",
            "weights",
            "one weight per value (2), got 1",
        ),
        (
            {"type": "choice", "values": [1, 2], "weights": [1, -1]},
            "number",
            "weights[1]",
            "must be >= 0, got -1",
        ),
        ({"type": "choice", "values": [1, 2], "weights": [0, 0]}, "number", "weights", "must not all be 0"),
        ({"type": "choice", "values": []}, "number", "values", "must not be empty"),
        (
            {"type": "choice", "values": ["a", 1]},
            "string",
            "values[1]",
            "1 is not a string (field type 'string')",
        ),
        ({"type": "choice", "values": [1, 2.5]}, "integer", "values[1]", "2.5 is not an integer"),
        ({"type": "choice", "values": [True, "yes"]}, "boolean", "values[1]", "'yes' is not a boolean"),
        ({"type": "choice", "values": [True, 1]}, "number", "values[0]", "True is not a number"),
        (
            {"type": "random", "distribution": "normal", "mean": 0, "stddev": -1},
            "number",
            "stddev",
            "must be >= 0",
        ),
        (
            {"type": "random", "distribution": "normal", "min": 0},
            "number",
            "mean",
            "is required for the normal",
        ),
        (
            {"type": "random", "distribution": "exponential", "mean": 0},
            "number",
            "mean",
            "must be > 0, got 0",
        ),
        ({"type": "random", "distribution": "exponential"}, "number", "mean", "is required"),
        (
            {"type": "random", "distribution": "poisson"},
            "number",
            "distribution",
            "unknown distribution 'poisson'",
        ),
        ({"type": "random", "max": 5}, "number", "min", "is required for the uniform distribution"),
        ({"type": "random", "min": "a", "max": 5}, "number", "min", "must be a number, got 'a'"),
        ({"type": "random", "min": True, "max": 5}, "number", "min", "must be a number, got True"),
        (
            {"type": "random", "min": 0, "max": 1, "stdev": 1},
            "number",
            "stdev",
            "unknown parameter for the 'random'",
        ),
        ({"type": "random", "min": 0, "max": 1}, "boolean", "type", "cannot feed a 'boolean' field"),
        ({"type": "random", "min": 0, "max": 1, "precision": -1}, "number", "precision", "between 0 and 15"),
        ({"type": "sinusoidal", "periodMs": 0}, "number", "periodMs", "must be > 0, got 0"),
        ({"type": "sinusoidal", "periodMs": -5}, "number", "periodMs", "must be > 0, got -5"),
        ({"type": "sinusoidal"}, "number", "periodMs", "is required"),
        ({"type": "sinusoidal", "periodMs": 10, "noise": -1}, "number", "noise", "must be >= 0"),
        ({"type": "sequence", "step": 0}, "integer", "step", "must not be 0"),
        ({"type": "sequence", "min": 5, "max": 1}, "integer", "max", "must be >= min (5), got 1"),
        (
            {"type": "sequence", "start": 9, "min": 0, "max": 5},
            "integer",
            "start",
            "must be within [min, max]",
        ),
        ({"type": "sequence", "wrap": "yes"}, "integer", "wrap", "must be true or false"),
        ({"type": "randomWalk", "min": 0}, "number", "max", "is required"),
        ({"type": "randomWalk", "min": 0, "max": 1, "step": 0}, "number", "step", "must be > 0"),
        ({"type": "battery", "start": 10, "floor": 20}, "number", "start", "must be >= floor (20), got 10"),
        ({"type": "battery", "drainPerHour": -1}, "number", "drainPerHour", "must be >= 0"),
        ({"type": "constant"}, "number", "value", "is required"),
        ({"type": "constant", "value": "x"}, "integer", "value", "'x' is not an integer"),
        ({"type": "constant", "value": "%%%"}, "binary", "value", "not valid base64"),
        ({"type": "gps", "route": [[0, 0]]}, "object", "route", "needs at least 2 points"),
        (
            {"type": "gps", "route": [[0, 0], [91, 0]]},
            "object",
            "route[1]",
            "latitude 91 out of range [-90, 90]",
        ),
        ({"type": "gps", "route": [[0, 0], [0, -181]]}, "object", "route[1]", "longitude -181 out of range"),
        ({"type": "gps", "route": [[0, 0], "x"]}, "object", "route[1]", "must be a [lat, lon] pair"),
        ({"type": "gps", "route": [[0, 0], [0, 1]], "speedKmh": 0}, "object", "speedKmh", "must be > 0"),
        (
            {"type": "gps", "mode": "randomWalk", "center": [0, 181]},
            "object",
            "center",
            "longitude 181 out of range",
        ),
        ({"type": "gps", "mode": "randomWalk"}, "object", "center", "is required"),
        (
            {"type": "gps", "mode": "randomWalk", "center": [0, 0], "radiusM": 0},
            "object",
            "radiusM",
            "must be > 0",
        ),
        ({"type": "gps", "mode": "fly", "center": [0, 0]}, "object", "mode", "unknown gps mode 'fly'"),
        ({"type": "gps", "route": [[0, 0], [0, 1]]}, "number", "type", "cannot feed a 'number' field"),
        (
            {"type": "custom", "handler": "ecg_generator", "config": []},
            "binary",
            "config",
            "must be an object",
        ),
    ],
)
def test_check_generator_problem(spec: dict[str, Any], field_type: str, path: str, fragment: str) -> None:
    problems = problems_of(spec, field_type)
    assert_problem(problems, path, fragment)
    with pytest.raises(ConfigurationError):
        make(spec, field_type)


def test_check_generator_accepts_good_specs() -> None:
    good: list[tuple[dict[str, Any], str]] = [
        ({"type": "random", "min": 0, "max": 1}, "number"),
        ({"type": "random", "distribution": "normal", "mean": 0, "stddev": 1}, "number"),
        ({"type": "random", "distribution": "exponential", "mean": 1, "max": 5, "precision": 1}, "number"),
        ({"type": "sequence", "min": 0, "max": 10, "step": -1}, "integer"),
        ({"type": "constant", "value": {"a": 1}}, "object"),
        ({"type": "sinusoidal", "periodMs": 1000, "description": "daily cycle"}, "number"),
        ({"type": "randomWalk", "min": 0, "max": 1}, "string"),
        ({"type": "choice", "values": ["a", "b"]}, "string"),
        ({"type": "battery"}, "integer"),
        ({"type": "gps", "mode": "randomWalk", "center": [0, 0]}, "object"),
        ({"type": "custom", "handler": "ecg_generator", "config": {"samples": 10}}, "binary"),
    ]
    for spec, field_type in good:
        assert problems_of(spec, field_type) == [], spec


@pytest.mark.parametrize("field_type", ["number", "integer", "boolean", "string", "binary", "object", "weird"])
def test_check_generator_never_raises(field_type: str) -> None:
    malformed: list[Any] = [
        None,
        1,
        "random",
        [],
        {"type": 1},
        {"type": ["random"]},
        {"type": "random", "min": [1], "max": {"a": 1}},
        {"type": "random", "distribution": ["x"]},
        {"type": "random", "min": float("nan"), "max": float("inf")},
        {"type": "sequence", "min": "0", "step": None, "start": {}},
        {"type": "gps", "route": "abc"},
        {"type": "gps", "route": [1, 2]},
        {"type": "gps", "route": [[None, None], [[], {}]]},
        {"type": "gps", "mode": 3},
        {"type": "gps", "mode": "randomWalk", "center": "x"},
        {"type": "choice", "values": "abc", "weights": "x"},
        {"type": "choice", "values": [[1]], "weights": [None, "x"]},
        {"type": "replay", "dataFile": 5, "column": []},
        {"type": "replay", "dataFile": "", "values": None},
        {"type": "replay", "values": {"a": 1}},
        {"type": "custom", "handler": 5, "config": []},
        {"type": "custom", "handler": ":"},
        {"type": "custom", "handler": "os:path"},
        {"type": "constant", "value": None},
        {"type": "battery", "start": "full"},
        {"type": "random", 1: 2, None: 3},
    ]
    for spec in malformed:
        problems = check_generator(spec, field_type, None)
        assert isinstance(problems, list)
        assert all(isinstance(p, str) and isinstance(m, str) and m for p, m in problems)
        assert problems, spec


def test_build_generator_error_lists_problems() -> None:
    with pytest.raises(
        ConfigurationError, match=r"invalid 'random' generator for a 'number' field: max: must be >= min"
    ):
        make({"type": "random", "min": 10, "max": 5})
