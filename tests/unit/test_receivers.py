"""The receivers registry: which receiver counts a fleet's telemetry, and what is said when none or several can.

Pure: fake sources and fleet views, no loop, no server. The last tests run the kinds ProtocolClient declares
and check the messages the acceptance suites rely on.
"""

from __future__ import annotations

import pytest

from iotix.observe.receivers import FleetView, Receiver, ReceiverError, ReceiverKind, Receivers, Source
from iotix.observe.tracker import TelemetryTracker


def source_of(name: str) -> Source:
    return Source(name, TelemetryTracker(name), 1.0)


def receiver(name: str, kind: str, rank: int = 0, hears: object = None) -> Receiver:
    if hears is None:
        return Receiver(name, kind, lambda: source_of(name), rank=rank)
    return Receiver(name, kind, lambda: source_of(name), hears, rank)  # type: ignore[arg-type]


def kind(name: str, protocol: str | None) -> ReceiverKind:
    return ReceiverKind(
        name,
        claims=None if protocol is None else (lambda fleet: fleet.protocol == protocol),
        missing=lambda fleet, available: f"{name}: none for {fleet.name} (available: {available})",
        ambiguous=lambda fleet, names: f"{name}: several for {fleet.name}: {names}",
    )


@pytest.fixture
def registry() -> Receivers:
    reg = Receivers(unknown_hint="open one.")
    reg.add_kind(kind("pub", None))  # the fallback
    reg.add_kind(kind("udp", "udp"))
    return reg


PUB = FleetView("env", "pub")
UDP = FleetView("plugs", "udp", {"topic": "t"})


def test_a_named_receiver_is_found_whatever_its_kind(registry: Receivers) -> None:
    registry.register(receiver("default", "pub"))
    registry.register(receiver("sink", "udp"))
    assert registry.pick("sink", PUB).name == "sink"
    assert registry.pick("default", UDP).source().name == "default"


def test_an_unknown_name_lists_every_receiver_by_kind_then_registration(registry: Receivers) -> None:
    registry.register(receiver("sink", "udp"))
    registry.register(receiver("b", "pub"))
    registry.register(receiver("a", "pub"))
    with pytest.raises(ReceiverError) as caught:
        registry.pick("nope", PUB)
    assert str(caught.value) == "No receiver named 'nope' (available: 'b', 'a', 'sink'); open one."
    assert Receivers().available() == "none"


def test_without_a_name_the_kind_that_claims_the_fleet_decides(registry: Receivers) -> None:
    registry.register(receiver("default", "pub", rank=1))
    registry.register(receiver("sink", "udp"))
    assert registry.pick("", UDP).name == "sink"
    assert registry.pick("", PUB).name == "default"
    assert registry.pick("", FleetView("x", "other")).name == "default"  # the fallback kind serves it


def test_the_highest_rank_wins_and_several_equal_ones_are_ambiguous(registry: Receivers) -> None:
    registry.register(receiver("one", "udp"))
    assert registry.pick("", UDP).name == "one"  # the only one
    registry.register(receiver("two", "udp"))
    with pytest.raises(ReceiverError, match=r"^udp: several for plugs: \['one', 'two'\]$"):
        registry.pick("", UDP)
    registry.register(receiver("sink", "udp", rank=1))
    assert registry.pick("", UDP).name == "sink"


def test_a_receiver_that_cannot_have_heard_the_fleet_is_not_chosen(registry: Receivers) -> None:
    registry.register(receiver("elsewhere", "udp", hears=lambda fleet: fleet.connection.get("topic") == "u"))
    registry.register(receiver("default", "pub"))
    with pytest.raises(ReceiverError) as caught:
        registry.pick("", UDP)
    assert str(caught.value) == "udp: none for plugs (available: 'default', 'elsewhere')"
    assert registry.pick("elsewhere", UDP).name == "elsewhere"  # named, it is taken at its word


def test_names_are_unique_and_free_again_once_unregistered(registry: Receivers) -> None:
    registry.register(receiver("coap", "udp"))
    with pytest.raises(ReceiverError, match="A receiver named 'coap' exists already"):
        registry.register(receiver("coap", "pub"))
    registry.unregister("coap")
    registry.unregister("coap")  # twice is harmless
    assert "coap" not in registry and len(registry) == 0
    registry.register(receiver("coap", "pub"))
    with pytest.raises(ReceiverError, match="undeclared kind 'tcp'"):
        registry.register(receiver("x", "tcp"))


def test_without_any_kind_the_message_says_where_receivers_come_from() -> None:
    with pytest.raises(ReceiverError, match=r"^No receiver collects the telemetry of fleet 'env' \(pub\)"):
        Receivers().pick("", PUB)


# --------------------------------------------------------------------------- the kinds of ProtocolClient


