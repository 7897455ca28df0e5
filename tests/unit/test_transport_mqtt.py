"""The MQTT transport against a fake outcomes object and a tiny MQTT peer on 127.0.0.1: no fleet, no broker.

The peer (:mod:`mqtt_peer`) speaks just enough MQTT 3.1.1 to record what each client sends and to answer it
(or refuse, or stay silent) as a test asks. As the fleet does, a test sets ``link.topic`` after ``connect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from mqtt_peer import MqttPeer, Publish
from transport_fakes import FakeLink, FakeOutcomes, make_links, make_spec, run, until

from iotix.transport import create_transport
from iotix.transport.base import Credentials, TransportError
from iotix.transport.mqtt import MqttTransport, create

TIMEOUT = 10.0  # generous: the machine may be busy


def model(commands: list[dict[str, Any]] | None = None, **connection: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "unit-mqtt",
        "name": "MQTT unit sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {
            "host": "127.0.0.1",
            "port": 1883,
            "topicPattern": "t/${modelId}/${deviceId}/up",
            "qos": 0,
            "keepAlive": 30,
            **connection,
        },
        "telemetry": [
            {"name": "temperature", "type": "number", "intervalMs": 1000, "generator": {"type": "constant", "value": 1}}
        ],
    }
    if commands is not None:
        data["commands"] = commands
    return data


class Harness:
    """The peer of one test and the transports it built; ``close`` drops every link and stops the peer."""

    def __init__(self, peer: MqttPeer) -> None:
        self.peer = peer
        self.transports: list[MqttTransport] = []

    def build(
        self,
        count: int = 1,
        *,
        fleet: str = "fake",
        commands: list[dict[str, Any]] | None = None,
        credentials: Credentials | None = None,
        unchecked: dict[str, Any] | None = None,
        **connection: Any,
    ) -> tuple[MqttTransport, list[FakeLink], FakeOutcomes]:
        """A transport for ``count`` links; ``unchecked`` connection keys bypass the model check."""
        links = make_links(count, fleet)
        outcomes = FakeOutcomes()
        overrides = {"port": self.peer.port, **(unchecked or {})}
        spec = make_spec(model(commands, **connection), overrides, fleet=fleet, credentials=credentials)
        transport = create(spec, links, outcomes)
        self.transports.append(transport)
        return transport, links, outcomes

    async def connected(self, count: int = 1, **kwargs: Any) -> tuple[MqttTransport, list[FakeLink], FakeOutcomes]:
        transport, links, outcomes = self.build(count, **kwargs)
        for link in links:
            await transport.connect(link)
            link.topic = transport.topic_for(link)  # as the fleet does after connect
        return transport, links, outcomes

    async def close(self) -> None:
        for transport in self.transports:
            for link in transport.links:
                transport.drop(link)
        await self.peer.stop()


def run_with_peer(scenario: Callable[[Harness], Awaitable[None]]) -> None:
    async def main() -> None:
        h = Harness(await MqttPeer().start())
        try:
            await scenario(h)
        finally:
            await h.close()

    run(main)


async def settle() -> None:
    """Give late packets and callbacks a moment (for checks that something did NOT happen)."""
    await asyncio.sleep(0.2)


async def publishes(peer: MqttPeer, count: int) -> list[Publish]:
    """The PUBLISH packets the peer received, once there are ``count`` of them."""
    await until(lambda: len(peer.publishes) >= count, f"{count} PUBLISH at the peer", timeout=TIMEOUT)
    return peer.publishes


@contextlib.asynccontextmanager
async def ticking(transport: MqttTransport, every: float = 0.05) -> AsyncIterator[None]:
    """Call ``transport.periodic`` in the background, as the runtime does about every 100 ms."""
    loop = asyncio.get_running_loop()

    async def tick() -> None:
        while True:
            transport.periodic(loop.time())
            await asyncio.sleep(every)

    task = loop.create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ------------------------------------------------------------------------------------------------- connect


def test_create_and_the_registry_make_an_mqtt_transport_from_the_spec() -> None:
    links = make_links(1)
    outcomes = FakeOutcomes()
    spec = make_spec(model(), {"host": "broker.test", "port": 2883}, fleet="vans")
    transport = create(spec, links, outcomes)
    assert isinstance(transport, MqttTransport) and transport.request_based is False
    assert transport.spec is spec and transport.links is links and transport.outcomes is outcomes
    assert transport.name == "vans" and transport.target == "mqtt://broker.test:2883"
    assert type(create_transport(spec, links, outcomes)) is MqttTransport


def test_connect_sends_client_id_keep_alive_and_credentials_and_waits_for_connack() -> None:
    async def scenario(h: Harness) -> None:
        peer = h.peer
        gate = peer.connack_gate = asyncio.Event()
        transport, links, outcomes = h.build(2, keepAlive=17, credentials=Credentials("sensor-user", "s3cret"))
        assert not transport.is_connected(links[0]) and links[0].conn is None
        task = asyncio.create_task(transport.connect(links[0]))
        await until(lambda: peer.connects, "CONNECT at the peer", timeout=TIMEOUT)
        await settle()
        assert not task.done() and not transport.is_connected(links[0])  # CONNECT sent, no CONNACK yet
        gate.set()
        await asyncio.wait_for(task, TIMEOUT)
        assert transport.is_connected(links[0]) and links[0].conn is not None
        await transport.connect(links[1])
        assert transport.is_connected(links[1])
        assert [(c.client_id, c.keepalive, c.clean_session) for c in peer.connects] == [
            ("fake-0", 17, True),
            ("fake-1", 17, True),
        ]
        assert all((c.username, c.password) == ("sensor-user", b"s3cret") for c in peer.connects)
        assert all(c.will_topic is None for c in peer.connects)
        assert outcomes == FakeOutcomes()  # connecting reports nothing

    run_with_peer(scenario)


def test_the_client_id_follows_client_id_pattern_and_no_credentials_send_none() -> None:
    async def scenario(h: Harness) -> None:
        await h.connected(2, fleet="vans", clientIdPattern="sim-${fleet}-${index}-${modelId}", cleanSession=False)
        assert [(c.client_id, c.clean_session) for c in h.peer.connects] == [
            ("sim-vans-0-fake-model", False),
            ("sim-vans-1-fake-model", False),
        ]
        assert all(c.username is None and c.password is None for c in h.peer.connects)

    run_with_peer(scenario)


@pytest.mark.parametrize(("code", "reason"), [(4, "Bad user name or password"), (5, "Not authorized")])
def test_a_refused_connack_fails_connect_naming_the_device_and_a_later_connect_succeeds(code: int, reason: str) -> None:
    async def scenario(h: Harness) -> None:
        h.peer.connack_code = code
        transport, (link,), _ = h.build()
        refused = rf"^device 'fake-0': broker 127\.0\.0\.1:{h.peer.port} refused the connection: {reason}$"
        with pytest.raises(TransportError, match=refused):
            await transport.connect(link)
        assert not transport.is_connected(link)
        assert transport.send(link, b"x") is False
        h.peer.connack_code = 0  # the fleet retries with the same link
        await transport.connect(link)
        assert transport.is_connected(link) and [c.client_id for c in h.peer.connects] == ["fake-0", "fake-0"]

    run_with_peer(scenario)


def test_a_refused_connection_is_not_reported_as_lost() -> None:
    async def scenario(h: Harness) -> None:
        h.peer.connack_code = 5
        transport, (link,), outcomes = h.build()
        with pytest.raises(TransportError):
            await transport.connect(link)
        await settle()
        assert outcomes.lost == []

    run_with_peer(scenario)


def test_a_peer_that_never_sends_connack_fails_connect_after_connect_timeout() -> None:
    async def scenario(h: Harness) -> None:
        h.peer.connack_gate = asyncio.Event()  # never set
        # the transport reads connectTimeoutMs, but the model check refuses the key: pass it unchecked
        transport, (link,), outcomes = h.build(unchecked={"connectTimeoutMs": 300})
        silent = rf"^device 'fake-0': broker 127\.0\.0\.1:{h.peer.port} did not answer CONNECT within 0\.3 s$"
        with pytest.raises(TransportError, match=silent):
            await transport.connect(link)
        assert not transport.is_connected(link)
        await settle()
        assert outcomes.lost == []

    run_with_peer(scenario)


def test_an_unreachable_broker_fails_connect_naming_the_device_and_the_address() -> None:
    async def scenario() -> None:
        with socket.socket() as s:  # a port on which nothing listens
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        links = make_links(1)
        transport = create(make_spec(model(), {"port": port}), links, FakeOutcomes())
        with pytest.raises(TransportError, match=rf"^device 'fake-0': cannot reach broker 127\.0\.0\.1:{port}: "):
            await transport.connect(links[0])
        assert not transport.is_connected(links[0])

    run(scenario)


# ---------------------------------------------------------------------------------------------------- send


def test_qos0_send_publishes_on_the_rendered_topic_and_reports_nothing() -> None:
    async def scenario(h: Harness) -> None:
        transport, links, outcomes = await h.connected(2, topicPattern="t/${modelId}/${fleet}/${deviceId}/up")
        assert [link.topic for link in links] == ["t/fake-model/fake/fake-0/up", "t/fake-model/fake/fake-1/up"]
        # three readings in one loop iteration (corked into one write) arrive in order
        assert transport.send(links[0], b"r1") is True
        assert transport.send(links[0], b"r2") is True
        assert transport.send(links[1], b"r3" * 100) is True  # a remaining length above 127 takes two bytes
        assert transport.send(links[0], b'{"t":3}') is True
        assert transport.send(links[0], b"on", topic="state/fake-0", retain=True) is True  # another topic
        await publishes(h.peer, 5)
        seen = [(p.topic, p.payload, p.qos, p.packet_id, p.retain) for p in h.peer.published("fake-0")]
        # the message on another topic goes through paho at once, the corked readings after the loop iteration
        assert sorted(seen, key=lambda p: p[0] != "state/fake-0") == [
            ("state/fake-0", b"on", 0, None, True),
            ("t/fake-model/fake/fake-0/up", b"r1", 0, None, False),
            ("t/fake-model/fake/fake-0/up", b"r2", 0, None, False),
            ("t/fake-model/fake/fake-0/up", b'{"t":3}', 0, None, False),
        ]
        [other] = h.peer.published("fake-1")
        assert (other.topic, other.payload, other.qos) == ("t/fake-model/fake/fake-1/up", b"r3" * 100, 0)
        await settle()
        assert outcomes == FakeOutcomes()  # QoS 0: no acknowledgement, nothing to report

    run_with_peer(scenario)


def test_qos1_pubacks_are_acknowledged_once_per_telemetry_message_and_side_messages_are_not() -> None:
    async def scenario(h: Harness) -> None:
        transport, links, outcomes = await h.connected(2, qos=1)
        assert transport.send(links[0], b"r1") is True
        [first] = await publishes(h.peer, 1)
        assert (first.topic, first.payload, first.qos) == ("t/fake-model/fake-0/up", b"r1", 1)
        assert first.packet_id is not None
        await until(lambda: outcomes.acked, "the acknowledgement", timeout=TIMEOUT)
        assert [ack[0] for ack in outcomes.acked] == ["fake-0"]
        # a behavior alert (the transport's QoS) and a command response (QoS 1 asked): not telemetry
        assert transport.send(links[0], b"alert", topic="alerts/fake-0") is True
        assert transport.send(links[0], b'{"status":"ok"}', topic="cmd/fake-0/reboot/response", qos=1) is True
        assert transport.send(links[1], b"r2") is True
        assert transport.send(links[0], b"r3") is True
        await publishes(h.peer, 5)
        assert [(p.topic, p.qos) for p in h.peer.published("fake-0")[1:]] == [
            ("alerts/fake-0", 1),
            ("cmd/fake-0/reboot/response", 1),
            ("t/fake-model/fake-0/up", 1),
        ]
        await until(lambda: not any(link.conn.in_flight for link in links), "every PUBACK handled", timeout=TIMEOUT)
        await settle()
        assert sorted(ack[0] for ack in outcomes.acked) == ["fake-0", "fake-0", "fake-1"]
        assert outcomes.failures == [] and outcomes.not_sent_reasons == [] and outcomes.lost == []

    run_with_peer(scenario)


def test_send_on_a_link_that_is_not_connected_returns_false() -> None:
    async def scenario(h: Harness) -> None:
        transport, links, _ = h.build(4)
        assert transport.send(links[0], b"never connected") is False
        for link in links[1:]:
            await transport.connect(link)
            link.topic = transport.topic_for(link)
        await transport.disconnect(links[1])
        transport.drop(links[2])
        h.peer.close("fake-3")
        await until(lambda: not transport.is_connected(links[3]), "the peer's close noticed", timeout=TIMEOUT)
        for link in links:
            assert not transport.is_connected(link)
            assert transport.send(link, b"qos 0") is False
            assert transport.send(link, b"qos 1", qos=1) is False
            assert transport.send(link, b"alert", topic="alerts/x", qos=1) is False
        await settle()
        assert h.peer.publishes == []

    run_with_peer(scenario)


# ------------------------------------------------------------------------------------- losing a connection


def test_the_peer_closing_a_connection_is_reported_as_lost_once_per_connection() -> None:
    async def scenario(h: Harness) -> None:
        transport, links, outcomes = await h.connected(2)
        h.peer.close("fake-0")
        await until(lambda: outcomes.lost, "the lost connection", timeout=TIMEOUT)
        await settle()
        [(device, reason)] = outcomes.lost
        assert device == "fake-0" and reason.startswith("connection lost (")
        assert not transport.is_connected(links[0]) and transport.is_connected(links[1])
        # the fleet reconnects the same link; losing that connection is reported again
        await transport.connect(links[0])
        assert transport.is_connected(links[0])
        h.peer.close("fake-0")
        await until(lambda: len(outcomes.lost) == 2, "the second lost connection", timeout=TIMEOUT)
        await settle()
        assert [device for device, _ in outcomes.lost] == ["fake-0", "fake-0"]

    run_with_peer(scenario)


def test_disconnect_and_drop_are_not_reported_as_lost() -> None:
    async def scenario(h: Harness) -> None:
        transport, links, outcomes = await h.connected(2)
        sessions = [h.peer.sessions[link.id] for link in links]
        assert transport.send(links[0], b"last words")  # corked: disconnect writes it before DISCONNECT
        await transport.disconnect(links[0])
        transport.drop(links[1])
        await until(lambda: all(s.closed for s in sessions), "both connections closed at the peer", timeout=TIMEOUT)
        assert sessions[0].disconnect_sent and not sessions[1].disconnect_sent  # graceful, then abrupt
        assert [p.payload for p in h.peer.publishes] == [b"last words"]
        await settle()
        assert outcomes.lost == []
        assert not transport.is_connected(links[0]) and not transport.is_connected(links[1])
        # closing twice is harmless
        await transport.disconnect(links[0])
        transport.drop(links[1])
        # a new connection after a disconnect is watched again
        await transport.connect(links[0])
        h.peer.close("fake-0")
        await until(lambda: outcomes.lost, "the lost connection", timeout=TIMEOUT)
        assert [device for device, _ in outcomes.lost] == ["fake-0"]

    run_with_peer(scenario)


# ------------------------------------------------------------------------------------------------ commands

COMMANDS = [
    {"name": "reboot"},
    {"name": "setInterval", "topic": "devices/${deviceId}/interval"},
]


def test_connect_subscribes_to_the_command_topics_and_commands_reach_the_outcomes() -> None:
    async def scenario(h: Harness) -> None:
        transport, links, outcomes = await h.connected(
            2, commands=COMMANDS, commandTopicPattern="cmd/${modelId}/${deviceId}/${command}"
        )
        assert transport.command_topics(links[1]) == {
            "reboot": "cmd/fake-model/fake-1/reboot",
            "setInterval": "devices/fake-1/interval",
        }
        session = h.peer.sessions["fake-0"]
        await until(lambda: len(session.subscriptions) == 2, "the SUBSCRIBE", timeout=TIMEOUT)
        assert session.subscriptions == [("cmd/fake-model/fake-0/reboot", 1), ("devices/fake-0/interval", 1)]
        h.peer.push("fake-0", "cmd/fake-model/fake-0/unknown", b"{}")  # no such command
        h.peer.push("fake-0", "cmd/fake-model/fake-1/reboot", b"{}")  # the other device's command
        h.peer.push("fake-0", "cmd/fake-model/fake-0/reboot", b'{"delayMs":0}', qos=1)
        h.peer.push("fake-1", "devices/fake-1/interval", b'{"intervalMs":50}')
        await until(lambda: len(outcomes.commands) == 2, "two commands", timeout=TIMEOUT)
        await settle()
        assert sorted(outcomes.commands) == [
            ("fake-0", "reboot", b'{"delayMs":0}', "cmd/fake-model/fake-0/reboot"),
            ("fake-1", "setInterval", b'{"intervalMs":50}', "devices/fake-1/interval"),
        ]

    run_with_peer(scenario)


def test_a_model_without_commands_subscribes_to_nothing() -> None:
    async def scenario(h: Harness) -> None:
        transport, (link,), outcomes = await h.connected(1, commandTopicPattern="cmd/${deviceId}/${command}")
        assert transport.command_topics(link) == {}
        assert transport.send(link, b"r")
        await publishes(h.peer, 1)  # a SUBSCRIBE right after CONNACK would have come before it
        assert h.peer.sessions["fake-0"].subscriptions == []
        h.peer.push("fake-0", "cmd/fake-0/reboot", b"{}")
        await settle()
        assert outcomes.commands == []

    run_with_peer(scenario)


# ----------------------------------------------------------------------------------------------- last will


@pytest.mark.parametrize(
    ("will", "expected"),
    [
        (
            {"topic": "wills/${modelId}/${deviceId}", "payload": "gone ${deviceId}", "qos": 1, "retain": True},
            ("wills/fake-model/fake-1", b"gone fake-1", 1, True),
        ),
        (
            {"topic": "wills/${index}", "payload": {"device": "${deviceId}", "index": "${index}", "online": False}},
            ("wills/1", b'{"device":"fake-1","index":1,"online":false}', 0, False),
        ),
    ],
    ids=["text", "json"],
)
def test_connect_carries_the_last_will_rendered_for_the_device(will: dict[str, Any], expected: tuple) -> None:
    async def scenario(h: Harness) -> None:
        await h.connected(2, lastWill=will)
        connect = next(c for c in h.peer.connects if c.client_id == "fake-1")
        assert (connect.will_topic, connect.will_payload, connect.will_qos, connect.will_retain) == expected

    run_with_peer(scenario)


# --------------------------------------------------------------------------------------------------- drain


def test_drain_returns_once_qos1_messages_are_acknowledged() -> None:
    async def scenario(h: Harness) -> None:
        loop = asyncio.get_running_loop()
        transport, links, outcomes = await h.connected(2, qos=1)
        start = loop.time()
        await transport.drain(TIMEOUT)  # nothing in flight: at once
        assert loop.time() - start < TIMEOUT / 2
        h.peer.ack_publish = False
        assert transport.send(links[0], b"r1") and transport.send(links[1], b"r2")
        await publishes(h.peer, 2)
        task = loop.create_task(transport.drain(TIMEOUT))
        await settle()
        assert not task.done() and outcomes.acked == []
        released = loop.time()
        h.peer.release_acks()
        await asyncio.wait_for(task, TIMEOUT)
        assert loop.time() - released < TIMEOUT / 2  # returned on the acknowledgements, not the timeout
        assert sorted(ack[0] for ack in outcomes.acked) == ["fake-0", "fake-1"]

    run_with_peer(scenario)


def test_drain_gives_up_after_its_timeout_when_the_peer_never_acknowledges() -> None:
    async def scenario(h: Harness) -> None:
        loop = asyncio.get_running_loop()
        transport, (link,), outcomes = await h.connected(1, qos=1)
        h.peer.ack_publish = False
        assert transport.send(link, b"r1")
        await publishes(h.peer, 1)
        start = loop.time()
        await asyncio.wait_for(transport.drain(0.3), TIMEOUT)
        assert 0.3 <= loop.time() - start < TIMEOUT / 2
        assert link.conn.in_flight and outcomes.acked == []

    run_with_peer(scenario)


# ------------------------------------------------------------------------------------------------ periodic


def test_periodic_sends_keep_alive_pings_on_connected_links_and_skips_the_others() -> None:
    async def scenario(h: Harness) -> None:
        transport, links, outcomes = h.build(3, keepAlive=1)
        await transport.connect(links[0])  # links[1] never connects
        await transport.connect(links[2])
        transport.drop(links[2])
        session = h.peer.sessions["fake-0"]
        transport.periodic(asyncio.get_running_loop().time())
        async with ticking(transport):
            await until(lambda: session.pings >= 2, "two PINGREQ", timeout=TIMEOUT)
        assert transport.is_connected(links[0]) and links[1].conn is None and not transport.is_connected(links[2])
        assert h.peer.sessions["fake-2"].pings == 0
        assert outcomes == FakeOutcomes()
        # a transport without links has nothing to do
        create(make_spec(model()), [], FakeOutcomes()).periodic(0.0)

    run_with_peer(scenario)


async def lose_keep_alive(h: Harness) -> tuple[MqttTransport, FakeLink, FakeOutcomes]:
    """Connect one device with a 1 s keep-alive to a peer that stops answering PINGREQ; tick until it is lost."""
    transport, (link,), outcomes = await h.connected(1, keepAlive=1)
    h.peer.answer_pings = False
    async with ticking(transport):
        await until(lambda: outcomes.lost, "the lost connection", timeout=TIMEOUT)
        await settle()
    return transport, link, outcomes


def test_periodic_finds_a_peer_that_stopped_answering_pings_and_reports_the_connection_lost() -> None:
    async def scenario(h: Harness) -> None:
        transport, link, outcomes = await lose_keep_alive(h)
        assert h.peer.sessions["fake-0"].pings >= 1
        assert set(outcomes.lost) == {("fake-0", "connection lost (Keep alive timeout)")}
        assert not transport.is_connected(link)
        assert transport.send(link, b"r") is False

    run_with_peer(scenario)


def test_a_keep_alive_timeout_is_reported_as_lost_only_once() -> None:
    async def scenario(h: Harness) -> None:
        _, _, outcomes = await lose_keep_alive(h)
        assert len(outcomes.lost) == 1

    run_with_peer(scenario)
