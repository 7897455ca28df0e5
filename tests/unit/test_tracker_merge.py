"""Trackers of several receivers (a sharded subscription) folded into one: the same as one tracker of it all."""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest

from iotix.observe.tracker import TelemetryTracker, TrackerExport, TrackerMerge

Event = tuple[str, int, float, float]  # device id, seq, ts (ms), receive time (s)


def _events(seed: int, devices: int = 20, per_device: int = 300) -> list[Event]:
    """Messages of ``devices`` devices: some lost, some twice, some late (reordered), in arrival order."""
    rng = random.Random(seed)
    out: list[Event] = []
    for d in range(devices):
        for seq in range(per_device):
            roll = rng.random()
            if roll < 0.05:
                continue  # lost
            arrival = seq + (rng.uniform(0, 8) if roll < 0.1 else 0.0)  # late: arrives after later ones
            copies = 2 if 0.1 <= roll < 0.14 else 1
            for _ in range(copies):
                out.append((f"dev-{d}", seq, 1_000_000.0 + seq, arrival + rng.random() * 0.5))
    out.sort(key=lambda e: e[3])
    return out


def _feed(tracker: TelemetryTracker, event: Event) -> None:
    device, seq, ts_ms, arrival = event
    tracker.record(device, seq, ts_ms, now=1000.0 + arrival / 1000 + 0.003)


