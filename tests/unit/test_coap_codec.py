"""The CoAP client's wire format against aiocoap's codec, timing, settings and port reservation."""

from __future__ import annotations

import random
import socket
from typing import Any

import aiocoap
import pytest
from aiocoap.numbers.types import Type

from iotix.fleet.fleet import Fleet, FleetOptions
from iotix.model.errors import ModelError
from iotix.model.loader import load_model_dict
from iotix.services.coap_server import _parse_code
from iotix.transport.base import TransportError
from iotix.transport.coap import CoapTransport
from iotix.transport.coap_codec import (
    ACK,
    CON,
    NON,
    RST,
    CoapTiming,
    code_text,
    dotted_code,
    empty_message,
    encode_message,
    encode_options,
    parse_message,
    request_options,
)
from iotix.transport.coap_server_mode import release_udp_port, reserve_udp_port


def decoded(datagram: bytes) -> aiocoap.Message:
    return aiocoap.Message.decode(datagram)


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("/telemetry/dev-1", ("telemetry", "dev-1")),
        ("a", ("a",)),
        ("/x/" + "y" * 20, ("x", "y" * 20)),  # length 20: one extension byte
        ("/" + "z" * 300, ("z" * 300,)),  # length 300: two extension bytes
        ("/", ()),
    ],
)
@pytest.mark.parametrize("content_format", [None, 0, 50, 60, 42, 11542])
def test_requests_decode_identically_in_aiocoap(path: str, segments: tuple, content_format: Any) -> None:
    options = request_options(path, content_format)
    for mtype, aio_type in ((CON, Type.CON), (NON, Type.NON)):
        message = decoded(encode_message(mtype, 2, 0xBEEF, b"\x01\x02\x03\x04", options, b'{"a":1}'))
        assert message.mtype == aio_type
        assert message.code == aiocoap.POST
        assert message.mid == 0xBEEF
        assert message.token == b"\x01\x02\x03\x04"
        assert message.opt.uri_path == segments
        assert message.opt.content_format == content_format
        assert message.payload == b'{"a":1}'


def test_option_deltas_above_12_and_268_use_extensions() -> None:
    options = encode_options([(2048, b"x"), (60, b"\x05"), (11, b"p")])  # unsorted in, sorted out
    message = decoded(encode_message(CON, 3, 1, b"", options, b""))
    assert message.opt.uri_path == ("p",)
    assert message.opt.size1 == 5  # option 60
    assert message.opt.get_option(2048)[0].value == b"x"
    assert message.payload == b""


def test_empty_messages() -> None:
    ack = decoded(empty_message(ACK, 7))
    assert ack.mtype == Type.ACK and ack.mid == 7 and ack.code == aiocoap.EMPTY and ack.token == b""
    assert decoded(empty_message(RST, 65535)).mtype == Type.RST


def aiocoap_bytes(mtype: Type, code: Any, mid: int, token: bytes, payload: bytes, **options: Any) -> bytes:
    message = aiocoap.Message(code=code, payload=payload, **options)
    message.mtype, message.mid, message.token = mtype, mid, token
    return message.encode()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"content_format": 50},
        {"observe": 12345, "content_format": 60, "etag": b"12345678"},
        {"location_path": ("a" * 14, "b" * 280), "max_age": 60},
    ],
)
def test_parse_reads_what_aiocoap_writes(options: dict) -> None:
    for payload in (b"", b"\xff\x00payload"):
        data = aiocoap_bytes(Type.ACK, aiocoap.CHANGED, 4242, b"\xaa\xbb", payload, **options)
        assert parse_message(data) == (ACK, 68, 4242, b"\xaa\xbb", payload)
    separate = aiocoap_bytes(Type.CON, aiocoap.INTERNAL_SERVER_ERROR, 9, b"t" * 8, b"boom", **options)
    assert parse_message(separate) == (CON, 160, 9, b"t" * 8, b"boom")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x40\x01\x00",  # shorter than a header
        b"\x80\x01\x00\x01",  # version 2
        b"\x49\x01\x00\x01" + b"t" * 9,  # token length 9
        b"\x44\x01\x00\x01ab",  # token cut short
        b"\x40\x45\x00\x01\xff",  # payload marker without payload
        b"\x40\x45\x00\x01\xb5ab",  # option value cut short
        b"\x40\x45\x00\x01\xf1a",  # option delta 15
        b"\x40\x45\x00\x01\xbd",  # extended length byte missing
    ],
)
def test_malformed_datagrams_are_none(data: bytes) -> None:
    assert parse_message(data) is None


