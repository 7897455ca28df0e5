"""TLS for device connections: a model's ``connection.tls`` turned into one ``ssl.SSLContext`` per device.

``connection.tls`` has ``caFile``, ``certFile``, ``keyFile`` (paths; ``${deviceId}``, ``${index}``,
``${modelId}`` and ``${fleet}`` are replaced per device, e.g. ``certs/${deviceId}.pem``), ``minVersion``
(``"1.2"``, the default, or ``"1.3"``) and ``verifyHostname`` (default true). Relative paths resolve in the
fleet's ``tls_dir`` (Create Fleet ``tls_dir=``), else in the model file's folder, else the working folder.

- :class:`FleetTls` renders and resolves the paths of a fleet's devices, builds their contexts (identical
  ones are shared: a fleet that only sets ``caFile`` has a single context), checks that a device
  certificate is valid now before it is used, and reports a missing file naming the fleet, the device, the
  field and the path.
- :class:`ClientTls` is what one connection needs: the context, plus the files it came from so that a failed
  handshake can be explained in words (:meth:`ClientTls.explain`): expired certificate, unknown CA,
  host name mismatch, client certificate refused by the broker.
- :func:`tls_handshake` does the handshake without blocking, on the running asyncio loop.

``verifyHostname: false`` still verifies the broker's certificate against the CA; it skips the host name
check only, and the fleet logs a warning once (logger ``iotix.transport.tls``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iotix.behavior import Template, TemplateError, compile_template
from iotix.errors import ConfigurationError
from iotix.transport.base import TransportError

if TYPE_CHECKING:
    from iotix.transport.base import Link, TransportSpec

__all__ = [
    "TLS_FILE_FIELDS",
    "TLS_VARIABLES",
    "ClientTls",
    "FleetTls",
    "TlsPaths",
    "client_tls",
    "fleet_tls_context",
    "tls_handshake",
]

log = logging.getLogger("iotix.transport.tls")

#: The ``${...}`` variables the file paths of ``connection.tls`` may use.
TLS_VARIABLES: tuple[str, ...] = ("deviceId", "index", "modelId", "fleet")
#: The keys of ``connection.tls`` that name files.
TLS_FILE_FIELDS: tuple[str, ...] = ("caFile", "certFile", "keyFile")
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_TIME = "%Y-%m-%d %H:%M:%S UTC"

# OpenSSL verification codes (X509_V_ERR_*) of the broker's certificate.
_V_NOT_YET_VALID = 9
_V_EXPIRED = 10
_V_UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21})  # no issuer / self-signed / not in caFile
_V_NAME_MISMATCH = frozenset({62, 64})  # host name, IP address
# TLS alerts sent by the broker about our client certificate (ssl.SSLError.reason), in words.
_CLIENT_CERT_ALERTS = {
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "certificate expired",
    "TLSV1_ALERT_UNKNOWN_CA": "unknown CA: it is not signed by a CA the broker trusts",
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate not accepted",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "unsupported certificate",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "certificate revoked",
    "TLSV1_ALERT_ACCESS_DENIED": "access denied",
    "TLSV1_ALERT_DECRYPT_ERROR": "the certificate's signature did not verify",
}
_NO_CERT_ALERTS = frozenset({"TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE"})
_VERSION_ALERTS = frozenset({"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE"})


def _utc(t: dt.datetime) -> str:
    return t.strftime(_TIME)


@dataclass(frozen=True)
class TlsPaths:
    """The files of one device's TLS connection, resolved (None: not configured)."""

    ca: Path | None
    cert: Path | None
    key: Path | None


