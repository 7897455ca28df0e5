"""How a fleet is asked for (connection overrides, ids, checks) and devices as CSV files; no loop, no network."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from iotix.errors import ConfigurationError, NotFoundError, error_context
from iotix.fleet.devices_csv import (
    DEVICE_COLUMNS,
    DeviceTable,
    neutralise_cell,
    read_device_table,
    write_devices_csv,
)
from iotix.fleet.setup import ConnectionOverrides, FleetSetup
from iotix.fleet.simulator import Simulator
from iotix.model.loader import ModelRegistry

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    registry = ModelRegistry()
    registry.load(MODELS / "simple-temperature.json")
    return registry.get("simple-temperature")


def test_a_given_host_replaces_the_model_s_broker_and_the_rest_is_kept() -> None:
    connection = {"broker": "mqtt.example:1883", "port": 1883, "qos": 0, "topic": "t"}
    out = ConnectionOverrides(host="127.0.0.1", port=2883, qos=1).apply(connection)
    assert out == {"host": "127.0.0.1", "port": 2883, "qos": 1, "topic": "t"}
    assert ConnectionOverrides().apply(connection) == connection
    with pytest.raises(ConfigurationError, match=r"^qos must be 0, 1 or 2, got 3\.$"):
        ConnectionOverrides(qos=3)


def test_credentials_take_the_overrides_first_and_never_show_the_password() -> None:
    connection = {"username": "model-user", "password": "model-secret"}
    assert ConnectionOverrides().credentials(connection).password == "model-secret"
    creds = ConnectionOverrides(username="u", password="s3cret").credentials(connection)
    assert (creds.username, creds.password) == ("u", "s3cret")
    assert "s3cret" not in repr(ConnectionOverrides(password="s3cret")) + repr(creds)


def test_ids_follow_the_pattern_or_the_fleet_name_unless_given(model) -> None:  # type: ignore[no-untyped-def]
    assert FleetSetup(count=2).ids("temp", model) == ["temp-0", "temp-1"]
    assert FleetSetup(count=2, id_pattern="{model}-{n:02d}").ids("temp", model) == [
        "simple-temperature-01",
        "simple-temperature-02",
    ]
    assert FleetSetup(device_ids=["a", "b"]).ids("temp", model) == ["a", "b"]
    with pytest.raises(ConfigurationError, match=r"^count must be at least 1, got -1\.$"):
        FleetSetup(count=-1)


def test_delivery_overrides_that_are_none_keep_the_model_s_settings(model) -> None:  # type: ignore[no-untyped-def]
    _, _, delivery = FleetSetup(delivery={"max_retries": None, "error_threshold": 0}).resolve(model)
    assert delivery.max_retries == 2 and delivery.error_threshold == 0
    with pytest.raises(ConfigurationError, match="maxRetries must be >= 0"):
        FleetSetup(delivery={"max_retries": -1}).resolve(model)


def test_error_context_prefixes_a_configuration_error_once() -> None:
    prefixed = r"^Fleet 'a': batch_size must be at least 1$"
    with pytest.raises(ConfigurationError, match=prefixed), error_context("Fleet 'a'"):
        raise ConfigurationError("batch_size must be at least 1")
    with pytest.raises(ConfigurationError, match=r"^Fleet 'a' is busy$"), error_context("Fleet 'a'"):
        raise ConfigurationError("Fleet 'a' is busy")
    with pytest.raises(NotFoundError, match=r"^gone$"), error_context("Fleet 'a'"):  # others pass unchanged
        raise NotFoundError("gone")


def test_the_simulator_picks_the_first_free_name() -> None:
    loop = asyncio.new_event_loop()
    try:
        sim = Simulator(loop)
        assert sim.free_name("env") == "env"
        sim.fleets.update({"env": None, "env-2": None})  # type: ignore[dict-item]
        assert sim.free_name("env") == "env-3"
        assert sim.free_name("other") == "other"
    finally:
        loop.close()


def test_a_device_table_names_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    with pytest.raises(NotFoundError, match=r"missing\.csv' does not exist"):
        read_device_table(missing)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,model\nx,thermostat\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"needs a 'deviceId' column; it has: id, model\.$"):
        read_device_table(bad)
    bad.write_text("deviceId,model\nx,thermostat\n,thermostat\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"empty deviceId on line\(s\) 3\."):
        read_device_table(bad)
    good = tmp_path / "good.csv"
    good.write_text("\ufeffdeviceId,model,temperature\n a ,thermostat,21\nb,thermostat,\n", encoding="utf-8")
    table = read_device_table(good)
    assert table.ids == ["a", "b"] and table.model_id() == "thermostat"
    two = DeviceTable(good, ("deviceId", "model"), ({"deviceId": "a", "model": "x"}, {"deviceId": "b", "model": "y"}))
    with pytest.raises(ConfigurationError, match=r"naming one model \(found: x, y\)"):
        two.model_id()


def test_cells_a_spreadsheet_would_run_are_neutralised(tmp_path: Path) -> None:
    assert [neutralise_cell(v) for v in ("=1+1", "@x", "-3", "ok", None, 5)] == ["'=1+1", "'@x", "'-3", "ok", "", 5]
    path = tmp_path / "out" / "devices.csv"
    count = write_devices_csv(path, "m", [{"deviceId": "@evil", "state": "running", "lastError": None}])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert count == 1 and lines[0] == ",".join(DEVICE_COLUMNS)
    assert lines[1].startswith("'@evil,,m,,running,")


def test_a_fleet_of_no_devices_is_refused() -> None:
    with pytest.raises(
        ConfigurationError, match=r"^count must be at least 1, got 0: a fleet of no devices would start"
    ):
        FleetSetup(count=0)
    with pytest.raises(ConfigurationError, match=r"^no device ids given: a fleet of no devices would test nothing\.$"):
        FleetSetup(device_ids=[])


@pytest.mark.parametrize("port", [108807, 70000, 65536, 0, -1])
def test_a_port_outside_1_to_65535_is_refused_naming_it(port: int) -> None:
    # getaddrinfo takes the port modulo 65536: 108807 would dial 43271, 70000 would dial 4464.
    with pytest.raises(ConfigurationError, match=rf"^port must be a port number between 1 and 65535, got {port}\.$"):
        ConnectionOverrides(port=port)


def test_the_edge_ports_are_accepted() -> None:
    assert ConnectionOverrides(port=1).apply({})["port"] == 1
    assert ConnectionOverrides(port=65535).apply({})["port"] == 65535


def test_a_device_csv_with_a_header_only_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("deviceId,model\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"empty\.csv' has no devices \(a header line only\)"):
        read_device_table(empty)
