"""The local IoTFlow-compatible backend from iotix.services, exercised with plain ``requests`` as a client would."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from harness import process_gone

from iotix.errors import ConfigurationError, IoTixError
from iotix.services import IoTFlowBackend, live_processes, start_iotflow_backend
from iotix.services.iotflow import parse_rate_limit

pytestmark = pytest.mark.integration

TIMEOUT = 10.0


# ----------------------------------------------------------------------------------------------- helpers


class Client:
    """A ``requests`` session against one backend, with the calls the tests repeat."""

    def __init__(self, backend: IoTFlowBackend) -> None:
        self.backend = backend
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.backend.url + path, timeout=TIMEOUT, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.request(method, path, headers=self.backend.admin_headers, **kwargs)

    def register(self, name: str | None = None, device_type: str = "sensor", **fields: Any) -> dict[str, Any]:
        body = {"name": name or unique("dev"), "device_type": device_type, **fields}
        response = self.request("POST", "/api/v1/devices/register", json=body)
        assert response.status_code == 201, response.text
        return response.json()["device"]

    def send(self, key: str, data: dict[str, Any] | None = None, **body: Any) -> requests.Response:
        payload = {"data": data if data is not None else {"temperature": 21.5}, **body}
        return self.request("POST", "/api/v1/devices/telemetry", json=payload, headers={"X-API-Key": key})


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def assert_error(response: requests.Response, status: int, fragment: str = "") -> dict[str, Any]:
    """The answer has ``status``, is JSON ``{"status": "error", "message": ...}`` and mentions ``fragment``."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "error"
    assert fragment.lower() in body["message"].lower(), body["message"]
    return body


def stamp(second: int) -> str:
    return f"2026-01-01T00:00:{second:02d}Z"


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IoTFlowBackend]:
    started = start_iotflow_backend(workdir=tmp_path_factory.mktemp("iotflow"))
    yield started
    started.stop()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[IoTFlowBackend]:
    """A backend of its own, for tests that look at totals."""
    started = start_iotflow_backend(workdir=tmp_path)
    yield started
    started.stop()


@pytest.fixture
def client(backend: IoTFlowBackend) -> Iterator[Client]:
    made = Client(backend)
    yield made
    made.close()


# ------------------------------------------------------------------------------------ lifecycle, health


def test_health_and_info(backend: IoTFlowBackend, client: Client) -> None:
    response = client.request("GET", "/health")
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"
    info = backend.info()
    assert set(info) == {"url", "host", "port", "admin_token", "db_path"}
    assert info["url"] == f"http://127.0.0.1:{backend.port}" == backend.url
    assert info["admin_token"] == backend.admin_token and len(backend.admin_token) >= 32
    assert Path(info["db_path"]).is_file()
    assert backend.admin_token not in repr(backend)


def test_stops_cleanly_and_restarts_with_its_devices(tmp_path: Path) -> None:
    backend = start_iotflow_backend(workdir=tmp_path, admin_token="fixed-token-for-restart")
    client = Client(backend)
    device = client.register()
    assert client.send(device["api_key"], metadata={"seq": 1}).status_code == 201
    pid, port = backend.pid, backend.port
    assert pid is not None

    backend.stop()
    assert not backend.is_running
    assert process_gone(pid)
    assert all(process.pid != pid for process in live_processes())
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{backend.url}/health", timeout=2)
    assert "Stopped; database closed" in backend.log_path.read_text()

    backend.start()
    try:
        assert backend.port == port and backend.pid != pid
        assert client.send(device["api_key"], metadata={"seq": 2}).status_code == 201
        records = client.admin("GET", f"/api/v1/telemetry/{device['id']}").json()["data"]
        assert [record["metadata"]["seq"] for record in records] == [2, 1]
    finally:
        client.close()
        backend.stop()
    assert process_gone(backend.pid or 0)


def test_port_taken_by_another_server_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        backend = IoTFlowBackend(port, workdir=tmp_path)
        with pytest.raises(IoTixError, match="address stayed in use") as caught:
            backend.start()
    assert "address already in use" in str(caught.value)
    assert backend.admin_token not in str(caught.value)
    assert not backend.is_running


