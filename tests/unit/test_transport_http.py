"""The HTTP transports (generic, IoTFlow, hybrid IoTFlow) against a fake outcomes object: no fleet, no simulator.

Each test starts a tiny aiohttp app of its own on 127.0.0.1 (port 0) inside its event loop; the app answers with
the status the test sets (after an optional delay) and records what it received. IoTFlow's registration
endpoint answers with an API key per name.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from transport_fakes import FakeLink, FakeOutcomes, make_links, make_spec, run, until

from iotix.errors import ConfigurationError
from iotix.transport import create_transport, http_pool, iotflow
from iotix.transport import http as http_transport
from iotix.transport.base import Credentials, TransportError
from iotix.transport.http import GenericHttpTransport, create, forget_api_keys
from iotix.transport.iotflow import HybridIoTFlowTransport, IoTFlowTransport

REGISTER = "/api/v1/devices/register"
TELEMETRY = "/api/v1/devices/telemetry"
HEARTBEAT = "/api/v1/devices/heartbeat"
CREDENTIALS = "/api/v1/devices/mqtt-credentials"
PAYLOAD = b'{"temperature":21.5}'


def http_model(url: str, **connection: Any) -> dict[str, Any]:
    return {
        "id": "unit-http",
        "name": "HTTP unit sensor",
        "description": "a sensor for unit tests",
        "version": "2.0.1",
        "type": "sensor",
        "protocol": "http",
        "connection": {"url": url, **connection},
        "telemetry": [
            {
                "name": "temperature",
                "type": "number",
                "intervalMs": 1000,
                "generator": {"type": "constant", "value": 21.5},
            }
        ],
    }


def iotflow_model(url: str, **connection: Any) -> dict[str, Any]:
    return http_model(url, flow="iotflow", **connection)


# --- the server -----------------------------------------------------------------------------------------


class Server:
    """What the test's app answers, and what it received: ``(method, path, headers, body)`` per request."""

    def __init__(self) -> None:
        self.status = 200
        self.body = "ok"
        self.delay = 0.0
        self.register_status = 201
        self.register_body = ""  # the answer when register_status is not a success
        self.taken: set[str] = set()  # names that registration answers with 409
        self.credentials: dict[str, Any] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.url = ""

    def paths(self) -> list[str]:
        return [path for _, path, _, _ in self.requests]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.method, request.path, dict(request.headers), body))
        if request.path == REGISTER:
            name = json.loads(body)["name"]
            if name in self.taken:
                return web.json_response({"status": "error", "message": "name taken"}, status=409)
            if self.register_status not in (200, 201):
                return web.Response(status=self.register_status, text=self.register_body)
            return web.json_response({"device": {"name": name, "api_key": f"key-{name}-0123456789"}}, status=201)
        if request.path == CREDENTIALS:
            return web.json_response({"credentials": self.credentials})
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, text=self.body)


@asynccontextmanager
async def serving(server: Server) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server.url
    finally:
        await runner.cleanup()


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _no_api_keys_from_other_tests() -> None:
    forget_api_keys()


async def connected(transport: Any, links: list[FakeLink]) -> None:
    for link in links:
        await transport.connect(link)


# --- which class, and settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connection", "cls", "request_based", "over"),
    [
        ({}, GenericHttpTransport, True, "http"),
        ({"flow": "generic"}, GenericHttpTransport, True, "http"),
        ({"flow": "iotflow"}, IoTFlowTransport, True, "http"),
        ({"flow": "iotflow", "telemetryOver": "http"}, IoTFlowTransport, True, "http"),
        ({"flow": "iotflow", "telemetryOver": "mqtt"}, HybridIoTFlowTransport, False, "mqtt"),
    ],
)
def test_the_flow_settings_choose_the_class(connection: dict[str, Any], cls: type, request_based: bool, over: str):
    spec = make_spec(http_model("http://127.0.0.1:9/base"), connection)
    for transport in (create(spec, [], FakeOutcomes()), create_transport(spec, [], FakeOutcomes())):
        assert type(transport) is cls
        assert transport.request_based is request_based
        assert transport.describe()["flow"] == connection.get("flow", "generic")
        assert transport.describe()["telemetryOver"] == over


