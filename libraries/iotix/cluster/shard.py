"""One shard of a sharded fleet: a plain :class:`~iotix.fleet.simulator.Simulator` with one plain
:class:`~iotix.fleet.fleet.Fleet`, in a process of its own (a Ray actor, see :mod:`iotix.cluster.sharded`).

The actor is threaded (Ray runs its methods in a small pool of threads); each method crosses into the shard's
own IoTix runtime loop through the same bridge the keyword libraries use, so a shard runs exactly the simulator
core a single process runs. Everything a method returns is plain data (dicts, lists, HdrHistogram's encoded
form), never a loop-owned object.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from iotix.fleet.delivery import DeliverySettings
from iotix.fleet.device import DeviceState
from iotix.fleet.fleet import Credentials, Fleet, FleetOptions
from iotix.fleet.simulator import Simulator
from iotix.fleet.timeline import DropoutPlan, DropoutSettings, LaunchSettings
from iotix.model.types import DeviceModel
from iotix.observe.histogram import LatencyRecorder
from iotix.runtime import get_runtime

#: Seconds a shard's bridge call may take (a stop drains the fleet; the keyword's own timeout bounds waits).
CALL_TIMEOUT_S = 120.0


class ShardWorker:
    """The shard's side: create, start, read and stop its fleet. Ray makes it an actor (``remote``)."""

    def __init__(self) -> None:
        self.runtime = get_runtime()
        self.sim: Simulator = self.runtime.call(_new_simulator, timeout=CALL_TIMEOUT_S)
        self.fleet: Fleet | None = None

    def _call(self, fn: Any, *args: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        return self.runtime.call(fn, *args, timeout=timeout)

    def _fleet(self) -> Fleet:
        assert self.fleet is not None, "create() first"
        return self.fleet

    # -- life -------------------------------------------------------------------------------------------------

    def pid(self) -> int:
        return os.getpid()

    def create(
        self,
        name: str,
        model: DeviceModel,
        device_ids: Sequence[str],
        index_base: int,
        seed: int | str | None,
        connection: dict[str, Any],
        credentials: Credentials,
        options: FleetOptions,
        delivery: DeliverySettings,
    ) -> dict[str, Any]:
        """Create the shard's fleet (devices ``index_base`` ... of the sharded fleet); returns its target."""
        sim = self.sim

        def make() -> Fleet:
            return sim.create_fleet(
                name,
                model,
                device_ids,
                seed=seed,
                connection=connection,
                credentials=credentials,
                options=replace(options, index_base=index_base),
                delivery=delivery,
                track=False,
            )

        self.fleet = self._call(make)
        return {"target": self.fleet.target, "pid": os.getpid(), "request_based": self.fleet.request_based}

    def start(self, launch: LaunchSettings, offsets: Sequence[float], start_at: float) -> None:
        fleet = self._fleet()
        self._call(fleet.start, launch, offsets, start_at)

    def stop(self) -> dict[str, Any]:
        fleet = self._fleet()

        async def stop() -> dict[str, Any]:
            await fleet.stop()
            return shard_stats(fleet)

        return self._call(stop)

    def delete(self) -> None:
        if self.fleet is not None:
            name, self.fleet = self.fleet.name, None
            self._call(self.sim.delete_fleet, name)

    def shutdown(self) -> None:
        """Delete the fleet and stop the runtime (before the actor is killed)."""
        with contextlib.suppress(Exception):
            self.delete()
        with contextlib.suppress(Exception):
            self._call(self.sim.shutdown)

    # -- reading ------------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What the coordinator polls every second: state, launch progress, errors and the metrics snapshot
        (its latency intervals are taken: only the coordinator reads them)."""
        fleet = self._fleet()

        def status() -> dict[str, Any]:
            return {
                "state": fleet.state,
                "stopping": fleet.stopping,
                "launched": fleet.launched,
                "running": fleet.count_in(DeviceState.RUNNING),
                "errors": fleet.take_errors(),
                "snapshot": fleet.metrics_snapshot().encoded(),
            }

        return self._call(status)

    def stats(self) -> dict[str, Any]:
        return self._call(shard_stats, self._fleet())

    def call(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        """Run one of :data:`FLEET_CALLS` on the shard's fleet (awaited when it is a coroutine)."""
        if method not in FLEET_CALLS:
            raise ValueError(f"not a shard call: {method}")
        return self._call(FLEET_CALLS[method], self._fleet(), *args, timeout=timeout)

    def network(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run a method of the shard's :class:`~iotix.fleet.network.Network` (faults) with the fleet's name."""
        net = self.sim.network
        return self.runtime.call(getattr(net, method), self._fleet().name, *args, timeout=CALL_TIMEOUT_S, **kwargs)


def _new_simulator() -> Simulator:
    return Simulator(asyncio.get_running_loop())


def shard_stats(fleet: Fleet) -> dict[str, Any]:
    """The fleet's stats, plus its cumulative send-lateness histogram (encoded) for an exact merge."""
    stats = fleet.stats()
    stats["_lateness"] = fleet.lateness.encode() if fleet.lateness.count else None
    request = getattr(fleet.transport, "latency", None)
    if isinstance(request, LatencyRecorder) and request.count:
        stats["_request"] = request.encode()
    return stats


def _device_status(fleet: Fleet, device_id: str) -> dict[str, Any]:
    return fleet.device_status(fleet.device(device_id))


def _set_override(fleet: Fleet, device_id: str, field: str, value: Any) -> None:
    fleet.device(device_id).values.set_override(field, value)


def _clear_override(fleet: Fleet, device_id: str, field: str) -> None:
    fleet.device(device_id).values.clear_override(field)


def _commands(fleet: Fleet, device_id: str) -> list[dict[str, Any]]:
    return [dict(c) for c in fleet.device(device_id).commands or []]


def _expected_since(fleet: Fleet, listening_since: float | None) -> dict[str, tuple[int, int]]:
    """Per device ``[first, stop)`` as a receiver listening since wall-clock ``listening_since`` expects it:
    from seq 0 when it listened before the device started, else from the first that arrives (-1)."""
    since = None if listening_since is None else listening_since - time.time() + asyncio.get_running_loop().time()
    return {
        d.id: (0 if d.started_at > 0 and since is not None and d.started_at >= since else -1, d.seq)
        for d in fleet.devices
    }


def _drop(fleet: Fleet, settings: DropoutSettings, plan: DropoutPlan, start_at: float) -> list[str]:
    """Drop this shard's devices of the sharded fleet's one ``plan``, counted from wall-clock ``start_at``."""
    return fleet.start_dropout(settings, None, plan, start_at)


#: What the coordinator may run on a shard's fleet by name: plain fleet methods, and a few by device id.
FLEET_CALLS: dict[str, Any] = {
    "device_ids": Fleet.device_ids,
    "count_states": Fleet.count_states,
    "count_in": Fleet.count_in,
    "expected_sequences": Fleet.expected_sequences,
    "devices_in_error": Fleet.devices_in_error,
    "restore_dropped": Fleet.restore_dropped,
    "wait_for_dropout": Fleet.wait_for_dropout,
    "dropout_report": Fleet.dropout_report,
    "device_status": _device_status,
    "set_override": _set_override,
    "clear_override": _clear_override,
    "commands": _commands,
    "drop": _drop,
    "expected_since": _expected_since,
}
