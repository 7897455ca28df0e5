"""The send scheduler (with a fake clock), the latency histogram and the telemetry tracker."""

from __future__ import annotations

import random

import pytest

from iotix.fleet.scheduler import Scheduler
from iotix.observe.histogram import Histogram, LatencyRecorder
from iotix.observe.tracker import DeviceTrack, TelemetryTracker


class FakeLoop:
    """Just what the scheduler uses: time() and call_at(); run() advances to the next timer."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, object]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, fn):
        loop = self

        class Handle:
            def cancel(self_inner) -> None:
                loop.timers = [t for t in loop.timers if t[1] is not self_inner]

        handle = Handle()
        self.timers.append((when, handle))
        self._fn = fn
        return handle

    def advance(self) -> bool:
        if not self.timers:
            return False
        when, _ = min(self.timers, key=lambda t: t[0])
        self.timers.clear()
        self.now = max(self.now, when)
        self._fn()
        return True


class Dev:
    def __init__(self, name: str) -> None:
        self.name = name
        self.gen = 1


def test_fires_in_due_order_and_reschedules_without_drift() -> None:
    loop = FakeLoop()
    sched = Scheduler(loop, tick=0.005)  # type: ignore[arg-type]
    fired: list[tuple[str, float]] = []

    def fire(dev, group, due, now):
        fired.append((dev.name, round(due, 6)))
        return due + (1.0 if dev.name == "a" else 0.4)

    a, b = Dev("a"), Dev("b")
    sched.add(0.0, a, 0, 1, fire)
    sched.add(0.1, b, 0, 1, fire)
    while loop.now < 2.05 and loop.advance():
        pass
    assert [f for f in fired if f[0] == "a"] == [("a", 0.0), ("a", 1.0), ("a", 2.0)]
    assert [f[1] for f in fired if f[0] == "b" and f[1] <= 2.0] == [0.1, 0.5, 0.9, 1.3, 1.7]


def test_sends_due_within_a_tick_fire_in_one_wakeup() -> None:
    loop = FakeLoop()
    sched = Scheduler(loop, tick=0.01)  # type: ignore[arg-type]
    wakeups = []
    orig = sched._run

    def counting_run() -> None:
        wakeups.append(loop.now)
        orig()

    sched._run = counting_run  # type: ignore[method-assign]
    devices = [Dev(str(i)) for i in range(1000)]
    for i, d in enumerate(devices):  # 1,000 sends spread over 1 s
        sched.add(i / 1000, d, 0, 1, lambda dev, g, due, now: None)
    while loop.advance():
        pass
    assert sched.fired == 1000
    assert len(wakeups) <= 101  # at most one wake-up per 10 ms tick


def test_entries_of_an_old_generation_are_skipped() -> None:
    loop = FakeLoop()
    sched = Scheduler(loop)  # type: ignore[arg-type]
    fired = []
    dev = Dev("x")
    sched.add(0.0, dev, 0, 1, lambda d, g, due, now: fired.append(due) or due + 1)
    loop.advance()
    dev.gen = 2  # e.g. the device was dropped
    while loop.now < 5 and loop.advance():
        pass
    assert fired == [0.0]
    assert sched._free  # its slot was recycled


def test_a_failing_send_does_not_stop_the_others() -> None:
    loop = FakeLoop()
    sched = Scheduler(loop)  # type: ignore[arg-type]
    good = []

    def bad(d, g, due, now):
        raise RuntimeError("boom")

    sched.add(0.0, Dev("bad"), 0, 1, bad)
    sched.add(0.0, Dev("good"), 0, 1, lambda d, g, due, now: good.append(due) or None)
    loop.advance()
    assert good == [0.0]
    assert sched.errors == 1


def test_histogram_percentiles_within_bucket_error() -> None:
    h = Histogram()
    rng = random.Random(1)
    values = [rng.uniform(0.0001, 0.5) for _ in range(20_000)]
    for v in values:
        h.record(v)
    values.sort()
    for p in (50, 90, 99):
        exact = values[int(len(values) * p / 100) - 1]
        assert h.percentile(p) == pytest.approx(exact, rel=0.01)  # two significant digits
    assert h.count == 20_000
    assert h.max == pytest.approx(values[-1], rel=0.01)
    assert Histogram().percentile(50) is None


def test_corrected_recording_shows_a_stall_as_the_sends_it_swallowed() -> None:
    """A device on a 1 s schedule that stalls 2 s: 2 s and the 1 s of the send the stall skipped, not one
    late sample among punctual ones (coordinated omission)."""
    h = Histogram()
    for _ in range(98):
        h.record_corrected(0.001, 1.0)
    h.record_corrected(2.0, 1.0)
    assert h.count == 100
    assert h.max == pytest.approx(2.0, rel=0.01)
    assert h.percentile(99) == pytest.approx(1.0, rel=0.01)
    plain = Histogram()
    for _ in range(98):
        plain.record(0.001)
    plain.record(2.0)
    assert plain.count == 99
    assert plain.percentile(98) == pytest.approx(0.001, rel=0.01)


def test_intervals_merge_exactly_into_the_total_and_survive_encoding() -> None:
    rec = LatencyRecorder()
    rng = random.Random(2)
    every = Histogram()
    intervals = []
    for _ in range(5):
        for _ in range(1000):
            v = rng.uniform(0.0001, 2.0)
            rec.record(v)
            every.record(v)
        intervals.append(rec.take_interval())
    assert [i.count for i in intervals] == [1000] * 5
    assert rec.count == 5000
    merged = Histogram()
    for i in intervals:
        merged.merge(Histogram.decode(i.encode()))  # as another process (a shard) would send it
    for p in (1, 50, 90, 99, 99.9, 100):
        assert merged.percentile(p) == every.percentile(p) == rec.percentile(p)
    assert merged.summary() == every.summary() == rec.summary()


def test_device_track_counts_gaps_duplicates_and_reordering() -> None:
    t = DeviceTrack(Histogram())
    for seq in [0, 1, 2, 4, 3, 3, 7]:
        t.add(seq)
    assert t.received == 7
    assert t.duplicates == 1
    assert t.out_of_order == 1  # 3 arrived after 4
    assert t.count_seen(0, 8) == 6  # 0,1,2,3,4,7
    assert t.missing(0, 8) == [5, 6]


def test_count_seen_matches_brute_force_on_random_ranges() -> None:
    rng = random.Random(3)
    t = DeviceTrack(Histogram())
    seen = set()
    for _ in range(3000):
        s = rng.randrange(5000)
        t.add(s)
        seen.add(s)
    for _ in range(200):
        a = rng.randrange(5100)
        b = rng.randrange(a, 5200)
        assert t.count_seen(a, b) == sum(1 for s in range(a, b) if s in seen)


def test_report_against_what_devices_sent() -> None:
    tr = TelemetryTracker()
    for seq in range(10):
        if seq != 5:
            tr.record("d1", seq, None)
    for seq in range(3):
        tr.record("d2", seq, None)
    tr.record("d2", 1, None)
    tr.record_envelope({"not": "an envelope"})
    report = tr.report({"d1": (0, 10), "d2": (0, 3), "d3": (0, 4)})
    assert report.expected == 17
    assert report.lost == 1 + 4  # d1 lost seq 5, d3 sent 4 and none arrived
    assert report.duplicates == 1
    assert report.silent_devices == ["d3"]
    assert report.invalid_messages == 1
    worst = report.worst(1)[0]
    assert (worst.device_id, worst.lost) == ("d3", 4)
    d1 = next(d for d in report.devices if d.device_id == "d1")
    assert d1.first_missing == [5]


def test_report_from_first_seen_when_the_receiver_joined_late() -> None:
    tr = TelemetryTracker()
    for seq in range(100, 110):
        tr.record("d1", seq, None)
    report = tr.report({"d1": (-1, 110)})
    assert report.expected == 10
    assert report.lost == 0


def test_latency_is_kept_per_group_so_fleets_do_not_mix() -> None:
    groups = {"a-0": "A", "a-1": "A", "b-0": "B"}
    tr = TelemetryTracker(group_of=groups.get)
    tr.record("a-0", 0, 1000.0, now=1.010)  # 10 ms
    tr.record("a-1", 0, 1000.0, now=1.020)  # 20 ms
    tr.record("b-0", 0, 1000.0, now=3.000)  # 2 s
    report_a = tr.report({"a-0": (0, 1), "a-1": (0, 1)})
    assert report_a.latency["count"] == 2
    assert report_a.latency["max"] == pytest.approx(20, rel=0.05)
    assert tr.latency_of(["b-0"]).count == 1
    assert tr.latency.count == 3
