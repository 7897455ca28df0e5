"""A fleet whose devices run in N shards, each a Ray actor in its own process (:mod:`iotix.cluster.shard`).

:class:`ShardedFleet` sits in the coordinating process's simulator beside the plain fleets and answers the
keyword libraries as a plain fleet does; its methods that need the shards are coroutines (the bridge awaits
them). The devices are split into contiguous ranges: shard k holds devices ``first_k`` ... of the fleet, with
their global index (so a device is the same device, whatever the shard count: same id, seed and index give the
same payloads and the same target).

- One timeline: `Start Fleet` computes the launch offsets of all devices here and sends every shard its part
  with one wall-clock start time; dropouts are planned here over all devices (the selection is global and
  reproducible) and each shard executes its events on the same clock.
- Figures: every :data:`POLL_S` each shard sends its state and its metrics snapshot (cumulative counters and
  this interval's latency histograms in HdrHistogram's portable form); the sharded fleet's series adds the
  counters and merges the histograms exactly. `Get Fleet Stats` adds up the shards' stats (and merges their
  cumulative histograms).
- A shard whose process dies is reported by the next keyword that touches the fleet, naming the shard and its
  device range; the other shards keep running and `Stop Fleet` stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from iotix.cluster.ray_support import actor_died_error, ensure_ray, ray_module, remote, task_error
from iotix.cluster.shard import ShardWorker
from iotix.errors import ConfigurationError, IoTixError, NotFoundError
from iotix.fault.spec import FaultError, parse_fault
from iotix.fleet.device import DeviceState
from iotix.fleet.network import ALL_DEVICES, DeviceSelection
from iotix.fleet.setup import FleetSetup
from iotix.fleet.timeline import (
    DropoutSettings,
    LaunchSettings,
    choose_dropout_devices,
    launch_offsets,
    plan_dropout,
)
from iotix.model.types import DeviceModel
from iotix.observe.histogram import Histogram
from iotix.observe.series import FleetSnapshot

log = logging.getLogger("iotix.cluster")

#: How often the coordinator reads every shard's state and figures.
POLL_S = 0.5
#: The launch (or dropout) starts this long after the keyword, so that every shard has its part in time.
START_MARGIN_S = 0.5
#: Most shards one fleet may have.
MAX_SHARDS = 256
#: How long a shard may take to delete its fleet and stop its runtime before its process is killed.
SHUTDOWN_TIMEOUT_S = 30.0
#: How long creating one shard (a new process importing IoTix) may take.
CREATE_TIMEOUT_S = 120.0


class ShardError(IoTixError):
    """A shard of a sharded fleet is gone or failed; the message names it and its devices."""

    ROBOT_SUPPRESS_NAME = True


@dataclass
class Shard:
    """The coordinator's view of one shard."""

    index: int
    first: int  # global index of its first device
    ids: list[str]
    actor: Any = None
    pid: int | None = None
    dead: str | None = None  # why it is gone
    status: dict[str, Any] = field(default_factory=dict)
    snapshot: FleetSnapshot = field(default_factory=FleetSnapshot.empty)

    @property
    def alive(self) -> bool:
        return self.dead is None

    def describe(self, count: int) -> str:
        pid = f", pid {self.pid}" if self.pid else ""
        return f"shard {self.index} of {count} (devices {self.ids[0]} .. {self.ids[-1]}{pid})"


def split(count: int, shards: int) -> list[range]:
    """Contiguous ranges of ``count`` devices over ``shards``, sizes differing by at most one."""
    base, extra = divmod(count, shards)
    out, start = [], 0
    for k in range(shards):
        size = base + (1 if k < extra else 0)
        out.append(range(start, start + size))
        start += size
    return out


def check_shards(shards: int, count: int) -> None:
    if not isinstance(shards, int) or shards < 1:
        raise ConfigurationError(f"shards must be a whole number >= 1, got {shards!r}.")
    if shards > MAX_SHARDS:
        raise ConfigurationError(f"shards must be at most {MAX_SHARDS}, got {shards}.")
    if shards > count:
        raise ConfigurationError(f"{shards} shards for {count} devices: every shard needs at least one device.")


