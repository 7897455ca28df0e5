"""Kafka over TLS and SASL, end to end: fleets and the test client against a secured local broker, every
message checked by an independent confluent-kafka (librdkafka) consumer with the same security settings.

The secured broker is Tansu behind the IoTix TLS/SASL front (Tansu 0.6.0 cannot offer either itself; see
:mod:`iotix.services.kafka_broker`). What is checked here would be wrong if the settings were ignored: a
plaintext client is refused by the TLS listener, a wrong password or CA is refused with a message that says
so and names the fleet.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from harness import Harness

from iotix.fleet.device import DeviceState
from iotix.security.certs import load_or_create_ca
from iotix.services.kafka_broker import KafkaBroker
from iotix.transport.base import Credentials
from iotix.transport.kafka_probe import KafkaClientError, KafkaProbe
from iotix.transport.kafka_security import client_security

USER, PASSWORD = "alice", "s3cret-Pa55"


def kafka_model(topic: str, **connection: Any) -> dict[str, Any]:
    return {
        "id": "it-kafka-secure",
        "name": "Kafka secured sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "kafka",
        "connection": {"topic": topic, "acks": 1, "lingerMs": 5, "maxBlockMs": 3000, **connection},
        "telemetry": [
            {
                "name": "speed",
                "type": "number",
                "intervalMs": 100,
                "generator": {"type": "random", "min": 0, "max": 90, "precision": 1},
            }
        ],
    }


@pytest.fixture(scope="module")
def sasl_ssl(tmp_path_factory: pytest.TempPathFactory) -> KafkaBroker:
    """TLS (server certificate of a test CA) and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) for one user."""
    ca_dir = tmp_path_factory.mktemp("kafka-ca")
    broker = KafkaBroker(tls=True, ca_dir=ca_dir, sasl_username=USER, sasl_password=PASSWORD).start()
    yield broker
    broker.stop()


def librdkafka_config(broker: KafkaBroker, mechanism: str = "SCRAM-SHA-512", **extra: Any) -> dict[str, Any]:
    info = broker.info()
    config = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": f"check-{uuid.uuid4().hex[:6]}",
        "enable.auto.commit": False,
        "security.protocol": info["securityProtocol"],
        **extra,
    }
    if "ca" in info:
        config["ssl.ca.location"] = info["ca"]
    if "saslUsername" in info:
        config.update({"sasl.mechanism": mechanism, "sasl.username": USER, "sasl.password": PASSWORD})
    return config


def read_all(config: dict[str, Any], topic: str, expected: int, timeout: float = 20.0) -> list[Any]:
    """Every message of ``topic`` from the beginning, read by confluent-kafka (no group join)."""
    consumer = Consumer(config)
    try:
        partitions = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(messages) < expected and time.monotonic() < deadline:
            messages.extend(m for m in consumer.consume(1000, 0.5) if m.error() is None)
        time.sleep(0.3)
        messages.extend(m for m in consumer.consume(1000, 0.3) if m.error() is None)
    finally:
        consumer.close()
    return messages


def connect_failure(h: Harness, fleet: Any) -> str:
    h.start(fleet)
    h.wait(lambda: fleet.devices[0].connect_failures > 0, timeout=20, what="a failed connect")
    error = str(fleet.devices[0].last_error)
    assert fleet.devices[0].state is not DeviceState.RUNNING
    h.stop(fleet)
    return error


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_a_fleet_produces_over_sasl_ssl_and_librdkafka_reads_every_message(
    h: Harness, sasl_ssl: KafkaBroker, mechanism: str
) -> None:
    topic = f"secure-{uuid.uuid4().hex[:8]}"
    sasl = {"mechanism": mechanism, "username": USER}  # the password comes as Create Fleet's password= would
    model = kafka_model(topic, bootstrap=sasl_ssl.bootstrap, tls={"caFile": sasl_ssl.info()["ca"]}, sasl=sasl)
    fleet = h.fleet("sec", model, 3, credentials=Credentials(None, PASSWORD))
    assert fleet.transport.security.protocol == "SASL_SSL"
    h.start(fleet)
    h.wait(lambda: fleet.stats()["messagesAcked"] >= 15, what="acks over SASL_SSL")
    h.stop(fleet)
    stats = fleet.stats()
    assert stats["messagesFailed"] == 0 and stats["messagesAcked"] == stats["messagesSent"]
    messages = read_all(librdkafka_config(sasl_ssl), topic, stats["messagesAcked"])
    assert len(messages) == stats["messagesAcked"]
    assert {json.loads(m.value())["deviceId"] for m in messages} == {d.id for d in fleet.devices}


def test_a_wrong_password_is_refused_and_the_error_names_the_fleet_and_sasl(h: Harness, sasl_ssl: KafkaBroker) -> None:
    sasl = {"mechanism": "SCRAM-SHA-256", "username": USER, "password": "wrong"}
    model = kafka_model("secure.wrong", bootstrap=sasl_ssl.bootstrap, tls={"caFile": sasl_ssl.info()["ca"]}, sasl=sasl)
    error = connect_failure(h, h.fleet("badpw", model, 1))
    assert "SASL SCRAM-SHA-256" in error and "alice" in error and "fleet 'badpw'" in error
    assert "wrong" not in error.replace("wrong user name", "")  # the password is never in a message


def test_a_ca_that_did_not_sign_the_broker_is_refused_as_unknown_ca(
    h: Harness, sasl_ssl: KafkaBroker, tmp_path: Path
) -> None:
    other = load_or_create_ca(tmp_path / "other-ca", common_name="Other CA")
    sasl = {"mechanism": "PLAIN", "username": USER, "password": PASSWORD}
    model = kafka_model("secure.ca", bootstrap=sasl_ssl.bootstrap, tls={"caFile": str(other.cert_path)}, sasl=sasl)
    error = connect_failure(h, h.fleet("badca", model, 1))
    assert "unknown CA" in error and str(other.cert_path) in error and "fleet 'badca'" in error


def test_a_fleet_without_tls_does_not_talk_plaintext_to_the_tls_listener(h: Harness, sasl_ssl: KafkaBroker) -> None:
    sasl = {"mechanism": "PLAIN", "username": USER, "password": PASSWORD}
    model = kafka_model("secure.plain", bootstrap=sasl_ssl.bootstrap, sasl=sasl)
    error = connect_failure(h, h.fleet("notls", model, 1))
    assert "fleet 'notls'" in error and "SASL_PLAINTEXT" not in error
    assert "TLS" in error  # the probe tells that the port speaks TLS


def test_the_test_client_produces_and_consumes_over_sasl_ssl(sasl_ssl: KafkaBroker) -> None:
    import asyncio

    loop = asyncio.new_event_loop()
    security = client_security(
        ca_file=sasl_ssl.info()["ca"], sasl_mechanism="SCRAM-SHA-512", username=USER, password=PASSWORD
    )
    probe = KafkaProbe.connect("sec", sasl_ssl.bootstrap, loop, 10.0, security)
    try:
        topic = f"probe-{uuid.uuid4().hex[:8]}"
        result = probe.produce(topic, b'{"hello": 1}', b"k")
        assert result["offset"] == 0
        messages = read_all(librdkafka_config(sasl_ssl, "SCRAM-SHA-256"), topic, 1)
        assert [m.value() for m in messages] == [b'{"hello": 1}']
    finally:
        probe.close()
        loop.close()
    with pytest.raises(KafkaClientError, match="SASL SCRAM-SHA-512 as 'alice'"):
        KafkaProbe.connect(
            "bad",
            sasl_ssl.bootstrap,
            asyncio.new_event_loop(),
            3.0,
            client_security(
                ca_file=sasl_ssl.info()["ca"], sasl_mechanism="SCRAM-SHA-512", username=USER, password="nope"
            ),
        )


def test_mutual_tls_needs_the_client_certificate(h: Harness, tmp_path: Path) -> None:
    broker = KafkaBroker(tls=True, client_auth=True, ca_dir=tmp_path / "ca").start()
    try:
        info = broker.info()
        assert info["securityProtocol"] == "SSL"
        topic = f"mtls-{uuid.uuid4().hex[:8]}"
        tls = {"caFile": info["ca"], "certFile": info["clientCert"], "keyFile": info["clientKey"]}
        fleet = h.fleet("mtls", kafka_model(topic, bootstrap=broker.bootstrap, tls=tls), 2)
        h.start(fleet)
        h.wait(lambda: fleet.stats()["messagesAcked"] >= 10, what="acks over mutual TLS")
        h.stop(fleet)
        acked = fleet.stats()["messagesAcked"]
        checker = librdkafka_config(
            broker, **{"ssl.certificate.location": info["clientCert"], "ssl.key.location": info["clientKey"]}
        )
        assert len(read_all(checker, topic, acked)) == acked
        anonymous = h.fleet(
            "nocert", kafka_model("mtls.none", bootstrap=broker.bootstrap, tls={"caFile": info["ca"]}), 1
        )
        error = connect_failure(h, anonymous)
        assert "client certificate" in error and "fleet 'nocert'" in error
    finally:
        broker.stop()
