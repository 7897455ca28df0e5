"""One direction of one connection through the fault layer: bytes or datagrams in, the same out, late or not.

A :class:`Pipe` is fed by :meth:`Pipe.push` (and :meth:`Pipe.push_eof` for the end of a TCP stream) and hands
what is due to ``deliver`` on the loop; ``act("reset"|"close")`` asks the layer to end the connection. The
faults acting on it come from its :class:`iotix.fault.faultset.FaultSet` through :meth:`Pipe.set_faults`.

With nothing acting and nothing queued, :attr:`Pipe.idle` is True and callers write straight through (the fast
path: one attribute read). Otherwise every chunk goes through the stages below, in this order, whatever the
order the faults were added in:

1. **hold** (``blackhole``, ``timeout``, an outage in blackhole mode): TCP bytes (and an EOF) are held, up to
   :data:`HOLD_LIMIT` bytes, then the connection is reset; datagrams are dropped. When the hold goes, held
   bytes continue through the stages below, in order.
2. **mqtt** (TCP): the stream is cut into MQTT packets (:mod:`iotix.fault.mqtt_frames`); a matching packet is
   dropped, delayed, or ends the connection (``disconnect`` at the ``after``-th match: that packet is not
   delivered, the connection is closed after what was already queued).
3. **limit_data**: TCP passes up to ``bytes`` bytes then closes (after those bytes are delivered);
   datagrams past the limit are dropped.
4. datagrams only: **loss** (random or Gilbert-Elliott), **corrupt** (one random bit flipped), **duplicate**
   (a second copy, timed independently), **reorder** (held back until ``gap`` later datagrams passed, or 1 s).
5. timing: **slicer** (TCP: pieces of ``average_size`` ± ``size_variation``, ``delay`` apart), **bandwidth**
   (a piece leaves when the previous one has left plus ``len / rate``: a queue, the backlog shows in
   :meth:`Pipe.backlog`), **latency** (+ jitter, uniform or normal, netem-style correlation, clipped at 0).
   A stream keeps its order (a chunk is due at max(its own time, the previous chunk's)); datagrams are due
   independently, so jitter reorders them as it does on a real network.

``reset`` and ``timeout`` also end the connection (RST after ``after``; FIN after ``timeout``) counted from the
moment the fault starts acting on this pipe; ``slow_close`` delays the EOF. After ``act`` the pipe drops
everything (at most one act per pipe; a conduit makes it one per connection).

Everything runs on the loop; a pipe has at most one pending timer for its queue (plus one per reset/timeout
fault), so thousands of delayed connections stay cheap.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections.abc import Callable, Collection, Iterable
from typing import Any

from .mqtt_frames import MqttFramer
from .spec import HOLD_KINDS, FaultSpec

#: The bytes a hold keeps per pipe before it gives up and resets the connection.
HOLD_LIMIT = 4 * 1024 * 1024
#: How long ``reorder`` holds a datagram back at most when fewer than ``gap`` datagrams follow.
REORDER_MAX_HOLD = 1.0
#: A bandwidth-limited TCP chunk is cut into pieces of this much time on the wire at most (smooth rate).
BANDWIDTH_SLICE_S = 0.02

STAT_KEYS = (
    "packets_delayed",
    "bytes_delayed",
    "packets_dropped",
    "bytes_dropped",
    "packets_duplicated",
    "packets_corrupted",
    "packets_reordered",
    "bytes_held",
    "connections_affected",
    "connections_reset",
    "connections_closed",
    "connections_refused",
)


class ActiveFault:
    """One added fault: its spec, whom it covers (``owners`` None = all), what it did (``stats``), since when.

    ``rng`` (per fault: ``fault:{target}:{name}:{seed}``) draws the toxicity; ``active`` turns False when the
    fault is removed, so a pipe still holding it (a timer) knows.
    """

    __slots__ = ("__weakref__", "active", "link_free", "owners", "rng", "spec", "started_at", "stats")

    def __init__(
        self,
        spec: FaultSpec,
        owners: Collection[str] | None = None,
        *,
        started_at: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.owners: frozenset[str] | None = None if owners is None else frozenset(owners)
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self.started_at = started_at
        self.rng = rng if rng is not None else random.Random(f"fault:{spec.name}")
        self.active = True
        #: a shared bandwidth fault: per direction, when its one link is free again (loop time)
        self.link_free = {"upstream": 0.0, "downstream": 0.0}

    @property
    def name(self) -> str:
        return self.spec.name or self.spec.kind

    def covers(self, owner: str | None) -> bool:
        """Whether the fault acts on connections of ``owner`` (owner None = a pooled connection or a proxy)."""
        if self.owners is None:
            return True
        return owner is not None and owner in self.owners

    def __repr__(self) -> str:
        return f"ActiveFault({self.name!r}, {self.spec.kind!r}, {self.spec.direction!r})"


class _EofMark:
    __slots__ = ()


_EOF = _EofMark()


class _ActMark:
    """In the queue: end the connection once everything before it was delivered (limit_data, disconnect)."""

    __slots__ = ("action", "fault")

    def __init__(self, action: str, fault: ActiveFault) -> None:
        self.action = action
        self.fault = fault


class _Held:
    """A datagram ``reorder`` holds back: released after ``left`` more datagrams passed, or at its deadline."""

    __slots__ = ("data", "fault", "left", "released")

    def __init__(self, data: bytes, fault: ActiveFault, left: int) -> None:
        self.data = data
        self.fault = fault
        self.left = left
        self.released = False


class _State:
    """What one fault remembers about one pipe."""

    __slots__ = ("bad", "count", "done", "free", "passed", "prev", "timer")

    def __init__(self) -> None:
        self.passed = 0  # limit_data: bytes let through
        self.done = False  # limit_data: limit reached
        self.free = 0.0  # bandwidth: when the link is free again (loop time)
        self.prev = 0.0  # latency: last jitter offset (correlation)
        self.count = 0  # mqtt: matching packets seen (disconnect after N)
        self.bad = False  # loss gilbert: in the bad state
        self.timer: asyncio.TimerHandle | None = None  # reset / timeout


class Pipe:
    """One direction of one connection (or one datagram flow); see the module doc for what each fault does."""

    __slots__ = (
        "_act",
        "_bandwidths",
        "_closing",
        "_corrupts",
        "_delayers",
        "_deliver",
        "_dups",
        "_ended",
        "_eof_seen",
        "_framer",
        "_heap",
        "_held",
        "_held_bytes",
        "_hold",
        "_last_due",
        "_latencies",
        "_limits",
        "_losses",
        "_mqtt",
        "_queued",
        "_reorder_held",
        "_reorders",
        "_seq",
        "_slicers",
        "_slow_closes",
        "_state",
        "_timer",
        "_timer_due",
        "datagram",
        "direction",
        "faults",
        "idle",
        "loop",
        "rng",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        datagram: bool,
        direction: str,
        deliver: Callable[[bytes], None],
        act: Callable[[str], None],
        rng: random.Random,
    ) -> None:
        self.loop = loop
        self.datagram = datagram
        self.direction = direction
        self.rng = rng
        self._deliver = deliver
        self._act = act
        self.faults: tuple[ActiveFault, ...] = ()
        self.idle = True
        self._state: dict[ActiveFault, _State] = {}
        self._heap: list[list[Any]] = []  # [due, seq, item, nbytes]; item None = cancelled
        self._seq = 0
        self._queued = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf
        self._last_due = -math.inf
        self._held: list[bytes | _EofMark] = []
        self._held_bytes = 0
        self._hold: ActiveFault | None = None
        self._framer: MqttFramer | None = None
        self._reorder_held: list[_Held] = []
        self._ended = False
        self._closing = False
        self._eof_seen = False
        self._clear_stages()

    def _clear_stages(self) -> None:
        self._mqtt: tuple[ActiveFault, ...] = ()
        self._limits: tuple[ActiveFault, ...] = ()
        self._losses: tuple[ActiveFault, ...] = ()
        self._corrupts: tuple[ActiveFault, ...] = ()
        self._dups: tuple[ActiveFault, ...] = ()
        self._reorders: tuple[ActiveFault, ...] = ()
        self._slicers: tuple[ActiveFault, ...] = ()
        self._bandwidths: tuple[ActiveFault, ...] = ()
        self._latencies: tuple[ActiveFault, ...] = ()
        self._slow_closes: tuple[ActiveFault, ...] = ()
        self._delayers = False

    # --- the faults -----------------------------------------------------------------------------------------

    def set_faults(self, faults: Iterable[ActiveFault]) -> None:
        """Make ``faults`` the ones acting now. A lifted hold releases held bytes in order (TCP)."""
        if self._ended:
            return
        faults = tuple(faults)
        old = self._state
        state: dict[ActiveFault, _State] = {}
        now = self.loop.time()
        for fault in faults:
            kept = old.pop(fault, None)
            if kept is None:
                kept = _State()
                kind = fault.spec.kind
                if kind == "reset":
                    kept.timer = self.loop.call_at(now + fault.spec.params["after"], self._timed_act, "reset", fault)
                elif kind == "timeout" and fault.spec.params["timeout"] > 0:
                    kept.timer = self.loop.call_at(now + fault.spec.params["timeout"], self._timed_act, "close", fault)
            state[fault] = kept
        for gone in old.values():  # faults no longer acting here
            if gone.timer is not None:
                gone.timer.cancel()
        self._state = state
        self.faults = faults

        def of(*kinds: str) -> tuple[ActiveFault, ...]:
            return tuple(f for f in faults if f.spec.kind in kinds)

        self._clear_stages()
        if faults:
            self._mqtt = () if self.datagram else of("mqtt")
            self._limits = of("limit_data")
            if self.datagram:
                self._losses = of("loss")
                self._corrupts = of("corrupt")
                self._dups = of("duplicate")
                self._reorders = of("reorder")
            else:
                self._slicers = of("slicer")
                self._slow_closes = of("slow_close")
            self._bandwidths = of("bandwidth")
            self._latencies = of("latency")
            self._delayers = bool(self._slicers or self._bandwidths or self._latencies)
        holds = of(*HOLD_KINDS, "outage") if faults else ()
        self._hold = holds[0] if holds else None

        if self._reorder_held and not self._reorders:
            self._release_reordered(all_=True)
        if self._framer is not None and not self._mqtt:
            rest = self._framer.flush()
            self._framer = None
            if rest and self._hold is None:
                self._after_mqtt(rest, 0.0)
            elif rest:  # fed before anything now held: it goes first
                self._held.insert(0, rest)
                self._held_bytes += len(rest)
        elif self._framer is None and self._mqtt:
            self._framer = MqttFramer()
        if self._hold is None and self._held:
            held, self._held = self._held, []
            self._held_bytes = 0
            for item in held:
                if self._ended:
                    break
                if isinstance(item, _EofMark):
                    self._eof_after_hold()
                else:
                    self._after_hold(item)
        self._update_idle()

    def _update_idle(self) -> None:
        self.idle = not (
            self.faults or self._heap or self._held or self._ended or self._framer is not None or self._reorder_held
        )

    # --- input ------------------------------------------------------------------------------------------------

    def push(self, data: bytes) -> None:
        """Bytes (TCP) or one datagram (UDP) entering this direction."""
        if self.idle:
            self._deliver(data)
            return
        if self._ended or self._closing or self._eof_seen:
            return
        if type(data) is not bytes:  # a bytearray or memoryview the caller may reuse: keep a copy
            data = bytes(data)
        hold = self._hold
        if hold is not None:
            if self.datagram:
                self._drop(hold, data)
                return
            self._held.append(data)
            self._held_bytes += len(data)
            hold.stats["bytes_held"] += len(data)
            if self._held_bytes > HOLD_LIMIT:
                self._do_act("reset", hold)
            return
        self._after_hold(data)

    def push_eof(self) -> None:
        """The sending side closed (TCP): passed on after what is queued; slow_close delays it, a hold keeps it."""
        if self._ended or self._eof_seen:
            return
        self._eof_seen = True
        if self.idle:
            self._deliver(b"")
            return
        if self._closing:
            return
        if self._hold is not None:
            self._held.append(_EOF)
            return
        self._eof_after_hold()

    # --- stages -------------------------------------------------------------------------------------------------

    def _drop(self, fault: ActiveFault, data: bytes) -> None:
        stats = fault.stats
        stats["packets_dropped"] += 1
        stats["bytes_dropped"] += len(data)

    def _after_hold(self, data: bytes) -> None:
        framer = self._framer
        if framer is None:
            self._after_mqtt(data, 0.0)
            return
        for packet_type, packet in framer.feed(data):
            if self._ended or self._closing:
                return
            extra = 0.0
            if packet_type is not None:
                verdict = self._mqtt_verdict(packet_type, packet)
                if verdict is None:
                    continue
                extra = verdict
            self._after_mqtt(packet, extra)

    def _mqtt_verdict(self, packet_type: int, packet: bytes) -> float | None:
        """None: the packet is gone (dropped, or the connection ends); else the extra delay it gets."""
        extra = 0.0
        for fault in self._mqtt:
            params = fault.spec.params
            if packet_type not in params["packets"]:
                continue
            probability = params["probability"]
            if probability < 1.0 and self.rng.random() >= probability:
                continue
            action = params["action"]
            if action == "drop":
                self._drop(fault, packet)
                return None
            if action == "delay":
                extra += params["delay"]
                fault.stats["packets_delayed"] += 1
                fault.stats["bytes_delayed"] += len(packet)
                continue
            state = self._state[fault]
            state.count += 1
            if state.count >= params["after"]:
                self._drop(fault, packet)
                self._close_after_queue("close", fault)
                return None
        return extra

    def _close_after_queue(self, action: str, fault: ActiveFault) -> None:
        """End the connection once what is queued before now was delivered; nothing more is accepted."""
        self._closing = True
        if not self._heap:
            self._do_act(action, fault)
            return
        self._enqueue(max(self.loop.time(), self._last_due), _ActMark(action, fault), 0)

    def _after_mqtt(self, data: bytes, extra: float) -> None:
        close_after: ActiveFault | None = None
        for fault in self._limits:
            state = self._state[fault]
            if state.done:
                self._drop(fault, data)
                return
            room = fault.spec.params["bytes"] - state.passed
            size = len(data)
            if self.datagram:
                if size > room:
                    self._drop(fault, data)
                    return
                state.passed += size
            elif size >= room:
                state.done = True
                state.passed += room
                if size > room:
                    fault.stats["bytes_dropped"] += size - room
                    fault.stats["packets_dropped"] += 1
                data = data[:room]
                close_after = fault
            else:
                state.passed += size
        if self.datagram:
            self._datagram_stages(data, extra)
        elif data:
            self._timing(data, extra)
        if close_after is not None:
            self._close_after_queue("close", close_after)

    def _datagram_stages(self, data: bytes, extra: float) -> None:
        rng = self.rng
        for fault in self._losses:
            if self._lost(fault):
                self._drop(fault, data)
                return
        for fault in self._corrupts:
            if data and rng.random() < fault.spec.params["probability"]:
                bit = rng.randrange(len(data) * 8)
                flipped = bytearray(data)
                flipped[bit >> 3] ^= 1 << (bit & 7)
                data = bytes(flipped)
                fault.stats["packets_corrupted"] += 1
        copies = 1
        for fault in self._dups:
            if rng.random() < fault.spec.params["probability"]:
                copies += 1
                fault.stats["packets_duplicated"] += 1
        for _ in range(copies):
            self._reorder_stage(data, extra)

    def _lost(self, fault: ActiveFault) -> bool:
        params = fault.spec.params
        rng = self.rng
        if params["model"] == "random":
            return rng.random() < params["probability"]
        # Gilbert-Elliott (netem gemodel): the loss chance of the current state, then a state change.
        state = self._state[fault]
        lost = rng.random() < (params["loss_bad"] if state.bad else params["loss_good"])
        if state.bad:
            if rng.random() < params["r"]:
                state.bad = False
        elif rng.random() < params["p"]:
            state.bad = True
        return lost

    def _reorder_stage(self, data: bytes, extra: float) -> None:
        for fault in self._reorders:
            if self.rng.random() < fault.spec.params["probability"]:
                held = _Held(data, fault, fault.spec.params["gap"])
                self._reorder_held.append(held)
                fault.stats["packets_reordered"] += 1
                self._enqueue(self.loop.time() + REORDER_MAX_HOLD, held, 0)
                return
        self._timing(data, extra)
        if self._reorder_held:
            for held in self._reorder_held:
                held.left -= 1
            self._release_reordered(all_=False)

    def _release_reordered(self, *, all_: bool) -> None:
        keep: list[_Held] = []
        release: list[_Held] = []
        for held in self._reorder_held:
            (release if all_ or held.left <= 0 else keep).append(held)
        self._reorder_held = keep
        for held in release:
            held.released = True
            self._timing(held.data, 0.0)

    def _timing(self, data: bytes, extra: float) -> None:
        """Stage 5: when ``data`` is due; then queue it (or deliver it now when nothing waits before it)."""
        now = self.loop.time()
        start = now + extra
        if not self._delayers:
            self._enqueue(start if self.datagram else max(start, self._last_due), data, len(data))
            return
        if not self._slicers and not self._bandwidths:  # latency only: the common case, without lists
            due = start
            for fault in self._latencies:
                delay = self._sample(fault)
                if delay > 0:
                    due += delay
                    stats = fault.stats
                    stats["packets_delayed"] += 1
                    stats["bytes_delayed"] += len(data)
            self._enqueue(due if self.datagram else max(due, self._last_due), data, len(data))
            return
        pieces: list[tuple[float, bytes]] = [(start, data)]
        for fault in self._slicers:
            pieces = self._slice(fault, pieces)
        for fault in self._bandwidths:
            pieces = self._throttle(fault, pieces)
        for fault in self._latencies:
            pieces = self._delay(fault, pieces)
        for due, piece in pieces:
            self._enqueue(due if self.datagram else max(due, self._last_due), piece, len(piece))

    def _slice(self, fault: ActiveFault, pieces: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        params = fault.spec.params
        average, variation, delay = params["average_size"], params["size_variation"], params["delay"]
        out: list[tuple[float, bytes]] = []
        for at, data in pieces:
            offset = 0
            index = 0
            while offset < len(data):
                size = average + (self.rng.randint(-variation, variation) if variation else 0)
                out.append((at + index * delay, data[offset : offset + max(1, size)]))
                offset += max(1, size)
                index += 1
            if index > 1 and delay > 0:
                fault.stats["packets_delayed"] += 1
                fault.stats["bytes_delayed"] += len(data)
        return out

    def _throttle(self, fault: ActiveFault, pieces: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        params = fault.spec.params
        rate = params["rate"]
        shared = params["shared"]  # one link for every connection of the fault (a gateway's uplink)
        free = fault.link_free[self.direction] if shared else self._state[fault].free
        out: list[tuple[float, bytes]] = []
        step = len(pieces[0][1]) if self.datagram else max(512, int(rate * BANDWIDTH_SLICE_S))
        for at, data in pieces:
            fault.stats["packets_delayed"] += 1
            fault.stats["bytes_delayed"] += len(data)
            for offset in range(0, max(len(data), 1), max(step, 1)):
                piece = data if self.datagram else data[offset : offset + step]
                free = max(at, free) + len(piece) / rate
                out.append((free, piece))
                if self.datagram:
                    break
        if shared:
            fault.link_free[self.direction] = free
        else:
            self._state[fault].free = free
        return out

    def _delay(self, fault: ActiveFault, pieces: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        out: list[tuple[float, bytes]] = []
        delayed = False
        for at, data in pieces:
            delay = self._sample(fault)
            delayed = delayed or delay > 0
            out.append((at + delay, data))
        if delayed:
            fault.stats["packets_delayed"] += 1
            fault.stats["bytes_delayed"] += sum(len(data) for _, data in pieces)
        return out

    def _sample(self, fault: ActiveFault) -> float:
        params = fault.spec.params
        jitter = params["jitter"]
        if not jitter:
            return params["latency"]
        fresh = self.rng.gauss(0.0, jitter) if params["distribution"] == "normal" else self.rng.uniform(-jitter, jitter)
        correlation = params["correlation"]
        if correlation:
            state = self._state[fault]
            fresh = correlation * state.prev + (1.0 - correlation) * fresh
            state.prev = fresh
        delay = params["latency"] + fresh
        return delay if delay > 0 else 0.0

    def _eof_after_hold(self) -> None:
        if self._framer is not None:
            rest = self._framer.flush()
            if rest:
                self._after_mqtt(rest, 0.0)
        if self._ended or self._closing:
            return
        now = self.loop.time()
        due = now
        for fault in self._slow_closes:
            due += fault.spec.params["delay"]
            fault.stats["packets_delayed"] += 1
        for fault in self._latencies:
            due += self._sample(fault)
        self._enqueue(max(due, self._last_due), _EOF, 0)

    # --- the queue --------------------------------------------------------------------------------------------

    def _enqueue(self, due: float, item: Any, size: int) -> None:
        if not self.datagram and item is not None and not isinstance(item, _Held):
            self._last_due = due
        heap = self._heap
        if due <= self.loop.time() and (self.datagram or not heap) and not isinstance(item, _Held):
            self._dispatch(item)
            return
        self._seq += 1
        heapq.heappush(heap, [due, self._seq, item, size])
        self._queued += size
        if due < self._timer_due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_due = due
            self._timer = self.loop.call_at(due, self._fire)
        self.idle = False

    def _dispatch(self, item: Any) -> None:
        if item is _EOF:
            self._deliver(b"")
        elif isinstance(item, _ActMark):
            self._do_act(item.action, item.fault)
        elif isinstance(item, _Held):
            if not item.released:
                item.released = True
                self._reorder_held.remove(item)
                self._timing(item.data, 0.0)
        elif item is not None:
            self._deliver(item)

    def _fire(self) -> None:
        limit = max(self.loop.time(), self._timer_due)
        self._timer = None
        self._timer_due = math.inf
        heap = self._heap
        try:
            while heap and heap[0][0] <= limit and not self._ended:
                entry = heapq.heappop(heap)
                self._queued -= entry[3]
                self._dispatch(entry[2])
        finally:
            if self._ended:
                pass
            elif heap:
                if heap[0][0] < self._timer_due:
                    if self._timer is not None:
                        self._timer.cancel()
                    self._timer_due = heap[0][0]
                    self._timer = self.loop.call_at(self._timer_due, self._fire)
            else:
                self._update_idle()

    # --- ending -----------------------------------------------------------------------------------------------

    def _timed_act(self, action: str, fault: ActiveFault) -> None:
        state = self._state.get(fault)
        if state is not None:
            state.timer = None
        if fault.active and fault in self._state:
            self._do_act(action, fault)

    def _do_act(self, action: str, fault: ActiveFault) -> None:
        if self._ended:
            return
        fault.stats["connections_reset" if action == "reset" else "connections_closed"] += 1
        self.end()
        self._act(action)

    def end(self) -> None:
        """The connection is over (act was called here or on the other pipe): drop everything from now on."""
        self._ended = True
        self._drop_all()
        self.idle = False

    def _drop_all(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = math.inf
        for state in self._state.values():
            if state.timer is not None:
                state.timer.cancel()
                state.timer = None
        self._heap.clear()
        self._queued = 0
        self._held.clear()
        self._held_bytes = 0
        self._reorder_held.clear()
        if self._framer is not None:
            self._framer.flush()

    def flush(self) -> None:
        """Deliver everything queued and held now, in order, and go idle (the fault layer is shutting down)."""
        if self._ended:
            return
        self.set_faults(())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = math.inf
        heap = self._heap
        while heap and not self._ended:
            entry = heapq.heappop(heap)
            self._queued -= entry[3]
            self._dispatch(entry[2])
        self._update_idle()

    def close(self) -> None:
        """Cancel the timers and drop what is queued (the connection is gone)."""
        self._drop_all()
        self._state = {}
        self.faults = ()
        self._clear_stages()
        self._hold = None
        self._framer = None
        self._ended = True
        self.idle = False

    def backlog(self) -> int:
        """Bytes queued here: delayed, rate-limited, held, or waiting for the rest of their MQTT packet."""
        framer = self._framer.pending if self._framer is not None else 0
        reordered = sum(len(held.data) for held in self._reorder_held)
        return self._queued + self._held_bytes + framer + reordered

    @property
    def ended(self) -> bool:
        return self._ended

    def __repr__(self) -> str:
        return f"Pipe({self.direction}, faults={[f.name for f in self.faults]}, backlog={self.backlog()})"


class _IdlePipe:
    """What a wrapper's pipes are once its conduit is detached: always idle (bytes pass straight through)."""

    __slots__ = ()
    idle = True

    def push(self, data: bytes) -> None:
        pass

    def push_eof(self) -> None:
        pass

    def backlog(self) -> int:
        return 0


#: the pipes of a socket or datagram flow whose conduit is gone
IDLE_PIPE: Any = _IdlePipe()
