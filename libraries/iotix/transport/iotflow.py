"""IoTFlow devices over HTTP: register, then telemetry by HTTP POST or, for hybrid devices, over MQTT.

Both flows share the pooled client of :mod:`iotix.transport.http_pool`; :func:`iotix.transport.http.create`
picks them for ``flow: iotflow`` (``url`` is the backend's base URL).

IoTFlow flow (:class:`IoTFlowTransport`)
    ``connect`` registers the device (``POST /api/v1/devices/register``) and keeps its API key; telemetry is
    ``POST /api/v1/devices/telemetry`` with ``X-API-Key`` and IoTFlow's body (see :func:`make_iotflow_encoder`);
    heartbeats (``POST /api/v1/devices/heartbeat``) are driven by ``periodic``, which visits a slice of the
    devices every 100 ms, so heartbeats cost no task or timer per device; a device gets them while it is active
    (running, or in error but still trying). A 409 on registration follows ``onConflict``: ``fail``, ``suffix``
    (``name_1``, ``name_2``, ...) or ``reuse``. IoTFlow has no endpoint that hands out the key of an existing
    name again, so ``reuse`` uses the key this process got for that (base URL, name) earlier (a fleet created
    again with the same ids against the same backend) and fails with a clear message otherwise. A device keeps
    its key across dropouts and reconnects (it does not register again). A registration that got no answer may
    still have been stored: the retry's 409 then says so (with ``fail`` the device cannot recover the key, with
    ``suffix`` it registers as ``name_1``).

Hybrid flow (:class:`HybridIoTFlowTransport`, ``telemetryOver: mqtt``)
    After registering, the device fetches ``GET /api/v1/devices/mqtt-credentials`` and publishes the same body
    over its own MQTT connection (a :class:`~iotix.transport.paho_driver.LoopClient` on the runtime loop) to the
    telemetry topic it was given; heartbeats stay on HTTP, and a dropout cuts the MQTT connection abruptly. An
    MQTT connection that goes away on its own is reported as lost (the fleet reconnects the device).

Network faults (``spec.faults``): the HTTP requests of both flows go through the pool's fault proxies
(:mod:`iotix.transport.http_pool`); a hybrid device's MQTT connection goes through the socket path of the fault
layer (``LoopClient.open(faults=...)``), so a fault on the fleet acts on its telemetry too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from yarl import URL

from iotix.behavior import compile_template, format_embedded
from iotix.encode import FIRMWARE_KEY
from iotix.transport.base import Link, Outcomes, TransportError, TransportSpec
from iotix.transport.http_pool import (
    HEARTBEAT,
    TELEMETRY,
    Encoder,
    HttpConn,
    HttpTransportBase,
    NoAnswer,
    binary_fields,
    to_json,
    with_base64,
)

if TYPE_CHECKING:
    from iotix.model.types import DeviceModel
    from iotix.transport.paho_driver import LoopClient

log = logging.getLogger("iotix.transport.http")  # the HTTP transport's logger, as before the split

#: ``onConflict: suffix`` tries ``name_1`` .. ``name_<MAX_SUFFIX>``.
MAX_SUFFIX = 100

REGISTER_PATH = "/api/v1/devices/register"
TELEMETRY_PATH = "/api/v1/devices/telemetry"
HEARTBEAT_PATH = "/api/v1/devices/heartbeat"
MQTT_CREDENTIALS_PATH = "/api/v1/devices/mqtt-credentials"

#: (IoTFlow base URL, registered name) -> API key, for ``onConflict: reuse``. Process-wide on purpose.
_api_keys: dict[tuple[str, str], str] = {}


def forget_api_keys() -> None:
    """Forget every IoTFlow API key this process was given (``onConflict: reuse`` then has nothing to reuse)."""
    _api_keys.clear()


# --- IoTFlow's telemetry body -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _iso_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def iso_utc(ts_ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds: ``2025-07-02T14:30:00.123Z``."""
    seconds, ms = divmod(ts_ms, 1000)
    return f"{_iso_second(seconds)}.{ms:03d}Z"


