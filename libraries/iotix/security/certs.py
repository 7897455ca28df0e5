"""A test certificate authority and the certificates it signs, for MQTT over mutual TLS.

Layout (every path relative to a directory the caller chooses):

- the CA directory (``ca_dir``): ``ca.pem`` (the CA certificate) and ``ca.key`` (its private key, mode
  0600). :func:`load_or_create_ca` creates both unless they are there, so one CA serves every run that
  points at the same directory (a lock file keeps two processes from creating two CAs at once);
- device certificates (:func:`create_device_certificates`): by default ``certs/<deviceId>.pem`` and
  ``certs/<deviceId>.key`` (mode 0600) plus a copy of the CA certificate in ``certs/ca.pem``, under an
  output directory. That is what the patterns of a model's ``connection.tls`` (``certs/${deviceId}.pem``,
  ``certs/${deviceId}.key``, ``certs/ca.pem``) find when the fleet's ``tls_dir`` is that output directory;
- a server certificate (:func:`create_server_certificate`): ``<name>.pem`` and ``<name>.key``, for
  ``localhost`` and ``127.0.0.1`` unless other names are given.

Every key is EC P-256 (ECDSA with SHA-256): a key pair and a signature take well under a millisecond, so
thousands of device certificates are made in seconds. A device certificate's subject common name is the
device id; the CA and brokers that use ``use_identity_as_username`` see that id as the user name.

These certificates are for tests: the keys are written unencrypted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iotix.behavior import TemplateError, compile_template
from iotix.errors import ConfigurationError

__all__ = [
    "CA_CERT_NAME",
    "CA_KEY_NAME",
    "DEFAULT_CA_COPY",
    "DEFAULT_CERT_PATTERN",
    "DEFAULT_KEY_PATTERN",
    "CertPair",
    "CertificateAuthority",
    "DeviceCertTarget",
    "create_device_certificates",
    "create_server_certificate",
    "default_device_targets",
    "device_targets",
    "load_or_create_ca",
    "validity_of",
]

CA_CERT_NAME = "ca.pem"
CA_KEY_NAME = "ca.key"
_LOCK_NAME = ".ca.lock"
#: Where device certificates, their keys and the CA copy go under an output directory by default; the
#: same patterns as the shipped model ``secure-env-sensor`` (``${deviceId}`` is the device id).
DEFAULT_CERT_PATTERN = "certs/${deviceId}.pem"
DEFAULT_KEY_PATTERN = "certs/${deviceId}.key"
DEFAULT_CA_COPY = "certs/ca.pem"

KEY_MODE = 0o600
CERT_MODE = 0o644
#: A new certificate is valid from a little before now, so a peer whose clock is slightly behind accepts it.
CLOCK_SKEW = dt.timedelta(minutes=5)
DEFAULT_CA_DAYS = 3650
DEFAULT_SERVER_DAYS = 825
DEFAULT_DEVICE_DAYS = 365


@dataclass(frozen=True)
class CertPair:
    """Paths of a certificate (PEM) and its private key (PEM, PKCS#8, unencrypted)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class DeviceCertTarget:
    """Where the certificate (common name ``device_id``) and the key of one device are written."""

    device_id: str
    cert: Path
    key: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with permissions ``mode`` from the start (also when the file exists)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # an existing file keeps its old mode through O_CREAT
        os.write(fd, data)
    finally:
        os.close(fd)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (its lock file) against other processes."""
    fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class CertificateAuthority:
    """A CA certificate and its key, kept in ``directory`` (``ca.pem``, ``ca.key``); signs certificates.

    Get one with :func:`load_or_create_ca`.
    """

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, directory: Path) -> None:
        self.cert = cert
        self._key = key
        self.directory = directory
        self._cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self._ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())

    def __repr__(self) -> str:  # never the key
        return f"<CertificateAuthority {self.common_name!r} in {self.directory}>"

    @property
    def common_name(self) -> str:
        """The CA's subject common name."""
        names = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else self.cert.subject.rfc4514_string()

    @property
    def cert_path(self) -> Path:
        """``<directory>/ca.pem``: what clients and brokers use as their CA file."""
        return self.directory / CA_CERT_NAME

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate, PEM."""
        return self._cert_pem

    def sign(
        self,
        common_name: str,
        public_key: ec.EllipticCurvePublicKey,
        *,
        usage: x509.ObjectIdentifier,
        not_before: dt.datetime,
        not_after: dt.datetime,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
    ) -> x509.Certificate:
        """An end-entity certificate for ``public_key`` (extended key usage ``usage``: client or server)."""
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski), critical=False)
        )
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self._key, hashes.SHA256())

    def issue(
        self,
        common_name: str,
        cert_path: Path,
        key_path: Path,
        *,
        usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
        days: int = DEFAULT_DEVICE_DAYS,
        expired: bool = False,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
    ) -> CertPair:
        """Make a new key and a certificate for ``common_name`` and write both (the key with mode 0600).

        ``expired=True`` makes a certificate whose validity ended a day ago (it began ``days`` before that).
        """
        now = _now()
        if expired:
            not_after = now - dt.timedelta(days=1)
            not_before = not_after - dt.timedelta(days=max(1, days))
        else:
            not_before, not_after = now - CLOCK_SKEW, now + dt.timedelta(days=days)
        key = _new_key()
        cert = self.sign(
            common_name,
            key.public_key(),
            usage=usage,
            not_before=not_before,
            not_after=not_after,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
        )
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        key_path.parent.mkdir(parents=True, exist_ok=True)
        _write(key_path, _key_pem(key), KEY_MODE)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)
        return CertPair(cert_path, key_path)


def _new_ca(common_name: str, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    now = _now()
    name = _name(common_name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Digital signature for every certificate; a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _load_ca(directory: Path) -> CertificateAuthority:
    cert_path, key_path = directory / CA_CERT_NAME, directory / CA_KEY_NAME
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise ConfigurationError(
            f"The CA in '{directory}' cannot be read ({CA_CERT_NAME}, {CA_KEY_NAME}): {err}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise ConfigurationError(f"The CA in '{directory}': {CA_KEY_NAME} is not the EC private key of {CA_CERT_NAME}.")
    if cert.not_valid_after_utc <= _now():
        raise ConfigurationError(
            f"The CA certificate '{cert_path}' expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC; "
            "delete ca.pem and ca.key to make a new CA."
        )
    return CertificateAuthority(cert, key, directory)


def load_or_create_ca(
    ca_dir: str | os.PathLike[str], *, common_name: str = "IoTix Test CA", days: int = DEFAULT_CA_DAYS
) -> CertificateAuthority:
    """The CA kept in ``ca_dir`` (``ca.pem``, ``ca.key``), created there first unless both files exist.

    The directory is created if needed. One of the two files without the other is an error rather than
    a reason to overwrite it. Safe against other processes doing the same at the same time.
    """
    directory = Path(ca_dir).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / CA_CERT_NAME, directory / CA_KEY_NAME
    with _locked(directory):
        present = [p.name for p in (cert_path, key_path) if p.exists()]
        if len(present) == 2:
            return _load_ca(directory)
        if present:
            missing = CA_KEY_NAME if present == [CA_CERT_NAME] else CA_CERT_NAME
            raise ConfigurationError(
                f"The CA directory '{directory}' has {present[0]} but no {missing}: restore it, or delete "
                f"{present[0]} to make a new CA."
            )
        cert, key = _new_ca(common_name, days)
        _write(key_path, _key_pem(key), KEY_MODE)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)
        return CertificateAuthority(cert, key, directory)


def create_server_certificate(
    ca: CertificateAuthority,
    out_dir: str | os.PathLike[str],
    *,
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    name: str = "server",
    days: int = DEFAULT_SERVER_DAYS,
) -> CertPair:
    """A server certificate signed by ``ca`` in ``out_dir/<name>.pem`` and ``out_dir/<name>.key``.

    Its subject alternative names are ``dns_names`` and ``ip_addresses`` (by default ``localhost`` and
    ``127.0.0.1``); give other names to make a certificate that does not match the host a client dials.
    """
    if not dns_names and not ip_addresses:
        raise ConfigurationError("A server certificate needs at least one DNS name or IP address.")
    try:
        for address in ip_addresses:
            ipaddress.ip_address(address)
    except ValueError as err:
        raise ConfigurationError(f"Server certificate: {err}.") from None
    directory = Path(out_dir)
    common_name = dns_names[0] if dns_names else ip_addresses[0]
    return ca.issue(
        common_name,
        directory / f"{name}.pem",
        directory / f"{name}.key",
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        days=days,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
    )


def device_targets(
    out_dir: str | os.PathLike[str],
    devices: Iterable[Mapping[str, Any]],
    *,
    cert_pattern: str = DEFAULT_CERT_PATTERN,
    key_pattern: str = DEFAULT_KEY_PATTERN,
) -> list[DeviceCertTarget]:
    """Where each device's certificate and key go: the patterns rendered with the device's variables.

    Each item of ``devices`` holds the ``${...}`` variables of one device (at least ``deviceId``; a
    fleet's devices also have ``index``, ``modelId`` and ``fleet``). Relative results are under ``out_dir``.
    """
    base = Path(out_dir)
    try:
        cert_t, key_t = compile_template(cert_pattern), compile_template(key_pattern)
    except TemplateError as err:
        raise ConfigurationError(f"Device certificate path pattern: {err}") from None
    targets = []
    for variables in devices:
        device_id = str(variables["deviceId"])
        targets.append(
            DeviceCertTarget(device_id, base / cert_t.render_text(variables), base / key_t.render_text(variables))
        )
    return targets


def default_device_targets(out_dir: str | os.PathLike[str], device_ids: Iterable[str]) -> list[DeviceCertTarget]:
    """``out_dir/certs/<id>.pem`` and ``out_dir/certs/<id>.key`` for each device id (the default layout)."""
    return device_targets(out_dir, ({"deviceId": d} for d in device_ids))


def create_device_certificates(
    ca: CertificateAuthority,
    targets: Iterable[DeviceCertTarget],
    *,
    days: int = DEFAULT_DEVICE_DAYS,
    expired: bool = False,
    ca_copy: str | os.PathLike[str] | None = None,
) -> int:
    """Sign one client certificate per target (common name = the device id, a new EC P-256 key each).

    Writes ``target.cert`` (mode 0644) and ``target.key`` (mode 0600), creating folders as needed, and a
    copy of the CA certificate to ``ca_copy`` when given. ``expired=True`` makes certificates that expired
    a day ago (for tests of refused devices). Returns how many certificates were written.
    """
    count = 0
    for target in targets:
        ca.issue(target.device_id, target.cert, target.key, days=days, expired=expired)
        count += 1
    if ca_copy is not None:
        copy = Path(ca_copy)
        copy.parent.mkdir(parents=True, exist_ok=True)
        _write(copy, ca.cert_pem, CERT_MODE)
    return count


def validity_of(cert_path: str | os.PathLike[str]) -> tuple[dt.datetime, dt.datetime]:
    """``(not_before, not_after)`` (UTC) of the first certificate in a PEM file."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    return cert.not_valid_before_utc, cert.not_valid_after_utc
