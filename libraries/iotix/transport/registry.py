"""The protocols a fleet can speak, each imported only when a fleet uses it.

A protocol is a module with a ``create(spec, links, outcomes) -> Transport`` function (it may choose among
several classes, e.g. CoAP client or server mode). Adding a fifth protocol is that module, one line in
:data:`PROTOCOLS` and its unit tests against a fake outcomes object.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from iotix.transport.base import Link, Outcomes, Transport, TransportError, TransportSpec

#: protocol name (as in a model's ``protocol``) -> module that implements it
PROTOCOLS: dict[str, str] = {
    "mqtt": "iotix.transport.mqtt",
    "coap": "iotix.transport.coap",
    "http": "iotix.transport.http",
    "kafka": "iotix.transport.kafka",
}


def create_transport(spec: TransportSpec, links: Sequence[Link], outcomes: Outcomes) -> Transport:
    """The adapter for ``spec.model.protocol``."""
    module_name = PROTOCOLS.get(spec.protocol)
    if module_name is None:
        raise TransportError(
            f"Fleet '{spec.fleet}': protocol '{spec.protocol}' of model '{spec.model.id}' is not supported "
            f"(supported: {', '.join(PROTOCOLS)})."
        )
    module = importlib.import_module(module_name)
    transport: Transport = module.create(spec, links, outcomes)
    return transport
