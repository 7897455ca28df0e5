"""A subscription sharded over receiver actors (Ray, local) on a real Mosquitto: trackers merged exactly.

Checked against an independent ``mosquitto_sub`` on the same topic: what the receivers' merged tracker counts
is what arrived there, and no message is counted twice across the receivers of the shared subscription.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import BrokerHarness, all_running, process_gone

from iotix.services import find_mosquitto, start_local_broker
from iotix.transport.mqtt_probe import MqttProbe

ray = pytest.importorskip("ray")

from iotix.cluster import ray_support  # noqa: E402
from iotix.cluster.receivers import ReceiverError, ShardedSubscription, open_sharded_subscription  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed"),
]
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
TOPIC = "sr/+/telemetry"


def model_dict(interval_ms: int) -> dict[str, Any]:
    return {
        "id": "sr-sensor",
        "name": "sharded receiver sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {"host": "127.0.0.1", "port": 1883, "topicPattern": "sr/${deviceId}/telemetry", "qos": 0},
        "telemetry": [
            {
                "name": "temperature",
                "type": "number",
                "intervalMs": interval_ms,
                "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
            }
        ],
    }


def _ray_processes(temp_dir: str) -> list[int]:
    """Processes whose command line mentions the local Ray's folder (its GCS, raylet, workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if temp_dir.encode() in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def local_ray() -> Iterator[str]:
    ray_support.ensure_ray(None)
    temp_dir = ray_support._state["temp_dir"]
    yield temp_dir
    ray_support.shutdown_ray()
    end = time.monotonic() + 20
    while _ray_processes(temp_dir) and time.monotonic() < end:
        time.sleep(0.2)
    assert _ray_processes(temp_dir) == [], "the local Ray left processes behind"
    assert not Path(temp_dir).exists()


@pytest.fixture(scope="module")
def broker() -> Iterator[Any]:
    b = start_local_broker("mosquitto")
    yield b
    b.stop()


class Harness(BrokerHarness):
    def probe(self) -> MqttProbe:
        async def make() -> MqttProbe:
            probe = MqttProbe("default", f"sr-probe-{os.getpid()}-{time.monotonic_ns()}")
            probe.tracker.group_of = self.sim.fleet_name_of
            await probe.connect(self.broker.host, self.broker.port)
            return probe

        probe = self.rt.call(make)
        self.on_close(lambda: self.rt.call(probe.close))
        return probe

    def fleets(self) -> Any:
        async def fleets() -> dict[str, Any]:
            return {name: f.by_id.keys() for name, f in self.sim.fleets.items()}

        return fleets


@pytest.fixture
def h(broker: Any, local_ray: str) -> Iterator[Harness]:
    harness = Harness(broker)
    yield harness
    harness.close()


def _sharded(h: Harness, probe: MqttProbe, shards: int = 2) -> ShardedSubscription:
    return h.rt.call(open_sharded_subscription, probe, TOPIC, 0, shards, 10.0, h.fleets(), timeout=120)


@pytest.mark.skipif(MOSQUITTO_SUB is None, reason="mosquitto_sub missing")
def test_two_receivers_count_what_mosquitto_sub_counts_and_nothing_twice(h: Harness, tmp_path: Path) -> None:
    probe = h.probe()
    sub = _sharded(h, probe)
    pids = [r["pid"] for r in sub.info()]
    assert len(set(pids)) == 2 and os.getpid() not in pids
    out_file = tmp_path / "mosquitto_sub.out"
    with out_file.open("w") as out:  # a file, not a pipe: a full pipe would stall mosquitto_sub
        independent = subprocess.Popen(
            [MOSQUITTO_SUB, "-h", h.broker.host, "-p", str(h.broker.port), "-t", TOPIC], stdout=out
        )
    try:
        time.sleep(0.5)
        fleet = h.fleet("srf", model_dict(interval_ms=200), 200)  # ~1,000 msg/s
        h.start(fleet)
        h.wait(lambda: all_running(fleet), what="fleet running")
        time.sleep(3.0)
        h.stop(fleet)
        sent = fleet.stats()["messagesSent"]
        end = time.monotonic() + 10
        while out_file.read_text().count("\n") < sent and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(0.3)  # anything beyond would show as more lines than sent
    finally:
        independent.terminate()
        independent.wait(5)
    lines = [json.loads(line) for line in out_file.read_text().splitlines() if line.strip()]

    async def check() -> Any:
        from iotix._robot.telemetry import collect, probe_source

        return await collect(fleet, probe_source(probe), 10.0)

    report = h.rt.call(check).report
    assert sent >= 200 * 10
    assert len(lines) == sent, (report.as_dict(), len(lines), sent)
    assert (report.expected, report.received, report.lost, report.duplicates) == (sent, len(lines), 0, 0)
    assert probe.tracker.total == len(lines)
    # each receiver took a share (a shared subscription), and the shares add up to what arrived
    assert sub.messages == len(lines)
    shares = [r["messages"] for r in h.rt.call(sub.info)]
    assert all(n > 0 for n in shares) and sum(shares) == len(lines), shares
    # latencies went to the fleet's histogram, one per message
    assert h.rt.call(lambda: probe.tracker.latency_of(fleet.device_ids()).count) == len(lines)
    # counts for Wait Until Messages Received: the filter, and a topic within it
    assert h.rt.call(sub.count, TOPIC) == len(lines)
    one = sum(1 for m in lines if m["deviceId"] == "srf-7")
    assert h.rt.call(sub.count, "sr/srf-7/telemetry") == one > 0

    h.rt.call(probe.close)
    assert probe.remote == {}
    end = time.monotonic() + 15
    while not all(process_gone(pid) for pid in pids) and time.monotonic() < end:
        time.sleep(0.2)
    assert all(process_gone(pid) for pid in pids), "a receiver process outlived its subscription"


