"""A live dashboard page: every fleet's figures, updated every second by server-sent events.

:class:`LiveDashboard` is a small aiohttp app on the runtime loop (the simulator's loop). It reads what the
:class:`~iotix.observe.series.MetricsHub` publishes after each sampling round and serves

============  ==================================================================================
path          answer
============  ==================================================================================
``/``         the page: one self-contained HTML file (inline CSS and JS, nothing fetched elsewhere)
``/events``   ``text/event-stream``: one ``history`` event (the last 120 s of each fleet), then one
              event a second with the snapshot below
``/api/snapshot``  the snapshot once, as JSON
============  ==================================================================================

Every path needs the token, as ``?token=...`` or ``Authorization: Bearer ...``; without it: 401. The token
is made with :func:`secrets.token_urlsafe` unless given, compared in constant time, and never logged: the
URL with the token is returned by :meth:`LiveDashboard.start`, the log shows it without. aiohttp's access log
is off (it would print the query string, token included). The server binds 127.0.0.1 unless told otherwise.

The snapshot (``/api/snapshot`` and each ``/events`` event)::

    {"ts": 1796420201.0, "runId": "...", "labels": {...},
     "fleets": [{"name": "env", "model": "env-sensor", "protocol": "mqtt", "deleted": false, "state": "running",
                 "ts": ..., "time": "...", "elapsed": 12.0,
                 "rate": 100, "acked": 100, "failed": 0, "dropped": 0,         # per second (the last row)
                 "devices": 100, "connected": 100, "inError": 0,
                 "latency": {"lateness": {"count": 100, "p50": 0.3, "p99": 2.1}, ...},   # ms, kinds present
                 "totals": {"sent": 1200, "acked": 1200, "failed": 0},
                 "faults": [{"name": "latency-1", "kind": "latency", "summary": "...", "devices": 30}]}]}

The ``history`` event is ``{"fleets": {name: [fleet entries without faults and totals, oldest first]}}``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

from aiohttp import web

from iotix.errors import ConfigurationError
from iotix.observe.series import LATENCY_KEYS

__all__ = ["HISTORY_S", "LiveDashboard", "fleet_entry", "page_html", "snapshot", "token_matches"]

LOG = logging.getLogger("iotix.live")

#: Seconds of history the page draws (and gets when it connects).
HISTORY_S = 120
#: How often an event stream sends the snapshot when the hub has no sinks (it is polled instead).
EVENT_INTERVAL_S = 1.0
#: With a sink, how long a stream waits for a sampling round before it sends the snapshot anyway (keep-alive).
ROUND_WAIT_S = 2.5
#: The latency kinds of a row: kind -> row key.
_FAULT_KEYS = ("name", "kind", "summary", "devices", "direction")
_UNAUTHORIZED = "401 Unauthorized: this dashboard needs its token (?token=... or Authorization: Bearer ...).\n"


# ------------------------------------------------------------------------------------------------ the token


def token_matches(expected: str, query_token: str | None, authorization: str | None) -> bool:
    """Whether a request carries ``expected``: as the ``token`` query parameter or as ``Bearer`` credentials.

    Compared with :func:`hmac.compare_digest` on UTF-8 bytes (constant time, any characters). An empty
    ``expected`` matches nothing.
    """
    if not expected:
        return False
    want = expected.encode("utf-8")
    offered: list[str] = []
    if query_token is not None:
        offered.append(query_token)
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            offered.append(credentials.strip())
    # every offered value is compared (no early exit on the first): the time does not tell which one matched
    matched = False
    for value in offered:
        matched |= hmac.compare_digest(value.encode("utf-8", "surrogatepass"), want)
    return matched


def check_token(token: str) -> str:
    """``token`` if it can be a dashboard token (at least 8 characters, no space); else ConfigurationError.

    The message never repeats the token.
    """
    if len(token) < 8:
        raise ConfigurationError(f"Live dashboard token: must have at least 8 characters, got {len(token)}.")
    if any(c.isspace() for c in token) or not token.isprintable():
        raise ConfigurationError("Live dashboard token: must not contain spaces or control characters.")
    return token


# ------------------------------------------------------------------------------------------------ the page


def page_html() -> str:
    """The page (``live_page.html``, a package data file next to this module)."""
    return resources.files("iotix.observe").joinpath("live_page.html").read_text(encoding="utf-8")


def _inline_hashes(html: str, tag: str) -> list[str]:
    """CSP source expressions (``'sha256-...'``) of the inline ``<tag>`` blocks of ``html``."""
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'" for body in found]


def content_security_policy(html: str) -> str:
    """A policy that lets the page run its own inline style and script and talk only to its own origin."""
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {' '.join(_inline_hashes(html, 'script'))}",
            f"style-src {' '.join(_inline_hashes(html, 'style'))}",
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


# ------------------------------------------------------------------------------------------------ the data


def _number(value: Any) -> float | int | None:
    """A JSON-safe number (None for None, NaN, infinities and non-numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _latency(row: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind, key in LATENCY_KEYS.items():
        summary = row.get(key)
        if not isinstance(summary, Mapping) or not summary.get("count"):
            continue
        out[kind] = {name: _number(summary.get(name)) for name in ("count", "p50", "p99", "max")}
    return out


def _fault(fault: Any) -> dict[str, Any]:
    if not isinstance(fault, Mapping):
        return {"name": str(fault), "kind": "", "summary": "", "devices": None, "direction": ""}
    entry = {key: fault.get(key) for key in _FAULT_KEYS}
    entry["devices"] = entry["devices"] if isinstance(entry["devices"], str) else _number(entry["devices"])
    for key in ("name", "kind", "summary", "direction"):
        entry[key] = "" if entry[key] is None else str(entry[key])
    return entry


def fleet_entry(
    name: str,
    labels: Mapping[str, Any],
    row: Mapping[str, Any] | None,
    *,
    totals: Mapping[str, Any] | None = None,
    faults: Iterable[Any] | None = None,
    deleted: bool = False,
    state: str | None = None,
) -> dict[str, Any]:
    """What the page shows of one fleet: its labels, the figures of its last row, totals and faults."""
    row = row or {}
    entry: dict[str, Any] = {
        "name": name,
        "model": str(labels.get("model", "")),
        "protocol": str(labels.get("protocol", "")),
        "deleted": bool(deleted),
        "state": state if isinstance(state, str) else None,
        "ts": _number(row.get("ts")),
        "time": row.get("time") if isinstance(row.get("time"), str) else None,
        "elapsed": _number(row.get("elapsed")),
        "rate": _number(row.get("sent")),
        "acked": _number(row.get("acked")),
        "failed": _number(row.get("failed")),
        "dropped": _number(row.get("dropped")),
        "devices": _number(row.get("devices")),
        "connected": _number(row.get("connected")),
        "inError": _number(row.get("inError")),
        "latency": _latency(row),
    }
    if totals is not None:
        entry["totals"] = {key: _number(totals.get(key)) for key in ("sent", "acked", "failed")}
    if faults is not None:
        entry["faults"] = [_fault(f) for f in faults]
    return entry


def _series_of(hub: Any) -> Mapping[str, Any]:
    series = getattr(hub, "series", None)
    return series if isinstance(series, Mapping) else {}


def snapshot(hub: Any) -> dict[str, Any]:
    """The snapshot of every fleet the hub published last (see the module doc). Safe from any thread."""
    published: Mapping[str, Any] = getattr(hub, "published", None) or {}
    series = _series_of(hub)
    fleets = []
    for name in sorted(published):
        item = published[name] or {}
        fleets.append(
            fleet_entry(
                name,
                item.get("labels") or {},
                item.get("row"),
                totals=item.get("totals") or {},
                faults=item.get("faults") or [],
                deleted=bool(getattr(series.get(name), "deleted", False)) or item.get("state") == "deleted",
                state=item.get("state"),
            )
        )
    labels = getattr(hub, "labels", None)
    return {
        "ts": time.time(),
        "runId": str(getattr(hub, "run_id", "") or ""),
        "labels": dict(labels) if isinstance(labels, Mapping) else {},
        "fleets": fleets,
    }


def history(hub: Any, seconds: float = HISTORY_S) -> dict[str, Any]:
    """The last ``seconds`` of each published fleet, as fleet entries oldest first. Runs on the loop."""
    series = _series_of(hub)
    published: Mapping[str, Any] = getattr(hub, "published", None) or {}
    out: dict[str, list[dict[str, Any]]] = {}
    for name in sorted(published):
        fleet = series.get(name)
        if fleet is None:
            continue
        labels = (published[name] or {}).get("labels") or {}
        out[name] = [fleet_entry(name, labels, row) for row in fleet.rows(seconds)]
    return {"fleets": out}


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event (``event:`` line when named, one ``data:`` line: JSON has no raw newline)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {_json(data)}\n\n".encode()


# ------------------------------------------------------------------------------------------------ the server


class LiveDashboard:
    """The live page of ``hub`` served on the running loop: ``await start()`` -> URL (with the token).

    ``hub`` needs ``published`` (read every second) and, when it has them, ``add_sink``/``remove_sink``
    (an event goes out right after each sampling round) and ``series`` (history for a page that connects
    late). Create, start and close it on the runtime loop.
    """

    def __init__(self, hub: Any, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"Live dashboard port: must be 0..65535 (0: any free port), got {port}.")
        if not host:
            raise ConfigurationError("Live dashboard host: must not be empty (127.0.0.1 serves this machine only).")
        self.hub = hub
        self.host = host
        self.port = port
        self._token = check_token(token) if token else secrets.token_urlsafe(16)
        self._html = page_html()
        self._csp = content_security_policy(self._html)
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._round = asyncio.Event()
        self._streams: set[web.StreamResponse] = set()
        self._sink_added = False
        self._cache: tuple[Any, bytes] | None = None
        self.rounds = 0

    def __repr__(self) -> str:  # no token
        return f"LiveDashboard({self.public_url!r})"

    # -- addresses ------------------------------------------------------------------------------------------

    @property
    def public_url(self) -> str:
        """The page's URL without the token (what may be logged)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def local_url(self) -> str:
        """The page's URL without the token, reachable from this machine (a wildcard host becomes loopback)."""
        host = self.host
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(host)
            if address.is_unspecified:
                host = "127.0.0.1" if address.version == 4 else "::1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    @property
    def url(self) -> str:
        """The page's URL with the token (a secret: do not log it)."""
        return f"{self.public_url}?token={self._token}"

    @property
    def token(self) -> str:
        return self._token

    @property
    def clients(self) -> int:
        """Event streams open now."""
        return len(self._streams)

    @property
    def running(self) -> bool:
        return self._runner is not None

    # -- life -----------------------------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen on ``host:port`` (0: a free port, read back); return the URL with the token.

        ConfigurationError naming the address when it cannot be bound.
        """
        if self._runner is not None:
            return self.url
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/", self._page)
        app.router.add_get("/events", self._events)
        app.router.add_get("/api/snapshot", self._snapshot)
        # access_log=None: aiohttp's access log prints the request line, and with it the token
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            raise ConfigurationError(
                f"Live dashboard: cannot listen on {self.host}:{self.port} ({err.strerror or err}); "
                "choose another port (0: any free port) or host."
            ) from None
        self.port = int(runner.addresses[0][1])
        self._runner = runner
        self._closing.clear()
        self._round = asyncio.Event()  # close() set the last one
        add_sink = getattr(self.hub, "add_sink", None)
        if callable(add_sink):
            add_sink(self._on_round)
            self._sink_added = True
        LOG.info("Live dashboard serving at %s (token required)", self.public_url)
        return self.url

    async def close(self) -> None:
        """End every event stream, stop listening, remove the sink. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._sink_added:
            with contextlib.suppress(ValueError):
                self.hub.remove_sink(self._on_round)
            self._sink_added = False
        self._closing.set()
        self._round.set()
        await runner.cleanup()
        LOG.info("Live dashboard at %s stopped", self.public_url)

    def _on_round(self, _pairs: Any = None) -> None:
        """Hub sink (on the loop): wake the event streams; they read ``published`` themselves."""
        self.rounds += 1
        woken, self._round = self._round, asyncio.Event()
        woken.set()

    # -- handlers -------------------------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not token_matches(self._token, request.query.get("token"), request.headers.get("Authorization")):
            return web.Response(
                status=401,
                text=_UNAUTHORIZED,
                headers={"WWW-Authenticate": 'Bearer realm="iotix-live"', "Cache-Control": "no-store"},
            )
        response = await handler(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    async def _page(self, _request: web.Request) -> web.Response:
        return web.Response(
            text=self._html,
            content_type="text/html",
            charset="utf-8",
            headers={"Content-Security-Policy": self._csp, "Cache-Control": "no-store"},
        )

    async def _snapshot(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._snapshot_bytes(), content_type="application/json")

    def _snapshot_bytes(self) -> bytes:
        """The snapshot as JSON, encoded once per published dict (every stream sends the same bytes)."""
        published = getattr(self.hub, "published", None)
        cached = self._cache
        if cached is not None and cached[0] is published and published is not None:
            return cached[1]
        body = _json(snapshot(self.hub)).encode()
        self._cache = (published, body)
        return body

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        self._streams.add(response)
        try:
            await response.write(b"retry: 2000\n\n")
            await response.write(sse(history(self.hub), "history"))
            await response.write(b"data: " + self._snapshot_bytes() + b"\n\n")
            wait = ROUND_WAIT_S if self._sink_added else EVENT_INTERVAL_S
            while not self._closing.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._round.wait(), wait)
                if self._closing.is_set():
                    break
                await response.write(b"data: " + self._snapshot_bytes() + b"\n\n")
        except ConnectionResetError:  # the page went away (aiohttp's ClientConnectionResetError is one)
            pass
        finally:
            self._streams.discard(response)
        return response
