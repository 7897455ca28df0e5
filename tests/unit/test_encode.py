"""Unit tests of iotix.encode: JSON, CBOR and raw payloads, and decode_envelope."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import cbor2
import pytest

from iotix.encode import decode_envelope, make_encoder
from iotix.errors import ConfigurationError
from iotix.model.types import DeviceModel, PayloadSpec, TelemetryField


def model(payload: PayloadSpec | None = None, *fields: tuple[str, str]) -> DeviceModel:
    telemetry = tuple(
        TelemetryField(name, field_type, 1000, {"type": "constant", "value": 0})  # type: ignore[arg-type]
        for name, field_type in (fields or (("temperature", "number"), ("status", "string")))
    )
    return DeviceModel(
        id="enc-test",
        name="Encoder test",
        version="1.0.0",
        type="sensor",
        protocol="mqtt",
        connection={},
        telemetry=telemetry,
        payload=payload or PayloadSpec(),
    )


VALUES: dict[str, Any] = {"temperature": 21.5, "status": "ok °C ✓"}


def test_json_envelope_compact_and_ordered() -> None:
    payload = make_encoder(model())("dev-1", 3, 1732390000123, VALUES)
    assert payload == json.dumps(
        {"deviceId": "dev-1", "seq": 3, "ts": 1732390000123, **VALUES}, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert payload.startswith(b'{"deviceId":"dev-1","seq":3,"ts":1732390000123,"temperature":21.5,')
    assert b" " not in payload.replace("ok °C ✓".encode(), b"")
    assert "°C ✓".encode() in payload  # UTF-8, not \u escapes
    assert list(json.loads(payload)) == ["deviceId", "seq", "ts", "temperature", "status"]


def test_json_round_trip_through_decode_envelope() -> None:
    values = {"temperature": -0.1, "status": 'quote " and \\ and\nnewline', "flag": True, "pos": {"lat": 1.5}}
    encoder = make_encoder(model(None, ("temperature", "number"), ("status", "string"), ("flag", "boolean")))
    decoded = decode_envelope(encoder("d", 0, 5, values))
    assert decoded == {"deviceId": "d", "seq": 0, "ts": 5, **values}


def test_json_binary_is_base64_and_values_untouched() -> None:
    encoder = make_encoder(model(None, ("ecg", "binary"), ("battery", "number")))
    raw = bytes(range(256))
    values = {"ecg": raw, "battery": 99.0}
    decoded = decode_envelope(encoder("d", 1, 2, values))
    assert decoded is not None
    assert decoded["ecg"] == base64.b64encode(raw).decode("ascii")
    assert base64.b64decode(decoded["ecg"]) == raw
    assert values["ecg"] is raw  # the caller's dict is not modified
    # a sample without the binary field (another interval group) still encodes
    assert decode_envelope(encoder("d", 2, 3, {"battery": 98.0})) == {
        "deviceId": "d",
        "seq": 2,
        "ts": 3,
        "battery": 98.0,
    }


def test_json_unserialisable_value_raises_type_error() -> None:
    with pytest.raises(TypeError):
        make_encoder(model())("d", 0, 0, {"temperature": object()})


def test_cbor_round_trip_keeps_bytes() -> None:
    encoder = make_encoder(model(PayloadSpec(format="cbor"), ("ecg", "binary"), ("battery", "number")))
    values = {"ecg": b"\x00\x01\xff", "battery": 12.5}
    payload = encoder("dev-9", 7, 1000, values)
    assert list(cbor2.loads(payload)) == ["deviceId", "seq", "ts", "ecg", "battery"]
    assert decode_envelope(payload) == {"deviceId": "dev-9", "seq": 7, "ts": 1000, **values}


def test_raw_returns_the_binary_field() -> None:
    encoder = make_encoder(model(PayloadSpec(format="raw"), ("ecg", "binary"), ("battery", "number")))
    assert encoder("d", 0, 0, {"ecg": b"\x01\x02"}) == b"\x01\x02"
    with pytest.raises(ConfigurationError, match="binary field 'ecg'"):
        encoder("d", 0, 0, {"battery": 1.0})


def test_raw_field_selection() -> None:
    two = model(PayloadSpec(format="raw", field="b"), ("a", "binary"), ("b", "binary"))
    assert make_encoder(two)("d", 0, 0, {"a": b"A", "b": b"B"}) == b"B"
    with pytest.raises(ConfigurationError, match=r"needs payload\.field"):
        make_encoder(model(PayloadSpec(format="raw"), ("a", "binary"), ("b", "binary")))
    with pytest.raises(ConfigurationError, match=r"needs payload\.field"):
        make_encoder(model(PayloadSpec(format="raw")))
    with pytest.raises(ConfigurationError, match="must name a binary"):
        make_encoder(model(PayloadSpec(format="raw", field="temperature")))


def test_unknown_format() -> None:
    with pytest.raises(ConfigurationError, match="unknown payload format"):
        make_encoder(model(PayloadSpec(format="xml")))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"   ",
        b"hello",
        b"[1, 2]",
        b'{"deviceId": "d", "seq": 1}',
        b'{"deviceId": "d", "seq": true, "ts": 1}',
        b'{"deviceId": 5, "seq": 1, "ts": 1}',
        b'{"deviceId": "d", "seq": 1, "ts": 1.5}',
        b'{"deviceId": "d", ',
        b"\xff\xfe\x00",
        cbor2.dumps([1, 2]),
        cbor2.dumps({"deviceId": "d"}),
        b"\xbb\xff\xff\xff\xff\xff\xff\xff\xff",  # a CBOR map claiming 2^64 entries
    ],
)
def test_decode_envelope_rejects_non_envelopes(payload: bytes) -> None:
    assert decode_envelope(payload) is None


def test_decode_envelope_accepts_text_and_leading_space() -> None:
    assert decode_envelope(' {"deviceId":"d","seq":1,"ts":2}') == {"deviceId": "d", "seq": 1, "ts": 2}  # type: ignore[arg-type]
    assert decode_envelope(bytearray(b'{"deviceId":"d","seq":1,"ts":2}')) == {"deviceId": "d", "seq": 1, "ts": 2}


def test_decode_envelope_never_raises_on_noise() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        size = rng.randrange(0, 64)
        noise = bytes([rng.choice([0xA1, 0xBF, 0x7B, rng.randrange(256)])]) + rng.randbytes(size)
        result = decode_envelope(noise)
        assert result is None or isinstance(result, dict)


def test_decode_envelope_reads_an_iotflow_body() -> None:
    body = b'{"data":{"t":21.5},"metadata":{"deviceId":"d-1","seq":4,"ts":1700000000000},"timestamp":"x"}'
    assert decode_envelope(body) == {"deviceId": "d-1", "seq": 4, "ts": 1700000000000, "t": 21.5}
