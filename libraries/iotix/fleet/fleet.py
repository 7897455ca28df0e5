"""A fleet: devices of one model, their launch, their sends, their dropouts, their counters.

Everything here runs on the runtime loop. The fleet is protocol-agnostic: its transport adapter opens
connections and hands over payloads, and reports back through the fleet's outcomes object
(:mod:`iotix.fleet.outcomes`), never by writing into the fleet or its devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import random
import re
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from iotix.behavior import compile_condition, compile_template
from iotix.encode import FIRMWARE_KEY, make_encoder
from iotix.errors import ConfigurationError, NotFoundError
from iotix.fault.faultset import FaultSet
from iotix.fault.sock import close_deferred
from iotix.fleet.delivery import CircuitStatus, Delivery, DeliverySettings
from iotix.fleet.device import Device, DeviceState
from iotix.fleet.outcomes import FleetOutcomes
from iotix.fleet.timeline import (
    DropoutPlan,
    DropoutSettings,
    LaunchSettings,
    launch_offsets,
    plan_dropout,
)
from iotix.generate import DeviceValues
from iotix.model.types import CommandSpec, DeviceModel, is_firmware_update
from iotix.observe.histogram import HIGHEST_US, MAX_CORRECTIONS, LatencyRecorder
from iotix.observe.series import FleetSnapshot, fleet_snapshot
from iotix.transport import Credentials, TransportError, TransportSpec, create_transport
from iotix.transport.backoff import full_jitter
from iotix.transport.tls import FleetTls

if TYPE_CHECKING:
    from iotix.fleet.simulator import Simulator

log = logging.getLogger("iotix.fleet")
_RUNNING = DeviceState.RUNNING
_RECONNECTING = DeviceState.RECONNECTING
_ERROR = DeviceState.ERROR

_MICROSECONDS = 1_000_000.0  # seconds -> microseconds (its bound __mul__ converts a tick's lateness in C)
#: How long Stop Fleet waits for QoS 1/2 messages in flight to be acknowledged before disconnecting.
STOP_DRAIN_S = 2.0
#: The error list of a fleet keeps this many background errors for the next keyword to report.
MAX_PENDING_ERRORS = 20
#: How long an updateFirmware download takes when the command's ``durationMs`` does not say.
FIRMWARE_DOWNLOAD_MS = 1000
#: The download progress (percent) an update reports on the command's response topic.
FIRMWARE_PROGRESS = (0, 25, 50, 75, 100)
#: After reporting a successful update, how long the device waits for the report to leave before it reboots.
FIRMWARE_REPORT_DRAIN_S = 0.5


@dataclass(frozen=True)
class FleetOptions:
    """Tunables of a fleet that do not come from the model."""

    offline_queue_size: int = 1000  # QoS 1/2 messages kept per device while it reconnects
    reconnect_base_s: float = 0.5  # backoff base (full jitter) for reconnects
    reconnect_cap_s: float = 30.0  # backoff cap
    max_connecting: int = 256  # connection attempts in flight at once, per fleet
    tls_dir: str | None = None  # where relative paths of connection.tls (caFile, certFile, keyFile) resolve
    #: route the fleet's connections through the network-fault layer (iotix.fault), so Chaos keywords can add
    #: faults at any time; False takes the layer out of the data path (and refuses faults on the fleet)
    fault_layer: bool = True
    #: the index of the fleet's first device: a shard of a sharded fleet holds devices base, base+1, ... of it
    index_base: int = 0

    def __post_init__(self) -> None:
        if self.offline_queue_size < 0:
            raise ConfigurationError(f"offline queue size must be >= 0, got {self.offline_queue_size}")
        if self.reconnect_base_s <= 0 or self.reconnect_cap_s < self.reconnect_base_s:
            raise ConfigurationError(
                f"reconnect backoff needs 0 < base <= cap, got base {self.reconnect_base_s} s, "
                f"cap {self.reconnect_cap_s} s"
            )
        if self.max_connecting < 1:
            raise ConfigurationError(f"max_connecting must be >= 1, got {self.max_connecting}")


_VERSION_IN_URL = re.compile(r"\d+(?:\.\d+)+(?:-[0-9A-Za-z.]+)?")


def firmware_version_of(version: Any, url: Any) -> str | None:
    """The version an updateFirmware command installs: its ``version``, else the last version number in its
    URL (``https://fw.example/gw-3.2.0.bin`` -> ``3.2.0``); None when neither gives one."""
    if isinstance(version, (str, int, float)) and not isinstance(version, bool) and str(version).strip():
        return str(version).strip()
    if isinstance(url, str):
        path = urlsplit(url).path if "://" in url else url  # not the host: 10.0.0.5 is no version
        path = re.sub(r"\.(bin|img|hex|zip|tar|gz|tgz|fw|ota|uf2)$", "", path.rstrip("/"), flags=re.IGNORECASE)
        found = _VERSION_IN_URL.findall(path)
        if found:
            return found[-1]
    return None


def format_device_id(pattern: str, index: int, fleet: str, model_id: str) -> str:
    """Render an id pattern such as ``temp-sensor-{index}`` or ``env-{index:05d}``."""
    try:
        return pattern.format(index=index, fleet=fleet, model=model_id, n=index + 1)
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigurationError(
            f"id pattern '{pattern}' is not usable ({err}); use placeholders {{index}}, {{index:05d}}, "
            "{n} (1-based), {fleet} or {model}"
        ) from None


class Fleet:
    """Devices of one model sharing a transport, counters and a launch/dropout plan."""

    def __init__(
        self,
        sim: Simulator,
        name: str,
        model: DeviceModel,
        device_ids: Sequence[str],
        *,
        seed: int | str | None = None,
        connection: dict[str, Any] | None = None,
        credentials: Credentials | None = None,
        options: FleetOptions | None = None,
        delivery: DeliverySettings | None = None,
    ) -> None:
        if len(set(device_ids)) != len(device_ids):
            dupes = sorted(d for d, n in Counter(device_ids).items() if n > 1)[:5]
            raise ConfigurationError(f"Fleet '{name}': device ids must be unique; repeated: {', '.join(dupes)}")
        self.sim = sim
        self.name = name
        self.model = model
        self.seed = seed
        self.connection: dict[str, Any] = dict(connection if connection is not None else model.connection)
        self.credentials = credentials or Credentials(self.connection.get("username"), self.connection.get("password"))
        self.options = options or FleetOptions()
        self.devices: list[Device] = []
        self.by_id: dict[str, Device] = {}
        for index, device_id in enumerate(device_ids):
            values = DeviceValues(model, device_id, seed)
            device = Device(self, device_id, self.options.index_base + index, values)
            self.devices.append(device)
            self.by_id[device_id] = device
        first = self.devices[0].values if self.devices else DeviceValues(model, "-", seed)
        self.groups: list[tuple[float, tuple[str, ...]]] = [(ms / 1000.0, names) for ms, names in first.groups]
        # A raw payload is one binary field alone: groups without it are sampled (behaviors see them) but not sent.
        raw_field = model.payload.field if model.payload.format == "raw" else None
        self.sendable = [raw_field is None or raw_field in names for _, names in self.groups]
        self.qos = int(self.connection.get("qos", 0))
        self._rng = random.Random(f"fleet:{name}:{seed}")
        self.outcomes = FleetOutcomes(self)
        #: the fleet's network faults (None without the fault layer); UDP for CoAP, TCP for the rest
        self.faults: FaultSet | None = (
            FaultSet(sim.loop, f"fleet '{name}'", datagram=model.protocol == "coap", per_device=True, seed=seed)
            if self.options.fault_layer
            else None
        )
        spec = TransportSpec(
            fleet=name,
            model=model,
            connection=MappingProxyType(self.connection),
            credentials=self.credentials,
            tls_dir=self.options.tls_dir,
            seed=seed,
            faults=self.faults,
        )
        self.transport = create_transport(spec, self.devices, self.outcomes)
        if self.faults is not None:
            self.faults.per_device = self.transport.per_device_faults
        self.delivery = Delivery(
            self,
            delivery or DeliverySettings.from_connection(self.connection),
            self.transport.endpoint,
            random.Random(f"retry:{name}:{seed}"),
            request_based=self.transport.request_based,
        )
        self.outcomes.bind(self.delivery, request_based=self.transport.request_based)
        self._log_sends = not self.transport.request_based and self.delivery.settings.log_size > 0
        self.encoder = self.transport.make_encoder() or make_encoder(model)
        names = list(model.field_names)
        self.behaviors = [
            (
                b,
                compile_condition(b.condition, names),
                compile_template(b.action.get("payload", ""), None),
                compile_template(str(b.action.get("topic", "")), None),
            )
            for b in model.behaviors
        ]
        self.lateness = LatencyRecorder()  # send lateness against each device's schedule
        self._late: dict[float, list[float]] = {}  # interval -> lateness of this tick's sends (see fire)
        self.stopping = False  # Fleet.stop is draining and disconnecting (state still says what it was)
        self.devices_dropped = 0  # devices switched off by dropouts (Drop Devices, Start Dropout)
        self.devices_restored = 0  # of those, brought back
        self.errors: list[str] = []
        self.state = "created"
        self.launch_task: asyncio.Task[None] | None = None
        self.launched = 0
        self.dropout_task: asyncio.Task[None] | None = None
        self.dropout_plan: list[Any] = []
        self.dropouts_done = 0
        self.dropout_started_at = 0.0  # loop time the current dropout plan counts from
        self.behaviors_fired = 0
        self._connect_limit = asyncio.Semaphore(self.options.max_connecting)

    # -- lookup ---------------------------------------------------------------------------------------

    def device(self, device_id: str) -> Device:
        try:
            return self.by_id[device_id]
        except KeyError:
            sample = ", ".join(d.id for d in self.devices[:5])
            raise NotFoundError(
                f"Fleet '{self.name}' has no device '{device_id}' (it has {len(self.devices)} devices: "
                f"{sample}{', ...' if len(self.devices) > 5 else ''})."
            ) from None

    def report_error(self, message: str) -> None:
        log.warning("fleet %s: %s", self.name, message)
        if len(self.errors) < MAX_PENDING_ERRORS:
            self.errors.append(message)

    def take_errors(self) -> list[str]:
        errors, self.errors = self.errors, []
        return errors

    # -- launch -----------------------------------------------------------------------------------------

    def start(
        self, launch: LaunchSettings, offsets: Sequence[float] | None = None, start_at: float | None = None
    ) -> None:
        """Schedule the launch; returns at once. Devices connect at their timeline offsets.

        A shard of a sharded fleet gets its part of the fleet's one timeline instead: ``offsets`` (seconds, one
        per device) counted from the wall-clock time ``start_at`` (``time.time()``), the same for every shard.
        """
        if self.state in ("starting", "running"):
            raise ConfigurationError(f"Fleet '{self.name}' is already {self.state}; stop it before starting again.")
        if offsets is None:
            offsets = launch_offsets(len(self.devices), launch)
        elif len(offsets) != len(self.devices):
            raise ConfigurationError(
                f"Fleet '{self.name}': {len(offsets)} launch offsets for {len(self.devices)} devices"
            )
        self.state = "starting"
        self.launched = 0
        self.launch_task = asyncio.get_running_loop().create_task(
            self._launch(launch, offsets, 0.0 if start_at is None else start_at - time.time()),
            name=f"iotix-launch-{self.name}",
        )

    async def _launch(self, launch: LaunchSettings, offsets: Sequence[float], start_in: float) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + start_in
        log.info("fleet %s: launching %d devices (%s)", self.name, len(self.devices), launch.strategy.value)
        try:
            for device, offset in zip(self.devices, offsets, strict=True):
                wait = t0 + offset - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if device.state in (DeviceState.CREATED, DeviceState.STOPPED):
                    self.bring_up(device)
                self.launched += 1
            self.state = "running"
            # The fleet's objects live as long as the fleet: keep them out of full garbage collections,
            # which would otherwise stall the loop for hundreds of ms at 10,000 devices.
            gc.freeze()
            log.info("fleet %s: all %d devices launched in %.2f s", self.name, len(self.devices), loop.time() - t0)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug must not pass silently
            self.report_error(f"launch failed: {err!r}")
            raise

    def bring_up(self, device: Device, *, reconnect: bool = False) -> None:
        """Start connecting a device in the background (first start, or after a dropout)."""
        if device.task is not None and not device.task.done():
            return
        device.state = DeviceState.RECONNECTING if reconnect else DeviceState.CONNECTING
        device.task = asyncio.get_running_loop().create_task(self._connect_loop(device, reconnect))

    async def _connect_loop(self, device: Device, reconnect: bool, first_delay: float = 0.0) -> None:
        attempt = 0
        if first_delay:
            await asyncio.sleep(first_delay)
        while device.state in (DeviceState.CONNECTING, DeviceState.RECONNECTING):
            try:
                async with self._connect_limit:
                    if device.state not in (DeviceState.CONNECTING, DeviceState.RECONNECTING):
                        return
                    await self.transport.connect(device)
            except TransportError as err:
                device.last_error = str(err)
                device.connect_failures += 1
                if attempt == 0 or attempt % 10 == 0:
                    log.info("fleet %s: %s (retrying with backoff)", self.name, err)
                delay = full_jitter(attempt, self.options.reconnect_base_s, self.options.reconnect_cap_s, self._rng)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as err:
                device.last_error = f"unexpected error while connecting: {err!r}"
                self.report_error(f"device '{device.id}': {device.last_error}")
                device.state = DeviceState.ERROR
                return
            self._connected(device, reconnect)
            if device.task is asyncio.current_task():
                device.task = None  # a finished task kept per device would cost ~0.4 KB of each
            return

    def _connected(self, device: Device, reconnect: bool) -> None:
        device.connects += 1
        if reconnect:
            device.reconnects += 1
        if device.topic is None:
            device.topic = self.transport.topic_for(device)
        device.state = DeviceState.RUNNING
        self._flush_offline(device)
        if not device.scheduled:
            self._schedule(device)

    def _schedule(self, device: Device, delay: float = 0.0) -> None:
        """(Re)start the device's sends: each telemetry group first fires ``delay`` seconds from now."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        device.forget_schedule()
        device.scheduled = True
        if device.started_at == 0.0:
            device.started_at = now
        for group in range(len(self.groups)):
            self.sim.scheduler.add(now + delay, device, group, device.gen, self.fire)

    # -- sending ------------------------------------------------------------------------------------------

    def fire(self, device: Device, group: int, due: float, now: float) -> float | None:
        """Scheduler callback: produce one reading of ``group`` and send (or queue) it."""
        interval, names = self.groups[group]
        if device.interval_override_s is not None:
            interval = device.interval_override_s
        state = device.state
        if state is _RUNNING or state is _RECONNECTING or state is _ERROR:
            # Lateness goes into the histogram once per tick (_flush_lateness), not once per send.
            late = self._late.get(interval)
            if late is None:
                if not self._late:
                    self.sim.loop.call_soon(self._flush_lateness)
                late = self._late[interval] = []
            late.append(now - due)
            values = device.values.sample(names, due - device.started_at)
            if self.behaviors:
                self._run_behaviors(device, values)
            if self.sendable[group]:
                ts_ms = self.sim.scheduler.wall_ms
                if state is not _RECONNECTING and self._send_values(device, values, ts_ms):
                    pass
                elif self.qos > 0 and self.options.offline_queue_size:
                    self._queue_offline(device, ts_ms, group, values)
                else:
                    device.dropped += 1
        nxt = due + interval
        if nxt < now:  # fell behind by more than an interval (a stall): skip, do not burst
            nxt = now + interval
        return nxt

    def _flush_lateness(self) -> None:
        """Record the lateness of the sends of the last tick(s) in :attr:`lateness`, equal values counted once.

        The histogram keeps two significant digits (8 bits of mantissa in microseconds), so each value, and each
        sample the coordinated-omission correction adds for a late send (value - interval, value - 2 intervals,
        ...), is cut to that resolution and equal ones are recorded together: one ``record`` per distinct value
        instead of one or more per send (before, the hottest call of a fast fleet). The histogram ends up the same
        as if each send had been recorded on its own.

        The correction counts intervals of at least one scheduler tick: sends due within one tick fire together
        by design, each recorded, so none of them was swallowed (this matters only for intervals shorter than
        the tick, 5 ms, which models cannot give: the max-rate benchmark sets them).
        """
        pending, self._late = self._late, {}
        lateness = self.lateness
        counts: dict[int, int] = {}
        tick_us = int(self.sim.scheduler.tick * 1_000_000)
        for interval, values in pending.items():
            interval_us = max(int(interval * 1_000_000), tick_us)
            # whole microseconds, counted in C (map, Counter): the loop below then runs once per distinct value
            for exact, n in Counter(map(int, map(_MICROSECONDS.__mul__, values))).items():
                us = exact
                if us > interval_us > 0:  # late by more than an interval: the samples a stall swallowed too
                    if us // interval_us > MAX_CORRECTIONS or us >= HIGHEST_US:
                        for _ in range(n):
                            lateness.record_corrected_us(us, interval_us)  # spread over the stall (rare)
                        continue
                    while True:
                        shift = us.bit_length() - 8
                        key = us >> shift << shift if shift > 0 else us
                        counts[key] = counts.get(key, 0) + n
                        if us <= interval_us:
                            break
                        us -= interval_us
                    continue
                if us > 255:
                    shift = us.bit_length() - 8
                    us = us >> shift << shift
                counts[us] = counts.get(us, 0) + n
        for us, n in counts.items():
            lateness.record_corrected_us(us, 0, n)

    def _queue_offline(self, device: Device, ts_ms: int, group: int, values: dict[str, Any]) -> None:
        """Keep a QoS 1/2 reading for after the reconnect; a full queue drops it (counted)."""
        queue = device.offline_queue
        if queue is None:
            queue = device.offline_queue = deque()
        if len(queue) < self.options.offline_queue_size:
            queue.append((ts_ms, group, values))
            device.queued += 1
        else:
            device.dropped += 1

    def _send_values(self, device: Device, values: dict[str, Any], ts_ms: int) -> bool:
        """Encode with the next ``seq`` and hand over; the seq is used only if the transport took it.

        While the endpoint's circuit is open nothing is attempted: the reading counts as failed
        (``circuit_open``) and uses no seq.
        """
        if device.firmware is not None:  # updated: the envelope says which firmware it runs now
            values = {**values, FIRMWARE_KEY: device.firmware}
        payload = self.encoder(device.id, device.seq, ts_ms, values)
        delivery = self.delivery
        if delivery.guarded and not delivery.admit(device, len(payload)):
            return True  # refused and counted: not for the offline queue
        if self.transport.send(device, payload):
            nbytes = len(payload)
            device.seq += 1
            device.sent += 1
            device.bytes_sent += nbytes
            if self._log_sends:
                tlog = device.tlog
                if tlog is None:
                    delivery.record_sent(device, nbytes, ts_ms)  # the first: allocates the device's log
                else:
                    tlog.add_sent(ts_ms, nbytes)
            return True
        if self.qos == 0:  # QoS 1/2 readings go to the offline queue instead (see fire)
            device.failed += 1
        return False

    def _flush_offline(self, device: Device) -> None:
        queue = device.offline_queue
        while queue:
            ts_ms, _group, values = queue[0]
            if not self._send_values(device, values, ts_ms):
                return
            queue.popleft()

    def _run_behaviors(self, device: Device, values: dict[str, Any]) -> None:
        if device.last_values is None:
            device.last_values = {}
            device.behavior_last = [-1e18] * len(self.behaviors)
        merged = device.last_values
        merged.update(values)
        now = asyncio.get_running_loop().time()
        assert device.behavior_last is not None
        for i, (spec, condition, payload_t, topic_t) in enumerate(self.behaviors):
            if not condition.evaluate(merged):
                continue
            if now - device.behavior_last[i] < spec.cooldown_ms / 1000.0:
                continue
            device.behavior_last[i] = now
            variables = {**device.variables(), **merged, "ts": int(time.time() * 1000), "seq": device.seq}
            payload = payload_t.render(variables)
            if not isinstance(payload, (bytes, str)):
                payload = json.dumps(payload, separators=(",", ":"), default=str)
            if isinstance(payload, str):
                payload = payload.encode()
            topic = topic_t.render_text(variables)
            qos = int(spec.action.get("qos", 0))
            # The destination the action names, never the telemetry (an empty one fails in the transport).
            if self.transport.send(device, payload, topic, qos, bool(spec.action.get("retain", False))):
                self.behaviors_fired += 1
                log.info("device %s: behavior '%s' fired (%s)", device.id, spec.name, spec.condition)

    # -- events from the transport -------------------------------------------------------------------

    def connection_lost(self, device: Device, reason: str) -> None:
        device.disconnects += 1
        device.last_error = reason
        if device.state is _RUNNING or device.state is _ERROR:
            log.info("fleet %s: device %s %s; reconnecting", self.name, device.id, reason)
            device.state = DeviceState.RECONNECTING
            delay = full_jitter(0, self.options.reconnect_base_s, self.options.reconnect_cap_s, self._rng)
            device.task = asyncio.get_running_loop().create_task(self._connect_loop(device, True, delay))

    def command_received(self, device: Device, name: str, payload: bytes, topic: str) -> str:
        try:
            params = json.loads(payload) if payload else {}
        except ValueError:
            params = {"raw": payload.decode("utf-8", "replace")}
        if not isinstance(params, dict):
            params = {"value": params}
        record: dict[str, Any] = {
            "command": name,
            "parameters": params,
            "topic": topic,
            "receivedAt": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        if device.commands is None:
            device.commands = []
        seen = sum(1 for c in device.commands if c["command"] == name)  # this device's earlier ones
        device.commands.append(record)
        spec = next((c for c in self.model.commands if c.name == name), None)
        status, detail = self._apply_command(device, name, params, spec, seen, record)
        record["status"], record["detail"] = status, detail
        log.info("device %s: command '%s' %s (%s)", device.id, name, status, detail)
        if spec is not None:
            self._respond(device, spec, status, detail)
        return status

    def _respond(self, device: Device, spec: CommandSpec, status: str, detail: str | None, **extra: Any) -> None:
        """Publish ``{deviceId, command, status, detail, <extra>, ts}`` on the command's ``responseTopic``."""
        if not spec.response_topic:
            return
        topic_out = compile_template(spec.response_topic).render_text({**device.variables(), "command": spec.name})
        body = {"deviceId": device.id, "command": spec.name, "status": status, "detail": detail, **extra}
        body["ts"] = int(time.time() * 1000)
        self.transport.send(device, json.dumps(body, separators=(",", ":")).encode(), topic_out, 1)

    def command_fails(self, device: Device, spec: CommandSpec, nth: int) -> bool:
        """Whether the ``nth`` (0-based) execution of ``spec`` on ``device`` fails, by the command's
        ``failureRate``: the same for the same model, device id, command, ``nth`` and fleet seed (no seed: 0)."""
        if spec.failure_rate <= 0:
            return False
        seed = 0 if self.seed is None else self.seed
        draw = random.Random(f"command:{self.model.id}:{device.id}:{seed}:{spec.name}:{nth}").random()
        return draw < spec.failure_rate

    def _apply_command(
        self,
        device: Device,
        name: str,
        params: dict[str, Any],
        spec: CommandSpec | None,
        nth: int,
        record: dict[str, Any],
    ) -> tuple[str, str]:
        missing = [
            p["name"] for p in (spec.parameters if spec else ()) if p.get("required") and p["name"] not in params
        ]
        if missing:
            return "error", f"missing required parameter(s): {', '.join(missing)}"
        if spec is not None and is_firmware_update(name):
            return self._start_firmware_update(device, spec, params, self.command_fails(device, spec, nth), record)
        if spec is not None and self.command_fails(device, spec, nth):
            return "error", f"failed (simulated: the command's failureRate is {spec.failure_rate:g})"
        lname = name.lower()
        if lname == "reboot":
            delay = float(params.get("delayMs", 0)) / 1000.0
            asyncio.get_running_loop().create_task(self.reboot(device, delay))
            return "ok", f"rebooting in {delay:g} s"
        if lname in ("setinterval", "set_interval"):
            try:
                ms = float(params.get("intervalMs", params.get("value")))
            except (TypeError, ValueError):
                return "error", "setInterval needs a numeric 'intervalMs'"
            if ms < 10:
                return "error", f"intervalMs must be >= 10, got {ms:g}"
            device.interval_override_s = ms / 1000.0
            if device.scheduled:  # apply now, not after the next reading at the old interval
                self._schedule(device, delay=device.interval_override_s)
            return "ok", f"interval set to {ms:g} ms"
        return "ok", "accepted"

    # -- firmware ---------------------------------------------------------------------------------------

    def firmware_of(self, device: Device) -> str | None:
        """The firmware version ``device`` runs: the one its last successful update installed, else the model's."""
        return device.firmware or self.model.firmware_version

    def _start_firmware_update(
        self, device: Device, spec: CommandSpec, params: dict[str, Any], fails: bool, record: dict[str, Any]
    ) -> tuple[str, str]:
        """Check an updateFirmware command and start the update in the background (see :meth:`_update_firmware`)."""
        url = params.get("url", params.get("firmwareUrl"))
        version = firmware_version_of(params.get("version"), url)
        if version is None:
            return "error", "updateFirmware needs a 'version' (e.g. 3.2.0) or a 'url' that names one (.../fw-3.2.0.bin)"
        if device.firmware_update is not None:
            return "error", f"an update to firmware {device.firmware_update[0]} is already in progress"
        task = asyncio.get_running_loop().create_task(
            self._update_firmware(device, spec, version, fails, record), name=f"iotix-firmware-{device.id}"
        )
        device.firmware_update = (version, task)
        return "accepted", f"downloading firmware {version}" + (f" from {url}" if url else "")

    async def _update_firmware(
        self, device: Device, spec: CommandSpec, version: str, fails: bool, record: dict[str, Any]
    ) -> None:
        """Download (progress 0, 25, 50, 75, 100 % over the command's ``durationMs``), install, report, reboot.

        Every step is reported on the command's ``responseTopic``; the command's record gets the final status.
        An install that ``fails`` (the command's ``failureRate``) leaves the version as it was and does not
        reboot. A device that goes down during the download abandons the update.
        """
        previous = self.firmware_of(device)
        duration = (spec.duration_ms if spec.duration_ms is not None else FIRMWARE_DOWNLOAD_MS) / 1000.0
        step = duration / (len(FIRMWARE_PROGRESS) - 1)

        def finish(status: str, detail: str) -> None:
            record["status"], record["detail"] = status, detail
            log.info("device %s: firmware update to %s: %s (%s)", device.id, version, status, detail)

        try:
            for i, progress in enumerate(FIRMWARE_PROGRESS):
                if i:
                    await asyncio.sleep(step)
                if device.state is not _RUNNING and device.state is not _ERROR:
                    finish(
                        "error",
                        f"firmware {version} not installed: the device went {device.state.value} "
                        f"during the download at {FIRMWARE_PROGRESS[i - 1] if i else 0} %",
                    )
                    return
                self._respond(device, spec, "downloading", None, version=version, progress=progress)
            if fails:
                detail = (
                    f"firmware {version} failed to install (simulated: the command's failureRate is "
                    f"{spec.failure_rate:g}); still running {previous}"
                )
                finish("error", detail)
                self._respond(device, spec, "error", detail, version=version, firmwareVersion=previous)
                return
            device.firmware = version
            detail = f"firmware {version} installed (was {previous}); rebooting"
            finish("ok", detail)
            self._respond(
                device, spec, "ok", detail, version=version, previousVersion=previous, firmwareVersion=version
            )
            with contextlib.suppress(Exception):
                await self.transport.drain(FIRMWARE_REPORT_DRAIN_S)  # let the result out before disconnecting
            await self.reboot(device)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug must not pass silently
            finish("error", f"firmware {version} not installed: {err!r}")
            self.report_error(f"device '{device.id}': firmware update to {version} failed unexpectedly: {err!r}")
        finally:
            device.firmware_update = None

    # -- lifecycle of single devices --------------------------------------------------------------------

    async def reboot(self, device: Device, delay: float = 0.0) -> None:
        if device.state is not _RUNNING and device.state is not _ERROR:
            return
        device.state = DeviceState.RECONNECTING
        await self.transport.disconnect(device)
        device.disconnects += 1
        await asyncio.sleep(delay)
        if device.state is DeviceState.RECONNECTING:
            await self._connect_loop(device, True)

    def drop_device(self, device: Device) -> bool:
        """Switch a device off abruptly (no DISCONNECT: its last will fires). False if it was not up."""
        if device.state in (DeviceState.DROPPED, DeviceState.STOPPED, DeviceState.CREATED):
            return False
        if device.task is not None and not device.task.done():
            device.task.cancel()
        device.state = DeviceState.DROPPED
        device.forget_schedule()
        self.transport.drop(device)
        device.disconnects += 1
        self.devices_dropped += 1
        return True

    def restore_device(self, device: Device) -> bool:
        if device.state is not DeviceState.DROPPED:
            return False
        self.bring_up(device, reconnect=True)
        self.devices_restored += 1
        return True

    # -- dropouts -----------------------------------------------------------------------------------------

    def start_dropout(
        self,
        settings: DropoutSettings,
        seed: int | str | None,
        plan: DropoutPlan | None = None,
        start_at: float | None = None,
    ) -> list[str]:
        """Start dropping devices as ``settings`` and ``seed`` choose; returns the ids in drop order.

        A shard of a sharded fleet gets its part of the fleet's one ``plan`` instead, counted from the
        wall-clock time ``start_at``, the same for every shard.
        """
        if self.dropout_task is not None and not self.dropout_task.done():
            raise ConfigurationError(
                f"Fleet '{self.name}' already has a dropout in progress "
                f"({self.dropouts_done} of {len(self.dropout_plan)} steps done); wait for it first."
            )
        if plan is None:
            plan = plan_dropout([d.id for d in self.devices], settings, seed)
        self.dropout_plan = plan
        self.dropouts_done = 0
        now = asyncio.get_running_loop().time()
        self.dropout_started_at = now if start_at is None else now + (start_at - time.time())
        self.dropout_task = asyncio.get_running_loop().create_task(
            self._dropout(plan), name=f"iotix-dropout-{self.name}"
        )
        return [e.device_id for e in plan]

    async def _dropout(self, plan: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        t0 = self.dropout_started_at or loop.time()
        steps: list[tuple[float, int, str, Any]] = []
        for event in plan:
            steps.append((event.drop_at, 0, "drop", event))
            if event.reconnect_at is not None:
                steps.append((event.reconnect_at, 1, "restore", event))
        steps.sort(key=lambda s: (s[0], s[1]))
        for at, _, action, event in steps:
            wait = t0 + at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            device = self.by_id[event.device_id]
            if action == "drop":
                if self.drop_device(device):
                    log.info("fleet %s: dropped %s", self.name, device.id)
            else:
                self.restore_device(device)
            self.dropouts_done += 1

    @property
    def dropout_steps(self) -> int:
        return sum(2 if e.reconnect_at is not None else 1 for e in self.dropout_plan)

    # -- stop -------------------------------------------------------------------------------------------------

    async def stop(self) -> None:
        self.stopping = True  # its seconds from now on are partial in the time series
        for task in (self.launch_task, self.dropout_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        connected = []
        for device in self.devices:  # first stop producing, so that what is in flight can drain
            if device.task is not None and not device.task.done():
                device.task.cancel()
            if device.state in (_RUNNING, _RECONNECTING, DeviceState.CONNECTING, DeviceState.ERROR):
                connected.append(device)
            device.state = DeviceState.STOPPED
            device.forget_schedule()
        with contextlib.suppress(Exception):
            await self.transport.drain(STOP_DRAIN_S)
        for device in connected:
            if self.transport.is_connected(device):
                device.disconnects += 1
            with contextlib.suppress(Exception):
                await self.transport.disconnect(device)
        with contextlib.suppress(Exception):
            await self.transport.close()
        if self.faults is not None:
            close_deferred(self.faults)  # connections a partition kept open underneath (any protocol's sockets)
        self.state = "stopped"
        self.stopping = False
        gc.unfreeze()  # let what the fleet held be collected again

    async def delete(self) -> None:
        """Stop, and end the fleet's network faults (their timers and held bytes); the fleet is not used again."""
        await self.stop()
        if self.faults is not None:
            self.faults.close()

    # -- numbers ---------------------------------------------------------------------------------------------

    def count_states(self) -> dict[str, int]:
        counts = {s.value: 0 for s in DeviceState}
        for d in self.devices:
            counts[d.state.value] += 1
        return counts

    def stats(self) -> dict[str, Any]:
        ds = self.devices
        states = self.count_states()
        lateness = self.lateness.summary()
        return {
            "fleet": self.name,
            "model": self.model.id,
            "protocol": self.model.protocol,
            "target": self.transport.target,
            "state": self.state,
            "deviceCount": len(ds),
            "runningDeviceCount": states["running"],
            "launchedDeviceCount": self.launched,
            "states": states,
            "messagesSent": sum(d.sent for d in ds),
            "messagesAcked": sum(d.acked for d in ds),
            "messagesFailed": sum(d.failed for d in ds),
            "messagesDropped": sum(d.dropped for d in ds),
            "messagesQueued": sum(len(d.offline_queue) for d in ds if d.offline_queue),
            "bytesSent": sum(d.bytes_sent for d in ds),
            "connects": sum(d.connects for d in ds),
            "disconnects": sum(d.disconnects for d in ds),
            "reconnects": sum(d.reconnects for d in ds),
            "connectFailures": sum(d.connect_failures for d in ds),
            "commandsReceived": sum(len(d.commands) for d in ds if d.commands),
            "behaviorsFired": self.behaviors_fired,
            "dropoutStepsDone": self.dropouts_done,
            "dropoutSteps": self.dropout_steps,
            **self.delivery.describe(),
            "sendLatenessMs": lateness,
            "networkFaults": len(self.faults.faults) + (self.faults.outage is not None) if self.faults else 0,
            "networkBacklogBytes": self.faults.backlog() if self.faults is not None else 0,
            "transport": self.transport.describe(),
        }

    def expected_sequences(self) -> dict[str, tuple[int, int]]:
        """Per device, the sequence numbers handed to the transport so far: ``[0, seq)``."""
        return {d.id: (0, d.seq) for d in self.devices}

    # -- what the keyword libraries ask (through the bridge: on the loop) ------------------------------------

    @property
    def target(self) -> str:
        """Where the fleet's transport sends (``host:port``, a URL, a topic)."""
        return self.transport.target

    @property
    def request_based(self) -> bool:
        """Whether each send is a request with an answer (HTTP, CoAP CON, Kafka acks) rather than a publish."""
        return bool(self.transport.request_based)

    @property
    def device_count(self) -> int:
        return len(self.devices)

    def metrics_snapshot(self) -> FleetSnapshot:
        """Counters, gauges and this second's latencies for the fleet's time series (takes the intervals)."""
        return fleet_snapshot(self)

    def device_ids(self, state: DeviceState | None = None) -> list[str]:
        """The ids of the fleet's devices, in order; with ``state`` only those in it."""
        return [d.id for d in self.devices if state is None or d.state is state]

    def count_in(self, state: DeviceState) -> int:
        return sum(d.state is state for d in self.devices)

    def device_status(self, device: Device) -> dict[str, Any]:
        """One device's state and counters, and where it answers when its transport says (CoAP server mode)."""
        out = device.status()
        address = self.transport.device_address(device)
        if address:
            out.update(address)
        return out

    def device_statuses(self) -> list[dict[str, Any]]:
        return [self.device_status(d) for d in self.devices]

    def tls(self) -> FleetTls | None:
        """The fleet's TLS settings from its model's ``connection.tls`` (None: it does not use TLS)."""
        return self.transport.tls or FleetTls.of(self.transport.spec)

    def device_variables(self) -> list[dict[str, Any]]:
        """The ``${...}`` variables of every device (deviceId, index, modelId, fleet)."""
        return [d.variables() for d in self.devices]

    def devices_in_error(self, limit: int = 3) -> list[tuple[str, str | None]]:
        """Up to ``limit`` devices in state error with their last errors."""
        return [(d.id, d.last_error) for d in self.devices if d.state is _ERROR][:limit]

    def transmissions(self, last: int) -> list[tuple[str, dict[str, Any]]]:
        """``(device id, entry)`` of the last ``last`` transmissions of every device, device by device."""
        return [(d.id, e) for d in self.devices if d.tlog is not None for e in d.tlog.entries(last)]

    # launch

    def all_running(self) -> bool:
        """Every device is connected and sending (a fleet of no devices: once its launch is done)."""
        if not self.devices:
            return self.state == "running"
        return all(d.state is _RUNNING for d in self.devices)

    async def wait_until_running(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until :meth:`all_running`; whether it is."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not self.all_running():
            if loop.time() >= end:
                return False
            await asyncio.sleep(0.05)
        return True

    def launch_progress(self) -> tuple[int, int, int]:
        """``(running, devices, launched)``."""
        return self.count_in(_RUNNING), len(self.devices), self.launched

    def not_running_report(self, waited_s: float) -> str:
        """Why not every device runs: how many, their states, and the most common last errors."""
        reasons: dict[str, list[str]] = {}
        for d in self.devices:
            if d.state is not _RUNNING:
                reason = d.last_error or f"still {d.state.value}"
                # Group devices that failed the same way: without the device's own name in the reason.
                reason = reason.removeprefix(f"device '{d.id}': ")
                reasons.setdefault(reason, []).append(d.id)
        states = self.count_states()
        running = states["running"]
        total = len(self.devices)
        parts = [f"Fleet '{self.name}': {total - running} of {total} devices not running after {waited_s:g} s"]
        parts.append(
            f"(launched {self.launched} of {total}; states: "
            + ", ".join(f"{k} {v}" for k, v in states.items() if v)
            + ")."
        )
        for reason, ids in sorted(reasons.items(), key=lambda kv: -len(kv[1]))[:3]:
            sample = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            parts.append(f"{len(ids)} device{'s' if len(ids) != 1 else ''} ({sample}): {reason}.")
        return " ".join(parts)

    # circuit breaker

    @property
    def has_circuit_breaker(self) -> bool:
        """Whether the fleet's sends are guarded by a circuit breaker (request-based, threshold above 0)."""
        return self.delivery.guarded

    def circuit(self) -> CircuitStatus:
        """A snapshot of the fleet's circuit breaker."""
        return self.delivery.circuit_status()

    # dropouts

    @property
    def has_dropout(self) -> bool:
        return self.dropout_task is not None

    def dropout_time_left(self) -> float:
        """Seconds until the last planned step of the current dropout (0 when none is left)."""
        if not self.dropout_plan:
            return 0.0
        last = max(max(e.drop_at, e.reconnect_at or 0.0) for e in self.dropout_plan)
        return max(0.0, self.dropout_started_at + last - asyncio.get_running_loop().time())

    def _not_back(self) -> list[Device]:
        """Devices the dropout plan brings back that are not running (yet)."""
        back = (self.by_id[e.device_id] for e in self.dropout_plan if e.reconnect_at is not None)
        return [d for d in back if d.state is not _RUNNING]

    async def wait_for_dropout(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every step of the dropout is done and every device it
        reconnects runs again; whether that happened. The fleet must have a dropout (:attr:`has_dropout`)."""
        task = self.dropout_task
        if task is None:
            raise ConfigurationError(f"Fleet '{self.name}' has no dropout.")
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            return False
        while self._not_back():
            if loop.time() >= end:
                return False
            await asyncio.sleep(0.05)
        return True

    def dropout_report(self, waited_s: float) -> str:
        """What of the dropout is not done: steps, and devices not back."""
        message = (
            f"Dropout of fleet '{self.name}' not complete after {waited_s:g} s: {self.dropouts_done} of "
            f"{self.dropout_steps} steps done"
        )
        not_back = self._not_back()
        if not_back:
            d = not_back[0]
            message += (
                f"; {len(not_back)} device(s) not back, e.g. {d.id} ({d.state.value}"
                f"{': ' + d.last_error if d.last_error else ''})"
            )
        return message + "."

    def restore_dropped(self) -> list[str]:
        """Bring every dropped device back now; their ids."""
        return [d.id for d in self.devices if self.restore_device(d)]
