"""How a fleet is asked for: the model's connection with the user's overrides, ids, options, delivery.

:class:`FleetSetup` is everything ``Create Fleet`` (and ``Import Devices From CSV``, the ``iotix`` command,
a test) says about a new fleet besides its model. It is checked when it is made; :meth:`Simulator.build_fleet`
turns a model and a setup into a fleet on the runtime loop (it picks the free name and renders the ids there,
where the fleets are).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from iotix.errors import ConfigurationError
from iotix.fleet.delivery import DeliverySettings
from iotix.fleet.fleet import FleetOptions, format_device_id
from iotix.model.types import DeviceModel
from iotix.transport import Credentials
from iotix.transport.base import check_port


@dataclass(frozen=True)
class ConnectionOverrides:
    """What the user changes of a model's ``connection``: target, QoS and login."""

    host: str = ""
    port: int | None = None
    qos: int | None = None
    username: str = ""
    password: str | None = field(default=None, repr=False)  # never in a repr, a log or a message

    def __post_init__(self) -> None:
        if self.qos is not None and self.qos not in (0, 1, 2):
            raise ConfigurationError(f"qos must be 0, 1 or 2, got {self.qos}.")
        if self.port is not None:
            check_port(self.port)

    def apply(self, connection: Mapping[str, Any]) -> dict[str, Any]:
        """The model's connection with these overrides (a given ``host`` replaces the model's ``broker``)."""
        out = dict(connection)
        if self.host:
            out["host"] = self.host
            out.pop("broker", None)
        if self.port is not None:
            out["port"] = self.port
        if self.qos is not None:
            out["qos"] = self.qos
        return out

    def credentials(self, connection: Mapping[str, Any]) -> Credentials:
        """The login: the overrides where given, else the connection's ``username`` and ``password``."""
        return Credentials(
            self.username or connection.get("username"),
            self.password if self.password is not None else connection.get("password"),
        )


@dataclass(frozen=True)
class FleetSetup:
    """Everything about a new fleet but its model; see :meth:`iotix.fleet.simulator.Simulator.build_fleet`.

    - ``name``: empty for the model id (``-2``, ``-3``, ... appended when taken);
    - ``device_ids`` (given ids, e.g. from a CSV file) or ``count`` devices named by ``id_pattern``
      (``{index}``, ``{n}``, ``{fleet}``, ``{model}``; default ``<name>-{index}``);
    - ``delivery``: overrides of the model's ``connection.retry``, ``circuitBreaker`` and ``errorThreshold``
      (keyword arguments of :meth:`DeliverySettings.from_connection`; None values are left out).
    """

    name: str = ""
    count: int = 1
    id_pattern: str = ""
    device_ids: Sequence[str] | None = None
    seed: int | str | None = None
    connection: ConnectionOverrides = field(default_factory=ConnectionOverrides)
    options: FleetOptions = field(default_factory=FleetOptions)
    delivery: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.device_ids is None and self.count < 1:
            why = ": a fleet of no devices would start, run and pass while testing nothing" if self.count == 0 else ""
            raise ConfigurationError(f"count must be at least 1, got {self.count}{why}.")
        if self.device_ids is not None and not self.device_ids:
            raise ConfigurationError("no device ids given: a fleet of no devices would test nothing.")

    def resolve(self, model: DeviceModel) -> tuple[dict[str, Any], Credentials, DeliverySettings]:
        """The fleet's connection, login and delivery settings (pure: no simulator needed)."""
        connection = self.connection.apply(model.connection)
        overrides = {k: v for k, v in self.delivery.items() if v is not None}
        return (
            connection,
            self.connection.credentials(connection),
            DeliverySettings.from_connection(connection, **overrides),
        )

    def ids(self, fleet_name: str, model: DeviceModel) -> list[str]:
        if self.device_ids is not None:
            return list(self.device_ids)
        pattern = self.id_pattern or f"{fleet_name}-{{index}}"
        return [format_device_id(pattern, i, fleet_name, model.id) for i in range(self.count)]
