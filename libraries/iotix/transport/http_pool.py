"""The pooled HTTP client that every HTTP flow shares: one aiohttp session per fleet, its FIFO and its health.

The flows are subclasses of :class:`HttpTransportBase`: the generic flow (:mod:`iotix.transport.http`, which
also holds the registry's ``create``) and the IoTFlow flows (:mod:`iotix.transport.iotflow`). A subclass says
what a telemetry request is (:meth:`~HttpTransportBase._route`), what connecting a device involves
(:meth:`~HttpTransportBase._connect_device`) and what ``periodic`` does for each device
(:meth:`~HttpTransportBase._visit`); everything below is the same for all of them.

One :class:`aiohttp.ClientSession` per fleet (keep-alive, at most ``maxConnections`` open connections) is
created lazily on the runtime loop and closed by :meth:`HttpTransportBase.close`. A device holds no socket of
its own: its per-device state (its link's ``conn``) is a small :class:`HttpConn` of its flow (under 100 bytes
for the generic flow, plus its URL or headers when they name the device).

Sending (``send`` never blocks)
    A message goes into the fleet's FIFO of requests and at most ``maxConnections`` worker tasks take requests
    from it, one at a time each, so requests in flight never exceed the pool and there is no task per message.
    Beyond the bound, requests wait in the FIFO, which holds at most ``BACKLOG_PER_CONNECTION`` requests per
    connection: when it is full ``send`` refuses the message (:meth:`~iotix.transport.base.Outcomes.not_sent`
    with the reason: the fleet counts it in ``messagesFailed`` and the device's last error says why), and a
    request that waited longer than ``timeoutMs`` for a connection fails without being sent. A slow or dead
    server therefore shows up as counted failures with the reason, never as memory that grows without bound or
    as a hang. Requests of the connect phase (IoTFlow registration, MQTT credentials: :meth:`_call`) take the
    next free connection ahead of that FIFO, so devices still come up while telemetry saturates the pool.

Network faults (``spec.faults``, :mod:`iotix.fault`)
    When the fleet has a fault layer, every connection of the pool goes through a fault proxy on the runtime
    loop (:class:`~iotix.fault.proxy.UpstreamProxies`: one :class:`~iotix.fault.proxy.TcpProxy` per upstream
    ``host:port`` the fleet dials, all through the fleet's FaultSet). The session's connector maps each
    ``host:port`` to its proxy where aiohttp resolves names (:class:`FaultConnector`), so URLs, the ``Host``
    header, TLS SNI and certificate checks are those of the real server. The proxy connects upstream before
    aiohttp dials it, so a server that refuses or cannot be reached fails the request with its own error, as
    without the layer. The connections are shared by the devices: faults act on the whole fleet.

Outcomes (all through the transport's :class:`~iotix.transport.base.Outcomes`)
    A status in ``successStatuses`` is ``acknowledged`` with the message's size and its latency, from hand-over
    to response (waiting for a connection included), which also goes into :attr:`HttpTransportBase.latency`.
    Any other status, a connection error or a timeout is ``failed`` with ``HTTP <status> from <method> <url>:
    <first 200 bytes of the body>`` or the reason, the code ``http_<status>``, ``connection_error`` or
    ``timeout``, and a ``resend`` callback; the endpoint is to blame (``fault``: retried, counted by the
    circuit breaker) for 5xx, 429, connection errors and timeouts, not for other statuses. Request headers
    are never put in messages or logs (they may hold the token), and the token and API keys are masked in
    body snippets. A failed heartbeat counts in ``heartbeatsFailed`` and becomes the device's last error.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import math
import socket
import time
from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from yarl import URL

from iotix.behavior import compile_template, format_embedded
from iotix.errors import ConfigurationError
from iotix.fault.proxy import UpstreamProxies
from iotix.observe.histogram import LatencyRecorder
from iotix.transport.base import Link, Outcomes, Transport, TransportError, TransportSpec
from iotix.transport.tls import ClientTls, FleetTls

if TYPE_CHECKING:
    from iotix.model.types import DeviceModel

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
#: Health of the pooled connections: checked this often (the default of ``health_interval_s``); after this many
#: consecutive connection errors or timeouts, if the server accepts a fresh TCP connection, the pool (its
#: kept-alive connections) is replaced.
HEALTH_INTERVAL_S = 5.0
HEALTH_STREAK = 5

#: Kinds of queued requests: telemetry (reported to the outcomes), heartbeats and events (a behavior's message to
#: the URL or path it names), both counted by the transport.
TELEMETRY = 0
HEARTBEAT = 1
EVENT = 2

_PER_REQUEST = frozenset({"seq", "ts"})
_PER_DEVICE = frozenset({"deviceId", "index", "seq", "ts"})
_CONTENT_TYPES = {"json": "application/json", "cbor": "application/cbor", "raw": "application/octet-stream"}


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


#: Compact JSON (no ASCII escaping, no cycle check; unknown types as ``str``).
to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False, default=str).encode


def binary_fields(model: DeviceModel) -> tuple[str, ...]:
    """Names of the model's binary telemetry fields."""
    return tuple(f.name for f in model.telemetry if f.type == "binary")


