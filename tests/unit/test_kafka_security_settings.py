"""Kafka TLS and SASL settings (no broker): the model's keys become kafka-python's settings, nothing is ignored,
the password is never shown, and a TLS connection really starts with a TLS handshake (a listener the test opens
reads what the client sends first). The model checks of the connection keys (every key used or refused) too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
from transport_fakes import FakeOutcomes, make_links, make_spec

from iotix.errors import ConfigurationError
from iotix.model import validate_model_dict
from iotix.security.certs import create_server_certificate, load_or_create_ca
from iotix.services import kafka_front
from iotix.transport import kafka as kafka_transport
from iotix.transport.base import Credentials
from iotix.transport.kafka import KafkaTransport
from iotix.transport.kafka_security import KafkaSecurity, client_security, fleet_security
from iotix.transport.kafka_wire import probe_kafka
from iotix.transport.tls import client_tls


def kafka_model(**connection: Any) -> dict[str, Any]:
    return {
        "id": "unit-kafka-sec",
        "name": "Kafka security unit",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "kafka",
        "connection": {"bootstrap": "127.0.0.1:19092", "topic": "t", **connection},
        "telemetry": [
            {"name": "v", "type": "number", "intervalMs": 1000, "generator": {"type": "constant", "value": 1}}
        ],
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pki")
    ca = load_or_create_ca(base / "ca")
    server = create_server_certificate(ca, base / "server")
    client = ca.issue("dev-1", base / "client.pem", base / "client.key")
    return {"ca": ca.cert_path, "cert": server.cert, "key": server.key, "client": client.cert, "client_key": client.key}


# ------------------------------------------------------------------------------------------------ mapping


def test_no_tls_and_no_sasl_is_plaintext() -> None:
    security = fleet_security(make_spec(kafka_model()))
    assert security.protocol == "PLAINTEXT"
    assert security.client_config() == {"security_protocol": "PLAINTEXT"}


def test_tls_becomes_an_ssl_context_with_the_ca_client_certificate_and_min_version(pki: dict[str, Path]) -> None:
    tls = {"caFile": str(pki["ca"]), "certFile": str(pki["client"]), "keyFile": str(pki["client_key"])}
    security = fleet_security(make_spec(kafka_model(tls={**tls, "minVersion": "1.3", "verifyHostname": False})))
    config = security.client_config()
    assert config["security_protocol"] == "SSL" and config["ssl_check_hostname"] is False
    context: ssl.SSLContext = config["ssl_context"]
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3 and context.check_hostname is False
    assert context.verify_mode is ssl.CERT_REQUIRED  # the CA is still checked without the host name check
    assert [c["subject"] for c in context.get_ca_certs()] and security.tls is not None
    assert security.tls.cert == pki["client"] and security.tls.ca == pki["ca"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_becomes_kafka_python_sasl_settings(mechanism: str, pki: dict[str, Path]) -> None:
    sasl = {"mechanism": mechanism, "username": "alice", "password": "pw"}
    plain = fleet_security(make_spec(kafka_model(sasl=sasl)))
    assert plain.client_config() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "alice",
        "sasl_plain_password": "pw",
    }
    over_tls = fleet_security(make_spec(kafka_model(sasl=sasl, tls={"caFile": str(pki["ca"])})))
    assert over_tls.client_config()["security_protocol"] == "SASL_SSL"


def test_create_fleet_login_overrides_the_models_sasl_login_and_the_password_is_never_shown() -> None:
    spec = make_spec(
        kafka_model(sasl={"mechanism": "SCRAM-SHA-256", "username": "model-user", "password": "model-pw"}),
        credentials=Credentials("robot-user", "robot-Secret-9"),
    )
    security = fleet_security(spec)
    config = security.client_config()
    assert (config["sasl_plain_username"], config["sasl_plain_password"]) == ("robot-user", "robot-Secret-9")
    for shown in (repr(security), security.describe(), str(security.key)):
        assert "robot-Secret-9" not in shown and "model-pw" not in shown
    assert "SCRAM-SHA-256 as 'robot-user'" in security.describe()
    assert "robot-Secret-9" not in repr(config)  # kafka-python logs its configuration dict at DEBUG


def test_kafka_pythons_configuration_log_does_not_show_the_password(caplog: pytest.LogCaptureFixture) -> None:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    security = client_security(sasl_mechanism="PLAIN", username="u", password="never-Shown-42")
    caplog.set_level("DEBUG", logger="kafka")
    with pytest.raises(KafkaError):
        kafka_transport.build_kafka_client(
            KafkaAdminClient, bootstrap_servers="127.0.0.1:9", bootstrap_timeout_ms=200, **security.client_config()
        )
    assert "Starting KafkaAdminClient with configuration" in caplog.text
    assert "never-Shown-42" not in caplog.text


def test_pools_are_shared_only_by_equal_security(pki: dict[str, Path]) -> None:
    def security(password: str) -> KafkaSecurity:
        return fleet_security(
            make_spec(kafka_model(sasl={"mechanism": "PLAIN", "username": "u", "password": password}))
        )

    assert security("a") == security("a") and hash(security("a")) == hash(security("a"))
    assert security("a") != security("b")
    links = make_links(1)
    one = KafkaTransport(
        make_spec(kafka_model(sasl={"mechanism": "PLAIN", "username": "u", "password": "a"})), links, FakeOutcomes()
    )
    two = KafkaTransport(make_spec(kafka_model()), links, FakeOutcomes())
    assert one.key != two.key and one.describe()["security"] == "SASL_PLAINTEXT"


def test_the_producer_gets_the_security_settings(monkeypatch: pytest.MonkeyPatch, pki: dict[str, Path]) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(kafka_transport, "build_kafka_client", lambda factory, **config: seen.update(config))
    security = fleet_security(
        make_spec(
            kafka_model(sasl={"mechanism": "PLAIN", "username": "u", "password": "p"}, tls={"caFile": str(pki["ca"])})
        )
    )
    settings = {
        "bootstrap": "h:1",
        "acks": 1,
        "compression": None,
        "linger_ms": 5,
        "max_block_ms": 100,
        "security": security,
    }
    kafka_transport.make_producer(settings, 0)
    assert seen["security_protocol"] == "SASL_SSL" and seen["sasl_mechanism"] == "PLAIN"
    assert seen["ssl_context"] is security.tls.context and seen["sasl_plain_password"] == "p"


# ------------------------------------------------------------------------------------------------ refusals


def test_a_login_without_sasl_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigurationError, match=r"Fleet 'vans': a password was given .* no sasl"):
        fleet_security(make_spec(kafka_model(), fleet="vans", credentials=Credentials(None, "x")))


def test_sasl_without_user_or_password_is_refused_naming_the_fleet() -> None:
    with pytest.raises(ConfigurationError, match=r"Fleet 'vans': connection.sasl \(PLAIN\) needs a user name"):
        fleet_security(make_spec(kafka_model(sasl={"mechanism": "PLAIN"}), fleet="vans"))
    with pytest.raises(ConfigurationError, match=r"needs a password: give Create Fleet password="):
        fleet_security(make_spec(kafka_model(sasl={"mechanism": "PLAIN", "username": "u"}), fleet="vans"))


def test_per_device_tls_files_and_missing_files_are_refused(pki: dict[str, Path], tmp_path: Path) -> None:
    per_device = kafka_model(tls={"certFile": "certs/${deviceId}.pem", "keyFile": "certs/${deviceId}.key"})
    with pytest.raises(ConfigurationError, match=r"Fleet 'vans': connection.tls.certFile, keyFile uses"):
        fleet_security(make_spec(per_device, fleet="vans"))
    with pytest.raises(ConfigurationError, match=r"connection.tls.caFile '.*nope.pem' of fleet 'vans' does not exist"):
        fleet_security(make_spec(kafka_model(tls={"caFile": "nope.pem"}), fleet="vans", tls_dir=str(tmp_path)))


def test_the_test_client_needs_a_mechanism_for_a_login() -> None:
    with pytest.raises(ConfigurationError, match="without a SASL mechanism"):
        client_security(username="u", password="p")
    with pytest.raises(ConfigurationError, match="must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"):
        client_security(sasl_mechanism="GSSAPI", username="u", password="p")
    assert client_security(tls=True).protocol == "SSL"


# --------------------------------------------------------------------------- the wire: TLS is really spoken


class FirstBytes:
    """A TCP listener on 127.0.0.1 that keeps the first bytes of each connection, then closes it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.first: list[bytes] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    self.first.append(conn.recv(5))

    def close(self) -> None:
        self.sock.close()


