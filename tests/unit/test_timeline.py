"""Unit tests of iotix.fleet.timeline: launch and dropout schedules."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from iotix.errors import ConfigurationError
from iotix.fleet.timeline import (
    DropoutEvent,
    DropoutSettings,
    DropoutStrategy,
    LaunchSettings,
    LaunchStrategy,
    choose_dropout_devices,
    dropout_count,
    dropout_offsets,
    launch_offsets,
    plan_dropout,
)

IDS = [f"dev-{i:04d}" for i in range(100)]


def is_sorted(values: list[float]) -> bool:
    return all(a <= b for a, b in itertools.pairwise(values))


# --------------------------------------------------------------------------------------------------
# Launch settings
# --------------------------------------------------------------------------------------------------


def test_launch_defaults() -> None:
    settings = LaunchSettings()
    assert settings.strategy is LaunchStrategy.IMMEDIATE
    assert (settings.delay_ms, settings.batch_size, settings.max_delay_ms, settings.exponent_base) == (
        0,
        100,
        60000,
        1.5,
    )


@pytest.mark.parametrize("text", ["linear", "LINEAR", " Linear "])
def test_launch_strategy_from_string(text: str) -> None:
    assert LaunchSettings(strategy=text).strategy is LaunchStrategy.LINEAR  # type: ignore[arg-type]


def test_launch_strategy_values() -> None:
    assert [s.value for s in LaunchStrategy] == ["immediate", "linear", "batch", "exponential"]
    assert LaunchStrategy.BATCH == "batch"


def test_unknown_launch_strategy_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError) as caught:
        LaunchSettings(strategy="gradual")  # type: ignore[arg-type]
    assert str(caught.value) == (
        "Unknown launch strategy 'gradual': valid values are immediate, linear, batch, exponential."
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"delay_ms": -1}, "delay_ms must be at least 0, got -1"),
        ({"delay_ms": "100"}, "delay_ms must be a finite number, got '100'"),
        ({"delay_ms": float("nan")}, "delay_ms must be a finite number"),
        ({"delay_ms": float("inf")}, "delay_ms must be a finite number"),
        ({"delay_ms": True}, "delay_ms must be a finite number"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"batch_size": 2.5}, "batch_size must be an integer, got 2.5"),
        ({"max_delay_ms": -5}, "max_delay_ms must be at least 0"),
        ({"exponent_base": 0.5}, "exponent_base must be at least 1, got 0.5"),
        ({"strategy": 3}, "Unknown launch strategy 3"),
    ],
)
def test_invalid_launch_settings(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        LaunchSettings(**kwargs)
    assert fragment in str(caught.value)


def test_launch_settings_are_frozen() -> None:
    settings = LaunchSettings()
    with pytest.raises(AttributeError):
        settings.delay_ms = 5  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------
# Launch offsets
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(LaunchStrategy))
def test_zero_devices(strategy: LaunchStrategy) -> None:
    assert launch_offsets(0, LaunchSettings(strategy, delay_ms=100)) == []


@pytest.mark.parametrize("count", [-1, 1.5, "3", True])
def test_invalid_count(count: Any) -> None:
    with pytest.raises(ConfigurationError, match="number of devices"):
        launch_offsets(count, LaunchSettings())


def test_immediate() -> None:
    assert launch_offsets(4, LaunchSettings(LaunchStrategy.IMMEDIATE, delay_ms=500)) == [0.0] * 4


def test_linear() -> None:
    assert launch_offsets(5, LaunchSettings("linear", delay_ms=100)) == [0.0, 0.1, 0.2, 0.3, 0.4]  # type: ignore[arg-type]
    assert launch_offsets(3, LaunchSettings("linear", delay_ms=2500)) == [0.0, 2.5, 5.0]  # type: ignore[arg-type]


def test_zero_delay_is_immediate_for_every_strategy() -> None:
    for strategy in LaunchStrategy:
        assert launch_offsets(3, LaunchSettings(strategy, delay_ms=0)) == [0.0, 0.0, 0.0]


def test_batch() -> None:
    settings = LaunchSettings(LaunchStrategy.BATCH, delay_ms=1000, batch_size=2)
    assert launch_offsets(5, settings) == [0.0, 0.0, 1.0, 1.0, 2.0]


def test_batch_5000_devices_of_100_every_second_ends_at_49_s() -> None:
    offsets = launch_offsets(5000, LaunchSettings(LaunchStrategy.BATCH, delay_ms=1000, batch_size=100))
    assert len(offsets) == 5000
    assert offsets[-1] == 49.0
    assert offsets[99] == 0.0
    assert offsets[100] == 1.0
    assert offsets[4900] == 49.0
    assert len(set(offsets)) == 50


def test_batch_larger_than_count() -> None:
    assert launch_offsets(3, LaunchSettings(LaunchStrategy.BATCH, delay_ms=1000, batch_size=100)) == [0.0] * 3


def test_batch_size_one_is_linear() -> None:
    batch = launch_offsets(6, LaunchSettings(LaunchStrategy.BATCH, delay_ms=300, batch_size=1))
    linear = launch_offsets(6, LaunchSettings(LaunchStrategy.LINEAR, delay_ms=300))
    assert batch == linear == [0.0, 0.3, 0.6, 0.9, 1.2, 1.5]


def test_exponential_first_six() -> None:
    settings = LaunchSettings(LaunchStrategy.EXPONENTIAL, delay_ms=100, exponent_base=2)
    assert launch_offsets(6, settings) == [0.0, 0.1, 0.3, 0.7, 1.5, 3.1]


def test_exponential_cap() -> None:
    # gaps: 100, 200, 400, 800, then min(1600, 1000) = 1000 from there on
    settings = LaunchSettings(LaunchStrategy.EXPONENTIAL, delay_ms=100, exponent_base=2, max_delay_ms=1000)
    assert launch_offsets(9, settings) == [0.0, 0.1, 0.3, 0.7, 1.5, 2.5, 3.5, 4.5, 5.5]


def test_exponential_cap_equal_to_a_gap() -> None:
    settings = LaunchSettings(LaunchStrategy.EXPONENTIAL, delay_ms=100, exponent_base=2, max_delay_ms=400)
    assert launch_offsets(6, settings) == [0.0, 0.1, 0.3, 0.7, 1.1, 1.5]


def test_exponential_cap_below_the_first_delay() -> None:
    settings = LaunchSettings(LaunchStrategy.EXPONENTIAL, delay_ms=100, exponent_base=2, max_delay_ms=50)
    assert launch_offsets(4, settings) == [0.0, 0.05, 0.1, 0.15]


def test_exponential_base_one_is_linear() -> None:
    settings = LaunchSettings(LaunchStrategy.EXPONENTIAL, delay_ms=250, exponent_base=1)
    assert launch_offsets(4, settings) == [0.0, 0.25, 0.5, 0.75]


def test_exponential_default_cap_is_reached_and_stays_finite() -> None:
    offsets = launch_offsets(10_000, LaunchSettings(LaunchStrategy.EXPONENTIAL, delay_ms=1000))
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert max(gaps) == pytest.approx(60.0)
    assert gaps[-1] == pytest.approx(60.0)
    assert is_sorted(offsets)


@pytest.mark.parametrize("strategy", list(LaunchStrategy))
def test_100k_devices_are_fast_and_non_decreasing(strategy: LaunchStrategy) -> None:
    settings = LaunchSettings(strategy, delay_ms=10, batch_size=100, exponent_base=1.01)
    start = time.perf_counter()
    offsets = launch_offsets(100_000, settings)
    assert time.perf_counter() - start < 1.0
    assert len(offsets) == 100_000
    assert offsets[0] == 0.0
    assert is_sorted(offsets)


def test_linear_100k_last_offset_is_exact() -> None:
    offsets = launch_offsets(100_000, LaunchSettings(LaunchStrategy.LINEAR, delay_ms=10))
    assert offsets[-1] == 999.99


# --------------------------------------------------------------------------------------------------
# Dropout settings
# --------------------------------------------------------------------------------------------------


def test_dropout_defaults() -> None:
    settings = DropoutSettings()
    assert settings.strategy is DropoutStrategy.LINEAR
    assert settings.count is None and settings.percentage is None
    assert (settings.delay_ms, settings.duration_ms, settings.exponent_base) == (1000, 60000, 1.5)
    assert settings.reconnect is False and settings.reconnect_delay_ms == 0


def test_dropout_strategy_from_string() -> None:
    assert DropoutSettings(strategy="RANDOM").strategy is DropoutStrategy.RANDOM  # type: ignore[arg-type]
    assert [s.value for s in DropoutStrategy] == ["immediate", "linear", "exponential", "random"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"strategy": "cascade"}, "Unknown dropout strategy 'cascade': valid values are immediate, linear"),
        ({"count": -1}, "count must be at least 0, got -1"),
        ({"count": 1.5}, "count must be an integer"),
        ({"percentage": -0.1}, "percentage must be at least 0"),
        ({"percentage": 100.5}, "percentage must be between 0 and 100, got 100.5"),
        ({"percentage": "10"}, "percentage must be a finite number"),
        ({"delay_ms": -1}, "delay_ms must be at least 0"),
        ({"duration_ms": -1}, "duration_ms must be at least 0"),
        ({"exponent_base": 0.9}, "exponent_base must be at least 1"),
        ({"reconnect": "yes"}, "reconnect must be true or false"),
        ({"reconnect_delay_ms": -10}, "reconnect_delay_ms must be at least 0"),
    ],
)
def test_invalid_dropout_settings(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        DropoutSettings(**kwargs)
    assert fragment in str(caught.value)


# --------------------------------------------------------------------------------------------------
# Which devices drop out
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "kwargs", "expected"),
    [
        (25, {"percentage": 10}, 3),  # 2.5 rounds half up
        (25, {"percentage": 2}, 1),  # 0.5 rounds up
        (25, {"percentage": 1}, 0),  # 0.25 rounds down
        (500, {"percentage": 0.7}, 4),  # exactly 3.5 in decimal, not 3.4999... in binary
        (10, {"percentage": 0}, 0),
        (10, {"percentage": 100}, 10),
        (10, {"percentage": 33.3}, 3),
        (10, {}, 10),  # neither count nor percentage: every device
        (0, {}, 0),
        (10, {"count": 4, "percentage": 90}, 4),  # count wins
        (10, {"count": 0, "percentage": 90}, 0),
        (10, {"count": 10}, 10),
    ],
)
def test_dropout_count(size: int, kwargs: dict[str, Any], expected: int) -> None:
    assert dropout_count(size, DropoutSettings(**kwargs)) == expected


def test_count_larger_than_the_fleet_names_both_numbers() -> None:
    with pytest.raises(ConfigurationError, match="Cannot drop 11 devices: the fleet has only 10"):
        choose_dropout_devices(IDS[:10], DropoutSettings(count=11))


def test_choice_is_reproducible_and_depends_on_the_seed() -> None:
    settings = DropoutSettings(count=10)
    first = choose_dropout_devices(IDS, settings, seed=42)
    assert first == choose_dropout_devices(IDS, settings, seed=42)
    assert first == choose_dropout_devices(tuple(IDS), settings, seed=42)
    assert first != choose_dropout_devices(IDS, settings, seed=43)
    assert len(set(first)) == 10 and set(first) <= set(IDS)


def test_choice_with_no_seed_is_seed_zero() -> None:
    settings = DropoutSettings(percentage=20)
    assert choose_dropout_devices(IDS, settings) == choose_dropout_devices(IDS, settings, seed=0)
    assert choose_dropout_devices(IDS, settings, seed="lab") == choose_dropout_devices(IDS, settings, seed="lab")


def test_choice_is_pinned_independent_of_the_process() -> None:
    # String seeding of random.Random uses SHA-512, not hash(): same result in every process.
    assert choose_dropout_devices(IDS[:10], DropoutSettings(count=3), seed=1) == [
        "dev-0000",
        "dev-0009",
        "dev-0001",
    ]


def test_all_devices_in_a_shuffled_order() -> None:
    chosen = choose_dropout_devices(IDS, DropoutSettings(percentage=100), seed=7)
    assert sorted(chosen) == IDS
    assert chosen != IDS


def test_percentage_zero_and_empty_fleet() -> None:
    assert choose_dropout_devices(IDS, DropoutSettings(percentage=0)) == []
    assert choose_dropout_devices([], DropoutSettings()) == []


def test_duplicate_ids_are_an_error() -> None:
    with pytest.raises(ConfigurationError, match="Duplicate device ids: a, b"):
        choose_dropout_devices(["a", "b", "a", "c", "b"], DropoutSettings())


# --------------------------------------------------------------------------------------------------
# When they drop out
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(DropoutStrategy))
def test_no_devices_no_offsets(strategy: DropoutStrategy) -> None:
    assert dropout_offsets(0, DropoutSettings(strategy)) == []


def test_dropout_immediate() -> None:
    assert dropout_offsets(3, DropoutSettings(DropoutStrategy.IMMEDIATE)) == [0.0, 0.0, 0.0]


def test_dropout_linear() -> None:
    assert dropout_offsets(4, DropoutSettings(delay_ms=1500)) == [0.0, 1.5, 3.0, 4.5]


def test_dropout_exponential_accelerates() -> None:
    settings = DropoutSettings(DropoutStrategy.EXPONENTIAL, delay_ms=1000, exponent_base=2)
    assert dropout_offsets(6, settings) == [0.0, 1.0, 1.5, 1.75, 1.875, 1.9375]
    many = dropout_offsets(10_000, settings)
    assert is_sorted(many)
    assert many[-1] <= 2.0  # gaps shrink: the cascade converges on delay * base / (base - 1)


def test_dropout_exponential_base_one_is_linear() -> None:
    settings = DropoutSettings(DropoutStrategy.EXPONENTIAL, delay_ms=200, exponent_base=1)
    assert dropout_offsets(4, settings) == [0.0, 0.2, 0.4, 0.6]


def test_dropout_random_is_within_the_duration_sorted_and_reproducible() -> None:
    settings = DropoutSettings(DropoutStrategy.RANDOM, duration_ms=10_000)
    offsets = dropout_offsets(1000, settings, seed=5)
    assert len(offsets) == 1000
    assert all(0.0 <= offset < 10.0 for offset in offsets)
    assert is_sorted(offsets)
    assert offsets == dropout_offsets(1000, settings, seed=5)
    assert offsets != dropout_offsets(1000, settings, seed=6)
    assert dropout_offsets(5, settings) == dropout_offsets(5, settings, seed=0)
    assert max(offsets) > 9.0 and min(offsets) < 1.0  # actually spread over the window


def test_dropout_random_with_zero_duration() -> None:
    assert dropout_offsets(3, DropoutSettings(DropoutStrategy.RANDOM, duration_ms=0)) == [0.0, 0.0, 0.0]


def test_dropout_offsets_100k_are_fast() -> None:
    start = time.perf_counter()
    for strategy in DropoutStrategy:
        assert len(dropout_offsets(100_000, DropoutSettings(strategy), seed=1)) == 100_000
    assert time.perf_counter() - start < 2.0


def test_invalid_dropout_count() -> None:
    with pytest.raises(ConfigurationError):
        dropout_offsets(-1, DropoutSettings())


# --------------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------------


def test_plan_without_reconnect() -> None:
    settings = DropoutSettings(count=3, delay_ms=500)
    plan = plan_dropout(IDS, settings, seed=3)
    assert [event.device_id for event in plan] == choose_dropout_devices(IDS, settings, seed=3)
    assert [event.drop_at for event in plan] == [0.0, 0.5, 1.0]
    assert all(event.reconnect_at is None for event in plan)


def test_plan_reconnect_at_is_drop_at_plus_the_delay() -> None:
    settings = DropoutSettings(
        DropoutStrategy.RANDOM, percentage=10, duration_ms=5000, reconnect=True, reconnect_delay_ms=2500
    )
    plan = plan_dropout(IDS, settings, seed=9)
    assert len(plan) == 10
    for event in plan:
        assert event.reconnect_at == event.drop_at + 2.5
    assert is_sorted([event.drop_at for event in plan])
    assert plan == plan_dropout(IDS, settings, seed=9)


def test_plan_reconnect_with_zero_delay() -> None:
    plan = plan_dropout(IDS[:2], DropoutSettings(reconnect=True), seed=1)
    assert [(e.drop_at, e.reconnect_at) for e in plan] == [(0.0, 0.0), (1.0, 1.0)]


def test_reconnect_delay_is_ignored_without_reconnect() -> None:
    plan = plan_dropout(IDS[:2], DropoutSettings(reconnect_delay_ms=1000))
    assert all(event.reconnect_at is None for event in plan)


def test_dropout_event_is_frozen() -> None:
    event = DropoutEvent("d", 1.0, None)
    with pytest.raises(AttributeError):
        event.drop_at = 2.0  # type: ignore[misc]
    assert event == DropoutEvent("d", 1.0)