def test_host_and_port_override_the_url_and_the_target_follows_the_flow() -> None:
    url = "http://localhost:8080/d/${deviceId}/"
    generic = create(make_spec(http_model(url), {"host": "127.0.0.1", "port": 9000}), [], FakeOutcomes())
    assert generic.target == "http://127.0.0.1:9000/d/${deviceId}/"
    assert generic.endpoint == "http://127.0.0.1:9000"
    flow = create(make_spec(iotflow_model("http://localhost:8080/"), {"port": 9001}), [], FakeOutcomes())
    assert flow.target == "http://localhost:9001"  # IoTFlow: the base URL


def test_headers_that_use_a_token_without_one_are_refused_naming_the_fleet() -> None:
    spec = make_spec(http_model("http://127.0.0.1:9/x", headers={"Authorization": "Token ${token}"}), fleet="meters")
    with pytest.raises(ConfigurationError) as caught:
        create(spec, [], FakeOutcomes())
    assert str(caught.value) == (
        "Fleet 'meters': connection.headers use ${token} but there is no token: give Create Fleet password= "
        "(a Secret) or connection.token."
    )


def test_the_http_modules_import_nothing_from_the_fleet() -> None:
    for module in (http_transport, http_pool, iotflow):
        tree = ast.parse(inspect.getsource(module))
        imported = [
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        ]
        assert [name for name in imported if name and name.startswith("iotix.fleet")] == [], module.__name__


# --- generic flow: outcomes -----------------------------------------------------------------------------


def test_a_2xx_is_acknowledged_with_the_size_and_the_latency() -> None:
    server = Server()
    server.status, server.delay = 201, 0.05

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(2)
            transport = create(make_spec(http_model(url + "/t/${deviceId}")), links, outcomes)
            await connected(transport, links)
            assert transport.is_connected(links[0])
            assert transport.send(links[1], PAYLOAD)
            await until(lambda: outcomes.acked, what="the acknowledgement")
            await transport.close()
        [(device, nbytes, latency)] = outcomes.acked
        assert (device, nbytes) == ("fake-1", len(PAYLOAD))
        assert latency is not None and 0.05 <= latency < 5.0
        assert transport.latency.count == 1
        assert outcomes.failures == [] and outcomes.not_sent_reasons == []
        [(method, path, _headers, body)] = server.requests
        assert (method, path, body) == ("POST", "/t/fake-1", PAYLOAD)

    run(scenario)


@pytest.mark.parametrize(("status", "fault"), [(500, True), (503, True), (429, True), (400, False), (404, False)])
def test_a_status_that_is_not_a_success_fails_and_the_server_is_to_blame_for_5xx_and_429(
    status: int, fault: bool
) -> None:
    server = Server()
    server.status, server.body = status, "boom"

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(1)
            transport = create(make_spec(http_model(url + "/t")), links, outcomes)
            await connected(transport, links)
            transport.send(links[0], PAYLOAD)
            await until(lambda: outcomes.failures, what="the failure")
            await asyncio.sleep(0.1)  # the transport does not retry on its own: the fleet decides
            await transport.close()
        [failure] = outcomes.failures
        assert failure["code"] == f"http_{status}" and failure["fault"] is fault
        assert failure["reason"] == f"HTTP {status} from POST {server.url}/t: boom"
        assert failure["nbytes"] == len(PAYLOAD) and failure["attempt"] == 0
        assert callable(failure["resend"])
        assert outcomes.acked == [] and len(server.requests) == 1

    run(scenario)


def test_the_resend_of_a_500_sends_the_same_body_again_as_the_next_attempt() -> None:
    server = Server()
    server.status, server.body = 500, "internal error " + "x" * 500

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(1)
            transport = create(make_spec(http_model(url + "/t")), links, outcomes)
            await connected(transport, links)
            transport.send(links[0], PAYLOAD)
            await until(lambda: outcomes.failures, what="the first failure")
            first = outcomes.failures[0]
            assert len(first["reason"]) == len(f"HTTP 500 from POST {url}/t: ") + 200  # the first 200 bytes
            server.status = 200
            first["resend"](1)
            await until(lambda: outcomes.acked, what="the retry's acknowledgement")
            await transport.close()
        assert [body for _, _, _, body in server.requests] == [PAYLOAD, PAYLOAD]
        assert outcomes.acked[0][:2] == ("fake-0", len(PAYLOAD)) and len(outcomes.failures) == 1

    run(scenario)