@dataclass(frozen=True)
class ClientTls:
    """One client's TLS settings: the context and, for error messages, where its files are."""

    context: ssl.SSLContext
    ca: Path | None = None
    cert: Path | None = None
    issuer: str | None = None  # the client certificate's issuer (common name)
    not_before: dt.datetime | None = None  # the client certificate's validity (UTC)
    not_after: dt.datetime | None = None
    min_version: str = "1.2"

    @property
    def check_hostname(self) -> bool:
        """Whether the broker's certificate must match the host name dialled."""
        return self.context.check_hostname

    def validity_problem(self, now: dt.datetime | None = None) -> str | None:
        """Why the client certificate cannot be used now (expired, not yet valid), or None."""
        if self.cert is None or self.not_after is None or self.not_before is None:
            return None
        now = now or dt.datetime.now(dt.UTC)
        if now >= self.not_after:
            return (
                f"the TLS client certificate '{self.cert}' (connection.tls.certFile) expired on "
                f"{_utc(self.not_after)} (valid from {_utc(self.not_before)}); the broker would refuse it"
            )
        if now < self.not_before:
            return (
                f"the TLS client certificate '{self.cert}' (connection.tls.certFile) is not valid before "
                f"{_utc(self.not_before)}; the broker would refuse it"
            )
        return None

    def _client_cert(self) -> str:
        issuer = f", issued by '{self.issuer}'" if self.issuer else ""
        return f"'{self.cert}'{issuer}"

    def _ca_source(self) -> str:
        return f"caFile '{self.ca}'" if self.ca is not None else "the system's trusted CAs (no caFile)"

    def explain(self, err: BaseException | None, host: str, *, after_handshake: bool = False) -> str:
        """Why a TLS connection to ``host`` failed, in words, from the exception it failed with.

        ``err`` None or an end of stream means the broker closed the connection without an alert; with
        ``after_handshake`` that happened after the handshake, before CONNACK (with TLS 1.3 a broker checks
        the client certificate only then).
        """
        if isinstance(err, ssl.SSLCertVerificationError):
            return self._explain_verification(err, host)
        reason = getattr(err, "reason", None) or ""
        if isinstance(err, ssl.SSLError) and reason in _CLIENT_CERT_ALERTS:
            words = _CLIENT_CERT_ALERTS[reason]
            if reason == "SSLV3_ALERT_CERTIFICATE_EXPIRED" and self.not_after is not None:
                words += f" (valid until {_utc(self.not_after)})"
            what = f"the client certificate {self._client_cert()}" if self.cert else "the connection"
            return f"the broker refused {what}: {words} (TLS alert {reason})"
        if isinstance(err, ssl.SSLError) and reason in _NO_CERT_ALERTS and self.cert is None:
            return f"the broker requires a client certificate and connection.tls has no certFile (TLS alert {reason})"
        if isinstance(err, ssl.SSLError) and reason in _VERSION_ALERTS:
            return f"the broker and the device have no TLS version in common (minVersion {self.min_version}; {reason})"
        if isinstance(err, ssl.SSLError) and reason == "WRONG_VERSION_NUMBER":
            return "the broker did not answer with TLS: is this a plain MQTT port?"
        closed = err is None or isinstance(
            err, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError, EOFError)
        )
        if closed and after_handshake:
            when = "right after the TLS handshake, before answering CONNECT"
            if self.cert is not None:
                return (
                    f"the broker closed the connection {when}: it refused the client certificate "
                    f"{self._client_cert()} (most likely an unknown CA: not one the broker trusts)"
                )
            return (
                f"the broker closed the connection {when}: it probably requires a client certificate, and "
                "connection.tls has no certFile"
            )
        if closed:
            refused = f" If it is, it refused the client certificate {self._client_cert()}." if self.cert else ""
            return f"the broker closed the connection during the TLS handshake: is this a TLS port?{refused}"
        if isinstance(err, ssl.SSLError):
            return f"TLS error {reason or err}"
        return str(err) if err is not None else "connection closed"

    def _explain_verification(self, err: ssl.SSLCertVerificationError, host: str) -> str:
        code, message = err.verify_code, (err.verify_message or str(err)).rstrip(".")
        if code in _V_NAME_MISMATCH:
            return (
                f"hostname mismatch: the broker's certificate is not valid for the expected name '{host}' "
                f"({message}); connect to a name the certificate has, or set connection.tls.verifyHostname to "
                "false to skip this check"
            )
        if code == _V_EXPIRED:
            return f"the broker's certificate has expired ({message})"
        if code == _V_NOT_YET_VALID:
            return f"the broker's certificate is not valid yet ({message})"
        if code in _V_UNKNOWN_ISSUER:
            return f"unknown CA: the broker's certificate is not signed by a CA of {self._ca_source()} ({message})"
        return f"the broker's certificate was not accepted ({message})"


def _read_client_cert(path: Path) -> tuple[str | None, dt.datetime, dt.datetime]:
    """Issuer common name and validity of the first certificate in ``path``."""
    from cryptography import x509  # imported when first needed: it takes ~40 ms

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as err:
        raise ConfigurationError(f"'{path}' is not a PEM certificate ({err})") from None
    names = cert.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    issuer = str(names[0].value) if names else cert.issuer.rfc4514_string()
    return issuer, cert.not_valid_before_utc, cert.not_valid_after_utc


