"""A behavior's event goes to the destination its action names, on every protocol, and never as telemetry.

Each test runs a fleet against a real server (Mosquitto, the CoAP sink, a recording HTTP server, the local
IoTFlow backend with Mosquitto, Tansu), forces one device's temperature above the behavior's threshold and
checks that the event arrived where ``action.topic`` says, that what arrived as telemetry is telemetry only,
and that the fleet's telemetry counters did not count the event.

| protocol            | ``action.topic`` is                 | the event is                                     |
| MQTT                | a topic                             | published with the action's QoS and retain       |
| Kafka               | a topic                             | produced, keyed by the device id                 |
| HTTP (generic)      | a path on the server, or a URL      | a POST (``eventsSent`` / ``eventsFailed``)       |
| HTTP (IoTFlow)      | the same, with the device's API key | a POST                                           |
| IoTFlow hybrid      | an MQTT topic                       | published on the device's MQTT connection        |
| CoAP client         | a path on the server                | a POST, CON or NON like the readings             |
| CoAP server mode    | a path on the device                | an observable resource of the device             |
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
from harness import Harness, all_running
from test_fleet_kafka import create_topic, kafka_model, read_all
from test_fleet_mqtt import model_dict as mqtt_model
from test_http import RecordingServer, http_model, iotflow_model

from iotix.encode import decode_envelope
from iotix.fleet.fleet import Fleet
from iotix.services import find_mosquitto, start_iotflow_backend, start_local_broker
from iotix.services.coap_server import CoapSink
from iotix.services.kafka_broker import start_local_kafka_broker
from iotix.transport.coap_client import observe
from iotix.transport.mqtt_probe import MqttProbe

pytestmark = pytest.mark.integration


def with_behavior(data: dict[str, Any], topic: str, field: str = "temperature", qos: int = 1) -> dict[str, Any]:
    """``data`` with a behavior that fires once when ``field`` > 100 and sends an alert to ``topic``."""
    alert = {"alert": "hot", "t": f"${{{field}}}", "device": "${deviceId}"}
    data["behaviors"] = [
        {
            "name": "hot",
            "condition": f"{field} > 100",
            "cooldownMs": 600000,
            "action": {"type": "publish", "topic": topic, "payload": alert, "qos": qos},
        }
    ]
    return data


def trigger(h: Harness, fleet: Fleet, index: int = 1, field: str = "temperature") -> None:
    h.rt.call(fleet.devices[index].values.set_override, field, 150)


def expected_alert(device_id: str) -> dict[str, Any]:
    return {"alert": "hot", "t": 150.0, "device": device_id}


@pytest.fixture(scope="module")
def mosquitto():
    if find_mosquitto() is None:
        pytest.skip("Mosquitto is not installed")
    broker = start_local_broker("mosquitto")
    yield broker
    broker.stop()


def probe_on(h: Harness, broker: Any, topic: str) -> MqttProbe:
    async def make() -> MqttProbe:
        probe = MqttProbe("dest", f"it-dest-{os.getpid()}-{time.monotonic_ns()}")
        await probe.connect(broker.host, broker.port)
        await probe.subscribe(topic, 1)
        return probe

    probe = h.rt.call(make)
    h.on_close(lambda: h.rt.call(probe.close))
    return probe


def test_mqtt_event_goes_to_its_topic_and_its_ack_is_not_telemetry(h: Harness, mosquitto: Any) -> None:
    probe = probe_on(h, mosquitto, "it/#")
    data = with_behavior(mqtt_model(model_id="it-dest", interval_ms=50, qos=1), "it/alerts/${deviceId}")
    fleet = h.fleet("md", data, 2, connection={"host": mosquitto.host, "port": mosquitto.port})
    h.start(fleet)
    h.running(fleet)
    trigger(h, fleet)
    (alert,) = h.rt.call(probe.wait_for, "it/alerts/#", 1, 10.0)
    time.sleep(0.3)
    h.stop(fleet)
    assert alert.topic == "it/alerts/md-1" and json.loads(alert.payload) == expected_alert("md-1")
    stats = fleet.stats()
    assert stats["behaviorsFired"] == 1
    assert stats["messagesAcked"] == stats["messagesSent"]  # the alert's PUBACK is not a telemetry ack
    telemetry = h.rt.call(probe.messages_on, "it/it-dest/+/telemetry")
    assert len(telemetry) == stats["messagesSent"]
    assert all(decode_envelope(m.payload) is not None for m in telemetry)


def test_http_event_is_a_post_to_its_path_not_a_telemetry_request(h: Harness) -> None:
    server = RecordingServer()
    h.on_close(server.close)
    data = with_behavior(http_model(server.url + "/telemetry/${deviceId}"), "/alerts/${deviceId}")
    fleet = h.fleet("hd", data, 2)
    h.start(fleet)
    h.wait(lambda: all_running(fleet))
    trigger(h, fleet)
    h.wait(lambda: fleet.transport.events_sent == 1, what="the event")
    time.sleep(0.3)
    h.stop(fleet)
    alerts = [r for r in server.requests if r[1].startswith("/alerts/")]
    telemetry = [r for r in server.requests if r[1].startswith("/telemetry/")]
    assert len(alerts) + len(telemetry) == len(server.requests)
    ((method, path, headers, body),) = alerts
    assert (method, path, json.loads(body)) == ("POST", "/alerts/hd-1", expected_alert("hd-1"))
    assert headers["Content-Type"] == "application/json"
    stats = fleet.stats()
    assert stats["behaviorsFired"] == 1 and stats["transport"]["eventsFailed"] == 0
    assert stats["messagesAcked"] == stats["messagesSent"] == len(telemetry)
    assert all("alert" not in json.loads(b) for *_, b in telemetry)


def test_iotflow_event_to_a_path_the_backend_does_not_know_fails_as_an_event_not_as_telemetry(h: Harness) -> None:
    """Against the real IoTFlow backend: the event is a POST with the device's key to its own path (which the
    backend answers 404): the device's telemetry at the backend is telemetry only."""
    backend = start_iotflow_backend()
    h.on_close(backend.stop)
    prefix = f"ifd{os.getpid()}"
    data = with_behavior(iotflow_model(backend.url, heartbeatIntervalMs=0), "/api/v1/alerts/${deviceId}")
    fleet = h.fleet(prefix, data, 2)
    h.start(fleet)
    h.wait(lambda: all_running(fleet))
    trigger(h, fleet)
    h.wait(lambda: fleet.transport.events_failed == 1, what="the event's 404")
    device = fleet.devices[1]
    assert device.last_error is not None and device.last_error.startswith(
        f"event: HTTP 404 from POST {backend.url}/api/v1/alerts/{device.id}"
    )
    time.sleep(0.3)
    h.stop(fleet)
    stats = fleet.stats()
    assert stats["messagesFailed"] == 0 and stats["messagesAcked"] == stats["messagesSent"]


