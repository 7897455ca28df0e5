"""A real MQTT broker on 127.0.0.1 for demos and tests: Mosquitto when installed, else the embedded amqtt.

Mosquitto runs with the configuration from INFRA.md (nothing dropped, QoS 2 intact) plus ``sys_interval 1``.
amqtt (pure Python, ``pip install robotframework-iotix[embedded]``) serves functional tests, not benchmarks.
A broker keeps its port across :meth:`MqttBroker.restart`, so clients can reconnect after an outage.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from iotix.errors import ConfigurationError, IoTixError
from iotix.services.process import LOCALHOST, ManagedProcess, start_with_port_retry

__all__ = [
    "BROKER_KINDS",
    "INSTALL_HINT",
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


def mosquitto_config(port: int, host: str = LOCALHOST) -> str:
    """Mosquitto configuration: the INFRA.md settings plus ``sys_interval 1``."""
    return "\n".join(
        (
            f"listener {port} {host}",
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


class MqttBroker:
    """A local MQTT broker process (``kind`` 'mosquitto' or 'amqtt') that can be stopped and restarted.

    ``port=0`` picks a free port at the first start; later starts reuse it. Configuration and log live in a
    new directory under ``workdir`` (default: the temp directory), readable by the ``mosquitto`` user that
    Mosquitto switches to when started as root.
    """

    def __init__(
        self,
        kind: str = "mosquitto",
        port: int = 0,
        workdir: str | os.PathLike[str] | None = None,
        *,
        host: str = LOCALHOST,
        startup_timeout: float = 15.0,
    ) -> None:
        kind = kind.lower()
        if kind not in BROKER_KINDS:
            choices = ", ".join(BROKER_KINDS)
            raise ConfigurationError(f"Unknown MQTT broker kind {kind!r}: use one of {choices}.")
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"MQTT broker port must be 0..65535, got {port}.")
        self._kind = kind
        self._port = port
        self._host = host
        self._workdir = Path(workdir) if workdir is not None else None
        self._startup_timeout = startup_timeout
        self._dir: Path | None = None
        self._process: ManagedProcess | None = None

    # ---------------------------------------------------------------- properties

    @property
    def kind(self) -> str:
        """'mosquitto' or 'amqtt'."""
        return self._kind

    @property
    def host(self) -> str:
        """Address the broker listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The broker's port (0 until the first start when a free port is to be picked)."""
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://host:port``."""
        return f"mqtt://{self._host}:{self._port}"

    @property
    def log_path(self) -> Path:
        """The broker's log file (output of every start, appended)."""
        return self._directory() / "broker.log"

    @property
    def config_path(self) -> Path:
        """The configuration file of the last start."""
        return self._directory() / _CONFIG_NAMES[self._kind]

    @property
    def pid(self) -> int | None:
        """Process id of the last start, or None."""
        return self._process.pid if self._process is not None else None

    @property
    def is_running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.is_running

    def info(self) -> dict[str, Any]:
        """``{'host', 'port', 'kind', 'url'}`` of this broker."""
        return {"host": self._host, "port": self._port, "kind": self._kind, "url": self.url}

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> MqttBroker:
        """Start the broker (no-op if running) and wait until it accepts connections; return self.

        The first start with ``port=0`` retries with new free ports while the port is taken by someone else;
        a start on a known port retries that port a few times (it may still be in use briefly).
        """
        if self.is_running:
            return self
        command = self._command()
        self._process = start_with_port_retry(
            lambda port: self._make_process(command, port), self._port, host=self._host
        )
        self._port = self._process.port
        return self

    def stop(self, timeout: float = 5.0, *, keep_files: bool = False) -> None:
        """Stop the broker process (SIGTERM, then SIGKILL after ``timeout`` seconds). No-op if not running.

        Its temporary folder (config and log) is removed unless ``keep_files`` or a ``workdir`` was given.
        """
        if self._process is not None:
            self._process.stop(timeout=timeout)
        if not keep_files and self._workdir is None and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def restart(self, down_for: float = 0.0) -> MqttBroker:
        """Stop the broker, stay down ``down_for`` seconds, start it again on the same port; return self."""
        self.stop(keep_files=True)
        if down_for > 0:
            time.sleep(down_for)
        return self.start()

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

    def _make_process(self, command: list[str], port: int) -> ManagedProcess:
        config = self.config_path
        text = mosquitto_config if self._kind == "mosquitto" else amqtt_config
        config.write_text(text(port, self._host), encoding="utf-8")
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

    def _directory(self) -> Path:
        if self._dir is None:
            if self._workdir is not None:
                self._workdir.mkdir(parents=True, exist_ok=True)
            directory = Path(tempfile.mkdtemp(prefix=f"iotix-{self._kind}-", dir=self._workdir))
            directory.chmod(0o755)
            self._dir = directory
        return self._dir

    # ---------------------------------------------------------------- context manager, repr

    def __enter__(self) -> MqttBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<MqttBroker {self._kind} {self.url} {state}>"


def start_local_broker(kind: str = "auto", port: int = 0, workdir: str | os.PathLike[str] | None = None) -> MqttBroker:
    """Start a local MQTT broker and return it (running).

    ``kind='auto'`` tries Mosquitto when it is installed, then the embedded amqtt broker. ``port=0`` picks a
    free port. Raises :class:`~iotix.errors.IoTixError` with installation advice if no broker starts.
    """
    kind = kind.lower()
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
