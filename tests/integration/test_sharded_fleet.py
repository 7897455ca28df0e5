"""Sharded fleets on a local Ray (3 shards) against a real Mosquitto, checked by an independent mosquitto_sub.

One Ray for the module (starting one costs seconds); every test makes and deletes its own fleets.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iotix.cluster.ray_support import ensure_ray, shutdown_ray
from iotix.cluster.sharded import ShardedFleet, ShardError, build_sharded_fleet
from iotix.fleet.device import DeviceState
from iotix.fleet.fleet import Fleet
from iotix.fleet.network import DeviceSelection
from iotix.fleet.setup import ConnectionOverrides, FleetSetup
from iotix.fleet.simulator import Simulator
from iotix.fleet.timeline import DropoutSettings, LaunchSettings, LaunchStrategy, plan_dropout
from iotix.model.loader import load_model_dict
from iotix.runtime import Runtime
from iotix.services import find_mosquitto, start_local_broker

ray = pytest.importorskip("ray", reason="Ray (the cluster extra) is not installed")
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None or MOSQUITTO_SUB is None, reason="Mosquitto is not installed"),
]


def model_dict(interval_ms: int = 100, qos: int = 1) -> dict[str, Any]:
    return {
        "id": "shard-sensor",
        "name": "sharded sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {"topicPattern": "sh/${deviceId}/telemetry", "qos": qos, "keepAlive": 30},
        "telemetry": [
            {
                "name": "temperature",
                "type": "number",
                "intervalMs": interval_ms,
                "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
            },
            {
                "name": "cpu",
                "type": "number",
                "intervalMs": interval_ms,
                "generator": {"type": "randomWalk", "min": 0, "max": 100, "step": 5},
            },
        ],
    }


class Cluster:
    """A runtime, a simulator, a broker and a local Ray, shared by the module's tests."""

    def __init__(self) -> None:
        self.broker = start_local_broker()
        self.rt = Runtime()
        self.sim: Simulator = self.rt.call(lambda: Simulator(self.rt.loop))
        ensure_ray()

    def setup(self, name: str, count: int, seed: int = 7, ids: list[str] | None = None) -> FleetSetup:
        return FleetSetup(
            name=name,
            count=count,
            device_ids=ids,
            seed=seed,
            connection=ConnectionOverrides(host=self.broker.host, port=self.broker.port),
        )

    def sharded(self, name: str, count: int, shards: int = 3, interval_ms: int = 100, **kw: Any) -> ShardedFleet:
        model = load_model_dict(model_dict(interval_ms))
        return self.rt.call(build_sharded_fleet, self.sim, model, self.setup(name, count, **kw), shards, timeout=180)

    def plain(self, name: str, count: int, interval_ms: int = 100, **kw: Any) -> Fleet:
        model = load_model_dict(model_dict(interval_ms))
        setup = self.setup(name, count, **kw)
        return self.rt.call(lambda: self.sim.build_fleet(model, setup))

    def start(self, fleet: Any, settings: LaunchSettings | None = None) -> None:
        self.rt.call(fleet.start, settings or LaunchSettings())
        assert self.rt.call(fleet.wait_until_running, 30.0), f"fleet {fleet.name} not running"

    def delete(self, name: str) -> None:
        self.rt.call(self.sim.delete_fleet, name)

    def close(self) -> None:
        for name in self.rt.call(self.sim.fleet_names):
            self.delete(name)
        self.rt.stop()
        shutdown_ray()
        self.broker.stop()


@pytest.fixture(scope="module")
def cl() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.close()