def test_secrets_stay_out_of_the_command_line_and_the_log(fresh: IoTFlowBackend) -> None:
    client = Client(fresh)
    device = client.register()
    client.send(device["api_key"])
    client.send("not-a-key-at-all")
    client.admin("PUT", f"/api/v1/admin/devices/{device['id']}/status", json={"status": "inactive"})
    command = " ".join(fresh.command(fresh.port))
    assert fresh.admin_token not in command
    log = fresh.log_path.read_text()
    assert f"key {device['api_key'][:4]}..." in log
    assert device["api_key"] not in log
    assert fresh.admin_token not in log


def test_options_are_checked() -> None:
    assert parse_rate_limit("5/1") == (5, 1.0)
    assert parse_rate_limit(" 100 / 60s ") == (100, 60.0)
    for bad in ("5", "0/1", "5/0", "five/1", "5/-1"):
        with pytest.raises(ConfigurationError):
            parse_rate_limit(bad)
    with pytest.raises(ConfigurationError, match="port"):
        IoTFlowBackend(70000)
    with pytest.raises(ConfigurationError, match="MQTT"):
        IoTFlowBackend(mqtt_port=1883)
    result = subprocess.run(
        [sys.executable, "-m", "iotix.services.iotflow_app", "--db", "x.db", "--rate-limit", "lots"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "IOTIX_IOTFLOW_ADMIN_TOKEN": "t"},
        check=False,
    )
    assert result.returncode == 2 and "Rate limit must look like 'N/S'" in result.stderr


# ---------------------------------------------------------------------------------------- registration


def test_register_returns_the_device_and_its_api_key(client: Client) -> None:
    name = unique("thermo")
    response = client.request(
        "POST",
        "/api/v1/devices/register",
        json={
            "name": name,
            "description": "living room",
            "device_type": "temperature_sensor",
            "location": "home",
            "firmware_version": "1.2.3",
            "hardware_version": "rev-b",
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "success" and "registered" in body["message"]
    device = body["device"]
    assert device["name"] == name and device["device_type"] == "temperature_sensor"
    assert device["status"] == "active" and device["location"] == "home"
    assert device["firmware_version"] == "1.2.3" and device["hardware_version"] == "rev-b"
    assert isinstance(device["id"], int)
    assert re.fullmatch(r"[A-Za-z0-9]{32}", device["api_key"])
    assert client.register()["api_key"] != device["api_key"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"device_type": "sensor"}, "name"),
        ({"name": "  ", "device_type": "sensor"}, "name"),
        ({"name": "x"}, "device_type"),
        ({"name": 5, "device_type": "sensor"}, "name must be a string"),
        ({"name": "n" * 101, "device_type": "sensor"}, "longer than 100"),
    ],
)
def test_register_rejects_bad_bodies(client: Client, body: dict[str, Any], fragment: str) -> None:
    assert_error(client.request("POST", "/api/v1/devices/register", json=body), 400, fragment)


def test_register_rejects_a_body_that_is_not_a_json_object(client: Client) -> None:
    assert_error(client.request("POST", "/api/v1/devices/register", data="{nope"), 400, "not valid JSON")
    assert_error(client.request("POST", "/api/v1/devices/register", json=["a"]), 400, "JSON object")
    assert_error(client.request("POST", "/api/v1/devices/register"), 400, "JSON object")


def test_a_taken_name_is_409_unless_auto_suffix(client: Client) -> None:
    name = unique("dup")
    first = client.register(name)
    body = assert_error(
        client.request("POST", "/api/v1/devices/register", json={"name": name, "device_type": "sensor"}), 409
    )
    assert body["message"] == "Device name already exists"

    by_query = client.request(
        "POST", "/api/v1/devices/register?auto_suffix=true", json={"name": name, "device_type": "sensor"}
    )
    assert by_query.status_code == 201 and by_query.json()["device"]["name"] == f"{name}_1"
    by_body = client.register(name, auto_suffix=True)
    assert by_body["name"] == f"{name}_2"
    assert len({first["id"], by_query.json()["device"]["id"], by_body["id"]}) == 3
    free = unique("free")
    assert client.register(free, auto_suffix=True)["name"] == free


# ------------------------------------------------------------------------------------ telemetry, keys


