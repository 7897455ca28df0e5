"""The MQTT test connection reads a topic within a wildcard subscription (no broker: messages fed directly)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from transport_fakes import run

from iotix.transport.base import TransportError
from iotix.transport.mqtt_probe import MqttProbe, Subscription, filter_covers


@pytest.mark.parametrize(
    ("outer", "inner", "covered"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/+", True),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/#", "a/+/c", True),
        ("a/#", "a/#", True),
        ("#", "x/y", True),
        ("a/+/c", "a/b/c", True),
        ("a/b", "a/+", False),
        ("a/+", "a/#", False),
        ("a/+", "a/b/c", False),
        ("a/+/c", "a/b", False),
        ("a/b", "a/b/c", False),
        ("a/b/#", "a/c/d", False),
    ],
)
def test_filter_covers(outer: str, inner: str, covered: bool) -> None:
    assert filter_covers(outer, inner) is covered


def _message(topic: str, payload: bytes = b"x") -> SimpleNamespace:
    return SimpleNamespace(topic=topic, payload=payload, qos=1, retain=False)


def test_messages_on_a_topic_within_a_wildcard_subscription() -> None:
    async def scenario() -> None:
        probe = MqttProbe("p", "p-client")
        probe.subscriptions["s/#"] = Subscription("s/#", 1)
        for topic in ("s/a/t", "s/b/t", "s/a/h"):
            probe.received(_message(topic))
        assert probe.listens_to("s/#") == 2
        assert probe.listens_to("s/a/t") == 1
        assert probe.listens_to("s/+/t") == 1
        assert probe.listens_to("other") == 0
        assert [m.topic for m in probe.messages_on("s/#")] == ["s/a/t", "s/b/t", "s/a/h"]
        assert [m.topic for m in probe.messages_on("s/+/t")] == ["s/a/t", "s/b/t"]
        assert [m.topic for m in probe.messages_on("s/a/h")] == ["s/a/h"]
        with pytest.raises(TransportError, match=r"'p' is not subscribed to 'other' \(subscriptions: 's/#'\)"):
            probe.messages_on("other")
        await probe.close()

    run(scenario)


def test_waiting_on_a_covered_topic_counts_only_its_messages() -> None:
    async def scenario() -> None:
        probe = MqttProbe("p", "p-client")
        probe.subscriptions["s/#"] = Subscription("s/#", 1)
        probe.received(_message("s/a"))
        waiting = asyncio.ensure_future(probe.wait_for("s/b", 2, 5.0))
        await asyncio.sleep(0)
        probe.received(_message("s/a"))
        probe.received(_message("s/b", b"1"))
        await asyncio.sleep(0.01)
        assert not waiting.done()  # one of two on s/b so far: messages on s/a do not count
        probe.received(_message("s/b", b"2"))
        got = await asyncio.wait_for(waiting, 1.0)
        assert [m.payload for m in got] == [b"1", b"2"]
        assert probe.subscriptions["s/#"].waiters == []
        short = await probe.wait_for("s/c", 1, 0.05)  # times out: returns what there is
        assert short == []
        await probe.close()

    run(scenario)
