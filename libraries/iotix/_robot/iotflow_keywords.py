"""ProtocolClient keywords for the local IoTFlow-compatible backend, and the backend's store as a receiver
(``iotflow``) of the IoTFlow fleets that send their telemetry over HTTP."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from robot.api import logger
from robot.api.deco import keyword

from iotix._robot.component import LibraryComponent
from iotix._robot.context import KeywordError
from iotix._robot.convert import seconds
from iotix._robot.types import IoTFlowBackendAddress
from iotix.observe.receivers import FleetView, Receiver, ReceiverKind, Source
from iotix.observe.tracker import TelemetryTracker
from iotix.services.iotflow import IoTFlowBackend, start_iotflow_backend

RECEIVER = "iotflow"


def sends_to_iotflow(fleet: FleetView) -> bool:
    """An IoTFlow fleet whose telemetry goes to the backend over HTTP (not a hybrid one that publishes to MQTT)."""
    connection = fleet.connection
    return (
        fleet.protocol == "http" and connection.get("flow") == "iotflow" and connection.get("telemetryOver") != "mqtt"
    )


#: The backend's store hears the IoTFlow fleets that send over HTTP.
IOTFLOW_RECEIVERS = ReceiverKind(
    "iotflow",
    claims=sends_to_iotflow,
    missing=lambda fleet, available: (
        f"Fleet '{fleet.name}' ({fleet.protocol}, IoTFlow flow): no local IoTFlow backend collects its telemetry "
        f"(available: {available}); start one with Start Local IoTFlow Backend, or name a receiver with source=."
    ),
    ambiguous=lambda fleet, names: (
        f"Fleet '{fleet.name}' ({fleet.protocol}, IoTFlow flow): several IoTFlow backends could have collected its "
        f"telemetry ({', '.join(repr(n) for n in names)}); say which with source=."
    ),
)


class BackendReader:
    """Reads the backend's telemetry export incrementally into a tracker (``metadata`` carries the envelope)."""

    def __init__(self, backend: IoTFlowBackend, since: float) -> None:
        self.backend = backend
        self.tracker = TelemetryTracker(RECEIVER)
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
        return Source(RECEIVER, self.tracker, self.since, self.refresh)


def _epoch(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class IoTFlowState:
    """The local IoTFlow backend of the process and the reader of its store."""

    backend: IoTFlowBackend | None = None
    reader: BackendReader | None = None

    async def aclose(self) -> None:
        """Close the reader's HTTP session (when the runtime stops)."""
        if self.reader is not None:
            await self.reader.aclose()


class IoTFlowKeywords(LibraryComponent):
    """The local IoTFlow-compatible backend."""

    @property
    def _state(self) -> IoTFlowState:
        return self.context.state(IoTFlowState)

    @keyword("Start Local IoTFlow Backend")
    def start_local_iotflow_backend(
        self, rate_limit: str = "", mqtt_host: str = "", mqtt_port: int | None = None
    ) -> IoTFlowBackendAddress:
        """Starts a local IoTFlow-compatible backend (SQLite) and returns where it listens:

        | =Key=           | =Value=                                                                   |
        | ``url``         | ``http://host:port``                                                      |
        | ``host``        | address it listens on (``127.0.0.1``)                                     |
        | ``port``        | port it listens on                                                        |
        | ``admin_token`` | a throwaway token made for this run, for ``Authorization: admin <token>`` |
        | ``db_path``     | its SQLite database file                                                  |

        - ``rate_limit``: ``N/S`` answers 429 beyond N requests per S seconds per device key.
        - ``mqtt_host``/``mqtt_port``: what ``GET /api/v1/devices/mqtt-credentials`` hands to hybrid devices.

        Query it with RequestsLibrary: ``Create Session    iotflow    ${backend}[url]``. Telemetry that
        reached it can be checked with `Telemetry Should Be Received From Fleet` ``source=iotflow``.

        | ${backend} =    Start Local IoTFlow Backend
        | Create Fleet    iotflow-smart-sensor    count=9    host=${backend}[host]    port=${backend}[port]
        """
        state = self._state
        running = state.backend
        if running is not None:
            if running.is_running:
                return cast(IoTFlowBackendAddress, running.info())
            self.stop_local_iotflow_backend()  # it died: its reader and receiver go with it
        self.context.receivers.check_free(RECEIVER)
        try:
            backend = start_iotflow_backend(
                rate_limit=rate_limit or None, mqtt_host=mqtt_host or None, mqtt_port=mqtt_port
            )
        except Exception as err:
            raise KeywordError(f"Cannot start the local IoTFlow backend: {err}") from None
        fleet_of = self.simulator.fleet_name_of

        def reader_from_now() -> BackendReader:
            reader = BackendReader(backend, asyncio.get_running_loop().time())
            reader.tracker.group_of = fleet_of  # latency per fleet
            return reader

        reader: BackendReader = self.call(reader_from_now)
        state.backend, state.reader = backend, reader
        self.context.receivers.register(Receiver(RECEIVER, IOTFLOW_RECEIVERS.name, reader.source))
        self.context.own("local IoTFlow backend", self.stop_local_iotflow_backend)
        logger.info(f"Local IoTFlow backend at {backend.url}.")
        return cast(IoTFlowBackendAddress, backend.info())

    @keyword("Stop Local IoTFlow Backend")
    def stop_local_iotflow_backend(self) -> None:
        """Stops the backend of `Start Local IoTFlow Backend` (nothing if none runs)."""
        state = self._state
        backend, reader = state.backend, state.reader
        state.backend = state.reader = None
        if reader is not None:
            self.context.receivers.unregister(RECEIVER)
            self.call(reader.aclose)
        if backend is not None:
            backend.stop()
            self.context.disown("local IoTFlow backend")
            logger.info("Local IoTFlow backend stopped.")

    @keyword("Restart Local IoTFlow Backend")
    def restart_local_iotflow_backend(self, down_for: timedelta = timedelta(0)) -> IoTFlowBackendAddress:
        """Stops the backend for ``down_for`` and starts it again on the same port with the same data; returns
        its address like `Start Local IoTFlow Backend`."""
        backend = self._state.backend
        if backend is None:
            raise KeywordError("No local IoTFlow backend is running: use Start Local IoTFlow Backend first.")
        backend.restart(down_for=seconds(down_for))
        return cast(IoTFlowBackendAddress, backend.info())
