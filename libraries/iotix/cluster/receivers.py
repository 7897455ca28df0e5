"""Sharded receivers: one MQTT subscription received by several processes (Ray actors), trackers merged.

One Python MQTT subscriber takes 23-33k msg/s here. ``Subscribe To Topic ... shards=N`` therefore starts N
receiver actors, each subscribed to the MQTT shared subscription ``$share/<group>/<topic>`` (one group per
subscription, unique to the process and the machine), so that the broker hands each message to one of them.
Each actor feeds its own :class:`~iotix.observe.tracker.TelemetryTracker`; whenever a keyword reads the
subscription, :meth:`ShardedSubscription.refresh` folds what they collected since the previous read into the
connection's tracker in the main process (:class:`~iotix.observe.tracker.TrackerMerge`: exact per device, HDR
histograms merged). Messages themselves are counted in the actors, not kept or shipped.

The main process also folds their figures every second (so that time series and live views of the connection
see them). Latencies are kept per fleet: the main process tells the actors which device belongs to which fleet
(at the start, every second, and before every read). A device the actors hear of before they
know its fleet keeps its latencies aside until they do (or until the next read, when nobody here knows it).

The actor (:class:`ReceiverWorker`) runs an ordinary :class:`~iotix.transport.mqtt_probe.MqttProbe` on the
IoTix runtime of its process, like a shard (see :mod:`iotix.cluster.shard`); it returns plain data only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from iotix.errors import ConfigurationError, IoTixError
from iotix.observe.histogram import LatencyRecorder
from iotix.observe.tracker import DeviceTrack, TelemetryTracker, TrackerExport, TrackerMerge
from iotix.runtime import get_runtime

if TYPE_CHECKING:
    from iotix.transport.mqtt_probe import MqttProbe

log = logging.getLogger("iotix.cluster")

#: Seconds a receiver's bridge call may take (connecting and subscribing are bounded by their own timeout).
CALL_TIMEOUT_S = 60.0
#: How often the main process folds the receivers' figures into the connection's tracker (and tells them about
#: fleets created since), besides whenever a keyword reads them (seconds).
REFRESH_INTERVAL_S = 1.0
#: Latencies a receiver keeps aside for devices of fleets it does not know yet (beyond that: no fleet's).
MAX_PENDING_SAMPLES = 200_000
#: How long a receiver may take to answer the main process (an export, a count) before it is reported.
ANSWER_TIMEOUT_S = 30.0
#: The most receivers of one subscription.
MAX_SHARDS = 64

_groups = itertools.count(1)


class ReceiverError(IoTixError):
    """A receiver of a sharded subscription failed or is gone.

    ``partial``: what the other receivers answered to the call that found out (they must not be lost)."""

    def __init__(self, message: str, partial: list[tuple[Any, Any]] | None = None) -> None:
        super().__init__(message)
        self.partial = partial or []


def share_group() -> str:
    """A shared-subscription group name unique to this process and machine (pabot, several machines)."""
    host = "".join(c for c in socket.gethostname() if c.isalnum())[:12] or "host"
    return f"iotix-{host}-{os.getpid()}-{next(_groups)}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class ReceiverSettings:
    """Where and how every receiver of one sharded subscription connects (plain data, shipped to actors)."""

    host: str
    port: int
    topic: str
    qos: int
    group: str
    client_id: str  # receiver k connects as ``<client_id>-<k>``
    mqtt_version: str = "3.1.1"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive: int = 30
    timeout: float = 10.0

    @property
    def wire_filter(self) -> str:
        return f"$share/{self.group}/{self.topic}"


# -- the receiver's process ----------------------------------------------------------------------------------


class _Pending:
    """Latencies (seconds) of a device whose fleet the receiver does not know yet; stands in for its group."""

    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: list[float] = []

    def record(self, seconds: float) -> None:
        self.samples.append(seconds)


class ReceiverTracker(TelemetryTracker):
    """A receiver's tracker: latencies go to the fleet the main process says a device belongs to
    (:meth:`assign`); until then they are kept aside per device (:class:`_Pending`)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.fleet_of: dict[str, str] = {}
        self.pending: dict[str, _Pending] = {}
        self.pending_samples = 0
        self.changed = set()  # export what changed from the start

    def _new_track(self, device_id: str) -> DeviceTrack:
        fleet = self.fleet_of.get(device_id)
        if fleet is not None:
            return self._track_in(device_id, fleet)
        pending = self.pending[device_id] = _Pending()
        track = self.devices[device_id] = DeviceTrack(cast(LatencyRecorder, pending))
        return track

    def record(self, device_id: str, seq: int, ts_ms: float | None, now: float | None = None) -> None:
        super().record(device_id, seq, ts_ms, now)
        if self.pending and device_id in self.pending:
            self.pending_samples += 1
            if self.pending_samples > MAX_PENDING_SAMPLES:
                self.settle_all()

    def _track_in(self, device_id: str, group: str | None) -> DeviceTrack:
        recorder = self.groups.get(group)
        if recorder is None:
            recorder = self.groups[group] = LatencyRecorder()
        track = self.devices.get(device_id)
        if track is None:
            track = self.devices[device_id] = DeviceTrack(recorder)
        else:
            track.latency = recorder
        return track

    def _settle(self, device_id: str, group: str | None) -> None:
        pending = self.pending.pop(device_id)
        track = self._track_in(device_id, group)
        for seconds in pending.samples:
            track.latency.record(seconds)
        self.pending_samples -= len(pending.samples)

    def assign(self, fleets: Mapping[str, Collection[str]]) -> None:
        """Devices by fleet: their latencies go to that fleet's histogram (also those kept aside so far)."""
        for fleet, device_ids in fleets.items():
            for device_id in device_ids:
                self.fleet_of[device_id] = fleet
                if device_id in self.pending:
                    self._settle(device_id, fleet)

    def settle_all(self) -> None:
        """Devices still of no known fleet: their latencies go to no fleet's histogram from now on."""
        for device_id in list(self.pending):
            self._settle(device_id, None)
        self.pending_samples = 0

    def export(self) -> TrackerExport:
        self.settle_all()  # the main process told us every fleet it knows before asking
        return super().export()


