"""The fault engine, one direction of one connection: every kind's effect on timing, order and content.

Most tests drive a :class:`FakeLoop` (a clock the test moves), so times are exact and nothing sleeps; one test
runs a real asyncio loop to show the timers work there too. Statistical kinds use a seeded RNG and bounds
derived from the binomial distribution (4 standard deviations).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections.abc import Callable
from typing import Any

import pytest

from iotix.fault.mqtt_frames import encode_remaining_length
from iotix.fault.pipe import HOLD_LIMIT, REORDER_MAX_HOLD, ActiveFault, Pipe
from iotix.fault.spec import FaultSpec, parse_fault


class FakeHandle:
    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """The two loop methods the fault layer uses (``time``, ``call_at``), on a clock moved by :meth:`advance`."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._timers: list[tuple[float, int, FakeHandle]] = []
        self._seq = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> FakeHandle:
        handle = FakeHandle(when, callback, args)
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, handle))
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> FakeHandle:
        return self.call_at(self.now + delay, callback, *args)

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, handle = heapq.heappop(self._timers)
            if handle.cancelled:
                continue
            self.now = max(self.now, when)
            handle.callback(*handle.args)
        self.now = target

    def pending(self) -> int:
        return sum(1 for _, _, handle in self._timers if not handle.cancelled)


class Sink:
    """Collects what a pipe delivers (with the loop time) and what it asks the layer to do."""

    def __init__(self, loop: FakeLoop) -> None:
        self.loop = loop
        self.items: list[tuple[float, bytes]] = []
        self.acts: list[str] = []

    def deliver(self, data: bytes) -> None:
        self.items.append((self.loop.now, data))

    def act(self, action: str) -> None:
        self.acts.append(action)

    @property
    def data(self) -> list[bytes]:
        return [data for _, data in self.items]

    @property
    def stream(self) -> bytes:
        return b"".join(self.data)


def fault(kind: str, *, datagram: bool = False, name: str | None = None, **settings: Any) -> ActiveFault:
    spec = parse_fault(kind, settings, name=name or f"{kind}-1", target="fleet 'env'", datagram=datagram)
    return ActiveFault(spec)


def make(*, datagram: bool = False, seed: int = 1) -> tuple[FakeLoop, Pipe, Sink]:
    loop = FakeLoop()
    sink = Sink(loop)
    pipe = Pipe(
        loop,  # type: ignore[arg-type]
        datagram=datagram,
        direction="upstream",
        deliver=sink.deliver,
        act=sink.act,
        rng=random.Random(seed),
    )
    return loop, pipe, sink


def binomial_bound(n: int, p: float) -> float:
    """4 standard deviations of the share of successes in n trials."""
    return 4 * math.sqrt(p * (1 - p) / n)


def mqtt_packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_remaining_length(len(body)) + body


def publish(n: int) -> bytes:
    return mqtt_packet(0x30, b"\x00\x03t/x" + f"msg-{n}".encode())


