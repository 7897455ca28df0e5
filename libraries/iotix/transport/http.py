"""HTTP devices: one pooled aiohttp client per fleet, a generic flow and the IoTFlow device flow.

One :class:`aiohttp.ClientSession` per fleet (keep-alive, at most ``maxConnections`` open connections) is
created lazily on the runtime loop and closed by :meth:`HttpTransport.close`. A device holds no socket of its
own: its per-device state is a small :class:`HttpConn` (about 150 bytes, plus its URL when the URL names the
device).

Sending (``send`` never blocks)
    A message goes into the fleet's FIFO of requests and at most ``maxConnections`` worker tasks take requests
    from it, one at a time each, so requests in flight never exceed the pool and there is no task per message.
    Beyond the bound, requests wait in the FIFO, which holds at most ``BACKLOG_PER_CONNECTION`` requests per
    connection: when it is full ``send`` refuses the message (counted in ``messagesFailed``, the device's last
    error says why), and a request that waited longer than ``timeoutMs`` for a connection fails without being
    sent. A slow or dead server therefore shows up as counted failures with the reason, never as memory that
    grows without bound or as a hang. Requests of the connect phase (IoTFlow registration, MQTT credentials)
    take the next free connection ahead of that FIFO, so devices still come up while telemetry saturates the pool.

Outcomes
    A status in ``successStatuses`` counts as acknowledged (``device.acked``) and its latency, from hand-over
    to response (waiting for a connection included), goes into :attr:`HttpTransport.latency`. Any other status,
    a connection error or a timeout is ``fleet.delivery_failed`` with ``HTTP <status> from <method> <url>:
    <first 200 bytes of the body>`` or the reason. Request headers are never put in messages or logs (they may
    hold the token), and the token and API keys are masked in body snippets.

Generic flow (``flow: generic``)
    Each message is a ``method`` request to the device's ``url`` with ``headers`` and the model's payload
    envelope, or ``bodyTemplate`` rendered with ``${deviceId}``, ``${seq}``, ``${ts}`` and the field values.
    ``token`` (or the fleet's password, a Robot ``Secret``) is sent as ``Authorization: Bearer`` unless
    ``headers`` set ``Authorization`` themselves (they may use ``${token}``). There is no connection to lose:
    a dropped device just stops sending.

IoTFlow flow (``flow: iotflow``; ``url`` is the backend's base URL)
    ``connect`` registers the device (``POST /api/v1/devices/register``) and keeps its API key; telemetry is
    ``POST /api/v1/devices/telemetry`` with ``X-API-Key`` and IoTFlow's body (see :func:`make_iotflow_encoder`);
    heartbeats (``POST /api/v1/devices/heartbeat``) are driven by :meth:`HttpTransport.periodic`, which visits a
    slice of the devices every 100 ms, so heartbeats cost no task or timer per device. A 409 on registration
    follows ``onConflict``: ``fail``, ``suffix`` (``name_1``, ``name_2``, ...) or ``reuse``. IoTFlow has no
    endpoint that hands out the key of an existing name again, so ``reuse`` uses the key this process got for
    that (base URL, name) earlier (a fleet created again with the same ids against the same backend) and fails
    with a clear message otherwise. A device keeps its key across dropouts and reconnects (it does not register
    again). A registration that got no answer may still have been stored: the retry's 409 then says so (with
    ``fail`` the device cannot recover the key, with ``suffix`` it registers as ``name_1``).

    With ``telemetryOver: mqtt`` (a hybrid device) the device then fetches ``GET /api/v1/devices/mqtt-credentials``
    and publishes the same body over its own MQTT connection (a :class:`~iotix.transport.paho_driver.LoopClient`
    on the runtime loop) to the telemetry topic it was given; heartbeats stay on HTTP, and a dropout cuts the MQTT
    connection abruptly.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from yarl import URL

from iotix.behavior import Template, compile_template, format_embedded
from iotix.errors import ConfigurationError
from iotix.fleet.device import DeviceState
from iotix.observe.histogram import Histogram
from iotix.transport.base import Transport, TransportError
from iotix.transport.tls import fleet_tls_context

if TYPE_CHECKING:
    from iotix.fleet.device import Device
    from iotix.fleet.fleet import Fleet
    from iotix.model.types import DeviceModel
    from iotix.transport.paho_driver import LoopClient

log = logging.getLogger("iotix.transport.http")

Encoder = Callable[[str, int, int, dict[str, Any]], bytes]

DEFAULT_SUCCESS_STATUSES = (200, 201, 202, 204)
#: Bytes of a failed response's body quoted in the device's last error.
SNIPPET_BYTES = 200
#: Requests that may wait for a free connection, per connection of the pool (a memory bound: waiting requests
#: also expire after ``timeoutMs``). 100 x 100 connections is 5 s of 2,000 msg/s, about 2 MB of bodies.
BACKLOG_PER_CONNECTION = 100
#: ``close`` lets requests in flight finish for at most this long (or ``timeoutMs`` when shorter).
STOP_DRAIN_S = 2.0
#: ``periodic`` runs about every 100 ms (see :class:`iotix.fleet.simulator.Simulator`).
PERIODIC_S = 0.1
#: Health of the pooled connections: checked this often; after this many consecutive connection errors or
#: timeouts, if the server accepts a fresh TCP connection, the pool (its kept-alive connections) is replaced.
HEALTH_INTERVAL_S = 5.0
HEALTH_STREAK = 5
#: ``onConflict: suffix`` tries ``name_1`` .. ``name_<MAX_SUFFIX>``.
MAX_SUFFIX = 100

REGISTER_PATH = "/api/v1/devices/register"
TELEMETRY_PATH = "/api/v1/devices/telemetry"
HEARTBEAT_PATH = "/api/v1/devices/heartbeat"
MQTT_CREDENTIALS_PATH = "/api/v1/devices/mqtt-credentials"

_TELEMETRY = 0
_HEARTBEAT = 1
_PER_REQUEST = frozenset({"seq", "ts"})
_PER_DEVICE = frozenset({"deviceId", "index", "seq", "ts"})
_CONTENT_TYPES = {"json": "application/json", "cbor": "application/cbor", "raw": "application/octet-stream"}

#: (IoTFlow base URL, registered name) -> API key, for ``onConflict: reuse``. Process-wide on purpose.
_api_keys: dict[tuple[str, str], str] = {}


def forget_api_keys() -> None:
    """Forget every IoTFlow API key this process was given (``onConflict: reuse`` then has nothing to reuse)."""
    _api_keys.clear()


# --- pure helpers -------------------------------------------------------------------------------------------


def override_host_port(url: str, host: str | None, port: int | None) -> str:
    """``url`` with its host and/or port replaced (``Create Fleet host= port=``); unchanged when they match.

    Works on templates (``http://localhost:8080/d/${deviceId}``): only the network location is touched.
    """
    if not host and port is None:
        return url
    parts = urlsplit(url)
    try:
        old_port = parts.port
    except ValueError:
        old_port = None
    old_host = parts.hostname or ""
    new_host = host or old_host
    new_port = port if port is not None else old_port
    if new_host.lower() == old_host.lower() and new_port == old_port:
        return url
    userinfo, _, _ = parts.netloc.rpartition("@")
    shown = f"[{new_host}]" if ":" in new_host else new_host
    netloc = f"{userinfo + '@' if userinfo else ''}{shown}{f':{new_port}' if new_port is not None else ''}"
    return urlunsplit(parts._replace(netloc=netloc))


@functools.lru_cache(maxsize=8)
def _iso_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def iso_utc(ts_ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds: ``2025-07-02T14:30:00.123Z``."""
    seconds, ms = divmod(ts_ms, 1000)
    return f"{_iso_second(seconds)}.{ms:03d}Z"


_to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False, default=str).encode


