"""Receivers: who counts a fleet's telemetry, and which one to ask when nobody says.

A *receiver* is anything that collects IoTix envelopes into a :class:`~iotix.observe.tracker.TelemetryTracker`:
a test MQTT subscription, a local CoAP server, a CoAP observation, a backend's store, a Kafka subscription.
Each one registers itself in a :class:`Receivers` registry under its name (``default``, ``coap``,
``observe:<alias>``, ``iotflow``, ``kafka:<alias>``) with

- ``source``: how to get its :class:`Source` (tracker, since when it listens, an optional refresh); called on
  the runtime loop, since trackers and subscription times are loop-owned;
- ``hears``: which fleets it can have seen (a predicate on the fleet's protocol and connection, a topic, ...);
- ``rank``: which one wins when several of its kind hear a fleet (the local CoAP server over observations,
  the MQTT connection ``default`` over the others).

Receivers belong to a :class:`ReceiverKind` (MQTT subscriptions, CoAP receivers, ...). A kind says which fleets
only its receivers can have heard, and what to tell the user when none of them, or several equally, could
have: so the messages stay specific ("no Kafka subscription consumes its topic") while :meth:`Receivers.pick`
knows no protocol.

Nothing here imports ``robot``: core probes return a :class:`Source`, and the Robot layer turns
:class:`ReceiverError` into a keyword failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from iotix.errors import IoTixError
from iotix.observe.tracker import TelemetryTracker


class ReceiverError(IoTixError):
    """No receiver, or no single one, can judge a fleet's telemetry; or a receiver name is taken."""


@dataclass(frozen=True)
class Source:
    """Where a fleet's telemetry is counted: a receiver's tracker, and since when it listened (loop time).

    ``refresh`` (optional) brings the tracker up to date before each look, for receivers that are read
    rather than pushed to (a backend's store, an observation's notifications).
    """

    name: str
    tracker: TelemetryTracker
    listening_since: float | None
    refresh: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True)
class FleetView:
    """What a receiver may ask about a fleet to tell whether it can have seen its telemetry."""

    name: str
    protocol: str
    connection: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, fleet: Any) -> FleetView:
        """The view of a fleet (anything with ``name``, ``model.protocol`` and ``connection``)."""
        return cls(fleet.name, fleet.model.protocol, dict(fleet.connection))


def _everything(fleet: FleetView) -> bool:
    return True


@dataclass(frozen=True)
class Receiver:
    """One registered receiver (see the module's documentation)."""

    name: str
    kind: str
    source: Callable[[], Source]
    hears: Callable[[FleetView], bool] = _everything
    rank: int = 0


@dataclass(frozen=True)
class ReceiverKind:
    """A family of receivers, the fleets whose telemetry only they can have heard, and the messages.

    ``claims`` is None for the fallback kind: it serves every fleet no other kind claims.
    ``missing(fleet, available)`` is the message when none of its receivers hears ``fleet`` (``available`` is
    the quoted names of every receiver there is, or ``none``); ``ambiguous(fleet, names)`` the one when the
    best-ranked of them are several.
    """

    name: str
    claims: Callable[[FleetView], bool] | None
    missing: Callable[[FleetView, str], str]
    ambiguous: Callable[[FleetView, list[str]], str]


class Receivers:
    """The registered receivers of a process, by name, and the kinds they belong to.

    Used from one thread (the one that registers, Robot's); :meth:`pick` reads no loop-owned state (the
    ``hears`` predicates must not either), and :meth:`Receiver.source` is then called on the loop.
    ``unknown_hint`` ends the message for a name nobody registered (what the user can do about it).
    """

    def __init__(self, unknown_hint: str = "") -> None:
        self.unknown_hint = unknown_hint
        self._kinds: dict[str, ReceiverKind] = {}
        self._receivers: dict[str, Receiver] = {}

    # -- kinds ----------------------------------------------------------------------------------------

    def add_kind(self, kind: ReceiverKind) -> None:
        """Declare (or redeclare) a kind; kinds are listed, and their receivers named, in this order."""
        self._kinds[kind.name] = kind

    def kind_of(self, fleet: FleetView) -> ReceiverKind | None:
        """The kind whose receivers can have heard ``fleet``: the one that claims it, else the fallback."""
        fallback = None
        for kind in self._kinds.values():
            if kind.claims is None:
                fallback = fallback or kind
            elif kind.claims(fleet):
                return kind
        return fallback

    # -- receivers ------------------------------------------------------------------------------------

    def register(self, receiver: Receiver) -> None:
        """Add ``receiver``; its name must be free (see :meth:`check_free`) and its kind declared."""
        self.check_free(receiver.name)
        if receiver.kind not in self._kinds:
            raise ReceiverError(f"Receiver '{receiver.name}' is of an undeclared kind '{receiver.kind}'.")
        self._receivers[receiver.name] = receiver

    def check_free(self, name: str) -> None:
        """Fail when a receiver named ``name`` is registered."""
        if name in self._receivers:
            raise ReceiverError(
                f"A receiver named '{name}' exists already; stop or disconnect it first, or use another name."
            )

    def unregister(self, name: str) -> None:
        """Forget the receiver ``name`` (nothing if there is none)."""
        self._receivers.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._receivers

    def __iter__(self) -> Iterator[Receiver]:
        """The receivers, by kind (in the order the kinds were declared), then in registration order."""
        order = {name: i for i, name in enumerate(self._kinds)}
        return iter(sorted(self._receivers.values(), key=lambda r: order.get(r.kind, len(order))))

    def __len__(self) -> int:
        return len(self._receivers)

    def get(self, name: str) -> Receiver | None:
        return self._receivers.get(name)

    def names(self) -> list[str]:
        return [r.name for r in self]

    def available(self) -> str:
        """The receivers' names quoted and comma-separated, or ``none``."""
        return ", ".join(repr(name) for name in self.names()) or "none"

    # -- choosing -------------------------------------------------------------------------------------

    def pick(self, name: str, fleet: FleetView) -> Receiver:
        """The receiver ``name``; without a name, the one that can have heard ``fleet``.

        Without a name: among the receivers of the kind that claims ``fleet`` and that hear it, the only one
        of the highest rank; none or several fail with the kind's message.
        """
        if name:
            receiver = self._receivers.get(name)
            if receiver is None:
                hint = f"; {self.unknown_hint}" if self.unknown_hint else "."
                raise ReceiverError(f"No receiver named '{name}' (available: {self.available()}){hint}")
            return receiver
        kind = self.kind_of(fleet)
        if kind is None:
            raise ReceiverError(
                f"No receiver collects the telemetry of fleet '{fleet.name}' ({fleet.protocol}) (available: "
                f"{self.available()}); open one with the ProtocolClient library, or name one with source=."
            )
        heard = [r for r in self if r.kind == kind.name and r.hears(fleet)]
        best = [r for r in heard if r.rank == max(h.rank for h in heard)]
        if len(best) == 1:
            return best[0]
        if best:
            raise ReceiverError(kind.ambiguous(fleet, [r.name for r in best]))
        raise ReceiverError(kind.missing(fleet, self.available()))
