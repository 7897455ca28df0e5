"""HTTPS fleets against a local TLS HTTP server whose certificate the project's test CA signed.

The model's ``connection.tls.caFile`` must be what makes the request succeed (the test CA is not among the
system's CAs), and a CA that did not sign the server must make every send fail with a reason that says so,
for the fleet that sent it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from harness import Harness

from iotix.security.certs import create_server_certificate, load_or_create_ca

pytestmark = pytest.mark.integration


class TlsServer:
    """An aiohttp server on 127.0.0.1 with TLS (a certificate of ``ca``) in its own thread; records the bodies."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.schemes: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner, self.port = asyncio.run_coroutine_threadsafe(self._start(context), self._loop).result(10)

    async def _start(self, context: ssl.SSLContext) -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.Response:
        self.schemes.add(request.scheme)
        self.bodies.append(json.loads(await request.read()))
        return web.Response(status=201)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("https")
    ca = load_or_create_ca(base / "ca")
    server = create_server_certificate(ca, base / "server")
    other = load_or_create_ca(base / "other", common_name="Some Other CA")
    return {"ca": ca.cert_path, "cert": server.cert, "key": server.key, "other": other.cert_path}


@pytest.fixture(scope="module")
def server(pki: dict[str, Path]):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["cert"], pki["key"])
    s = TlsServer(context)
    yield s
    s.close()


def https_model(url: str, **connection: Any) -> dict[str, Any]:
    return {
        "id": "it-https",
        "name": "HTTPS sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "http",
        "connection": {"url": url, "retry": {"maxRetries": 0}, **connection},
        "telemetry": [
            {"name": "t", "type": "number", "intervalMs": 100, "generator": {"type": "random", "min": 0, "max": 1}}
        ],
    }


def test_an_https_fleet_delivers_over_tls_with_the_models_ca(
    h: Harness, server: TlsServer, pki: dict[str, Path]
) -> None:
    url = f"https://localhost:{server.port}/devices/${{deviceId}}"
    fleet = h.fleet("secure", https_model(url, tls={"caFile": str(pki["ca"])}), 2)
    h.start(fleet)
    h.wait(lambda: fleet.stats()["messagesAcked"] >= 10, what="telemetry acknowledged over https")
    h.stop(fleet)
    stats = fleet.stats()
    assert stats["messagesFailed"] == 0
    assert server.schemes == {"https"}
    devices = {body["deviceId"] for body in server.bodies}
    assert devices == {d.id for d in fleet.devices}


def test_a_ca_that_did_not_sign_the_server_is_refused_with_a_clear_error(
    h: Harness, server: TlsServer, pki: dict[str, Path]
) -> None:
    before = len(server.bodies)
    url = f"https://localhost:{server.port}/devices/${{deviceId}}"
    fleet = h.fleet("wrongca", https_model(url, tls={"caFile": str(pki["other"])}), 1)
    h.start(fleet)
    h.wait(lambda: fleet.stats()["messagesFailed"] >= 2, what="failed sends")
    h.stop(fleet)
    assert fleet.stats()["messagesAcked"] == 0 and len(server.bodies) == before
    error = str(fleet.devices[0].last_error)
    assert "fleet 'wrongca'" in error
    assert "unknown CA" in error and str(pki["other"]) in error


def test_tls_with_a_plain_http_url_is_refused_naming_the_fleet(h: Harness, pki: dict[str, Path]) -> None:
    from iotix.errors import ConfigurationError

    model = https_model("https://localhost:1/x", tls={"caFile": str(pki["ca"])})
    with pytest.raises(
        ConfigurationError, match=r"Fleet 'plain': connection.tls is set but connection.url .* use https"
    ):
        h.fleet("plain", model, 1, connection={"url": "http://localhost:1/x"})
