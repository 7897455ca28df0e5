"""MQTT over mutual TLS against a real Mosquitto TLS listener, checked by its log and by mosquitto_sub.

Each device presents its own certificate (common name = device id); Mosquitto takes that name as the user
name (``use_identity_as_username``) and logs it for every new client. Refusals (expired certificate, a
certificate of another CA, a broker certificate for another host name, a missing file) must name the device
and the reason in words, while devices already running keep running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Harness as BaseHarness
from harness import all_running

from iotix.fleet.fleet import Fleet, FleetOptions
from iotix.security import (
    CertificateAuthority,
    create_device_certificates,
    default_device_targets,
    load_or_create_ca,
)
from iotix.services import MqttBroker, find_mosquitto, start_local_broker
from iotix.transport.base import TransportError
from iotix.transport.mqtt_probe import MqttProbe
from iotix.transport.paho_driver import LoopClient
from iotix.transport.tls import ClientTls, client_tls

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed"),
]
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
TOPIC = "tls/${deviceId}/telemetry"
NEW_CLIENT = re.compile(r"New client connected from \S+ as (\S+) \(.*u'([^']*)'\)")


def model_dict(interval_ms: int = 100, qos: int = 1, **tls: Any) -> dict[str, Any]:
    """A sensor over mutual TLS with the layout of ``iotix certs`` (certs/<id>.pem, .key, certs/ca.pem)."""
    return {
        "id": "tls-sensor",
        "name": "TLS sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {
            "host": "127.0.0.1",
            "topicPattern": TOPIC,
            "clientIdPattern": "client-${deviceId}",  # not the user name: that comes from the certificate
            "qos": qos,
            "keepAlive": 30,
            "tls": {
                "caFile": "certs/ca.pem",
                "certFile": "certs/${deviceId}.pem",
                "keyFile": "certs/${deviceId}.key",
                **tls,
            },
        },
        "telemetry": [
            {
                "name": "temperature",
                "type": "number",
                "intervalMs": interval_ms,
                "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
            }
        ],
    }


class Harness(BaseHarness):
    """Fleets pointed at the TLS broker, with their certificates under ``tls_dir``."""

    def __init__(self, broker: MqttBroker, tls_dir: Path) -> None:
        super().__init__()
        self.broker = broker
        self.tls_dir = tls_dir

    def connection(self, model_connection: dict[str, Any]) -> dict[str, Any]:
        return {**model_connection, "host": self.broker.host, "port": self.broker.port}

    def tls_fleet(self, name: str, count: int, data: dict[str, Any] | None = None, **connection: Any) -> Fleet:
        options = FleetOptions(tls_dir=str(self.tls_dir), reconnect_base_s=0.1, reconnect_cap_s=0.5)
        return self.fleet(name, data or model_dict(), count, options=options, connection=connection or None)

    def receiver(self, topic: str = "tls/#") -> MqttProbe:
        info = self.broker.info()

        async def make() -> MqttProbe:
            probe = MqttProbe("tls", f"receiver-{time.monotonic_ns()}")
            await probe.connect(
                self.broker.host, self.broker.port, tls=client_tls(info["ca"], info["clientCert"], info["clientKey"])
            )
            await probe.subscribe(topic, 1)
            return probe

        probe = self.rt.call(make)
        self.on_close(lambda: self.rt.call(probe.close))
        return probe


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ca")


@pytest.fixture(scope="module")
def ca(ca_dir: Path) -> CertificateAuthority:
    return load_or_create_ca(ca_dir)


@pytest.fixture(scope="module")
def broker(ca_dir: Path, ca: CertificateAuthority) -> Iterator[MqttBroker]:
    b = start_local_broker(tls=True, ca_dir=ca_dir)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fleet")


def certify(ca: CertificateAuthority, tls_dir: Path, ids: list[str], **kwargs: Any) -> None:
    create_device_certificates(ca, default_device_targets(tls_dir, ids), ca_copy=tls_dir / "certs/ca.pem", **kwargs)


@pytest.fixture
def h(broker: MqttBroker, tls_dir: Path) -> Iterator[Harness]:
    harness = Harness(broker, tls_dir)
    yield harness
    harness.close()


def broker_users(broker: MqttBroker) -> dict[str, str]:
    """Client id -> user name of every client Mosquitto logged as connected."""
    return dict(NEW_CLIENT.findall(broker.log_path.read_text(encoding="utf-8", errors="replace")))


def test_devices_connect_with_their_own_certificates_and_the_broker_sees_their_ids(
    h: Harness, ca: CertificateAuthority, tls_dir: Path
) -> None:
    ids = [f"sec-{i}" for i in range(20)]
    certify(ca, tls_dir, ids)
    probe = h.receiver()
    sub = None
    if MOSQUITTO_SUB is not None:
        info = h.broker.info()
        sub = subprocess.Popen(
            [
                MOSQUITTO_SUB,
                *("-h", h.broker.host, "-p", str(h.broker.port), "-t", "tls/+/telemetry", "-q", "1"),
                *("--cafile", info["ca"], "--cert", info["clientCert"], "--key", info["clientKey"]),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)
    fleet = h.tls_fleet("sec", 20)
    assert fleet.transport.target == f"mqtts://{h.broker.host}:{h.broker.port}"
    h.start(fleet)
    h.running(fleet)
    time.sleep(1.0)
    h.stop(fleet)
    sent = fleet.stats()["messagesSent"]
    assert sent >= 20 * 5
    h.wait(lambda: probe.tracker.total >= sent, 10, "every message at the TLS receiver")
    assert probe.tracker.total == sent

    users = broker_users(h.broker)
    assert {f"client-{d}": d for d in ids}.items() <= users.items()  # user name = certificate common name
    assert users[probe.client_id] == "iotix-receiver"

    if sub is not None:
        time.sleep(0.5)
        sub.terminate()
        out, _ = sub.communicate(timeout=5)
        seen = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert len(seen) == sent
        assert {m["deviceId"] for m in seen} == set(ids)


def test_refused_devices_are_named_with_the_reason_and_running_devices_keep_running(
    h: Harness, ca: CertificateAuthority, tls_dir: Path, ca_dir: Path
) -> None:
    good_ids = [f"ok-{i}" for i in range(3)]
    certify(ca, tls_dir, good_ids)
    good = h.tls_fleet("ok", 3)
    h.start(good)
    h.running(good)

    certify(ca, tls_dir, ["old-0"], expired=True)
    other = load_or_create_ca(ca_dir.parent / "other-ca", common_name="Other Test CA")
    create_device_certificates(other, default_device_targets(tls_dir, ["alien-0"]))
    mismatch = MqttBroker("mosquitto", tls=True, ca_dir=ca_dir, server_names=("mqtt.invalid",)).start()
    h.on_close(mismatch.stop)
    certify(ca, tls_dir, ["far-0"])

    fleets = {
        "expired": h.tls_fleet("old", 1),
        "other CA": h.tls_fleet("alien", 1),
        "mismatch": h.tls_fleet("far", 1, port=mismatch.port),
        "missing": h.tls_fleet("nofile", 1),
    }
    for fleet in fleets.values():
        h.start(fleet)
    h.wait(lambda: all(f.devices[0].connect_failures >= 2 for f in fleets.values()), 15, "refusals retried")
    errors = {reason: f.devices[0].last_error for reason, f in fleets.items()}
    expired, alien, far, missing = errors["expired"], errors["other CA"], errors["mismatch"], errors["missing"]

    cert_dir = tls_dir / "certs"
    assert expired.startswith(f"device 'old-0': the TLS client certificate '{cert_dir / 'old-0.pem'}'")
    assert "(connection.tls.certFile) expired on " in expired and "the broker would refuse it" in expired

    assert alien.startswith(f"device 'alien-0': TLS connection to broker 127.0.0.1:{h.broker.port} failed: ")
    assert f"refused the client certificate '{cert_dir / 'alien-0.pem'}'" in alien  # by an alert or by closing
    assert "issued by 'Other Test CA'" in alien and "unknown CA" in alien

    assert far.startswith(f"device 'far-0': TLS handshake with broker 127.0.0.1:{mismatch.port} failed: ")
    assert "hostname mismatch" in far and "expected name '127.0.0.1'" in far and "verifyHostname" in far

    assert missing == (
        f"device 'nofile-0': connection.tls.certFile '{cert_dir / 'nofile-0.pem'}' of fleet 'nofile' does not "
        f"exist (pattern 'certs/${{deviceId}}.pem' in tls_dir '{tls_dir}')"
    )
    for fleet in fleets.values():
        assert fleet.devices[0].state.value == "connecting"  # still trying, with backoff

    sent = good.stats()["messagesSent"]
    time.sleep(0.5)
    assert all_running(good)
    assert good.stats()["messagesSent"] > sent
    assert good.stats()["disconnects"] == 0


def connect_error(h: Harness, client_id: str, tls: ClientTls) -> str:
    """Why a bare MQTT client with ``tls`` could not connect to the test broker ("connected" if it could)."""

    async def connect() -> str:
        client = LoopClient(asyncio.get_running_loop(), client_id)
        client.on_disconnect = lambda *args: client.connection_failed("lost")
        try:
            await client.open(h.broker.host, h.broker.port, timeout=5.0, tls=tls)
        except TransportError as err:
            return str(err)
        client.abort()
        return "connected"

    return h.rt.call(connect)


def test_the_brokers_alert_for_an_expired_client_certificate_is_reported(
    h: Harness, ca: CertificateAuthority, tls_dir: Path
) -> None:
    """The devices never send an expired certificate (checked before connecting); a client that does gets the
    broker's refusal, which arrives as a TLS alert after the TLS 1.3 handshake, in words."""
    certify(ca, tls_dir, ["stale"], expired=True)
    tls = client_tls(tls_dir / "certs/ca.pem", tls_dir / "certs/stale.pem", tls_dir / "certs/stale.key")
    assert tls.validity_problem() is not None
    message = connect_error(h, "stale-client", tls)
    assert message.startswith(f"TLS connection to broker 127.0.0.1:{h.broker.port} failed: the broker refused")
    assert "certificate expired" in message and "SSLV3_ALERT_CERTIFICATE_EXPIRED" in message