def make_iotflow_encoder(model: DeviceModel) -> Encoder:
    """IoTFlow's telemetry body: ``{"data": {fields}, "metadata": {deviceId, seq, ts, simulator}, "timestamp"}``.

    ``timestamp`` is ISO-8601 UTC; binary fields are base64 text. A device whose firmware an update changed
    (``firmwareVersion`` among the values the fleet hands over) says so in ``metadata``, not in ``data``.
    """
    binary = binary_fields(model)

    def encode_iotflow(device_id: str, seq: int, ts_ms: int, values: dict[str, Any]) -> bytes:
        metadata: dict[str, Any] = {"deviceId": device_id, "seq": seq, "ts": ts_ms, "simulator": "iotix"}
        if FIRMWARE_KEY in values:
            values = dict(values)
            metadata[FIRMWARE_KEY] = values.pop(FIRMWARE_KEY)
        data = with_base64(values, binary) if binary else values
        body = {"data": data, "metadata": metadata, "timestamp": iso_utc(ts_ms)}
        return to_json(body).encode()

    return encode_iotflow


# --- per-device state ---------------------------------------------------------------------------------------


class IoTFlowConn(HttpConn):
    """An IoTFlow device's state: its registered name and API key. The key is never shown (4 characters at most)."""

    __slots__ = ("api_key", "beat_due", "name")

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None  # the registered name (name_1 ... with onConflict suffix)
        self.api_key: str | None = None  # never logged
        self.beat_due = 0.0  # loop time of the next heartbeat

    def __repr__(self) -> str:
        key = f"{self.api_key[:4]}..." if self.api_key else None
        return f"{type(self).__name__}(active={self.active}, name={self.name!r}, api_key={key!r})"


class HybridConn(IoTFlowConn):
    """A hybrid device's state: an IoTFlow device's, plus its MQTT connection."""

    __slots__ = ("broker", "mqtt")

    def __init__(self) -> None:
        super().__init__()
        self.mqtt: LoopClient | None = None  # the device's MQTT connection
        self.broker: tuple[str, int] | None = None  # MQTT host and port from mqtt-credentials


# --- the transports -----------------------------------------------------------------------------------------


