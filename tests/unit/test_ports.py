"""Ports are 1-65535 wherever a user gives one: a model's connection.port, a CoAP server fleet's range.

The resolver takes a port modulo 65536 (108807 dials 43271), so a port out of range is refused with its value
before anything connects. Create Fleet's port= is tested in test_fleet_setup.py, the receiver's in
test_mqtt_topics.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from transport_fakes import FakeOutcomes, make_links, make_spec

from iotix.errors import ConfigurationError
from iotix.model import ModelError
from iotix.model.loader import load_model_dict
from iotix.transport.coap_server_mode import CoapServerTransport

MODEL: dict[str, Any] = {
    "id": "port-sensor",
    "name": "port sensor",
    "version": "1.0.0",
    "type": "sensor",
    "protocol": "coap",
    "connection": {"host": "127.0.0.1", "port": 5683},
    "telemetry": [{"name": "v", "type": "number", "intervalMs": 1000, "generator": {"type": "constant", "value": 1}}],
}


@pytest.mark.parametrize(("port", "why"), [(108807, "must be <= 65535, got 108807"), (0, "must be >= 1, got 0")])
def test_a_model_port_outside_1_to_65535_is_refused_naming_the_field_and_value(port: int, why: str) -> None:
    data = copy.deepcopy(MODEL)
    data["connection"]["port"] = port
    with pytest.raises(ModelError, match=rf"connection\.port: {why}"):
        load_model_dict(data)


def test_a_coap_server_fleet_whose_ports_would_pass_65535_is_refused() -> None:
    spec = make_spec(MODEL, {"mode": "server", "serverPort": 65000})
    with pytest.raises(ConfigurationError) as caught:
        CoapServerTransport(spec, make_links(1000), FakeOutcomes())
    assert str(caught.value) == (
        "Fleet 'fake': serverPort 65000 gives its 1,000 devices the UDP ports 65000-65999, beyond the last port, "
        "65535; use serverPort 64536 or lower, or 0 (any free port)."
    )
    CoapServerTransport(make_spec(MODEL, {"mode": "server", "serverPort": 64536}), make_links(1000), FakeOutcomes())
    CoapServerTransport(make_spec(MODEL, {"mode": "server", "serverPort": 0}), make_links(1000), FakeOutcomes())
