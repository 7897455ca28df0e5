"""A real MQTT broker on 127.0.0.1 for demos and tests: Mosquitto when installed, else the embedded amqtt.

Mosquitto runs with the configuration from INFRA.md (nothing dropped, QoS 2 intact) plus ``sys_interval 1``.
amqtt (pure Python, ``pip install robotframework-iotix[embedded]``) serves functional tests, not benchmarks.
A broker keeps its port across :meth:`MqttBroker.restart`, so clients can reconnect after an outage.

With ``tls=True`` the broker is Mosquitto with one TLS listener that requires a client certificate signed
by the CA kept in ``ca_dir`` (created there unless present, see :mod:`iotix.security.certs`; default: a
``ca`` folder in the broker's work directory) and takes the certificate's common name as the client's user
name. Its own files live in its work directory: a copy of the CA certificate, a server certificate for
``localhost`` and ``127.0.0.1`` (or ``server_names``), and a client certificate for test receivers (common
name ``iotix-receiver``).

Mosquitto started as root switches to the user ``mosquitto`` before it reads certificates, so these files
must be readable by that user: the work directory is world-readable (0755), the certificates 0644 and the
server key 0600 owned by ``mosquitto``. When there is no such user, or the work directory is not reachable
by other users (a parent directory without ``o+x``), the configuration says ``user root`` instead and
Mosquitto keeps running as root (it listens on 127.0.0.1 only).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import pwd
import shutil
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iotix.errors import ConfigurationError, IoTixError
from iotix.services.local_server import LocalServer
from iotix.services.process import LOCALHOST, ManagedProcess

__all__ = [
    "BROKER_KINDS",
    "DEFAULT_SERVER_NAMES",
    "INSTALL_HINT",
    "RECEIVER_COMMON_NAME",
    "MosquittoTls",
    "MqttBroker",
    "amqtt_command",
    "available_broker_kinds",
    "find_mosquitto",
    "start_local_broker",
]

BROKER_KINDS = ("mosquitto", "amqtt")
INSTALL_HINT = "install Mosquitto (`apt-get install mosquitto`) or `pip install robotframework-iotix[embedded]`"
_SBIN_PATH = os.pathsep.join(("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"))

_READY_PATTERNS = {
    "mosquitto": r"mosquitto version \S+ running",
    "amqtt": r"Listener 'default' bind to",
}
_FAILURE_PATTERNS = {
    "mosquitto": None,  # Mosquitto exits when it cannot start
    "amqtt": r"Broker startup failed|Broker failed to start|Broker instance can't be started",
}
_CONFIG_NAMES = {"mosquitto": "mosquitto.conf", "amqtt": "amqtt.yaml"}
#: Names in the local TLS broker's server certificate (DNS names and IP addresses).
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1")
#: Common name (and so the broker-side user name) of the client certificate for test receivers.
RECEIVER_COMMON_NAME = "iotix-receiver"
_MOSQUITTO_USER = "mosquitto"


@dataclass(frozen=True)
class MosquittoTls:
    """The files of a Mosquitto TLS listener, and whether Mosquitto must stay root to read them."""

    cafile: Path
    certfile: Path
    keyfile: Path
    run_as_root: bool = False


def find_mosquitto() -> str | None:
    """Path of the ``mosquitto`` executable (PATH, then the sbin directories), or None."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path=_SBIN_PATH)


def amqtt_command() -> list[str] | None:
    """Command that runs the amqtt broker of this Python environment, or None if amqtt is not installed.

    Uses the ``amqtt`` script next to ``sys.executable``, else ``python -m amqtt.scripts.broker_script``.
    """
    script = Path(sys.executable).with_name("amqtt")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    if importlib.util.find_spec("amqtt") is not None:
        return [sys.executable, "-m", "amqtt.scripts.broker_script"]
    return None


def available_broker_kinds() -> list[str]:
    """The broker kinds that can be started here, preferred first."""
    kinds = []
    if find_mosquitto():
        kinds.append("mosquitto")
    if amqtt_command():
        kinds.append("amqtt")
    return kinds


def mosquitto_config(port: int, host: str = LOCALHOST, tls: MosquittoTls | None = None) -> str:
    """Mosquitto configuration: the INFRA.md settings plus ``sys_interval 1``.

    With ``tls`` the listener speaks TLS 1.2 or newer only, requires a client certificate signed by
    ``tls.cafile`` and uses its common name as the user name (``use_identity_as_username``).
    """
    listener = [f"listener {port} {host}"]
    if tls is not None:
        listener += [
            f"cafile {tls.cafile}",
            f"certfile {tls.certfile}",
            f"keyfile {tls.keyfile}",
            "require_certificate true",
            "use_identity_as_username true",
            "tls_version tlsv1.2",
        ]
        if tls.run_as_root:
            listener.append("user root")
    return "\n".join(
        (
            *listener,
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
            "max_connections -1",
            "max_queued_messages 0",
            "max_inflight_messages 1000",
            "sys_interval 1",
            "",
        )
    )