def test_a_resend_after_the_device_went_away_fails_without_a_request() -> None:
    server = Server()
    server.status = 500

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(1)
            transport = create(make_spec(http_model(url + "/t")), links, outcomes)
            await connected(transport, links)
            transport.send(links[0], PAYLOAD)
            await until(lambda: outcomes.failures, what="the failure")
            await transport.disconnect(links[0])
            assert not transport.is_connected(links[0])
            outcomes.failures[0]["resend"](1)
            await asyncio.sleep(0.1)
            await transport.close()
        assert len(server.requests) == 1
        second = outcomes.failures[1]
        assert second["code"] == "stopped" and second["fault"] is False
        assert second["reason"] == f"not retried, the device went away: HTTP 500 from POST {server.url}/t: ok"

    run(scenario)


def test_no_answer_within_the_timeout_is_a_timeout_fault() -> None:
    server = Server()
    server.delay = 0.6

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(1)
            transport = create(make_spec(http_model(url + "/slow", timeoutMs=200)), links, outcomes)
            await connected(transport, links)
            transport.send(links[0], PAYLOAD)
            await until(lambda: outcomes.failures, what="the timeout")
            await transport.close()
        [failure] = outcomes.failures
        assert failure["code"] == "timeout" and failure["fault"] is True and callable(failure["resend"])
        assert failure["reason"] == f"no answer from POST {server.url}/slow within 0.2 s"
        assert outcomes.acked == []

    run(scenario)


def test_a_refused_connection_is_a_connection_error_fault() -> None:
    port = closed_port()

    async def scenario() -> None:
        outcomes, links = FakeOutcomes(), make_links(1)
        transport = create(make_spec(http_model(f"http://127.0.0.1:{port}/t")), links, outcomes)
        await connected(transport, links)  # no request on connect: nothing to refuse yet
        transport.send(links[0], PAYLOAD)
        await until(lambda: outcomes.failures, what="the connection error")
        await transport.close()
        [failure] = outcomes.failures
        assert failure["code"] == "connection_error" and failure["fault"] is True
        assert failure["reason"].startswith(
            f"POST http://127.0.0.1:{port}/t failed: cannot connect to 127.0.0.1:{port}"
        )

    run(scenario)


def test_a_request_queued_before_a_drop_is_not_sent() -> None:
    server = Server()

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(2)
            transport = create(make_spec(http_model(url + "/t")), links, outcomes)
            await connected(transport, links)
            assert transport.send(links[0], PAYLOAD) and transport.send(links[1], PAYLOAD)
            transport.drop(links[0])  # before the worker took the request
            assert not transport.send(links[0], PAYLOAD)  # a dropped device sends nothing
            await until(lambda: outcomes.acked and outcomes.failures, what="both outcomes")
            await transport.close()
        assert [a[0] for a in outcomes.acked] == ["fake-1"]
        [failure] = outcomes.failures
        assert (failure["link"], failure["code"], failure["fault"]) == ("fake-0", "dropped", False)
        assert server.paths() == ["/t"]

    run(scenario)


def test_beyond_the_backlog_a_send_is_refused_with_the_reason() -> None:
    server = Server()

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(1)
            transport = create(make_spec(http_model(url + "/t", maxConnections=1)), links, outcomes)
            await connected(transport, links)
            accepted = [transport.send(links[0], PAYLOAD) for _ in range(102)]  # no await: nothing is sent yet
            assert accepted == [True] * 100 + [False] * 2
            assert outcomes.not_sent_reasons[0] == (
                "fake-0",
                f"not sent: 100 requests already wait for the 1 connections to {url}/t (the server answers too slowly)",
            )
            await until(lambda: len(outcomes.acked) == 100, what="the accepted requests")
            await transport.close()
        assert len(server.requests) == 100 and outcomes.failures == []

    run(scenario)


