"""The seam between fleets and transports: what a protocol adapter is given and how it reports back.

A transport is built from three things and imports nothing from ``iotix.fleet``:

- a :class:`TransportSpec`: a frozen description of what it serves (fleet name, model, connection settings,
  credentials, where TLS files resolve, the seed);
- the :class:`Link` objects it serves, one per device: ``id``, ``index``, ``topic``, ``variables()``, the
  next envelope ``seq`` (read only) and ``conn``, the one slot the transport owns (its per-device state);
- one :class:`Outcomes` object, the single hook through which every outcome leaves the transport (as a Locust
  protocol client reports through ``events.request``): acknowledged, failed with a reason, not sent, connection
  lost, command received, a problem to report, and whether a link is active.

``iotix.fleet.outcomes`` implements :class:`Outcomes` over the fleet's delivery bookkeeping (counters,
retries, circuit breaker, error state, transmission log); it is the only module that knows both sides.
Unit tests give a transport a fake outcomes object and plain links: no simulator, no server.

Rules every adapter follows:

- ``send`` never blocks and never raises for a delivery problem. It returns True when the message was
  handed over (it then counts as sent and uses its ``seq``), or calls :meth:`Outcomes.not_sent` with the
  reason and returns False (the fleet counts or queues the message).
- Request-based adapters (``request_based = True``: HTTP, CoAP CON, Kafka) report every attempt:
  :meth:`Outcomes.acknowledged` with its latency, or :meth:`Outcomes.failed` with a reason code, whether the
  endpoint is to blame (``fault``) and a ``resend`` callback for the retry. Connection-based adapters (MQTT)
  report broker acknowledgements with :meth:`Outcomes.acknowledged` and rejections with
  ``failed(..., fault=False)``.
- An established connection that goes away unexpectedly is :meth:`Outcomes.connection_lost` (the fleet
  reconnects with backoff); one the fleet closed on purpose (``disconnect``, ``drop``) is not reported.

Protocols are registered in :mod:`iotix.transport.registry` and imported only when a fleet uses them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from iotix.errors import ConfigurationError, IoTixError

if TYPE_CHECKING:
    from iotix.fault.faultset import FaultSet
    from iotix.model.types import DeviceModel


class TransportError(IoTixError):
    """A connection or send failed; the message names the target and the reason."""


def check_port(port: int, what: str = "port") -> int:
    """``port`` if it is a TCP/UDP port (1-65535), else a :class:`ConfigurationError` naming the value.

    Checked before anything connects: the resolver takes a port modulo 65536, so ``108807`` would dial 43271.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigurationError(f"{what} must be a port number between 1 and 65535, got {port!r}.")
    return port


class Credentials:
    """Username and password; the password never appears in a repr, a log or an exception."""

    __slots__ = ("password", "username")

    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        self.username = username
        self.password = password

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password={'***' if self.password else None})"


@dataclass(frozen=True)
class TransportSpec:
    """What a transport serves: one fleet's model and connection, as the fleet resolved them."""

    fleet: str
    model: DeviceModel
    connection: Mapping[str, Any]
    credentials: Credentials = field(default_factory=Credentials)
    #: where relative ``connection.tls`` paths resolve (None: the model file's folder)
    tls_dir: str | None = None
    seed: int | str | None = None
    #: the network faults of the fleet (``iotix.fault``): the transport routes its connections through them;
    #: None when the fleet was created without the fault layer
    faults: FaultSet | None = None

    @property
    def protocol(self) -> str:
        return self.model.protocol


class Link(Protocol):
    """One device as its transport sees it (the fleet's ``Device`` is one)."""

    id: str
    index: int
    #: the device's telemetry topic; a transport that names topics sets it in ``connect``
    topic: str | None
    #: the one slot the transport owns: its per-device connection state (None until it sets it)
    conn: Any
    #: the ``seq`` the device's next telemetry envelope carries (read only for transports)
    seq: int

    def variables(self) -> dict[str, Any]:
        """The ``${...}`` variables of the device's patterns (deviceId, index, modelId, fleet)."""
        ...


