"""An incremental MQTT framer: bytes in, whole control packets out (pure; MQTT 3.1.1 and 5).

An MQTT control packet starts with one byte (type in the high nibble, flags in the low one) followed by the
remaining length, a varint of 1 to 4 bytes (7 bits each, least significant first, high bit = more). That is
all a protocol-aware fault needs to find a packet's type and end in a TCP stream cut anywhere, so the framer
does not decode anything else.

The framer assumes the stream it is fed starts at a packet boundary (a fault acts from the first byte it
sees). When a header is impossible (type 0, wrong fixed flags, a fifth length byte) it gives up for good and
passes the bytes through unframed (type None): a guess could cut a packet in the middle and corrupt the
stream, which is worse than a fault that does not act.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

PACKET_TYPES: dict[str, int] = {
    "CONNECT": 1,
    "CONNACK": 2,
    "PUBLISH": 3,
    "PUBACK": 4,
    "PUBREC": 5,
    "PUBREL": 6,
    "PUBCOMP": 7,
    "SUBSCRIBE": 8,
    "SUBACK": 9,
    "UNSUBSCRIBE": 10,
    "UNSUBACK": 11,
    "PINGREQ": 12,
    "PINGRESP": 13,
    "DISCONNECT": 14,
    "AUTH": 15,
}
_NAMES = {value: name for name, value in PACKET_TYPES.items()}

#: Packet types whose fixed-header flags must be 0b0010 (all others but PUBLISH must have 0).
_FLAGS_TWO = frozenset({6, 8, 10})
#: The largest remaining length MQTT allows (4 varint bytes).
MAX_REMAINING = 268_435_455


def packet_type_name(packet_type: int) -> str:
    return _NAMES.get(packet_type, str(packet_type))


def parse_packet_types(value: Any) -> frozenset[int]:
    """``PUBLISH``, ``PUBLISH|PUBACK``, ``publish, puback``, a list of names, or type numbers -> a set of ints."""
    items: Iterable[Any]
    if isinstance(value, (list, tuple, set, frozenset)):
        items = value
    else:
        text = str(value)
        for separator in ("|", ";", " "):
            text = text.replace(separator, ",")
        items = [part for part in text.split(",") if part.strip()]
    types: set[int] = set()
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            number = item
        else:
            word = str(item).strip().upper()
            if word.isdigit():
                number = int(word)
            elif word in PACKET_TYPES:
                number = PACKET_TYPES[word]
            else:
                raise ValueError(f"names no MQTT packet type '{item}'; the types are {', '.join(PACKET_TYPES)}")
        if number not in _NAMES:
            raise ValueError(f"names no MQTT packet type {number} (1..15)")
        types.add(number)
    if not types:
        raise ValueError("must name at least one MQTT packet type, e.g. PUBLISH")
    return frozenset(types)


def header_problem(first: int) -> str | None:
    """Why ``first`` cannot start an MQTT packet, or None when it can."""
    packet_type, flags = first >> 4, first & 0x0F
    if packet_type == 0:
        return "packet type 0 is reserved"
    if packet_type == 3:
        return "PUBLISH with QoS 3" if (flags & 0x06) == 0x06 else None
    expected = 0x02 if packet_type in _FLAGS_TWO else 0
    if flags != expected:
        return f"{packet_type_name(packet_type)} with flags {flags:#x}"
    return None


def encode_remaining_length(length: int) -> bytes:
    """The varint MQTT puts after the first byte (for tests and for building packets)."""
    if not 0 <= length <= MAX_REMAINING:
        raise ValueError(f"remaining length {length} out of range")
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | 0x80 if length else byte)
        if not length:
            return bytes(out)


class MqttFramer:
    """Feed bytes of one direction of an MQTT connection; get ``(type, packet bytes)`` for each whole packet.

    A partial packet stays buffered (:attr:`pending`) until its last byte arrives; :meth:`flush` hands it back
    (when the fault that needed framing goes away). After an impossible header :attr:`synced` is False and
    every byte comes back as ``(None, bytes)`` unframed.
    """

    __slots__ = ("_buffer", "problem", "synced")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.synced = True
        self.problem: str | None = None

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[tuple[int | None, bytes]]:
        if not self.synced:
            return [(None, bytes(data))] if data else []
        buffer = self._buffer
        buffer += data
        packets: list[tuple[int | None, bytes]] = []
        start = 0
        size = len(buffer)
        while start < size:
            first = buffer[start]
            problem = header_problem(first)
            if problem is not None:
                return self._lose_sync(packets, start, problem)
            length = 0
            multiplier = 1
            index = start + 1
            complete = False
            for _ in range(4):
                if index >= size:
                    break
                byte = buffer[index]
                index += 1
                length += (byte & 0x7F) * multiplier
                multiplier *= 128
                if not byte & 0x80:
                    complete = True
                    break
            else:
                return self._lose_sync(packets, start, "remaining length longer than 4 bytes")
            if not complete:
                break  # the varint is cut: wait for more
            end = index + length
            if end > size:
                break
            packets.append((first >> 4, bytes(buffer[start:end])))
            start = end
        if start:
            del buffer[:start]
        return packets

    def _lose_sync(
        self, packets: list[tuple[int | None, bytes]], start: int, problem: str
    ) -> list[tuple[int | None, bytes]]:
        self.synced = False
        self.problem = problem
        packets.append((None, bytes(self._buffer[start:])))
        self._buffer.clear()
        return packets

    def flush(self) -> bytes:
        """The buffered bytes of an incomplete packet (and forget them)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data
