"""What arrived, per device: counts, sequence gaps (loss), duplicates, reordering and latency.

Devices number the messages they hand to their transport (``seq`` in the envelope, from 0). A receiver
feeds every envelope it collects into a :class:`TelemetryTracker`; :meth:`TelemetryTracker.report` then
compares what arrived with what each device says it sent.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from iotix.observe.histogram import Histogram, LatencyRecorder


class DeviceTrack:
    """Per-device receive state: a bitmap of the sequence numbers seen (one bit per message)."""

    __slots__ = ("duplicates", "first_seq", "highest_seq", "latency", "out_of_order", "received", "seen")

    def __init__(self, latency: LatencyRecorder) -> None:
        self.latency = latency  # shared by the devices of one group (fleet)
        self.received = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.first_seq = -1
        self.highest_seq = -1
        self.seen = bytearray()

    def add(self, seq: int) -> None:
        self.received += 1
        byte, bit = divmod(seq, 8)
        seen = self.seen
        if byte >= len(seen):
            seen.extend(bytes(max(byte + 1 - len(seen), len(seen) // 2 + 16)))
        mask = 1 << bit
        if seen[byte] & mask:
            self.duplicates += 1
            return
        seen[byte] |= mask
        if self.first_seq < 0 or seq < self.first_seq:
            self.first_seq = seq
        if seq < self.highest_seq:
            self.out_of_order += 1
        else:
            self.highest_seq = seq

    def count_seen(self, start: int, stop: int) -> int:
        """How many distinct sequence numbers in ``[start, stop)`` arrived."""
        if stop <= start:
            return 0
        seen = self.seen
        total = 0
        first_full = (start + 7) // 8
        last_full = stop // 8
        if first_full >= last_full:  # a range within one or two partial bytes
            for s in range(start, stop):
                b = s >> 3
                if b < len(seen) and seen[b] & (1 << (s & 7)):
                    total += 1
            return total
        for s in range(start, first_full * 8):
            if seen[s >> 3] & (1 << (s & 7)):
                total += 1
        chunk = bytes(seen[first_full:last_full])
        total += int.from_bytes(chunk, "little").bit_count() if chunk else 0
        for s in range(last_full * 8, stop):
            b = s >> 3
            if b < len(seen) and seen[b] & (1 << (s & 7)):
                total += 1
        return total

    def missing(self, start: int, stop: int, limit: int = 10) -> list[int]:
        out = []
        seen = self.seen
        for s in range(start, stop):
            b = s >> 3
            if b >= len(seen) or not seen[b] & (1 << (s & 7)):
                out.append(s)
                if len(out) >= limit:
                    break
        return out


@dataclass
class DeviceResult:
    device_id: str
    expected: int
    received: int
    lost: int
    duplicates: int
    out_of_order: int
    first_missing: list[int] = field(default_factory=list)

    @property
    def loss_pct(self) -> float:
        return 100.0 * self.lost / self.expected if self.expected else 0.0


@dataclass
class TelemetryReport:
    """The comparison of what devices sent with what arrived."""

    devices: list[DeviceResult]
    latency: dict[str, Any]
    unknown_devices: int = 0  # envelopes from device ids not asked about
    invalid_messages: int = 0  # messages that were not an IoTix envelope

    @property
    def expected(self) -> int:
        return sum(d.expected for d in self.devices)

    @property
    def received(self) -> int:
        return sum(d.received for d in self.devices)

    @property
    def lost(self) -> int:
        return sum(d.lost for d in self.devices)

    @property
    def duplicates(self) -> int:
        return sum(d.duplicates for d in self.devices)

    @property
    def out_of_order(self) -> int:
        return sum(d.out_of_order for d in self.devices)

    @property
    def loss_pct(self) -> float:
        return 100.0 * self.lost / self.expected if self.expected else 0.0

    @property
    def silent_devices(self) -> list[str]:
        return [d.device_id for d in self.devices if d.received == 0]

    def worst(self, n: int = 5) -> list[DeviceResult]:
        bad = [d for d in self.devices if d.lost or d.duplicates or d.received == 0]
        bad.sort(key=lambda d: (d.lost, d.expected - d.received, d.duplicates), reverse=True)
        return bad[:n]

    def as_dict(self) -> dict[str, Any]:
        return {
            "devices": len(self.devices),
            "expected": self.expected,
            "received": self.received,
            "lost": self.lost,
            "lossPercent": round(self.loss_pct, 4),
            "duplicates": self.duplicates,
            "outOfOrder": self.out_of_order,
            "silentDevices": len(self.silent_devices),
            "invalidMessages": self.invalid_messages,
            "latencyMs": self.latency,
            "worstDevices": [
                {
                    "deviceId": d.device_id,
                    "lost": d.lost,
                    "received": d.received,
                    "expected": d.expected,
                    "duplicates": d.duplicates,
                    "firstMissing": d.first_missing,
                }
                for d in self.worst()
            ],
        }


_TRACKERS: weakref.WeakSet[TelemetryTracker] = weakref.WeakSet()


def live_trackers() -> list[TelemetryTracker]:
    """Every tracker alive in the process (the metrics hub takes each fleet's end-to-end latencies from them)."""
    while True:
        try:
            return list(_TRACKERS)
        except RuntimeError:  # the set changed while it was copied (a tracker made on another thread)
            continue


class TelemetryTracker:
    """Feeds on received envelopes; thread-confined to whoever feeds it (the runtime loop).

    Latencies are kept per group of devices: ``group_of(device_id)`` (the device's fleet, when the owner
    sets it) picks the histogram a device's latencies go to, so a report on one fleet is not mixed with
    another fleet's latencies; ``latency`` is all of them together.
    """

    def __init__(self, name: str = "", group_of: Callable[[str], str | None] | None = None) -> None:
        self.name = name
        self.created_at = time.time()
        self.devices: dict[str, DeviceTrack] = {}
        self.group_of = group_of
        self.groups: dict[str | None, LatencyRecorder] = {}
        self.invalid = 0
        self.total = 0
        #: the devices that received something since the previous :meth:`export` (None: not exporting yet)
        self.changed: set[str] | None = None
        _TRACKERS.add(self)

    @property
    def latency(self) -> Histogram:
        merged = Histogram()
        for h in self.groups.values():
            merged.merge(h)
        return merged

    def latency_of(self, device_ids: Iterable[str]) -> Histogram:
        """The latencies of the groups these devices belong to (normally: their fleet)."""
        merged = Histogram()
        for hist in {id(t.latency): t.latency for d in device_ids if (t := self.devices.get(d))}.values():
            merged.merge(hist)
        return merged

    def _new_track(self, device_id: str) -> DeviceTrack:
        group = self.group_of(device_id) if self.group_of is not None else None
        hist = self.groups.get(group)
        if hist is None:
            hist = self.groups[group] = LatencyRecorder()
        track = self.devices[device_id] = DeviceTrack(hist)
        return track

    def record(self, device_id: str, seq: int, ts_ms: float | None, now: float | None = None) -> None:
        """Record one envelope; ``now`` is the receive time in epoch seconds."""
        self.total += 1
        track = self.devices.get(device_id)
        if track is None:
            track = self._new_track(device_id)
        if self.changed is not None:
            self.changed.add(device_id)
        if seq < 0:
            self.invalid += 1
            return
        track.add(seq)
        if ts_ms is not None:
            latency = (now if now is not None else time.time()) - ts_ms / 1000.0
            track.latency.record(max(latency, 0.0))

    def record_envelope(self, envelope: Mapping[str, Any] | None, now: float | None = None) -> bool:
        """Record a decoded envelope; False (counted as invalid) when it is not one."""
        if not envelope:
            self.invalid += 1
            self.total += 1
            return False
        device_id, seq = envelope.get("deviceId"), envelope.get("seq")
        if not isinstance(device_id, str) or not isinstance(seq, int) or isinstance(seq, bool):
            self.invalid += 1
            self.total += 1
            return False
        ts = envelope.get("ts")
        self.record(device_id, seq, ts if isinstance(ts, (int, float)) else None, now)
        return True

    def received_from(self, device_id: str) -> int:
        track = self.devices.get(device_id)
        return track.received - track.duplicates if track else 0

    def report(self, expected: Mapping[str, tuple[int, int]] | Iterable[str]) -> TelemetryReport:
        """Compare with what devices sent.

        ``expected`` maps device id -> ``(first_seq, stop_seq)``: the device handed ``[first, stop)`` to its
        transport while this tracker listened. Given only ids, every device is judged from the first to
        the highest sequence number that arrived (losses at the end then go unseen).
        """
        if not isinstance(expected, Mapping):
            expected = {d: (-1, -1) for d in expected}
        results = []
        for device_id, (first, last) in expected.items():
            start, stop = first, last
            track = self.devices.get(device_id)
            if track is None:
                n = max(stop - max(start, 0), 0)
                results.append(
                    DeviceResult(device_id, n, 0, n, 0, 0, list(range(max(start, 0), min(stop, max(start, 0) + 10))))
                )
                continue
            if start < 0:
                start = track.first_seq
            if stop < 0:
                stop = track.highest_seq + 1
            stop = max(stop, start)
            got = track.count_seen(start, stop)
            lost = (stop - start) - got
            results.append(
                DeviceResult(
                    device_id,
                    stop - start,
                    got,
                    lost,
                    track.duplicates,
                    track.out_of_order,
                    track.missing(start, stop) if lost else [],
                )
            )
        unknown = sum(1 for d in self.devices if d not in expected)
        return TelemetryReport(results, self.latency_of(expected).summary(), unknown, self.invalid)

    # -- exchange between processes (the receivers of a sharded subscription) -------------------------------

    def export(self) -> TrackerExport:
        """What this tracker collected since its previous export, for a :class:`TrackerMerge` elsewhere.

        Devices are exported whole (cumulative), and only those that received something since the previous
        export (all of them the first time); latencies are exported as what was recorded since the previous
        export (each group's interval is taken, see :meth:`LatencyRecorder.take_interval`), so do not export a
        tracker whose intervals a time series also takes (the receivers of a sharded subscription have none).
        """
        names = self.devices.keys() if self.changed is None else self.changed
        group_of = {id(recorder): group for group, recorder in self.groups.items()}
        devices = {
            d: (
                t.received,
                t.duplicates,
                t.out_of_order,
                t.first_seq,
                t.highest_seq,
                bytes(t.seen),
                group_of.get(id(t.latency)),
            )
            for d in names
            if (t := self.devices.get(d)) is not None
        }
        self.changed = set()
        latency = []
        for group, recorder in self.groups.items():
            if recorder.interval.count:
                latency.append((group, recorder.take_interval().encode()))
        return TrackerExport(devices, latency, self.total, self.invalid)


@dataclass
class TrackerExport:
    """One tracker's state for another process (plain data: it pickles, and Ray ships it).

    ``devices`` maps a device id to ``(received, duplicates, out_of_order, first_seq, highest_seq, seen, group)``,
    its whole state (``seen`` is the bitmap of the sequence numbers that arrived, ``group`` the latency group
    its latencies go to, normally its fleet); ``latency`` is a list of
    ``(group, histogram)`` with what each group recorded since the previous export (HdrHistogram's encoded
    form, see :meth:`Histogram.encode`); ``total`` and ``invalid`` count since the tracker began.
    """

    devices: dict[str, tuple[int, int, int, int, int, bytes, str | None]]
    latency: list[tuple[str | None, str]]
    total: int
    invalid: int


def _or_into(seen: bytearray, other: bytes) -> None:
    """``seen |= other`` on bitmaps of possibly different lengths (``seen`` grows)."""
    n = len(other)
    if not n:
        return
    if n > len(seen):
        seen.extend(bytes(n - len(seen)))
    merged = int.from_bytes(seen[:n], "little") | int.from_bytes(other, "little")
    seen[:n] = merged.to_bytes(n, "little")


class TrackerMerge:
    """Folds the exports of several trackers ("parts": the receivers of a sharded subscription) into one.

    The result is what one tracker would know had it received every message itself: per device the union of
    the sequence numbers seen, every arrival counted (so a message that reached two parts counts once as
    received and once as a duplicate), latencies merged exactly (HdrHistograms of one layout add up). Two
    exceptions, since receivers share no clock or order: ``out_of_order`` is the sum of what each part saw
    (a message that arrived at its part after a later one of its device). A device's latencies go to the
    group the part put them in (see :class:`TelemetryTracker` ``group_of``), else to the target's own.

    Folding the same export twice counts nothing twice except its latencies (exports carry devices whole,
    latencies as deltas). The target tracker may also be fed directly; its figures then add up with the parts'.
    """

    def __init__(self, into: TelemetryTracker) -> None:
        self.into = into
        #: per part, per device: (received, out_of_order) as of that part's latest export
        self._seen_counts: dict[Hashable, dict[str, tuple[int, int]]] = {}
        #: per part: (total, invalid) as of its latest export
        self._totals: dict[Hashable, tuple[int, int]] = {}

    def fold(self, part: Hashable, export: TrackerExport) -> None:
        """Add what ``part`` reported in ``export`` to the merged tracker."""
        into = self.into
        last = self._seen_counts.setdefault(part, {})
        for device_id, (received, _dups, out_of_order, first, highest, seen, group) in export.devices.items():
            track = into.devices.get(device_id)
            if track is None:
                track = into._new_track(device_id)
            if group is not None:
                recorder = into.groups.get(group)
                if recorder is None:
                    recorder = into.groups[group] = LatencyRecorder()
                track.latency = recorder
            before_received, before_ooo = last.get(device_id, (0, 0))
            last[device_id] = (received, out_of_order)
            track.received += received - before_received
            track.out_of_order += out_of_order - before_ooo
            _or_into(track.seen, seen)
            if first >= 0 and (track.first_seq < 0 or first < track.first_seq):
                track.first_seq = first
            track.highest_seq = max(track.highest_seq, highest)
            track.duplicates = track.received - int.from_bytes(track.seen, "little").bit_count()
        total, invalid = self._totals.get(part, (0, 0))
        self._totals[part] = (export.total, export.invalid)
        into.total += export.total - total
        into.invalid += export.invalid - invalid
        for group, encoded in export.latency:
            recorder = into.groups.get(group)
            if recorder is None:
                recorder = into.groups[group] = LatencyRecorder()
            recorder.interval.merge(Histogram.decode(encoded))
