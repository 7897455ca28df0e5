"""A local time-series store on 127.0.0.1 for demos and tests: VictoriaMetrics (Debian ``victoria-metrics``).

VictoriaMetrics accepts InfluxDB's line protocol on ``/api/v2/write`` (what ``influxdb-client`` and
:class:`iotix.observe.influx.InfluxExport` write) and answers PromQL on ``/api/v1/query``, so a run's figures
can be written as InfluxDB points and read back as Prometheus series. How it maps them: measurement ``m`` and
field ``f`` become the metric ``m_f``, tags become labels, the bucket and org are dropped, timestamps are kept
to the millisecond.

The server is started as::

    victoria-metrics -httpListenAddr=127.0.0.1:<port> -storageDataPath=<dir> -retentionPeriod=1d
                     -search.latencyOffset=0s

``-search.latencyOffset=0s`` makes a sample queryable as soon as it is stored (the default hides the last
30 s). Written samples reach the searchable storage about a second later; :meth:`MetricsStore.flush`
(``GET /internal/force_flush``) makes everything written so far readable at once.

The queries are plain blocking HTTP calls (``requests``): call them from the Robot thread or a test, never
from the runtime loop.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time as _time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from iotix.errors import ConfigurationError, IoTixError
from iotix.services.local_server import LocalServer
from iotix.services.process import LOCALHOST, ManagedProcess

__all__ = [
    "VICTORIA_INSTALL_HINT",
    "MetricsStore",
    "MetricsStoreError",
    "find_victoria_metrics",
    "start_local_metrics_store",
]

VICTORIA_INSTALL_HINT = "`apt-get install victoria-metrics` (the Debian package victoria-metrics)"
_SBIN_PATH = os.pathsep.join(("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"))
#: VictoriaMetrics prints this right before it binds; the port check and the owner check do the rest.
_READY_PATTERN = r"starting http server at http://"
#: A fatal error at startup (a bad flag, an unusable data folder) that does not always end the process at once.
_FAILURE_PATTERN = r"\tfatal\t|\tpanic\t"
#: How long one query may take before it fails.
QUERY_TIMEOUT_S = 10.0


#: How long after a forced flush rows written just before it become searchable (VictoriaMetrics 1.79: ~1.02 s).
VISIBLE_AFTER_S = 1.2
_INSERTED = re.compile(r"^vm_rows_inserted_total\{[^}]*\} (\S+)$", re.MULTILINE)


class MetricsStoreError(IoTixError):
    """The local metrics store did not answer a query, or refused it (a PromQL syntax error, say)."""


def find_victoria_metrics() -> str | None:
    """Path of the ``victoria-metrics`` executable (PATH, then the sbin directories), or None."""
    return shutil.which("victoria-metrics") or shutil.which("victoria-metrics", path=_SBIN_PATH)


def _retention(value: str) -> str:
    """Check a ``-retentionPeriod`` value: a number of months, or a number with h, d, w, y (``1d``, ``12h``)."""
    text = str(value).strip()
    number, unit = (text[:-1], text[-1]) if text and text[-1] in "hdwy" else (text, "")
    try:
        ok = float(number) > 0
    except ValueError:
        ok = False
    if not ok:
        raise ConfigurationError(
            f"retention must be a positive number of months or a duration such as 1d, 12h or 2w, got {value!r}."
        )
    return f"{number}{unit}"


def _timestamp(value: float | datetime | str | None) -> str | None:
    """A query time as VictoriaMetrics takes it: epoch seconds or an RFC 3339 string."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return f"{value.timestamp():.3f}"
    if isinstance(value, int | float):
        return f"{float(value):.3f}"
    return str(value)