def test_telemetry_is_stored_and_read_back_newest_first(client: Client) -> None:
    device = client.register()
    key, device_id = device["api_key"], device["id"]
    for second in (3, 1, 2, 5, 4):
        response = client.send(key, {"t": second}, metadata={"seq": second}, timestamp=stamp(second))
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["status"] == "success" and body["message"] == "Telemetry data stored successfully"
        assert body["device_id"] == device_id

    records = client.request("GET", f"/api/v1/telemetry/{device_id}", headers={"X-API-Key": key}).json()
    assert records["count"] == 5
    assert [record["data"]["t"] for record in records["data"]] == [5, 4, 3, 2, 1]
    first = records["data"][0]
    assert first["timestamp"] == "2026-01-01T00:00:05+00:00" and first["metadata"] == {"seq": 5}

    limited = client.request("GET", f"/api/v1/telemetry/{device_id}?limit=2", headers={"X-API-Key": key}).json()
    assert [record["data"]["t"] for record in limited["data"]] == [5, 4]
    window = client.admin("GET", f"/api/v1/telemetry/{device_id}?start_time={stamp(2)}&end_time={stamp(4)}").json()
    assert [record["data"]["t"] for record in window["data"]] == [4, 3, 2]

    latest = client.request("GET", f"/api/v1/telemetry/{device_id}/latest", headers={"X-API-Key": key})
    assert latest.status_code == 200 and latest.json()["latest_data"]["data"] == {"t": 5}
    own = client.request("GET", "/api/v1/devices/telemetry?limit=1", headers={"X-API-Key": key}).json()
    assert [record["data"]["t"] for record in own["telemetry"]] == [5]


def test_telemetry_without_timestamp_gets_the_server_time(client: Client) -> None:
    device = client.register()
    assert client.send(device["api_key"], {"v": 1}).status_code == 201
    record = client.admin("GET", f"/api/v1/telemetry/{device['id']}/latest").json()["latest_data"]
    assert record["timestamp"] == record["received_at"] and record["metadata"] == {}


def test_telemetry_needs_a_valid_key(client: Client) -> None:
    assert_error(client.request("POST", "/api/v1/devices/telemetry", json={"data": {"a": 1}}), 401, "API key")
    assert_error(client.send("wrong-key"), 401, "Invalid API key")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"metadata": {"seq": 1}}, "data"),
        ({"data": None}, "data"),
        ({"data": [1, 2]}, "JSON object"),
        ({"data": "hot"}, "JSON object"),
        ({"data": {"a": 1}, "metadata": [1]}, "metadata"),
        ({"data": {"a": 1}, "timestamp": "yesterday"}, "timestamp"),
        ({"data": {"a": 1}, "timestamp": 12}, "timestamp"),
    ],
)
def test_telemetry_rejects_bad_bodies(client: Client, body: dict[str, Any], fragment: str) -> None:
    key = client.register()["api_key"]
    response = client.request("POST", "/api/v1/devices/telemetry", json=body, headers={"X-API-Key": key})
    assert_error(response, 400, fragment)


def test_telemetry_rejects_nan(client: Client) -> None:
    key = client.register()["api_key"]
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    response = client.request("POST", "/api/v1/devices/telemetry", data='{"data": {"t": NaN}}', headers=headers)
    assert_error(response, 400, "not valid JSON")


def test_reading_telemetry_needs_the_devices_own_key_or_admin(client: Client) -> None:
    owner, other = client.register(), client.register()
    client.send(owner["api_key"])
    path = f"/api/v1/telemetry/{owner['id']}"
    assert_error(client.request("GET", path), 401)
    assert_error(client.request("GET", path, headers={"X-API-Key": other["api_key"]}), 403, "cannot read")
    assert_error(client.request("GET", path, headers={"Authorization": "admin wrong"}), 401, "admin")
    assert client.admin("GET", path).json()["count"] == 1
    assert_error(client.admin("GET", "/api/v1/telemetry/999999"), 404, "not found")
    assert_error(client.admin("GET", "/api/v1/telemetry/999999/latest"), 404, "not found")
    assert_error(client.admin("GET", f"/api/v1/telemetry/{other['id']}/latest"), 404, "No telemetry")


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "limit=10001", "start_time=soon", "end_time=2026-13-01"])
def test_reading_telemetry_rejects_bad_queries(client: Client, query: str) -> None:
    device = client.register()
    name = query.partition("=")[0]
    assert_error(client.admin("GET", f"/api/v1/telemetry/{device['id']}?{query}"), 400, name)