def test_a_tls_fleet_starts_with_a_tls_client_hello_never_plaintext(pki: dict[str, Path]) -> None:
    listener = FirstBytes()
    try:
        spec = make_spec(
            kafka_model(tls={"caFile": str(pki["ca"])}, maxBlockMs=300), {"host": "127.0.0.1", "port": listener.port}
        )
        transport = KafkaTransport(spec, make_links(1), FakeOutcomes())

        async def connect() -> str:
            try:
                await transport.connect(make_links(1)[0])
            except Exception as err:
                return str(err)
            finally:
                await transport.close()
            return ""

        error = asyncio.run(connect())
        assert "fleet 'fake'" in error and "TLS" in error
        assert listener.first and all(b[:1] == b"\x16" and b[1:2] == b"\x03" for b in listener.first if b)  # handshake
    finally:
        listener.close()


def test_the_probe_explains_an_unknown_ca(pki: dict[str, Path], tmp_path: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["cert"], pki["key"])
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        with contextlib.suppress(ssl.SSLError, OSError):
            context.wrap_socket(conn, server_side=True)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    other = load_or_create_ca(tmp_path / "other")
    problem = probe_kafka("127.0.0.1", port, 2.0, client_tls(other.cert_path))
    thread.join(3)
    server.close()
    assert problem is not None and "unknown CA" in problem and str(other.cert_path) in problem


