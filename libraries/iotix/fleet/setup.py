"""How a fleet is asked for: the model's connection with the user's overrides, ids, options, delivery.

:class:`FleetSetup` is everything ``Create Fleet`` (and ``Import Devices From CSV``, the ``iotix`` command,
a test) says about a new fleet besides its model. It is checked when it is made; :meth:`Simulator.build_fleet`
turns a model and a setup into a fleet on the runtime loop (it picks the free name and renders the ids there,
where the fleets are).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from iotix.errors import ConfigurationError
from iotix.fleet.delivery import DeliverySettings
from iotix.fleet.fleet import FleetOptions, format_device_id
from iotix.model.types import DeviceModel
from iotix.transport import Credentials
from iotix.transport.base import check_port

#: At most this many source addresses (a /24): more does not help one machine, and a typo such as
#: ``127.0.0.2-127.0.9.9`` would otherwise ask for thousands.
MAX_SOURCE_ADDRESSES = 256
#: Protocols whose devices may be spread over several targets and source addresses (one connection per device).
MULTI_TARGET_PROTOCOLS = ("mqtt",)
_BRACKETED = re.compile(r"\[([^\]]+)\](?::(.*))?")

#: A target: host and port (None: the ``port=`` given, else the model's, else the protocol's default).
Target = tuple[str, int | None]


def parse_targets(value: str) -> list[Target]:
    """The targets in a ``host=`` value: ``host``, ``host:port`` or ``[ipv6]:port``, separated by commas.

    ``127.0.0.1:1883,127.0.0.1:1884,broker-c`` gives ``[("127.0.0.1", 1883), ("127.0.0.1", 1884),
    ("broker-c", None)]``. A bare IPv6 address (``::1``) has no port; write ``[::1]:1883`` for one.
    Raises a :class:`ConfigurationError` naming the entry and the whole value.
    """
    targets: list[Target] = []
    for raw in value.split(","):
        entry = raw.strip()
        where = f"host '{value}'" if entry == value.strip() else f"host entry '{entry}' of '{value}'"
        if not entry:
            raise ConfigurationError(
                f"host '{value}' has an empty entry: separate targets with single commas (host:port,host:port)."
            )
        if "://" in entry or "/" in entry:
            raise ConfigurationError(f"{where} is not a host: give host or host:port, without a scheme or path.")
        port_text: str | None = None
        bracketed = _BRACKETED.fullmatch(entry)
        if bracketed:
            host, port_text = bracketed.group(1), bracketed.group(2)
        elif entry.count(":") == 1:
            host, port_text = entry.split(":")
        else:
            host = entry  # a name, an IPv4 address, or a bare IPv6 address
        if not host:
            raise ConfigurationError(f"{where} has no host name before its port.")
        port: int | None = None
        if port_text is not None:
            if not port_text.isdigit():
                raise ConfigurationError(f"{where}: the port must be a number between 1 and 65535, got '{port_text}'.")
            port = check_port(int(port_text), f"{where}: the port")
        targets.append((host, port))
    return targets


def _ipv4(text: str, value: str) -> ipaddress.IPv4Address:
    try:
        address = ipaddress.IPv4Address(text.strip())
    except ValueError:
        raise ConfigurationError(
            f"source_addresses '{value}': '{text.strip()}' is not an IPv4 address (write 127.0.0.2-127.0.0.9, "
            "a comma separated list, or one address)."
        ) from None
    if address.is_unspecified or address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        raise ConfigurationError(
            f"source_addresses '{value}': {address} cannot be the source address of a connection; give addresses "
            "of this machine (any 127.x.y.z for a local broker)."
        )
    return address


def parse_source_addresses(value: str) -> tuple[str, ...]:
    """The addresses in a ``source_addresses=`` value: ``127.0.0.2-127.0.0.9`` (a range, both ends included),
    ``10.0.0.5,10.0.0.6`` (a list; ranges may be listed too) or one address. IPv4 only, each address once, at
    most :data:`MAX_SOURCE_ADDRESSES`. Raises a :class:`ConfigurationError` naming the value."""
    out: list[str] = []
    for raw in value.split(","):
        if not raw.strip():
            raise ConfigurationError(
                f"source_addresses '{value}' has an empty entry: separate addresses with single commas."
            )
        first, dash, last = raw.partition("-")
        start = _ipv4(first, value)
        end = _ipv4(last, value) if dash else start
        if end < start:
            raise ConfigurationError(
                f"source_addresses '{value}': the range {raw.strip()} runs backwards; write the lower address first."
            )
        count = int(end) - int(start) + 1
        if len(out) + count > MAX_SOURCE_ADDRESSES:
            raise ConfigurationError(
                f"source_addresses '{value}' gives {len(out) + count} or more addresses, more than "
                f"{MAX_SOURCE_ADDRESSES}: each address already holds 28,232 connections per target."
            )
        out.extend(str(ipaddress.IPv4Address(int(start) + i)) for i in range(count))
    repeated = sorted({a for a in out if out.count(a) > 1}, key=ipaddress.IPv4Address)
    if repeated:
        raise ConfigurationError(f"source_addresses '{value}' names {', '.join(repeated)} more than once.")
    return tuple(out)


@dataclass(frozen=True)
class ConnectionOverrides:
    """What the user changes of a model's ``connection``: target(s), source addresses, QoS and login.

    ``host`` may name several targets (``h1:1883,h2:1884``, see :func:`parse_targets`): device ``i`` (its
    global index) connects to target ``i mod n``; ``source_addresses`` (see :func:`parse_source_addresses`):
    device ``i`` binds its socket to address ``i mod m``. Both are for MQTT fleets only (checked in
    :meth:`FleetSetup.resolve`, which knows the protocol).
    """

    host: str = ""
    port: int | None = None
    qos: int | None = None
    username: str = ""
    password: str | None = field(default=None, repr=False)  # never in a repr, a log or a message
    source_addresses: str = ""

    def __post_init__(self) -> None:
        if self.qos is not None and self.qos not in (0, 1, 2):
            raise ConfigurationError(f"qos must be 0, 1 or 2, got {self.qos}.")
        if self.port is not None:
            check_port(self.port)
        if self.host:
            parse_targets(self.host)
        if self.source_addresses:
            parse_source_addresses(self.source_addresses)

    def apply(self, connection: Mapping[str, Any]) -> dict[str, Any]:
        """The model's connection with these overrides (a given ``host`` replaces the model's ``broker``).

        A given host with a port or several targets is split: ``host`` and ``port`` become the first target's, and
        with several targets ``targets`` lists them all as ``(host, port or None)`` (None: the protocol's
        default port). Source addresses become ``sourceAddresses``.
        """
        out = dict(connection)
        if self.host:
            out["host"] = self.host
            out.pop("broker", None)
        if self.port is not None:
            out["port"] = self.port
        if self.qos is not None:
            out["qos"] = self.qos
        if self.host and ("," in self.host or ":" in self.host or "[" in self.host):
            default = out.get("port")
            targets = [(h, p if p is not None else default) for h, p in parse_targets(self.host)]
            out["host"], first_port = targets[0]
            if first_port is not None:
                out["port"] = first_port
            if len(targets) > 1:
                out["targets"] = tuple(targets)
            else:
                out.pop("targets", None)
        if self.source_addresses:
            out["sourceAddresses"] = parse_source_addresses(self.source_addresses)
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
        check_multi_target(connection, model, self.name or model.id)
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


def check_multi_target(connection: Mapping[str, Any], model: DeviceModel, fleet: str) -> None:
    """Several targets and source addresses are for MQTT fleets (one connection per device) only: a clear
    :class:`ConfigurationError` naming the fleet otherwise."""
    if model.protocol in MULTI_TARGET_PROTOCOLS:
        return
    targets = connection.get("targets")
    if targets:
        listed = ", ".join(f"{h}:{p}" if p is not None else h for h, p in targets)
        raise ConfigurationError(
            f"host names {len(targets)} targets ({listed}), but several targets are supported for MQTT fleets "
            f"only and fleet '{fleet}' is a {model.protocol} fleet (model '{model.id}'). Give one host, or create "
            "one fleet per target."
        )
    if connection.get("sourceAddresses"):
        raise ConfigurationError(
            "source_addresses are supported for MQTT fleets only (one connection per device), and fleet "
            f"'{fleet}' is a {model.protocol} fleet (model '{model.id}'); leave them out."
        )
