"""The test CA and the certificates it signs (iotix.security.certs), ``iotix certs``, and the words of TLS errors."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iotix.cli import device_ids, main
from iotix.errors import ConfigurationError
from iotix.security import (
    CertificateAuthority,
    create_device_certificates,
    create_server_certificate,
    default_device_targets,
    device_targets,
    load_or_create_ca,
    validity_of,
)
from iotix.transport.tls import ClientTls, client_tls

NOW = dt.datetime.now(dt.UTC)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def common_name(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return load_or_create_ca(tmp_path / "ca")


# -------------------------------------------------------------------------------------------- the CA


def test_a_new_ca_is_a_self_signed_ca_with_a_private_key_file(tmp_path: Path) -> None:
    ca = load_or_create_ca(tmp_path / "ca", common_name="Unit CA")
    cert = load(tmp_path / "ca" / "ca.pem")
    assert ca.cert_path == tmp_path / "ca" / "ca.pem"
    assert common_name(cert.subject) == common_name(cert.issuer) == "Unit CA"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is True
    cert.verify_directly_issued_by(cert)
    assert mode(tmp_path / "ca" / "ca.key") == 0o600
    assert mode(tmp_path / "ca" / "ca.pem") == 0o644
    key = serialization.load_pem_private_key((tmp_path / "ca" / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.not_valid_after_utc - NOW > dt.timedelta(days=3000)
    assert "PRIVATE" not in repr(ca)


def test_an_existing_ca_is_reused_not_replaced(tmp_path: Path) -> None:
    first = load_or_create_ca(tmp_path)
    again = load_or_create_ca(tmp_path)
    assert again.cert.serial_number == first.cert.serial_number
    assert again.cert_pem == (tmp_path / "ca.pem").read_bytes()


def test_processes_creating_the_same_ca_at_once_get_one_ca(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        cas = list(pool.map(lambda _: load_or_create_ca(tmp_path / "shared"), range(8)))
    assert len({ca.cert.serial_number for ca in cas}) == 1


def test_half_a_ca_is_an_error_not_overwritten(tmp_path: Path) -> None:
    load_or_create_ca(tmp_path)
    (tmp_path / "ca.key").unlink()
    pem = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(ConfigurationError, match=r"has ca\.pem but no ca\.key"):
        load_or_create_ca(tmp_path)
    assert (tmp_path / "ca.pem").read_bytes() == pem


# -------------------------------------------------------------------------------- device certificates


def test_device_certificates_carry_the_device_id_and_are_signed_by_the_ca(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    ids = ["env-000", "env-001", "env-002"]
    made = dt.datetime.now(dt.UTC)  # not the module's NOW: the whole suite may run for minutes before this test
    count = create_device_certificates(
        ca, default_device_targets(tmp_path / "out", ids), ca_copy=tmp_path / "out/certs/ca.pem"
    )
    assert count == 3
    for device_id in ids:
        cert_path = tmp_path / "out" / "certs" / f"{device_id}.pem"
        key_path = tmp_path / "out" / "certs" / f"{device_id}.key"
        cert = load(cert_path)
        assert common_name(cert.subject) == device_id
        assert cert.issuer == ca.cert.subject
        cert.verify_directly_issued_by(ca.cert)
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert abs(cert.not_valid_after_utc - made - dt.timedelta(days=365)) < dt.timedelta(minutes=5)
        assert cert.not_valid_before_utc <= made
        assert mode(key_path) == 0o600 and mode(cert_path) == 0o644
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
        assert key.public_key() == cert.public_key()
    assert (tmp_path / "out/certs/ca.pem").read_bytes() == ca.cert_pem
    serials = {load(tmp_path / "out" / "certs" / f"{d}.pem").serial_number for d in ids}
    assert len(serials) == 3


def test_an_expired_certificate_ended_yesterday(tmp_path: Path, ca: CertificateAuthority) -> None:
    create_device_certificates(ca, default_device_targets(tmp_path, ["old"]), expired=True, days=30)
    not_before, not_after = validity_of(tmp_path / "certs/old.pem")
    assert dt.timedelta(hours=23) < NOW - not_after < dt.timedelta(hours=25)
    assert not_after - not_before == dt.timedelta(days=30)


def test_certificates_of_another_ca_do_not_verify_against_this_one(tmp_path: Path, ca: CertificateAuthority) -> None:
    other = load_or_create_ca(tmp_path / "other", common_name="Other CA")
    twin = load_or_create_ca(tmp_path / "twin")  # the same name as ``ca``, another key
    create_device_certificates(other, default_device_targets(tmp_path, ["alien"]))
    create_device_certificates(twin, default_device_targets(tmp_path, ["twin"]))
    alien, from_twin = load(tmp_path / "certs/alien.pem"), load(tmp_path / "certs/twin.pem")
    assert common_name(alien.issuer) == "Other CA"
    with pytest.raises(ValueError, match="does not match certificate issuer"):
        alien.verify_directly_issued_by(ca.cert)
    assert from_twin.issuer == ca.cert.subject
    with pytest.raises(InvalidSignature):
        from_twin.verify_directly_issued_by(ca.cert)


def test_a_rewritten_key_is_private_again(tmp_path: Path, ca: CertificateAuthority) -> None:
    targets = default_device_targets(tmp_path, ["d"])
    create_device_certificates(ca, targets)
    os.chmod(targets[0].key, 0o644)
    before = targets[0].key.read_bytes()
    create_device_certificates(ca, targets)
    assert mode(targets[0].key) == 0o600
    assert targets[0].key.read_bytes() != before  # a new key, not the old one


def test_device_targets_render_the_models_patterns(tmp_path: Path) -> None:
    devices = [{"deviceId": "gw-7", "index": 7, "modelId": "gw", "fleet": "plant"}]
    [target] = device_targets(
        tmp_path, devices, cert_pattern="${fleet}/${deviceId}/cert.pem", key_pattern="keys/${index}.key"
    )
    assert target.device_id == "gw-7"
    assert target.cert == tmp_path / "plant/gw-7/cert.pem"
    assert target.key == tmp_path / "keys/7.key"
    with pytest.raises(ConfigurationError, match="Device certificate path pattern"):
        device_targets(tmp_path, devices, cert_pattern="certs/${deviceId")


# ------------------------------------------------------------------------------------ server certificate


def test_server_certificate_names_localhost_and_the_loopback_address(tmp_path: Path, ca: CertificateAuthority) -> None:
    pair = create_server_certificate(ca, tmp_path)
    cert = load(pair.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    cert.verify_directly_issued_by(ca.cert)
    assert pair.key == tmp_path / "server.key" and mode(pair.key) == 0o600


def test_server_certificate_with_other_names_for_mismatch_tests(tmp_path: Path, ca: CertificateAuthority) -> None:
    pair = create_server_certificate(ca, tmp_path, dns_names=("mqtt.invalid",), ip_addresses=(), name="wrong")
    san = load(pair.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.invalid"]
    assert san.get_values_for_type(x509.IPAddress) == []
    with pytest.raises(ConfigurationError, match="at least one"):
        create_server_certificate(ca, tmp_path, dns_names=(), ip_addresses=())
    with pytest.raises(ConfigurationError, match="does not appear to be an IPv4 or IPv6 address"):
        create_server_certificate(ca, tmp_path, ip_addresses=("not-an-ip",))


def test_python_ssl_accepts_the_chain(tmp_path: Path, ca: CertificateAuthority) -> None:
    """The files load into ssl contexts of both sides (strict X.509 checks of OpenSSL included)."""
    server = create_server_certificate(ca, tmp_path)
    create_device_certificates(ca, default_device_targets(tmp_path, ["dev"]))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server.cert, server.key)
    tls = client_tls(ca.cert_path, tmp_path / "certs/dev.pem", tmp_path / "certs/dev.key")
    assert tls.issuer == ca.common_name and tls.validity_problem() is None
    assert tls.context.minimum_version is ssl.TLSVersion.TLSv1_2
    tls.context.verify_flags |= ssl.VERIFY_X509_STRICT
    assert len(tls.context.get_ca_certs()) == 1


# ---------------------------------------------------------------------------------------- iotix certs


def test_iotix_certs_writes_the_layout_of_the_secure_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        [
            "certs",
            "--ca-dir",
            str(tmp_path / "ca"),
            "--out",
            str(tmp_path / "out"),
            "-n",
            "3",
            "--id-pattern",
            "s-{index:02d}",
        ]
    )
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "out/certs").iterdir())
    assert names == ["ca.pem", "s-00.key", "s-00.pem", "s-01.key", "s-01.pem", "s-02.key", "s-02.pem"]
    out = capsys.readouterr().out
    assert "3 device certificates (s-00.pem .. s-02.pem)" in out
    assert "PRIVATE KEY" not in out


def test_iotix_certs_ids_expired_and_server(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["certs", "--ca-dir", str(tmp_path / "ca"), "--out", str(tmp_path), "--ids", "a, b", "--expired"]
    assert main([*args, "--server", "localhost", "--server", "127.0.0.1"]) == 0
    assert validity_of(tmp_path / "certs/a.pem")[1] < NOW
    assert (tmp_path / "server.pem").exists() and mode(tmp_path / "server.key") == 0o600
    assert (
        main(["certs", "--ca-dir", str(tmp_path / "ca"), "--out", str(tmp_path), "-n", "2", "--id-pattern", "x"]) == 1
    )
    assert "gives the same id twice" in capsys.readouterr().err
    assert main(["certs", "--ca-dir", str(tmp_path / "ca")]) == 2  # --count or --ids is required


def test_device_ids_follow_create_fleets_id_pattern() -> None:
    assert device_ids("env-{index:03d}", 2) == ["env-000", "env-001"]
    assert device_ids("dev-{n}", 2) == ["dev-1", "dev-2"]
    with pytest.raises(ConfigurationError, match="not usable"):
        device_ids("env-{idx}", 1)


# ------------------------------------------------------------------------------ TLS errors in words


def verification_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    err = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    err.verify_code, err.verify_message, err.reason = code, message, "CERTIFICATE_VERIFY_FAILED"
    return err


def alert(reason: str) -> ssl.SSLError:
    err = ssl.SSLError(1, f"[SSL: {reason}] alert")
    err.reason = reason
    return err


def some_tls(tmp_path: Path, ca: CertificateAuthority) -> ClientTls:
    create_device_certificates(ca, default_device_targets(tmp_path, ["dev"]))
    return client_tls(ca.cert_path, tmp_path / "certs/dev.pem", tmp_path / "certs/dev.key")


def test_explain_hostname_mismatch_says_which_name_was_expected(tmp_path: Path, ca: CertificateAuthority) -> None:
    tls = some_tls(tmp_path, ca)
    text = tls.explain(
        verification_error(62, "Hostname mismatch, certificate is not valid for 'broker.lan'."), "broker.lan"
    )
    assert text.startswith(
        "hostname mismatch: the broker's certificate is not valid for the expected name 'broker.lan'"
    )
    assert "verifyHostname" in text


def test_explain_unknown_ca_and_expired_server_certificate(tmp_path: Path, ca: CertificateAuthority) -> None:
    tls = some_tls(tmp_path, ca)
    text = tls.explain(verification_error(19, "self-signed certificate in certificate chain"), "h")
    assert text == (
        f"unknown CA: the broker's certificate is not signed by a CA of caFile '{ca.cert_path}' "
        "(self-signed certificate in certificate chain)"
    )
    assert tls.explain(verification_error(10, "certificate has expired"), "h").startswith(
        "the broker's certificate has expired"
    )


def test_explain_the_brokers_refusal_of_the_client_certificate(tmp_path: Path, ca: CertificateAuthority) -> None:
    tls = some_tls(tmp_path, ca)
    expired = tls.explain(alert("SSLV3_ALERT_CERTIFICATE_EXPIRED"), "h", after_handshake=True)
    assert expired.startswith(f"the broker refused the client certificate '{tmp_path / 'certs/dev.pem'}', issued by ")
    assert ": certificate expired (valid until " in expired
    unknown = tls.explain(alert("TLSV1_ALERT_UNKNOWN_CA"), "h", after_handshake=True)
    assert "unknown CA: it is not signed by a CA the broker trusts" in unknown
    closed = tls.explain(None, "h", after_handshake=True)
    assert (
        "closed the connection right after the TLS handshake" in closed and "refused the client certificate" in closed
    )
    no_cert = client_tls(ca.cert_path)
    assert "has no certFile" in no_cert.explain(alert("TLSV13_ALERT_CERTIFICATE_REQUIRED"), "h")
    assert "is this a plain MQTT port" in no_cert.explain(alert("WRONG_VERSION_NUMBER"), "h")


def test_validity_problem_of_an_expired_client_certificate(tmp_path: Path, ca: CertificateAuthority) -> None:
    create_device_certificates(ca, default_device_targets(tmp_path, ["old"]), expired=True)
    tls = client_tls(ca.cert_path, tmp_path / "certs/old.pem", tmp_path / "certs/old.key")
    problem = tls.validity_problem()
    assert problem is not None
    assert problem.startswith(
        f"the TLS client certificate '{tmp_path / 'certs/old.pem'}' (connection.tls.certFile) expired on "
    )
    assert tls.validity_problem(NOW - dt.timedelta(days=3)) is None