class IoTFlowTransport(HttpTransportBase):
    """``flow: iotflow``: registration, telemetry POSTs with the device's API key, heartbeats."""

    conn_type = IoTFlowConn
    bearer_token = False  # IoTFlow devices authenticate with their API key

    def __init__(self, spec: TransportSpec, links: Sequence[Link], outcomes: Outcomes, **pool: Any) -> None:
        super().__init__(spec, links, outcomes, **pool)
        conn = spec.connection
        self.heartbeat_s: float = float(conn.get("heartbeatIntervalMs", 60000)) / 1000.0
        self.on_conflict: str = str(conn.get("onConflict", "fail"))
        self._registration = compile_template(dict(conn.get("registration") or {}))
        self._endpoints = {path: URL(self._base + path) for path in (TELEMETRY_PATH, HEARTBEAT_PATH)}

    @property
    def target(self) -> str:
        return self._base

    def make_encoder(self) -> Encoder:
        return make_iotflow_encoder(self.spec.model)

    def _sweep_periods(self) -> list[float]:
        return [self.heartbeat_s / 10] if self.heartbeat_s else []

    # -- connection ---------------------------------------------------------------------------------------

    async def _connect_device(self, link: Link, conn: IoTFlowConn) -> None:  # type: ignore[override]
        if conn.api_key is None:
            await self._register(link, conn)
        await self._open_channel(link, conn)
        conn.beat_due = asyncio.get_running_loop().time() + self.heartbeat_s

    async def _open_channel(self, link: Link, conn: Any) -> None:
        """After registration: open the device's telemetry channel when it is not the pool (hybrid: MQTT)."""

    # -- registration -------------------------------------------------------------------------------------

    def _registration_body(self, link: Link, name: str) -> dict[str, Any]:
        model = self.spec.model
        body: dict[str, Any] = {
            "name": name,
            "description": model.description or model.name,
            "device_type": model.type,
        }
        if model.version is not None:  # optional in a model
            body["firmware_version"] = model.version
        rendered = self._registration.render(link.variables())
        body.update({k: format_embedded(v) for k, v in rendered.items()})
        return body

    async def _register(self, link: Link, conn: IoTFlowConn) -> None:
        """Register the device and keep its API key; a taken name follows ``onConflict``."""
        url = self._base + REGISTER_PATH
        name = link.id
        for suffix in range(MAX_SUFFIX + 1):
            if suffix:
                name = f"{link.id}_{suffix}"
            try:
                status, data, snippet = await self._call(
                    "POST", url, link, json_body=self._registration_body(link, name)
                )
            except NoAnswer:
                conn.name = name  # the backend may have stored it: a later 409 for this name is explained
                raise
            if status in (200, 201):
                key, registered = _registered_key(data, name)
                if key is None:
                    raise TransportError(
                        f"device '{link.id}': registration at {url} answered HTTP {status} without device.api_key"
                    )
                self._keep_key(link, conn, registered, key)
                return
            if status != 409:
                raise TransportError(f"device '{link.id}': registration at {url} failed: HTTP {status}: {snippet}")
            if self.on_conflict == "reuse":
                self._reuse_key(link, conn, name)
                return
            if self.on_conflict != "suffix":
                raise TransportError(
                    f"device '{link.id}': the name '{name}' is already registered at {self._base}"
                    f"{_own_attempt(conn, name)} and onConflict is 'fail' (use 'suffix' to register as name_1, "
                    "name_2, ..., or 'reuse')"
                )
        raise TransportError(
            f"device '{link.id}': names '{link.id}' to '{name}' are all registered at {self._base} "
            f"(onConflict 'suffix' tries {MAX_SUFFIX} suffixes)"
        )

    def _keep_key(self, link: Link, conn: IoTFlowConn, name: str, key: str) -> None:
        conn.name, conn.api_key = name, key
        _api_keys[(self._base, name)] = key
        log.debug("device %s registered at %s as %r (API key %s...)", link.id, self._base, name, key[:4])

    def _reuse_key(self, link: Link, conn: IoTFlowConn, name: str) -> None:
        key = _api_keys.get((self._base, name))
        if key is None:
            raise TransportError(
                f"device '{link.id}': the name '{name}' is already registered at {self._base}"
                f"{_own_attempt(conn, name)} and onConflict 'reuse' has no API key for it: IoTFlow cannot hand out "
                "an existing device's key, so 'reuse' works only for names this process registered itself (use "
                "'suffix', other ids, or a fresh backend)"
            )
        conn.name, conn.api_key = name, key
        log.debug("device %s reuses the API key of %r at %s (%s...)", link.id, name, self._base, key[:4])

    # -- requests and heartbeats --------------------------------------------------------------------------

    def _route(self, kind: int, link: Link, conn: IoTFlowConn) -> tuple[str, URL, dict[str, str] | None]:  # type: ignore[override]
        path = TELEMETRY_PATH if kind == TELEMETRY else HEARTBEAT_PATH
        return "POST", self._endpoints[path], {"X-API-Key": conn.api_key or ""}

    def _status_reason(self, status: int, method: str, url: URL, snippet: bytes, conn: IoTFlowConn) -> str:  # type: ignore[override]
        reason = f"HTTP {status} from {method} {url}: {self._scrub(snippet, conn.api_key)}"
        if status in (401, 403):
            reason += " (the API key was rejected: revoked or unknown)"
        return reason

    def _visit(self, link: Link, conn: IoTFlowConn, now: float) -> None:  # type: ignore[override]
        """A heartbeat when it is due and the device is active."""
        beat = self.heartbeat_s
        if beat and now >= conn.beat_due and self.outcomes.is_active(link):
            conn.beat_due = now + beat
            self._enqueue(HEARTBEAT, link, conn, b"{}")


