"""What a behavior's destination (``action.topic``) may be, per protocol, as the model checks say."""

from __future__ import annotations

from typing import Any

import pytest

from iotix.model import ModelError
from iotix.model.loader import load_model_dict


def model(protocol: str, topic: str) -> dict[str, Any]:
    connection: dict[str, Any] = {
        "mqtt": {"topicPattern": "t/${deviceId}"},
        "kafka": {"topic": "telemetry"},
        "http": {"url": "http://127.0.0.1:8080/t"},
        "coap": {},
    }[protocol]
    return {
        "id": "dest",
        "name": "destinations",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": protocol,
        "connection": {"host": "127.0.0.1", **connection},
        "telemetry": [
            {"name": "t", "type": "number", "intervalMs": 1000, "generator": {"type": "constant", "value": 1}}
        ],
        "behaviors": [{"name": "hot", "condition": "t > 5", "action": {"type": "publish", "topic": topic}}],
    }


@pytest.mark.parametrize(
    ("protocol", "topic"),
    [
        ("mqtt", "alerts/${deviceId}/#weird but allowed"),
        ("kafka", "alerts.${deviceId}"),
        ("kafka", "iot-alerts_v2"),
        ("http", "/api/alerts/${deviceId}"),
        ("http", "alerts"),
        ("http", "https://alerts.example/hook?device=${deviceId}"),
        ("coap", "alerts/${deviceId}"),
    ],
)
def test_destinations_each_protocol_accepts(protocol: str, topic: str) -> None:
    assert load_model_dict(model(protocol, topic)).behaviors[0].action["topic"] == topic


@pytest.mark.parametrize(
    ("protocol", "topic", "message"),
    [
        ("kafka", "iotix/${deviceId}/alerts", "is not a Kafka topic name: letters, digits, '.', '_' and '-' only"),
        ("http", "mqtt://broker/alerts", "an HTTP destination is a path or an http:// or https:// URL"),
    ],
)
def test_destinations_a_protocol_cannot_have_are_load_errors(protocol: str, topic: str, message: str) -> None:
    with pytest.raises(ModelError, match=r"behaviors\[0\]\.action\.topic") as caught:
        load_model_dict(model(protocol, topic))
    assert message in str(caught.value)