def test_urls_headers_token_and_body_template_are_rendered_per_device() -> None:
    server = Server()
    connection = {
        "method": "PUT",
        "token": "tok-secret",
        "headers": {"X-Device": "${deviceId}", "X-Model": "${modelId}"},
        "bodyTemplate": {"id": "${deviceId}", "n": "${seq}", "i": "${index}", "t": "${temperature}"},
    }

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(3)
            transport = create(make_spec(http_model(url + "/d/${deviceId}", **connection)), links, outcomes)
            encode = transport.make_encoder()
            assert encode is not None
            await connected(transport, links)
            transport.send(links[2], encode("fake-2", 7, 1000, {"temperature": 21.5}))
            await until(lambda: outcomes.acked, what="the acknowledgement")
            await transport.close()
        [(method, path, headers, body)] = server.requests
        assert (method, path) == ("PUT", "/d/fake-2")
        assert headers["X-Device"] == "fake-2" and headers["X-Model"] == "unit-http"
        assert headers["Authorization"] == "Bearer tok-secret"
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"id": "fake-2", "n": 7, "i": 2, "t": 21.5}

    run(scenario)


def test_the_fleets_password_is_the_bearer_token_and_is_masked_in_error_bodies() -> None:
    server = Server()
    server.status, server.body = 401, "you sent pw-0123456789"

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(1)
            spec = make_spec(http_model(url + "/t"), credentials=Credentials(None, "pw-0123456789"))
            transport = create(spec, links, outcomes)
            await connected(transport, links)
            transport.send(links[0], PAYLOAD)
            await until(lambda: outcomes.failures, what="the 401")
            await transport.close()
        assert server.requests[0][2]["Authorization"] == "Bearer pw-0123456789"
        assert outcomes.failures[0]["reason"] == f"HTTP 401 from POST {server.url}/t: you sent ***"
        assert outcomes.failures[0]["fault"] is False

    run(scenario)


# --- IoTFlow flow ---------------------------------------------------------------------------------------


def test_iotflow_registers_each_device_and_telemetry_carries_its_api_key() -> None:
    server = Server()
    server.status = 201

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(2)
            model = iotflow_model(url, registration={"location": "lab ${index}"})
            spec = make_spec(model, credentials=Credentials(None, "pw-never-sent"))
            transport = create(spec, links, outcomes)
            await connected(transport, links)
            assert [link.conn.name for link in links] == ["fake-0", "fake-1"]
            assert "0123456789" not in repr(links[1].conn)
            encode = transport.make_encoder()
            assert encode is not None
            transport.send(links[1], encode("fake-1", 3, 1751466600123, {"temperature": 21.5}))
            await until(lambda: outcomes.acked, what="the acknowledgement")
            await transport.close()
        registrations = [json.loads(body) for _, path, _, body in server.requests if path == REGISTER]
        assert registrations[1] == {
            "name": "fake-1",
            "description": "a sensor for unit tests",
            "device_type": "sensor",
            "firmware_version": "2.0.1",
            "location": "lab 1",
        }
        [(method, path, headers, body)] = [r for r in server.requests if r[1] != REGISTER]
        assert (method, path) == ("POST", TELEMETRY)
        assert headers["X-API-Key"] == "key-fake-1-0123456789"
        assert "Authorization" not in headers  # IoTFlow devices use their key, not a Bearer token
        assert json.loads(body) == {
            "data": {"temperature": 21.5},
            "metadata": {"deviceId": "fake-1", "seq": 3, "ts": 1751466600123, "simulator": "iotix"},
            "timestamp": "2025-07-02T14:30:00.123Z",
        }
        assert outcomes.acked[0][:2] == ("fake-1", len(body))

    run(scenario)


