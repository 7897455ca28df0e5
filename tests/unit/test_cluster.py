"""The pure parts of sharding: the split, the checks, adding up stats and snapshots, the missing-Ray message."""

from __future__ import annotations

import builtins
import random
from typing import Any

import pytest

from iotix.cluster import ray_support
from iotix.cluster.sharded import Shard, ShardedFleet, check_shards, merge_stats, split
from iotix.errors import ConfigurationError
from iotix.observe.histogram import Histogram
from iotix.observe.series import COUNTERS, FleetSnapshot


@pytest.mark.parametrize(("count", "shards"), [(10, 3), (3, 3), (100_000, 6), (7, 1), (5, 4)])
def test_split_is_contiguous_covers_every_device_and_differs_by_one_at_most(count: int, shards: int) -> None:
    ranges = split(count, shards)
    assert len(ranges) == shards
    assert [i for r in ranges for i in r] == list(range(count))
    sizes = [len(r) for r in ranges]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(
    ("shards", "count", "message"),
    [
        (0, 10, "shards must be a whole number >= 1, got 0"),
        (4, 3, "4 shards for 3 devices"),
        (257, 10_000, "at most 256"),
    ],
)
def test_bad_shard_counts_are_refused(shards: int, count: int, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        check_shards(shards, count)


def _stats(sent: int, lateness: list[float], states: dict[str, int]) -> dict[str, Any]:
    hist = Histogram()
    for value in lateness:
        hist.record(value)
    return {
        "fleet": "env",
        "protocol": "mqtt",
        "messagesSent": sent,
        "bytesSent": sent * 10,
        "states": states,
        "failuresByReason": {"timeout": 1},
        "circuitState": "disabled",
        "sendLatenessMs": hist.summary(),
        "_lateness": hist.encode(),
    }


def test_stats_add_up_and_latency_comes_from_the_merged_histograms() -> None:
    rng = random.Random(3)
    a = [rng.uniform(0.001, 0.01) for _ in range(500)]
    b = [rng.uniform(0.05, 0.2) for _ in range(100)]
    total = merge_stats([_stats(5, a, {"running": 2, "error": 0}), _stats(7, b, {"running": 1, "error": 1})])
    assert total["messagesSent"] == 12 and total["bytesSent"] == 120
    assert total["states"] == {"running": 3, "error": 1}
    assert total["failuresByReason"] == {"timeout": 2}
    assert total["fleet"] == "env" and total["circuitState"] == "disabled"
    whole = Histogram()
    for value in a + b:
        whole.record(value)
    assert total["sendLatenessMs"] == whole.summary()  # exact: the same as one histogram of every value
    assert "_lateness" not in total


def test_snapshots_add_up_and_survive_the_trip_between_processes() -> None:
    one, two = FleetSnapshot.empty(), FleetSnapshot.empty()
    one.counters["sent"], two.counters["sent"] = 3, 4
    one.reasons, two.reasons = {"timeout": 1}, {"timeout": 2, "refused": 1}
    one.devices, two.devices, one.running, two.running = 5, 5, 5, 4
    one.latency = {"lateness": Histogram()}
    one.latency["lateness"].record(0.004)
    two.latency = {"lateness": Histogram()}
    two.latency["lateness"].record(0.008)
    merged = FleetSnapshot.empty()
    for part in (one, two):
        merged.add(FleetSnapshot.decoded(part.encoded()))
    assert merged.counters == {**dict.fromkeys(COUNTERS, 0), "sent": 7}
    assert merged.reasons == {"timeout": 3, "refused": 1}
    assert (merged.devices, merged.running) == (10, 9)
    assert merged.latency["lateness"].count == 2
    assert merged.latency["lateness"].max == pytest.approx(0.008, rel=0.01)


def test_a_keyword_a_sharded_fleet_does_not_serve_fails_naming_the_fleet() -> None:
    fleet = ShardedFleet(None, "big", object(), None, [Shard(0, 0, ["big-0"])], "local")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"Fleet 'big' is sharded \(1 shards\); this keyword does not act"):
        fleet.transmissions  # noqa: B018


def test_a_shard_names_its_device_range_and_process() -> None:
    shard = Shard(2, 20, [f"env-{i}" for i in range(20, 30)], pid=4242)
    assert shard.describe(3) == "shard 2 of 3 (devices env-20 .. env-29, pid 4242)"


def test_without_ray_shards_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_ray(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigurationError, match=r"shards=3 need Ray.*robotframework-iotix\[cluster\]"):
        ray_support.ray_module("shards=3")