class MetricsStore(LocalServer):
    """A local VictoriaMetrics process that stores InfluxDB points and answers PromQL; stop it with :meth:`stop`.

    ``port=0`` picks a free port at the first start; later starts reuse it. Log and data live in a new
    folder under the temp directory, removed at :meth:`stop`; with ``data_dir`` the data goes there and is kept
    (a restart on the same folder sees the earlier samples). ``retention`` is VictoriaMetrics'
    ``-retentionPeriod`` (``1d``: samples older than a day are dropped; samples older than the retention are
    refused when written).
    """

    NAME = "VictoriaMetrics"
    DIR_PREFIX = "iotix-victoria-"
    LOG_NAME = "victoria-metrics.log"

    def __init__(
        self,
        port: int = 0,
        data_dir: str | os.PathLike[str] | None = None,
        retention: str = "1d",
        *,
        host: str = LOCALHOST,
        startup_timeout: float = 15.0,
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(port, None, host=host, startup_timeout=startup_timeout)
        self._data_dir = Path(data_dir).absolute() if data_dir is not None else None
        self._retention = _retention(retention)
        self._binary = os.fspath(binary) if binary is not None else None
        self._session = requests.Session()
        self._inserted_seen = -1.0

    @property
    def url(self) -> str:
        """``http://host:port``: the base URL of the InfluxDB write API (``/api/v2/write``) and of PromQL."""
        return f"http://{self._host}:{self._port}"

    @property
    def data_dir(self) -> Path:
        """Where the samples are stored."""
        return self._data_dir if self._data_dir is not None else self._directory() / "data"

    def info(self) -> dict[str, Any]:
        """``{'host', 'port', 'url'}`` of this store."""
        return {"host": self._host, "port": self._port, "url": self.url}

    def _make_process(self, port: int) -> ManagedProcess:
        binary = self._binary or find_victoria_metrics()
        if binary is None:
            raise IoTixError(f"VictoriaMetrics is not installed: {VICTORIA_INSTALL_HINT}.")
        data = self.data_dir
        data.mkdir(parents=True, exist_ok=True)
        return ManagedProcess(
            [
                binary,
                f"-httpListenAddr={self._host}:{port}",
                f"-storageDataPath={data}",
                f"-retentionPeriod={self._retention}",
                "-search.latencyOffset=0s",
            ],
            port,
            host=self._host,
            name="VictoriaMetrics",
            log_dir=self._directory(),
            log_name=self.LOG_NAME,
            cwd=self._directory(),
            ready_pattern=_READY_PATTERN,
            failure_pattern=_FAILURE_PATTERN,
            startup_timeout=self._startup_timeout,
        )

    def stop(self, timeout: float = 5.0, *, keep_files: bool = False) -> None:
        """Stop the server (see :meth:`LocalServer.stop`); its folder goes unless ``keep_files`` (a
        ``data_dir`` of the caller is always kept)."""
        super().stop(timeout, keep_files=keep_files)
        self._session.close()

    # -- HTTP --------------------------------------------------------------------------------------------

    def _get(self, path: str, params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None) -> requests.Response:
        if not self.is_running:
            raise MetricsStoreError(f"The local metrics store ({self.url}) is not running: start it first.")
        try:
            response = self._session.get(f"{self.url}{path}", params=params, timeout=QUERY_TIMEOUT_S)
        except requests.RequestException as err:
            raise MetricsStoreError(f"The local metrics store at {self.url} did not answer {path}: {err}") from None
        if response.status_code >= 400:
            body = response.text.strip()[:500]
            raise MetricsStoreError(f"The local metrics store refused {path} (HTTP {response.status_code}): {body}")
        return response

    def _data(self, path: str, params: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
        payload = self._get(path, [(k, v) for k, v in params if v is not None]).json()
        if payload.get("status") != "success":
            raise MetricsStoreError(f"The local metrics store could not run the query: {payload.get('error', payload)}")
        result = payload.get("data", {}).get("result", [])
        return list(result) if isinstance(result, list) else [{"value": result}]

    def flush(self) -> None:
        """Make every sample written so far searchable (``GET /internal/force_flush``).

        VictoriaMetrics 1.79 still answers queries without the rows of about the last second after a forced
        flush (seen: 1.02 s, every time). So when the store took in rows since the previous flush (its
        ``vm_rows_inserted_total``), this waits :data:`VISIBLE_AFTER_S` before returning."""
        self._get("/internal/force_flush")
        inserted = self._rows_inserted()
        if inserted != self._inserted_seen:
            self._inserted_seen = inserted
            _time.sleep(VISIBLE_AFTER_S)

    def _rows_inserted(self) -> float:
        text = self._get("/metrics").text
        return sum(float(m.group(1)) for m in _INSERTED.finditer(text))

    def query(self, promql: str, time: float | datetime | str | None = None) -> list[dict[str, Any]]:
        """Run an instant PromQL query (``/api/v1/query``) at ``time`` (epoch s, datetime or RFC 3339; default
        now); returns the results as the API gives them: ``[{"metric": {labels}, "value": [ts, "text"]}]``.

        "Now" is passed explicitly, to the millisecond: left out, VictoriaMetrics evaluates at the current time
        rounded down to the second and leaves out what was written in the last second (seen with 1.79)."""
        when = _timestamp(time if time is not None else _time.time())
        return self._data("/api/v1/query", [("query", promql), ("time", when)])

    def query_range(
        self,
        promql: str,
        start: float | datetime | str,
        end: float | datetime | str | None = None,
        step: float | str = 1.0,
    ) -> list[dict[str, Any]]:
        """Run a range query (``/api/v1/query_range``) from ``start`` to ``end`` (default now) every ``step``
        seconds; returns ``[{"metric": {...}, "values": [[ts, "text"], ...]}]``."""
        params = [("query", promql), ("start", _timestamp(start)), ("end", _timestamp(end)), ("step", str(step))]
        return self._data("/api/v1/query_range", params)

    def export(
        self,
        match: str | Sequence[str],
        start: float | datetime | str | None = None,
        end: float | datetime | str | None = None,
    ) -> list[dict[str, Any]]:
        """Every stored sample of the series that ``match`` selects (``/api/v1/export``, one series a JSON line):
        ``[{"metric": {"__name__": ..., labels}, "values": [...], "timestamps": [ms, ...]}]``.

        ``match`` is a series selector (``iotix_messages_sent_total{fleet="env"}``) or several.
        """
        matches = [match] if isinstance(match, str) else list(match)
        params: list[tuple[str, Any]] = [("match[]", m) for m in matches]
        params += [("start", _timestamp(start)), ("end", _timestamp(end))]
        text = self._get("/api/v1/export", [(k, v) for k, v in params if v is not None]).text
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<MetricsStore {self.url} {state}>"


def start_local_metrics_store(
    port: int = 0, data_dir: str | os.PathLike[str] | None = None, retention: str = "1d"
) -> MetricsStore:
    """Start a local VictoriaMetrics (see :class:`MetricsStore`) and return it, running.

    Raises :class:`~iotix.errors.IoTixError` naming the Debian package when ``victoria-metrics`` is not
    installed.
    """
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"The metrics store's port must be 0..65535, got {port}.")
    if find_victoria_metrics() is None:
        raise IoTixError(f"VictoriaMetrics is not installed: {VICTORIA_INSTALL_HINT}.")
    return MetricsStore(port, data_dir, retention).start()