def test_an_event_is_a_post_to_the_path_or_url_it_names_and_not_telemetry() -> None:
    """A behavior's event (send with a topic): POST (even for a PUT fleet) to that path on the fleet's server or
    to a full URL, with the device's headers and a JSON or text Content-Type; counted as an event, never
    acknowledged as telemetry; a failed one becomes the device's last error."""
    server = Server()

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(1)
            model = http_model(url + "/t/${deviceId}", method="PUT", headers={"X-Device": "${deviceId}"}, token="tk")
            transport = create(make_spec(model), links, outcomes)
            await connected(transport, links)
            assert transport.send(links[0], b'{"alert":"hot"}', topic="alerts/fake-0")
            assert transport.send(links[0], b"hot!", topic=f"{url}/absolute/alerts?level=2")
            await until(lambda: transport.events_sent == 2, what="two events")
            server.status = 404
            assert transport.send(links[0], b"{}", topic="/missing")
            await until(lambda: transport.events_failed == 1, what="the failed event")
            info = transport.describe()
            await transport.close()
        assert outcomes.acked == [] and outcomes.failures == [] and transport.latency.count == 0
        assert (info["eventsSent"], info["eventsFailed"]) == (2, 1)
        (first, second, third) = server.requests
        assert (first[0], first[1], first[3]) == ("POST", "/alerts/fake-0", b'{"alert":"hot"}')
        assert first[2]["Content-Type"] == "application/json"
        assert first[2]["X-Device"] == "fake-0" and first[2]["Authorization"] == "Bearer tk"
        assert (second[0], second[1], second[3]) == ("POST", "/absolute/alerts", b"hot!")
        assert second[2]["Content-Type"].startswith("text/plain")
        assert third[1] == "/missing"
        ((who, reason),) = outcomes.not_sent_reasons
        assert who == "fake-0" and reason == f"event: HTTP 404 from POST {url}/missing: ok"

    run(scenario)


def test_iotflow_events_carry_the_device_s_api_key() -> None:
    server = Server()

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(1)
            transport = create(make_spec(iotflow_model(url, heartbeatIntervalMs=0)), links, outcomes)
            await connected(transport, links)
            assert transport.send(links[0], b'{"alert":"low battery"}', topic="/api/v1/alerts")
            await until(lambda: transport.events_sent == 1, what="the event")
            await transport.close()
        [(method, path, headers, body)] = [r for r in server.requests if r[1] != REGISTER]
        assert (method, path, body) == ("POST", "/api/v1/alerts", b'{"alert":"low battery"}')
        assert headers["X-API-Key"] == "key-fake-0-0123456789"
        assert outcomes.acked == []

    run(scenario)


def test_iotflow_registration_is_kept_across_reconnects() -> None:
    server = Server()

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(1)
            transport = create(make_spec(iotflow_model(url)), links, outcomes)
            await transport.connect(links[0])
            transport.drop(links[0])
            assert not transport.is_connected(links[0])
            await transport.connect(links[0])
            assert transport.is_connected(links[0])
            await transport.close()
        assert server.paths() == [REGISTER]

    run(scenario)


def test_iotflow_registration_error_raises_naming_the_device() -> None:
    server = Server()
    server.register_status, server.register_body = 500, "database is down"

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(1)
            transport = create(make_spec(iotflow_model(url)), links, outcomes)
            with pytest.raises(TransportError) as caught:
                await transport.connect(links[0])
            assert str(caught.value) == (
                f"device 'fake-0': registration at {url}{REGISTER} failed: HTTP 500: database is down"
            )
            assert not transport.is_connected(links[0])
            assert not transport.send(links[0], PAYLOAD)
            await transport.close()
        assert outcomes.failures == [] and outcomes.acked == []

    run(scenario)


def test_iotflow_name_conflicts_follow_on_conflict() -> None:
    server = Server()
    server.taken = {"fake-0", "fake-0_1"}

    async def scenario() -> None:
        async with serving(server) as url:
            links = make_links(1)
            failing = create(make_spec(iotflow_model(url)), links, FakeOutcomes())
            with pytest.raises(TransportError, match=r"^device 'fake-0': the name 'fake-0' is already registered at "):
                await failing.connect(links[0])
            await failing.close()

            links = make_links(1)
            suffixed = create(make_spec(iotflow_model(url, onConflict="suffix")), links, FakeOutcomes())
            await suffixed.connect(links[0])
            assert links[0].conn.name == "fake-0_2" and links[0].conn.api_key == "key-fake-0_2-0123456789"
            await suffixed.close()

            server.taken.add("fake-0_2")
            links = make_links(1)
            reusing = create(make_spec(iotflow_model(url, onConflict="reuse")), links, FakeOutcomes())
            with pytest.raises(TransportError, match="onConflict 'reuse' has no API key for it"):
                await reusing.connect(links[0])  # 'fake-0' was never registered by this process
            await reusing.close()

    run(scenario)