def test_codes() -> None:
    assert code_text(160) == "5.00 Internal Server Error"
    assert code_text(132) == "4.04 Not Found"
    assert dotted_code(69) == "2.05"
    assert _parse_code("5.00") == aiocoap.INTERNAL_SERVER_ERROR
    assert _parse_code("4.04") == aiocoap.NOT_FOUND
    assert _parse_code(None) is None
    with pytest.raises(ValueError, match="not a CoAP response code"):
        _parse_code("five")


def test_timing_follows_rfc7252() -> None:
    default = CoapTiming()
    assert default.max_transmit_wait == pytest.approx(93.0)
    rng = random.Random(1)
    assert all(2.0 <= default.first_timeout(rng) <= 3.0 for _ in range(100))
    assert CoapTiming(0.05, 1).max_transmit_wait == pytest.approx(0.05 * 3 * 1.5)


def coap_model(**connection: Any) -> Any:
    return load_model_dict(
        {
            "id": "unit-coap",
            "name": "unit",
            "version": "1.0.0",
            "type": "sensor",
            "protocol": "coap",
            "connection": {"host": "127.0.0.1", **connection},
            "telemetry": [
                {"name": "t", "type": "number", "intervalMs": 1000, "generator": {"type": "constant", "value": 1}}
            ],
            "payload": {"format": "cbor"},
        }
    )


#: a fleet without a simulator (no loop): its settings only, so without the network-fault layer
NO_LOOP = FleetOptions(fault_layer=False)


def transport_for(count: int = 3, **connection: Any) -> CoapTransport:
    ids = [f"u-{i}" for i in range(count)]
    fleet = Fleet(None, "unit", coap_model(**connection), ids, options=NO_LOOP)  # type: ignore[arg-type]
    assert isinstance(fleet.transport, CoapTransport)
    return fleet.transport


def test_settings_from_the_model_and_defaults() -> None:
    t = transport_for(port=5700, method="PUT", confirmable=False, ackTimeoutMs=500, maxRetransmit=2)
    assert (t.port, t.method, t.confirmable, t.mode) == (5700, "PUT", False, "client")
    assert t.timing == CoapTiming(0.5, 2)
    assert t.content_format == 60  # cbor
    assert t.target == "coap://127.0.0.1:5700"
    assert t.topic_for(t.links[1]) == "/telemetry/u-1"
    d = transport_for()
    assert (d.port, d.method, d.confirmable, d.timing) == (5683, "POST", True, CoapTiming())
    assert d.max_in_flight == CoapTransport.MIN_IN_FLIGHT
    assert transport_for(count=10_000).max_in_flight == CoapTransport.MAX_IN_FLIGHT
    server = transport_for(mode="server", serverPort=6000)
    assert server.target == "coap-server://127.0.0.1:6000"
    assert server.topic_for(server.links[0]) == "/telemetry"


def test_path_template_and_model_validation() -> None:
    t = transport_for(path="dev/${index}/${deviceId}")
    assert t.topic_for(t.links[2]) == "/dev/2/u-2"
    with pytest.raises(ModelError, match=r"connection\.mode"):
        coap_model(mode="proxy")
    with pytest.raises(ModelError, match=r"connection\.maxRetransmit"):
        coap_model(maxRetransmit=11)
    with pytest.raises(ModelError, match=r"connection\.method"):
        coap_model(method="PATCH")


def test_unknown_mode_given_by_the_fleet_is_an_error() -> None:
    model = coap_model()
    with pytest.raises(TransportError, match="CoAP mode must be 'client' or 'server'"):
        connection = {**model.connection, "mode": "proxy"}
        Fleet(None, "bad", model, ["x"], connection=connection, options=NO_LOOP)  # type: ignore[arg-type]


def test_reserved_ports_are_exclusive() -> None:
    port = reserve_udp_port("127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match="already used by another CoAP server"):
            reserve_udp_port("127.0.0.1", port)
        assert reserve_udp_port("127.0.0.1", 0) != port
    finally:
        release_udp_port("127.0.0.1", port)
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(OSError):
            reserve_udp_port("127.0.0.1", holder.getsockname()[1])
    finally:
        holder.close()