# ------------------------------------------------------------------------------ the local broker's SASL front


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_the_fronts_scram_server_accepts_kafka_pythons_scram_client_and_only_the_right_password(mechanism: str) -> None:
    from kafka.net.sasl.scram import ScramClient

    def exchange(password: str) -> bool:
        client = ScramClient("alice", password, mechanism)
        server = kafka_front.ScramExchange(mechanism, {"alice": "right"}, {})
        first, _ = server.next(client.first_message())
        client.process_server_first_message(first)
        try:
            final, done = server.next(client.final_message())
        except kafka_front.AuthFailed:
            return False
        client.process_server_final_message(final)  # raises if the server signature is wrong
        return done

    assert exchange("right") is True
    assert exchange("wrong") is False


def test_the_fronts_plain_check() -> None:
    kafka_front.check_plain(b"\0alice\0right", {"alice": "right"})
    with pytest.raises(kafka_front.AuthFailed, match="Invalid username or password"):
        kafka_front.check_plain(b"\0alice\0wrong", {"alice": "right"})


# ---------------------------------------------------------------------------- model checks: used or refused


def coap_model(**connection: Any) -> dict[str, Any]:
    return {**kafka_model(), "protocol": "coap", "connection": {"host": "h", **connection}}


def problems(data: dict[str, Any]) -> dict[str, str]:
    return dict(validate_model_dict(data))


def test_kafka_tls_and_sasl_are_accepted_and_top_level_login_is_refused() -> None:
    assert problems(kafka_model(tls={"caFile": "ca.pem"}, sasl={"mechanism": "SCRAM-SHA-512", "username": "u"})) == {}
    assert "use connection.sasl.password" in problems(kafka_model(password="x"))["connection.password"]
    bad = problems(kafka_model(sasl={"mechanism": "GSSAPI"}))
    assert any("sasl.mechanism" in path for path in bad)


def test_coap_tls_is_refused_as_dtls_not_supported() -> None:
    assert "DTLS is not supported" in problems(coap_model(tls={}))["connection.tls"]


def test_mqtt_connect_timeout_and_max_inflight_are_accepted_and_checked() -> None:
    mqtt = {**kafka_model(), "protocol": "mqtt", "connection": {"topicPattern": "t/${deviceId}"}}
    assert problems({**mqtt, "connection": {**mqtt["connection"], "connectTimeoutMs": 2500, "maxInflight": 20}}) == {}
    wrong = problems({**mqtt, "connection": {**mqtt["connection"], "maxInflight": 0}})
    assert "connection.maxInflight" in wrong
    assert "mqtt key" in problems(kafka_model(maxInflight=5))["connection.maxInflight"]


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        (kafka_model(qos=1), "qos", "only for protocol 'mqtt'"),
        (kafka_model(method="PUT"), "method", "only for protocols 'coap' and 'http'"),
        (coap_model(username="u"), "username", "CoAP has no user name"),
        (coap_model(mode="server", confirmable=True), "confirmable", "not used in CoAP server mode"),
        (coap_model(serverPort=6000), "serverPort", "only for connection.mode 'server'"),
        (coap_model(confirmable=False, retry={"maxRetries": 1}), "retry", "only for request-based sends"),
        (
            {**kafka_model(), "protocol": "mqtt", "connection": {"topicPattern": "t", "circuitBreaker": {}}},
            "circuitBreaker",
            "only for request-based sends",
        ),
        (
            {**kafka_model(), "protocol": "http", "connection": {"url": "http://h/x", "tls": {}}},
            "tls",
            "use https://",
        ),
        (
            {**kafka_model(), "protocol": "http", "connection": {"url": "https://h/x", "username": "u"}},
            "username",
            "HTTP has no user name",
        ),
    ],
)
def test_a_key_the_protocol_would_not_use_is_refused(data: dict[str, Any], key: str, fragment: str) -> None:
    assert fragment in problems(data)[f"connection.{key}"]


def test_a_coap_fleet_with_tls_or_a_login_is_refused_naming_the_fleet() -> None:
    from iotix.transport.coap import create as create_coap

    model = coap_model()
    with pytest.raises(ConfigurationError, match=r"Fleet 'plugs': connection.tls is set, but CoAP over DTLS"):
        create_coap(make_spec(model, {"tls": {}}, fleet="plugs"), make_links(1), FakeOutcomes())
    with pytest.raises(ConfigurationError, match=r"Fleet 'plugs': CoAP has no user name/password login"):
        create_coap(make_spec(model, fleet="plugs", credentials=Credentials("u", "p")), make_links(1), FakeOutcomes())