@pytest.fixture
def client_receivers() -> Receivers:
    """A registry with the kinds ProtocolClient declares, in its order (not the process's own)."""
    from iotix._robot.coap_keywords import COAP_RECEIVERS
    from iotix._robot.iotflow_keywords import IOTFLOW_RECEIVERS
    from iotix._robot.kafka_keywords import KAFKA_RECEIVERS
    from iotix._robot.mqtt_keywords import MQTT_RECEIVERS
    from iotix.ProtocolClient import UNKNOWN_RECEIVER_HINT

    reg = Receivers(UNKNOWN_RECEIVER_HINT)
    for declared in (MQTT_RECEIVERS, COAP_RECEIVERS, IOTFLOW_RECEIVERS, KAFKA_RECEIVERS):
        reg.add_kind(declared)
    return reg


def message(reg: Receivers, name: str, fleet: FleetView) -> str:
    with pytest.raises(ReceiverError) as caught:
        reg.pick(name, fleet)
    return str(caught.value)


def test_the_messages_of_protocol_client_s_kinds(client_receivers: Receivers) -> None:
    reg = client_receivers
    mqtt = FleetView("env", "mqtt")
    assert message(reg, "", mqtt) == (
        "No receiver is collecting telemetry: use Connect To MQTT Broker and Subscribe To Topic before the fleet sends."
    )
    reg.register(receiver("a", "mqtt"))
    reg.register(receiver("b", "mqtt"))
    assert message(reg, "", mqtt) == "Several receivers are connected (a, b); say which with source=."
    reg.register(receiver("default", "mqtt", rank=1))
    assert reg.pick("", mqtt).name == "default"
    assert message(reg, "backend", mqtt).startswith(
        "No receiver named 'backend' (available: 'a', 'b', 'default'); connect and subscribe an MQTT receiver, start"
    )
    assert message(reg, "", FleetView("soil", "coap")) == (
        "Fleet 'soil' (coap): no CoAP receiver collects its telemetry (available: 'a', 'b', 'default'); start a "
        "local CoAP server or observe a resource, or name a receiver with source=."
    )
    iotflow = FleetView("unheard", "http", {"flow": "iotflow"})
    assert message(reg, "", iotflow).startswith(
        "Fleet 'unheard' (http, IoTFlow flow): no local IoTFlow backend collects its telemetry (available: "
    )
    hybrid = FleetView("hybrid", "http", {"flow": "iotflow", "telemetryOver": "mqtt"})
    assert reg.pick("", hybrid).name == "default"  # its telemetry goes to the MQTT broker
    kafka = FleetView("trucks", "kafka", {"topic": "elsewhere"})
    assert message(reg, "", kafka).startswith(
        "Fleet 'trucks' (kafka): no Kafka subscription consumes its topic 'elsewhere' (available: "
    )


def test_without_an_mqtt_receiver_an_http_fleet_names_the_ways_to_get_one(client_receivers: Receivers) -> None:
    assert message(client_receivers, "", FleetView("generic", "http")) == (
        "Fleet 'generic' (http): no receiver collects its telemetry (available: none); connect and subscribe an "
        "MQTT receiver, start a local IoTFlow backend, or name one with source=."
    )


def test_the_local_coap_server_wins_over_observations(client_receivers: Receivers) -> None:
    reg = client_receivers
    coap = FleetView("soil", "coap")
    reg.register(receiver("observe:one", "coap"))
    reg.register(receiver("observe:two", "coap"))
    assert message(reg, "", coap) == (
        "Fleet 'soil' (coap): several CoAP observations could have collected its telemetry ('observe:one', "
        "'observe:two'); say which with source=."
    )
    reg.register(receiver("coap", "coap", rank=1))
    assert reg.pick("", coap).name == "coap"
    assert reg.names() == ["observe:one", "observe:two", "coap"]


def test_protocol_client_declares_its_kinds_on_the_process_context() -> None:
    from iotix.ProtocolClient import ProtocolClient

    receivers = ProtocolClient().context.receivers

    def kind_of(protocol: str, **connection: str) -> str | None:
        found = receivers.kind_of(FleetView("f", protocol, connection))
        return found.name if found else None

    assert kind_of("mqtt") == "mqtt"
    assert kind_of("coap") == "coap"
    assert kind_of("kafka", topic="t") == "kafka"
    assert kind_of("http", flow="iotflow") == "iotflow"
    assert kind_of("http", flow="iotflow", telemetryOver="mqtt") == "mqtt"
    assert kind_of("http") == "mqtt"


def test_aliases_are_exact_and_the_message_lists_the_open_ones() -> None:
    from iotix._robot.aliases import Aliases
    from iotix._robot.context import KeywordError

    aliases: Aliases[str] = Aliases("No connection '{alias}' (connected: {known}).")
    with pytest.raises(KeywordError, match=r"^No connection 'a' \(connected: none\)\.$"):
        aliases.get("a")
    aliases.add("default", "x")
    aliases.add("1", "y")
    assert aliases.get("1") == "y" and aliases.find("Default") is None
    with pytest.raises(KeywordError, match=r"\(connected: 'default', '1'\)"):
        aliases.get("2")
    assert aliases.pop("default") == "x" and aliases.pop("default") is None
    assert list(aliases) == ["1"] and "1" in aliases and len(aliases) == 1
