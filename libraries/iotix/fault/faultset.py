"""The network faults of one target (a fleet, or a standalone fault proxy) and the connections they act on.

A :class:`FaultSet` keeps the added faults (:class:`ActiveFault`: spec, owners, counters), the outage state
(:meth:`FaultSet.take_down`) and every open :class:`Conduit` (one per connection: an ``up`` and a ``down``
:class:`~iotix.fault.pipe.Pipe`). On every change it tells each pipe which faults act on it now, so the pipes
never look anything up per chunk.

Who is affected:

- ``owners`` (device ids) limit a fault to those devices' connections; conduits with owner None (pooled
  HTTP/Kafka connections, proxied ones) only get faults without owners. A target whose connections are
  shared (``per_device=False``) refuses a device selection.
- ``toxicity`` < 1 affects that share: drawn once per (fault, device) for owned conduits (stable across a
  device's reconnects and reproducible from the seed) and once per (fault, connection) for pooled ones.
- ``direction``: upstream (device -> target) faults go to ``conduit.up``, downstream ones to ``conduit.down``.

Everything runs on the runtime loop; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

from .mqtt_frames import packet_type_name
from .pipe import STAT_KEYS, ActiveFault, Pipe
from .spec import FaultError, FaultSpec

__all__ = ["OUTAGE_MODES", "OUTAGE_NAME", "ActiveFault", "Conduit", "FaultSet"]

OUTAGE_NAME = "target-down"
OUTAGE_MODES = ("refuse", "blackhole", "reset")
#: How many removed faults :meth:`FaultSet.history` remembers.
HISTORY_SIZE = 50

_OUTAGE_TEXT = {
    "refuse": "new connections refused, open ones reset",
    "reset": "new connections accepted then reset, open ones reset",
    "blackhole": "nothing passes either way, new connections get no answer",
}


class Conduit:
    """One connection through the fault layer: ``up`` (device -> target) and ``down`` (target -> device).

    ``act`` (from the layer) is called at most once; after it both pipes drop everything.
    """

    __slots__ = ("_act", "_draws", "_ended", "_faultset", "_seen", "down", "owner", "up")

    def __init__(
        self,
        faultset: FaultSet,
        owner: str | None,
        *,
        up: Callable[[bytes], None],
        down: Callable[[bytes], None],
        act: Callable[[str], None],
    ) -> None:
        self._faultset = faultset
        self.owner = owner
        self._act = act
        self._ended = False
        self._seen: set[ActiveFault] = set()
        self._draws: dict[ActiveFault, bool] = {}  # toxicity draws of a conduit without owner
        loop, datagram, rng = faultset.loop, faultset.datagram, faultset.rng
        self.up = Pipe(loop, datagram=datagram, direction="upstream", deliver=up, act=self._on_act, rng=rng)
        self.down = Pipe(loop, datagram=datagram, direction="downstream", deliver=down, act=self._on_act, rng=rng)

    @property
    def ended(self) -> bool:
        return self._ended

    def _on_act(self, action: str) -> None:
        if self._ended:
            return
        self._ended = True
        self.up.end()
        self.down.end()
        self._act(action)

    def end_by(self, fault: ActiveFault, action: str) -> None:
        """End the connection on behalf of ``fault`` (an outage), counted there."""
        if self._ended:
            return
        fault.stats["connections_reset" if action == "reset" else "connections_closed"] += 1
        self._on_act(action)

    def backlog(self) -> int:
        return self.up.backlog() + self.down.backlog()

    def detach(self) -> None:
        """The connection is gone: cancel its timers and forget it."""
        self._faultset._conduits.discard(self)
        self.up.close()
        self.down.close()

    def __repr__(self) -> str:
        return f"Conduit(owner={self.owner!r}, up={self.up!r}, down={self.down!r})"


class FaultSet:
    """The faults of ONE target (a fleet or a standalone proxy); see the module doc."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        target: str,
        *,
        datagram: bool,
        per_device: bool,
        seed: int | str | None,
    ) -> None:
        self.loop = loop
        self.target = target
        self.datagram = datagram
        self.per_device = per_device
        self.seed = seed
        self.rng = random.Random(f"faults:{target}:{seed}") if seed is not None else random.Random()
        self._faults: dict[str, ActiveFault] = {}
        self._timers: dict[ActiveFault, asyncio.TimerHandle] = {}
        self._outage: ActiveFault | None = None
        self._outage_timer: asyncio.TimerHandle | None = None
        self._conduits: set[Conduit] = set()
        self._draws: dict[ActiveFault, dict[str, bool]] = {}
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY_SIZE)
        self._numbers: dict[str, int] = {}
        self._closed = False
        #: called after every change of faults or outage (a proxy closes or reopens its listening socket)
        self.on_change: list[Callable[[], None]] = []
        #: sockets closed by their user whose real close waits for their pipe (:mod:`iotix.fault.sock`)
        self.deferred: dict[Any, None] = {}

    # --- faults -------------------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Any fault or an outage: when False every conduit is pass-through."""
        return bool(self._faults) or self._outage is not None

    @property
    def faults(self) -> tuple[ActiveFault, ...]:
        return tuple(self._faults.values())

    def __contains__(self, name: object) -> bool:
        return name in self._faults

    def get(self, name: str) -> ActiveFault | None:
        return self._faults.get(name)

    def _where(self, label: str) -> str:
        return f"Network fault '{label}' on {self.target}"

    def add(self, spec: FaultSpec, owners: Collection[str] | None = None) -> ActiveFault:
        """Start ``spec`` on the conduits it covers now and later; it removes itself after ``spec.duration``."""
        kind = spec.kind  # a spec parsed for this set (parse_fault with its ``datagram``): the kind fits
        if owners is not None and not self.per_device:
            raise FaultError(
                f"{self._where(spec.label)}: {self.target} shares its connections between devices, so a fault "
                "acts on all of them; leave out the device selection (devices=, count=, percentage=)."
            )
        name = spec.name
        if name is None:
            number = self._numbers.get(kind, 0)
            while True:
                number += 1
                candidate = f"{kind}-{number}"
                if candidate not in self._faults and candidate != OUTAGE_NAME:
                    break
            self._numbers[kind] = number
            name = candidate
            spec = FaultSpec(
                name=name,
                kind=kind,
                direction=spec.direction,
                params=spec.params,
                toxicity=spec.toxicity,
                duration=spec.duration,
            )
        elif name in self._faults or name == OUTAGE_NAME:
            raise FaultError(
                f"{self._where(name)}: {self.target} already has a fault named '{name}'; choose another name= "
                "or remove it first."
            )
        now = self.loop.time()
        rng = random.Random(f"fault:{self.target}:{name}:{self.seed}") if self.seed is not None else random.Random()
        fault = ActiveFault(spec, owners, started_at=now, rng=rng)
        self._faults[name] = fault
        self._draws[fault] = {}
        if spec.duration is not None:
            self._timers[fault] = self.loop.call_at(now + spec.duration, self._expire, fault)
        self._refresh()
        return fault

    def _expire(self, fault: ActiveFault) -> None:
        self._timers.pop(fault, None)
        if self._faults.get(fault.name) is fault:
            self._drop_fault(fault)
            self._refresh()

    def remove(self, name: str) -> None:
        """Stop the fault ``name`` (its holds release); ``target-down`` brings the target up."""
        if name == OUTAGE_NAME and self._outage is not None:
            self.bring_up()
            return
        fault = self._faults.get(name)
        if fault is None:
            names = ", ".join(f"'{n}'" for n in self._faults) or "none"
            raise FaultError(
                f"Network fault '{name}' on {self.target}: no such fault; its faults are: {names}. "
                "Get Network Faults lists them."
            )
        self._drop_fault(fault)
        self._refresh()

    def clear(self) -> int:
        """Remove every fault (not the outage: Bring Target Up ends that); returns how many were removed."""
        faults = list(self._faults.values())
        for fault in faults:
            self._drop_fault(fault)
        if faults:
            self._refresh()
        return len(faults)

    def _drop_fault(self, fault: ActiveFault) -> None:
        timer = self._timers.pop(fault, None)
        if timer is not None:
            timer.cancel()
        self._faults.pop(fault.name, None)
        self._draws.pop(fault, None)
        self._history.append(self._describe(fault, removed=True))
        fault.active = False

    # --- outage -----------------------------------------------------------------------------------------------

    def take_down(self, mode: str, duration: float | None) -> None:
        """An outage as the devices see it: refuse|reset (open connections reset, new ones refused or reset)
        or blackhole (nothing passes on open connections, new ones get no answer). Lasts ``duration`` s or
        until :meth:`bring_up`."""
        mode = str(mode).strip().lower()
        if mode not in OUTAGE_MODES:
            raise FaultError(
                f"Network fault '{OUTAGE_NAME}' on {self.target}: mode must be refuse, blackhole or reset, "
                f"got '{mode}'."
            )
        if duration is not None and duration <= 0:
            raise FaultError(
                f"Network fault '{OUTAGE_NAME}' on {self.target}: duration must be > 0 (leave it out to stay "
                f"down until Bring Target Up), got '{duration}'."
            )
        if self._outage is not None:
            self._end_outage()
        now = self.loop.time()
        spec = FaultSpec(name=OUTAGE_NAME, kind="outage", direction="both", params={"mode": mode}, duration=duration)
        outage = ActiveFault(spec, None, started_at=now, rng=random.Random(0))
        self._outage = outage
        if duration is not None:
            self._outage_timer = self.loop.call_at(now + duration, self.bring_up)
        if self._ends_connections(mode):
            for conduit in list(self._conduits):
                conduit.end_by(outage, "reset")
        self._refresh()

    def _ends_connections(self, mode: str) -> bool:
        """Whether an outage in ``mode`` resets connections: refuse and reset do on TCP; UDP has no connection to
        reset, so there every mode means that datagrams vanish (a blackhole)."""
        return mode != "blackhole" and not self.datagram

    def bring_up(self) -> None:
        """End the outage (held bytes flow again); nothing happens when the target is up."""
        if self._outage is None:
            return
        self._end_outage()
        self._refresh()

    def _end_outage(self) -> None:
        outage = self._outage
        assert outage is not None
        if self._outage_timer is not None:
            self._outage_timer.cancel()
            self._outage_timer = None
        self._history.append(self._describe(outage, removed=True))
        outage.active = False
        self._outage = None

    @property
    def outage(self) -> str | None:
        """The outage mode, or None when the target is up."""
        return None if self._outage is None else self._outage.spec.params["mode"]

    # --- connections -------------------------------------------------------------------------------------------

    def admission(self, owner: str | None, *, count: bool = True) -> str | None:
        """For a NEW connection of ``owner``: None (go on), "refuse", "reset" (accept then reset) or "blackhole"
        (no answer: the caller waits for its own timeout), from the outage or a blackhole/timeout fault that
        covers ``owner`` upstream. Counts the answer on the responsible fault (``connections_refused``, or
        ``connections_reset`` for "reset") unless ``count`` is False (a question that admits nothing)."""
        outage = self._outage
        if outage is not None:
            mode = outage.spec.params["mode"]
            if count:
                outage.stats["connections_reset" if mode == "reset" else "connections_refused"] += 1
            return mode
        for fault in self._faults.values():
            spec = fault.spec
            # a blackhole answers no SYN; a timeout fault accepts and closes later (in the pipe)
            if spec.kind == "blackhole" and spec.acts_upstream() and fault.covers(owner):
                if spec.toxicity < 1.0 and not self._owner_affected(fault, owner):
                    continue
                if count:
                    fault.stats["connections_refused"] += 1
                return "blackhole"
        return None

    def attach(
        self,
        owner: str | None,
        *,
        up: Callable[[bytes], None],
        down: Callable[[bytes], None],
        act: Callable[[str], None],
    ) -> Conduit:
        """A new connection of ``owner``: its conduit, with the faults that cover it already set."""
        conduit = Conduit(self, owner, up=up, down=down, act=act)
        if not self._closed:
            self._conduits.add(conduit)
            if self.active:
                self._apply(conduit, self._acting())
            outage = self._outage
            if outage is not None and self._ends_connections(outage.spec.params["mode"]):
                # admitted before the outage began (connecting, in a TLS handshake): it is reset like the rest
                conduit.end_by(outage, "reset")
        return conduit

    @property
    def conduits(self) -> frozenset[Conduit]:
        return frozenset(self._conduits)

    def _acting(self) -> list[ActiveFault]:
        acting = list(self._faults.values())
        if self._outage is not None and not self._ends_connections(self._outage.spec.params["mode"]):
            acting.append(self._outage)
        return acting

    def _refresh(self) -> None:
        acting = self._acting()
        for conduit in list(self._conduits):
            if not conduit.ended:
                self._apply(conduit, acting)
        self._changed()

    def _changed(self) -> None:
        for hook in list(self.on_change):
            hook()

    def _apply(self, conduit: Conduit, acting: list[ActiveFault]) -> None:
        up: list[ActiveFault] = []
        down: list[ActiveFault] = []
        owner = conduit.owner
        for fault in acting:
            if not fault.covers(owner) or not self._affected(fault, conduit):
                continue
            spec = fault.spec
            if spec.acts_upstream():
                up.append(fault)
            if spec.acts_downstream():
                down.append(fault)
            if fault not in conduit._seen:
                conduit._seen.add(fault)
                fault.stats["connections_affected"] += 1
        conduit.up.set_faults(up)
        conduit.down.set_faults(down)

    def _affected(self, fault: ActiveFault, conduit: Conduit) -> bool:
        if fault.spec.toxicity >= 1.0:
            return True
        if conduit.owner is not None:
            return self._owner_affected(fault, conduit.owner)
        drawn = conduit._draws.get(fault)
        if drawn is None:
            drawn = conduit._draws[fault] = fault.rng.random() < fault.spec.toxicity
        return drawn

    def _owner_affected(self, fault: ActiveFault, owner: str | None) -> bool:
        """The toxicity draw of ``owner``: once per (fault, device), from a hash when seeded (order-free)."""
        if owner is None:
            return fault.rng.random() < fault.spec.toxicity
        draws = self._draws.setdefault(fault, {})
        drawn = draws.get(owner)
        if drawn is None:
            if self.seed is not None:
                digest = hashlib.blake2b(f"{self.target}:{fault.name}:{self.seed}:{owner}".encode(), digest_size=8)
                share = int.from_bytes(digest.digest(), "big") / 2**64
            else:
                share = fault.rng.random()
            drawn = draws[owner] = share < fault.spec.toxicity
        return drawn

    # --- reporting ----------------------------------------------------------------------------------------------

    def backlog(self) -> int:
        """Bytes queued in every conduit (delayed, rate-limited, held). An idle pipe holds nothing, so only the
        others are asked (the metrics read this every second over every connection of a fleet)."""
        return sum(c.backlog() for c in self._conduits if not (c.up.idle and c.down.idle))

    def describe(self) -> list[dict[str, Any]]:
        """The active faults (and the outage as ``target-down``) with their settings and what they did."""
        entries = [self._describe(fault) for fault in self._faults.values()]
        if self._outage is not None:
            entries.append(self._describe(self._outage))
        return entries

    def history(self) -> list[dict[str, Any]]:
        """The last :data:`HISTORY_SIZE` removed or expired faults (and outages), oldest first."""
        return list(self._history)

    def _describe(self, fault: ActiveFault, *, removed: bool = False) -> dict[str, Any]:
        spec = fault.spec
        entry: dict[str, Any] = {
            "name": fault.name,
            "kind": spec.kind,
            "direction": spec.direction,
        }
        if spec.kind == "outage":
            entry["mode"] = spec.params["mode"]
            entry["summary"] = _OUTAGE_TEXT[spec.params["mode"]]
        else:
            entry["summary"] = spec.settings_text()
        # machine-readable: seconds, bytes/s, shares 0..1, bytes; MQTT packet types by name
        entry["settings"] = {
            key: sorted(packet_type_name(t) for t in value) if isinstance(value, frozenset) else value
            for key, value in spec.params.items()
        }
        entry["devices"] = "all" if fault.owners is None else len(fault.owners)
        entry["toxicity"] = spec.toxicity
        entry["duration_s"] = spec.duration
        entry["active_for_s"] = round(max(0.0, self.loop.time() - fault.started_at), 3)
        for key in STAT_KEYS:
            entry[key] = fault.stats[key]
        if removed:
            entry["removed"] = True
        return entry

    def close(self) -> None:
        """Shut the layer down: cancel the timers, end faults and outage; open conduits deliver what they
        queued and go idle (pass-through)."""
        self._closed = True
        for fault in list(self._faults.values()):
            self._drop_fault(fault)
        if self._outage is not None:
            self._end_outage()
        for conduit in list(self._conduits):
            conduit.up.flush()
            conduit.down.flush()
        self._conduits.clear()
        self._changed()

    def __repr__(self) -> str:
        return f"FaultSet({self.target!r}, faults={list(self._faults)}, outage={self.outage!r})"