class Outcomes(Protocol):
    """The one hook through which a transport reports what happened. Called on the runtime loop only."""

    def acknowledged(self, link: Link, nbytes: int = 0, latency_s: float | None = None) -> None:
        """The target acknowledged a telemetry message (a PUBACK, a 2.xx, a 2xx, a broker ack)."""
        ...

    def failed(
        self,
        link: Link,
        reason: str,
        code: str = "error",
        nbytes: int = 0,
        latency_s: float | None = None,
        *,
        fault: bool = True,
        resend: Callable[[int], None] | None = None,
        attempt: int = 0,
        first_try: float | None = None,
    ) -> None:
        """An attempt to deliver a message that ``send`` accepted failed.

        ``code`` is the reason's short code (``http_500``, ``timeout``, ``coap_5.03``, ...). ``fault``: the
        endpoint is to blame, so the attempt counts for the circuit breaker and may be retried by calling
        ``resend(attempt + 1)``; ``first_try`` is the loop time of the first attempt (for the retry budget).
        ``fault=False`` counts the message as failed at once.
        """
        ...

    def not_sent(self, link: Link, reason: str) -> None:
        """``send`` is about to return False: the reason becomes the device's last error."""
        ...

    def connection_lost(self, link: Link, reason: str) -> None:
        """An established connection went away without the fleet asking (the fleet reconnects)."""
        ...

    def command_received(self, link: Link, name: str, payload: bytes, where: str) -> str:
        """A command arrived for the device; returns its status once applied: ``ok``, ``error``, or ``accepted``
        for a command the device carries out in the background (updateFirmware), which reports its result
        on the command's response topic later."""
        ...

    def problem(self, message: str) -> None:
        """Something went wrong in the background; the next keyword that touches the fleet reports it."""
        ...

    def is_active(self, link: Link) -> bool:
        """Whether the device is up and sending (running, or in error but still trying)."""
        ...


class Transport(ABC):
    """Per-fleet protocol adapter. All methods run on the runtime loop."""

    protocol: str = ""
    #: Whether telemetry sends are requests with an outcome (HTTP, CoAP CON, Kafka): they report each attempt
    #: (retries, circuit breaker, error state, transmission log). MQTT hands messages to a connection; its
    #: transmission log records the hand-over.
    request_based: bool = False
    #: Whether each device has connections of its own, so network faults can act on chosen devices (MQTT, CoAP
    #: client). Pooled transports (HTTP, Kafka) share connections: their faults act on the whole fleet.
    per_device_faults: bool = False
    #: The fleet's TLS settings (:class:`iotix.transport.tls.FleetTls`) when the transport uses TLS.
    tls: Any = None

    def __init__(self, spec: TransportSpec, links: Sequence[Link], outcomes: Outcomes) -> None:
        self.spec = spec
        self.links = links
        self.outcomes = outcomes

    @property
    def name(self) -> str:
        """The fleet's name, for messages."""
        return self.spec.fleet

    @property
    def connection(self) -> Mapping[str, Any]:
        return self.spec.connection

    @property
    def target(self) -> str:
        """Where this transport sends, for messages (``mqtt://host:port``)."""
        return ""

    @property
    def endpoint(self) -> str:
        """The endpoint that the fleet's circuit breaker guards (default: :attr:`target`)."""
        return self.target

    @abstractmethod
    async def connect(self, link: Link) -> None:
        """Open the device's connection; raise :class:`TransportError` with the reason on failure."""

    @abstractmethod
    def send(
        self, link: Link, payload: bytes, topic: str | None = None, qos: int | None = None, retain: bool = False
    ) -> bool:
        """Hand one message to the transport without blocking. False when it could not be handed over."""

    @abstractmethod
    def is_connected(self, link: Link) -> bool:
        """Whether the device can send right now."""

    @abstractmethod
    async def disconnect(self, link: Link) -> None:
        """Close the device's connection gracefully (no last will)."""

    @abstractmethod
    def drop(self, link: Link) -> None:
        """Cut the device's connection abruptly, as a device losing power or network would."""

    async def drain(self, timeout: float) -> None:  # noqa: B027 - optional hook
        """Before a stop: wait up to ``timeout`` seconds for messages in flight to be acknowledged."""

    def make_encoder(self) -> Callable[[str, int, int, dict[str, Any]], bytes] | None:
        """A protocol-specific payload encoder ``(device_id, seq, ts_ms, values) -> bytes``.

        None (the default) means the model's payload format (:func:`iotix.encode.make_encoder`). A
        request-based adapter whose API prescribes a body (IoTFlow's telemetry JSON) returns its own.
        """
        return None

    def periodic(self, now: float) -> None:  # noqa: B027 - optional hook
        """Called about every 100 ms on the loop: keep-alives, health checks."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release fleet-wide resources (pools, sockets). Devices are already disconnected."""

    def descriptors(self) -> int:
        """File descriptors (sockets) the fleet holds at most once every device runs: one per device here.

        Pooled transports return their pool's bound. The fleet is refused when it is created if this does not
        fit under the process's open-file limit (:func:`iotix.fdlimit.check_descriptors`).
        """
        return len(self.links)

    # -- optional abilities (defaults: the transport has none) ------------------------------------------

    def topic_for(self, link: Link) -> str | None:
        """The device's telemetry topic, for transports that name one (set as ``link.topic`` on connect)."""
        return None

    def command_topics(self, link: Link) -> dict[str, str]:
        """Command name -> the topic (or path) where the device receives it; empty when it receives none."""
        return {}

    def device_address(self, link: Link) -> dict[str, Any] | None:
        """Where the device itself answers (a CoAP device in server mode: ``port`` and ``url``), else None."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "target": self.target}
