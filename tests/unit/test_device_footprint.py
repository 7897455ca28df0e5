"""The light device's parts (issue 14): the MQTT transmission log, batched lateness, the slotted paho client and
its QoS 0 PUBLISH frames. Pure logic: no broker (the integration tests drive the same code against Mosquitto)."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest

from iotix.fleet.delivery import FAILED, SENT, HandoverLog
from iotix.fleet.fleet import Fleet
from iotix.fleet.scheduler import DEFAULT_TICK_S
from iotix.observe.histogram import LatencyRecorder
from iotix.transport.paho_driver import _CONNECTED, LoopClient

Scheduler = SimpleNamespace(tick=DEFAULT_TICK_S)  # what _flush_lateness reads of the simulator's scheduler


def test_the_handover_log_keeps_the_newest_entries_with_exact_times_and_sizes() -> None:
    log = HandoverLog(3)
    now_ms = int(time.time() * 1000)
    sizes = [120, 8190, 8191, 70_000, 5]  # below, at and above the 13-bit inline limit
    for i, size in enumerate(sizes):
        log.add_sent(now_ms - 5000 + i, size)
    entries = list(log.entries(10))
    assert [e["bytes"] for e in entries] == [8191, 70_000, 5]
    assert [e["result"] for e in entries] == ["sent"] * 3
    assert all(e["latencyMs"] is None and e["error"] is None for e in entries)
    expected = [datetime.fromtimestamp((now_ms - 5000 + i) / 1000, UTC) for i in (2, 3, 4)]
    assert [e["time"] for e in entries] == [t.isoformat(timespec="milliseconds") for t in expected]
    assert len(log.buf) == 3 * 6  # 6 bytes an entry


def test_a_failure_in_the_handover_log_keeps_its_reason_until_the_slot_is_reused() -> None:
    log = HandoverLog(2)
    log.add(time.time(), 10, -1.0, FAILED, "broker rejected publish")
    log.add(time.time(), 11, -1.0, SENT, None)
    assert [(e["result"], e["error"]) for e in log.entries(2)] == [
        ("failed", "broker rejected publish"),
        ("sent", None),
    ]
    log.add_sent(int(time.time() * 1000), 12)  # overwrites the failure
    assert [(e["bytes"], e["error"]) for e in log.entries(2)] == [(11, None), (12, None)]


def test_lateness_recorded_once_per_tick_equals_recording_every_send() -> None:
    rng = random.Random(3)
    batched = SimpleNamespace(_late={}, lateness=LatencyRecorder(), sim=SimpleNamespace(scheduler=Scheduler))
    direct = LatencyRecorder()
    for interval in (0.005, 0.01, 1.0):
        values = [rng.choice((0.0, -0.0001, 1e-6)) or rng.expovariate(200.0) for _ in range(5000)]
        batched._late[interval] = values
        for v in values:
            direct.record_corrected(v, interval)
    Fleet._flush_lateness(batched)  # type: ignore[arg-type]
    assert batched._late == {}
    a, b = batched.lateness.cumulative(), direct.cumulative()
    assert b.count > 15000  # corrected samples included
    assert a.encode() == b.encode()


def test_lateness_on_time_is_recorded_exactly_as_send_by_send() -> None:
    rng = random.Random(5)
    batched = SimpleNamespace(_late={}, lateness=LatencyRecorder(), sim=SimpleNamespace(scheduler=Scheduler))
    direct = LatencyRecorder()
    values = [rng.uniform(-0.001, 0.0099) for _ in range(20000)]  # all within the 10 ms interval: no correction
    batched._late[0.01] = values
    for v in values:
        direct.record_corrected(v, 0.01)
    Fleet._flush_lateness(batched)  # type: ignore[arg-type]
    assert batched.lateness.cumulative().encode() == direct.cumulative().encode()


def test_lateness_within_one_tick_is_not_corrected_for() -> None:
    batched = SimpleNamespace(
        _late={0.001: [0.004, 0.0045]}, lateness=LatencyRecorder(), sim=SimpleNamespace(scheduler=Scheduler)
    )
    Fleet._flush_lateness(batched)  # type: ignore[arg-type]
    assert batched.lateness.cumulative().count == 2  # a 1 ms schedule, 4 ms late: fired in its tick, none swallowed
    batched._late = {0.001: [0.012]}
    Fleet._flush_lateness(batched)  # type: ignore[arg-type]
    assert batched.lateness.cumulative().count == 2 + 3  # 12, 7 and 2 ms: corrected in ticks of 5 ms


@pytest.fixture
def loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_a_loop_client_keeps_paho_state_in_slots_and_shares_only_constants(loop: asyncio.AbstractEventLoop) -> None:
    a, b = LoopClient(loop, "dev-a"), LoopClient(loop, "dev-b")
    assert not a.__dict__  # paho's ~90 attributes: slots or class constants, no per-client dict
    assert sys.getsizeof(a) < 1000
    assert a._out_packet is not b._out_packet and a._out_messages is not b._out_messages
    assert a._in_callback_mutex is not b._in_callback_mutex  # a real lock: paho probes it with acquire(False)
    assert a._client_id == b"dev-a" and b._client_id == b"dev-b"
    a.username_pw_set("user", "secret")  # paho sets what the class holds as a default: on this client only
    a.will_set("last/will", b"gone", 1, True)
    assert (a._username, a._will_topic, a._will) == (b"user", b"last/will", True)
    assert (b._username, b._will_topic, b._will) == (None, b"", False)
    calls: list[str] = []
    a.message_callback_add("x/#", lambda *args: calls.append("x"))  # gets its own matcher, b keeps none
    assert list(b._on_message_filtered.iter_match("x/1")) == []
    assert len(list(a._on_message_filtered.iter_match("x/1"))) == 1


def _frame(topic: str, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH as paho itself builds it (MQTT 3.1.1)."""
    info = mqtt.MQTTMessageInfo(0)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sent: list[bytes] = []
    client._packet_queue = lambda command, packet, mid, qos, info=None: sent.append(bytes(packet)) or 0  # type: ignore[method-assign]
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
    client._sock = object()  # type: ignore[assignment]
    client._send_publish(0, topic.encode(), payload, 0, False, False, info)
    client._sock = None
    return sent[0]


@pytest.mark.parametrize("size", [0, 100, 127 - 9, 200, 16_000, 20_000, 2_100_000])
def test_qos0_frames_are_the_bytes_paho_writes(loop: asyncio.AbstractEventLoop, size: int) -> None:
    client = LoopClient(loop, "dev-f")
    client._sock = object()  # type: ignore[assignment]
    client._state = _CONNECTED
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert client.publish_qos0(client.topic_field("t/dev-f"), payload)
    assert client.publish_qos0(client.topic_field("t/dev-f"), b"{}")  # a second one joins the corked buffer
    assert bytes(client._pending) == _frame("t/dev-f", payload) + _frame("t/dev-f", b"{}")
    client._sock = None
