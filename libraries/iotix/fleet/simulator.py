"""The one simulator of a process: its fleets, the shared scheduler and the periodic housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

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

log = logging.getLogger("iotix.simulator")
PERIODIC_S = 0.1


class Simulator:
    """Owns every fleet of the process. All methods run on the runtime loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = DEFAULT_TICK_S) -> None:
        self.loop = loop
        self.scheduler = Scheduler(loop, tick)
        self.fleets: dict[str, Fleet] = {}
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
    ) -> Fleet:
        self.check_name_free(name)
        taken = self.device_owner_map()
        clash = [d for d in device_ids if d in taken]
        if clash:
            raise ConfigurationError(
                f"Fleet '{name}': device id '{clash[0]}' is already used by fleet '{taken[clash[0]]}'"
                f"{f' (and {len(clash) - 1} more)' if len(clash) > 1 else ''}; use another id_pattern."
            )
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
        self.metrics.track(fleet)
        self._ensure_periodic()
        return fleet

    def free_name(self, base: str) -> str:
        """``base``, or ``base-2``, ``base-3``, ... : the first that no fleet has."""
        if base not in self.fleets:
            return base
        i = 2
        while f"{base}-{i}" in self.fleets:
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

    def check_name_free(self, name: str) -> None:
        if name in self.fleets:
            raise ConfigurationError(
                f"A fleet named '{name}' already exists ({len(self.fleets[name].devices)} devices of model "
                f"'{self.fleets[name].model.id}'); choose another name or delete it first."
            )
        if name in self.network.proxies:
            raise ConfigurationError(
                f"A network fault proxy is named '{name}': fleets and proxies share the names that Chaos keywords "
                "take as targets; choose another fleet name."
            )

    def fleet_names(self) -> list[str]:
        return list(self.fleets)

    def fleet(self, name: str) -> Fleet:
        try:
            return self.fleets[name]
        except KeyError:
            known = ", ".join(sorted(self.fleets)) or "none"
            raise NotFoundError(f"No fleet named '{name}' (fleets: {known}).") from None

    def device_owner_map(self) -> dict[str, str]:
        return {d.id: f.name for f in self.fleets.values() for d in f.devices}

    def fleet_name_of(self, device_id: str) -> str | None:
        """The name of the fleet that has ``device_id`` (None for a device of no fleet here)."""
        for fleet in self.fleets.values():
            if device_id in fleet.by_id:
                return fleet.name
        return None

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
        del self.fleets[name]

    async def shutdown(self) -> None:
        for fleet in list(self.fleets.values()):
            with contextlib.suppress(Exception):
                await fleet.delete()
            self.metrics.untrack(fleet.name)  # its last second reaches the exports before they close
        self.fleets.clear()
        self.metrics.close()
        self.network.close()
        self.scheduler.clear()
        if self._periodic is not None:
            self._periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._periodic
