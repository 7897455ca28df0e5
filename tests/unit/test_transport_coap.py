"""The CoAP transport against a fake outcomes object and a tiny UDP peer on 127.0.0.1: no fleet, no sink."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiocoap
import pytest
from transport_fakes import FakeLink, FakeOutcomes, make_links, make_spec, run

from iotix.transport.base import TransportError
from iotix.transport.coap import CoapClientTransport, CoapTransport, create
from iotix.transport.coap_codec import (
    ACK,
    CODE_EMPTY,
    CODE_GET,
    CODE_POST,
    CON,
    NON,
    CoapMessage,
    encode_message,
    parse_message,
    request_options,
)
from iotix.transport.coap_server_mode import CoapServerTransport

CHANGED, CONTENT, BAD_REQUEST, NOT_FOUND, SERVICE_UNAVAILABLE = 68, 69, 128, 132, 163


def model(**connection: Any) -> dict[str, Any]:
    return {
        "id": "unit-coap",
        "name": "unit",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "coap",
        "connection": {"host": "127.0.0.1", **connection},
        "telemetry": [
            {"name": "temperature", "type": "number", "intervalMs": 1000, "generator": {"type": "constant", "value": 1}}
        ],
        "commands": [{"name": "setInterval"}],
        "payload": {"format": "json"},
    }


def build(count: int = 1, **connection: Any) -> tuple[CoapTransport, list[FakeLink], FakeOutcomes]:
    links = make_links(count)
    outcomes = FakeOutcomes()
    return create(make_spec(model(), connection), links, outcomes), links, outcomes


async def until(condition: Callable[[], Any], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.005)


class Peer(asyncio.DatagramProtocol):
    """A UDP peer that answers each request with a piggybacked ACK of ``code`` (None: stays silent)."""

    def __init__(self, code: int | None, payload: bytes = b"") -> None:
        self.code = code
        self.payload = payload
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        msg = parse_message(data)
        if msg is not None and msg.mtype == CON and self.code is not None:
            assert self.transport is not None
            self.transport.sendto(encode_message(ACK, self.code, msg.mid, msg.token, b"", self.payload), addr)

    def messages(self) -> list[CoapMessage]:
        return [m for m in map(parse_message, self.received) if m is not None]


async def open_peer(code: int | None, payload: bytes = b"") -> tuple[Peer, int]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(lambda: Peer(code, payload), local_addr=("127.0.0.1", 0))
    return peer, transport.get_extra_info("sockname")[1]


async def connected_client(
    code: int | None, payload: bytes = b"", count: int = 1, **connection: Any
) -> tuple[CoapClientTransport, list[FakeLink], FakeOutcomes, Peer, int]:
    peer, port = await open_peer(code, payload)
    transport, links, outcomes = build(count, port=port, **connection)
    assert isinstance(transport, CoapClientTransport)
    for link in links:
        await transport.connect(link)
        link.topic = transport.topic_for(link)
    return transport, links, outcomes, peer, port


# -- client mode ------------------------------------------------------------------------------------------


def test_create_picks_the_class_by_mode_and_rejects_others() -> None:
    assert type(build()[0]) is CoapClientTransport
    server = build(mode="server")[0]
    assert type(server) is CoapServerTransport and isinstance(server, CoapTransport)
    assert server.request_based is False and build()[0].request_based is True
    with pytest.raises(TransportError, match=r"^Fleet 'fake': CoAP mode must be 'client' or 'server', got 'proxy'$"):
        build(mode="proxy")
    with pytest.raises(TransportError, match="CoAP method must be POST or PUT, got 'PATCH'"):
        build(method="patch")


def test_a_2xx_answer_is_acknowledged_with_its_latency() -> None:
    async def main() -> None:
        transport, (link,), outcomes, peer, _ = await connected_client(CHANGED)
        assert transport.send(link, b'{"t":1}')
        assert transport.in_flight == 1
        await until(lambda: outcomes.acked)
        ((device_id, nbytes, latency),) = outcomes.acked
        assert (device_id, nbytes) == ("fake-0", 7)
        assert latency is not None and 0 < latency < 5
        assert outcomes.failures == [] and outcomes.not_sent_reasons == []
        assert transport.in_flight == 0 and transport.latency.count == 1
        (request,) = [aiocoap.Message.decode(d) for d in peer.received]
        assert request.mtype == aiocoap.CON and request.code == aiocoap.POST
        assert request.opt.uri_path == ("telemetry", "fake-0")
        assert request.opt.content_format == 50 and request.payload == b'{"t":1}'
        await transport.close()

    run(main)


def test_a_5_03_answer_is_a_fault_with_a_resend_that_starts_a_new_exchange() -> None:
    async def main() -> None:
        transport, (link,), outcomes, peer, port = await connected_client(SERVICE_UNAVAILABLE, b"busy")
        assert transport.send(link, b"abc")
        await until(lambda: outcomes.failures)
        (failure,) = outcomes.failures
        target = f"coap://127.0.0.1:{port}/telemetry/fake-0"
        assert failure["reason"] == f"CoAP POST {target}: 5.03 Service Unavailable: busy"
        assert (failure["code"], failure["fault"], failure["nbytes"], failure["attempt"]) == ("coap_5.03", True, 3, 0)
        assert callable(failure["resend"])
        assert outcomes.acked == [] and transport.in_flight == 0
        peer.code = CHANGED  # the server recovered: the retry is acknowledged
        failure["resend"](1)
        await until(lambda: outcomes.acked)
        assert [o[:2] for o in outcomes.acked] == [("fake-0", 3)]
        first, second = peer.messages()
        assert first.mid != second.mid and first.payload == second.payload == b"abc"
        await transport.close()

    run(main)


def test_a_4xx_answer_is_a_failure_the_endpoint_is_not_blamed_for() -> None:
    async def main() -> None:
        transport, (link,), outcomes, _, port = await connected_client(NOT_FOUND)
        assert transport.send(link, b"x")
        await until(lambda: outcomes.failures)
        (failure,) = outcomes.failures
        assert failure["reason"] == f"CoAP POST coap://127.0.0.1:{port}/telemetry/fake-0: 4.04 Not Found"
        assert (failure["code"], failure["fault"]) == ("coap_4.04", False)
        await transport.close()

    run(main)


def test_a_silent_peer_gets_retransmissions_then_a_timeout() -> None:
    async def main() -> None:
        transport, (link,), outcomes, peer, port = await connected_client(None, ackTimeoutMs=20, maxRetransmit=1)
        assert transport.send(link, b"x")
        await until(lambda: outcomes.failures)
        (failure,) = outcomes.failures
        assert failure["code"] == "timeout" and failure["fault"] is True and callable(failure["resend"])
        assert failure["reason"].startswith(
            f"CoAP POST coap://127.0.0.1:{port}/telemetry/fake-0: timeout, no ACK after 2 transmissions in "
        )
        first, second = peer.messages()
        assert first == second  # the same message (id, token, payload) sent again
        assert transport.retransmissions == 1 and transport.in_flight == 0
        assert outcomes.acked == []
        await transport.close()

    run(main)


def test_the_in_flight_limit_turns_a_send_into_not_sent() -> None:
    async def main() -> None:
        transport, links, outcomes, _, port = await connected_client(None, count=2)
        transport.max_in_flight = 1
        assert transport.send(links[0], b"a")
        assert not transport.send(links[1], b"b")
        assert outcomes.not_sent_reasons == [
            (
                "fake-1",
                f"CoAP POST coap://127.0.0.1:{port}/telemetry/fake-1: not sent, 1 confirmable requests of the fleet "
                "are already waiting for an answer (limit 1)",
            )
        ]
        transport.drop(links[0])  # a dropped device's exchange is forgotten, not reported
        assert transport.in_flight == 0 and not transport.is_connected(links[0])
        assert not transport.send(links[0], b"c") and len(outcomes.not_sent_reasons) == 1
        await transport.close()
        assert outcomes.failures == []

    run(main)


def test_non_requests_are_handed_over_without_acknowledgement() -> None:
    async def main() -> None:
        transport, (link,), outcomes, peer, _ = await connected_client(CHANGED, confirmable=False, method="PUT")
        assert transport.request_based is False
        assert transport.send(link, b"n1") and transport.send(link, b"n2")
        assert transport.in_flight == 0
        await until(lambda: len(peer.received) == 2)
        await asyncio.sleep(0.05)
        assert [(m.mtype, m.code, m.payload) for m in peer.messages()] == [(NON, 3, b"n1"), (NON, 3, b"n2")]
        assert outcomes.acked == [] and outcomes.failures == [] and outcomes.not_sent_reasons == []
        await transport.close()

    run(main)


def test_without_a_socket_a_send_is_not_sent() -> None:
    async def main() -> None:
        transport, (link,), outcomes, _, port = await connected_client(CHANGED)
        await transport.close()  # the fleet's socket is gone, the device still thinks it is connected
        assert transport.is_connected(link)
        assert transport.send(link, b"x") is False
        assert outcomes.not_sent_reasons == [
            ("fake-0", f"CoAP POST coap://127.0.0.1:{port}/telemetry/fake-0: no socket (fleet stopped?)")
        ]

    run(main)


def test_an_event_is_a_post_to_its_own_path_counted_apart_from_telemetry() -> None:
    """A behavior's event (send with a topic): POST to that path (JSON or text content format), even for a PUT
    fleet; a 2.xx answer counts in eventsSent, anything else in eventsFailed with the device's last error:
    never as telemetry."""

    async def main() -> None:
        transport, (link,), outcomes, peer, port = await connected_client(CHANGED, method="PUT")
        assert transport.send(link, b'{"alert":"hot"}', topic="alerts/fake-0")
        assert transport.send(link, b"hot!", topic="/alerts/text")
        await until(lambda: transport.events_sent == 2)
        json_event, text_event = (aiocoap.Message.decode(d) for d in peer.received)
        assert json_event.code == aiocoap.POST and json_event.mtype == aiocoap.CON
        assert json_event.opt.uri_path == ("alerts", "fake-0") and json_event.opt.content_format == 50
        assert text_event.opt.uri_path == ("alerts", "text") and text_event.opt.content_format == 0
        assert (json_event.payload, text_event.payload) == (b'{"alert":"hot"}', b"hot!")
        peer.code = NOT_FOUND
        assert transport.send(link, b"{}", topic="nowhere")
        await until(lambda: transport.events_failed == 1)
        assert outcomes.not_sent_reasons == [
            ("fake-0", f"event: CoAP POST coap://127.0.0.1:{port}/nowhere: 4.04 Not Found")
        ]
        assert outcomes.acked == [] and outcomes.failures == [] and transport.latency.count == 0
        info = transport.describe()
        assert (info["eventsSent"], info["eventsFailed"], info["inFlight"]) == (2, 1, 0)
        await transport.close()

    run(main)


def test_an_unanswered_event_is_not_retried_and_fails_as_an_event() -> None:
    async def main() -> None:
        transport, (link,), outcomes, _, port = await connected_client(None, ackTimeoutMs=20, maxRetransmit=0)
        assert transport.send(link, b"{}", topic="alerts")
        await until(lambda: transport.events_failed == 1)
        ((who, reason),) = outcomes.not_sent_reasons
        assert who == "fake-0" and reason.startswith(f"event: CoAP POST coap://127.0.0.1:{port}/alerts: timeout")
        assert outcomes.failures == [] and transport.in_flight == 0
        await transport.close()

    run(main)


def test_a_non_event_is_counted_when_sent() -> None:
    async def main() -> None:
        transport, (link,), outcomes, peer, _ = await connected_client(CHANGED, confirmable=False)
        assert transport.send(link, b"{}", topic="alerts")
        await until(lambda: len(peer.received) == 1)
        (event,) = peer.messages()
        assert (event.mtype, event.code) == (NON, CODE_POST)
        assert transport.events_sent == 1 and outcomes.acked == [] and outcomes.not_sent_reasons == []
        await transport.close()

    run(main)


def test_client_devices_have_no_address_of_their_own() -> None:
    async def main() -> None:
        transport, (link,), _, _, _ = await connected_client(CHANGED)
        assert transport.device_address(link) is None
        await transport.close()

    run(main)


# -- server mode ----------------------------------------------------------------------------------------


class Client(asyncio.DatagramProtocol):
    """One raw CoAP request at a time; waits for its (piggybacked or separate) response."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.answers: asyncio.Queue[CoapMessage] = asyncio.Queue()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        msg = parse_message(data)
        if msg is not None:
            self.answers.put_nowait(msg)

    async def request(self, code: int, path: str, payload: bytes = b"", mid: int = 1) -> CoapMessage:
        assert self.transport is not None
        token = mid.to_bytes(2, "big")
        self.transport.sendto(encode_message(CON, code, mid, token, request_options(path, None), payload))
        while True:
            msg = await asyncio.wait_for(self.answers.get(), 5)
            if msg.mtype == ACK and msg.code == CODE_EMPTY:
                continue  # a separate response follows
            if msg.mtype == CON:
                self.transport.sendto(encode_message(ACK, CODE_EMPTY, msg.mid, b"", b"", b""))
            if msg.token == token:
                return msg


