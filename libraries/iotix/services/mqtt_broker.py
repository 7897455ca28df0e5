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
from pathlib import Path
from typing import Any

from iotix.errors import ConfigurationError, IoTixError
from iotix.services.local_server import LocalServer
from iotix.services.process import LOCALHOST, ManagedProcess

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


class MqttBroker(LocalServer):
    """A local MQTT broker process (``kind`` 'mosquitto' or 'amqtt') that can be stopped and restarted.

    ``port=0`` picks a free port at the first start; later starts reuse it. Configuration and log live in a
    new directory under ``workdir`` (default: the temp directory), readable by the ``mosquitto`` user that
    Mosquitto switches to when started as root.
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
    ) -> None:
        kind = kind.lower()
        if kind not in BROKER_KINDS:
            choices = ", ".join(BROKER_KINDS)
            raise ConfigurationError(f"Unknown MQTT broker kind {kind!r}: use one of {choices}.")
        super().__init__(port, workdir, host=host, startup_timeout=startup_timeout)
        self._kind = kind
        self.DIR_PREFIX = f"iotix-{kind}-"

    @property
    def kind(self) -> str:
        """'mosquitto' or 'amqtt'."""
        return self._kind

    @property
    def url(self) -> str:
        """``mqtt://host:port``."""
        return f"mqtt://{self._host}:{self._port}"

    @property
    def config_path(self) -> Path:
        """The configuration file of the last start."""
        return self._directory() / _CONFIG_NAMES[self._kind]

    def info(self) -> dict[str, Any]:
        """``{'host', 'port', 'kind', 'url'}`` of this broker."""
        return {"host": self._host, "port": self._port, "kind": self._kind, "url": self.url}

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