def _sharded(events: list[Event], parts: int, seed: int, exports: int = 4) -> tuple[TelemetryTracker, list]:
    """Events spread over ``parts`` trackers at random (as a broker spreads a shared subscription), exported
    ``exports`` times along the way and folded into one tracker; also returns the parts."""
    rng = random.Random(seed)
    trackers = [TelemetryTracker(f"part-{k}") for k in range(parts)]
    merged = TelemetryTracker("merged")
    merge = TrackerMerge(merged)
    cut = {len(events) * (i + 1) // exports for i in range(exports)}
    for i, event in enumerate(events, 1):
        _feed(trackers[rng.randrange(parts)], event)
        if i in cut:
            for k, t in enumerate(trackers):
                merge.fold(k, t.export())
    return merged, trackers


@pytest.mark.parametrize(("parts", "seed"), [(1, 1), (2, 2), (3, 3), (5, 4)])
def test_merged_tracker_equals_one_tracker_of_everything(parts: int, seed: int) -> None:
    events = _events(seed)
    whole = TelemetryTracker("whole")
    for event in events:
        _feed(whole, event)
    merged, trackers = _sharded(events, parts, seed + 100)

    assert merged.total == whole.total == len(events)
    assert merged.devices.keys() == whole.devices.keys()
    for device, one in whole.devices.items():
        m = merged.devices[device]
        assert (m.received, m.duplicates, m.first_seq, m.highest_seq) == (
            one.received,
            one.duplicates,
            one.first_seq,
            one.highest_seq,
        ), device
        assert m.count_seen(0, 300) == one.count_seen(0, 300)
        assert m.missing(0, 300, limit=300) == one.missing(0, 300, limit=300)
        # reordering is what each receiver saw of it
        assert m.out_of_order == sum(t.devices[device].out_of_order for t in trackers if device in t.devices)
    expected = {d: (0, 300) for d in whole.devices}
    a, b = merged.report(expected).as_dict(), whole.report(expected).as_dict()
    for key in ("expected", "received", "lost", "duplicates", "silentDevices", "invalidMessages", "worstDevices"):
        assert a[key] == b[key], key
    assert a["latencyMs"] == b["latencyMs"]  # HDR histograms merge exactly
    assert merged.latency.count == whole.latency.count == sum(1 for _ in events)


def test_a_message_that_reached_two_receivers_counts_once_and_once_as_duplicate() -> None:
    a, b = TelemetryTracker("a"), TelemetryTracker("b")
    for seq in range(10):
        a.record("d", seq, None)
    b.record("d", 3, None)  # the broker delivered seq 3 to both
    b.record("d", 3, None)  # and twice to b
    merged = TelemetryTracker("m")
    merge = TrackerMerge(merged)
    merge.fold("a", a.export())
    merge.fold("b", b.export())
    track = merged.devices["d"]
    assert (track.received, track.duplicates) == (12, 2)
    result = merged.report({"d": (0, 10)}).devices[0]
    assert (result.received, result.lost, result.duplicates) == (10, 0, 2)


def test_exports_carry_only_what_changed_and_folding_twice_counts_devices_once() -> None:
    part = TelemetryTracker("p")
    for seq in range(5):
        part.record("x", seq, 1000.0, now=2.0)
    part.record("y", 0, 1000.0, now=2.0)
    first = part.export()
    assert set(first.devices) == {"x", "y"}
    part.record("y", 1, 1000.0, now=2.5)
    second = part.export()
    assert set(second.devices) == {"y"}  # x did not change
    assert [h for _, h in second.latency] and part.export().latency == []  # latencies are deltas

    merged = TelemetryTracker("m")
    merge = TrackerMerge(merged)
    merge.fold(0, first)
    merge.fold(0, first)  # again (a retried call): devices are whole, so nothing counts twice
    merge.fold(0, second)
    assert (merged.devices["x"].received, merged.devices["y"].received) == (5, 2)
    assert merged.total == 7
    assert merged.devices["x"].duplicates == 0


def test_export_pickles_and_keeps_latency_groups_and_invalid_messages() -> None:
    part = TelemetryTracker("p", group_of=lambda d: d.split("-")[0])
    part.record("env-1", 0, 1000.0, now=1.010)  # 10 ms
    part.record("vans-1", 0, 1000.0, now=1.200)  # 200 ms
    part.record_envelope({"nothing": 1})
    export = pickle.loads(pickle.dumps(part.export()))
    assert isinstance(export, TrackerExport)

    merged = TelemetryTracker("m", group_of=lambda d: d.split("-")[0])
    TrackerMerge(merged).fold("p", export)
    assert merged.invalid == 1 and merged.total == 3
    assert merged.latency_of(["env-1"]).max == pytest.approx(0.010, rel=0.01)
    assert merged.latency_of(["vans-1"]).max == pytest.approx(0.200, rel=0.01)
    # the merged tracker's latencies are fresh intervals: a time series takes them like any tracker's
    assert merged.groups["env"].take_interval().count == 1


def test_a_tracker_fed_directly_and_by_parts_adds_up() -> None:
    merged = TelemetryTracker("m")
    merged.record("d", 0, None)
    merged.record("d", 1, None)
    part = TelemetryTracker("p")
    part.record("d", 1, None)  # also arrived here
    part.record("d", 2, None)
    TrackerMerge(merged).fold("p", part.export())
    merged.record("d", 2, None)  # and directly again
    track = merged.devices["d"]
    assert (track.received, track.duplicates, track.highest_seq) == (5, 2, 2)
    assert track.count_seen(0, 3) == 3


def test_the_parts_group_wins_over_the_targets() -> None:
    part = TelemetryTracker("p", group_of=lambda d: "env")
    part.record("env-1", 0, 1000.0, now=1.050)
    merged = TelemetryTracker("m")  # knows no fleet (a sharded fleet's devices, say)
    TrackerMerge(merged).fold("p", part.export())
    assert merged.groups["env"].count == 1
    assert merged.latency_of(["env-1"]).count == 1


def test_a_receiver_keeps_latencies_aside_until_it_knows_the_devices_fleet() -> None:
    from iotix.cluster.receivers import ReceiverTracker

    receiver = ReceiverTracker("r")
    receiver.record("env-1", 0, 1000.0, now=1.010)
    receiver.record("env-1", 1, 1000.0, now=1.020)
    receiver.record("stray-1", 0, 1000.0, now=1.030)
    assert receiver.groups == {} and receiver.pending_samples == 3
    receiver.assign({"env": ["env-0", "env-1"]})
    assert receiver.groups["env"].count == 2 and "env-1" not in receiver.pending
    receiver.record("env-1", 2, 1000.0, now=1.040)
    receiver.record("env-0", 0, 1000.0, now=1.040)  # known from the start
    export = receiver.export()  # stray-1's fleet is unknown to everyone: no fleet's
    assert export.devices["stray-1"][6] is None and export.devices["env-0"][6] == "env"
    merged = TelemetryTracker("m")
    TrackerMerge(merged).fold(0, export)
    assert merged.latency_of(["env-0", "env-1"]).count == 4
    assert merged.latency_of(["stray-1"]).count == 1
    assert merged.report({"env-1": (0, 3)}).devices[0].lost == 0


# -- the MQTT side of a receiver: a shared subscription that counts instead of keeping ------------------------


def _message(topic: str) -> Any:
    from iotix.transport.mqtt_probe import ReceivedMessage

    return ReceivedMessage(topic, b"{}", 0, False, 0.0)


def test_a_shared_subscription_that_does_not_keep_counts_per_topic() -> None:
    from iotix.transport.mqtt_probe import Subscription

    sub = Subscription("sr/+/telemetry", 0, share="iotix-host-1-1-abcd", keep=False)
    assert sub.wire_filter == "$share/iotix-host-1-1-abcd/sr/+/telemetry"
    for topic in ["sr/a/telemetry", "sr/b/telemetry", "sr/a/telemetry"]:
        sub.add(_message(topic))
    assert sub.messages == [] and sub.total == 3
    assert (sub.count("sr/+/telemetry"), sub.count("sr/a/telemetry"), sub.count("sr/c/telemetry")) == (3, 2, 0)
    kept = Subscription("sr/#", 0)
    assert kept.wire_filter == "sr/#"
    kept.add(_message("sr/a/telemetry"))
    assert kept.count("sr/a/telemetry") == 1 and len(kept.messages) == 1


def test_a_connection_answers_for_a_topic_from_its_sharded_subscription_unless_it_keeps_it_itself() -> None:
    from iotix.transport.mqtt_probe import MqttProbe, Subscription

    probe = MqttProbe.__new__(MqttProbe)  # no client: only the bookkeeping is asked
    probe.subscriptions = {"own/#": Subscription("own/#", 0)}
    remote = object()
    probe.remote = {"fleet/+/telemetry": remote}  # type: ignore[dict-item]
    assert probe.listens_to("fleet/+/telemetry") == 2 and probe.listens_to("fleet/x/telemetry") == 1
    assert probe.remote_for("fleet/x/telemetry") is remote and probe.remote_for("fleet/+/telemetry") is remote
    assert probe.remote_for("own/x") is None and probe.remote_for("other") is None
