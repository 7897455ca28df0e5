"""The CoAP wire format (RFC 7252) as the fleets' client needs it: pure functions, no sockets.

- message types, method codes, the options it writes (Uri-Path, Content-Format) and the content formats of
  a model's payload formats;
- :func:`encode_message`, :func:`empty_message` and :func:`request_options` build datagrams (header, token,
  pre-encoded options, payload); :func:`parse_message` reads the header, token and payload of an answer
  (options are skipped, malformed datagrams are None);
- :func:`code_text` and :func:`dotted_code` name response codes (``"5.00 Internal Server Error"``,
  ``"2.05"``);
- :class:`CoapTiming`: the transmission parameters of section 4.8 (ACK_TIMEOUT, MAX_RETRANSMIT,
  ACK_RANDOM_FACTOR) and what follows from them.

Used by :mod:`iotix.transport.coap` (client mode), :mod:`iotix.transport.coap_client` and the benchmarks.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "ACK",
    "COAP_PORT",
    "CODE_EMPTY",
    "CODE_GET",
    "CODE_POST",
    "CODE_PUT",
    "CON",
    "CONTENT_FORMATS",
    "METHOD_CODES",
    "MID_SPACE",
    "NON",
    "OPT_CONTENT_FORMAT",
    "OPT_URI_PATH",
    "RST",
    "CoapMessage",
    "CoapTiming",
    "code_text",
    "dotted_code",
    "empty_message",
    "encode_message",
    "encode_options",
    "parse_message",
    "request_options",
]

# -- messages -----------------------------------------------------------------------------------------------

CON, NON, ACK, RST = 0, 1, 2, 3
CODE_EMPTY, CODE_GET, CODE_POST, CODE_PUT = 0, 1, 2, 3
METHOD_CODES = {"POST": CODE_POST, "PUT": CODE_PUT}
OPT_URI_PATH = 11
OPT_CONTENT_FORMAT = 12
#: Content formats of the payload formats of a model (RFC 7252 section 12.3, RFC 8949).
CONTENT_FORMATS = {"json": 50, "cbor": 60, "raw": 42}
COAP_PORT = 5683
#: Message ids are 16 bits.
MID_SPACE = 1 << 16
_HEADER = struct.Struct("!BBH")


class CoapMessage(NamedTuple):
    """The parts of a received message the client needs."""

    mtype: int
    code: int
    mid: int
    token: bytes
    payload: bytes


def _option_nibble(value: int) -> tuple[int, bytes]:
    """The 4-bit field and extension bytes for an option delta or length (RFC 7252 section 3.1)."""
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes((value - 13,))
    return 14, (value - 269).to_bytes(2, "big")


def encode_options(options: list[tuple[int, bytes]]) -> bytes:
    """Options (number, value) in the wire format; sorted by number, repeated options keep their order."""
    out = bytearray()
    previous = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        delta, delta_ext = _option_nibble(number - previous)
        length, length_ext = _option_nibble(len(value))
        out.append(delta << 4 | length)
        out += delta_ext + length_ext + value
        previous = number
    return bytes(out)


def _uint(value: int) -> bytes:
    """A CoAP uint option value: big endian, minimal length (0 is empty)."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def request_options(path: str, content_format: int | None) -> bytes:
    """Uri-Path options for ``path`` (``/a/b`` -> ``a``, ``b``) plus Content-Format, encoded."""
    options = [(OPT_URI_PATH, segment.encode()) for segment in path.strip("/").split("/") if segment]
    if content_format is not None:
        options.append((OPT_CONTENT_FORMAT, _uint(content_format)))
    return encode_options(options)


def encode_message(mtype: int, code: int, mid: int, token: bytes, options: bytes, payload: bytes) -> bytes:
    """One CoAP message: header, token, pre-encoded options, payload marker and payload."""
    head = _HEADER.pack(0x40 | mtype << 4 | len(token), code, mid)
    if payload:
        return b"".join((head, token, options, b"\xff", payload))
    return b"".join((head, token, options))


def empty_message(mtype: int, mid: int) -> bytes:
    """An empty ACK or RST for message id ``mid``."""
    return _HEADER.pack(0x40 | mtype << 4, CODE_EMPTY, mid)


def parse_message(data: bytes) -> CoapMessage | None:
    """Header, token and payload of a datagram; None when it is not a well-formed CoAP 1 message."""
    if len(data) < 4:
        return None
    first, code, mid = _HEADER.unpack_from(data)
    tkl = first & 0x0F
    if first >> 6 != 1 or tkl > 8 or len(data) < 4 + tkl:
        return None
    token = data[4 : 4 + tkl]
    pos = 4 + tkl
    end = len(data)
    while pos < end:
        byte = data[pos]
        if byte == 0xFF:
            if pos + 1 == end:
                return None  # a payload marker must be followed by a payload
            return CoapMessage(first >> 4 & 3, code, mid, token, data[pos + 1 :])
        pos = _skip_option(data, pos)
        if pos < 0:
            return None
    return CoapMessage(first >> 4 & 3, code, mid, token, b"")


def _skip_option(data: bytes, pos: int) -> int:
    """Position after the option starting at ``pos``; -1 when it is malformed or truncated."""
    byte = data[pos]
    pos += 1
    delta, length = byte >> 4, byte & 0x0F
    if delta == 15 or length == 15:
        return -1
    pos += (delta == 13) + 2 * (delta == 14)
    if length == 13:
        if pos >= len(data):
            return -1
        length = 13 + data[pos]
        pos += 1
    elif length == 14:
        if pos + 2 > len(data):
            return -1
        length = 269 + int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
    pos += length
    return pos if pos <= len(data) else -1


def code_text(code: int) -> str:
    """``"5.00 Internal Server Error"`` for 160 (aiocoap's names, imported on first use)."""
    from aiocoap.numbers.codes import Code

    try:
        return str(Code(code))
    except ValueError:
        return f"{code >> 5}.{code & 0x1F:02d}"


def dotted_code(code: int) -> str:
    """``"2.05"`` for 69."""
    return f"{code >> 5}.{code & 0x1F:02d}"


# -- timing -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoapTiming:
    """RFC 7252 transmission parameters (section 4.8) of a fleet."""

    ack_timeout: float = 2.0
    max_retransmit: int = 4
    ack_random_factor: float = 1.5

    def first_timeout(self, rng: random.Random) -> float:
        return rng.uniform(self.ack_timeout, self.ack_timeout * self.ack_random_factor)

    @property
    def max_transmit_wait(self) -> float:
        """Longest time from the first transmission until a sender gives up (93 s by default)."""
        return self.ack_timeout * (2 ** (self.max_retransmit + 1) - 1) * self.ack_random_factor