def with_base64(values: dict[str, Any], binary: tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``values`` with the binary fields as base64 text."""
    out = dict(values)
    for name in binary:
        value = out.get(name)
        if value is not None:
            out[name] = base64.b64encode(value).decode("ascii")
    return out


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


def _client_error(err: aiohttp.ClientError) -> str:
    """A connection-level error in words (no request headers: they may hold secrets)."""
    if isinstance(err, aiohttp.ClientConnectorError):
        return f"cannot connect to {err.host}:{err.port}: {err.os_error.strerror or err.os_error}"
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class NoAnswer(TransportError):
    """A request that may have reached the server, but no answer came (timeout, connection closed)."""


class FaultConnector(aiohttp.TCPConnector):
    """aiohttp's TCP connector with every ``host:port`` it dials mapped to the fleet's fault proxy for it.

    aiohttp asks a resolver (:class:`aiohttp.abc.AbstractResolver`) only for host names: a URL with an IP
    address (``http://127.0.0.1:8080``) never reaches it. So this connector overrides the one method that
    turns every host, name or address, into addresses to dial (``_resolve_host``, aiohttp 3.x) instead of
    passing a resolver; :func:`check_fault_connector` refuses an aiohttp without it, and the unit tests send
    requests to both kinds of URL through it. Everything else (the URL, ``Host``, TLS with the server's name,
    the connection key in errors) stays the real server's.
    """

    def __init__(self, proxies: UpstreamProxies, connect_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fault_proxies = proxies
        self._fault_timeout = connect_timeout

    async def _resolve_host(self, host: str, port: int, traces: Any = None) -> list[Any]:  # type: ignore[override]
        # The proxy connects upstream first: a refused or unreachable server raises its own OSError here, which
        # aiohttp reports for the real host:port (ClientConnectorError), as it would without the proxy.
        proxy_host, proxy_port = await self._fault_proxies.route(host.rstrip("."), port, self._fault_timeout)
        return [
            {
                "hostname": host,
                "host": proxy_host,
                "port": proxy_port,
                "family": socket.AF_INET6 if ":" in proxy_host else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]


def check_fault_connector() -> None:
    """A :class:`TransportError` when the installed aiohttp lacks the connector method the fault layer needs."""
    import inspect

    method = getattr(aiohttp.TCPConnector, "_resolve_host", None)
    params = list(inspect.signature(method).parameters) if method is not None else []
    if params[:3] != ["self", "host", "port"]:
        raise TransportError(
            f"network faults on HTTP fleets need aiohttp's TCPConnector._resolve_host(host, port), which aiohttp "
            f"{aiohttp.__version__} does not have; create the fleet without the fault layer"
        )


# --- per-device state ---------------------------------------------------------------------------------------


class HttpConn:
    """What an HTTP device keeps between requests (a flow's subclass adds its own state)."""

    __slots__ = ("active", "gen", "headers", "url")

    def __init__(self) -> None:
        self.active = False  # connected (sending allowed)
        self.gen = 0  # bumped by a dropout: requests still waiting from before are not sent
        self.url: URL | None = None  # the device's URL when it names the device (else the fleet's)
        self.headers: dict[str, str] | None = None  # the device's own headers (templated headers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(active={self.active})"


class DeviceTemplate:
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

    def render(self, link: Link) -> Any:
        variables = {**link.variables(), **self.fixed}
        if self.per_request:
            variables["seq"] = link.seq
            variables["ts"] = int(time.time() * 1000)
        return self.template.render(variables)


def as_headers(rendered: Any) -> dict[str, str]:
    """A rendered headers template as request headers."""
    return {str(k): format_embedded(v) for k, v in rendered.items()}


# --- the pooled transport -----------------------------------------------------------------------------------


class HttpTransportBase(Transport):
    """HTTP devices of one fleet behind one pooled aiohttp session (see the module docstring).

    ``health_interval_s``: how often the pool's health is checked (:data:`HEALTH_INTERVAL_S` by default).
    """

    protocol = "http"
    request_based = True
    #: what ``describe()`` shows as ``telemetryOver``
    telemetry_over = "http"
    #: the per-device state this flow keeps in ``link.conn``
    conn_type: type[HttpConn] = HttpConn
    #: whether the token (the fleet's password or ``connection.token``) goes out as ``Authorization: Bearer``
    bearer_token = True

    def __init__(
        self,
        spec: TransportSpec,
        links: Sequence[Link],
        outcomes: Outcomes,
        *,
        health_interval_s: float = HEALTH_INTERVAL_S,
    ) -> None:
        super().__init__(spec, links, outcomes)
        conn = spec.connection
        self.flow: str = str(conn.get("flow", "generic"))
        self.url: str = override_host_port(str(conn["url"]), conn.get("host"), conn.get("port"))
        self.success: frozenset[int] = frozenset(int(s) for s in conn.get("successStatuses", DEFAULT_SUCCESS_STATUSES))
        self.timeout: float = float(conn.get("timeoutMs", 10000)) / 1000.0
        self.max_connections: int = int(conn.get("maxConnections", 100))
        self.backlog_limit = self.max_connections * BACKLOG_PER_CONNECTION
        self.health_interval_s = health_interval_s
        self.latency = LatencyRecorder()
        self.heartbeats_sent = 0
        self.heartbeats_failed = 0
        self.events_sent = 0
        self.events_failed = 0
        self._event_urls: dict[str, URL] = {}
        self._token: str | None = spec.credentials.password or conn.get("token")
        self._tls_settings = self._fleet_tls(spec)  # connection.tls, paths resolved like MQTT fleets (tls_dir)
        self._tls = self._tls_settings.context if self._tls_settings is not None else None
        fixed = {"modelId": spec.model.id, "fleet": spec.fleet, "token": self._token or ""}
        self._base = self.url.rstrip("/")
        self._url = DeviceTemplate(self.url, fixed)
        self._shared_url = URL(format_embedded(self._url.shared)) if self._url.shared is not None else None
        self._headers = DeviceTemplate(dict(conn.get("headers") or {}), fixed)
        self._session_headers = self._fleet_headers(conn)
        self._session: aiohttp.ClientSession | None = None
        # (kind, link, conn gen, body, enqueued at, attempt, first attempt at, an event's destination)
        self._backlog: deque[tuple[int, Link, int, bytes, float, int, float, str | None]] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        # Permits for the pool's connections: each worker and each connect-phase request holds one. A free
        # permit goes to a waiting connect-phase request first, so registrations never queue behind telemetry.
        self._free = self.max_connections
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._closing = False
        self._cursor = 0
        self._bad_streak = 0  # consecutive connection errors / timeouts of the pool
        self._next_health = 0.0
        self._probing = False
        self.pools_replaced = 0
        self._retired: set[aiohttp.ClientSession] = set()  # replaced pools, closed when their requests are done
        #: the fault proxies every connection goes through (None without the fleet's fault layer)
        self._fault_proxies: UpstreamProxies | None = None
        if spec.faults is not None:
            check_fault_connector()
            self._fault_proxies = UpstreamProxies(spec.faults, name=f"fleet '{spec.fleet}'")

    # -- configuration ------------------------------------------------------------------------------------

    @staticmethod
    def _fleet_tls(spec: TransportSpec) -> ClientTls | None:
        """The fleet's one TLS setting (``connection.tls``), refused for a plain ``http://`` URL: never ignored."""
        tls = FleetTls.of(spec)
        if tls is None:
            return None
        url = str(spec.connection.get("url", ""))
        if url.lower().startswith("http://"):
            raise ConfigurationError(
                f"Fleet '{spec.fleet}': connection.tls is set but connection.url {url!r} is http://; TLS applies "
                "to https:// URLs only: use https://"
            )
        return tls.shared()

    def _client_error(self, err: aiohttp.ClientError) -> str:
        """A connection-level error in words; a failed TLS handshake explained (unknown CA, host name, ...)."""
        if isinstance(err, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)):
            cause = getattr(err, "certificate_error", None) or getattr(err, "os_error", None)
            host = str(getattr(err, "host", "") or "")
            where = f"{host}:{getattr(err, 'port', '')}"
            if self._tls_settings is not None:
                why = self._tls_settings.explain(cause, host).replace("the broker", "the server")
            else:
                why = f"{cause} (the system's CAs were used: set connection.tls.caFile to trust another CA)"
            return f"TLS handshake with {where} failed for fleet '{self.name}': {why}"
        return _client_error(err)

    def _fleet_headers(self, conn: Mapping[str, Any]) -> dict[str, str]:
        """Headers every request of the fleet carries (the session's defaults)."""
        names = self._headers.template.names
        if "token" in names and not self._token:
            raise ConfigurationError(
                f"Fleet '{self.name}': connection.headers use ${{token}} but there is no token: give "
                "Create Fleet password= (a Secret) or connection.token."
            )
        headers = {
            "User-Agent": "iotix",
            "Content-Type": default_content_type(conn, self.spec.model.payload.format),
        }
        if self._token and self.bearer_token:
            headers["Authorization"] = f"Bearer {self._token}"
        given = {str(k).lower() for k in (conn.get("headers") or {})}  # the model's headers win
        headers = {k: v for k, v in headers.items() if k.lower() not in given}
        if self._headers.shared is not None:
            headers.update(as_headers(self._headers.shared))
        return headers

    def _sweep_periods(self) -> list[float]:
        """How often each device wants :meth:`_visit` (heartbeats, keep-alives); empty: never."""
        return []

    @functools.cached_property
    def _sweep_s(self) -> float:
        """How long ``periodic`` takes to visit every device once (0: it visits none)."""
        periods = self._sweep_periods()
        return min(5.0, max(PERIODIC_S, min(periods))) if periods else 0.0

    @property
    def target(self) -> str:
        return self.url

    def descriptors(self) -> int:
        """The pool's connections (``maxConnections``), however many devices share them.

        Through the fault layer each connection holds three sockets in this process (aiohttp's, the proxy's
        accepted one and its upstream one), plus the listening socket of each proxy (one per server dialled).
        """
        if self._fault_proxies is None:
            return self.max_connections
        return 3 * self.max_connections + max(1, len(self._fault_proxies.proxies))

    @property
    def endpoint(self) -> str:
        """Scheme, host and port: per-device paths share one server and one breaker."""
        url = URL(self.url.replace("${", "_").replace("}", "_"))
        return f"{url.scheme}://{url.host}:{url.port}"

    def _ensure_session(self) -> aiohttp.ClientSession:
        """The fleet's pooled session, created on first use on the running loop."""
        session = self._session
        if session is None or session.closed:
            self._closing = False
            settings: dict[str, Any] = {
                "limit": self.max_connections,
                "limit_per_host": 0,
                "keepalive_timeout": 30,
                "ssl": self._tls or True,
            }
            if self._fault_proxies is not None:
                connector: aiohttp.TCPConnector = FaultConnector(self._fault_proxies, self.timeout, **settings)
            else:
                connector = aiohttp.TCPConnector(**settings)
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._session_headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                raise_for_status=False,
            )
        return session

    # -- connection ---------------------------------------------------------------------------------------

    async def connect(self, link: Link) -> None:
        self._ensure_session()
        conn: HttpConn | None = link.conn
        if conn is None:
            conn = link.conn = self.conn_type()
        await self._connect_device(link, conn)
        conn.active = True

    async def _connect_device(self, link: Link, conn: HttpConn) -> None:
        """What connecting ``link`` involves for this flow before it may send; raise :class:`TransportError`."""

    def is_connected(self, link: Link) -> bool:
        conn: HttpConn | None = link.conn
        return conn is not None and conn.active

    async def disconnect(self, link: Link) -> None:
        conn: HttpConn | None = link.conn
        if conn is None:
            return
        conn.active = False  # requests already handed over still go out (a graceful stop)

    def drop(self, link: Link) -> None:
        conn: HttpConn | None = link.conn
        if conn is None:
            return
        conn.active = False
        conn.gen += 1  # what still waits for a connection is lost with the device

    async def _call(
        self, method: str, url: str, link: Link, json_body: Any = None, key: str | None = None
    ) -> tuple[int, Any, str]:
        """One request of the connect phase: (status, parsed JSON or None, body snippet).

        It takes the next free connection ahead of queued telemetry; ``key`` goes out as ``X-API-Key``. Raises
        :class:`TransportError`, and :class:`NoAnswer` when the request may have reached the server but no
        answer came.
        """
        session = self._ensure_session()
        headers = {"X-API-Key": key} if key else None
        await self._take_permit()
        try:
            async with session.request(method, url, json=json_body, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError:
            raise NoAnswer(f"device '{link.id}': no answer from {method} {url} within {self.timeout:g} s") from None
        except aiohttp.ServerDisconnectedError as err:
            raise NoAnswer(f"device '{link.id}': {method} {url} failed: {self._client_error(err)}") from None
        except aiohttp.ClientError as err:
            raise TransportError(f"device '{link.id}': {method} {url} failed: {self._client_error(err)}") from None
        finally:
            self._pass_on()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        return status, data, self._scrub(raw[:SNIPPET_BYTES], key)

    # -- sending ------------------------------------------------------------------------------------------

    def send(
        self, link: Link, payload: bytes, topic: str | None = None, qos: int | None = None, retain: bool = False
    ) -> bool:
        """Telemetry to the device's URL; with ``topic`` (a behavior's event) a POST to that URL or path instead
        (see :meth:`_event_url`), counted in ``eventsSent`` / ``eventsFailed``, not as telemetry."""
        conn: HttpConn | None = link.conn
        if conn is None or not conn.active:
            return False
        if topic is not None:
            return self._enqueue(EVENT, link, conn, payload, dest=topic)
        return self._enqueue(TELEMETRY, link, conn, payload)

    def _event_url(self, dest: str) -> URL:
        """Where an event goes: ``dest`` when it is an ``http(s)://`` URL, else ``dest`` as a path on the server
        of ``connection.url`` (its scheme, host and port; a leading ``/`` is optional)."""
        url = self._event_urls.get(dest)
        if url is None:
            if dest.lower().startswith(("http://", "https://")):
                url = URL(dest)
            else:
                url = URL(f"{self.endpoint}/{dest.lstrip('/')}")
            if len(self._event_urls) < 1024:
                self._event_urls[dest] = url
        return url

    def _event_route(self, link: Link, conn: HttpConn, dest: str, body: bytes) -> tuple[str, URL, dict[str, str]]:
        """An event is a POST to its URL with the headers of the device's telemetry (its token or API key) and
        a Content-Type for its body: JSON for an object or list, else text."""
        _, _, headers = self._route(TELEMETRY, link, conn)
        text = body.lstrip()[:1] not in (b"{", b"[")
        content_type = "text/plain; charset=utf-8" if text else "application/json"
        return "POST", self._event_url(dest), {**(headers or {}), "Content-Type": content_type}

    def _enqueue(
        self,
        kind: int,
        link: Link,
        conn: HttpConn,
        body: bytes,
        attempt: int = 0,
        first_try: float = 0.0,
        dest: str | None = None,
    ) -> bool:
        """Queue a request; start a worker while fewer than ``maxConnections`` run. False when the FIFO is full."""
        backlog = self._backlog
        now = asyncio.get_running_loop().time()
        if len(backlog) >= self.backlog_limit:
            reason = (
                f"not sent: {len(backlog)} requests already wait for the {self.max_connections} connections "
                f"to {self.target} (the server answers too slowly)"
            )
            if kind == TELEMETRY and attempt == 0:
                self.outcomes.not_sent(link, reason)  # the fleet counts the refused message as failed
            else:
                self._failed(kind, link, reason, "backlog_full", body, None, fault=False)
            return False
        backlog.append((kind, link, conn.gen, body, now, attempt, first_try or now, dest))
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
                kind, link, gen, body, t0, attempt, first_try, dest = backlog.popleft()
                try:
                    await self._perform(kind, link, gen, body, t0, attempt, first_try, dest)
                except asyncio.CancelledError:
                    if kind == TELEMETRY:
                        reason = "no answer: the fleet stopped before the server answered (it may have stored it)"
                        self.outcomes.failed(link, reason, "stopped", len(body), fault=False)
                    raise
                except Exception as err:  # a bug must not kill the worker silently
                    self.outcomes.problem(f"HTTP request of device '{link.id}' failed unexpectedly: {err!r}")
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

    @abstractmethod
    def _route(self, kind: int, link: Link, conn: HttpConn) -> tuple[str, URL, dict[str, str] | None]:
        """Method, URL and per-request headers (on top of the session's) of one request."""

    def _status_reason(self, status: int, method: str, url: URL, snippet: bytes, conn: HttpConn) -> str:
        """The reason reported for an answer whose status is not a success."""
        return f"HTTP {status} from {method} {url}: {self._scrub(snippet)}"

    async def _perform(
        self,
        kind: int,
        link: Link,
        gen: int,
        body: bytes,
        t0: float,
        attempt: int,
        first_try: float,
        dest: str | None = None,
    ) -> None:
        conn: HttpConn = link.conn
        if gen != conn.gen:
            reason = "not sent: the device was dropped while its request waited for a connection"
            self._failed(kind, link, reason, "dropped", body, None, fault=False)
            return
        loop = asyncio.get_running_loop()
        waited = loop.time() - t0
        if waited > self.timeout:
            reason = (
                f"not sent: waited {waited:.1f} s for one of the {self.max_connections} connections to {self.target}"
            )
            self._failed(kind, link, reason, "queue_timeout", body, None, fault=False)
            return

        def failed(reason: str, code: str, fault: bool = True) -> None:
            if code in ("timeout", "connection_error"):
                self._bad_streak += 1
            self._failed(kind, link, reason, code, body, loop.time() - t0, fault, conn, attempt, first_try)

        if kind == EVENT and dest is not None:
            method, url, headers = self._event_route(link, conn, dest, body)
        else:
            method, url, headers = self._route(kind, link, conn)
        session = self._ensure_session()
        try:
            async with session.request(method, url, data=body, headers=headers) as resp:
                status = resp.status
                if status in self.success:
                    await resp.read()
                    snippet = None
                else:
                    snippet = await resp.content.read(SNIPPET_BYTES)
        except TimeoutError:
            failed(f"no answer from {method} {url} within {self.timeout:g} s", "timeout")
            return
        except aiohttp.ClientError as err:
            failed(f"{method} {url} failed: {self._client_error(err)}", "connection_error")
            return
        self._bad_streak = 0
        if snippet is None:
            self._delivered(kind, link, loop.time() - t0, len(body))
            return
        reason = self._status_reason(status, method, url, snippet, conn)
        # The server is to blame (retry, breaker) for 5xx and 429; other statuses are the request's fault.
        failed(reason, f"http_{status}", status >= 500 or status == 429)

    def _delivered(self, kind: int, link: Link, latency: float, nbytes: int) -> None:
        if kind == TELEMETRY:
            self.latency.record(latency)
            self.outcomes.acknowledged(link, nbytes, latency)
        elif kind == EVENT:
            self.events_sent += 1
        else:
            self.heartbeats_sent += 1

    def _failed(
        self,
        kind: int,
        link: Link,
        reason: str,
        code: str,
        body: bytes,
        latency: float | None,
        fault: bool = True,
        conn: HttpConn | None = None,
        attempt: int = 0,
        first_try: float | None = None,
    ) -> None:
        if kind == TELEMETRY:

            def resend(next_attempt: int) -> None:
                assert conn is not None
                if conn.active:
                    self._enqueue(kind, link, conn, body, next_attempt, first_try or 0.0)
                else:
                    self.outcomes.failed(link, f"not retried, the device went away: {reason}", "stopped", fault=False)

            self.outcomes.failed(
                link,
                reason,
                code,
                len(body),
                latency,
                fault=fault,
                resend=resend if conn is not None else None,
                attempt=attempt,
                first_try=first_try,
            )
        elif kind == EVENT:
            self.events_failed += 1
            # Not a telemetry message: nothing to count, only the device's last error (what not_sent sets).
            self.outcomes.not_sent(link, f"event: {reason}")
        else:
            self.heartbeats_failed += 1
            # Not a telemetry message: nothing to count, only the device's last error (what not_sent sets).
            self.outcomes.not_sent(link, f"heartbeat: {reason}")

    def _scrub(self, snippet: bytes, key: str | None = None) -> str:
        """A body snippet as text with the token and the API key masked (a server may echo them)."""
        text = snippet.decode("utf-8", "replace")
        for secret in (self._token, key):
            if secret:
                text = text.replace(secret, "***")
        return text

    # -- housekeeping -------------------------------------------------------------------------------------

    def periodic(self, now: float) -> None:
        """Pool health, and :meth:`_visit` for a slice of the connected devices per call."""
        if now >= self._next_health:
            self._next_health = now + self.health_interval_s
            if self._bad_streak >= HEALTH_STREAK and self._session is not None and not self._probing:
                self._probing = True
                asyncio.get_running_loop().create_task(self._check_pool())
        links = self.links
        n = len(links)
        sweep_s = self._sweep_s
        if not n or not sweep_s:
            return
        chunk = math.ceil(n * PERIODIC_S / sweep_s)
        start = self._cursor % n
        for link in links[start : start + chunk]:
            conn: HttpConn | None = link.conn
            if conn is None or not conn.active:
                continue
            self._visit(link, conn, now)
        self._cursor = start + chunk

    def _visit(self, link: Link, conn: HttpConn, now: float) -> None:
        """A connected device's turn in ``periodic`` (heartbeats, keep-alives); see :meth:`_sweep_periods`."""

    async def _check_pool(self) -> None:
        """The pool keeps failing: if the server accepts a new connection, its kept-alive ones are stale
        (a restarted server, a proxy that dropped them): replace the pool. Requests in flight finish on the old
        one, which closes after ``timeoutMs``."""
        url = URL(self.endpoint)
        faults = self.spec.faults
        if faults is not None and faults.admission(None, count=False) is not None:
            self._probing = False
            return  # the fleet's faults cut the server off (an outage, a blackhole): a new pool would not do better
        try:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(url.host, url.port), 2.0)
            except (TimeoutError, OSError):
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
                self.name,
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
            kind, link, _gen, body, *_ = self._backlog.popleft()
            reason = "not sent: the fleet stopped while the request waited for a connection"
            self._failed(kind, link, reason, "stopped", body, None, fault=False)
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        for old in list(self._retired):
            self._retired.discard(old)
            await old.close()
        if self._fault_proxies is not None:
            self._fault_proxies.close()  # made again on next use (a fleet may start again)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "flow": self.flow,
            "telemetryOver": self.telemetry_over,
            "connectionsInUse": self.max_connections - self._free,
            "requestsWaiting": len(self._backlog),
            "requestLatencyMs": self.latency.summary(),
            "heartbeatsSent": self.heartbeats_sent,
            "heartbeatsFailed": self.heartbeats_failed,
            "eventsSent": self.events_sent,
            "eventsFailed": self.events_failed,
            "poolsReplaced": self.pools_replaced,
        }
