"""What the two modes of CoAP devices share: the settings they read and their UDP helpers.

:class:`CoapTransport` is the base of :class:`iotix.transport.coap.CoapClientTransport` and
:class:`iotix.transport.coap_server_mode.CoapServerTransport` (which :func:`iotix.transport.coap.create`
picks by ``connection.mode``): host, port, method, confirmable, ``serverPort``, the RFC 7252 timing and the
content format of the model's payload. :func:`resolve_host` and :func:`enlarge_receive_buffer` serve both
modes and the CoAP sink (:mod:`iotix.services.coap_server`).

A module of its own so that the entry module (:mod:`iotix.transport.coap`, client mode) and the server
mode can both derive from the base without importing each other both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any

from iotix.errors import ConfigurationError
from iotix.transport.base import Link, Outcomes, Transport, TransportError, TransportSpec
from iotix.transport.coap_codec import COAP_PORT, CONTENT_FORMATS, METHOD_CODES, CoapTiming

__all__ = ["RECEIVE_BUFFER_BYTES", "CoapTransport", "enlarge_receive_buffer", "resolve_host"]

# -- sockets (shared by both modes and the CoAP sink) -----------------------------------------------------

#: Receive buffer asked for on the sockets that take bursts (the fleet's client socket, the sink): a fleet
#: whose devices fire in the same tick sends thousands of datagrams at once, and the default buffer
#: (208 KB, ~200 datagrams) drops the rest. The kernel caps it at net.core.rmem_max.
RECEIVE_BUFFER_BYTES = 4 << 20


def enlarge_receive_buffer(sock: Any, size: int = RECEIVE_BUFFER_BYTES) -> None:
    """Ask for a bigger UDP receive buffer (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


async def resolve_host(host: str, port: int) -> tuple[int, tuple[Any, ...]]:
    """(family, sockaddr) of ``host`` for UDP; IP literals without a lookup."""
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(host.strip("[]"))
        return (socket.AF_INET6, (str(ip), port, 0, 0)) if ip.version == 6 else (socket.AF_INET, (str(ip), port))
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, addr = infos[0]
    return family, addr


# -- the base class ----------------------------------------------------------------------------------------


class CoapTransport(Transport):
    """CoAP devices of one fleet, either mode (:mod:`iotix.transport.coap`): the settings both read."""

    protocol = "coap"
    #: network faults act on chosen devices: each device's datagrams pass the fault layer on their own (client
    #: mode: a tap per device on the shared socket; server mode: taps on the device's own socket)
    per_device_faults = True
    #: ``client`` or ``server``
    mode: str = ""
    #: Where the devices send (client) or listen (server) when the connection names no ``host``.
    default_host = "localhost"
    #: Per fleet, CON exchanges open at once (client mode): one per device, clamped to this range.
    MIN_IN_FLIGHT = 256
    MAX_IN_FLIGHT = 8192

    def __init__(self, spec: TransportSpec, links: Sequence[Link], outcomes: Outcomes) -> None:
        super().__init__(spec, links, outcomes)
        conn = spec.connection
        if conn.get("tls") is not None:
            raise ConfigurationError(
                f"Fleet '{spec.fleet}': connection.tls is set, but CoAP over DTLS is not supported: IoTix sends CoAP "
                "over plain UDP only; remove connection.tls from the model"
            )
        if spec.credentials.username or spec.credentials.password is not None:
            raise ConfigurationError(
                f"Fleet '{spec.fleet}': CoAP has no user name/password login; remove connection.username/password "
                "or Create Fleet username=/password="
            )
        self.host: str = str(conn.get("host") or conn.get("broker") or self.default_host)
        self.port: int = int(conn.get("port") or COAP_PORT)
        self.method: str = str(conn.get("method", "POST")).upper()
        if self.method not in METHOD_CODES:
            raise TransportError(f"Fleet '{spec.fleet}': CoAP method must be POST or PUT, got {self.method!r}")
        self.confirmable: bool = bool(conn.get("confirmable", True))
        self.server_port: int = int(conn.get("serverPort", 0) or 0)
        self.timing = CoapTiming(float(conn.get("ackTimeoutMs", 2000)) / 1000.0, int(conn.get("maxRetransmit", 4)))
        self.content_format: int = CONTENT_FORMATS.get(spec.model.payload.format, 42)

    @property
    def url_host(self) -> str:
        """The host as it goes into a URL (an IPv6 address in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(mode=self.mode, method=self.method, confirmable=self.confirmable)
        return info