def test_no_client_certificate_is_refused_in_words(h: Harness) -> None:
    tls = client_tls(h.broker.ca_cert)
    message = connect_error(h, "anonymous", tls)
    assert "the broker requires a client certificate and connection.tls has no certFile" in message


def test_unknown_ca_of_the_broker_certificate_is_named(
    h: Harness, ca_dir: Path, ca: CertificateAuthority, tls_dir: Path
) -> None:
    """A device that trusts another CA than the one that signed the broker's certificate."""
    other = load_or_create_ca(ca_dir.parent / "other-ca", common_name="Other Test CA")
    certify(ca, tls_dir, ["wrongtrust-0"])
    (tls_dir / "other-ca.pem").write_bytes(other.cert_pem)
    fleet = h.tls_fleet("wrongtrust", 1, model_dict(caFile="other-ca.pem"))
    h.start(fleet)
    h.wait(lambda: fleet.devices[0].connect_failures >= 1, 10, "refusal")
    error = fleet.devices[0].last_error
    assert error.startswith(f"device 'wrongtrust-0': TLS handshake with broker 127.0.0.1:{h.broker.port} failed: ")
    assert f"unknown CA: the broker's certificate is not signed by a CA of caFile '{tls_dir / 'other-ca.pem'}'" in error


def test_verify_hostname_false_skips_only_the_name_check_and_warns_once(
    h: Harness, ca_dir: Path, ca: CertificateAuthority, tls_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mismatch = MqttBroker("mosquitto", tls=True, ca_dir=ca_dir, server_names=("mqtt.invalid",)).start()
    h.on_close(mismatch.stop)
    ids = [f"lax-{i}" for i in range(3)]
    certify(ca, tls_dir, ids)
    with caplog.at_level(logging.WARNING, logger="iotix"):
        fleet = h.tls_fleet("lax", 3, model_dict(verifyHostname=False), port=mismatch.port)
        h.start(fleet)
        h.running(fleet)
    warnings = [r.getMessage() for r in caplog.records if "verifyHostname is false" in r.getMessage()]
    assert len(warnings) == 1 and "fleet lax" in warnings[0]
    assert all(not fleet.transport.tls.for_device(d).check_hostname for d in fleet.devices)
    assert fleet.transport.tls.for_device(fleet.devices[0]).context.verify_mode.name == "CERT_REQUIRED"


def test_min_version_1_3_connects_and_the_devices_share_contexts_only_when_their_files_are_the_same(
    h: Harness, ca: CertificateAuthority, tls_dir: Path
) -> None:
    ids = [f"v13-{i}" for i in range(3)]
    certify(ca, tls_dir, ids)
    fleet = h.tls_fleet("v13", 3, model_dict(minVersion="1.3"))
    h.start(fleet)
    h.running(fleet)
    tls = fleet.transport.tls
    contexts = {id(tls.for_device(d)) for d in fleet.devices}
    assert len(contexts) == 3  # one certificate each
    assert all(isinstance(d.conn.wire_socket, ssl.SSLSocket) for d in fleet.devices)
    assert {d.conn._sock.version() for d in fleet.devices} == {"TLSv1.3"}

    shared = h.fleet(
        "cafile-only",
        {**model_dict(), "connection": {**model_dict()["connection"], "tls": {"caFile": "certs/ca.pem"}}},
        3,
        options=FleetOptions(tls_dir=str(tls_dir)),
    )
    one = {id(shared.transport.tls.for_device(d)) for d in shared.devices}
    assert len(one) == 1


def test_a_stalled_handshake_does_not_block_the_loop_and_times_out_in_words(
    h: Harness, ca: CertificateAuthority, tls_dir: Path
) -> None:
    """A port that accepts TCP but never answers the TLS ClientHello: the other devices keep sending."""
    certify(ca, tls_dir, ["ok2-0", "stall-0"])
    good = h.tls_fleet("ok2", 1, model_dict(interval_ms=20))
    h.start(good)
    h.running(good)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        stalled = h.tls_fleet("stall", 1, port=port, connectTimeoutMs=1500)
        before = good.stats()["messagesSent"]
        t0 = time.monotonic()
        h.start(stalled)
        h.wait(lambda: stalled.devices[0].connect_failures >= 1, 10, "handshake timeout")
        elapsed = time.monotonic() - t0
        during = good.stats()["messagesSent"] - before
        error = stalled.devices[0].last_error  # before the listener closes: then the retries are reset
    assert elapsed >= 1.4
    assert during >= 0.5 * elapsed / 0.02  # the loop was not blocked by the handshake
    assert error == f"device 'stall-0': TLS handshake with broker 127.0.0.1:{port} did not finish within 1.5 s"


def test_tls_devices_come_back_after_a_broker_restart(h: Harness, ca: CertificateAuthority, tls_dir: Path) -> None:
    ids = [f"back-{i}" for i in range(5)]
    certify(ca, tls_dir, ids)
    fleet = h.tls_fleet("back", 5)
    h.start(fleet)
    h.running(fleet)
    h.broker.restart(down_for=0.5)
    h.wait(lambda: all_running(fleet) and all(d.reconnects >= 1 for d in fleet.devices), 20, "reconnect over TLS")
    sent = fleet.stats()["messagesSent"]
    time.sleep(0.5)
    assert fleet.stats()["messagesSent"] > sent


def test_client_tls_names_the_field_and_path_of_unusable_files(tmp_path: Path, ca: CertificateAuthority) -> None:
    from iotix.errors import ConfigurationError

    certify(ca, tmp_path, ["a", "b"])
    certs = tmp_path / "certs"
    with pytest.raises(ConfigurationError, match=r"connection\.tls\.keyFile '.*/nope\.key' does not exist"):
        client_tls(certs / "ca.pem", certs / "a.pem", certs / "nope.key")
    with pytest.raises(ConfigurationError, match="the key does not belong to the certificate"):
        client_tls(certs / "ca.pem", certs / "a.pem", certs / "b.key")
    tls = client_tls(certs / "ca.pem", certs / "a.pem", certs / "a.key")
    assert isinstance(tls, ClientTls) and tls.issuer == ca.common_name and tls.validity_problem() is None