def client_tls(
    ca_file: str | os.PathLike[str] | None = None,
    cert_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
    *,
    min_version: str = "1.2",
    verify_hostname: bool = True,
) -> ClientTls:
    """A client's TLS settings from files: trust ``ca_file`` (default: the system's CAs), present
    ``cert_file``/``key_file`` when given, require TLS ``min_version`` or newer.

    Raises :class:`ConfigurationError` naming the field and the path when a file is missing or unusable.
    """
    if min_version not in _VERSIONS:
        raise ConfigurationError(f'connection.tls.minVersion must be "1.2" or "1.3", got {min_version!r}')
    paths = {
        "caFile": Path(ca_file) if ca_file else None,
        "certFile": Path(cert_file) if cert_file else None,
        "keyFile": Path(key_file) if key_file else None,
    }
    if paths["keyFile"] is not None and paths["certFile"] is None:
        raise ConfigurationError(f"connection.tls.keyFile '{paths['keyFile']}' is given without a certFile")
    for field, path in paths.items():
        if path is not None and not path.is_file():
            raise ConfigurationError(f"connection.tls.{field} '{path}' does not exist")
    ca, cert, key = paths["caFile"], paths["certFile"], paths["keyFile"]
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
    except (ssl.SSLError, OSError) as err:
        raise ConfigurationError(f"connection.tls.caFile '{ca}' cannot be used: {_ssl_reason(err)}") from None
    context.minimum_version = _VERSIONS[min_version]
    context.check_hostname = verify_hostname  # verification against the CA stays on either way
    issuer = not_before = not_after = None
    if cert is not None:
        try:
            context.load_cert_chain(str(cert), str(key) if key else None)
        except (ssl.SSLError, OSError) as err:
            files = f"certFile '{cert}'" + (f" and keyFile '{key}'" if key else "")
            raise ConfigurationError(f"connection.tls.{files} cannot be used: {_ssl_reason(err)}") from None
        issuer, not_before, not_after = _read_client_cert(cert)
    return ClientTls(context, ca, cert, issuer, not_before, not_after, min_version)


def _ssl_reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None)
    if reason == "KEY_VALUES_MISMATCH":
        return "the key does not belong to the certificate"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(reason or err)