def amqtt_config(port: int, host: str = LOCALHOST) -> str:
    """amqtt 0.12 configuration (JSON is YAML): one TCP listener, anonymous clients, $SYS every second."""
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            "amqtt.plugins.sys.broker.BrokerSysPlugin": {"sys_interval": 1},
        },
    }
    return json.dumps(config, indent=2) + "\n"


class MqttBroker(LocalServer):
    """A local MQTT broker process (``kind`` 'mosquitto' or 'amqtt') that can be stopped and restarted.

    ``port=0`` picks a free port at the first start; later starts reuse it. Configuration and log live in a
    new directory under ``workdir`` (default: the temp directory), readable by the ``mosquitto`` user that
    Mosquitto switches to when started as root.

    ``tls=True`` makes it a Mosquitto TLS listener for mutual TLS with the CA of ``ca_dir`` (see the module
    documentation); ``server_names`` are the DNS names and IP addresses of its server certificate.
    """

    NAME = "MQTT broker"
    LOG_NAME = "broker.log"
    DIR_MODE = 0o755

    def __init__(
        self,
        kind: str = "mosquitto",
        port: int = 0,
        workdir: str | os.PathLike[str] | None = None,
        *,
        host: str = LOCALHOST,
        startup_timeout: float = 15.0,
        tls: bool = False,
        ca_dir: str | os.PathLike[str] | None = None,
        server_names: Sequence[str] = DEFAULT_SERVER_NAMES,
    ) -> None:
        kind = kind.lower()
        if kind not in BROKER_KINDS:
            choices = ", ".join(BROKER_KINDS)
            raise ConfigurationError(f"Unknown MQTT broker kind {kind!r}: use one of {choices}.")
        if tls and kind != "mosquitto":
            raise ConfigurationError(f"A TLS broker needs Mosquitto; the {kind} broker does not do TLS here.")
        if tls and not server_names:
            raise ConfigurationError("A TLS broker needs at least one server name for its certificate.")
        super().__init__(port, workdir, host=host, startup_timeout=startup_timeout, tls=tls, ca_dir=ca_dir)
        self._kind = kind
        self.DIR_PREFIX = f"iotix-{kind}-"
        self._own_ca = ca_dir is None  # the CA lives in the work directory and goes with it
        self._server_names = tuple(server_names)
        self._tls: MosquittoTls | None = None
        self._receiver: tuple[Path, Path] | None = None  # a test client's certificate and key

    @property
    def kind(self) -> str:
        """'mosquitto' or 'amqtt'."""
        return self._kind

    @property
    def url(self) -> str:
        """``mqtt://host:port``, or ``mqtts://host:port`` for a TLS broker."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self._host}:{self._port}"

    @property
    def ca_cert(self) -> Path | None:
        """The CA certificate that signs the server and the clients (``<ca_dir>/ca.pem``), or None."""
        ca_dir = self.ca_dir
        return ca_dir / "ca.pem" if ca_dir is not None else None

    @property
    def receiver_cert(self) -> tuple[Path, Path] | None:
        """``(certificate, key)`` for a test client of a TLS broker (user name ``iotix-receiver``), or None.

        Created at the first start; removed with the work directory.
        """
        return self._receiver

    @property
    def config_path(self) -> Path:
        """The configuration file of the last start."""
        return self._directory() / _CONFIG_NAMES[self._kind]

    def info(self) -> dict[str, Any]:
        """``{'host', 'port', 'kind', 'url'}`` of this broker; a TLS broker adds ``tls`` (true), ``ca`` (the CA
        certificate), ``caDir``, and ``clientCert`` / ``clientKey`` (for a test receiver)."""
        info: dict[str, Any] = {"host": self._host, "port": self._port, "kind": self._kind, "url": self.url}
        if self._tls_on:
            info["tls"] = True
            info["ca"] = str(self.ca_cert)
            info["caDir"] = str(self.ca_dir)
            if self._receiver is not None:
                info["clientCert"], info["clientKey"] = (str(p) for p in self._receiver)
        return info

    def _prepare_tls(self) -> MosquittoTls:
        """The CA (created in ``ca_dir`` unless there), and in the work directory a copy of its
        certificate, the server certificate and key, and the receiver's certificate; once per broker."""
        if self._tls is not None:
            return self._tls
        from iotix.security.certs import create_server_certificate, load_or_create_ca

        assert self.ca_dir is not None
        directory = self._directory()
        ca = load_or_create_ca(self.ca_dir)
        cafile = directory / "ca.pem"
        cafile.write_bytes(ca.cert_pem)
        cafile.chmod(0o644)
        dns, ips = [], []
        for name in self._server_names:
            try:
                ipaddress.ip_address(name)
                ips.append(name)
            except ValueError:
                dns.append(name)
        server = create_server_certificate(ca, directory, dns_names=dns, ip_addresses=ips)
        receiver = ca.issue(RECEIVER_COMMON_NAME, directory / "receiver.pem", directory / "receiver.key")
        self._receiver = (receiver.cert, receiver.key)
        run_as_root = _key_for_mosquitto_user(server.key)
        self._tls = MosquittoTls(cafile, server.cert, server.key, run_as_root)
        return self._tls

    def _command(self) -> list[str]:
        if self._kind == "mosquitto":
            mosquitto = find_mosquitto()
            if mosquitto is None:
                raise IoTixError(f"Mosquitto is not installed: {INSTALL_HINT}.")
            return [mosquitto]
        command = amqtt_command()
        if command is None:
            raise IoTixError(f"The embedded amqtt broker is not installed: {INSTALL_HINT}.")
        return command

    def _make_process(self, port: int) -> ManagedProcess:
        command = self._command()
        config = self.config_path
        if self._kind == "mosquitto":
            tls = self._prepare_tls() if self._tls_on else None
            text = mosquitto_config(port, self._host, tls)
        else:
            text = amqtt_config(port, self._host)
        config.write_text(text, encoding="utf-8")
        config.chmod(0o644)
        return ManagedProcess(
            [*command, "-c", str(config)],
            port,
            host=self._host,
            name=f"{self._kind} MQTT broker",
            log_dir=config.parent,
            log_name=self.log_path.name,
            cwd=config.parent,
            ready_pattern=_READY_PATTERNS[self._kind],
            failure_pattern=_FAILURE_PATTERNS[self._kind],
            startup_timeout=self._startup_timeout,
        )

    def stop(self, timeout: float = 5.0, *, keep_files: bool = False) -> None:
        """Stop the broker; see :meth:`LocalServer.stop`. TLS files in a removed work directory are made
        again at the next start."""
        super().stop(timeout, keep_files=keep_files)
        if self._dir is None:
            self._tls = None
            self._receiver = None
            if self._own_ca:
                self._ca_dir = None

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<MqttBroker {self._kind} {self.url} {state}>"


