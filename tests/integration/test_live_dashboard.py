"""The live dashboard during a real run: MQTT devices against Mosquitto, the page in headless Chromium.

The dashboard runs on the runtime loop of the fleet and reads the real MetricsHub; the browser is Debian's
Chromium driven over the DevTools protocol (``chromium_cdp``); the HTTP checks use aiohttp's client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import struct
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from chromium_cdp import Chromium, find_chromium
from harness import BrokerHarness

from iotix.fleet.fleet import Fleet
from iotix.observe.live import LiveDashboard
from iotix.services import find_mosquitto, start_local_broker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed"),
]
needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")

DEVICES = 20
INTERVAL_MS = 200  # 20 devices x 5 msg/s = 100 msg/s


def model_dict() -> dict[str, Any]:
    return {
        "id": "live-sensor",
        "name": "live dashboard sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {"host": "127.0.0.1", "port": 1883, "topicPattern": "live/${deviceId}", "qos": 0},
        "telemetry": [
            {
                "name": "temperature",
                "type": "number",
                "intervalMs": INTERVAL_MS,
                "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
            }
        ],
    }


class Harness(BrokerHarness):
    """The shared harness with fleets pointed at one broker, and the dashboard on the runtime loop."""

    def running_fleet(self, name: str) -> Fleet:
        fleet = self.fleet(name, model_dict(), DEVICES)
        self.start(fleet)
        self.running(fleet)
        return fleet

    def dashboard(self, **kwargs: Any) -> tuple[LiveDashboard, str]:
        async def start() -> tuple[LiveDashboard, str]:
            dashboard = LiveDashboard(self.sim.metrics, **kwargs)
            return dashboard, await dashboard.start()

        dashboard, url = self.rt.call(start)
        self.on_close(lambda: self.rt.call(dashboard.close))
        return dashboard, url

    def wait_for_rate(self, fleet: Fleet) -> None:
        """Until the hub has published a second in which the fleet sent something."""

        def sending() -> bool:
            row = (self.sim.metrics.published.get(fleet.name) or {}).get("row")
            return bool(row and row["sent"] > 0)

        self.wait(sending, 10.0, f"a published row of fleet {fleet.name} with messages sent")


@pytest.fixture(scope="module")
def broker():
    b = start_local_broker("mosquitto")
    yield b
    b.stop()


@pytest.fixture
def h(broker):
    harness = Harness(broker)
    yield harness
    harness.close()


def card(fleet: str) -> str:
    """A JavaScript expression: the card of ``fleet``."""
    return f"document.querySelector('section.fleet[data-fleet=\"{fleet}\"]')"


def points(fleet: str, chart: str) -> str:
    return f"Number({card(fleet)}?.querySelector('svg[data-chart=\"{chart}\"]').dataset.points ?? 0)"


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


@needs_chromium
def test_the_page_shows_the_running_fleet_live_in_chromium(h: Harness, tmp_path: Path) -> None:
    fleet = h.running_fleet("live-env")
    h.rt.call(h.sim.network.add, fleet.name, "latency", {"latency": "20ms"}, fault_name="slow-link")
    dashboard, url = h.dashboard()
    h.wait_for_rate(fleet)
    origin = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"

    async def look() -> dict[str, Any]:
        async with await Chromium.launch() as browser:
            await browser.navigate(url)
            first = await browser.wait_for(f"{points('live-env', 'rate')} >= 1 && {points('live-env', 'rate')}")
            # the charts move: more points once more seconds were sampled
            second = await browser.wait_for(f"{points('live-env', 'rate')} > {first} && {points('live-env', 'rate')}")
            await browser.wait_for(f"Number({card('live-env')}.querySelector('.rate').dataset.value) > 0")
            await browser.wait_for(f"{card('live-env')}.querySelector('li.fault') !== null")
            shot = await browser.screenshot(tmp_path / "live-dashboard.png")
            dom = await browser.evaluate(
                f"""(() => {{
                  const c = {card("live-env")};
                  const value = (sel) => c.querySelector(sel).dataset.value;
                  return {{
                    name: c.querySelector('.name').textContent,
                    meta: c.querySelector('.meta').textContent,
                    rate: Number(value('.rate')),
                    connected: Number(value('.connected')),
                    devices: Number(value('.devices')),
                    p99: value('.p99'),
                    connectedPoints: {points("live-env", "connected")},
                    p99Points: {points("live-env", "p99")},
                    faults: [...c.querySelectorAll('li.fault')].map(li => li.textContent),
                    status: document.getElementById('status').dataset.state,
                    events: Number(document.getElementById('status').dataset.events),
                    html: document.documentElement.outerHTML,
                  }};
                }})()"""
            )
            clients_while_open = await asyncio.to_thread(lambda: dashboard.clients)
            # closing the dashboard ends the page's event stream; the page says so
            await asyncio.to_thread(h.rt.call, dashboard.close)
            status = await browser.wait_for(
                "['reconnecting', 'closed'].includes(document.getElementById('status').dataset.state)"
                " && document.getElementById('status').dataset.state"
            )
            return {
                **dom,
                "first": first,
                "second": second,
                "shot": shot,
                "requests": list(browser.requests),
                "console": list(browser.console),
                "clients_while_open": clients_while_open,
                "status_after_close": status,
            }

    seen = asyncio.run(look())

    assert seen["second"] > seen["first"] >= 1
    assert seen["connectedPoints"] >= 2 and seen["p99Points"] >= 2
    width, height = png_size(seen["shot"])
    assert (width, height) == (1400, 1000)
    assert len(seen["shot"]) > 20_000  # text and charts: a blank page is ~6 KB, a heading and a line ~11 KB
    assert (tmp_path / "live-dashboard.png").read_bytes() == seen["shot"]
    assert seen["name"] == "live-env"
    assert seen["meta"] == "live-sensor · mqtt"
    assert seen["rate"] > 0
    assert seen["connected"] == DEVICES and seen["devices"] == DEVICES
    assert seen["p99"] != ""  # the lateness p99 of the last second
    assert len(seen["faults"]) == 1 and seen["faults"][0].startswith("slow-link: ")
    assert "all devices" in seen["faults"][0]
    assert seen["status"] == "live" and seen["events"] >= 2
    assert seen["clients_while_open"] == 1
    assert seen["status_after_close"] in ("reconnecting", "closed")
    assert h.rt.call(lambda: dashboard.clients) == 0
    # offline: the browser asked nothing of any other origin, and the page threw nothing
    assert seen["requests"] and all(r.startswith(origin + "/") for r in seen["requests"]), seen["requests"]
    assert not [c for c in seen["console"] if c.startswith("exception")], seen["console"]
    assert dashboard.token not in seen["html"]  # the token stays in the address, not in the page


def test_every_route_refuses_a_request_without_the_token(h: Harness) -> None:
    fleet = h.running_fleet("live-auth")
    dashboard, url = h.dashboard()
    h.wait_for_rate(fleet)
    base = dashboard.public_url.rstrip("/")
    token = dashboard.token

    async def probe() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with aiohttp.ClientSession() as session:
            for path in ("/", "/events", "/api/snapshot", "/nowhere"):
                for label, query, headers in (
                    ("none", "", {}),
                    ("wrong", "?token=" + token[:-1] + "x", {}),
                    ("wrong-bearer", "", {"Authorization": "Bearer nope-nope-nope"}),
                    ("basic", "", {"Authorization": f"Basic {token}"}),
                ):
                    async with session.get(base + path + query, headers=headers) as response:
                        out[(path, label)] = (response.status, await response.text(), dict(response.headers))
            async with session.get(url) as response:
                out["page"] = (response.status, await response.text(), dict(response.headers))
            async with session.get(f"{base}/api/snapshot", headers={"Authorization": f"Bearer {token}"}) as response:
                out["snapshot"] = (response.status, await response.json())
            async with session.get(f"{base}/events?token={token}") as response:
                out["events_type"] = response.headers["Content-Type"]
                lines: list[bytes] = []
                while sum(line.startswith(b"data: ") for line in lines) < 3:  # history + two snapshots
                    lines.append(await asyncio.wait_for(response.content.readline(), 5))
                out["events"] = lines
        return out

    seen = asyncio.run(probe())

    for path in ("/", "/events", "/api/snapshot", "/nowhere"):
        for label in ("none", "wrong", "wrong-bearer", "basic"):
            status, text, headers = seen[(path, label)]
            assert status == 401, (path, label)
            assert text.startswith("401 Unauthorized") and token not in text
            assert headers["WWW-Authenticate"].startswith("Bearer")
    status, html, headers = seen["page"]
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "connect-src 'self'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"
    # offline: no http(s) URL in the page at all (its own origin is reached by relative paths)
    assert re.findall(r"(?:https?|wss?):[^\s\"')]*", html) == []
    status, data = seen["snapshot"]
    assert status == 200
    entry = next(f for f in data["fleets"] if f["name"] == "live-auth")
    assert entry["rate"] > 0 and entry["devices"] == DEVICES and entry["protocol"] == "mqtt"
    assert data["runId"] == h.sim.metrics.run_id
    assert seen["events_type"] == "text/event-stream"
    events = seen["events"]
    assert b"event: history\n" in events
    history = json.loads(events[events.index(b"event: history\n") + 1].removeprefix(b"data: "))
    rows = history["fleets"]["live-auth"]  # the seconds sampled before the stream opened, for the charts
    assert rows and rows[-1]["rate"] > 0 and all(a["ts"] < b["ts"] for a, b in pairwise(rows))
    assert sum(b'"live-auth"' in line for line in events if line.startswith(b"data: ")) == 3


def test_a_dashboard_binds_loopback_by_default_and_a_taken_port_is_a_configuration_error(h: Harness) -> None:
    from iotix.errors import ConfigurationError

    dashboard, _ = h.dashboard()
    assert dashboard.host == "127.0.0.1" and dashboard.port > 0

    async def second() -> None:
        await LiveDashboard(h.sim.metrics, port=dashboard.port).start()

    with pytest.raises(ConfigurationError, match=rf"127\.0\.0\.1:{dashboard.port}"):
        h.rt.call(second)


def test_a_dashboard_started_again_streams_once_a_second(h: Harness) -> None:
    """close() wakes every stream for good; a start after it must not leave the streams awake (a busy loop)."""
    dashboard, _ = h.dashboard()
    h.rt.call(dashboard.close)
    h.rt.call(dashboard.start)

    async def count_events(seconds: float) -> int:
        headers = {"Authorization": f"Bearer {dashboard.token}"}
        url = f"{dashboard.public_url}events"
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
            loop = asyncio.get_running_loop()
            end, count = loop.time() + seconds, 0
            while (left := end - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    count += (await asyncio.wait_for(r.content.readline(), left)).startswith(b"data: ")
            return count

    # history + the first snapshot at once; no fleet, so no sampling round: then only a keep-alive copy every 2.5 s
    assert 2 <= asyncio.run(count_events(3.0)) <= 4
