"""The one simulator of a process: its fleets, the shared scheduler and the periodic housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from iotix.errors import ConfigurationError, NotFoundError
from iotix.fdlimit import check_descriptors
from iotix.fleet.delivery import DeliverySettings
from iotix.fleet.device import Device
from iotix.fleet.fleet import Credentials, Fleet, FleetOptions
from iotix.fleet.network import Network
from iotix.fleet.scheduler import DEFAULT_TICK_S, Scheduler
from iotix.fleet.setup import FleetSetup
from iotix.model.types import DeviceModel
from iotix.observe.series import MetricsHub

if TYPE_CHECKING:
    from iotix.cluster.sharded import ShardedFleet

log = logging.getLogger("iotix.simulator")
PERIODIC_S = 0.1


class Simulator:
    """Owns every fleet of the process. All methods run on the runtime loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = DEFAULT_TICK_S) -> None:
        self.loop = loop
        self.scheduler = Scheduler(loop, tick)
        self.fleets: dict[str, Fleet] = {}
        #: fleets whose devices run in shards in other processes (iotix.cluster), by name
        self.sharded: dict[str, ShardedFleet] = {}
        #: network faults of the fleets and the standalone fault proxies
        self.network = Network(self)
        #: per-second time series of every fleet, their sinks (exports) and the published snapshot
        self.metrics = MetricsHub(loop)
        self._periodic: asyncio.Task[None] | None = None

    def _ensure_periodic(self) -> None:
        if self._periodic is None or self._periodic.done():
            self._periodic = self.loop.create_task(self._housekeeping(), name="iotix-housekeeping")

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(PERIODIC_S)
            now = self.loop.time()
            for fleet in list(self.fleets.values()):
                try:
                    fleet.transport.periodic(now)
                except Exception as err:
                    fleet.report_error(f"housekeeping failed: {err!r}")

    # -- fleets ---------------------------------------------------------------------------------------

    def create_fleet(
        self,
        name: str,
        model: DeviceModel,
        device_ids: Sequence[str],
        *,
        seed: int | str | None = None,
        connection: dict[str, Any] | None = None,
        credentials: Credentials | None = None,
        options: FleetOptions | None = None,
        delivery: DeliverySettings | None = None,
        track: bool = True,
    ) -> Fleet:
        """A new fleet, registered; ``track=False`` keeps it out of this process's metrics (a shard: the
        sharded fleet in the coordinating process reads its figures instead)."""
        self.check_name_free(name)
        self.check_ids_free(name, device_ids)
        fleet = Fleet(
            self,
            name,
            model,
            device_ids,
            seed=seed,
            connection=connection,
            credentials=credentials,
            options=options,
            delivery=delivery,
        )
        # Before any device connects: a fleet that cannot have its sockets fails now, not device by device.
        pending = sum(f.transport.descriptors() for f in self.fleets.values() if f.state == "created")
        check_descriptors(name, len(fleet.devices), fleet.transport.descriptors(), pending)
        self.fleets[name] = fleet
        if track:
            self.metrics.track(fleet)
        self._ensure_periodic()
        return fleet

    def free_name(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``, ... : the first that no fleet has."""
        if base not in self.fleets and base not in self.sharded:
            return base
        i = 2
        while f"{base}-{i}" in self.fleets or f"{base}-{i}" in self.sharded:
            i += 1
        return f"{base}-{i}"

    def build_fleet(self, model: DeviceModel, setup: FleetSetup) -> Fleet:
        """Create a fleet of ``model`` as ``setup`` says (free name, ids, connection with overrides)."""
        connection, credentials, delivery = setup.resolve(model)
        name = setup.name or self.free_name(model.id)
        return self.create_fleet(
            name,
            model,
            setup.ids(name, model),
            seed=setup.seed,
            connection=connection,
            credentials=credentials,
            options=setup.options,
            delivery=delivery,
        )

    def check_ids_free(self, name: str, device_ids: Sequence[str]) -> None:
        """Fail when a device id of the new fleet ``name`` is taken by a fleet of this simulator (plain or sharded)."""
        taken = self.device_owner_map()
        clash = [d for d in device_ids if d in taken]
        if clash:
            raise ConfigurationError(
                f"Fleet '{name}': device id '{clash[0]}' is already used by fleet '{taken[clash[0]]}'"
                f"{f' (and {len(clash) - 1} more)' if len(clash) > 1 else ''}; use another id_pattern."
            )

    def check_name_free(self, name: str) -> None:
        existing = self.fleets.get(name) or self.sharded.get(name)
        if existing is not None:
            raise ConfigurationError(
                f"A fleet named '{name}' already exists ({existing.device_count} devices of model "
                f"'{existing.model.id}'); choose another name or delete it first."
            )
        if name in self.network.proxies:
            raise ConfigurationError(
                f"A network fault proxy is named '{name}': fleets and proxies share the names that Chaos keywords "
                "take as targets; choose another fleet name."
            )

    def fleet_names(self) -> list[str]:
        return [*self.fleets, *self.sharded]

    def fleet(self, name: str) -> Fleet:
        """The fleet named ``name``: a plain fleet, or a :class:`~iotix.cluster.sharded.ShardedFleet`, which
        answers the keywords' calls the same way (its methods may be coroutines: the bridge awaits them)."""
        fleet = self.fleets.get(name) or self.sharded.get(name)
        if fleet is None:
            known = ", ".join(sorted(self.fleet_names())) or "none"
            raise NotFoundError(f"No fleet named '{name}' (fleets: {known}).")
        return fleet  # type: ignore[return-value]

    def device_owner_map(self) -> dict[str, str]:
        owners = {d.id: f.name for f in self.fleets.values() for d in f.devices}
        owners.update((d, f.name) for f in self.sharded.values() for d in f.ids)
        return owners

    def sharded_owner(self, device_id: str) -> ShardedFleet | None:
        """The sharded fleet that has ``device_id`` (its device lives in a shard's process), or None."""
        for fleet in self.sharded.values():
            if device_id in fleet.shard_of:
                return fleet
        return None

    def fleet_name_of(self, device_id: str) -> str | None:
        """The name of the fleet that has ``device_id`` (None for a device of no fleet here)."""
        for fleet in self.fleets.values():
            if device_id in fleet.by_id:
                return fleet.name
        sharded = self.sharded_owner(device_id)
        return sharded.name if sharded is not None else None

    def find_device(self, device_id: str) -> Device:
        for fleet in self.fleets.values():
            device = fleet.by_id.get(device_id)
            if device is not None:
                return device
        raise NotFoundError(
            f"No device '{device_id}' in any fleet (fleets: {', '.join(sorted(self.fleets)) or 'none'})."
        )

    async def delete_fleet(self, name: str) -> None:
        fleet = self.fleet(name)
        await fleet.delete()
        self.metrics.untrack(name)
        self.fleets.pop(name, None)
        self.sharded.pop(name, None)

    async def shutdown(self) -> None:
        for fleet in [*self.fleets.values(), *self.sharded.values()]:
            with contextlib.suppress(Exception):
                await fleet.delete()
            self.metrics.untrack(fleet.name)  # its last second reaches the exports before they close
        self.fleets.clear()
        self.sharded.clear()
        self.metrics.close()
        self.network.close()
        self.scheduler.clear()
        if self._periodic is not None:
            self._periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._periodic
