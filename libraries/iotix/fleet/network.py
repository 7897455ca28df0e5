"""Network faults of fleets and of standalone fault proxies: what the Chaos keywords do, on the runtime loop.

A fault target is a fleet (its :class:`~iotix.fault.faultset.FaultSet` sits in the data path of its
transport) or a standalone proxy (:mod:`iotix.fault.proxy`) in front of any address. Faults on chosen devices
follow the selection rules of dropouts: ``devices`` by id, else ``count`` or ``percentage`` of the fleet chosen
with ``seed`` (the same seed picks the same devices).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iotix.errors import NotFoundError
from iotix.fault.faultset import FaultSet
from iotix.fault.profiles import profile as link_profile
from iotix.fault.profiles import profile_faults
from iotix.fault.proxy import TcpProxy, UdpProxy, start_proxy
from iotix.fault.spec import FaultError, parse_fault
from iotix.fleet.timeline import DropoutSettings, choose_dropout_devices

if TYPE_CHECKING:
    from iotix.fleet.fleet import Fleet
    from iotix.fleet.simulator import Simulator

#: Names of the faults `Partition Devices` adds start with this; `Heal Partition` removes them.
PARTITION = "partition"


@dataclass(frozen=True)
class DeviceSelection:
    """Which devices of a fleet a fault acts on: ``devices`` by id, else ``count`` or ``percentage`` with
    ``seed`` (as for dropouts); nothing given means the whole target."""

    devices: tuple[str, ...] | None = None
    count: int | None = None
    percentage: float | None = None
    seed: int | str | None = None

    @property
    def given(self) -> bool:
        return self.devices is not None or self.count is not None or self.percentage is not None


ALL_DEVICES = DeviceSelection()


class Network:
    """The fault targets of one simulator: its fleets and the standalone proxies started in it."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.proxies: dict[str, TcpProxy | UdpProxy] = {}
        self._partitions = itertools.count(1)

    # -- targets -------------------------------------------------------------------------------------------

    def target(self, name: str) -> tuple[FaultSet, Fleet | None]:
        """The fault set of the fleet or proxy ``name``, and the fleet (None for a proxy)."""
        if name in self.sim.sharded:
            raise FaultError(
                f"Fleet '{name}' is sharded: this keyword does not act on sharded fleets yet; Add Network Fault, "
                "Remove Network Fault, Clear Network Faults and Get Network Faults do."
            )
        fleet = self.sim.fleets.get(name)
        if fleet is not None:
            if fleet.faults is None:
                raise FaultError(
                    f"Fleet '{name}' was created with fault_layer=False, so no network fault can act on it; "
                    "create it with the fault layer (the default) to add faults."
                )
            return fleet.faults, fleet
        proxy = self.proxies.get(name)
        if proxy is not None:
            return proxy.faults, None
        fleets = ", ".join(sorted(self.sim.fleets)) or "none"
        proxies = ", ".join(sorted(self.proxies)) or "none"
        raise NotFoundError(
            f"No fleet or network fault proxy named '{name}' (fleets: {fleets}; proxies: {proxies}). "
            "Create the fleet, or start a proxy with Start Network Fault Proxy."
        )

    def select(self, name: str, selection: DeviceSelection) -> list[str] | None:
        """The ids a fault on ``name`` acts on (None: the whole target), checked against the target; a fleet
        whose devices share pooled connections refuses them when the fault is added (FaultSet.add)."""
        fleet = self.target(name)[1]
        if not selection.given:
            return None
        if fleet is None:
            raise FaultError(
                f"Proxy '{name}' has no devices: its faults act on every connection through it; "
                "leave out devices, count and percentage."
            )
        if selection.devices is not None:
            unknown = [d for d in selection.devices if d not in fleet.by_id]
            if unknown:
                raise NotFoundError(
                    f"Fleet '{name}' has no device '{unknown[0]}'"
                    f"{f' (and {len(unknown) - 1} more unknown ids)' if len(unknown) > 1 else ''}; "
                    "Get Devices lists its ids."
                )
            if not selection.devices:
                raise FaultError(f"Fleet '{name}': the list of devices is empty; name at least one device.")
            return list(dict.fromkeys(selection.devices))
        settings = DropoutSettings(count=selection.count, percentage=selection.percentage)
        return choose_dropout_devices([d.id for d in fleet.devices], settings, selection.seed)

    # -- faults --------------------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        kind: str,
        settings: Mapping[str, Any],
        selection: DeviceSelection = ALL_DEVICES,
        *,
        fault_name: str | None = None,
    ) -> str:
        """Add a fault of ``kind`` to the target ``name``; returns the fault's name. Nothing changes on error.

        On a sharded fleet (a coroutine then) the devices are chosen over the whole fleet, and every shard
        adds the same fault for its chosen devices."""
        sharded = self.sim.sharded.get(name)
        if sharded is not None:
            return sharded.add_fault(kind, settings, selection, fault_name)  # type: ignore[return-value]
        faults, _ = self.target(name)
        spec = parse_fault(kind, settings, name=fault_name, target=faults.target, datagram=faults.datagram)
        owners = self.select(name, selection)
        return faults.add(spec, owners).spec.name

    def remove(self, name: str, fault: str) -> Any:
        sharded = self.sim.sharded.get(name)
        if sharded is not None:
            return sharded.fault_call("remove", fault)
        self.target(name)[0].remove(fault)
        return None

    def clear(self, name: str) -> Any:
        sharded = self.sim.sharded.get(name)
        if sharded is not None:
            return sharded.fault_call("clear")
        return self.target(name)[0].clear()

    def describe(self, name: str) -> Any:
        sharded = self.sim.sharded.get(name)
        if sharded is not None:
            return sharded.fault_call("describe")
        return self.target(name)[0].describe()

    def history(self, name: str) -> Any:
        sharded = self.sim.sharded.get(name)
        if sharded is not None:
            return sharded.fault_call("history")
        return self.target(name)[0].history()

    def apply_profile(
        self,
        name: str,
        profile: str,
        selection: DeviceSelection = ALL_DEVICES,
        *,
        duration: Any = None,
    ) -> list[str]:
        """Add the faults of a named link profile to ``name``; returns their names. All or nothing."""
        faults, _ = self.target(name)
        owners = self.select(name, selection)
        profile = link_profile(profile).name  # 3G and 3g are one profile
        specs = []
        for kind, settings, direction in profile_faults(profile, datagram=faults.datagram):
            extra: dict[str, Any] = {"direction": direction}
            if duration is not None:
                extra["duration"] = duration
            fault_name = f"{profile}-{kind}-{direction}"
            specs.append(
                parse_fault(
                    kind, {**settings, **extra}, name=fault_name, target=faults.target, datagram=faults.datagram
                )
            )
        clash = [s.name for s in specs if s.name in faults]
        if clash:
            raise FaultError(
                f"{faults.target.capitalize()} already has the faults of profile '{profile}' ({', '.join(clash)}); "
                "remove them (Clear Network Faults) before applying it again."
            )
        return [faults.add(spec, owners).spec.name for spec in specs]

    # -- partitions and outages -------------------------------------------------------------------------------

    def partition(self, fleet: str, selection: DeviceSelection, duration: Any = None) -> list[str]:
        """Cut the chosen devices off (a blackhole both ways); returns their ids."""
        if not selection.given:
            raise FaultError(
                f"Partition Devices on fleet '{fleet}' needs the devices to cut off: give count, percentage or "
                "devices (to cut off the whole fleet use Take Target Down mode=blackhole)."
            )
        faults, f = self.target(fleet)
        if f is None:
            raise FaultError(f"'{fleet}' is a proxy, not a fleet: partitions cut off devices of a fleet.")
        settings: dict[str, Any] = {"direction": "both"}
        if duration is not None:
            settings["duration"] = duration
        spec = parse_fault(
            "blackhole",
            settings,
            name=f"{PARTITION}-{next(self._partitions)}",
            target=faults.target,
            datagram=faults.datagram,
        )
        owners = self.select(fleet, selection)
        assert owners is not None  # a selection was given
        faults.add(spec, owners)
        return owners

    def heal(self, fleet: str) -> int:
        """Remove every partition of ``fleet``; returns how many there were."""
        faults, _ = self.target(fleet)
        names = [f.name for f in faults.faults if f.name.startswith(f"{PARTITION}-")]
        for n in names:
            faults.remove(n)
        return len(names)

    def take_down(self, name: str, mode: str, duration: float | None) -> None:
        self.target(name)[0].take_down(mode, duration)

    def bring_up(self, name: str) -> None:
        self.target(name)[0].bring_up()

    # -- standalone proxies -------------------------------------------------------------------------------

    async def start_proxy(
        self,
        upstream: str,
        *,
        protocol: str = "tcp",
        name: str | None = None,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        seed: int | str | None = None,
    ) -> dict[str, Any]:
        taken = self.proxies.keys() | self.sim.fleets.keys()
        if not name:
            name = next(n for n in (f"proxy-{i}" for i in itertools.count(1)) if n not in taken)
        elif name in taken:
            raise FaultError(
                f"A {'proxy' if name in self.proxies else 'fleet'} named '{name}' already exists; "
                "give the proxy another name."
            )
        proxy = await start_proxy(
            self.sim.loop,
            upstream,
            protocol=protocol,
            name=name,
            listen_host=listen_host,
            listen_port=listen_port,
            seed=seed,
        )
        self.proxies[name] = proxy
        return {"name": name, "host": proxy.host, "port": proxy.port, "protocol": protocol, "upstream": upstream}

    def stop_proxy(self, name: str) -> None:
        proxy = self.proxies.pop(name, None)
        if proxy is None:
            raise NotFoundError(
                f"No network fault proxy named '{name}' (proxies: {', '.join(sorted(self.proxies)) or 'none'})."
            )
        proxy.close()

    def close(self) -> None:
        """Stop every standalone proxy (the simulator shuts down)."""
        for name in list(self.proxies):
            with contextlib.suppress(Exception):
                self.proxies.pop(name).close()
