"""Kafka security: TLS and SASL settings turned into kafka-python's client settings.

A Kafka fleet's ``connection.tls`` (``caFile``, ``certFile``, ``keyFile``, ``minVersion``,
``verifyHostname``, as for MQTT; relative paths resolve in the fleet's ``tls_dir``, else the model file's
folder) and ``connection.sasl`` (``mechanism``: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``;
``username``; ``password``) become one :class:`KafkaSecurity`:

============  ============  ===================
``tls``       ``sasl``      ``security_protocol``
============  ============  ===================
no            no            ``PLAINTEXT``
yes           no            ``SSL``
no            yes           ``SASL_PLAINTEXT``
yes           yes           ``SASL_SSL``
============  ============  ===================

TLS goes to kafka-python as an ``ssl_context`` built by :func:`iotix.transport.tls.client_tls` (so
``minVersion`` and ``verifyHostname`` apply exactly as they do for MQTT and HTTP); SASL as
``sasl_mechanism``, ``sasl_plain_username`` and ``sasl_plain_password``. Create Fleet ``username=`` and
``password=`` (a Robot ``Secret``) override the model's; a login without ``connection.sasl`` is an error
(no mechanism), never ignored. The password is never in a repr, a log or a message.

The devices of a fleet share the pooled producers, so the TLS files may not differ per device
(``${deviceId}``, ``${index}``): that is refused.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iotix.errors import ConfigurationError
from iotix.transport.tls import ClientTls, FleetTls, client_tls, file_mtime

if TYPE_CHECKING:
    from iotix.transport.base import TransportSpec

__all__ = ["SASL_MECHANISMS", "KafkaSecurity", "client_security", "fleet_security"]

#: The SASL mechanisms IoTix offers for Kafka (kafka-python's names).
SASL_MECHANISMS: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class _Hidden(str):
    """The password as kafka-python needs it (a ``str``) whose repr hides it: kafka-python logs its whole
    configuration at DEBUG (``Starting KafkaAdminClient with configuration: {...}``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


@dataclass(frozen=True, eq=False)
class KafkaSecurity:
    """How a Kafka client connects: TLS (a context) and SASL (mechanism and login). No password in its repr."""

    tls: ClientTls | None = None
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def protocol(self) -> str:
        """kafka-python's ``security_protocol``: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
        if self.mechanism is None:
            return "SSL" if self.tls is not None else "PLAINTEXT"
        return "SASL_SSL" if self.tls is not None else "SASL_PLAINTEXT"

    @property
    def key(self) -> tuple[Any, ...]:
        """What tells two settings apart (producer pools are shared by equal settings); holds a digest of the
        password, never the password."""
        tls = self.tls
        tls_key: tuple[Any, ...] = ()
        if tls is not None:
            tls_key = (
                tls.ca,
                file_mtime(tls.ca),
                tls.cert,
                file_mtime(tls.cert),
                tls.min_version,
                tls.check_hostname,
            )
        digest = hashlib.sha256(self.password.encode()).hexdigest() if self.password is not None else None
        return (self.protocol, tls_key, self.mechanism, self.username, digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KafkaSecurity) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def client_config(self) -> dict[str, Any]:
        """The keyword arguments of a kafka-python client (producer, consumer, admin) for these settings."""
        config: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls is not None:
            config["ssl_context"] = self.tls.context
            config["ssl_check_hostname"] = self.tls.check_hostname
        if self.mechanism is not None:
            config["sasl_mechanism"] = self.mechanism
            config["sasl_plain_username"] = self.username
            config["sasl_plain_password"] = _Hidden(self.password) if self.password is not None else None
        return config

    def describe(self) -> str:
        """In words, for messages: ``TLS (CA ca.pem), SASL SCRAM-SHA-256 as 'alice'`` or ``plaintext``."""
        parts = []
        if self.tls is not None:
            what = f"CA {self.tls.ca}" if self.tls.ca else "the system's CAs"
            if self.tls.cert:
                what += f", client certificate {self.tls.cert}"
            parts.append(f"TLS ({what})")
        if self.mechanism is not None:
            parts.append(f"SASL {self.mechanism} as '{self.username}'")
        return ", ".join(parts) or "plaintext"

    def __repr__(self) -> str:
        return f"KafkaSecurity({self.describe()})"


def _check_mechanism(mechanism: Any, where: str) -> str:
    name = str(mechanism).upper()
    if name not in SASL_MECHANISMS:
        raise ConfigurationError(
            f"{where}: SASL mechanism must be one of {', '.join(SASL_MECHANISMS)}, got {str(mechanism)!r}"
        )
    return name


def fleet_security(spec: TransportSpec) -> KafkaSecurity:
    """A Kafka fleet's settings from ``connection.tls``, ``connection.sasl`` and the fleet's credentials.

    Raises :class:`ConfigurationError` naming the fleet and the key for every setting that cannot be used:
    a per-device TLS file, a missing file, an unknown mechanism, a login without ``sasl``, a ``sasl`` without
    user name or password.
    """
    where = f"Fleet '{spec.fleet}'"
    connection = spec.connection
    fleet_tls = FleetTls.of(spec)
    tls = fleet_tls.shared() if fleet_tls is not None else None
    sasl = connection.get("sasl")
    creds = spec.credentials
    if sasl is None:
        if creds.username or creds.password is not None:
            given = " and ".join(
                name for name, value in (("user name", creds.username), ("password", creds.password)) if value
            )
            raise ConfigurationError(
                f"{where}: a {given or 'password'} was given (Create Fleet username=/password=) but the model's "
                "connection has no sasl: set connection.sasl.mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) "
                "or leave the login out"
            )
        return KafkaSecurity(tls)
    if not isinstance(sasl, Mapping):
        raise ConfigurationError(f"{where}: connection.sasl must be an object, got {type(sasl).__name__}")
    mechanism = _check_mechanism(sasl.get("mechanism"), f"{where}: connection.sasl.mechanism")
    username = creds.username or sasl.get("username")
    password = creds.password if creds.password is not None else sasl.get("password")
    if not username:
        raise ConfigurationError(
            f"{where}: connection.sasl ({mechanism}) needs a user name: set connection.sasl.username or give "
            "Create Fleet username="
        )
    if password is None:
        raise ConfigurationError(
            f"{where}: connection.sasl ({mechanism}) needs a password: give Create Fleet password= (a Secret) "
            "or set connection.sasl.password"
        )
    return KafkaSecurity(tls, mechanism, str(username), str(password))


def client_security(
    *,
    tls: bool = False,
    ca_file: str | os.PathLike[str] | None = None,
    cert_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
    verify_hostname: bool = True,
    sasl_mechanism: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> KafkaSecurity:
    """The settings of a Kafka test client (``Connect To Kafka``): TLS when ``tls`` or any file is given."""
    use_tls = tls or any((ca_file, cert_file, key_file))
    context = (
        client_tls(ca_file or None, cert_file or None, key_file or None, verify_hostname=verify_hostname)
        if use_tls
        else None
    )
    if sasl_mechanism:
        mechanism = _check_mechanism(sasl_mechanism, "Kafka client")
        if not username or password is None:
            raise ConfigurationError(f"Kafka client: SASL {mechanism} needs a user name and a password")
        return KafkaSecurity(context, mechanism, username, password)
    if username or password is not None:
        raise ConfigurationError(
            "Kafka client: a user name or password was given without a SASL mechanism: give sasl_mechanism= "
            "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
        )
    return KafkaSecurity(context)
