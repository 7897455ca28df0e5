"""The incremental MQTT framer: whole packets out of a stream cut anywhere, 1 to 4 byte remaining lengths."""

from __future__ import annotations

import random

import pytest

from iotix.fault.mqtt_frames import (
    PACKET_TYPES,
    MqttFramer,
    encode_remaining_length,
    header_problem,
    packet_type_name,
    parse_packet_types,
)


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_remaining_length(len(body)) + body


def publish(payload: bytes, qos: int = 0) -> bytes:
    topic = b"t/x"
    variable = len(topic).to_bytes(2, "big") + topic + (b"\x00\x01" if qos else b"")
    return packet(0x30 | (qos << 1), variable + payload)


CONNECT = packet(0x10, b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x02id")
PUBACK = packet(0x40, b"\x00\x01")
PINGREQ = bytes([0xC0, 0x00])
SUBSCRIBE = packet(0x82, b"\x00\x01\x00\x03t/x\x01")


def feed_all(framer: MqttFramer, chunks: list[bytes]) -> list[tuple[int | None, bytes]]:
    out: list[tuple[int | None, bytes]] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    return out


@pytest.mark.parametrize(
    ("length", "size"),
    [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3), (2_097_151, 3), (2_097_152, 4), (268_435_455, 4)],
)
def test_remaining_length_takes_one_to_four_bytes(length: int, size: int) -> None:
    encoded = encode_remaining_length(length)
    assert len(encoded) == size
    assert all(byte & 0x80 for byte in encoded[:-1]) and not encoded[-1] & 0x80


def test_remaining_length_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_remaining_length(268_435_456)


def test_packets_fed_one_byte_at_a_time_come_out_whole_and_typed() -> None:
    stream = [CONNECT, publish(b"x" * 200), PUBACK, PINGREQ, SUBSCRIBE, publish(b"")]
    framer = MqttFramer()
    out = feed_all(framer, [bytes([b]) for b in b"".join(stream)])
    assert [data for _, data in out] == stream
    assert [t for t, _ in out] == [1, 3, 4, 12, 8, 3]
    assert framer.pending == 0 and framer.synced


def test_several_packets_in_one_chunk_and_a_cut_varint() -> None:
    big = publish(b"y" * 300)  # 2-byte remaining length
    framer = MqttFramer()
    # the first chunk ends inside the varint of the second packet
    first = PUBACK + big[:2]
    assert framer.feed(first) == [(4, PUBACK)]
    assert framer.pending == 2
    assert framer.feed(big[2:] + PINGREQ) == [(3, big), (12, PINGREQ)]


@pytest.mark.parametrize("payload_size", [20_000, 2_100_000])  # 3- and 4-byte remaining lengths
def test_large_packets_split_at_random_points(payload_size: int) -> None:
    rng = random.Random(7)
    big = publish(bytes(rng.getrandbits(8) for _ in range(1000)) * (payload_size // 1000))
    stream = PUBACK + big + PINGREQ
    cuts = sorted(rng.sample(range(1, len(stream)), 40))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    out = MqttFramer().feed
    got: list[tuple[int | None, bytes]] = []
    for chunk in chunks:
        got.extend(out(chunk))
    assert [t for t, _ in got] == [4, 3, 12]
    assert got[1][1] == big


def test_an_impossible_header_loses_sync_for_good_and_passes_bytes_unchanged() -> None:
    framer = MqttFramer()
    garbage = b"\x00\x05hello"  # type 0 is reserved
    assert framer.feed(PUBACK + garbage) == [(4, PUBACK), (None, garbage)]
    assert not framer.synced and framer.problem is not None
    # even a valid-looking packet afterwards is passed unframed: a guess could corrupt the stream
    assert framer.feed(PINGREQ) == [(None, PINGREQ)]


def test_a_fifth_remaining_length_byte_loses_sync() -> None:
    framer = MqttFramer()
    bad = bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
    assert framer.feed(bad) == [(None, bad)]
    assert framer.problem == "remaining length longer than 4 bytes"


def test_fixed_flags_are_checked() -> None:
    assert header_problem(0x82) is None  # SUBSCRIBE 0b0010
    assert header_problem(0x80) is not None
    assert header_problem(0x62) is None  # PUBREL
    assert header_problem(0x41) is not None  # PUBACK with flags
    assert header_problem(0x3D) is None  # PUBLISH dup, qos 2, retain
    assert header_problem(0x36) == "PUBLISH with QoS 3"


def test_flush_hands_back_an_incomplete_packet() -> None:
    framer = MqttFramer()
    assert framer.feed(PUBACK[:3]) == []
    assert framer.flush() == PUBACK[:3]
    assert framer.pending == 0
    assert framer.feed(PINGREQ) == [(12, PINGREQ)]


def test_parse_packet_types() -> None:
    assert parse_packet_types("PUBLISH") == {3}
    assert parse_packet_types("publish|PUBACK") == {3, 4}
    assert parse_packet_types("PUBLISH, pingresp") == {3, 13}
    assert parse_packet_types(["SUBACK", 2]) == {9, 2}
    assert parse_packet_types("12") == {12}
    with pytest.raises(ValueError, match="'PUBLISHX'"):
        parse_packet_types("PUBLISHX")
    with pytest.raises(ValueError, match="at least one"):
        parse_packet_types("")
    assert packet_type_name(PACKET_TYPES["PINGRESP"]) == "PINGRESP"
