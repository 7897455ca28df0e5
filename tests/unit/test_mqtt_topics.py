"""MQTT topic filters and topic names the test receiver refuses before paho sees them, saying which and why."""

from __future__ import annotations

import asyncio

import pytest

from iotix.errors import ConfigurationError
from iotix.transport.mqtt_probe import MqttProbe, topic_filter_problem, topic_name_problem


@pytest.mark.parametrize(
    "topic",
    ["#", "+", "a/#", "a/+/c", "+/+/#", "$SYS/broker/#", "/", "a//b", "iotix/+/+/telemetry", "ä/ü/+"],
)
def test_valid_filters_pass(topic: str) -> None:
    assert topic_filter_problem(topic) is None


@pytest.mark.parametrize(
    ("topic", "why"),
    [
        (
            "a/#/b",
            "'#' must be the last level: it matches everything below it, so nothing can follow it (as in 'a/#'), "
            "but '/b' follows it",
        ),
        ("#/a", "'#' must be the last level: it matches everything below it, so nothing can follow it (as in '#')"),
        ("sport/#/", "(as in 'sport/#'), but '/' follows it"),
        ("a/b#", "'#' must be a whole level (as in 'a/b/#'), but level 2 is 'b#'"),
        ("a/b+/c", "'+' must be a whole level (as in 'a/+/c'), but level 2 is 'b+'"),
        ("+b", "'+' must be a whole level (as in '+'), but level 1 is '+b'"),
        ("", "a topic filter cannot be empty"),
        ("a/\x00", "a topic filter cannot contain the null character (U+0000)"),
        ("a" * 65_536, "a topic filter is at most 65,535 bytes of UTF-8, this one has 65,536"),
    ],
)
def test_invalid_filters_say_why(topic: str, why: str) -> None:
    problem = topic_filter_problem(topic)
    assert problem is not None and why in problem


def test_topic_names_have_no_wildcards() -> None:
    assert topic_name_problem("iotix/dev-1/telemetry") is None
    assert topic_name_problem("a/+") == "a message goes to one topic: '+' is a wildcard, for subscriptions only"
    assert topic_name_problem("+/#") == (
        "a message goes to one topic: '+' and '#' are wildcards, for subscriptions only"
    )
    assert topic_name_problem("") == "a topic cannot be empty"


def test_the_receiver_refuses_a_bad_filter_a_bad_topic_and_a_bad_port_before_the_network() -> None:
    async def main() -> list[str]:
        probe = MqttProbe("rx", "rx-client")
        errors = []
        for call in (
            probe.subscribe("a/#/b", 1),
            probe.publish("a/+", b"x", 0),
            probe.connect("127.0.0.1", 108807, timeout=1.0),
        ):
            with pytest.raises(ConfigurationError) as caught:
                await call
            errors.append(str(caught.value))
        assert probe.subscriptions == {}  # a refused filter is not remembered (nor re-subscribed on reconnect)
        await probe.close()
        return errors

    subscribe, publish, connect = asyncio.run(main())
    assert subscribe.startswith("'rx' cannot subscribe to 'a/#/b': '#' must be the last level")
    assert (
        publish
        == "'rx' cannot publish to 'a/+': a message goes to one topic: '+' is a wildcard, for subscriptions only."
    )
    assert connect == (
        "Cannot connect 'rx' to MQTT broker 127.0.0.1:108807: "
        "port must be a port number between 1 and 65535, got 108807."
    )