class Sub:
    """An independent mosquitto_sub on ``sh/+/telemetry`` writing ``topic payload`` lines."""

    def __init__(self, cl: Cluster) -> None:
        fd, name = tempfile.mkstemp(prefix="iotix-shard-sub-")
        os.close(fd)
        self.path = Path(name)
        self.fh = self.path.open("wb")
        cmd = [MOSQUITTO_SUB, "-h", cl.broker.host, "-p", str(cl.broker.port), "-q", "1", "-t", "sh/+/telemetry"]
        self.proc = subprocess.Popen([*cmd, "-F", "%p"], stdout=self.fh, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def messages(self) -> list[dict[str, Any]]:
        time.sleep(0.5)
        self.proc.terminate()
        self.proc.wait(5)
        self.fh.close()
        lines = self.path.read_text().splitlines()
        self.path.unlink()
        return [json.loads(line) for line in lines if line.strip()]


def streams(messages: list[dict[str, Any]], first: int) -> dict[str, list[dict[str, Any]]]:
    """Per device, its first ``first`` envelopes in seq order, without the wall-clock timestamp."""
    out: dict[str, list[dict[str, Any]]] = {}
    for m in sorted(messages, key=lambda m: (m["deviceId"], m["seq"])):
        out.setdefault(m["deviceId"], []).append({k: v for k, v in m.items() if k != "ts"})
    return {d: ms[:first] for d, ms in out.items()}


def test_a_device_sends_the_same_payloads_whatever_the_shard_count(cl: Cluster) -> None:
    ids = [f"same-{i}" for i in range(9)]
    runs = []
    for shards in (1, 3):
        sub = Sub(cl)
        fleet = cl.plain("same", 9, ids=ids) if shards == 1 else cl.sharded("same", 9, shards=3, ids=ids)
        cl.start(fleet)
        time.sleep(1.5)
        cl.rt.call(fleet.stop)
        cl.delete("same")
        runs.append(streams(sub.messages(), first=8))
    plain, sharded = runs
    assert sorted(plain) == ids
    assert all(len(v) == 8 for v in plain.values())
    assert sharded == plain  # same ids, same seed: the same values in the same order, on any shard


def test_stats_are_the_sum_of_the_shards_and_match_the_broker_and_the_series(cl: Cluster) -> None:
    sub = Sub(cl)
    fleet = cl.sharded("sum", 30, shards=3)
    assert [s["count"] for s in fleet.shards_info()] == [10, 10, 10]
    assert len({s["pid"] for s in fleet.shards_info()} | {os.getpid()}) == 4  # three processes of their own
    cl.start(fleet)
    time.sleep(2.5)
    cl.rt.call(fleet.stop)
    total = cl.rt.call(fleet.stats)
    parts = ray.get([s.actor.stats.remote() for s in fleet.shards])
    for key in ("messagesSent", "messagesAcked", "bytesSent", "connects", "disconnects", "deviceCount"):
        assert total[key] == sum(p[key] for p in parts), key
    assert total["states"]["stopped"] == 30
    assert total["sendLatenessMs"]["count"] == sum(p["sendLatenessMs"]["count"] for p in parts)
    received = sub.messages()
    assert total["messagesSent"] > 30 * 15
    assert len(received) == total["messagesSent"] == total["messagesAcked"]  # QoS 1: every one arrived
    series = cl.rt.call(cl.sim.metrics.require, "sum")
    cl.rt.call(cl.sim.metrics.settle_all)
    assert series.totals["sent"] == total["messagesSent"]
    cl.delete("sum")


def test_one_launch_timeline_across_shards(cl: Cluster) -> None:
    sub = Sub(cl)
    fleet = cl.sharded("line", 24, shards=3, interval_ms=1000)
    settings = LaunchSettings(strategy=LaunchStrategy.LINEAR, delay_ms=60)
    cl.rt.call(fleet.start, settings)
    assert cl.rt.call(fleet.wait_until_running, 30.0)
    time.sleep(0.5)
    cl.rt.call(fleet.stop)
    cl.delete("line")
    first = {m["deviceId"]: m["ts"] for m in sub.messages() if m["seq"] == 0}
    times = [first[f"line-{i}"] for i in range(24)]
    # Device i starts 60 ms after device i-1, whichever shard it is on: one timeline of 23 x 60 = 1,380 ms.
    span = times[-1] - times[0]
    assert 1380 - 150 <= span <= 1380 + 250, times
    late = [b - a for a, b in itertools.pairwise(times)]
    assert sum(1 for gap in late if gap < 0) <= 2, late  # in global index order (clock jitter aside)


def test_a_dead_shard_is_named_and_the_others_keep_running(cl: Cluster) -> None:
    fleet = cl.sharded("dies", 30, shards=3)
    cl.start(fleet)
    victim = fleet.shards[1]
    os.kill(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    errors: list[str] = []
    while not errors and time.monotonic() < deadline:
        time.sleep(0.2)
        errors = cl.rt.call(fleet.take_errors)
    assert errors, "the dead shard was not reported"
    assert "shard 1 of 3 (devices dies-10 .. dies-19" in errors[0]
    assert f"pid {victim.pid}" in errors[0]
    with pytest.raises(ShardError, match=r"shard 1 of 3 \(devices dies-10 \.\. dies-19"):
        cl.rt.call(fleet.device_status, "dies-12")
    before = cl.rt.call(fleet.stats)["messagesSent"]
    time.sleep(1.0)
    after = cl.rt.call(fleet.stats)
    assert after["messagesSent"] > before + 20 * 5  # the 20 devices of shards 0 and 2 still send
    assert [s["alive"] for s in after["shards"]] == [True, False, True]
    cl.rt.call(fleet.stop)  # stops the live shards; the dead one is in the log
    assert cl.rt.call(fleet.count_states) == {**dict.fromkeys([s.value for s in DeviceState], 0), "stopped": 20}
    cl.delete("dies")


def test_drop_devices_chooses_over_the_whole_fleet(cl: Cluster) -> None:
    fleet = cl.sharded("drop", 30, shards=3)
    cl.start(fleet)
    settings = DropoutSettings(count=7, delay_ms=10)
    chosen = cl.rt.call(fleet.start_dropout, settings, 11)
    assert chosen == [e.device_id for e in plan_dropout(fleet.ids, settings, 11)]
    assert len({fleet.shard_of[d].index for d in chosen}) > 1  # spread over shards, as over a plain fleet
    assert cl.rt.call(fleet.wait_for_dropout, 10.0)
    assert sorted(cl.rt.call(fleet.device_ids, DeviceState.DROPPED)) == sorted(chosen)
    assert sorted(cl.rt.call(fleet.restore_dropped)) == sorted(chosen)
    cl.delete("drop")


def test_network_faults_and_device_calls_reach_the_right_shards(cl: Cluster) -> None:
    fleet = cl.sharded("net", 12, shards=3)
    cl.start(fleet)
    name = cl.rt.call(cl.sim.network.add, "net", "latency", {"latency": 0.05}, DeviceSelection(count=5, seed=3))
    described = cl.rt.call(cl.sim.network.describe, "net")
    assert [d["name"] for d in described] == [name]
    per_shard = ray.get([s.actor.network.remote("describe") for s in fleet.shards])
    assert sum(entry[0]["devices"] for entry in per_shard if entry) == 5
    cl.rt.call(cl.sim.network.remove, "net", name)
    assert cl.rt.call(cl.sim.network.describe, "net") == []
    status = cl.rt.call(fleet.device_status, "net-9")
    assert status["deviceId"] == "net-9" and status["index"] == 9 and status["state"] == "running"
    cl.rt.call(fleet.set_override, "net-9", "temperature", 99.5)
    time.sleep(0.4)
    assert cl.rt.call(fleet.device_status, "net-9")["messagesSent"] > 0
    cl.delete("net")