def test_relative_start_time(client: Client) -> None:
    device = client.register()
    client.send(device["api_key"], {"old": True}, timestamp="2020-01-01T00:00:00Z")
    client.send(device["api_key"], {"new": True})
    recent = client.admin("GET", f"/api/v1/telemetry/{device['id']}?start_time=-1h").json()
    assert [record["data"] for record in recent["data"]] == [{"new": True}]


# --------------------------------------------------------------------------------- heartbeat, status


def test_heartbeat_and_status(client: Client) -> None:
    device = client.register()
    headers = {"X-API-Key": device["api_key"]}
    status = client.request("GET", "/api/v1/devices/status", headers=headers).json()["device"]
    assert status["is_online"] is False and status["last_seen"] is None and status["telemetry_count"] == 0

    beat = client.request("POST", "/api/v1/devices/heartbeat", headers=headers)
    assert beat.status_code == 200 and beat.json()["status"] == "success"
    client.send(device["api_key"])
    status = client.request("GET", "/api/v1/devices/status", headers=headers).json()["device"]
    assert status["id"] == device["id"] and status["is_online"] is True
    assert status["last_seen"] is not None and status["telemetry_count"] == 1
    assert_error(client.request("POST", "/api/v1/devices/heartbeat"), 401)
    assert_error(client.request("GET", "/api/v1/devices/status", headers={"X-API-Key": "nope"}), 401)


def test_statuses_list_every_device_for_admins(client: Client) -> None:
    seen, silent = client.register(), client.register()
    client.send(seen["api_key"])
    assert_error(client.request("GET", "/api/v1/devices/statuses"), 401)
    assert_error(client.request("GET", "/api/v1/devices/statuses", headers={"X-API-Key": seen["api_key"]}), 401)
    body = client.admin("GET", "/api/v1/devices/statuses").json()
    by_id = {entry["id"]: entry for entry in body["devices"]}
    assert body["count"] == len(body["devices"])
    assert by_id[seen["id"]]["is_online"] is True and by_id[seen["id"]]["telemetry_count"] == 1
    assert by_id[silent["id"]]["is_online"] is False and by_id[silent["id"]]["last_seen"] is None
    fields = {"id", "name", "device_type", "status", "last_seen", "is_online", "telemetry_count"}
    assert set(by_id[seen["id"]]) == fields


# ------------------------------------------------------------------------------------------- admin


@pytest.mark.parametrize("header", [None, "admin", "admin wrong-token", "Bearer {token}", "{token}"])
def test_admin_endpoints_need_the_admin_token(backend: IoTFlowBackend, client: Client, header: str | None) -> None:
    headers = {"Authorization": header.format(token=backend.admin_token)} if header else {}
    for method, path in (
        ("GET", "/api/v1/admin/devices"),
        ("GET", "/api/v1/admin/stats"),
        ("GET", "/api/v1/admin/devices/1"),
        ("PUT", "/api/v1/admin/devices/1/status"),
        ("DELETE", "/api/v1/admin/telemetry"),
        ("GET", "/api/v1/admin/telemetry/export"),
    ):
        assert_error(client.request(method, path, headers=headers), 401, "admin")
    assert client.request("GET", "/api/v1/admin/stats", headers={"Authorization": f"Admin {backend.admin_token}"}).ok


def test_admin_devices_and_stats(fresh: IoTFlowBackend) -> None:
    client = Client(fresh)
    sensors = [client.register(device_type="sensor") for _ in range(3)]
    plug = client.register(device_type="smart_plug")
    for device in sensors[:2]:
        for _ in range(2):
            assert client.send(device["api_key"]).status_code == 201
    client.admin("PUT", f"/api/v1/admin/devices/{plug['id']}/status", json={"status": "inactive"})

    devices = client.admin("GET", "/api/v1/admin/devices").json()
    assert devices["total_devices"] == 4
    assert all("api_key" not in device for device in devices["devices"])
    counts = {device["id"]: device["telemetry_count"] for device in devices["devices"]}
    assert counts == {sensors[0]["id"]: 2, sensors[1]["id"]: 2, sensors[2]["id"]: 0, plug["id"]: 0}
    one = client.admin("GET", f"/api/v1/admin/devices/{plug['id']}").json()["device"]
    assert one["status"] == "inactive" and "api_key" not in one
    assert_error(client.admin("GET", "/api/v1/admin/devices/424242"), 404)

    stats = client.admin("GET", "/api/v1/admin/stats").json()
    assert stats["status"] == "success"
    assert stats["device_stats"] == {
        "total": 4,
        "active": 3,
        "inactive": 1,
        "maintenance": 0,
        "online": 2,
        "offline": 1,
    }
    assert stats["telemetry_stats"] == {"total_records": 4}
    assert stats["device_types"] == {"sensor": 3, "smart_plug": 1}
    client.close()