def _key_for_mosquitto_user(key: Path) -> bool:
    """Give the server key to the user Mosquitto switches to when started as root; True when Mosquitto has to
    stay root instead (no such user, or the key's directory is not reachable by other users)."""
    if os.geteuid() != 0:
        return False  # Mosquitto runs as we do and reads our files
    try:
        user = pwd.getpwnam(_MOSQUITTO_USER)
    except KeyError:
        return True
    for parent in key.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            return True
    os.chown(key, user.pw_uid, user.pw_gid)  # still 0600: readable by mosquitto (and root) only
    return False


def start_local_broker(
    kind: str = "auto",
    port: int = 0,
    workdir: str | os.PathLike[str] | None = None,
    *,
    tls: bool = False,
    ca_dir: str | os.PathLike[str] | None = None,
    server_names: Sequence[str] = DEFAULT_SERVER_NAMES,
) -> MqttBroker:
    """Start a local MQTT broker and return it (running).

    ``kind='auto'`` tries Mosquitto when it is installed, then the embedded amqtt broker. ``port=0`` picks a
    free port. Raises :class:`~iotix.errors.IoTixError` with installation advice if no broker starts.
    ``tls=True`` starts a Mosquitto TLS broker for mutual TLS with the CA of ``ca_dir`` (see
    :class:`MqttBroker`); it needs Mosquitto.
    """
    kind = kind.lower()
    if tls:
        if kind not in ("auto", "mosquitto"):
            raise ConfigurationError(f"A TLS broker needs Mosquitto; kind {kind!r} does not do TLS here.")
        if find_mosquitto() is None:
            raise IoTixError(
                "A local TLS broker needs Mosquitto, which is not installed: `apt-get install mosquitto` "
                "(the embedded amqtt broker does not do TLS here)."
            )
        broker = MqttBroker("mosquitto", port, workdir, tls=True, ca_dir=ca_dir, server_names=server_names)
        return broker.start()
    if ca_dir is not None:
        raise ConfigurationError("ca_dir is the CA of a TLS broker: give tls=True too.")
    if kind == "auto":
        kinds = available_broker_kinds()
        if not kinds:
            raise IoTixError(f"No local MQTT broker is available: {INSTALL_HINT}.")
    else:
        kinds = [kind]
    failures: list[str] = []
    for candidate in kinds:
        broker = MqttBroker(candidate, port, workdir)
        try:
            return broker.start()
        except ConfigurationError:
            raise
        except IoTixError as error:
            failures.append(f"{candidate}: {error}")
    details = "\n\n".join(failures)
    raise IoTixError(f"Could not start a local MQTT broker; {INSTALL_HINT}.\n\n{details}")
