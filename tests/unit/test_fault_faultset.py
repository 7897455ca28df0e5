"""A target's faults: names, owners, directions, toxicity, durations, outages, admission and what describe()
reports, on a clock the test moves (see test_fault_pipe.FakeLoop)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from test_fault_pipe import FakeLoop

from iotix.fault.faultset import OUTAGE_NAME, Conduit, FaultSet
from iotix.fault.spec import FaultError, FaultSpec, parse_fault

TARGET = "fleet 'env'"


def spec(kind: str, *, datagram: bool = False, name: str | None = None, **settings: Any) -> FaultSpec:
    return parse_fault(kind, settings, name=name, target=TARGET, datagram=datagram)


class Link:
    """Both ends of one connection as the layer sees them: what reached the target, the device, and acts."""

    def __init__(self, loop: FakeLoop) -> None:
        self.loop = loop
        self.to_target: list[tuple[float, bytes]] = []
        self.to_device: list[tuple[float, bytes]] = []
        self.acts: list[str] = []

    def attach(self, faults: FaultSet, owner: str | None) -> Conduit:
        return faults.attach(
            owner,
            up=lambda data: self.to_target.append((self.loop.now, data)),
            down=lambda data: self.to_device.append((self.loop.now, data)),
            act=self.acts.append,
        )


def make(*, datagram: bool = False, per_device: bool = True, seed: int | None = 1) -> tuple[FakeLoop, FaultSet]:
    loop = FakeLoop()
    return loop, FaultSet(loop, TARGET, datagram=datagram, per_device=per_device, seed=seed)  # type: ignore[arg-type]


def connect(loop: FakeLoop, faults: FaultSet, owner: str | None) -> tuple[Conduit, Link]:
    link = Link(loop)
    return link.attach(faults, owner), link


# --- names ----------------------------------------------------------------------------------------------------


def test_generated_names_count_per_kind_and_a_taken_name_is_refused() -> None:
    _loop, faults = make()
    assert faults.add(spec("latency", latency="1ms")).name == "latency-1"
    assert faults.add(spec("latency", latency="2ms")).name == "latency-2"
    assert faults.add(spec("blackhole")).name == "blackhole-1"
    assert faults.add(spec("blackhole", name="cut")).spec.name == "cut"
    with pytest.raises(FaultError, match=r"^Network fault 'cut' on fleet 'env': fleet 'env' already has a fault named"):
        faults.add(spec("latency", name="cut", latency="1ms"))
    with pytest.raises(FaultError, match="already has a fault named 'latency-1'"):
        faults.add(spec("latency", name="latency-1", latency="1ms"))
    faults.remove("latency-1")
    assert faults.add(spec("latency", latency="3ms")).name == "latency-3"


def test_removing_an_unknown_fault_names_the_target_and_its_faults() -> None:
    _loop, faults = make()
    faults.add(spec("blackhole", name="cut"))
    with pytest.raises(FaultError) as err:
        faults.remove("lat")
    assert str(err.value) == (
        "Network fault 'lat' on fleet 'env': no such fault; its faults are: 'cut'. Get Network Faults lists them."
    )
    assert faults.clear() == 1
    with pytest.raises(FaultError, match="its faults are: none"):
        faults.remove("cut")
    assert not faults.active


def test_selections_on_pooled_targets_are_refused() -> None:
    """(Kinds that do not fit the transport are refused by parse_fault, which knows ``datagram``.)"""
    _loop, faults = make(per_device=False)
    with pytest.raises(FaultError, match=r"shares its connections between devices.*leave out the device selection"):
        faults.add(spec("blackhole"), owners=["d1"])
    assert not faults.faults


# --- who is affected ------------------------------------------------------------------------------------------


def test_owners_and_directions_pick_the_pipes() -> None:
    loop, faults = make()
    c1, _ = connect(loop, faults, "d1")
    c2, _ = connect(loop, faults, "d2")
    pooled, _ = connect(loop, faults, None)
    up = faults.add(spec("latency", latency="10ms", direction="upstream"), owners=["d1"])
    down = faults.add(spec("bandwidth", rate="1mbit", direction="downstream"))
    assert c1.up.faults == (up,) and c1.down.faults == (down,)
    assert c2.up.faults == () and c2.down.faults == (down,)
    assert pooled.up.faults == () and pooled.down.faults == (down,), "pooled conduits get unowned faults only"
    assert c2.up.idle and not c2.down.idle
    assert up.stats["connections_affected"] == 1 and down.stats["connections_affected"] == 3
    late, _ = connect(loop, faults, "d1")  # a connection opened later gets the faults at once
    assert late.up.faults == (up,)
    faults.remove(up.name)
    assert c1.up.faults == () and c1.up.idle


def test_toxicity_affects_that_share_of_devices_stable_and_reproducible() -> None:
    def affected(seed: int) -> set[str]:
        loop, faults = make(seed=seed)
        conduits = {f"d{i}": connect(loop, faults, f"d{i}")[0] for i in range(2000)}
        faults.add(spec("latency", latency="5ms", toxicity="30%"))
        return {owner for owner, conduit in conduits.items() if conduit.up.faults}

    first = affected(7)
    assert abs(len(first) / 2000 - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 2000)
    assert affected(7) == first
    assert affected(8) != first

    loop, faults = make(seed=7)
    fault = faults.add(spec("latency", latency="5ms", toxicity="30%"))
    owner = sorted(first)[0]
    for _ in range(3):  # a device that reconnects stays on its bad link
        conduit, _ = connect(loop, faults, owner)
        assert conduit.up.faults == (fault,)
        conduit.detach()


def test_the_fault_rng_is_seeded_per_target_and_name() -> None:
    def losses(seed: int) -> list[int]:
        loop, faults = make(datagram=True, seed=seed)
        conduit, link = connect(loop, faults, "d1")
        faults.add(spec("loss", datagram=True, probability="50%"))
        for i in range(200):
            conduit.up.push(b"%d" % i)
        return [int(data) for _, data in link.to_target]

    assert losses(1) == losses(1)
    assert losses(1) != losses(2)


# --- durations and history ------------------------------------------------------------------------------------


def test_a_timed_fault_removes_itself_releases_its_hold_and_stays_in_history() -> None:
    loop, faults = make()
    conduit, link = connect(loop, faults, "d1")
    faults.add(spec("blackhole", name="cut", duration="10s"))
    conduit.up.push(b"held")
    loop.advance(9.99)
    assert link.to_target == [] and faults.active
    loop.advance(0.02)
    assert [data for _, data in link.to_target] == [b"held"]
    assert not faults.active and faults.describe() == []
    (entry,) = faults.history()
    assert entry["name"] == "cut" and entry["removed"] is True
    assert entry["bytes_held"] == 4 and entry["duration_s"] == 10.0
    assert entry["active_for_s"] == pytest.approx(10.0, abs=0.02)


def test_history_keeps_the_last_fifty() -> None:
    _loop, faults = make()
    for i in range(60):
        faults.add(spec("blackhole", name=f"b{i}"))
        faults.remove(f"b{i}")
    history = faults.history()
    assert len(history) == 50 and history[0]["name"] == "b10" and history[-1]["name"] == "b59"


def test_describe_reports_settings_devices_and_counters() -> None:
    loop, faults = make()
    conduit, _ = connect(loop, faults, "d1")
    faults.add(spec("latency", name="slow", latency="200ms", jitter="20ms", direction="upstream"), owners=["d1", "d2"])
    conduit.up.push(b"abc")
    loop.advance(5)
    (entry,) = faults.describe()
    assert entry == {
        "name": "slow",
        "kind": "latency",
        "direction": "upstream",
        "summary": "200 ms ± 20 ms (uniform)",
        "settings": {"latency": 0.2, "jitter": 0.02, "distribution": "uniform", "correlation": 0.0},
        "devices": 2,
        "toxicity": 1.0,
        "duration_s": None,
        "active_for_s": 5.0,
        "packets_delayed": 1,
        "bytes_delayed": 3,
        "packets_dropped": 0,
        "bytes_dropped": 0,
        "packets_duplicated": 0,
        "packets_corrupted": 0,
        "packets_reordered": 0,
        "bytes_held": 0,
        "connections_affected": 1,
        "connections_reset": 0,
        "connections_closed": 0,
        "connections_refused": 0,
    }


# --- admission and outages ------------------------------------------------------------------------------------


def test_admission_blackholes_new_connections_the_upstream_hold_covers() -> None:
    _loop, faults = make()
    assert faults.admission("d1") is None
    cut = faults.add(spec("blackhole", direction="upstream"), owners=["d1"])
    faults.add(spec("blackhole", direction="downstream"), owners=["d2"])
    assert faults.admission("d1") == "blackhole"
    assert faults.admission("d2") is None, "a downstream blackhole lets the SYN through"
    assert faults.admission("d3") is None
    assert faults.admission(None) is None
    assert cut.stats["connections_refused"] == 1
    faults.clear()
    faults.add(spec("timeout", timeout="5s"))
    assert faults.admission(None) is None, "a timeout fault accepts a connection and closes it later"


@pytest.mark.parametrize("mode", ["refuse", "reset"])
def test_take_down_resets_open_connections_once_and_refuses_new_ones(mode: str) -> None:
    loop, faults = make()
    (c1, l1), (_c2, l2) = connect(loop, faults, "d1"), connect(loop, faults, "d2")
    faults.take_down(mode, None)
    assert l1.acts == ["reset"] and l2.acts == ["reset"]
    assert c1.ended and c1.up.ended and c1.down.ended
    assert faults.admission("d1") == mode and faults.active and faults.outage == mode
    (entry,) = faults.describe()
    assert entry["name"] == OUTAGE_NAME and entry["kind"] == "outage" and entry["mode"] == mode
    assert entry["connections_reset"] == 2 + (mode == "reset")
    assert entry["connections_refused"] == (mode == "refuse")
    c1.up.push(b"dropped")
    assert l1.to_target == []
    faults.bring_up()
    assert faults.admission("d1") is None and not faults.active
    assert faults.history()[-1]["name"] == OUTAGE_NAME


def test_a_blackhole_outage_holds_everything_both_ways_then_releases_on_time() -> None:
    loop, faults = make()
    conduit, link = connect(loop, faults, "d1")
    faults.take_down("blackhole", 30.0)
    conduit.up.push(b"up")
    conduit.down.push(b"down")
    assert faults.admission("d2") == "blackhole"
    assert faults.backlog() == 6
    loop.advance(29.9)
    assert link.to_target == [] and link.to_device == [] and link.acts == []
    loop.advance(0.2)
    assert [d for _, d in link.to_target] == [b"up"] and [d for _, d in link.to_device] == [b"down"]
    assert faults.outage is None and faults.backlog() == 0


def test_take_down_checks_its_mode_and_duration() -> None:
    _loop, faults = make()
    with pytest.raises(FaultError, match="'target-down' on fleet 'env': mode must be refuse, blackhole or reset"):
        faults.take_down("explode", None)
    with pytest.raises(FaultError, match="duration must be > 0"):
        faults.take_down("refuse", 0)


def test_remove_target_down_brings_the_target_up() -> None:
    _loop, faults = make()
    faults.take_down("refuse", None)
    faults.remove(OUTAGE_NAME)
    assert faults.outage is None


# --- connections end at most once -----------------------------------------------------------------------------


def test_a_reset_fault_on_both_directions_acts_once_per_connection() -> None:
    loop, faults = make()
    conduit, link = connect(loop, faults, "d1")
    reset = faults.add(spec("reset", after="1s"))
    loop.advance(2)
    assert link.acts == ["reset"]
    assert reset.stats["connections_reset"] == 1
    conduit.down.push(b"x")
    assert link.to_device == []


def test_detach_cancels_timers_and_close_lets_queued_bytes_out() -> None:
    loop, faults = make()
    gone, gone_link = connect(loop, faults, "d1")
    kept, kept_link = connect(loop, faults, "d2")
    faults.add(spec("latency", latency="1s"))
    faults.add(spec("reset", after="5s"))
    gone.up.push(b"lost")
    gone.detach()
    kept.up.push(b"kept")
    faults.close()
    assert [d for _, d in kept_link.to_target] == [b"kept"]
    assert kept.up.idle and kept.down.idle and not faults.active
    loop.advance(10)
    assert gone_link.to_target == [] and gone_link.acts == [] and kept_link.acts == []
    assert loop.pending() == 0


def test_per_device_latency_on_ten_thousand_connections_keeps_one_timer_each() -> None:
    loop, faults = make()
    conduits = [connect(loop, faults, f"d{i}")[0] for i in range(10_000)]
    faults.add(spec("latency", latency="100ms"))
    for conduit in conduits:
        for _ in range(3):
            conduit.up.push(b"m")
    assert loop.pending() == 10_000
    assert faults.backlog() == 30_000
    loop.advance(0.1)
    assert faults.backlog() == 0


def test_admission_without_counting_asks_only() -> None:
    _loop, faults = make()
    cut = faults.add(spec("blackhole"))
    assert faults.admission(None, count=False) == "blackhole"
    assert cut.stats["connections_refused"] == 0
    faults.take_down("refuse", None)
    assert faults.admission("d1", count=False) == "refuse"
    assert faults.describe()[-1]["connections_refused"] == 0


def test_a_connection_admitted_before_a_refuse_outage_is_reset_when_it_attaches() -> None:
    """Admission happens before the TCP connect and the TLS handshake; an outage that starts in between must
    not let that connection through."""
    _loop, faults = make()
    assert faults.admission("d1") is None
    faults.take_down("refuse", None)
    conduit, link = connect(_loop, faults, "d1")
    assert conduit.ended and link.acts == ["reset"]
    conduit.up.push(b"CONNECT")
    assert link.to_target == []


def test_an_outage_of_a_datagram_target_drops_datagrams_whatever_its_mode() -> None:
    """UDP has no connection to reset: refuse and reset make datagrams vanish, like a blackhole."""
    loop, faults = make(datagram=True)
    conduit, link = connect(loop, faults, "d1")
    faults.take_down("refuse", None)
    assert not conduit.ended and link.acts == []
    conduit.up.push(b"datagram")
    loop.advance(1)
    assert link.to_target == []
    faults.bring_up()
    conduit.up.push(b"after")
    loop.advance(1)
    assert [data for _, data in link.to_target] == [b"after"]