def test_hybrid_event_is_published_on_the_device_s_mqtt_connection(h: Harness, mosquitto: Any) -> None:
    backend = start_iotflow_backend(mqtt_host=mosquitto.host, mqtt_port=mosquitto.port)
    h.on_close(backend.stop)
    probe = probe_on(h, mosquitto, "iotflow/#")
    prefix = f"hyd{os.getpid()}"
    data = iotflow_model(backend.url, model_id="it-hybrid-dest", telemetryOver="mqtt", heartbeatIntervalMs=0)
    fleet = h.fleet(prefix, with_behavior(data, "iotflow/alerts/${deviceId}"), 2)
    h.start(fleet)
    h.wait(lambda: all_running(fleet))
    trigger(h, fleet)
    (alert,) = h.rt.call(probe.wait_for, "iotflow/alerts/#", 1, 10.0)
    assert alert.topic == f"iotflow/alerts/{prefix}-1"
    assert json.loads(alert.payload) == expected_alert(f"{prefix}-1")
    telemetry = h.rt.call(probe.wait_for, "iotflow/devices/+/telemetry", 4, 10.0)
    assert all(decode_envelope(m.payload) is not None for m in telemetry)
    h.stop(fleet)


def test_coap_client_event_is_a_post_to_its_path_on_the_server(h: Harness) -> None:
    sink: CoapSink = h.rt.call(CoapSink.start)
    h.on_close(lambda: h.rt.call(sink.stop))
    data = with_behavior(
        {
            "id": "it-coap-dest",
            "name": "CoAP destinations",
            "version": "1.0.0",
            "type": "sensor",
            "protocol": "coap",
            "connection": {"host": "127.0.0.1", "port": sink.port},
            "telemetry": [
                {
                    "name": "temperature",
                    "type": "number",
                    "intervalMs": 100,
                    "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
                }
            ],
        },
        "alerts/${deviceId}",
    )
    fleet = h.fleet("cd", data, 2)
    h.start(fleet)
    h.wait(lambda: all_running(fleet))
    trigger(h, fleet)
    h.wait(lambda: fleet.transport.events_sent == 1, what="the event")
    time.sleep(0.3)
    h.stop(fleet)
    (alert,) = h.rt.call(sink.requests, "/alerts/cd-1")
    assert (alert["method"], alert["contentFormat"]) == ("POST", 50)
    assert json.loads(alert["payload"]) == expected_alert("cd-1")
    counts = h.rt.call(sink.counts)
    assert set(counts) == {"/alerts/cd-1", "/telemetry/cd-0", "/telemetry/cd-1"}
    stats = fleet.stats()
    assert stats["behaviorsFired"] == 1
    assert stats["messagesAcked"] == stats["messagesSent"] == counts["/telemetry/cd-0"] + counts["/telemetry/cd-1"]


