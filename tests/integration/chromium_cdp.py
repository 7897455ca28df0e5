"""Drive Debian's headless Chromium through the Chrome DevTools Protocol, with aiohttp's websocket client.

Not a test: a helper for tests that look at a page in a real browser.

    async with Chromium.launch() as browser:
        await browser.navigate("http://127.0.0.1:8080/?token=...")
        title = await browser.evaluate("document.title")
        png = await browser.screenshot()

Chromium starts with the flags of INFRA.md (``--headless --no-sandbox --disable-gpu`` and no background
networking: on this machine's closed network it would otherwise try Google's hosts at every start),
``--remote-debugging-port=0`` and a fresh ``--user-data-dir``; the port it chose is read from
``<user-data-dir>/DevToolsActivePort``. Every request the page makes is recorded (``browser.requests``), so a
test can prove that a page fetched nothing from elsewhere. ``close()`` kills the browser's whole process group
(``/usr/bin/chromium`` is a shell script that starts the real binary, which starts zygote, renderer and
utility processes) and removes the profile directory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-quic",
    "--disable-extensions",
    "--mute-audio",
)


def find_chromium() -> str | None:
    """The Chromium executable: ``$CHROMIUM``, else ``chromium`` (Debian) or ``chromium-browser`` on PATH."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    return shutil.which("chromium") or shutil.which("chromium-browser")


class CdpError(RuntimeError):
    """Chromium answered a DevTools command with an error, or a page script threw."""


class Chromium:
    """One headless Chromium and a DevTools session on its first page. Use :meth:`launch`."""

    def __init__(self, process: subprocess.Popen[bytes], profile: Path, stderr_path: Path) -> None:
        self.process = process
        self.profile = profile
        self.stderr_path = stderr_path
        self.port = 0
        self.requests: list[str] = []  # every URL the page requested (Network.requestWillBeSent)
        self.console: list[str] = []  # console messages and uncaught exceptions of the page
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []

    # -- life -----------------------------------------------------------------------------------------------

    @classmethod
    async def launch(
        cls, executable: str | None = None, *, window: tuple[int, int] = (1400, 1000), timeout: float = 30.0
    ) -> Chromium:
        """Start Chromium and attach to its page (a viewport of ``window`` CSS pixels); raise (after cleaning
        up) when that fails within ``timeout``."""
        exe = executable or find_chromium()
        if exe is None:
            raise FileNotFoundError("chromium is not installed (apt-get install -y chromium)")
        profile = Path(tempfile.mkdtemp(prefix="iotix-chromium-"))
        stderr_path = profile.parent / f"{profile.name}.stderr"
        args = [
            exe,
            *CHROMIUM_FLAGS,
            f"--window-size={window[0]},{window[1]}",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        with open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
            )
        browser = cls(process, profile, stderr_path)
        try:
            await asyncio.wait_for(browser._attach(window), timeout)
        except BaseException:
            await browser.close()
            raise
        return browser

    async def _attach(self, window: tuple[int, int]) -> None:
        port_file = self.profile / "DevToolsActivePort"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}: {self.stderr_tail()}")
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                self.port = int(port_file.read_text().splitlines()[0])
                break
            await asyncio.sleep(0.05)
        self._http = aiohttp.ClientSession()
        target = None
        while target is None:
            async with self._http.get(f"http://127.0.0.1:{self.port}/json") as response:
                targets = await response.json()
            target = next((t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")), None)
            if target is None:
                await asyncio.sleep(0.05)
        self._ws = await self._http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Network.enable")
        # the viewport exactly (--window-size includes the window's frame in headless mode)
        await self.send(
            "Emulation.setDeviceMetricsOverride", width=window[0], height=window[1], deviceScaleFactor=1, mobile=False
        )

    async def close(self) -> None:
        """Close the session, kill the browser's process group, remove the profile. Idempotent."""
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._http is not None:
            await self._http.close()
        self._ws = self._reader = self._http = None
        await asyncio.to_thread(self._kill)
        shutil.rmtree(self.profile, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.stderr_path.unlink()

    def _kill(self) -> None:
        pgid = self.process.pid  # start_new_session: the group is the browser's own
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            end = time.monotonic() + grace
            while time.monotonic() < end:
                self.process.poll()
                if self._group_gone(pgid):
                    return
                time.sleep(0.05)
        self.process.wait(1)

    @staticmethod
    def _group_gone(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    async def __aenter__(self) -> Chromium:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def stderr_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # -- protocol -------------------------------------------------------------------------------------------

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = message.json()
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
                continue
            self._on_event(data.get("method", ""), data.get("params", {}))
        error = ConnectionError(f"the DevTools connection closed: {self.stderr_tail(5)}")
        for future in list(self._pending.values()) + [f for _, f in self._waiters]:
            if not future.done():
                future.set_exception(error)

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            self.console.append("exception: " + str(params["exceptionDetails"].get("exception", {}).get("description")))
        for waiter in [w for w in self._waiters if w[0] == method]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(params)

    async def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """Send one command; return its ``result``; CdpError for an error answer."""
        if self._ws is None:
            raise ConnectionError("not attached to Chromium")
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._ws.send_json({"id": ident, "method": method, "params": params})
        try:
            answer = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(ident, None)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def expect(self, method: str) -> asyncio.Future[dict[str, Any]]:
        """A future of the next event ``method`` (create it before the command that causes it)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, future))
        return future

    # -- page -----------------------------------------------------------------------------------------------

    async def navigate(self, url: str, timeout: float = 30.0) -> None:
        """Open ``url`` and wait for its load event; CdpError when the navigation itself fails."""
        loaded = self.expect("Page.loadEventFired")
        result = await self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise CdpError(f"navigating to the page failed: {result['errorText']}")
        await asyncio.wait_for(loaded, timeout)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited, returned by value)."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CdpError(f"{expression!r} threw: {details.get('exception', {}).get('description') or details}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0, interval: float = 0.2) -> Any:
        """Evaluate ``expression`` until it is truthy; return that value (TimeoutError naming it otherwise)."""
        end = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() >= end:
                raise TimeoutError(f"{expression!r} did not become true within {timeout:g} s (last: {value!r})")
            await asyncio.sleep(interval)

    async def screenshot(self, path: Path | None = None) -> bytes:
        """A PNG of the viewport (written to ``path`` too when given)."""
        result = await self.send("Page.captureScreenshot", format="png")
        png = base64.b64decode(result["data"])
        if path is not None:
            path.write_bytes(png)
        return png
