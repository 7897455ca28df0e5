"""Metrics component: the live dashboard page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from robot.api.deco import keyword
from robot.api.types import Secret

from iotix._robot.component import LibraryComponent
from iotix._robot.context import KeywordError
from iotix.observe.live import LiveDashboard

_WHAT = "live dashboard"


@dataclass
class LiveState:
    """The process's live dashboard (one at a time), closed when the runtime stops."""

    dashboard: LiveDashboard | None = None

    async def aclose(self) -> None:
        dashboard, self.dashboard = self.dashboard, None
        if dashboard is not None:
            await dashboard.close()


class LiveKeywords(LibraryComponent):
    """Keywords of the Metrics library: the live dashboard page."""

    @property
    def _state(self) -> LiveState:
        return self.context.state(LiveState)

    def _running(self) -> LiveDashboard:
        dashboard = self._state.dashboard
        if dashboard is None:
            raise KeywordError("No live dashboard is running; start one with `Start Live Dashboard`.")
        return dashboard

    @keyword
    def start_live_dashboard(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        token: Secret = None,  # not "Secret | None": with a union Robot echoes a plain-text value in its error
    ) -> Secret:
        """Starts a web page that shows every fleet live and returns its address, token included, as a
        ``Secret``: open ``${url.value}`` in a browser.

        The page is updated every second (server-sent events): per fleet its message rate, devices
        connected, failures, p99 latency and active network faults, with charts of the last two minutes.
        It is one self-contained page that needs nothing from the internet.

        - ``port``: 0 (default) takes any free port.
        - ``host``: the address to listen on; 127.0.0.1 (default) serves this machine only. Give
          ``0.0.0.0`` to let other machines in: everyone who can reach the port and has the token sees the
          fleets' figures (never their credentials).
        - ``token``: a ``Secret`` of at least 8 characters; by default a random one is made. Every request
          needs it, as ``?token=...`` or ``Authorization: Bearer ...``; without it the answer is 401.

        The token is never logged: the log shows the address without it, and the returned value is a
        ``Secret`` so that assigning it does not log it either. Besides the page, ``/api/snapshot``
        returns the same figures once as JSON (see `Get Live Dashboard Snapshot`).

        One dashboard runs at a time; it stops when the suite that started it ends, or with
        `Stop Live Dashboard`.

        | ${url} =    Start Live Dashboard
        | Log To Console    Open ${url.value}    # shows the token on the console only
        | ${url} =    Start Live Dashboard    port=8089    host=0.0.0.0    token=${DASHBOARD TOKEN}
        """
        running = self._state.dashboard
        if running is not None:
            raise KeywordError(
                f"A live dashboard is already running at {running.public_url}; stop it with "
                "`Stop Live Dashboard` first (one runs at a time and shows every fleet)."
            )
        hub = self.simulator.metrics
        secret = token.value if token is not None else None

        async def start() -> LiveDashboard:
            dashboard = LiveDashboard(hub, host=host, port=port, token=secret)
            await dashboard.start()
            return dashboard

        dashboard = self.call(start)
        self._state.dashboard = dashboard
        self.context.own(_WHAT, self._stop)  # the core logs the address, without the token
        return Secret(dashboard.url)

    @keyword
    def stop_live_dashboard(self) -> None:
        """Stops the live dashboard: open pages say they are disconnected. Does nothing when none runs."""
        if self._state.dashboard is None:
            return
        self._stop()
        self.context.disown(_WHAT)

    def _stop(self) -> None:
        dashboard, self._state.dashboard = self._state.dashboard, None
        if dashboard is not None:
            self.call(dashboard.close)

    @keyword
    def get_live_dashboard_snapshot(self) -> dict[str, Any]:
        """Returns what the running live dashboard serves at ``/api/snapshot``, fetched over HTTP with its
        token, as a dictionary: ``ts``, ``runId``, ``labels`` and ``fleets``, a list with per fleet

        | =Key= | =Value= |
        | ``name``, ``model``, ``protocol``, ``state`` | the fleet |
        | ``rate``, ``acked``, ``failed``, ``dropped`` | messages in the last second |
        | ``devices``, ``connected``, ``inError`` | devices at the end of the last second |
        | ``latency`` | per latency kind present (``lateness``, ``request``, ``e2e``): ``count``, ``p50``, \
        ``p99``, ``max`` in ms |
        | ``totals`` | ``sent``, ``acked``, ``failed`` since the fleet was created |
        | ``faults`` | the active network faults: ``name``, ``kind``, ``summary``, ``devices``, ``direction`` |

        | ${snapshot} =    Get Live Dashboard Snapshot
        | ${names} =    Evaluate    [f['name'] for f in $snapshot['fleets']]
        | Should Contain    ${names}    env
        """
        dashboard = self._running()
        url, token, limit = f"{dashboard.local_url}api/snapshot", dashboard.token, self.timeout

        async def fetch() -> tuple[int, Any]:
            # aiohttp on the loop (the server is on the same loop; a client session ignores http_proxy)
            timeout = aiohttp.ClientTimeout(total=limit)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, headers={"Authorization": f"Bearer {token}"}) as response,
            ):
                if response.status != 200:
                    return response.status, await response.text()
                return 200, await response.json()

        try:
            status, data = self.call_wait(fetch, limit=limit)
        except (aiohttp.ClientError, TimeoutError) as err:
            raise KeywordError(f"Reading {url} failed: {err or type(err).__name__}") from None
        if status != 200:
            raise KeywordError(f"Reading {url} failed: HTTP {status}: {str(data).strip()[:200]}")
        return data  # type: ignore[no-any-return]