def _binary_fields(model: DeviceModel) -> tuple[str, ...]:
    return tuple(f.name for f in model.telemetry if f.type == "binary")


def _with_base64(values: dict[str, Any], binary: tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``values`` with the binary fields as base64 text."""
    out = dict(values)
    for name in binary:
        value = out.get(name)
        if value is not None:
            out[name] = base64.b64encode(value).decode("ascii")
    return out


def make_iotflow_encoder(model: DeviceModel) -> Encoder:
    """IoTFlow's telemetry body: ``{"data": {fields}, "metadata": {deviceId, seq, ts, simulator}, "timestamp"}``.

    ``timestamp`` is ISO-8601 UTC; binary fields are base64 text.
    """
    binary = _binary_fields(model)

    def encode_iotflow(device_id: str, seq: int, ts_ms: int, values: dict[str, Any]) -> bytes:
        data = _with_base64(values, binary) if binary else values
        body = {
            "data": data,
            "metadata": {"deviceId": device_id, "seq": seq, "ts": ts_ms, "simulator": "iotix"},
            "timestamp": iso_utc(ts_ms),
        }
        return _to_json(body).encode()

    return encode_iotflow


def make_template_encoder(
    template: Template, model: DeviceModel, fleet_name: str, index_of: Mapping[str, Any]
) -> Encoder:
    """``bodyTemplate`` rendered per message: a string as text, anything else as compact JSON.

    ``index_of`` maps device ids to devices (for ``${index}``); binary fields are base64 text.
    """
    binary = _binary_fields(model)
    as_text = isinstance(template.template, str)
    wants_index = "index" in template.names
    fixed = {"modelId": model.id, "fleet": fleet_name}

    def encode_template(device_id: str, seq: int, ts_ms: int, values: dict[str, Any]) -> bytes:
        variables = _with_base64(values, binary) if binary else dict(values)
        variables.update(fixed)
        variables["deviceId"], variables["seq"], variables["ts"] = device_id, seq, ts_ms
        if wants_index:
            variables["index"] = index_of[device_id].index
        rendered = template.render(variables)
        return (format_embedded(rendered) if as_text else _to_json(rendered)).encode()

    return encode_template


def default_content_type(connection: Mapping[str, Any], payload_format: str) -> str:
    """Content-Type of the requests when ``headers`` do not set one."""
    if connection.get("flow") == "iotflow":
        return "application/json"
    body = connection.get("bodyTemplate")
    if isinstance(body, str):
        return "application/json" if body.lstrip()[:1] in ("{", "[") else "text/plain; charset=utf-8"
    if body is not None:
        return "application/json"
    return _CONTENT_TYPES.get(payload_format, "application/octet-stream")


# --- per-device state ---------------------------------------------------------------------------------------


class HttpConn:
    """What an HTTP device keeps between requests. The API key is never shown (4 characters at most)."""

    __slots__ = ("active", "api_key", "beat_due", "broker", "gen", "headers", "mqtt", "name", "url")

    def __init__(self) -> None:
        self.active = False  # connected (sending allowed)
        self.gen = 0  # bumped by a dropout: requests still waiting from before are not sent
        self.url: URL | None = None  # the device's URL when it names the device (else the fleet's)
        self.headers: dict[str, str] | None = None  # the device's own headers (templated headers)
        self.name: str | None = None  # IoTFlow: the registered name (name_1 ... with onConflict suffix)
        self.api_key: str | None = None  # IoTFlow: never logged
        self.beat_due = 0.0  # IoTFlow: loop time of the next heartbeat
        self.mqtt: LoopClient | None = None  # hybrid: the device's MQTT connection
        self.broker: tuple[str, int] | None = None  # hybrid: MQTT host and port from mqtt-credentials

    def __repr__(self) -> str:
        key = f"{self.api_key[:4]}..." if self.api_key else None
        return f"HttpConn(active={self.active}, name={self.name!r}, api_key={key!r})"


class _DeviceTemplate:
    """A URL or header template rendered once for the fleet, once per device, or per request.

    Which one depends on the variables it uses: ``${seq}``/``${ts}`` per request, ``${deviceId}``/``${index}``
    per device, anything else once.
    """

    __slots__ = ("fixed", "per_device", "per_request", "shared", "template")

    def __init__(self, template: Any, fixed: Mapping[str, Any]) -> None:
        self.template = compile_template(template)
        self.fixed = dict(fixed)
        names = self.template.names
        self.per_request = bool(names & _PER_REQUEST)
        self.per_device = bool(names & _PER_DEVICE)
        self.shared = None if self.per_device else self.template.render(self.fixed)

    def render(self, device: Device) -> Any:
        variables = {**device.variables(), **self.fixed}
        if self.per_request:
            variables["seq"] = device.seq
            variables["ts"] = int(time.time() * 1000)
        return self.template.render(variables)


def _as_headers(rendered: Any) -> dict[str, str]:
    return {str(k): format_embedded(v) for k, v in rendered.items()}


# --- the transport ------------------------------------------------------------------------------------------


class HttpTransport(Transport):
    """HTTP devices of one fleet behind one pooled aiohttp session (see the module docstring)."""

    protocol = "http"

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(fleet)
        conn = fleet.connection
        self.flow: str = str(conn.get("flow", "generic"))
        self.iotflow = self.flow == "iotflow"
        self.hybrid = self.iotflow and conn.get("telemetryOver", "http") == "mqtt"
        self.request_based = not self.hybrid
        self.url: str = override_host_port(str(conn["url"]), conn.get("host"), conn.get("port"))
        self.method: str = "POST" if self.iotflow else str(conn.get("method", "POST")).upper()
        self.success: frozenset[int] = frozenset(int(s) for s in conn.get("successStatuses", DEFAULT_SUCCESS_STATUSES))
        self.timeout: float = float(conn.get("timeoutMs", 10000)) / 1000.0
        self.max_connections: int = int(conn.get("maxConnections", 100))
        self.backlog_limit = self.max_connections * BACKLOG_PER_CONNECTION
        self.heartbeat_s: float = float(conn.get("heartbeatIntervalMs", 60000)) / 1000.0 if self.iotflow else 0.0
        self.on_conflict: str = str(conn.get("onConflict", "fail"))
        self.qos: int = int(conn.get("qos", 0))
        self.keepalive: int = int(conn.get("keepAlive", 60))
        self.mqtt_version: str = str(conn.get("mqttVersion", "3.1.1"))
        self.latency = Histogram()
        self.heartbeats_sent = 0
        self.heartbeats_failed = 0
        self._token: str | None = fleet.credentials.password or conn.get("token")
        self._tls = fleet_tls_context(fleet)  # connection.tls, paths resolved like MQTT fleets (tls_dir)
        fixed = {"modelId": fleet.model.id, "fleet": fleet.name, "token": self._token or ""}
        self._base = self.url.rstrip("/")
        self._url = _DeviceTemplate(self.url, fixed)
        self._shared_url = URL(format_embedded(self._url.shared)) if self._url.shared is not None else None
        self._headers = _DeviceTemplate(dict(conn.get("headers") or {}), fixed)
        self._session_headers = self._fleet_headers(conn)
        self._registration = compile_template(dict(conn.get("registration") or {}))
        self._endpoints = {path: URL(self._base + path) for path in (TELEMETRY_PATH, HEARTBEAT_PATH)}
        self._session: aiohttp.ClientSession | None = None
        # (kind, device, conn gen, body, enqueued at, attempt, first attempt at)
        self._backlog: deque[tuple[int, Device, int, bytes, float, int, float]] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        # Permits for the pool's connections: each worker and each connect-phase request holds one. A free
        # permit goes to a waiting connect-phase request first, so registrations never queue behind telemetry.
        self._free = self.max_connections
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._closing = False
        self._cursor = 0
        self._sweep_s = self._sweep_period()
        self._bad_streak = 0  # consecutive connection errors / timeouts of the pool
        self._next_health = 0.0
        self._probing = False
        self.pools_replaced = 0
        self._retired: set[aiohttp.ClientSession] = set()  # replaced pools, closed when their requests are done

    # -- configuration ------------------------------------------------------------------------------------

    def _fleet_headers(self, conn: Mapping[str, Any]) -> dict[str, str]:
        """Headers every request of the fleet carries (the session's defaults)."""
        names = self._headers.template.names
        if "token" in names and not self._token:
            raise ConfigurationError(
                f"Fleet '{self.fleet.name}': connection.headers use ${{token}} but there is no token: give "
                "Create Fleet password= (a Secret) or connection.token."
            )
        headers = {
            "User-Agent": "iotix",
            "Content-Type": default_content_type(conn, self.fleet.model.payload.format),
        }
        if self._token and not self.iotflow:
            headers["Authorization"] = f"Bearer {self._token}"
        given = {str(k).lower() for k in (conn.get("headers") or {})}  # the model's headers win
        headers = {k: v for k, v in headers.items() if k.lower() not in given}
        if self._headers.shared is not None:
            headers.update(_as_headers(self._headers.shared))
        return headers

    def _sweep_period(self) -> float:
        """How long ``periodic`` takes to visit every device once (heartbeats, hybrid keep-alives)."""
        periods = []
        if self.heartbeat_s:
            periods.append(self.heartbeat_s / 10)
        if self.hybrid:
            periods.append(self.keepalive / 4)
        return min(5.0, max(PERIODIC_S, min(periods))) if periods else 0.0

    @property
    def target(self) -> str:
        return self._base if self.iotflow else self.url

    @property
    def endpoint(self) -> str:
        """Scheme, host and port: per-device paths share one server and one breaker."""
        url = URL(self.url.replace("${", "_").replace("}", "_"))
        return f"{url.scheme}://{url.host}:{url.port}"

    def make_encoder(self) -> Encoder | None:
        if self.iotflow:
            return make_iotflow_encoder(self.fleet.model)
        body = self.fleet.connection.get("bodyTemplate")
        if body is None:
            return None
        return make_template_encoder(compile_template(body), self.fleet.model, self.fleet.name, self.fleet.by_id)

    def _ensure_session(self) -> aiohttp.ClientSession:
        """The fleet's pooled session, created on first use on the running loop."""
        session = self._session
        if session is None or session.closed:
            self._closing = False
            connector = aiohttp.TCPConnector(
                limit=self.max_connections, limit_per_host=0, keepalive_timeout=30, ssl=self._tls or True
            )
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._session_headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                raise_for_status=False,
            )
        return session

    # -- connection ---------------------------------------------------------------------------------------

    async def connect(self, device: Device) -> None:
        self._ensure_session()
        conn: HttpConn | None = device.conn
        if conn is None:
            conn = device.conn = HttpConn()
        if conn.url is None and self._url.per_device and not self._url.per_request:
            conn.url = URL(format_embedded(self._url.render(device)))
        if conn.headers is None and self._headers.per_device and not self._headers.per_request:
            conn.headers = _as_headers(self._headers.render(device))
        if self.iotflow:
            if conn.api_key is None:
                await self._register(device, conn)
            if self.hybrid:
                await self._open_mqtt(device, conn)
            conn.beat_due = asyncio.get_running_loop().time() + self.heartbeat_s
        conn.active = True

    def is_connected(self, device: Device) -> bool:
        conn: HttpConn | None = device.conn
        if conn is None or not conn.active:
            return False
        return conn.mqtt is None or conn.mqtt.is_open

    async def disconnect(self, device: Device) -> None:
        conn: HttpConn | None = device.conn
        if conn is None:
            return
        conn.active = False  # requests already handed over still go out (a graceful stop)
        if conn.mqtt is not None:
            device.conn_intentional_close = True
            conn.mqtt.close_gracefully()

    def drop(self, device: Device) -> None:
        conn: HttpConn | None = device.conn
        if conn is None:
            return
        conn.active = False
        conn.gen += 1  # what still waits for a connection is lost with the device
        if conn.mqtt is not None:
            device.conn_intentional_close = True
            conn.mqtt.abort()

    # -- IoTFlow registration -----------------------------------------------------------------------------

    def _registration_body(self, device: Device, name: str) -> dict[str, Any]:
        model = self.fleet.model
        body: dict[str, Any] = {
            "name": name,
            "description": model.description or model.name,
            "device_type": model.type,
            "firmware_version": model.version,
        }
        rendered = self._registration.render(device.variables())
        body.update({k: format_embedded(v) for k, v in rendered.items()})
        return body

    async def _register(self, device: Device, conn: HttpConn) -> None:
        """Register the device and keep its API key; a taken name follows ``onConflict``."""
        url = self._base + REGISTER_PATH
        name = device.id
        for suffix in range(MAX_SUFFIX + 1):
            if suffix:
                name = f"{device.id}_{suffix}"
            try:
                status, data, snippet = await self._call(
                    "POST", url, device, json_body=self._registration_body(device, name)
                )
            except _NoAnswer:
                conn.name = name  # the backend may have stored it: a later 409 for this name is explained
                raise
            if status in (200, 201):
                key, registered = _registered_key(data, name)
                if key is None:
                    raise TransportError(
                        f"device '{device.id}': registration at {url} answered HTTP {status} without device.api_key"
                    )
                self._keep_key(device, conn, registered, key)
                return
            if status != 409:
                raise TransportError(f"device '{device.id}': registration at {url} failed: HTTP {status}: {snippet}")
            if self.on_conflict == "reuse":
                self._reuse_key(device, conn, name)
                return
            if self.on_conflict != "suffix":
                raise TransportError(
                    f"device '{device.id}': the name '{name}' is already registered at {self._base}"
                    f"{_own_attempt(conn, name)} and onConflict is 'fail' (use 'suffix' to register as name_1, "
                    "name_2, ..., or 'reuse')"
                )
        raise TransportError(
            f"device '{device.id}': names '{device.id}' to '{name}' are all registered at {self._base} "
            f"(onConflict 'suffix' tries {MAX_SUFFIX} suffixes)"
        )

    def _keep_key(self, device: Device, conn: HttpConn, name: str, key: str) -> None:
        conn.name, conn.api_key = name, key
        _api_keys[(self._base, name)] = key
        log.debug("device %s registered at %s as %r (API key %s...)", device.id, self._base, name, key[:4])

    def _reuse_key(self, device: Device, conn: HttpConn, name: str) -> None:
        key = _api_keys.get((self._base, name))
        if key is None:
            raise TransportError(
                f"device '{device.id}': the name '{name}' is already registered at {self._base}"
                f"{_own_attempt(conn, name)} and onConflict 'reuse' has no API key for it: IoTFlow cannot hand out "
                "an existing device's key, so 'reuse' works only for names this process registered itself (use "
                "'suffix', other ids, or a fresh backend)"
            )
        conn.name, conn.api_key = name, key
        log.debug("device %s reuses the API key of %r at %s (%s...)", device.id, name, self._base, key[:4])

    async def _call(
        self, method: str, url: str, device: Device, json_body: Any = None, key: str | None = None
    ) -> tuple[int, Any, str]:
        """One request of the connect phase: (status, parsed JSON or None, body snippet).

        It takes the next free connection ahead of queued telemetry. Raises :class:`TransportError`, and
        ``_NoAnswer`` when the request may have reached the server but no answer came.
        """
        session = self._ensure_session()
        headers = {"X-API-Key": key} if key else None
        await self._take_permit()
        try:
            async with session.request(method, url, json=json_body, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
        except asyncio.TimeoutError:
            raise _NoAnswer(f"device '{device.id}': no answer from {method} {url} within {self.timeout:g} s") from None
        except aiohttp.ServerDisconnectedError as err:
            raise _NoAnswer(f"device '{device.id}': {method} {url} failed: {_client_error(err)}") from None
        except aiohttp.ClientError as err:
            raise TransportError(f"device '{device.id}': {method} {url} failed: {_client_error(err)}") from None
        finally:
            self._pass_on()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        return status, data, self._scrub(raw[:SNIPPET_BYTES], key)

    # -- hybrid: telemetry over MQTT ----------------------------------------------------------------------

    async def _open_mqtt(self, device: Device, conn: HttpConn) -> None:
        """Fetch the device's MQTT credentials (once) and open its MQTT connection."""
        if conn.mqtt is None:
            conn.mqtt = await self._new_mqtt_client(device, conn)
        assert conn.broker is not None
        device.conn_intentional_close = False
        try:
            await conn.mqtt.open(*conn.broker, keepalive=self.keepalive, timeout=self.timeout)
        except TransportError as err:
            raise TransportError(f"device '{device.id}': {err}") from None

    async def _new_mqtt_client(self, device: Device, conn: HttpConn) -> LoopClient:
        from iotix.transport.mqtt import watch_device_client
        from iotix.transport.paho_driver import LoopClient

        url = self._base + MQTT_CREDENTIALS_PATH
        status, data, snippet = await self._call("GET", url, device, key=conn.api_key)
        if status != 200:
            raise TransportError(f"device '{device.id}': GET {url} failed: HTTP {status}: {snippet}")
        creds = data.get("credentials") if isinstance(data, dict) else None
        topics = creds.get("topics") if isinstance(creds, dict) else None
        topic = topics.get("telemetry_publish") if isinstance(topics, dict) else None
        if not isinstance(creds, dict) or not topic:
            raise TransportError(
                f"device '{device.id}': GET {url} answered without credentials.topics.telemetry_publish"
            )
        conn.broker = (str(creds.get("mqtt_host") or "localhost"), int(creds.get("mqtt_port") or 1883))
        client_id = str(creds.get("client_id") or f"iotix-{conn.name or device.id}")
        client = LoopClient(asyncio.get_running_loop(), client_id, mqtt_version=self.mqtt_version, userdata=device)
        if creds.get("username"):
            client.username_pw_set(str(creds["username"]), creds.get("password"))
        watch_device_client(client, count_acks=self.qos > 0)
        device.topic = str(topic)
        return client

    def _publish_mqtt(self, device: Device, client: LoopClient, payload: bytes) -> bool:
        from iotix.transport.mqtt import publish_telemetry  # MQTT only for hybrid fleets

        return publish_telemetry(device, client, payload, self.qos)

    # -- sending ------------------------------------------------------------------------------------------

    def send(
        self, device: Device, payload: bytes, topic: str | None = None, qos: int | None = None, retain: bool = False
    ) -> bool:
        conn: HttpConn | None = device.conn
        if conn is None or not conn.active:
            return False
        if conn.mqtt is not None:
            return self._publish_mqtt(device, conn.mqtt, payload)
        return self._enqueue(_TELEMETRY, device, conn, payload)

    def _enqueue(
        self, kind: int, device: Device, conn: HttpConn, body: bytes, attempt: int = 0, first_try: float = 0.0
    ) -> bool:
        """Queue a request; start a worker while fewer than ``maxConnections`` run. False when the FIFO is full."""
        backlog = self._backlog
        now = asyncio.get_running_loop().time()
        if len(backlog) >= self.backlog_limit:
            reason = (
                f"not sent: {len(backlog)} requests already wait for the {self.max_connections} connections "
                f"to {self.target} (the server answers too slowly)"
            )
            if kind == _TELEMETRY and attempt == 0:
                device.last_error = reason  # the fleet counts the refused message as failed
            else:
                self._failed(kind, device, reason, "backlog_full", body, None, fault=False)
            return False
        backlog.append((kind, device, conn.gen, body, now, attempt, first_try or now))
        if self._free > 0:
            self._free -= 1
            self._spawn_worker()
        return True

    def _spawn_worker(self) -> None:
        """Start a worker with a permit the caller took."""
        task = asyncio.get_running_loop().create_task(self._work())
        self._workers.add(task)
        task.add_done_callback(self._workers.discard)

    async def _work(self) -> None:
        """Send queued requests one after the other; hand the permit on when done or when a connect waits."""
        backlog = self._backlog
        try:
            while backlog and not self._urgent:
                kind, device, gen, body, t0, attempt, first_try = backlog.popleft()
                try:
                    await self._perform(kind, device, gen, body, t0, attempt, first_try)
                except asyncio.CancelledError:
                    if kind == _TELEMETRY:
                        reason = "no answer: the fleet stopped before the server answered (it may have stored it)"
                        self.fleet.delivery_failed(device, reason, "stopped", len(body))
                    raise
                except Exception as err:  # a bug must not kill the worker silently
                    self.fleet.report_error(f"HTTP request of device '{device.id}' failed unexpectedly: {err!r}")
        finally:
            self._pass_on()

    async def _take_permit(self) -> None:
        """Wait for a connection of the pool, ahead of queued requests."""
        if self._free > 0:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._urgent.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._pass_on()  # it was handed a permit just before the cancellation
            raise

    def _pass_on(self) -> None:
        """A permit comes free: to a waiting connect-phase request, else to a new worker, else back to the pool."""
        while self._urgent:
            waiter = self._urgent.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        if self._backlog and not self._closing:
            self._spawn_worker()
            return
        self._free += 1

    def _route(self, kind: int, device: Device, conn: HttpConn) -> tuple[str, URL, dict[str, str] | None]:
        """Method, URL and per-request headers (on top of the session's) of one request."""
        if self.iotflow:
            path = TELEMETRY_PATH if kind == _TELEMETRY else HEARTBEAT_PATH
            return "POST", self._endpoints[path], {"X-API-Key": conn.api_key or ""}
        url = conn.url or self._shared_url
        if url is None:  # the URL uses ${seq} or ${ts}
            url = URL(format_embedded(self._url.render(device)))
        headers = conn.headers
        if headers is None and self._headers.per_request:
            headers = _as_headers(self._headers.render(device))
        return self.method, url, headers

    async def _perform(
        self, kind: int, device: Device, gen: int, body: bytes, t0: float, attempt: int, first_try: float
    ) -> None:
        conn: HttpConn = device.conn
        if gen != conn.gen:
            reason = "not sent: the device was dropped while its request waited for a connection"
            self._failed(kind, device, reason, "dropped", body, None, fault=False)
            return
        loop = asyncio.get_running_loop()
        waited = loop.time() - t0
        if waited > self.timeout:
            reason = (
                f"not sent: waited {waited:.1f} s for one of the {self.max_connections} connections to {self.target}"
            )
            self._failed(kind, device, reason, "queue_timeout", body, None, fault=False)
            return

        def failed(reason: str, code: str, fault: bool = True) -> None:
            if code in ("timeout", "connection_error"):
                self._bad_streak += 1
            self._failed(kind, device, reason, code, body, loop.time() - t0, fault, conn, attempt, first_try)

        method, url, headers = self._route(kind, device, conn)
        session = self._ensure_session()
        try:
            async with session.request(method, url, data=body, headers=headers) as resp:
                status = resp.status
                if status in self.success:
                    await resp.read()
                    snippet = None
                else:
                    snippet = await resp.content.read(SNIPPET_BYTES)
        except asyncio.TimeoutError:
            failed(f"no answer from {method} {url} within {self.timeout:g} s", "timeout")
            return
        except aiohttp.ClientError as err:
            failed(f"{method} {url} failed: {_client_error(err)}", "connection_error")
            return
        self._bad_streak = 0
        if snippet is None:
            self._delivered(kind, device, loop.time() - t0, len(body))
            return
        reason = f"HTTP {status} from {method} {url}: {self._scrub(snippet, conn.api_key)}"
        if self.iotflow and status in (401, 403):
            reason += " (the API key was rejected: revoked or unknown)"
        # The server is to blame (retry, breaker) for 5xx and 429; other statuses are the request's fault.
        failed(reason, f"http_{status}", status >= 500 or status == 429)

    def _delivered(self, kind: int, device: Device, latency: float, nbytes: int) -> None:
        if kind == _TELEMETRY:
            self.latency.record(latency)
            self.fleet.delivery.succeeded(device, nbytes, latency)
        else:
            self.heartbeats_sent += 1

    def _failed(
        self,
        kind: int,
        device: Device,
        reason: str,
        code: str,
        body: bytes,
        latency: float | None,
        fault: bool = True,
        conn: HttpConn | None = None,
        attempt: int = 0,
        first_try: float | None = None,
    ) -> None:
        if kind == _TELEMETRY:

            def resend(next_attempt: int) -> None:
                assert conn is not None
                if conn.active:
                    self._enqueue(kind, device, conn, body, next_attempt, first_try or 0.0)
                else:
                    self.fleet.delivery_failed(device, f"not retried, the device went away: {reason}", "stopped")

            self.fleet.delivery.failed(
                device,
                reason,
                code,
                len(body),
                latency,
                fault=fault,
                resend=resend if conn is not None else None,
                attempt=attempt,
                first_try=first_try,
            )
        else:
            self.heartbeats_failed += 1
            device.last_error = f"heartbeat: {reason}"

    def _scrub(self, snippet: bytes, key: str | None = None) -> str:
        """A body snippet as text with the token and the API key masked (a server may echo them)."""
        text = snippet.decode("utf-8", "replace")
        for secret in (self._token, key):
            if secret:
                text = text.replace(secret, "***")
        return text

    # -- housekeeping -------------------------------------------------------------------------------------

    def periodic(self, now: float) -> None:
        """Pool health; heartbeats that are due and hybrid MQTT keep-alives, for a slice of the devices per call."""
        if now >= self._next_health:
            self._next_health = now + HEALTH_INTERVAL_S
            if self._bad_streak >= HEALTH_STREAK and self._session is not None and not self._probing:
                self._probing = True
                asyncio.get_running_loop().create_task(self._check_pool())
        devices = self.fleet.devices
        n = len(devices)
        if not n or not self._sweep_s:
            return
        chunk = math.ceil(n * PERIODIC_S / self._sweep_s)
        start = self._cursor % n
        beat = self.heartbeat_s
        for device in devices[start : start + chunk]:
            conn: HttpConn | None = device.conn
            if conn is None or not conn.active:
                continue
            if conn.mqtt is not None:
                conn.mqtt.misc()
            if beat and now >= conn.beat_due and device.state is DeviceState.RUNNING:
                conn.beat_due = now + beat
                self._enqueue(_HEARTBEAT, device, conn, b"{}")
        self._cursor = start + chunk

    async def _check_pool(self) -> None:
        """The pool keeps failing: if the server accepts a new connection, its kept-alive ones are stale
        (a restarted server, a proxy that dropped them): replace the pool. Requests in flight finish on the old
        one, which closes after ``timeoutMs``."""
        url = URL(self.endpoint)
        try:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(url.host, url.port), 2.0)
            except (OSError, asyncio.TimeoutError):
                return  # the server is down: a new pool would not do better
            writer.close()
            old, self._session = self._session, None
            self._bad_streak = 0
            if old is None or self._closing:
                return
            self.pools_replaced += 1
            log.warning(
                "fleet %s: HTTP connection pool to %s replaced (its connections kept failing, the server accepts new "
                "ones)",
                self.fleet.name,
                self.endpoint,
            )
            self._retired.add(old)
            await asyncio.sleep(self.timeout)
            if old in self._retired:
                self._retired.discard(old)
                await old.close()
        finally:
            self._probing = False

    async def close(self) -> None:
        """Let requests in flight finish (briefly), fail what is left, close the pool."""
        loop = asyncio.get_running_loop()
        self._closing = True
        deadline = loop.time() + min(self.timeout, STOP_DRAIN_S)
        while self._workers and loop.time() < deadline:
            await asyncio.sleep(0.02)
        workers = list(self._workers)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        while self._backlog:
            kind, device, _gen, body, *_ = self._backlog.popleft()
            reason = "not sent: the fleet stopped while the request waited for a connection"
            self._failed(kind, device, reason, "stopped", body, None, fault=False)
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        for old in list(self._retired):
            self._retired.discard(old)
            await old.close()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "flow": self.flow,
            "telemetryOver": "mqtt" if self.hybrid else "http",
            "connectionsInUse": self.max_connections - self._free,
            "requestsWaiting": len(self._backlog),
            "requestLatencyMs": self.latency.summary(),
            "heartbeatsSent": self.heartbeats_sent,
            "heartbeatsFailed": self.heartbeats_failed,
            "poolsReplaced": self.pools_replaced,
        }


def _registered_key(data: Any, name: str) -> tuple[str | None, str]:
    """(API key, registered name) from a registration answer ``{"device": {"api_key", "name"}}``."""
    device = data.get("device") if isinstance(data, dict) else None
    if not isinstance(device, dict):
        return None, name
    key = device.get("api_key")
    return (str(key) if key else None), str(device.get("name") or name)


class _NoAnswer(TransportError):
    """A request that may have reached the server, but no answer came (timeout, connection closed)."""


def _own_attempt(conn: HttpConn, name: str) -> str:
    """Words for a 409 on a name whose own earlier registration got no answer (it was probably stored)."""
    if conn.api_key is None and conn.name == name:
        return ", probably by this device's own earlier attempt that got no answer"
    return ""


def _client_error(err: aiohttp.ClientError) -> str:
    """A connection-level error in words (no request headers: they may hold secrets)."""
    if isinstance(err, aiohttp.ClientConnectorError):
        return f"cannot connect to {err.host}:{err.port}: {err.os_error.strerror or err.os_error}"
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