class FleetTls:
    """The TLS settings of one fleet's devices (``fleet.connection['tls']``), per device, cached.

    Build it with :meth:`of` (None when the connection has no ``tls``). Runs on the runtime loop.
    """

    def __init__(self, spec: TransportSpec, settings: Mapping[str, Any]) -> None:
        self.spec = spec
        self.fleet = spec.fleet  # the fleet's name, for messages
        self.settings = dict(settings)
        self.min_version = str(settings.get("minVersion", "1.2"))
        if self.min_version not in _VERSIONS:
            raise ConfigurationError(
                f'Fleet \'{self.fleet}\': connection.tls.minVersion must be "1.2" or "1.3", got {self.min_version!r}'
            )
        self.verify_hostname = settings.get("verifyHostname", True) is not False
        self.base_dir = self._base_dir(spec)
        self._patterns: dict[str, Template] = {}
        for field in TLS_FILE_FIELDS:
            value = settings.get(field)
            if value:
                try:
                    self._patterns[field] = compile_template(str(value), TLS_VARIABLES)
                except TemplateError as err:
                    raise ConfigurationError(f"Fleet '{self.fleet}': connection.tls.{field}: {err}") from None
        self._cache: dict[tuple[Any, ...], ClientTls] = {}
        if not self.verify_hostname:
            log.warning(
                "fleet %s: connection.tls.verifyHostname is false: the broker's certificate is checked against the "
                "CA but not against the host name %r",
                self.fleet,
                spec.connection.get("host") or spec.connection.get("broker") or "localhost",
            )

    @classmethod
    def of(cls, spec: TransportSpec) -> FleetTls | None:
        """The fleet's TLS settings, or None when its connection has no ``tls``."""
        settings = spec.connection.get("tls")
        if settings is None or settings is False:
            return None
        if not isinstance(settings, Mapping):
            raise ConfigurationError(f"Fleet '{spec.fleet}': connection.tls must be an object, got {settings!r}")
        return cls(spec, settings)

    @staticmethod
    def _base_dir(spec: TransportSpec) -> Path:
        if spec.tls_dir:
            return Path(spec.tls_dir).absolute()
        source = spec.model.source
        return Path(source).absolute().parent if source is not None else Path.cwd()

    @property
    def per_device(self) -> bool:
        """Whether the file paths differ between devices (they use ``${deviceId}`` or ``${index}``)."""
        return any(t.names & {"deviceId", "index"} for t in self._patterns.values())

    def pattern(self, field: str) -> str | None:
        """The configured value of ``caFile``, ``certFile`` or ``keyFile`` (unrendered)."""
        t = self._patterns.get(field)
        return str(t.template) if t is not None else None

    def resolve(self, variables: Mapping[str, Any]) -> TlsPaths:
        """The files for a device with these ``${...}`` variables, absolute (relative ones in ``base_dir``)."""
        out: dict[str, Path | None] = {}
        for field in TLS_FILE_FIELDS:
            t = self._patterns.get(field)
            out[field] = self.base_dir / t.render_text(variables) if t is not None else None
        return TlsPaths(out["caFile"], out["certFile"], out["keyFile"])

    def fleet_path(self, field: str) -> Path | None:
        """The resolved path of ``field`` when it is the same for every device of the fleet, else None."""
        t = self._patterns.get(field)
        if t is None or t.names & {"deviceId", "index"}:
            return None
        return self.base_dir / t.render_text({"modelId": self.spec.model.id, "fleet": self.fleet})

    def paths_for(self, link: Link) -> TlsPaths:
        """The files of the device ``link``."""
        return self.resolve(link.variables())

    def for_device(self, link: Link) -> ClientTls:
        """The device's TLS settings; shared with every device that has the same files.

        Raises :class:`TransportError` naming the fleet, the field and the path when a file is missing or
        unusable, and when the device certificate is expired or not valid yet (checked at every call).
        """
        paths = self.paths_for(link)
        key = (paths, *(file_mtime(p) for p in (paths.ca, paths.cert, paths.key)))
        tls = self._cache.get(key)
        if tls is None:
            tls = self._build(paths)
            self._cache[key] = tls
        problem = tls.validity_problem()
        if problem is not None:
            raise TransportError(f"{problem} (fleet '{self.fleet}')")
        return tls

    def shared(self) -> ClientTls:
        """The one TLS setting of a fleet whose devices share one connection pool (HTTP).

        Raises :class:`ConfigurationError` when the paths use per-device variables or a file is unusable.
        """
        if self.per_device:
            fields = ", ".join(f for f, t in self._patterns.items() if t.names & {"deviceId", "index"})
            raise ConfigurationError(
                f"Fleet '{self.fleet}': connection.tls.{fields} uses ${{deviceId}} or ${{index}}, but the "
                f"devices of a {self.spec.protocol} fleet share one TLS setting"
            )
        try:
            return self._build(self.resolve({"modelId": self.spec.model.id, "fleet": self.fleet}))
        except TransportError as err:
            raise ConfigurationError(str(err)) from None

    def _build(self, paths: TlsPaths) -> ClientTls:
        for field, path in zip(TLS_FILE_FIELDS, (paths.ca, paths.cert, paths.key), strict=True):
            if path is not None and not path.is_file():
                raise TransportError(
                    f"connection.tls.{field} '{path}' of fleet '{self.fleet}' does not exist{self._origin(field)}"
                )
        try:
            return client_tls(
                paths.ca,
                paths.cert,
                paths.key,
                min_version=self.min_version,
                verify_hostname=self.verify_hostname,
            )
        except ConfigurationError as err:
            raise TransportError(f"{err} (fleet '{self.fleet}')") from None

    def _origin(self, field: str) -> str:
        pattern = self.pattern(field)
        if pattern is None or Path(pattern).is_absolute():
            return ""
        return f" (pattern '{pattern}' in tls_dir '{self.base_dir}')"


def file_mtime(path: Path | None) -> int:
    """``st_mtime_ns`` of ``path`` (0: no path, -1: unreadable): part of a cache key that changes with the file."""
    if path is None:
        return 0
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def fleet_tls_context(spec: TransportSpec) -> ssl.SSLContext | None:
    """The one SSL context of a fleet whose devices share a connection pool (HTTP), or None without ``tls``.

    Relative paths resolve like those of every fleet (``tls_dir``, else the model's folder); per-device
    paths and missing files are a :class:`ConfigurationError` naming the fleet, the field and the path.
    """
    tls = FleetTls.of(spec)
    return tls.shared().context if tls is not None else None


async def _ready(loop: asyncio.AbstractEventLoop, sock: socket.socket, *, write: bool) -> None:
    """Wait until ``sock`` is readable (or writable)."""
    fut: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await fut
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def tls_handshake(context: ssl.SSLContext, sock: socket.socket, server_hostname: str) -> ssl.SSLSocket:
    """Wrap the connected, non-blocking ``sock`` and do the TLS handshake without blocking the loop.

    Returns the non-blocking :class:`ssl.SSLSocket` (``sock`` is detached into it). Raises what the
    handshake raised (``ssl.SSLError``, ``OSError``), after closing the socket. Bound it with a timeout.
    """
    loop = asyncio.get_running_loop()
    tls_sock = context.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=False)
    try:
        while True:
            try:
                tls_sock.do_handshake()
                return tls_sock
            except ssl.SSLWantReadError:
                await _ready(loop, tls_sock, write=False)
            except ssl.SSLWantWriteError:
                await _ready(loop, tls_sock, write=True)
    except BaseException:
        tls_sock.close()
        raise
