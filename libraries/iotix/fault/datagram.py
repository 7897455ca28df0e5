"""Datagrams of one flow (a CoAP device's) routed through one conduit of a fault set.

A :class:`DatagramTap` sits where a transport writes a device's datagrams and where it hands received ones
to the protocol: ``send(data)`` goes through the conduit's up pipe to ``send`` (the real ``sendto``),
``receive(data)`` through the down pipe to ``receive`` (the protocol's handling). Both are pass-through
(one attribute test and the call) while no fault acts, as for :mod:`iotix.fault.sock`; the transport may
also test ``tap.up.idle`` itself and write directly (it then keeps the exact socket and address).

UDP has no connection, so the fault set's outages mean one thing here: **datagrams vanish**. Whether the
target is down with ``refuse``, ``reset`` or ``blackhole``, a device's datagrams and the answers to them are
dropped until the target is up again (a blackhole does that in the pipes; refuse and reset end the open
conduits, and the tap drops everything until the outage is over, then attaches a fresh conduit). Nothing
reports a refusal as an error: a CoAP client sees timeouts and retransmits, as it would on a real network.
Dropped datagrams are counted on the outage (``packets_dropped``, ``bytes_dropped``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["BLOCKING_OUTAGES", "DatagramTap"]

#: Outage modes that end a tap's conduit: its datagrams vanish until the target is up again.
BLOCKING_OUTAGES = ("refuse", "reset")


class _Blocked:
    """The pipes of a tap whose conduit an outage ended: never idle, so every datagram takes the slow path."""

    __slots__ = ()
    idle = False

    def backlog(self) -> int:
        return 0


_BLOCKED: Any = _Blocked()


class _Gone:
    """The pipes of a closed tap: pass-through (a datagram still sent goes out as without the layer)."""

    __slots__ = ()
    idle = True

    def backlog(self) -> int:
        return 0


_GONE: Any = _Gone()


class DatagramTap:
    """One datagram flow through a conduit of ``faults`` (see the module docstring). Loop thread only.

    ``send(data)`` is called with the datagrams the up pipe delivers, ``receive(data)`` with those of the
    down pipe.
    """

    __slots__ = ("_conduit", "_faults", "_receive", "_send", "down", "owner", "up")

    def __init__(
        self,
        faults: Any,
        owner: str | None,
        *,
        send: Callable[[bytes], Any],
        receive: Callable[[bytes], Any],
    ) -> None:
        self._faults = faults
        self.owner = owner
        self._send = send
        self._receive = receive
        self._conduit: Any = None
        self.up: Any = _BLOCKED
        self.down: Any = _BLOCKED
        if faults.outage not in BLOCKING_OUTAGES:
            self._attach()

    def _attach(self) -> None:
        conduit = self._faults.attach(self.owner, up=self._send, down=self._receive, act=self._act)
        self._conduit = conduit
        self.up = conduit.up
        self.down = conduit.down

    def send(self, data: bytes) -> None:
        """A datagram from the device."""
        if self.up.idle:
            self._send(data)
        elif self._open():
            self.up.push(data)
        else:
            self._dropped(data)

    def receive(self, data: bytes) -> None:
        """A datagram for the device."""
        if self.down.idle:
            self._receive(data)
        elif self._open():
            self.down.push(data)
        else:
            self._dropped(data)

    def _open(self) -> bool:
        """Whether the tap has a conduit; when an outage ended it: attach a new one once the target is up,
        else count the datagram as dropped by the outage (False)."""
        if self._conduit is not None:
            return True
        faults = self._faults
        if faults.outage in BLOCKING_OUTAGES:
            return False
        self._attach()
        return True

    def _dropped(self, data: bytes) -> None:
        # counted on the outage, like the drops of a fault (the fault set has no public counter for this)
        outage = getattr(self._faults, "_outage", None)
        if outage is not None:
            outage.stats["packets_dropped"] += 1
            outage.stats["bytes_dropped"] += len(data)

    def _act(self, action: str) -> None:
        """The fault set ended the conduit (an outage that refuses or resets): datagrams vanish from now on."""
        conduit, self._conduit = self._conduit, None
        self.up = self.down = _BLOCKED
        if conduit is not None:
            conduit.detach()

    def close(self) -> None:
        """The flow is over (the device stopped, the transport closed): detach the conduit (what it queued is
        dropped); the tap passes datagrams through from now on."""
        conduit, self._conduit = self._conduit, None
        self.up = self.down = _GONE
        if conduit is not None:
            conduit.detach()

    def __repr__(self) -> str:
        return f"DatagramTap(owner={self.owner!r}, up={self.up!r}, down={self.down!r})"