async def build_sharded_fleet(
    sim: Any, model: DeviceModel, setup: FleetSetup, shards: int, address: str | None = None
) -> ShardedFleet:
    """Create a fleet of ``model`` as ``setup`` says, split over ``shards`` Ray actors (started here)."""
    connection, credentials, delivery = setup.resolve(model)
    name = setup.name or sim.free_name(model.id)
    sim.check_name_free(name)
    ids = setup.ids(name, model)
    check_shards(shards, len(ids))
    if len(set(ids)) != len(ids):
        raise ConfigurationError(f"Fleet '{name}': device ids must be unique.")
    sim.check_ids_free(name, ids)
    loop = asyncio.get_running_loop()
    cluster = await loop.run_in_executor(None, ensure_ray, address)
    actor_class = remote(ShardWorker, num_cpus=0, max_concurrency=16)
    parts = [Shard(k, r.start, ids[r.start : r.stop]) for k, r in enumerate(split(len(ids), shards))]
    fleet = ShardedFleet(sim, name, model, setup.seed, parts, cluster)
    try:
        for shard in parts:
            shard.actor = actor_class.options(scheduling_strategy="SPREAD").remote()
        created = await fleet._all(
            lambda s: s.actor.create.remote(
                name, model, s.ids, s.first, setup.seed, connection, credentials, setup.options, delivery
            ),
            timeout=CREATE_TIMEOUT_S,
        )
    except BaseException:
        await fleet.delete()
        raise
    for shard, info in zip(parts, created, strict=True):
        shard.pid = info["pid"]
    fleet.connection = connection
    fleet.target = created[0]["target"]
    fleet.request_based = created[0]["request_based"]
    sim.sharded[name] = fleet
    sim.metrics.track(fleet)
    log.info("fleet %s: %d devices in %d shards on Ray (%s)", name, len(ids), shards, cluster)
    return fleet