def test_a_revoked_key_gets_403_until_reactivated(client: Client) -> None:
    device = client.register()
    key, path = device["api_key"], f"/api/v1/admin/devices/{device['id']}/status"
    assert client.send(key).status_code == 201

    revoked = client.admin("PUT", path, json={"status": "inactive"})
    assert revoked.status_code == 200
    assert revoked.json()["old_status"] == "active" and revoked.json()["new_status"] == "inactive"
    assert_error(client.send(key), 403, "inactive")
    assert_error(client.request("POST", "/api/v1/devices/heartbeat", headers={"X-API-Key": key}), 403)
    assert_error(client.request("GET", f"/api/v1/telemetry/{device['id']}", headers={"X-API-Key": key}), 403)
    assert client.admin("GET", f"/api/v1/telemetry/{device['id']}").json()["count"] == 1

    assert client.admin("PUT", path, json={"status": "maintenance"}).ok
    assert_error(client.send(key), 403, "maintenance")
    assert client.admin("PUT", path, json={"status": "active"}).ok
    assert client.send(key).status_code == 201


def test_status_update_is_checked(client: Client) -> None:
    device = client.register()
    path = f"/api/v1/admin/devices/{device['id']}/status"
    assert_error(client.admin("PUT", path, json={"status": "gone"}), 400, "invalid status")
    assert_error(client.admin("PUT", path, json={}), 400, "status")
    assert_error(client.admin("PUT", path), 400, "JSON object")
    assert_error(client.admin("PUT", "/api/v1/admin/devices/424242/status", json={"status": "inactive"}), 404)


def test_export_and_clear(fresh: IoTFlowBackend) -> None:
    client = Client(fresh)
    first, second = client.register(), client.register()
    for seq in range(1, 4):
        for device in (first, second):
            response = client.send(device["api_key"], {"v": seq}, metadata={"seq": seq}, timestamp=stamp(10 - seq))
            assert response.status_code == 201

    everything = client.admin("GET", "/api/v1/admin/telemetry/export").json()
    assert everything["count"] == 6
    order = [(record["device_id"], record["metadata"]["seq"]) for record in everything["records"]]
    assert order == [(device["id"], seq) for seq in range(1, 4) for device in (first, second)]
    ids = [record["id"] for record in everything["records"]]
    assert ids == sorted(ids)

    mine = client.admin("GET", f"/api/v1/admin/telemetry/export?device_id={first['id']}").json()
    assert [record["metadata"]["seq"] for record in mine["records"]] == [1, 2, 3]
    later = client.admin("GET", f"/api/v1/admin/telemetry/export?since_id={ids[3]}").json()
    assert [record["id"] for record in later["records"]] == ids[4:]
    assert_error(client.admin("GET", "/api/v1/admin/telemetry/export?device_id=424242"), 404)
    assert_error(client.admin("GET", "/api/v1/admin/telemetry/export?device_id=x"), 400, "device_id")

    cleared = client.admin("DELETE", f"/api/v1/admin/telemetry?device_id={first['id']}")
    assert cleared.status_code == 200 and cleared.json()["deleted"] == 3
    assert client.admin("GET", "/api/v1/admin/stats").json()["telemetry_stats"]["total_records"] == 3
    status = client.request("GET", "/api/v1/devices/status", headers={"X-API-Key": first["api_key"]}).json()
    assert status["device"]["telemetry_count"] == 0
    assert_error(client.admin("DELETE", "/api/v1/admin/telemetry?device_id=424242"), 404)

    assert client.admin("DELETE", "/api/v1/admin/telemetry").json()["deleted"] == 3
    assert client.admin("GET", "/api/v1/admin/telemetry/export").json() == {
        "status": "success",
        "count": 0,
        "device_id": None,
        "records": [],
    }
    assert client.send(first["api_key"]).status_code == 201
    client.close()


