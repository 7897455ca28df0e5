"""Payload encoders: a device's sampled values -> the bytes handed to the transport.

``make_encoder(model)`` returns ``encode(device_id, seq, ts_ms, values) -> bytes`` for the model's
``payload.format`` (see docs/model-format.md, "Payload encodings"):

- ``json``: ``{"deviceId": .., "seq": .., "ts": .., <fields>...}``, compact, UTF-8, binary fields in base64;
- ``cbor``: the same map in CBOR, binary fields as byte strings;
- ``raw``: the bytes of the one binary field alone.

``decode_envelope(payload)`` turns a JSON or CBOR envelope back into a dict (for receivers and tests).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from json import encoder as _json_encoder
from typing import Any

import cbor2

from iotix.errors import ConfigurationError

try:  # orjson: a JSON envelope in a fifth of the time of the standard library's encoder (see _json_encoder_for)
    import orjson
except ImportError:  # pragma: no cover - a declared dependency; the standard encoder still works without it
    orjson = None  # type: ignore[assignment]
from iotix.model.types import DeviceModel

Encoder = Callable[[str, int, int, dict[str, Any]], bytes]

ENVELOPE_KEYS = ("deviceId", "seq", "ts")
#: The envelope key of a device's firmware version, present once an updateFirmware command changed it.
FIRMWARE_KEY = "firmwareVersion"


def make_encoder(model: DeviceModel) -> Encoder:
    """The payload encoder for ``model`` (chosen once; the returned function does only per-message work)."""
    payload_format = model.payload.format
    binary_fields = tuple(f.name for f in model.telemetry if f.type == "binary")
    if payload_format == "json":
        return _json_encoder_for(binary_fields)
    if payload_format == "cbor":
        return _encode_cbor
    if payload_format == "raw":
        return _raw_encoder_for(_raw_field(model, binary_fields))
    raise ConfigurationError(
        f"model '{model.id}': unknown payload format {payload_format!r} (expected one of: json, cbor, raw)"
    )


# --- JSON -------------------------------------------------------------------------------------------------


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"a {type(value).__name__} value cannot be sent in a JSON payload")


def _compact_json() -> Callable[[Any], str]:
    """``obj -> str`` equivalent to ``json.dumps(obj, separators=(",", ":"), ensure_ascii=False)``.

    ``json.dumps`` builds a new encoder per call; building the C encoder once saves about a third of the
    cost of a small envelope. ``c_make_encoder`` is CPython's accelerator; when it is missing (or behaves
    differently in some Python version) the plain encoder is used.
    """
    plain = json.JSONEncoder(
        ensure_ascii=False, separators=(",", ":"), check_circular=False, default=_not_serializable
    ).encode
    make = getattr(_json_encoder, "c_make_encoder", None)
    if make is None:
        return plain
    try:
        iterencode = make(None, _not_serializable, _json_encoder.encode_basestring, None, ":", ",", False, False, True)

        def fast(obj: Any) -> str:
            return "".join(iterencode(obj, 0))

        probe = {"a": [1, 2.5, "é\n", None, True], "b": {"c": -0.1}}
        if fast(probe) == plain(probe):
            return fast
    except Exception:  # noqa: S110 - any incompatibility just means: use the plain encoder
        pass
    return plain


_to_json = _compact_json()


def _json_encoder_for(binary_fields: tuple[str, ...]) -> Encoder:
    """The JSON envelope encoder: orjson when installed, else the standard library's C encoder.

    orjson writes the same compact UTF-8 text for the values generators produce (its floats are the same
    shortest round-trip digits; only an exponent is spelled ``1e-5`` instead of ``1e-05``, and NaN becomes
    ``null``, which is what JSON allows). What orjson refuses (an int beyond 64 bits, a dict key that is not a
    string) is encoded by the standard encoder instead, so every payload that encoded before still does.
    """
    to_json = _to_json
    dumps = orjson.dumps if orjson is not None else None

    def slow(message: dict[str, Any]) -> bytes:
        return to_json(message).encode()

    if dumps is not None:

        def fast(message: dict[str, Any]) -> bytes:
            try:
                return dumps(message)
            except TypeError:  # orjson.JSONEncodeError is a TypeError
                return slow(message)

        dump = fast
    else:
        dump = slow

    if not binary_fields:

        def encode_json(device_id: str, seq: int, ts_ms: int, values: dict[str, Any]) -> bytes:
            return dump({"deviceId": device_id, "seq": seq, "ts": ts_ms, **values})

        return encode_json

    b64 = base64.b64encode

    def encode_json_binary(device_id: str, seq: int, ts_ms: int, values: dict[str, Any]) -> bytes:
        message = {"deviceId": device_id, "seq": seq, "ts": ts_ms, **values}
        for name in binary_fields:
            value = message.get(name)
            if value is not None:
                message[name] = b64(value).decode("ascii")
        return dump(message)

    return encode_json_binary


# --- CBOR -------------------------------------------------------------------------------------------------


def _encode_cbor(device_id: str, seq: int, ts_ms: int, values: dict[str, Any]) -> bytes:
    message = {"deviceId": device_id, "seq": seq, "ts": ts_ms}
    message.update(values)
    return cbor2.dumps(message)


# --- raw --------------------------------------------------------------------------------------------------


def _raw_field(model: DeviceModel, binary_fields: tuple[str, ...]) -> str:
    """``payload.field``, or the only binary field."""
    name = model.payload.field
    if name is not None:
        if name not in binary_fields:
            raise ConfigurationError(
                f"model '{model.id}': payload.field '{name}' must name a binary telemetry field "
                f"(binary fields: {', '.join(binary_fields) or 'none'})"
            )
        return name
    if len(binary_fields) != 1:
        raise ConfigurationError(
            f"model '{model.id}': payload format 'raw' needs payload.field when the model has "
            f"{len(binary_fields)} binary fields ({', '.join(binary_fields) or 'none'})"
        )
    return binary_fields[0]


def _raw_encoder_for(field: str) -> Encoder:
    def encode_raw(device_id: str, seq: int, ts_ms: int, values: dict[str, Any]) -> bytes:
        try:
            return bytes(values[field])
        except KeyError:
            raise ConfigurationError(
                f"a raw payload is the binary field '{field}', which this sample does not contain "
                f"(fields: {', '.join(values)}); other fields cannot be sent in raw format"
            ) from None

    return encode_raw


# --- decoding ---------------------------------------------------------------------------------------------


def decode_envelope(payload: bytes) -> dict[str, Any] | None:
    """A JSON or CBOR envelope (a map with ``deviceId``, ``seq``, ``ts``) as a dict; None for anything else.

    Binary fields stay as they were sent: base64 text from JSON, bytes from CBOR. Never raises for
    malformed input (a receiver may see raw payloads, truncated messages, other publishers).
    """
    if isinstance(payload, str):
        payload = payload.encode()
    try:
        data = bytes(payload)
    except TypeError:
        return None
    start = data[:1]
    if start.isspace():
        stripped = data.lstrip()
        start = stripped[:1]
    try:
        if start == b"{":
            message = json.loads(data)
        elif start and 0xA0 <= start[0] <= 0xBF:  # CBOR major type 5: a map
            message = cbor2.loads(data)
        else:
            return None
    except Exception:
        return None
    if not isinstance(message, dict):
        return None
    meta = message.get("metadata")
    if "deviceId" not in message and isinstance(meta, dict) and isinstance(message.get("data"), dict):
        # an IoTFlow telemetry body (hybrid devices publish it over MQTT): the envelope is in its metadata
        message = {**meta, **message["data"]}
    device_id, seq, ts = message.get("deviceId"), message.get("seq"), message.get("ts")
    if not isinstance(device_id, str) or not _is_int(seq) or not _is_int(ts):
        return None
    return message


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
