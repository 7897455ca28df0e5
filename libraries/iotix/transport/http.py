"""HTTP devices: the registry's entry for protocol ``http`` and the generic flow.

:func:`create` picks the class from the fleet's connection, as ``flow`` and ``telemetryOver`` say:

- ``flow: generic`` (the default): :class:`GenericHttpTransport`, below;
- ``flow: iotflow``: :class:`~iotix.transport.iotflow.IoTFlowTransport` (register, then telemetry by POST);
- ``flow: iotflow`` with ``telemetryOver: mqtt``: :class:`~iotix.transport.iotflow.HybridIoTFlowTransport`
  (register over HTTP, then telemetry over MQTT).

All of them share one pooled aiohttp client per fleet, its request FIFO, its outcomes and its health checks
(:mod:`iotix.transport.http_pool`, which documents them).

Generic flow (``flow: generic``)
    Each message is a ``method`` request to the device's ``url`` with ``headers`` and the model's payload
    envelope, or ``bodyTemplate`` rendered with ``${deviceId}``, ``${seq}``, ``${ts}`` and the field values.
    ``token`` (or the fleet's password, a Robot ``Secret``) is sent as ``Authorization: Bearer`` unless
    ``headers`` set ``Authorization`` themselves (they may use ``${token}``). There is no connection to lose:
    a dropped device just stops sending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from yarl import URL

from iotix.behavior import Template, compile_template, format_embedded
from iotix.transport.base import Link, Outcomes, TransportSpec
from iotix.transport.http_pool import (
    HEALTH_INTERVAL_S,
    Encoder,
    HttpConn,
    HttpTransportBase,
    as_headers,
    binary_fields,
    default_content_type,
    override_host_port,
    to_json,
    with_base64,
)
from iotix.transport.iotflow import HybridIoTFlowTransport, IoTFlowTransport, forget_api_keys, iso_utc

if TYPE_CHECKING:
    from iotix.model.types import DeviceModel

__all__ = [
    "HEALTH_INTERVAL_S",
    "GenericHttpTransport",
    "HttpTransportBase",
    "HybridIoTFlowTransport",
    "IoTFlowTransport",
    "create",
    "default_content_type",
    "forget_api_keys",
    "iso_utc",
    "make_template_encoder",
    "override_host_port",
]


def make_template_encoder(
    template: Template, model: DeviceModel, fleet_name: str, index_of: Mapping[str, Any]
) -> Encoder:
    """``bodyTemplate`` rendered per message: a string as text, anything else as compact JSON.

    ``index_of`` maps device ids to links (for ``${index}``); binary fields are base64 text.
    """
    binary = binary_fields(model)
    as_text = isinstance(template.template, str)
    wants_index = "index" in template.names
    fixed = {"modelId": model.id, "fleet": fleet_name}

    def encode_template(device_id: str, seq: int, ts_ms: int, values: dict[str, Any]) -> bytes:
        variables = with_base64(values, binary) if binary else dict(values)
        variables.update(fixed)
        variables["deviceId"], variables["seq"], variables["ts"] = device_id, seq, ts_ms
        if wants_index:
            variables["index"] = index_of[device_id].index
        rendered = template.render(variables)
        return (format_embedded(rendered) if as_text else to_json(rendered)).encode()

    return encode_template


class GenericHttpTransport(HttpTransportBase):
    """``flow: generic``: each message is one ``method`` request to the device's URL (see the module docstring)."""

    def __init__(self, spec: TransportSpec, links: Sequence[Link], outcomes: Outcomes, **pool: Any) -> None:
        super().__init__(spec, links, outcomes, **pool)
        self.method: str = str(spec.connection.get("method", "POST")).upper()

    def make_encoder(self) -> Encoder | None:
        body = self.spec.connection.get("bodyTemplate")
        if body is None:
            return None
        index_of = {link.id: link for link in self.links}
        return make_template_encoder(compile_template(body), self.spec.model, self.spec.fleet, index_of)

    async def _connect_device(self, link: Link, conn: HttpConn) -> None:
        """Render the device's own URL and headers once, when they name the device but not the request."""
        if conn.url is None and self._url.per_device and not self._url.per_request:
            conn.url = URL(format_embedded(self._url.render(link)))
        if conn.headers is None and self._headers.per_device and not self._headers.per_request:
            conn.headers = as_headers(self._headers.render(link))

    def _route(self, kind: int, link: Link, conn: HttpConn) -> tuple[str, URL, dict[str, str] | None]:
        url = conn.url or self._shared_url
        if url is None:  # the URL uses ${seq} or ${ts}
            url = URL(format_embedded(self._url.render(link)))
        headers = conn.headers
        if headers is None and self._headers.per_request:
            headers = as_headers(self._headers.render(link))
        return self.method, url, headers


def create(spec: TransportSpec, links: Sequence[Link], outcomes: Outcomes) -> HttpTransportBase:
    """The registry's entry (:mod:`iotix.transport.registry`): the class that the connection's flow names.

    The pool's health interval is this module's ``HEALTH_INTERVAL_S``, read at each call.
    """
    connection = spec.connection
    cls: type[HttpTransportBase] = GenericHttpTransport
    if connection.get("flow", "generic") == "iotflow":
        cls = HybridIoTFlowTransport if connection.get("telemetryOver", "http") == "mqtt" else IoTFlowTransport
    return cls(spec, links, outcomes, health_interval_s=HEALTH_INTERVAL_S)
