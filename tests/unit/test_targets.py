"""Several targets (``host=h1:p1,h2:p2``) and source addresses (``source_addresses=``): parsing, the checks,
which device goes where, and binding a socket to its source address (against the tiny MQTT peer)."""

from __future__ import annotations

import ast
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mqtt_peer import MqttPeer
from transport_fakes import FakeLink, FakeOutcomes, make_links, make_spec, run, until

from iotix.errors import ConfigurationError
from iotix.fleet.setup import (
    MAX_SOURCE_ADDRESSES,
    ConnectionOverrides,
    FleetSetup,
    parse_source_addresses,
    parse_targets,
)
from iotix.model.loader import ModelRegistry
from iotix.transport.base import TransportError
from iotix.transport.mqtt import MqttTransport, create
from iotix.transport.paho_driver import bind_source

MODELS = Path(__file__).resolve().parents[2] / "models"


def registry_model(file: str, model_id: str) -> Any:
    registry = ModelRegistry()
    registry.load(MODELS / file)
    return registry.get(model_id)


def mqtt_model(**connection: Any) -> dict[str, Any]:
    """A small MQTT model; a connection key given as None is left out."""
    base = {"host": "127.0.0.1", "port": 1883, "topicPattern": "t/${deviceId}", "keepAlive": 30, **connection}
    return {
        "id": "unit-mqtt",
        "name": "MQTT unit sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {k: v for k, v in base.items() if v is not None},
        "telemetry": [
            {"name": "temperature", "type": "number", "intervalMs": 1000, "generator": {"type": "constant", "value": 1}}
        ],
    }


def transport(overrides: ConnectionOverrides, links: list[FakeLink], **connection: Any) -> MqttTransport:
    data = mqtt_model(**connection)
    applied = overrides.apply(data["connection"])
    return create(make_spec(data, applied), links, FakeOutcomes())


# -- parsing -----------------------------------------------------------------------------------------


def test_targets_are_host_and_optional_port_separated_by_commas() -> None:
    assert parse_targets("127.0.0.1:1883, 127.0.0.1:1884,broker-c") == [
        ("127.0.0.1", 1883),
        ("127.0.0.1", 1884),
        ("broker-c", None),
    ]
    assert parse_targets("::1") == [("::1", None)]
    assert parse_targets("[::1]:1885,[fe80::1]") == [("::1", 1885), ("fe80::1", None)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a:1883,,b", r"^host 'a:1883,,b' has an empty entry"),
        ("a:1883,b:http", r"^host entry 'b:http' of 'a:1883,b:http': the port must be a number .* got 'http'\.$"),
        ("a:1883,b:70000", r"^host entry 'b:70000' of 'a:1883,b:70000': the port must be a port number .* 70000"),
        ("mqtt://a:1883", r"^host 'mqtt://a:1883' is not a host: give host or host:port, without a scheme"),
        (":1883", r"^host ':1883' has no host name before its port\.$"),
    ],
)
def test_a_bad_target_is_named_with_the_whole_value(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_targets(value)
    with pytest.raises(ConfigurationError, match=message):
        ConnectionOverrides(host=value)  # checked when the overrides are made, before any fleet


def test_source_addresses_are_a_range_a_list_or_one_address() -> None:
    assert parse_source_addresses("127.0.0.2-127.0.0.4") == ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    assert parse_source_addresses("10.0.0.9, 127.0.0.2-127.0.0.3") == ("10.0.0.9", "127.0.0.2", "127.0.0.3")
    assert parse_source_addresses("127.0.1.7") == ("127.0.1.7",)
    assert parse_source_addresses("127.0.0.255-127.0.1.0") == ("127.0.0.255", "127.0.1.0")  # across an octet
    assert len(parse_source_addresses("127.0.1.0-127.0.1.255")) == MAX_SOURCE_ADDRESSES


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("127.0.0.9-127.0.0.2", r"the range 127\.0\.0\.9-127\.0\.0\.2 runs backwards; write the lower address first"),
        ("127.0.0.2-127.0.9.9", r"gives 2312 or more addresses, more than 256"),
        ("127.0.0.x", r"'127\.0\.0\.x' is not an IPv4 address"),
        ("::1", r"'::1' is not an IPv4 address"),
        ("127.0.0.2,127.0.0.2-127.0.0.3", r"names 127\.0\.0\.2 more than once"),
        ("0.0.0.0", r"0\.0\.0\.0 cannot be the source address of a connection"),
        ("127.0.0.2,", r"has an empty entry"),
    ],
)
def test_bad_source_addresses_are_named(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"^source_addresses '{value}'.*{message}"):
        ConnectionOverrides(source_addresses=value)


# -- the connection a fleet gets ------------------------------------------------------------------------