PUBACK = mqtt_packet(0x40, b"\x00\x01")
CONNECT = mqtt_packet(0x10, b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x02id")


# --- idle fast path ----------------------------------------------------------------------------------------


def test_with_no_fault_the_pipe_is_idle_and_passes_through_at_once() -> None:
    loop, pipe, sink = make()
    assert pipe.idle
    pipe.push(b"abc")
    pipe.push_eof()
    assert sink.items == [(loop.now, b"abc"), (loop.now, b"")]
    assert loop.pending() == 0


def test_idle_turns_false_with_a_fault_and_true_again_when_the_queue_drained() -> None:
    loop, pipe, sink = make()
    latency = fault("latency", latency="100ms")
    pipe.set_faults([latency])
    assert not pipe.idle
    pipe.push(b"a")
    pipe.set_faults([])
    assert not pipe.idle, "a queued chunk keeps the pipe busy, or new bytes would overtake it"
    pipe.push(b"b")  # behind "a", although no fault acts any more
    assert sink.items == []
    loop.advance(0.1)
    assert sink.data == [b"a", b"b"]
    assert pipe.idle and pipe.backlog() == 0


# --- latency ------------------------------------------------------------------------------------------------


def test_latency_delays_every_chunk_by_exactly_the_latency_in_order() -> None:
    loop, pipe, sink = make()
    latency = fault("latency", latency="50ms")
    pipe.set_faults([latency])
    start = loop.now
    for i in range(5):
        pipe.push(b"%d" % i)
        loop.advance(0.01)
    loop.advance(0.1)
    assert sink.data == [b"0", b"1", b"2", b"3", b"4"]
    assert [round(t - start, 6) for t, _ in sink.items] == [0.05, 0.06, 0.07, 0.08, 0.09]
    assert latency.stats["packets_delayed"] == 5 and latency.stats["bytes_delayed"] == 5


def test_jitter_never_reorders_a_stream() -> None:
    loop, pipe, sink = make()
    pipe.set_faults([fault("latency", latency="100ms", jitter="80ms")])
    sent: dict[bytes, float] = {}
    for i in range(300):
        data = b"%03d" % i
        sent[data] = loop.now
        pipe.push(data)
        loop.advance(0.002)
    loop.advance(1)
    assert sink.data == sorted(sent)
    delays = [t - sent[data] for t, data in sink.items]
    assert min(delays) >= 0.02 - 1e-9 and max(delays) <= 0.18 + 1e-9
    assert max(delays) - min(delays) > 0.1, "the jitter widens the spread"


def test_jitter_reorders_datagrams_as_netem_does() -> None:
    loop, pipe, sink = make(datagram=True)
    pipe.set_faults([fault("latency", datagram=True, latency="100ms", jitter="50ms")])
    sent = {}
    for i in range(200):
        data = b"%03d" % i
        sent[data] = loop.now
        pipe.push(data)
        loop.advance(0.001)
    loop.advance(1)
    assert sorted(sink.data) == sorted(sent)
    assert sink.data != sorted(sent), "independent delays reorder datagrams"
    delays = [t - sent[data] for t, data in sink.items]
    assert min(delays) >= 0.05 - 1e-9 and max(delays) <= 0.15 + 1e-9


def test_normal_jitter_has_the_set_spread_and_is_clipped_at_zero() -> None:
    loop, pipe, sink = make(datagram=True)
    pipe.set_faults([fault("latency", datagram=True, latency="10ms", jitter="20ms", distribution="normal")])
    n = 4000
    for i in range(n):
        pipe.push(b"%d" % i)
    loop.advance(1)
    delays = [t - 1000.0 for t, _ in sink.items]
    assert len(delays) == n and min(delays) >= 0
    share_at_zero = sum(1 for d in delays if d == 0) / n
    # P(N(10ms, 20ms) < 0) = P(Z < -0.5) = 0.3085
    assert abs(share_at_zero - 0.3085) < binomial_bound(n, 0.3085)


def test_correlation_smooths_consecutive_delays() -> None:
    def mean_step(correlation: str) -> float:
        loop, pipe, sink = make(datagram=True)
        pipe.set_faults([fault("latency", datagram=True, latency="100ms", jitter="50ms", correlation=correlation)])
        for i in range(2000):
            pipe.push(b"%d" % i)
        loop.advance(1)
        order = sorted(sink.items, key=lambda item: int(item[1]))
        delays = [t for t, _ in order]
        return sum(abs(b - a) for a, b in itertools.pairwise(delays)) / (len(delays) - 1)

    assert mean_step("90%") < mean_step("0") / 3


# --- bandwidth ----------------------------------------------------------------------------------------------


def test_bandwidth_lets_n_bytes_through_in_n_over_rate_seconds_and_shows_the_backlog() -> None:
    loop, pipe, sink = make()
    bandwidth = fault("bandwidth", rate="80kbps")  # 10,000 B/s
    pipe.set_faults([bandwidth])
    pipe.push(b"x" * 20_000)
    assert pipe.backlog() == 20_000
    loop.advance(1.0)
    delivered = len(sink.stream)
    assert 9_000 <= delivered <= 10_000, "no more than the rate in the first second"
    assert pipe.backlog() == 20_000 - delivered
    loop.advance(1.0)
    assert sink.stream == b"x" * 20_000
    assert sink.items[-1][0] == pytest.approx(1002.0)
    # smooth: cut in pieces of 20 ms on the wire (here 512 B minimum), not one burst after 2 s
    assert len(sink.items) >= 20
    assert bandwidth.stats["bytes_delayed"] == 20_000


def test_a_shared_bandwidth_fault_is_one_link_for_every_connection() -> None:
    """Per connection (the default) two pipes get the rate each; shared, they split it (a gateway's uplink)."""
    for shared, expected_end in ((False, 1001.0), (True, 1002.0)):
        loop = FakeLoop()
        link = fault("bandwidth", rate="80kbps", shared=str(shared))  # 10,000 B/s
        sinks = []
        for n in range(2):
            sink = Sink(loop)
            pipe = Pipe(
                loop,
                datagram=False,
                direction="upstream",
                deliver=sink.deliver,
                act=sink.act,  # type: ignore[arg-type]
                rng=random.Random(n),
            )
            pipe.set_faults([link])
            pipe.push(b"x" * 10_000)
            sinks.append(sink)
        loop.advance(5.0)
        assert [s.stream for s in sinks] == [b"x" * 10_000] * 2
        assert max(s.items[-1][0] for s in sinks) == pytest.approx(expected_end), f"shared={shared}"


def test_a_shared_link_has_a_rate_per_direction() -> None:
    """Shared by connections, not by directions: as on a real uplink and downlink."""
    loop = FakeLoop()
    link = fault("bandwidth", rate="80kbps", shared="true")  # 10,000 B/s each way
    sinks = []
    for direction in ("upstream", "downstream"):
        sink = Sink(loop)
        pipe = Pipe(loop, datagram=False, direction=direction, deliver=sink.deliver, act=sink.act, rng=random.Random(1))  # type: ignore[arg-type]
        pipe.set_faults([link])
        pipe.push(b"x" * 10_000)
        sinks.append(sink)
    loop.advance(5.0)
    assert [s.items[-1][0] for s in sinks] == [pytest.approx(1001.0)] * 2


def test_bandwidth_queues_datagrams_back_to_back() -> None:
    loop, pipe, sink = make(datagram=True)
    pipe.set_faults([fault("bandwidth", datagram=True, rate="8KB/s")])
    for _ in range(4):
        pipe.push(b"y" * 800)  # 0.1 s each on the wire
    loop.advance(1)
    assert [round(t - 1000.0, 6) for t, _ in sink.items] == [0.1, 0.2, 0.3, 0.4]


def test_bandwidth_then_latency_add_up() -> None:
    loop, pipe, sink = make()
    pipe.set_faults([fault("latency", latency="100ms"), fault("bandwidth", rate="8KB/s")])
    pipe.push(b"z" * 400)  # 50 ms on the wire, then 100 ms in flight
    loop.advance(1)
    assert sink.items[-1][0] - 1000.0 == pytest.approx(0.15)


# --- blackhole and timeout ----------------------------------------------------------------------------------


def test_blackhole_holds_a_stream_and_releases_it_in_order_with_its_eof() -> None:
    loop, pipe, sink = make()
    blackhole = fault("blackhole")
    pipe.set_faults([blackhole])
    pipe.push(b"one")
    pipe.push(b"two")
    pipe.push_eof()
    loop.advance(60)
    assert sink.items == [] and sink.acts == [], "nothing passes, nothing closes"
    assert pipe.backlog() == 6 and blackhole.stats["bytes_held"] == 6
    pipe.set_faults([])
    assert sink.data == [b"one", b"two", b""]
    assert pipe.idle


def test_released_bytes_still_get_the_remaining_faults() -> None:
    loop, pipe, sink = make()
    latency = fault("latency", latency="200ms")
    pipe.set_faults([fault("blackhole"), latency])
    pipe.push(b"held")
    loop.advance(5)
    pipe.set_faults([latency])
    loop.advance(0.199)
    assert sink.items == []
    loop.advance(0.002)
    assert sink.data == [b"held"]


def test_a_hold_past_its_bound_resets_the_connection_once() -> None:
    _loop, pipe, sink = make()
    blackhole = fault("blackhole")
    pipe.set_faults([blackhole])
    chunk = b"q" * 65_536
    for _ in range(HOLD_LIMIT // len(chunk) + 2):
        pipe.push(chunk)
    assert sink.acts == ["reset"]
    assert blackhole.stats["connections_reset"] == 1
    assert pipe.backlog() == 0 and not pipe.idle
    pipe.set_faults([])
    pipe.push(b"after")
    assert sink.items == [], "after act the pipe drops everything"


def test_a_datagram_blackhole_drops_and_counts() -> None:
    _loop, pipe, sink = make(datagram=True)
    blackhole = fault("blackhole", datagram=True)
    pipe.set_faults([blackhole])
    for _ in range(3):
        pipe.push(b"d" * 10)
    pipe.set_faults([])
    assert sink.items == []
    assert (blackhole.stats["packets_dropped"], blackhole.stats["bytes_dropped"]) == (3, 30)


def test_timeout_holds_then_closes_after_its_timeout() -> None:
    loop, pipe, sink = make()
    timeout = fault("timeout", timeout="5s")
    pipe.set_faults([timeout])
    pipe.push(b"x")
    loop.advance(4.99)
    assert sink.items == [] and sink.acts == []
    loop.advance(0.02)
    assert sink.acts == ["close"] and sink.items == []
    assert timeout.stats["connections_closed"] == 1


def test_timeout_zero_never_closes_and_its_removal_releases() -> None:
    loop, pipe, sink = make()
    pipe.set_faults([fault("timeout")])
    pipe.push(b"x")
    loop.advance(3600)
    assert sink.acts == []
    pipe.set_faults([])
    assert sink.data == [b"x"]


def test_removing_a_timeout_before_it_fires_cancels_the_close() -> None:
    loop, pipe, sink = make()
    pipe.set_faults([fault("timeout", timeout="1s")])
    pipe.set_faults([])
    loop.advance(2)
    assert sink.acts == [] and loop.pending() == 0


# --- limit_data, reset, slow_close, slicer ------------------------------------------------------------------


def test_limit_data_passes_exactly_the_limit_then_closes_after_delivering_it() -> None:
    loop, pipe, sink = make()
    limit = fault("limit_data", bytes=10)
    latency = fault("latency", latency="100ms")
    pipe.set_faults([limit, latency])
    pipe.push(b"123456")
    pipe.push(b"7890abc")
    pipe.push(b"more")
    assert sink.acts == [], "the close waits for the bytes before it"
    loop.advance(0.2)
    assert sink.stream == b"1234567890"
    assert sink.acts == ["close"]
    assert limit.stats["connections_closed"] == 1
    assert limit.stats["bytes_dropped"] == 3


def test_limit_data_on_datagrams_drops_what_does_not_fit() -> None:
    _loop, pipe, sink = make(datagram=True)
    limit = fault("limit_data", datagram=True, bytes=25)
    pipe.set_faults([limit])
    for _ in range(4):
        pipe.push(b"x" * 10)
    assert sink.data == [b"x" * 10, b"x" * 10]
    assert limit.stats["packets_dropped"] == 2 and sink.acts == []


def test_reset_after_resets_that_long_after_the_fault_starts_acting() -> None:
    loop, pipe, sink = make()
    reset = fault("reset", after="2s")
    pipe.set_faults([reset])
    pipe.push(b"passes")
    loop.advance(1.99)
    assert sink.data == [b"passes"] and sink.acts == []
    loop.advance(0.02)
    assert sink.acts == ["reset"] and reset.stats["connections_reset"] == 1
    pipe.push(b"dropped")
    assert sink.data == [b"passes"]


def test_slow_close_delays_the_eof_not_the_data() -> None:
    loop, pipe, sink = make()
    pipe.set_faults([fault("slow_close", delay="3s")])
    pipe.push(b"data")
    pipe.push_eof()
    assert sink.items == [(1000.0, b"data")]
    loop.advance(2.99)
    assert len(sink.items) == 1
    loop.advance(0.02)
    assert sink.items[-1] == (1003.0, b"")


def test_slicer_cuts_chunks_into_spaced_pieces() -> None:
    loop, pipe, sink = make()
    slicer = fault("slicer", average_size=10, size_variation=4, delay="5ms")
    pipe.set_faults([slicer])
    data = bytes(range(200))
    pipe.push(data)
    loop.advance(1)
    assert sink.stream == data
    sizes = [len(piece) for piece in sink.data]
    assert all(6 <= size <= 14 for size in sizes[:-1]) and len(set(sizes)) > 1
    gaps = [round(b - a, 6) for (a, _), (b, _) in zip(sink.items, sink.items[1:], strict=False)]
    assert set(gaps) == {0.005}
    assert slicer.stats["packets_delayed"] == 1


# --- datagram faults ----------------------------------------------------------------------------------------


def test_random_loss_share_is_within_the_binomial_bound() -> None:
    _loop, pipe, sink = make(datagram=True, seed=42)
    loss = fault("loss", datagram=True, probability="20%")
    pipe.set_faults([loss])
    n = 20_000
    for i in range(n):
        pipe.push(b"%d" % i)
    lost = n - len(sink.items)
    assert abs(lost / n - 0.2) < binomial_bound(n, 0.2)
    assert loss.stats["packets_dropped"] == lost


def test_gilbert_loss_has_the_stationary_share_and_comes_in_bursts() -> None:
    _loop, pipe, sink = make(datagram=True, seed=3)
    p, r, loss_bad = 0.02, 0.25, 0.9
    pipe.set_faults([fault("loss", datagram=True, model="gilbert", p=p, r=r, loss_bad=loss_bad)])
    n = 50_000
    for i in range(n):
        pipe.push(i.to_bytes(4, "big"))
    received = {int.from_bytes(data, "big") for data in sink.data}
    lost = [i not in received for i in range(n)]
    expected = p / (p + r) * loss_bad  # stationary share of the bad state times its loss
    share = sum(lost) / n
    # bursts make the variance larger than binomial: allow the bound of n / (mean burst length) trials
    assert abs(share - expected) < binomial_bound(int(n * r), expected)
    runs = [len(run) for run in "".join("x" if x else " " for x in lost).split() if run]
    mean_run = sum(runs) / len(runs)
    # in the bad state a loss run ends with 1 - (1 - r) * loss_bad per packet: mean 1 / (r + (1 - r)(1 - loss_bad))
    assert mean_run == pytest.approx(1 / (1 - (1 - r) * loss_bad), rel=0.15)
    assert mean_run > 2, "random loss at that share would give runs of about 1.1"


def test_duplicate_and_corrupt() -> None:
    _loop, pipe, sink = make(datagram=True, seed=5)
    duplicate = fault("duplicate", datagram=True, probability="10%")
    corrupt = fault("corrupt", datagram=True, probability="50%")
    pipe.set_faults([duplicate, corrupt])
    n = 4000
    originals = [i.to_bytes(8, "big") for i in range(n)]
    for data in originals:
        pipe.push(data)
    assert len(sink.items) == n + duplicate.stats["packets_duplicated"]
    assert abs(duplicate.stats["packets_duplicated"] / n - 0.1) < binomial_bound(n, 0.1)
    assert abs(corrupt.stats["packets_corrupted"] / n - 0.5) < binomial_bound(n, 0.5)
    # what arrives is an original or an original with exactly one bit flipped
    values = {int.from_bytes(data, "big") for data in originals}
    corrupted = [int.from_bytes(got, "big") for got in sink.data if int.from_bytes(got, "big") not in values]
    assert corrupted, "some corruption must show"
    assert all(any(value ^ (1 << bit) in values for bit in range(64)) for value in corrupted)


class ScriptedRandom(random.Random):
    """``random()`` answers from a script (then 0.99): a test decides exactly which datagram a fault picks."""

    def __init__(self, script: list[float]) -> None:
        super().__init__(0)
        self.script = list(script)

    def random(self) -> float:
        return self.script.pop(0) if self.script else 0.99


def test_corrupt_flips_exactly_one_bit() -> None:
    loop = FakeLoop()
    sink = Sink(loop)
    pipe = Pipe(
        loop, datagram=True, direction="downstream", deliver=sink.deliver, act=sink.act, rng=ScriptedRandom([0.0])
    )  # type: ignore[arg-type]
    pipe.set_faults([fault("corrupt", datagram=True, probability="1%")])
    original = bytes(range(32))
    pipe.push(original)
    pipe.push(original)
    first, second = sink.data
    assert sum(bin(a ^ b).count("1") for a, b in zip(first, original, strict=True)) == 1
    assert second == original


def test_reorder_holds_a_datagram_until_gap_later_ones_passed() -> None:
    loop = FakeLoop()
    sink = Sink(loop)
    pipe = Pipe(
        loop, datagram=True, direction="upstream", deliver=sink.deliver, act=sink.act, rng=ScriptedRandom([0.0])
    )  # type: ignore[arg-type]
    reorder = fault("reorder", datagram=True, probability="10%", gap=2)
    pipe.set_faults([reorder])
    for i in range(5):
        pipe.push(b"%d" % i)
    assert sink.data == [b"1", b"2", b"0", b"3", b"4"]
    assert reorder.stats["packets_reordered"] == 1


def test_reorder_releases_a_held_datagram_after_at_most_one_second() -> None:
    loop = FakeLoop()
    sink = Sink(loop)
    pipe = Pipe(
        loop, datagram=True, direction="upstream", deliver=sink.deliver, act=sink.act, rng=ScriptedRandom([0.0])
    )  # type: ignore[arg-type]
    pipe.set_faults([fault("reorder", datagram=True, probability="10%", gap=5)])
    pipe.push(b"late")
    pipe.push(b"next")
    assert sink.data == [b"next"]
    loop.advance(REORDER_MAX_HOLD - 0.01)
    assert sink.data == [b"next"]
    loop.advance(0.02)
    assert sink.data == [b"next", b"late"]


def test_removing_reorder_releases_what_it_holds() -> None:
    loop = FakeLoop()
    sink = Sink(loop)
    pipe = Pipe(
        loop, datagram=True, direction="upstream", deliver=sink.deliver, act=sink.act, rng=ScriptedRandom([0.0])
    )  # type: ignore[arg-type]
    pipe.set_faults([fault("reorder", datagram=True, probability="10%", gap=5)])
    pipe.push(b"held")
    pipe.set_faults([])
    assert sink.data == [b"held"]


# --- MQTT packet faults -------------------------------------------------------------------------------------


def split_everywhere(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_mqtt_drop_publish_only_puback_passes_even_split_across_chunks() -> None:
    _loop, pipe, sink = make()
    drop = fault("mqtt", packet="PUBLISH", action="drop")
    pipe.set_faults([drop])
    stream = CONNECT + publish(1) + PUBACK + publish(2) + PUBACK
    for chunk in split_everywhere(stream, 3):
        pipe.push(chunk)
    assert sink.stream == CONNECT + PUBACK + PUBACK
    assert drop.stats["packets_dropped"] == 2
    assert drop.stats["bytes_dropped"] == len(publish(1)) + len(publish(2))


def test_mqtt_drop_probability_is_within_the_binomial_bound() -> None:
    _loop, pipe, sink = make(seed=9)
    pipe.set_faults([fault("mqtt", packet="PUBLISH", probability="10%")])
    n = 5000
    for i in range(n):
        pipe.push(publish(i) + PUBACK)
    received = sink.stream.count(b"msg-")
    assert sink.stream.count(PUBACK) == n
    assert abs((n - received) / n - 0.1) < binomial_bound(n, 0.1)


def test_mqtt_delay_holds_a_puback_and_what_follows_it() -> None:
    loop, pipe, sink = make()
    delay = fault("mqtt", packet="PUBACK", action="delay", delay="2s")
    pipe.set_faults([delay])
    pipe.push(publish(1) + PUBACK + publish(2))
    assert sink.data == [publish(1)]
    loop.advance(1.99)
    assert sink.data == [publish(1)]
    loop.advance(0.02)
    assert sink.data == [publish(1), PUBACK, publish(2)], "a TCP stream keeps its order"
    assert delay.stats["packets_delayed"] == 1


def test_mqtt_disconnect_at_the_nth_matching_packet() -> None:
    _loop, pipe, sink = make()
    disconnect = fault("mqtt", packet="PUBLISH", action="disconnect", after=3)
    pipe.set_faults([disconnect])
    for i in range(5):
        pipe.push(publish(i) + PUBACK)
    assert sink.stream == publish(0) + PUBACK + publish(1) + PUBACK
    assert sink.acts == ["close"]
    assert disconnect.stats["connections_closed"] == 1 and disconnect.stats["packets_dropped"] == 1


def test_removing_an_mqtt_fault_flushes_a_partial_packet_in_order() -> None:
    _loop, pipe, sink = make()
    pipe.set_faults([fault("mqtt", packet="PUBLISH")])
    packet = PUBACK + PUBACK
    pipe.push(packet[:5])
    assert sink.stream == PUBACK and pipe.backlog() == 1
    pipe.set_faults([])
    pipe.push(packet[5:])
    assert sink.stream == packet


def test_mqtt_over_an_unframeable_stream_passes_bytes_unchanged() -> None:
    _loop, pipe, sink = make()
    drop = fault("mqtt", packet="PUBLISH")
    pipe.set_faults([drop])
    pipe.push(b"\x00garbage" + publish(1))
    assert sink.stream == b"\x00garbage" + publish(1)
    assert drop.stats["packets_dropped"] == 0


# --- ending, counters ---------------------------------------------------------------------------------------


def test_close_cancels_timers_and_drops_the_queue() -> None:
    loop, pipe, sink = make()
    pipe.set_faults([fault("latency", latency="1s"), fault("reset", after="5s")])
    pipe.push(b"x")
    assert loop.pending() == 2
    pipe.close()
    assert loop.pending() == 0 and pipe.backlog() == 0
    loop.advance(10)
    assert sink.items == [] and sink.acts == []


def test_flush_delivers_everything_now_and_goes_idle() -> None:
    _loop, pipe, sink = make()
    pipe.set_faults([fault("latency", latency="1s"), fault("blackhole")])
    pipe.push(b"held")
    pipe.flush()
    assert sink.data == [b"held"] and pipe.idle


def test_several_faults_compose_in_a_fixed_order() -> None:
    loop, pipe, sink = make(datagram=True, seed=11)
    loss = fault("loss", datagram=True, probability="50%")
    latency = fault("latency", datagram=True, latency="10ms")
    pipe.set_faults([latency, loss])
    for i in range(100):
        pipe.push(b"%d" % i)
    loop.advance(1)
    assert loss.stats["packets_dropped"] + latency.stats["packets_delayed"] == 100
    assert len(sink.items) == latency.stats["packets_delayed"]


def test_stream_and_spec_without_name_counts_under_its_kind() -> None:
    spec = FaultSpec(name=None, kind="blackhole")
    assert ActiveFault(spec).name == "blackhole"


def test_latency_on_a_real_asyncio_loop() -> None:
    async def run() -> list[tuple[float, float, bytes]]:
        loop = asyncio.get_running_loop()
        received: list[tuple[float, bytes]] = []
        pipe = Pipe(
            loop,
            datagram=False,
            direction="upstream",
            deliver=lambda data: received.append((loop.time(), data)),
            act=lambda action: None,
            rng=random.Random(1),
        )
        pipe.set_faults([fault("latency", latency="50ms")])
        sent = {}
        for i in range(10):
            sent[b"%d" % i] = loop.time()
            pipe.push(b"%d" % i)
            await asyncio.sleep(0.005)
        for _ in range(100):
            if len(received) == 10:
                break
            await asyncio.sleep(0.01)
        assert pipe.backlog() == 0
        pipe.set_faults([])
        assert pipe.idle
        return [(sent[data], at, data) for at, data in received]

    results = asyncio.run(run())
    assert [data for _, _, data in results] == [b"%d" % i for i in range(10)]
    for sent_at, at, _ in results:
        assert 0.05 <= at - sent_at < 0.5


def test_a_reused_bytearray_is_copied_when_queued() -> None:
    loop, pipe, sink = make()
    pipe.set_faults([fault("latency", latency="10ms")])
    buffer = bytearray(b"first")
    pipe.push(buffer)  # type: ignore[arg-type]
    buffer[:] = b"XXXXX"
    pipe.push(memoryview(b"second"))  # type: ignore[arg-type]
    loop.advance(0.02)
    assert sink.data == [b"first", b"second"]