class ShardedFleet:
    """A fleet over N shards, answering the keyword libraries as a plain fleet does (see the module)."""

    def __init__(
        self, sim: Any, name: str, model: DeviceModel, seed: int | str | None, shards: list[Shard], cluster: str
    ) -> None:
        self.sim = sim
        self.name = name
        self.model = model
        self.seed = seed
        self.shards = shards
        self.cluster = cluster
        self.ids: list[str] = [d for s in shards for d in s.ids]
        self.shard_of: dict[str, Shard] = {d: s for s in shards for d in s.ids}
        self.target = ""
        self.connection: dict[str, Any] = {}  # the model's connection with the user's overrides
        self.request_based = False
        self.state = "created"
        self.stopping = False
        self.launched = 0
        self.errors: list[str] = []
        self._latency: dict[str, Histogram] = {}  # intervals taken from the shards, not yet in a row
        self._poller: asyncio.Task[None] | None = None
        self._deleted = False
        self._fault_numbers = itertools.count(1)
        self._dropout: tuple[float, list[Any]] | None = None  # (wall-clock start, plan) of the current dropout

    # -- talking to shards --------------------------------------------------------------------------------------

    @property
    def device_count(self) -> int:
        return len(self.ids)

    def _gone(self, shard: Shard) -> str:
        return f"Fleet '{self.name}': {shard.describe(len(self.shards))} is gone ({shard.dead})"

    def _died(self, shard: Shard, err: BaseException) -> str:
        """Mark ``shard`` dead (reported once, by the next keyword that takes the fleet's errors)."""
        if shard.dead is None:
            shard.dead = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
            message = (
                f"{self._gone(shard)}; {sum(s.alive for s in self.shards)} other shards keep running; "
                "Stop Fleet stops them"
            )
            log.warning("%s", message)
            self.errors.append(message)
        return self._gone(shard)

    async def _one(self, shard: Shard, ref: Any, timeout: float | None = None) -> Any:
        """Await one shard's call; a dead shard becomes a :class:`ShardError` that names it."""
        if shard.dead is not None:
            raise ShardError(self._gone(shard) + ".")
        try:
            async with asyncio.timeout(timeout):
                return await ref
        except task_error() as err:  # the shard raised: the user gets its message, not Ray's traceback
            cause = getattr(err, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise
        except actor_died_error() as err:
            raise ShardError(self._died(shard, err) + ".") from None
        except TimeoutError:
            raise ShardError(
                f"Fleet '{self.name}': {shard.describe(len(self.shards))} did not answer within {timeout:g} s."
            ) from None

    async def _all(self, call: Any, *, timeout: float | None = None, alive_only: bool = False) -> list[Any]:
        """``call(shard)`` (an ObjectRef) on every shard, awaited together; results in shard order."""
        shards = [s for s in self.shards if s.alive or not alive_only]
        results = await asyncio.gather(*(self._one(s, call(s), timeout) for s in shards), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    async def _route(self, device_id: str, method: str, *args: Any) -> Any:
        shard = self.shard_of.get(device_id)
        if shard is None:
            sample = ", ".join(self.ids[:5])
            raise NotFoundError(
                f"Fleet '{self.name}' has no device '{device_id}' (it has {len(self.ids)} devices: {sample}, ...)."
            )
        return await self._one(shard, shard.actor.call.remote(method, device_id, *args))

    def take_errors(self) -> list[str]:
        errors, self.errors = self.errors, []
        return errors

    def report_error(self, message: str) -> None:
        self.errors.append(message)

    # -- polling ------------------------------------------------------------------------------------------------

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop(), name=f"iotix-shards-{self.name}")

    async def _poll_loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.poll()
            await asyncio.sleep(POLL_S)

    async def poll(self) -> None:
        """Read every live shard's state and figures once (a dead one is reported, the rest go on)."""
        live = [s for s in self.shards if s.alive]
        results = await asyncio.gather(
            *(self._one(s, s.actor.status.remote(), timeout=30.0) for s in live), return_exceptions=True
        )
        for shard, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                continue  # _one reported a dead shard; a slow one is asked again next round
            shard.status = result
            self.errors.extend(f"shard {shard.index}: {e}" for e in result["errors"])
            snap = FleetSnapshot.decoded(result["snapshot"])
            for kind, hist in snap.latency.items():
                self._latency.setdefault(kind, Histogram()).merge(hist)
            snap.latency = {}
            shard.snapshot = snap
        self.launched = sum(s.status.get("launched", 0) for s in self.shards)
        if self.state == "starting" and all(s.status.get("state") == "running" for s in self.shards if s.alive):
            self.state = "running"

    def metrics_snapshot(self) -> FleetSnapshot:
        """The shards' last snapshots added up, with the latency intervals collected since the last call."""
        merged = FleetSnapshot.empty()
        for shard in self.shards:
            merged.add(shard.snapshot)
        merged.latency, self._latency = self._latency, {}
        return merged

    # -- launch, stop, delete -----------------------------------------------------------------------------------

    async def start(self, launch: LaunchSettings) -> None:
        """Start every shard on the fleet's one launch timeline (offsets over all devices, one start time)."""
        if self.state in ("starting", "running"):
            raise ConfigurationError(f"Fleet '{self.name}' is already {self.state}; stop it before starting again.")
        offsets = launch_offsets(len(self.ids), launch)
        start_at = time.time() + START_MARGIN_S
        await self._all(
            lambda s: s.actor.start.remote(launch, offsets[s.first : s.first + len(s.ids)], start_at), alive_only=True
        )
        self.state = "starting"
        self.launched = 0
        self._ensure_poller()

    async def wait_until_running(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            await self.poll()
            dead = [s for s in self.shards if not s.alive]
            if dead:
                raise ShardError(self._gone(dead[0]) + ".")
            if self.all_running():
                return True
            if loop.time() >= end:
                return False
            await asyncio.sleep(min(0.2, max(0.0, end - loop.time())))

    def all_running(self) -> bool:
        return sum(s.status.get("running", 0) for s in self.shards) == len(self.ids)

    def launch_progress(self) -> tuple[int, int, int]:
        return sum(s.status.get("running", 0) for s in self.shards), len(self.ids), self.launched

    async def not_running_report(self, waited_s: float) -> str:
        states = await self.count_states()
        running = states.get("running", 0)
        parts = [
            f"Fleet '{self.name}': {len(self.ids) - running} of {len(self.ids)} devices not running after "
            f"{waited_s:g} s (launched {self.launched}; states: "
            + ", ".join(f"{k} {v}" for k, v in states.items() if v)
            + f"; {len(self.shards)} shards)."
        ]
        errors = await self._all(lambda s: s.actor.call.remote("devices_in_error", 3), alive_only=True)
        for device_id, error in [e for shard_errors in errors for e in shard_errors][:3]:
            parts.append(f"{device_id}: {error}.")
        parts.extend(f"{s.describe(len(self.shards))} is gone ({s.dead})." for s in self.shards if not s.alive)
        return " ".join(parts)

    async def stop(self) -> None:
        """Stop every live shard's fleet (a dead shard is reported in the log, the others still stop)."""
        self.stopping = True
        try:
            results = await asyncio.gather(
                *(self._one(s, s.actor.stop.remote()) for s in self.shards if s.alive), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, ShardError):
                    raise result
            with contextlib.suppress(Exception):
                await self.poll()  # the final counters, so the series' last row adds up
        finally:
            self.state = "stopped"
            self.stopping = False

    async def delete(self) -> None:
        """Stop the shards' fleets and end their processes."""
        if self._deleted:
            return
        self._deleted = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller
        with contextlib.suppress(Exception):
            if self.state in ("starting", "running"):
                await self.stop()
        actors = [s.actor for s in self.shards if s.actor is not None]
        if not actors:
            return
        ray = ray_module()
        refs = [s.actor.shutdown.remote() for s in self.shards if s.actor is not None and s.alive]
        with contextlib.suppress(Exception):  # a shard that does not answer in time is killed all the same
            await asyncio.wait_for(asyncio.gather(*refs, return_exceptions=True), SHUTDOWN_TIMEOUT_S)
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        for shard in self.shards:
            shard.actor = None

    # -- reading ------------------------------------------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        """The shards' stats added up (counters, states, per-reason failures); latency from merged histograms.

        ``shards`` lists each shard (its device range, process id, whether it is alive); a dead shard was
        reported by the keyword that first met it and is left out of the sums from then on."""
        per_shard = await self._shard_stats()
        total = merge_stats(per_shard)
        total.update(fleet=self.name, target=self.target, state=self.state, launchedDeviceCount=self.launched)
        total["deviceCount"] = len(self.ids)
        total["shards"] = self.shards_info()
        return total

    async def _shard_stats(self) -> list[dict[str, Any]]:
        """Each live shard's own stats: a dead shard's devices are no longer counted (``shards`` says which)."""
        return await self._all(lambda s: s.actor.stats.remote(), alive_only=True)

    def shards_info(self) -> list[dict[str, Any]]:
        return [
            {
                "index": s.index,
                "first": s.ids[0],
                "last": s.ids[-1],
                "count": len(s.ids),
                "pid": s.pid,
                "alive": s.alive,
                "state": s.status.get("state", "created"),
            }
            for s in self.shards
        ]

    async def device_ids(self, state: DeviceState | None = None) -> list[str]:
        parts = await self._all(lambda s: s.actor.call.remote("device_ids", state))
        return [d for part in parts for d in part]

    async def count_states(self) -> dict[str, int]:
        parts = await self._all(lambda s: s.actor.call.remote("count_states"), alive_only=True)
        out: dict[str, int] = {}
        for part in parts:
            for key, n in part.items():
                out[key] = out.get(key, 0) + n
        return out

    async def count_in(self, state: DeviceState) -> int:
        return sum(await self._all(lambda s: s.actor.call.remote("count_in", state)))

    async def devices_in_error(self, limit: int = 3) -> list[tuple[str, str | None]]:
        parts = await self._all(lambda s: s.actor.call.remote("devices_in_error", limit), alive_only=True)
        return [e for part in parts for e in part][:limit]

    async def expected_sequences(self) -> dict[str, tuple[int, int]]:
        parts = await self._all(lambda s: s.actor.call.remote("expected_sequences"))
        out: dict[str, tuple[int, int]] = {}
        for part in parts:
            out.update(part)
        return out

    async def expected_since(self, listening_since: float | None) -> dict[str, tuple[int, int]]:
        """Per device ``[first, stop)`` for a receiver listening since the wall-clock time ``listening_since``
        (None: it joined late): from seq 0 when it listened before the device started, else from the first
        sequence number that arrives (-1). The shards compare on their own clocks."""
        parts = await self._all(lambda s: s.actor.call.remote("expected_since", listening_since))
        out: dict[str, tuple[int, int]] = {}
        for part in parts:
            out.update(part)
        return out

    async def device_status(self, device_id: str) -> dict[str, Any]:
        return await self._route(device_id, "device_status")

    async def set_override(self, device_id: str, field_name: str, value: Any) -> None:
        await self._route(device_id, "set_override", field_name, value)

    async def clear_override(self, device_id: str, field_name: str) -> None:
        await self._route(device_id, "clear_override", field_name)

    async def commands_of(self, device_id: str) -> list[dict[str, Any]]:
        return await self._route(device_id, "commands")

    # -- dropouts -------------------------------------------------------------------------------------------------

    @property
    def has_dropout(self) -> bool:
        return self._dropout is not None

    def dropout_time_left(self) -> float:
        """Seconds until the last step of the current dropout's plan (0 when it is past)."""
        if self._dropout is None:
            return 0.0
        start_at, plan = self._dropout
        last = max((e.reconnect_at if e.reconnect_at is not None else e.drop_at for e in plan), default=0.0)
        return max(0.0, start_at + last - time.time())

    async def dropout_report(self, waited_s: float) -> str:
        parts = await self._all(lambda s: s.actor.call.remote("dropout_report", waited_s), alive_only=True)
        return " ".join(parts)

    async def start_dropout(self, settings: DropoutSettings, seed: int | str | None) -> list[str]:
        """Plan the dropout over all devices here (global, reproducible); each shard drops its part on one clock."""
        plan = plan_dropout(self.ids, settings, seed)
        start_at = time.time() + START_MARGIN_S
        self._dropout = (start_at, plan)
        by_shard: dict[int, list[Any]] = {}
        for event in plan:
            by_shard.setdefault(self.shard_of[event.device_id].index, []).append(event)
        await self._all(
            lambda s: s.actor.call.remote("drop", settings, by_shard.get(s.index, []), start_at), alive_only=True
        )
        return [e.device_id for e in plan]

    async def wait_for_dropout(self, timeout: float) -> bool:
        return all(await self._all(lambda s: s.actor.call.remote("wait_for_dropout", timeout), alive_only=True))

    async def restore_dropped(self) -> list[str]:
        parts = await self._all(lambda s: s.actor.call.remote("restore_dropped"), alive_only=True)
        return [d for part in parts for d in part]

    # -- network faults (the same fault on every shard, on the globally chosen devices) ---------------------------

    async def add_fault(
        self, kind: str, settings: Mapping[str, Any], selection: DeviceSelection, fault_name: str | None
    ) -> str:
        """Check the fault here, choose its devices over the whole fleet (as a plain fleet would), then add it
        to every shard that has chosen devices, under one name."""
        spec = parse_fault(
            kind, settings, name=fault_name, target=f"fleet '{self.name}'", datagram=self.model.protocol == "coap"
        )
        name = fault_name or f"{spec.kind}-{next(self._fault_numbers)}"
        owners = self._select(selection)
        calls = []
        for shard in self.shards:
            if not shard.alive:
                continue
            if owners is None:
                part = ALL_DEVICES
            else:
                ids = [d for d in owners if self.shard_of[d] is shard]
                if not ids:
                    continue
                part = DeviceSelection(devices=ids)
            calls.append(
                self._one(shard, shard.actor.network.remote("add", kind, dict(settings), part, fault_name=name))
            )
        await asyncio.gather(*calls)
        return name

    def _select(self, selection: DeviceSelection) -> list[str] | None:
        if not selection.given:
            return None
        if selection.devices is not None:
            unknown = [d for d in selection.devices if d not in self.shard_of]
            if unknown:
                raise NotFoundError(f"Fleet '{self.name}' has no device '{unknown[0]}'; Get Devices lists its ids.")
            if not selection.devices:
                raise FaultError(f"Fleet '{self.name}': the list of devices is empty; name at least one device.")
            return list(dict.fromkeys(selection.devices))
        settings = DropoutSettings(count=selection.count, percentage=selection.percentage)
        return choose_dropout_devices(self.ids, settings, selection.seed)

    async def fault_call(self, method: str, *args: Any) -> Any:
        """``remove``, ``clear``, ``describe`` or ``history`` of the fleet's faults, over its shards."""
        results = await asyncio.gather(
            *(self._one(s, s.actor.network.remote(method, *args)) for s in self.shards if s.alive),
            return_exceptions=True,
        )
        answers = [r for r in results if not isinstance(r, BaseException)]
        if not answers:  # every shard refused (an unknown fault name, say): the first one says why
            raise next(r for r in results if isinstance(r, BaseException))
        if method in ("describe", "history"):
            seen: dict[str, dict[str, Any]] = {}
            for entries in answers:
                for entry in entries:
                    seen.setdefault(entry["name"], entry)
            return list(seen.values())
        if method == "clear":
            return max(answers)
        return None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise ConfigurationError(
            f"Fleet '{self.name}' is sharded ({len(self.shards)} shards); this keyword does not act on sharded "
            f"fleets yet (it needs '{name}'). Use a fleet without shards for it."
        )


def merge_stats(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Add up shards' stats: numbers summed, nested dicts merged key by key, text taken from the first shard,
    latency summaries recomputed from the merged histograms (``_lateness``, ``_request``)."""
    total: dict[str, Any] = {}
    for part in parts:
        _add_into(total, {k: v for k, v in part.items() if not k.startswith("_")})
    total["sendLatenessMs"] = _merged(parts, "_lateness").summary()
    if any(part.get("_request") for part in parts):
        total.setdefault("transport", {})["requestLatencyMs"] = _merged(parts, "_request").summary()
    return total


def _merged(parts: Sequence[dict[str, Any]], key: str) -> Histogram:
    hist = Histogram()
    for part in parts:
        if part.get(key):
            hist.merge(Histogram.decode(part[key]))
    return hist


def _add_into(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if key not in total:
            if isinstance(value, dict):
                total[key] = {}
                _add_into(total[key], value)
            else:
                total[key] = value
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int | float) and isinstance(total[key], int | float):
            total[key] = total[key] + value
        elif isinstance(value, dict) and isinstance(total[key], dict):
            _add_into(total[key], value)