def test_several_targets_keep_the_first_as_host_and_port_and_fill_missing_ports() -> None:
    model_conn = {"broker": "mqtt.example", "port": 1883, "qos": 0}
    out = ConnectionOverrides(host="127.0.0.1:2001,127.0.0.2").apply(model_conn)
    assert out == {"host": "127.0.0.1", "port": 2001, "qos": 0, "targets": (("127.0.0.1", 2001), ("127.0.0.2", 1883))}
    # port= is the default of entries without one; the model's port when it is not given
    out = ConnectionOverrides(host="a,b:7", port=9).apply(model_conn)
    assert out["targets"] == (("a", 9), ("b", 7)) and (out["host"], out["port"]) == ("a", 9)
    # one host with a port is one target: no "targets" key
    assert ConnectionOverrides(host="127.0.0.1:2883").apply(model_conn) == {"host": "127.0.0.1", "port": 2883, "qos": 0}
    # no port anywhere: left to the protocol's default
    assert ConnectionOverrides(host="a,b").apply({})["targets"] == (("a", None), ("b", None))
    out = ConnectionOverrides(source_addresses="127.0.0.2-127.0.0.3").apply(model_conn)
    assert out["sourceAddresses"] == ("127.0.0.2", "127.0.0.3")


def test_several_targets_or_source_addresses_on_a_fleet_of_another_protocol_name_the_fleet() -> None:
    coap = registry_model("coap-smart-plug.yaml", "coap-smart-plug")
    setup = FleetSetup(name="plugs", connection=ConnectionOverrides(host="127.0.0.1:5683,127.0.0.1:5684"))
    with pytest.raises(
        ConfigurationError,
        match=r"^host names 2 targets \(127\.0\.0\.1:5683, 127\.0\.0\.1:5684\), but several targets are "
        r"supported for MQTT fleets only and fleet 'plugs' is a coap fleet \(model 'coap-smart-plug'\)\. Give one "
        r"host, or create one fleet per target\.$",
    ):
        setup.resolve(coap)
    setup = FleetSetup(connection=ConnectionOverrides(source_addresses="127.0.0.2"))
    with pytest.raises(
        ConfigurationError,
        match=r"^source_addresses are supported for MQTT fleets only \(one connection per device\), and fleet "
        r"'coap-smart-plug' is a coap fleet",
    ):
        setup.resolve(coap)
    # one target with a port is fine for every protocol
    connection, _, _ = FleetSetup(connection=ConnectionOverrides(host="127.0.0.1:5700")).resolve(coap)
    assert (connection["host"], connection["port"]) == ("127.0.0.1", 5700)
    mqtt = registry_model("simple-temperature.json", "simple-temperature")
    connection, _, _ = FleetSetup(connection=ConnectionOverrides(host="a:1,b:2", source_addresses="127.0.0.2")).resolve(
        mqtt
    )
    assert connection["targets"] == (("a", 1), ("b", 2))


# -- which device goes where ----------------------------------------------------------------------------


def test_device_i_uses_target_i_mod_n_and_source_i_mod_m_by_its_global_index() -> None:
    # a shard's links carry global indexes (FleetOptions.index_base): 1000, 1001, ...
    links = [FakeLink(f"d-{i}", i) for i in range(1000, 1007)]
    t = transport(
        ConnectionOverrides(
            host="127.0.0.1:1883,127.0.0.1:1884,127.0.0.1:1885", source_addresses="127.0.0.2-127.0.0.3"
        ),
        links,
    )
    assert [t.target_of(link)[1] for link in links] == [1884, 1885, 1883, 1884, 1885, 1883, 1884]  # 1000 % 3 == 1
    assert [t.source_of(link) for link in links] == ["127.0.0.2", "127.0.0.3"] * 3 + ["127.0.0.2"]
    assert t.target == "mqtt://127.0.0.1:1883,127.0.0.1:1884,127.0.0.1:1885"
    described = t.describe()
    assert described["targets"] == ["127.0.0.1:1883", "127.0.0.1:1884", "127.0.0.1:1885"]
    assert described["sourceAddresses"] == ["127.0.0.2", "127.0.0.3"]


def test_the_target_text_shows_three_targets_and_counts_the_rest() -> None:
    t = transport(ConnectionOverrides(host=",".join(f"127.0.0.1:{p}" for p in range(2001, 2007))), make_links(1))
    assert t.target == "mqtt://127.0.0.1:2001,127.0.0.1:2002,127.0.0.1:2003 (+3 more)"
    assert len(t.describe()["targets"]) == 6
    one = transport(ConnectionOverrides(), make_links(2))
    assert one.target == "mqtt://127.0.0.1:1883" and one.targets == (("127.0.0.1", 1883),)
    assert "targets" not in one.describe() and "sourceAddresses" not in one.describe()
    assert one.source_of(make_links(1)[0]) is None
    tls_default = transport(ConnectionOverrides(host="[::1],127.0.0.1:9"), make_links(1), port=None)
    assert tls_default.targets == (("::1", 1883), ("127.0.0.1", 9))
    assert tls_default.target == "mqtt://[::1]:1883,127.0.0.1:9"