async def open_client(port: int) -> Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    return client


def test_server_devices_answer_on_their_address_and_hand_commands_to_the_outcomes() -> None:
    async def main() -> None:
        transport, (link,), outcomes = build(mode="server", serverPort=0)
        assert isinstance(transport, CoapServerTransport)
        assert transport.device_address(link) is None  # not listening yet
        await transport.connect(link)
        link.topic = transport.topic_for(link)
        assert link.topic == "/telemetry" and transport.is_connected(link)
        address = transport.device_address(link)
        assert address is not None
        port = address["port"]
        assert port > 0 and address == {"port": port, "url": f"coap://127.0.0.1:{port}"}
        assert transport.server_port_of(link) == port

        envelope = b'{"deviceId":"fake-0","seq":0,"ts":1700000000000,"temperature":21.5}'
        assert transport.send(link, envelope)
        client = await open_client(port)
        answer = await client.request(CODE_GET, "/telemetry", mid=1)
        assert (answer.code, answer.payload) == (CONTENT, envelope)
        answer = await client.request(CODE_GET, "/telemetry/temperature", mid=2)
        assert (answer.code, json.loads(answer.payload)) == (CONTENT, 21.5)

        answer = await client.request(CODE_POST, "/commands/setInterval", b'{"intervalMs":100}', mid=3)
        assert outcomes.commands == [("fake-0", "setInterval", b'{"intervalMs":100}', "/commands/setInterval")]
        body = json.loads(answer.payload)
        assert answer.code == CHANGED and body["status"] == "ok" and body["deviceId"] == "fake-0"
        outcomes.command_status = "error"  # the fleet rejected the command
        answer = await client.request(CODE_POST, "/commands/setInterval", b"{}", mid=4)
        assert answer.code == BAD_REQUEST and json.loads(answer.payload)["status"] == "error"
        assert len(outcomes.commands) == 2
        # an event (a behavior's destination) becomes a resource of the device; its own paths are refused
        assert transport.send(link, b'{"alert":1}', topic="elsewhere") is True
        answer = await client.request(CODE_GET, "/elsewhere", mid=5)
        assert (answer.code, answer.payload) == (CONTENT, b'{"alert":1}')
        assert transport.send(link, b"{}", topic="telemetry/temperature") is False
        assert outcomes.not_sent_reasons == [
            ("fake-0", f"event: coap://127.0.0.1:{port}/telemetry/temperature is one of the device's own resources")
        ]

        assert client.transport is not None
        client.transport.close()
        await transport.disconnect(link)
        assert not transport.is_connected(link) and transport.send(link, envelope) is False
        assert transport.device_address(link) == address  # where it listened; a reconnect binds it again
        await transport.close()
        assert outcomes.failures == [] and outcomes.problems == []

    run(main)


