"""One adapter per protocol behind one interface (:class:`iotix.transport.base.Transport`)."""

from iotix.transport.base import Transport, TransportError, create_transport

__all__ = ["Transport", "TransportError", "create_transport"]