# -- binding the socket (a tiny MQTT peer on 127.0.0.1) -------------------------------------------------


def test_bind_source_leaves_the_port_to_connect() -> None:
    with socket.socket() as sock:
        bind_source(sock, "127.0.0.5")
        assert sock.getsockname() == ("127.0.0.5", 0)  # IP_BIND_ADDRESS_NO_PORT: no port taken yet


def test_each_device_connects_from_its_source_address_to_its_target() -> None:
    async def scenario() -> None:
        peers = [await MqttPeer().start(), await MqttPeer().start()]
        try:
            links = make_links(4)
            overrides = ConnectionOverrides(
                host=",".join(f"127.0.0.1:{p.port}" for p in peers), source_addresses="127.0.0.2-127.0.0.4"
            )
            t = transport(overrides, links)
            for link in links:
                await t.connect(link)
            await until(lambda: sum(len(p.connects) for p in peers) == 4, "4 CONNECTs")
            assert [c.client_id for c in peers[0].connects] == ["fake-0", "fake-2"]
            assert [c.client_id for c in peers[1].connects] == ["fake-1", "fake-3"]
            local = [link.conn.wire_socket.getsockname()[0] for link in links]
            remote = [link.conn.wire_socket.getpeername()[1] for link in links]
            assert local == ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.2"]
            assert remote == [peers[0].port, peers[1].port] * 2
            for link in links:
                t.drop(link)
        finally:
            for peer in peers:
                await peer.stop()

    run(scenario)


def test_a_source_address_this_machine_does_not_have_fails_the_connect_naming_it() -> None:
    async def scenario() -> None:
        peer = await MqttPeer().start()
        try:
            links = make_links(1)
            t = transport(ConnectionOverrides(host=f"127.0.0.1:{peer.port}", source_addresses="203.0.113.77"), links)
            with pytest.raises(
                TransportError,
                match=rf"^device 'fake-0': cannot use source address 203\.0\.113\.77 for broker "
                rf"127\.0\.0\.1:{peer.port}: Cannot assign requested address \(source addresses must be addresses "
                r"of this machine",
            ):
                await t.connect(links[0])
        finally:
            await peer.stop()

    run(scenario)


# -- why: one (source, destination) pair has only the ephemeral port range -------------------------------

PORT_RANGE_SCRIPT = """
import asyncio, subprocess, sys
sys.path[:0] = [{unit!r}, {libraries!r}]
from mqtt_peer import MqttPeer
from transport_fakes import FakeOutcomes, make_links, make_spec
from iotix.fleet.setup import ConnectionOverrides
from iotix.transport.base import TransportError
from iotix.transport.mqtt import create

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as fh:
    fh.write("40000 40099\\n")  # 100 ephemeral ports in this network namespace


async def connected(peer, sources):
    data = {{
        "id": "ports", "name": "ports", "version": "1.0.0", "type": "sensor", "protocol": "mqtt",
        "connection": {{"host": "127.0.0.1", "port": peer.port, "topicPattern": "t/${{deviceId}}"}},
        "telemetry": [{{"name": "t", "type": "number", "intervalMs": 1000,
                        "generator": {{"type": "constant", "value": 1}}}}],
    }}
    links = make_links(150)
    overrides = ConnectionOverrides(source_addresses=sources)
    t = create(make_spec(data, overrides.apply(data["connection"])), links, FakeOutcomes())
    ok, error = 0, ""
    for link in links:
        try:
            await t.connect(link)
            ok += 1
        except TransportError as err:
            error = error or str(err)
    for link in links:
        t.drop(link)
    return ok, error


async def main():
    peer = await MqttPeer().start()
    try:
        print(await connected(peer, ""))
        print(await connected(peer, "127.0.0.2-127.0.0.3"))
    finally:
        await peer.stop()


asyncio.run(main())
"""


def test_source_addresses_give_each_pair_its_own_ephemeral_ports() -> None:
    """In a network namespace of its own with 100 ephemeral ports: 150 devices to one broker address do not all
    connect from one source address, and all do from two."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-rn", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no unprivileged network namespaces here (unshare -rn)")
    here = Path(__file__).resolve().parent
    script = PORT_RANGE_SCRIPT.format(unit=str(here), libraries=str(here.parents[1] / "libraries"))
    out = subprocess.run(
        [unshare, "-rn", sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    alone, spread = (ast.literal_eval(line) for line in out.stdout.splitlines()[-2:])
    assert alone[0] <= 100 and "Cannot assign requested address" in alone[1], alone  # 150 wanted
    assert spread == (150, ""), spread
