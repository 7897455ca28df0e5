"""One adapter per protocol behind one interface (:class:`iotix.transport.base.Transport`)."""

from iotix.transport.base import Credentials, Link, Outcomes, Transport, TransportError, TransportSpec
from iotix.transport.registry import PROTOCOLS, create_transport

__all__ = [
    "PROTOCOLS",
    "Credentials",
    "Link",
    "Outcomes",
    "Transport",
    "TransportError",
    "TransportSpec",
    "create_transport",
]
