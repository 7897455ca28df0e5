"""A local IoTFlow-compatible backend (see :mod:`iotix.services.iotflow_app`) run as a child process.

:class:`IoTFlowBackend` starts ``python -m iotix.services.iotflow_app`` in a :class:`ManagedProcess` on a port
chosen like the MQTT broker's (a free port, retried while another process takes it first), with its SQLite
database and log in a new temporary directory. The admin token reaches the child through an environment
variable, never its command line, so it shows neither in ``ps`` nor in a startup error message.

This module stays free of aiohttp so that importing :mod:`iotix.services` is cheap; the server imports the
shared definitions (:func:`parse_rate_limit`, :data:`ADMIN_TOKEN_ENV`) from here.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any, NamedTuple

import iotix
from iotix.errors import ConfigurationError
from iotix.services.local_server import LocalServer
from iotix.services.process import LOCALHOST, ManagedProcess

__all__ = [
    "ADMIN_TOKEN_ENV",
    "IoTFlowBackend",
    "RateLimit",
    "parse_rate_limit",
    "ready_line",
    "start_iotflow_backend",
]

#: Environment variable that hands the admin token to the server process.
ADMIN_TOKEN_ENV = "IOTIX_IOTFLOW_ADMIN_TOKEN"  # noqa: S105 - a variable name, not a secret
_APP_MODULE = "iotix.services.iotflow_app"
_RATE_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(?:s|sec|seconds?)?\s*$", re.IGNORECASE)


class RateLimit(NamedTuple):
    """At most ``requests`` requests per API key in each window of ``period`` seconds."""

    requests: int
    period: float

    def __str__(self) -> str:
        return f"{self.requests}/{self.period:g}"


def parse_rate_limit(text: str) -> RateLimit:
    """Parse ``'N/S'`` (N requests per S seconds, e.g. ``'5/1'`` or ``'100/60s'``) into a :class:`RateLimit`.

    Raises :class:`~iotix.errors.ConfigurationError` for anything else, N < 1 or S <= 0.
    """
    match = _RATE_LIMIT.match(text)
    if match is None:
        raise ConfigurationError(f"Rate limit must look like 'N/S' (N requests per S seconds), got {text!r}.")
    requests, period = int(match.group(1)), float(match.group(2))
    if requests < 1 or not period > 0 or not math.isfinite(period):
        raise ConfigurationError(f"Rate limit needs at least 1 request per a positive period, got {text!r}.")
    return RateLimit(requests, period)


def ready_line(host: str, port: int) -> str:
    """The line the server prints on stdout once it accepts connections."""
    return f"IoTFlow backend listening on {host}:{port}"


class IoTFlowBackend(LocalServer):
    """A local IoTFlow-compatible backend process that can be stopped and restarted.

    ``port=0`` picks a free port at the first start; later starts reuse it and the same database, so devices
    keep their API keys across :meth:`restart`. ``admin_token`` defaults to ``secrets.token_urlsafe(24)``.
    ``rate_limit`` (``'N/S'``) makes the server answer 429 past N requests per API key in S seconds.
    ``mqtt_host``/``mqtt_port`` are what ``GET /api/v1/devices/mqtt-credentials`` hands out (without them that
    endpoint answers 404). Database and log live in a new directory under ``workdir`` (default: the temp
    directory) unless ``db_path`` names the database.
    """

    NAME = "IoTFlow backend"
    DIR_PREFIX = "iotix-iotflow-"
    LOG_NAME = "iotflow.log"

    def __init__(
        self,
        port: int = 0,
        admin_token: str | None = None,
        *,
        rate_limit: str | RateLimit | None = None,
        mqtt_host: str | None = None,
        mqtt_port: int | None = None,
        workdir: str | os.PathLike[str] | None = None,
        db_path: str | os.PathLike[str] | None = None,
        host: str = LOCALHOST,
        online_window: float = 60.0,
        access_log: bool = False,
        startup_timeout: float = 15.0,
    ) -> None:
        super().__init__(port, workdir, host=host, startup_timeout=startup_timeout)
        if admin_token is not None and (not admin_token or admin_token != admin_token.strip()):
            raise ConfigurationError("The IoTFlow admin token must be non-empty, without surrounding spaces.")
        if mqtt_port is not None and not 0 < mqtt_port <= 65535:
            raise ConfigurationError(f"MQTT port must be 1..65535, got {mqtt_port}.")
        if mqtt_port is not None and mqtt_host is None:
            raise ConfigurationError("An MQTT port was given without an MQTT host.")
        if not online_window > 0:
            raise ConfigurationError(f"Online window must be positive, got {online_window}.")
        self._admin_token = admin_token or secrets.token_urlsafe(24)
        self._rate_limit = parse_rate_limit(rate_limit) if isinstance(rate_limit, str) else rate_limit
        self._mqtt_host = mqtt_host
        self._mqtt_port = mqtt_port if mqtt_port is not None else (1883 if mqtt_host is not None else None)
        self._db_path = Path(db_path) if db_path is not None else None
        self._online_window = online_window
        self._access_log = access_log

    # ---------------------------------------------------------------- properties

    @property
    def url(self) -> str:
        """Base URL, ``http://host:port`` (no trailing slash)."""
        return f"http://{self._host}:{self._port}"

    @property
    def admin_token(self) -> str:
        """Token of the admin endpoints: send ``Authorization: admin <token>``."""
        return self._admin_token

    @property
    def admin_headers(self) -> dict[str, str]:
        """``{'Authorization': 'admin <token>'}`` for the admin endpoints."""
        return {"Authorization": f"admin {self._admin_token}"}

    @property
    def rate_limit(self) -> RateLimit | None:
        """The per-API-key rate limit, or None."""
        return self._rate_limit

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self._db_path if self._db_path is not None else self._directory() / "iotflow.db"

    def info(self) -> dict[str, Any]:
        """``{'url', 'host', 'port', 'admin_token', 'db_path'}`` of this backend (``db_path`` as a string)."""
        return {
            "url": self.url,
            "host": self._host,
            "port": self._port,
            "admin_token": self._admin_token,
            "db_path": str(self.db_path),
        }

    # ---------------------------------------------------------------- lifecycle

    def command(self, port: int) -> list[str]:
        """The server's command line for ``port`` (the admin token is not part of it)."""
        command = [
            sys.executable,
            "-m",
            _APP_MODULE,
            "--host",
            self._host,
            "--port",
            str(port),
            "--db",
            str(self.db_path),
            "--online-window",
            f"{self._online_window:g}",
        ]
        if self._rate_limit is not None:
            command += ["--rate-limit", str(self._rate_limit)]
        if self._mqtt_host is not None:
            command += ["--mqtt-host", self._mqtt_host, "--mqtt-port", str(self._mqtt_port)]
        if self._access_log:
            command.append("--access-log")
        return command

    def _make_process(self, port: int) -> ManagedProcess:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        return ManagedProcess(
            self.command(port),
            port,
            host=self._host,
            name="IoTFlow backend",
            log_dir=self.log_path.parent,
            log_name=self.log_path.name,
            env=self._environment(),
            cwd=self._directory(),
            ready_pattern=re.escape(ready_line(self._host, port)),
            startup_timeout=self._startup_timeout,
        )

    def _environment(self) -> dict[str, str]:
        """Our environment plus the admin token, unbuffered output and this ``iotix`` on the import path."""
        env = dict(os.environ)
        env[ADMIN_TOKEN_ENV] = self._admin_token
        env["PYTHONUNBUFFERED"] = "1"
        package_root = str(Path(iotix.__file__).resolve().parent.parent)
        existing = env.get("PYTHONPATH")
        env["PYTHONPATH"] = package_root if not existing else os.pathsep.join((package_root, existing))
        return env


def start_iotflow_backend(
    port: int = 0,
    admin_token: str | None = None,
    rate_limit: str | RateLimit | None = None,
    mqtt_host: str | None = None,
    mqtt_port: int | None = None,
    workdir: str | os.PathLike[str] | None = None,
) -> IoTFlowBackend:
    """Start a local IoTFlow-compatible backend and return it (running). See :class:`IoTFlowBackend`."""
    backend = IoTFlowBackend(
        port, admin_token, rate_limit=rate_limit, mqtt_host=mqtt_host, mqtt_port=mqtt_port, workdir=workdir
    )
    return backend.start()