def test_coap_server_device_offers_its_event_as_an_observable_resource(h: Harness) -> None:
    data = with_behavior(
        {
            "id": "it-coap-server-dest",
            "name": "CoAP server destinations",
            "version": "1.0.0",
            "type": "sensor",
            "protocol": "coap",
            "connection": {"host": "127.0.0.1", "mode": "server", "serverPort": 0},
            "telemetry": [
                {
                    "name": "temperature",
                    "type": "number",
                    "intervalMs": 100,
                    "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
                }
            ],
        },
        "alerts",
    )
    fleet = h.fleet("sd", data, 2)
    h.start(fleet)
    h.wait(lambda: all_running(fleet))
    url = fleet.device_status(fleet.devices[1])["url"]
    watching = h.rt.call(observe, f"{url}/alerts")
    h.on_close(lambda: h.rt.call(watching.cancel))
    trigger(h, fleet)
    assert h.rt.call(watching.wait_for, 2, 10.0)  # the first GET (empty), then the event
    assert watching.payloads()[0] == b"" and json.loads(watching.payloads()[1]) == expected_alert("sd-1")
    assert fleet.stats()["transport"]["eventsSent"] == 1
    h.stop(fleet)


def test_kafka_event_goes_to_its_topic_keyed_by_the_device(h: Harness) -> None:
    broker = start_local_kafka_broker()
    h.on_close(broker.stop)
    telemetry_topic, alerts_topic = create_topic(broker, 1), create_topic(broker, 1)
    data = with_behavior(kafka_model(telemetry_topic), alerts_topic, field="speed")
    fleet = h.fleet("kd", data, 2, connection={"host": broker.host, "port": broker.port})
    h.start(fleet)
    h.wait(lambda: all_running(fleet))
    trigger(h, fleet, field="speed")
    h.wait(lambda: fleet.transport.events_sent == 1, what="the event")
    time.sleep(0.3)
    h.stop(fleet)
    stats = fleet.stats()
    assert stats["behaviorsFired"] == 1 and stats["messagesAcked"] == stats["messagesSent"]
    (alert,) = read_all(broker, alerts_topic, 1, 1)
    assert alert.key() == b"kd-1" and json.loads(alert.value()) == expected_alert("kd-1")
    telemetry = read_all(broker, telemetry_topic, 1, stats["messagesAcked"])
    assert len(telemetry) == stats["messagesAcked"]
    assert all(decode_envelope(m.value()) is not None for m in telemetry)