def test_iotflow_heartbeats_go_to_active_devices_and_failures_are_counted() -> None:
    server = Server()

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(3)
            transport = create(make_spec(iotflow_model(url, heartbeatIntervalMs=1000)), links, outcomes)
            await connected(transport, links)
            outcomes.inactive.add("fake-2")
            first_due = min(link.conn.beat_due for link in links)
            last_due = max(link.conn.beat_due for link in links)

            def sweep(now: float) -> None:  # as the simulator does every 100 ms: each call visits a slice
                for _ in links:
                    transport.periodic(now)

            sweep(first_due - 0.01)  # not due yet
            await asyncio.sleep(0.1)
            assert HEARTBEAT not in server.paths()
            sweep(last_due + 0.5)
            await until(lambda: transport.heartbeats_sent == 2, what="two heartbeats")
            beats = [headers["X-API-Key"] for _, path, headers, _ in server.requests if path == HEARTBEAT]
            assert sorted(beats) == ["key-fake-0-0123456789", "key-fake-1-0123456789"]
            server.status, server.body = 503, "busy"
            sweep(last_due + 2.0)
            await until(lambda: transport.heartbeats_failed == 2, what="two failed heartbeats")
            await transport.close()
        assert outcomes.failures == [] and outcomes.acked == []  # heartbeats are not telemetry
        reason = f"heartbeat: HTTP 503 from POST {server.url}{HEARTBEAT}: busy"
        assert sorted(outcomes.not_sent_reasons) == [("fake-0", reason), ("fake-1", reason)]
        assert transport.describe()["heartbeatsSent"] == 2 and transport.describe()["heartbeatsFailed"] == 2

    run(scenario)


def test_iotflow_a_rejected_key_says_so() -> None:
    server = Server()
    server.status, server.body = 403, "key key-fake-0-0123456789 is inactive"

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(1)
            transport = create(make_spec(iotflow_model(url)), links, outcomes)
            await connected(transport, links)
            transport.send(links[0], PAYLOAD)
            await until(lambda: outcomes.failures, what="the 403")
            await transport.close()
        [failure] = outcomes.failures
        assert failure["reason"] == (
            f"HTTP 403 from POST {server.url}{TELEMETRY}: key *** is inactive "
            "(the API key was rejected: revoked or unknown)"
        )
        assert failure["code"] == "http_403" and failure["fault"] is False

    run(scenario)


# --- hybrid IoTFlow flow --------------------------------------------------------------------------------


def test_hybrid_devices_fetch_mqtt_credentials_and_name_the_device_when_the_broker_is_down() -> None:
    server = Server()
    port = closed_port()
    server.credentials = {
        "mqtt_host": "127.0.0.1",
        "mqtt_port": port,
        "client_id": "hybrid-client",
        "topics": {"telemetry_publish": "iotflow/devices/7/telemetry"},
    }

    async def scenario() -> None:
        async with serving(server) as url:
            outcomes, links = FakeOutcomes(), make_links(1)
            transport = create(make_spec(iotflow_model(url, telemetryOver="mqtt", timeoutMs=2000)), links, outcomes)
            with pytest.raises(TransportError, match=r"^device 'fake-0': "):
                await transport.connect(links[0])
            assert links[0].topic == "iotflow/devices/7/telemetry"
            assert not transport.is_connected(links[0]) and not transport.send(links[0], PAYLOAD)
            await transport.close()
        assert server.paths() == [REGISTER, CREDENTIALS]
        assert server.requests[1][2]["X-API-Key"] == "key-fake-0-0123456789"
        assert outcomes.lost == []  # a connect that failed is not a lost connection

    run(scenario)


def test_hybrid_credentials_without_a_topic_are_refused_naming_the_device() -> None:
    server = Server()
    server.credentials = {"mqtt_host": "127.0.0.1", "mqtt_port": 1883}

    async def scenario() -> None:
        async with serving(server) as url:
            links = make_links(1)
            transport = create(make_spec(iotflow_model(url, telemetryOver="mqtt")), links, FakeOutcomes())
            with pytest.raises(TransportError) as caught:
                await transport.connect(links[0])
            assert str(caught.value) == (
                f"device 'fake-0': GET {url}{CREDENTIALS} answered without credentials.topics.telemetry_publish"
            )
            await transport.close()

    run(scenario)