def test_a_receiver_that_dies_is_named_by_the_next_read(h: Harness) -> None:
    probe = h.probe()
    sub = _sharded(h, probe)
    pids = [r["pid"] for r in sub.info()]
    victim = sub.info()[1]
    os.kill(victim["pid"], signal.SIGKILL)
    with pytest.raises(ReceiverError) as err:
        end = time.monotonic() + 20
        while time.monotonic() < end:  # Ray notices the death within moments
            h.rt.call(probe.refresh)
            time.sleep(0.2)
    message = str(err.value)
    assert "receiver 2 of 2 of the sharded subscription 'sr/+/telemetry' of 'default'" in message
    assert f"pid {victim['pid']}" in message and "is gone" in message and "the other 1 receiver(s) go on" in message
    # the survivor takes the whole subscription from now on
    fleet = h.fleet("after", model_dict(interval_ms=100), 20)
    h.start(fleet)
    h.wait(lambda: all_running(fleet), what="fleet running")
    time.sleep(1.5)
    h.stop(fleet)

    async def check() -> Any:
        from iotix._robot.telemetry import collect, probe_source

        return await collect(fleet, probe_source(probe), 10.0)

    report = h.rt.call(check).report
    assert report.expected >= 20 * 10 and (report.lost, report.duplicates) == (0, 0)
    h.rt.call(probe.close)  # stops the other one too
    end = time.monotonic() + 15
    while not all(process_gone(pid) for pid in pids) and time.monotonic() < end:
        time.sleep(0.2)
    assert all(process_gone(pid) for pid in pids)


def test_bad_arguments_fail_naming_the_connection_before_any_process_starts(h: Harness) -> None:
    from iotix.errors import ConfigurationError

    probe = h.probe()
    for topic, shards, words in [
        ("a/#/b", 2, "'#' must be the last level"),
        ("$share/g/a", 2, "give the topic itself"),
        ("a/b", 100, "shards must be 1"),
    ]:
        with pytest.raises(ConfigurationError) as err:
            h.rt.call(open_sharded_subscription, probe, topic, 0, shards, 5.0)
        assert "'default' cannot subscribe to" in str(err.value) and words in str(err.value)


def test_receivers_that_cannot_connect_fail_the_subscription_and_leave_no_process(h: Harness) -> None:
    from iotix.services import pick_free_port

    probe = h.probe()
    probe.port = pick_free_port()  # nobody listens there: the receivers log in where the connection did
    before = set(_ray_workers())
    with pytest.raises(ReceiverError) as err:
        h.rt.call(open_sharded_subscription, probe, TOPIC, 0, 2, 2.0, timeout=120)
    message = str(err.value)
    assert "cannot subscribe to '$share/iotix-" in message and f"127.0.0.1:{probe.port}" in message, message
    assert message.startswith("'default' cannot subscribe to 'sr/+/telemetry' with shards=2: receiver ")
    assert probe.remote == {}
    end = time.monotonic() + 15
    while set(_ray_workers()) - before and time.monotonic() < end:
        time.sleep(0.2)
    assert not set(_ray_workers()) - before, "a receiver process outlived its failed start"


def _ray_workers() -> list[int]:
    """Ray actor processes holding a receiver (their title names the class)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"ReceiverWorker" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
