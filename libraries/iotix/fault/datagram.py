"""Datagrams of one flow (a CoAP device's) routed through one conduit of a fault set.

A :class:`DatagramTap` sits where a transport writes a device's datagrams and where it hands received ones
to the protocol: ``send(data)`` goes through the conduit's up pipe to ``send`` (the real ``sendto``),
``receive(data)`` through the down pipe to ``receive`` (the protocol's handling). Both are pass-through
(one attribute test and the call) while no fault acts, as for :mod:`iotix.fault.sock`; the transport may
also test ``tap.up.idle`` itself and write directly (it then keeps the exact socket and address).

UDP has no connection, so an outage of the target means one thing here whatever its mode: **datagrams
vanish** (the fault set treats every outage of a datagram target as a blackhole; drops are counted on the
outage). Nothing reports a refusal as an error: a CoAP client sees timeouts and retransmits, as it would on
a real network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iotix.fault.pipe import IDLE_PIPE

if TYPE_CHECKING:
    from iotix.fault.faultset import FaultSet

__all__ = ["DatagramTap"]


class DatagramTap:
    """One datagram flow through a conduit of ``faults`` (see the module docstring). Loop thread only.

    ``send(data)`` is called with the datagrams the up pipe delivers, ``receive(data)`` with those of the
    down pipe.
    """

    __slots__ = ("_conduit", "_receive", "_send", "down", "owner", "up")

    def __init__(
        self,
        faults: FaultSet,
        owner: str | None,
        *,
        send: Callable[[bytes], Any],
        receive: Callable[[bytes], Any],
    ) -> None:
        self.owner = owner
        self._send = send
        self._receive = receive
        conduit = self._conduit = faults.attach(owner, up=send, down=receive, act=self._ended)
        self.up: Any = conduit.up
        self.down: Any = conduit.down

    def send(self, data: bytes) -> None:
        """A datagram from the device."""
        if self.up.idle:
            self._send(data)
        else:
            self.up.push(data)

    def receive(self, data: bytes) -> None:
        """A datagram for the device."""
        if self.down.idle:
            self._receive(data)
        else:
            self.down.push(data)

    def _ended(self, action: str) -> None:
        """The fault set ended the flow (no datagram kind does; a defensive end): pass datagrams through."""
        self.close()

    def close(self) -> None:
        """The flow is over (the device stopped, the transport closed): detach the conduit (what it queued is
        dropped); the tap passes datagrams through from now on."""
        conduit, self._conduit = self._conduit, None
        self.up = self.down = IDLE_PIPE
        if conduit is not None:
            conduit.detach()

    def __repr__(self) -> str:
        return f"DatagramTap(owner={self.owner!r}, up={self.up!r}, down={self.down!r})"