class ReceiverWorker:
    """One receiver of a sharded subscription, in its own process. Ray makes it an actor (``remote``)."""

    def __init__(self) -> None:
        self.runtime = get_runtime()
        self.probe: Any = None
        self.settings: ReceiverSettings | None = None

    def _call(self, fn: Any, *args: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        return self.runtime.call(fn, *args, timeout=timeout)

    def start(self, settings: ReceiverSettings, index: int) -> dict[str, Any]:
        """Connect as ``<client_id>-<index>`` and subscribe to the shared subscription; returns pid and client id.

        Fails with a :class:`ReceiverError` naming the broker and the filter."""
        from iotix.transport.mqtt_probe import MqttProbe

        self.settings = settings
        client_id = f"{settings.client_id}-{index}"

        async def start() -> None:
            probe = MqttProbe(f"receiver-{index}", client_id, mqtt_version=settings.mqtt_version)
            probe.tracker = ReceiverTracker(probe.alias)
            try:
                await probe.connect(
                    settings.host,
                    settings.port,
                    username=settings.username,
                    password=settings.password,
                    keepalive=settings.keepalive,
                    timeout=settings.timeout,
                )
                await probe.subscribe(settings.topic, settings.qos, settings.timeout, share=settings.group, keep=False)
            except BaseException:
                await probe.close()
                raise
            self.probe = probe

        try:
            self._call(start, timeout=settings.timeout * 2 + 5)
        except Exception as err:
            raise ReceiverError(
                f"receiver {index + 1} (pid {os.getpid()}) cannot subscribe to '{settings.wire_filter}' at "
                f"{settings.host}:{settings.port}: {err}"
            ) from None
        return {"pid": os.getpid(), "clientId": client_id, "host": socket.gethostname()}

    def assign(self, fleets: dict[str, list[str]]) -> None:
        probe = self.probe
        self._call(lambda: probe.tracker.assign(fleets))

    def export(self) -> dict[str, Any]:
        """What arrived since the previous export (a :class:`TrackerExport`), the message count and errors."""
        probe = self.probe

        def export() -> dict[str, Any]:
            sub = probe.subscriptions.get(self.settings.topic) if self.settings else None
            errors, probe.errors = probe.errors, []
            return {"tracker": probe.tracker.export(), "messages": sub.total if sub else 0, "errors": errors}

        return cast(dict[str, Any], self._call(export))

    def count(self, topic: str) -> int:
        """Messages that arrived here on ``topic`` (the subscription's filter or a narrower one)."""
        probe = self.probe
        assert self.settings is not None
        filt = self.settings.topic
        return cast(int, self._call(lambda: probe.subscriptions[filt].count(topic)))

    def stop(self) -> None:
        """Unsubscribe and disconnect (the actor is killed next)."""
        probe, self.probe = self.probe, None
        if probe is not None:
            with contextlib.suppress(Exception):
                self._call(probe.close, timeout=10.0)


# -- the main process -----------------------------------------------------------------------------------------

FleetDevices = Callable[[], Awaitable[Mapping[str, Collection[str]]]]


async def _await(ref: Any) -> Any:
    """Await a Ray ObjectRef on this (any) asyncio loop."""
    return await asyncio.wrap_future(ref.future())


@dataclass
class _Receiver:
    index: int
    actor: Any
    pid: int = 0
    host: str = ""
    client_id: str = ""
    alive: bool = True
    messages: int = 0  # as of the latest refresh


class ShardedSubscription:
    """One subscription received by ``shards`` receiver actors; lives on the main process's runtime loop.

    ``into`` is the tracker the receivers' trackers are folded into (the MQTT connection's); ``fleets``, when
    given, returns the device ids of every fleet of the process (for latencies per fleet).
    Implements :class:`~iotix.transport.mqtt_probe.RemoteSubscription`.
    """

    def __init__(
        self,
        settings: ReceiverSettings,
        shards: int,
        into: TelemetryTracker,
        fleets: FleetDevices | None = None,
        alias: str = "",
    ) -> None:
        if not 1 <= shards <= MAX_SHARDS:
            raise ReceiverError(f"shards must be 1 to {MAX_SHARDS} for a subscription, got {shards}.")
        self.settings = settings
        self.alias = alias
        self.topic = settings.topic
        self.shards = shards
        self.merge = TrackerMerge(into)
        self.fleets = fleets
        self.receivers: list[_Receiver] = []
        self.messages = 0
        self.errors: list[str] = []
        self._assigned: dict[str, tuple[int, str]] = {}  # fleet -> (device count, first id) as told
        self._lock = asyncio.Lock()
        self._refresh_task: asyncio.Task[None] | None = None
        self._problem: ReceiverError | None = None  # found in the background, for the next read
        self._closed = False

    def describe(self, r: _Receiver) -> str:
        where = f"pid {r.pid}" + (f" on {r.host}" if r.host and r.host != socket.gethostname() else "")
        owner = f" of '{self.alias}'" if self.alias else ""
        return f"receiver {r.index + 1} of {self.shards} of the sharded subscription '{self.topic}'{owner} ({where})"

    async def start(self) -> None:
        """Start the actors, each subscribed; fails (and stops those that started) if one cannot subscribe.

        Ray must be connected already (:func:`iotix.cluster.ray_support.ensure_ray`, off the loop)."""
        from iotix.cluster.ray_support import remote

        # num_cpus=0: receivers wait on sockets; a local Ray's CPUs are for shards, which they must not starve
        cls = remote(ReceiverWorker, num_cpus=0, max_concurrency=4, scheduling_strategy="SPREAD")
        self.receivers = [_Receiver(k, cls.remote()) for k in range(self.shards)]
        results = await asyncio.gather(
            *(_await(r.actor.start.remote(self.settings, r.index)) for r in self.receivers), return_exceptions=True
        )
        failures = [res for res in results if isinstance(res, BaseException)]
        if failures:
            await self.close()
            raise ReceiverError(_plain(failures[0]))
        for r, info in zip(self.receivers, results, strict=True):
            info = cast(dict[str, Any], info)
            r.pid, r.host, r.client_id = info["pid"], info["host"], info["clientId"]
        await self._assign()
        self._refresh_task = asyncio.get_running_loop().create_task(
            self._refresh_loop(), name=f"refresh sharded subscription {self.topic}"
        )
        log.info(
            "sharded subscription '%s' (%s) received by %d actors (pids %s)",
            self.topic,
            self.settings.wire_filter,
            self.shards,
            ", ".join(str(r.pid) for r in self.receivers),
        )

    async def _each(self, call: Callable[[Any], Any]) -> list[tuple[_Receiver, Any]]:
        """``(receiver, call(actor))`` for every live receiver, awaited together.

        A receiver found gone fails this call, naming it; later calls go on with the others (the broker hands
        them its share of the messages once its connection is closed)."""
        from iotix.cluster.ray_support import actor_died_error

        died = actor_died_error()
        alive = [r for r in self.receivers if r.alive]
        if not alive:
            raise ReceiverError(f"Every receiver of the sharded subscription '{self.topic}' is gone.")
        tasks = [asyncio.ensure_future(_await(call(r.actor))) for r in alive]
        try:
            await asyncio.wait(tasks, timeout=ANSWER_TIMEOUT_S)
        except BaseException:  # cancelled (a keyword's timeout): leave nothing running
            for task in tasks:
                task.cancel()
            raise
        results: list[Any] = []
        for task in tasks:
            if not task.done():
                task.cancel()
                results.append(TimeoutError())
            else:
                results.append(task.exception() or task.result())
        answered = [(r, res) for r, res in zip(alive, results, strict=True) if not isinstance(res, BaseException)]
        problems = []
        for r, res in zip(alive, results, strict=True):
            if isinstance(res, TimeoutError):
                problems.append(f"{self.describe(r)} did not answer within {ANSWER_TIMEOUT_S:g} s")
            elif isinstance(res, died):
                r.alive = False
                others = sum(x.alive for x in self.receivers)
                problems.append(
                    f"{self.describe(r)} is gone (its process ended): what it received since the previous read is "
                    f"missing from the figures; the other {others} receiver(s) go on and take its share"
                )
            elif isinstance(res, BaseException):
                problems.append(f"{self.describe(r)} failed: {_plain(res)}")
        if problems:
            raise ReceiverError("; ".join(problems) + ".", answered)
        return answered

    async def _assign(self) -> None:
        """Tell the receivers the devices of fleets created (or re-created) since the previous time."""
        if self.fleets is None:
            return
        news: dict[str, list[str]] = {}
        for name, ids in (await self.fleets()).items():
            key = (len(ids), next(iter(ids), ""))
            if self._assigned.get(name) != key:
                news[name] = list(ids)
                self._assigned[name] = key
        if news:
            await self._each(lambda a: a.assign.remote(news))

    async def _refresh_loop(self) -> None:
        """Fold the receivers' figures every second (time series, live views); a failure waits for the next read."""
        while not self._closed:
            await asyncio.sleep(REFRESH_INTERVAL_S)
            try:
                await self._refresh()
            except ReceiverError as err:
                self._problem = self._problem or err
            except Exception as err:  # a bug: the next read tries again and reports what it finds
                log.warning("refreshing the sharded subscription '%s' failed: %s", self.topic, err)

    def _raise_problem(self) -> None:
        """Report what the background refresh found (a receiver gone) to the keyword that reads next."""
        problem, self._problem = self._problem, None
        if problem is not None:
            raise problem

    async def refresh(self) -> None:
        """Fold what every receiver collected since the previous refresh into the merged tracker."""
        await self._refresh()
        self._raise_problem()

    async def _refresh(self) -> None:
        async with self._lock:
            await self._assign()
            problem: ReceiverError | None = None
            try:
                answers = await self._each(lambda a: a.export.remote())
            except ReceiverError as err:  # fold what the others sent: their exports are taken
                answers, problem = err.partial, err
            for r, res in answers:
                self.merge.fold(r.index, cast(TrackerExport, res["tracker"]))
                r.messages = res["messages"]
                for error in res["errors"]:  # the actor's own log does not reach this process
                    log.warning("%s: %s", self.describe(r), error)
                    self.errors.append(f"receiver {r.index + 1}: {error}")
            self.messages = sum(r.messages for r in self.receivers)
            if problem is not None:
                raise problem

    async def count(self, topic: str) -> int:
        """Messages received on ``topic`` (the subscription's filter or a narrower one) by all receivers."""
        self._raise_problem()
        return sum(n for _, n in await self._each(lambda a: a.count.remote(topic)))

    def info(self) -> list[dict[str, Any]]:
        """Per receiver: index, pid, host, client id, alive, messages (as of the latest refresh)."""
        return [
            {
                "index": r.index,
                "pid": r.pid,
                "host": r.host,
                "clientId": r.client_id,
                "alive": r.alive,
                "messages": r.messages,
            }
            for r in self.receivers
        ]

    async def close(self) -> None:
        """Stop every receiver: unsubscribe, then end its process. Safe to call twice."""
        self._closed = True
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            with contextlib.suppress(BaseException):
                await self._refresh_task
            self._refresh_task = None
        receivers, self.receivers = self.receivers, []
        if not receivers:
            return
        from iotix.cluster.ray_support import ray_module

        ray = ray_module()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(15):
                await asyncio.gather(*(_await(r.actor.stop.remote()) for r in receivers), return_exceptions=True)
        for r in receivers:
            with contextlib.suppress(Exception):
                ray.kill(r.actor, no_restart=True)
        log.info("sharded subscription '%s': %d receivers stopped", self.topic, len(receivers))


def _plain(err: BaseException) -> str:
    """The message of an error raised in an actor, without Ray's traceback wrapping."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return str(cause)
    text = str(err)
    return text.strip().splitlines()[-1] if text.strip() else type(err).__name__


async def open_sharded_subscription(
    probe: MqttProbe,
    topic: str,
    qos: int,
    shards: int,
    timeout: float,
    fleets: FleetDevices | None = None,
    address: str | None = None,
) -> ShardedSubscription:
    """Subscribe the MQTT connection ``probe`` to ``topic`` through ``shards`` receiver actors (on its loop).

    The receivers log in to the connection's broker as it did; their trackers are folded into the
    connection's tracker (see :meth:`MqttProbe.refresh`). Ray is joined or started first (off the loop).
    Fails with a :class:`~iotix.errors.ConfigurationError` or :class:`ReceiverError` naming the connection.
    """
    from iotix.cluster.ray_support import ensure_ray
    from iotix.transport.mqtt_probe import topic_filter_problem

    who = f"'{probe.alias}' cannot subscribe to '{topic}' with shards={shards}"
    problem = topic_filter_problem(topic)
    if problem:
        raise ConfigurationError(f"{who}: {problem}.")
    if topic.startswith("$share/"):
        raise ConfigurationError(
            f"{who}: give the topic itself; shards= makes the shared subscription ($share/<group>/<topic>) itself."
        )
    if not 2 <= shards <= MAX_SHARDS:
        raise ConfigurationError(f"{who}: shards must be 1 (no receiver processes) to {MAX_SHARDS}.")
    if probe.tls is not None:
        raise ConfigurationError(
            f"{who}: sharded subscriptions over TLS are not supported yet; subscribe without shards=, or connect "
            "a plain (non-TLS) listener of the broker."
        )
    if topic in probe.subscriptions or topic in probe.remote:
        raise ConfigurationError(f"{who}: it is subscribed to '{topic}' already; disconnect it first.")
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ensure_ray, address)
    username, password = probe.credentials()
    group = share_group()
    settings = ReceiverSettings(
        probe.host, probe.port, topic, qos, group, f"{group}-r", username=username, password=password, timeout=timeout
    )
    sub = ShardedSubscription(settings, shards, probe.tracker, fleets, probe.alias)
    try:
        await sub.start()
    except ReceiverError as err:
        await asyncio.shield(sub.close())
        raise ReceiverError(f"{who}: {err}") from None
    except BaseException:
        await asyncio.shield(sub.close())
        raise
    probe.remote[topic] = sub
    if probe.subscribed_at is None:
        probe.subscribed_at = loop.time()
    return sub
