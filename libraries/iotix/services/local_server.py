"""What every local server of ``iotix.services`` shares: a child process on a port chosen for this
process, a temporary folder for its files, start / stop / restart on the same port, and cleanup."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from iotix.errors import ConfigurationError
from iotix.services.process import LOCALHOST, ManagedProcess, start_with_port_retry

S = TypeVar("S", bound="LocalServer")


class LocalServer:
    """Base of :class:`~iotix.services.mqtt_broker.MqttBroker`, the Kafka broker and the IoTFlow backend.

    A server started with ``tls=True`` has a CA (:attr:`ca_dir`: given, or made in its work folder).

    Subclasses give ``NAME`` (for messages), ``DIR_PREFIX``, ``LOG_NAME``, the ``url`` and
    ``_make_process(port)``. ``port=0`` picks a free port at the first start (retrying while another
    process takes it); later starts reuse it. Files live in a new folder under ``workdir`` (default: the
    temp directory), removed at :meth:`stop` unless a ``workdir`` was given; :meth:`restart` keeps them.
    """

    NAME = "server"
    DIR_PREFIX = "iotix-server-"
    LOG_NAME = "server.log"
    DIR_MODE: int | None = None

    def __init__(
        self,
        port: int = 0,
        workdir: str | os.PathLike[str] | None = None,
        *,
        host: str = LOCALHOST,
        startup_timeout: float = 15.0,
        tls: bool = False,
        ca_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"{self.NAME} port must be 0..65535, got {port}.")
        if ca_dir is not None and not tls:
            raise ConfigurationError("ca_dir is the CA of a TLS broker: give tls=True too.")
        self._tls_on = tls
        self._ca_dir = Path(ca_dir).absolute() if ca_dir is not None else None
        self._port = port
        self._host = host
        self._workdir = Path(workdir) if workdir is not None else None
        self._startup_timeout = startup_timeout
        self._dir: Path | None = None
        self._process: ManagedProcess | None = None

    @property
    def host(self) -> str:
        """Address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The server's port (0 until the first start when a free port is to be picked)."""
        return self._port

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def tls(self) -> bool:
        """Whether clients must speak TLS to this server."""
        return self._tls_on

    @property
    def ca_dir(self) -> Path | None:
        """The folder of the CA (``ca.pem``, ``ca.key``) of a TLS server, or None (made in its work folder
        unless one was given)."""
        if not self._tls_on:
            return None
        if self._ca_dir is None:
            self._ca_dir = self._directory() / "ca"
        return self._ca_dir

    @property
    def log_path(self) -> Path:
        """The server's log file (output of every start, appended)."""
        return self._directory() / self.LOG_NAME

    @property
    def pid(self) -> int | None:
        """Process id of the last start, or None."""
        return self._process.pid if self._process is not None else None

    @property
    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.is_running

    def info(self) -> dict[str, Any]:
        return {"host": self._host, "port": self._port, "url": self.url}

    def start(self: S) -> S:
        """Start the server (no-op if running) and wait until it serves; return self.

        The first start with ``port=0`` retries with new free ports while the port is taken by someone
        else; a start on a known port retries that port a few times (it may still be in use briefly).
        """
        if self.is_running:
            return self
        self._process = start_with_port_retry(self._make_process, self._port, host=self._host)
        self._port = self._process.port
        return self

    def stop(self, timeout: float = 5.0, *, keep_files: bool = False) -> None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout`` seconds); no-op if not running.

        The temporary folder is removed unless ``keep_files`` or a ``workdir`` was given.
        """
        if self._process is not None:
            self._process.stop(timeout=timeout)
        if not keep_files and self._workdir is None and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def restart(self: S, down_for: float = 0.0) -> S:
        """Stop, stay down ``down_for`` seconds, start again on the same port with the same files."""
        self.stop(keep_files=True)
        if down_for > 0:
            time.sleep(down_for)
        return self.start()

    def _make_process(self, port: int) -> ManagedProcess:
        raise NotImplementedError

    def _directory(self) -> Path:
        if self._dir is None:
            if self._workdir is not None:
                self._workdir.mkdir(parents=True, exist_ok=True)
            directory = Path(tempfile.mkdtemp(prefix=self.DIR_PREFIX, dir=self._workdir))
            if self.DIR_MODE is not None:
                directory.chmod(self.DIR_MODE)
            self._dir = directory
        return self._dir

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<{type(self).__name__} {self.url} {state}>"