def test_a_server_device_offers_its_behaviors_destinations_as_observable_resources() -> None:
    """A behavior's topic that uses only the device's variables is a resource from the start (an observer
    can wait on it); one that uses a reading's value appears with its first event."""

    async def main() -> None:
        data = model()
        data["behaviors"] = [
            {
                "name": "hot",
                "condition": "temperature > 50",
                "action": {"type": "publish", "topic": "alerts/${deviceId}"},
            },
            {
                "name": "per-value",
                "condition": "temperature > 60",
                "action": {"type": "publish", "topic": "v/${temperature}"},
            },
        ]
        links, outcomes = make_links(1), FakeOutcomes()
        transport = create(make_spec(data, {"mode": "server", "serverPort": 0}), links, outcomes)
        assert isinstance(transport, CoapServerTransport)
        (link,) = links
        await transport.connect(link)
        port = transport.server_port_of(link)
        client = await aiocoap.Context.create_client_context()
        try:
            request = aiocoap.Message(code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/alerts/fake-0", observe=0)
            observed = client.request(request)
            first = await asyncio.wait_for(observed.response, 5)
            assert first.code == aiocoap.CONTENT and first.payload == b""  # there before its first event
            notifications = observed.observation.__aiter__()
            assert transport.send(link, b'{"alert":"hot","t":55}', topic="alerts/fake-0")
            note = await asyncio.wait_for(notifications.__anext__(), 5)
            assert note.payload == b'{"alert":"hot","t":55}' and note.opt.content_format == 50
            missing = aiocoap.Message(code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/v/61")
            assert (await asyncio.wait_for(client.request(missing).response, 5)).code == aiocoap.NOT_FOUND
            assert transport.send(link, b"61 degrees", topic="v/61")
            again = aiocoap.Message(code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/v/61")
            answer = await asyncio.wait_for(client.request(again).response, 5)
            assert (answer.code, answer.payload, answer.opt.content_format) == (aiocoap.CONTENT, b"61 degrees", 0)
            info = transport.describe()
            assert (info["eventsSent"], info["eventsFailed"]) == (2, 0)
            assert outcomes.acked == [] and outcomes.not_sent_reasons == []
        finally:
            observed.observation.cancel()
            await client.shutdown()
            await transport.close()

    run(main)