class HybridIoTFlowTransport(IoTFlowTransport):
    """``flow: iotflow`` with ``telemetryOver: mqtt``: register and heartbeat over HTTP, telemetry over MQTT."""

    request_based = False  # telemetry is handed to an MQTT connection; PUBACKs count as acknowledged (QoS > 0)
    telemetry_over = "mqtt"
    conn_type = HybridConn

    def __init__(self, spec: TransportSpec, links: Sequence[Link], outcomes: Outcomes, **pool: Any) -> None:
        super().__init__(spec, links, outcomes, **pool)
        from iotix.transport.mqtt import publish_event, publish_telemetry  # MQTT only for hybrid fleets

        conn = spec.connection
        self.qos: int = int(conn.get("qos", 0))
        self.keepalive: int = int(conn.get("keepAlive", 60))
        self.mqtt_version: str = str(conn.get("mqttVersion", "3.1.1"))
        self._publish: Callable[[Link, LoopClient, bytes, int, Outcomes], bool] = publish_telemetry
        self._publish_event = publish_event

    def _sweep_periods(self) -> list[float]:
        return [*super()._sweep_periods(), self.keepalive / 4]

    def descriptors(self) -> int:
        """An MQTT connection per device, and the HTTP pool they register through."""
        return len(self.links) + super().descriptors()

    # -- connection ---------------------------------------------------------------------------------------

    async def _open_channel(self, link: Link, conn: HybridConn) -> None:
        """Fetch the device's MQTT credentials (once) and open its MQTT connection."""
        if conn.mqtt is None:
            conn.mqtt = await self._new_mqtt_client(link, conn)
        assert conn.broker is not None
        try:
            # The fleet's network faults act on the MQTT connection too (the socket path of iotix.fault: it is
            # the device's own connection; faults still cover the whole fleet, as for the HTTP pool).
            await conn.mqtt.open(
                *conn.broker, keepalive=self.keepalive, timeout=self.timeout, faults=self.spec.faults, owner=link.id
            )
        except TransportError as err:
            raise TransportError(f"device '{link.id}': {err}") from None

    async def _new_mqtt_client(self, link: Link, conn: HybridConn) -> LoopClient:
        from iotix.transport.mqtt import watch_device_client
        from iotix.transport.paho_driver import LoopClient

        url = self._base + MQTT_CREDENTIALS_PATH
        status, data, snippet = await self._call("GET", url, link, key=conn.api_key)
        if status != 200:
            raise TransportError(f"device '{link.id}': GET {url} failed: HTTP {status}: {snippet}")
        creds = data.get("credentials") if isinstance(data, dict) else None
        topics = creds.get("topics") if isinstance(creds, dict) else None
        topic = topics.get("telemetry_publish") if isinstance(topics, dict) else None
        if not isinstance(creds, dict) or not topic:
            raise TransportError(f"device '{link.id}': GET {url} answered without credentials.topics.telemetry_publish")
        conn.broker = (str(creds.get("mqtt_host") or "localhost"), int(creds.get("mqtt_port") or 1883))
        client_id = str(creds.get("client_id") or f"iotix-{conn.name or link.id}")
        client = LoopClient(asyncio.get_running_loop(), client_id, mqtt_version=self.mqtt_version, userdata=link)
        if creds.get("username"):
            client.username_pw_set(str(creds["username"]), creds.get("password"))
        watch_device_client(client, self.outcomes, count_acks=self.qos > 0)
        link.topic = str(topic)  # the device's telemetry topic, which the transport names (see Link.topic)
        return client

    def is_connected(self, link: Link) -> bool:
        conn: HybridConn | None = link.conn
        if conn is None or not conn.active:
            return False
        return conn.mqtt is None or conn.mqtt.is_open

    async def disconnect(self, link: Link) -> None:
        await super().disconnect(link)  # heartbeats stop; requests already handed over still go out
        conn: HybridConn | None = link.conn
        if conn is not None and conn.mqtt is not None:
            conn.mqtt.close_reported = True
            conn.mqtt.close_gracefully()

    def drop(self, link: Link) -> None:
        super().drop(link)
        conn: HybridConn | None = link.conn
        if conn is not None and conn.mqtt is not None:
            conn.mqtt.close_reported = True
            conn.mqtt.abort()

    # -- sending ------------------------------------------------------------------------------------------

    def send(
        self, link: Link, payload: bytes, topic: str | None = None, qos: int | None = None, retain: bool = False
    ) -> bool:
        """Telemetry to the device's MQTT topic; with ``topic`` (a behavior's event) to that MQTT topic."""
        conn: HybridConn | None = link.conn
        if conn is None or not conn.active or conn.mqtt is None:
            return False
        if topic is not None:
            qos = self.qos if qos is None else qos
            return self._publish_event(link, conn.mqtt, topic, payload, qos, retain, self.outcomes, acks=self.qos > 0)
        return self._publish(link, conn.mqtt, payload, self.qos, self.outcomes)

    def _visit(self, link: Link, conn: HybridConn, now: float) -> None:  # type: ignore[override]
        """The MQTT connection's keep-alive, then the heartbeat when it is due."""
        if conn.mqtt is not None:
            conn.mqtt.misc()
        super()._visit(link, conn, now)


# --- helpers ------------------------------------------------------------------------------------------------


def _registered_key(data: Any, name: str) -> tuple[str | None, str]:
    """(API key, registered name) from a registration answer ``{"device": {"api_key", "name"}}``."""
    device = data.get("device") if isinstance(data, dict) else None
    if not isinstance(device, dict):
        return None, name
    key = device.get("api_key")
    return (str(key) if key else None), str(device.get("name") or name)


def _own_attempt(conn: IoTFlowConn, name: str) -> str:
    """Words for a 409 on a name whose own earlier registration got no answer (it was probably stored)."""
    if conn.api_key is None and conn.name == name:
        return ", probably by this device's own earlier attempt that got no answer"
    return ""
