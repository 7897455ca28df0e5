"""ProtocolClient keywords for the local IoTFlow-compatible backend, and the backend as a telemetry source."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from robot.api import logger
from robot.api.deco import keyword

from iotix._robot.context import Context, KeywordError
from iotix._robot.convert import seconds
from iotix._robot.telemetry import Source
from iotix.observe.tracker import TelemetryTracker
from iotix.services.iotflow import IoTFlowBackend, start_iotflow_backend


class BackendReader:
    """Reads the backend's telemetry export incrementally into a tracker (``metadata`` carries the envelope)."""

    def __init__(self, backend: IoTFlowBackend, since: float) -> None:
        self.backend = backend
        self.tracker = TelemetryTracker("iotflow")
        self.since = since
        self._last_id = 0
        self._session: Any = None

    async def refresh(self) -> None:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self.backend.admin_headers)
        url = f"{self.backend.url}/api/v1/admin/telemetry/export"
        async with self._session.get(url, params={"since_id": str(self._last_id)}) as resp:
            if resp.status != 200:
                raise KeywordError(f"IoTFlow backend {self.backend.url}: export answered HTTP {resp.status}.")
            body = await resp.json()
        for record in body.get("records", []):
            self._last_id = max(self._last_id, int(record.get("id", 0)))
            meta = record.get("metadata") or {}
            received = _epoch(record.get("received_at"))
            self.tracker.record_envelope(meta if isinstance(meta, dict) else None, received)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def source(self) -> Source:
        return Source("iotflow", self.tracker, self.since, self.refresh)


def _epoch(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class IoTFlowKeywords:
    """Mixed into ProtocolClient (needs ``self._ctx``)."""

    _ctx: Context

    @keyword("Start Local IoTFlow Backend")
    def start_local_iotflow_backend(
        self, rate_limit: str = "", mqtt_host: str = "", mqtt_port: int | None = None
    ) -> dict[str, Any]:
        """Starts a local IoTFlow-compatible backend (SQLite) and returns ``url``, ``host``, ``port`` and
        ``admin_token`` (a throwaway token made for this run, for ``Authorization: admin <token>``).

        - ``rate_limit``: ``N/S`` answers 429 beyond N requests per S seconds per device key.
        - ``mqtt_host``/``mqtt_port``: what ``GET /api/v1/devices/mqtt-credentials`` hands to hybrid devices.

        Query it with RequestsLibrary: ``Create Session    iotflow    ${backend}[url]``. Telemetry that
        reached it can be checked with `Telemetry Should Be Received From Fleet` ``source=iotflow``.

        | ${backend} =    Start Local IoTFlow Backend
        | Create Fleet    iotflow-smart-sensor    count=9    host=${backend}[host]    port=${backend}[port]
        """
        running: IoTFlowBackend | None = self._ctx.services.get("iotflow")
        if running is not None and running.is_running:
            return running.info()
        try:
            backend = start_iotflow_backend(
                rate_limit=rate_limit or None, mqtt_host=mqtt_host or None, mqtt_port=mqtt_port
            )
        except Exception as err:
            raise KeywordError(f"Cannot start the local IoTFlow backend: {err}") from None
        since = self._ctx.call(lambda: asyncio.get_running_loop().time())
        reader = BackendReader(backend, since)
        reader.tracker.group_of = self._ctx.simulator.fleet_name_of
        self._ctx.services["iotflow"] = backend
        self._ctx.services["iotflow_reader"] = reader
        self._ctx.own("local IoTFlow backend", self.stop_local_iotflow_backend)
        logger.info(f"Local IoTFlow backend at {backend.url}.")
        return backend.info()

    @keyword("Stop Local IoTFlow Backend")
    def stop_local_iotflow_backend(self) -> None:
        """Stops the backend of `Start Local IoTFlow Backend` (nothing if none runs)."""
        backend: IoTFlowBackend | None = self._ctx.services.pop("iotflow", None)
        reader: BackendReader | None = self._ctx.services.pop("iotflow_reader", None)
        if reader is not None:
            self._ctx.call(reader.aclose)
        if backend is not None:
            backend.stop()
            self._ctx.disown("local IoTFlow backend")
            logger.info("Local IoTFlow backend stopped.")

    @keyword("Restart Local IoTFlow Backend")
    def restart_local_iotflow_backend(self, down_for: timedelta = timedelta(0)) -> dict[str, Any]:
        """Stops the backend for ``down_for`` and starts it again on the same port with the same data."""
        backend: IoTFlowBackend | None = self._ctx.services.get("iotflow")
        if backend is None:
            raise KeywordError("No local IoTFlow backend is running: use Start Local IoTFlow Backend first.")
        backend.restart(down_for=seconds(down_for))
        return backend.info()


def iotflow_sources(ctx: Context) -> dict[str, Source]:
    reader: BackendReader | None = ctx.services.get("iotflow_reader")
    return {"iotflow": reader.source()} if reader is not None else {}