# ----------------------------------------------------------------------------------- MQTT, rate limit


def test_mqtt_credentials(tmp_path: Path, client: Client) -> None:
    device = client.register()
    assert_error(
        client.request("GET", "/api/v1/devices/mqtt-credentials", headers={"X-API-Key": device["api_key"]}),
        404,
        "MQTT is not configured",
    )
    with start_iotflow_backend(mqtt_host="127.0.0.1", mqtt_port=18830, workdir=tmp_path) as hybrid:
        other = Client(hybrid)
        registered = other.register("hybrid sensor")
        response = other.request(
            "GET", "/api/v1/devices/mqtt-credentials", headers={"X-API-Key": registered["api_key"]}
        )
        assert response.status_code == 200
        credentials = response.json()["credentials"]
        assert credentials["host"] == "127.0.0.1" and credentials["port"] == 18830
        assert credentials["username"] == str(registered["id"])
        assert credentials["password"] == registered["api_key"]
        assert credentials["client_id"] == f"device_{registered['id']}_hybrid_sensor"
        assert credentials["topics"]["telemetry"] == f"iotflow/devices/{registered['id']}/telemetry"
        assert credentials["topics"]["commands"] == f"iotflow/devices/{registered['id']}/commands"
        assert_error(other.request("GET", "/api/v1/devices/mqtt-credentials"), 401)
        other.close()


def test_rate_limit_answers_429_per_key(tmp_path: Path) -> None:
    with start_iotflow_backend(rate_limit="3/30", workdir=tmp_path) as limited:
        client = Client(limited)
        busy, quiet = client.register(), client.register()
        assert [client.send(busy["api_key"]).status_code for _ in range(3)] == [201, 201, 201]
        response = client.send(busy["api_key"])
        body = assert_error(response, 429, "rate limit")
        retry_after = int(response.headers["Retry-After"])
        assert 1 <= retry_after <= 30 and body["retry_after"] == retry_after
        assert_error(client.request("POST", "/api/v1/devices/heartbeat", headers={"X-API-Key": busy["api_key"]}), 429)
        assert client.send(quiet["api_key"]).status_code == 201
        assert client.admin("GET", "/api/v1/admin/stats").json()["telemetry_stats"]["total_records"] == 4
        client.close()


# ------------------------------------------------------------------------------------------- misc


def test_unknown_paths_and_methods_answer_json_errors(client: Client) -> None:
    assert_error(client.request("GET", "/api/v1/nothing"), 404, "not found")
    assert_error(client.request("GET", "/api/v1/telemetry/abc"), 404)
    response = assert_error(client.request("DELETE", "/health"), 405, "method not allowed")
    assert response["status"] == "error"


def test_500_concurrent_posts_are_all_stored(fresh: IoTFlowBackend) -> None:
    setup = Client(fresh)
    devices = [setup.register(f"load-{index}") for index in range(10)]
    setup.close()
    jobs = [(device, seq) for seq in range(1, 51) for device in devices]

    def post(job: tuple[dict[str, Any], int]) -> int:
        device, seq = job
        response = requests.post(
            f"{fresh.url}/api/v1/devices/telemetry",
            json={"data": {"value": seq}, "metadata": {"seq": seq}},
            headers={"X-API-Key": device["api_key"]},
            timeout=30,
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(post, jobs))
    assert statuses.count(201) == 500, sorted(set(statuses))

    export = requests.get(f"{fresh.url}/api/v1/admin/telemetry/export", headers=fresh.admin_headers, timeout=30)
    records = export.json()["records"]
    assert len(records) == 500
    for device in devices:
        seqs = sorted(record["metadata"]["seq"] for record in records if record["device_id"] == device["id"])
        assert seqs == list(range(1, 51)), device["name"]
        readback = requests.get(
            f"{fresh.url}/api/v1/telemetry/{device['id']}?limit=100",
            headers={"X-API-Key": device["api_key"]},
            timeout=30,
        ).json()
        assert readback["count"] == 50
