"""The transport interface: what every protocol adapter offers to the fleet layer.

A :class:`Transport` belongs to one fleet and manages the connections of that fleet's devices. The fleet
layer never branches on the protocol: it connects, sends, disconnects and drops through this interface,
and the adapter reports back through the fleet's hooks:

- ``fleet.connection_lost(device, reason)``: an established connection went away unexpectedly (the fleet
  reconnects with backoff);
- ``fleet.delivery_failed(device, reason)``: a message that ``send`` accepted was not delivered (counted in
  ``messagesFailed``, the reason becomes the device's last error);
- ``device.acked += 1``: the target acknowledged a message (QoS 1/2 PUBACK);
- request-based adapters (``request_based = True``: HTTP, CoAP CON, Kafka) report every attempt to
  ``fleet.delivery`` instead (:class:`iotix.fleet.delivery.Delivery`): ``succeeded`` (acknowledged, with its
  latency) or ``failed`` (with a reason code, whether the endpoint is to blame, and a ``resend`` callback
  for the retry); the fleet's circuit breaker then guards the next sends;
- ``fleet.command_received(device, name, payload, where)``: a command arrived for the device.

``send`` never blocks: request-based adapters (HTTP, CoAP) start the request in a task and report the
outcome through those hooks. A message counts as sent (``messagesSent``, and the envelope's ``seq``) when
``send`` accepted it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iotix.errors import IoTixError

if TYPE_CHECKING:
    from iotix.fleet.device import Device
    from iotix.fleet.fleet import Fleet


class TransportError(IoTixError):
    """A connection or send failed; the message names the target and the reason."""


class Transport(ABC):
    """Per-fleet protocol adapter. All methods run on the runtime loop."""

    protocol: str = ""
    #: Whether telemetry sends are requests with an outcome (HTTP, CoAP CON, Kafka): they report each attempt
    #: to ``fleet.delivery`` (retries, circuit breaker, error state, transmission log). MQTT hands messages
    #: to a connection; its transmission log records the hand-over.
    request_based: bool = False

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    @property
    def target(self) -> str:
        """Where this transport sends, for messages (``mqtt://host:port``)."""
        return ""

    @property
    def endpoint(self) -> str:
        """The endpoint that the fleet's circuit breaker guards (default: :attr:`target`)."""
        return self.target

    @abstractmethod
    async def connect(self, device: Device) -> None:
        """Open the device's connection; raise :class:`TransportError` with the reason on failure."""

    @abstractmethod
    def send(
        self, device: Device, payload: bytes, topic: str | None = None, qos: int | None = None, retain: bool = False
    ) -> bool:
        """Hand one message to the transport without blocking. False when it could not be handed over."""

    @abstractmethod
    def is_connected(self, device: Device) -> bool:
        """Whether the device can send right now."""

    @abstractmethod
    async def disconnect(self, device: Device) -> None:
        """Close the device's connection gracefully (no last will)."""

    @abstractmethod
    def drop(self, device: Device) -> None:
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

    def describe(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "target": self.target}


def create_transport(fleet: Fleet) -> Transport:
    """The adapter for the fleet's model protocol."""
    protocol = fleet.model.protocol
    if protocol == "mqtt":
        from iotix.transport.mqtt import MqttTransport

        return MqttTransport(fleet)
    if protocol == "coap":
        from iotix.transport.coap import CoapTransport

        return CoapTransport(fleet)
    if protocol == "http":
        from iotix.transport.http import HttpTransport

        return HttpTransport(fleet)
    if protocol == "kafka":
        from iotix.transport.kafka import KafkaTransport

        return KafkaTransport(fleet)
    raise TransportError(
        f"Fleet '{fleet.name}': protocol '{protocol}' of model '{fleet.model.id}' is not supported yet "
        "(supported: mqtt, coap, http, kafka)."
    )
