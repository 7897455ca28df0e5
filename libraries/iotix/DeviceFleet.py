"""Robot Framework keyword library: fleets of virtual IoT devices."""

from __future__ import annotations

import asyncio
import csv
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from robot.api import logger
from robot.api.deco import keyword, library
from robot.api.types import Secret

from iotix._robot.context import KeywordError, SuiteCleanupListener, get_context
from iotix._robot.convert import neutralise_cell, seconds
from iotix.errors import ConfigurationError
from iotix.fleet.delivery import CircuitState, DeliverySettings
from iotix.fleet.device import Device, DeviceState
from iotix.fleet.fleet import Credentials, Fleet, FleetOptions, format_device_id
from iotix.fleet.timeline import LaunchSettings, LaunchStrategy
from iotix.model.types import DeviceModel

__version__ = "0.1.0"

#: Long waits print their progress to the console this often.
PROGRESS_EVERY_S = 5.0

EXPORT_COLUMNS = [
    "deviceId",
    "fleet",
    "model",
    "index",
    "state",
    "messagesSent",
    "messagesFailed",
    "messagesDropped",
    "bytesSent",
    "connects",
    "disconnects",
    "reconnects",
    "lastError",
]


@library(scope="GLOBAL", version=__version__, auto_keywords=False, listener=SuiteCleanupListener(), doc_format="ROBOT")
class DeviceFleet:
    """Creates fleets of virtual IoT devices from device models and runs them against a real system.

    = Fleets and devices =

    A *model* (a JSON or YAML file, see the project's ``docs/model-format.md``) says what a device is
    and what it sends. `Create Fleet` makes ``count`` devices of one model; each device gets an id from
    ``id_pattern`` (``{index}`` is its 0-based position: ``env-{index:05d}`` gives ``env-00000``, ...).
    `Start Fleet` connects the devices following a launch strategy; from then on every device sends its
    telemetry at the model's intervals, in the background, while the test goes on (also during
    ``Sleep``) until `Stop Fleet` or the end of the suite that created the fleet.

    = Counters =

    `Get Fleet Stats` and `Get Device Status` count what the devices did: ``messagesSent`` is what was
    handed to the transport (each telemetry envelope carries ``seq``, counting from 0 per device, so a
    gap at a receiver means a message was lost on the way), ``messagesFailed`` what could not be handed
    over, ``messagesDropped`` what a device produced while it was offline and could not keep.

    = Timeouts and time =

    Durations accept Robot's time format: ``500ms``, ``2s``, ``1 minute``, or plain seconds.
    Keywords that wait have a ``timeout`` and fail with a message that says what did not happen.
    Runs are deterministic by default: the same model, device id and ``seed`` give the same values.

    = Parallel runs =

    Each process (each pabot worker) has its own simulator. Fleets, device ids and client ids are local
    to the process; make ids unique across workers when they share a broker, e.g.
    ``id_pattern=env-${PABOTQUEUEINDEX}-{index}``.

    = Secrets =

    Passwords are accepted only as Robot ``Secret`` values and are never logged.
    """

    def __init__(self) -> None:
        self._ctx = get_context()

    # -- models ---------------------------------------------------------------------------------------

    @keyword
    def load_device_models(self, path: Path) -> list[str]:
        """Loads device models from a JSON/YAML file or a folder of them; returns their ids.

        Every file is validated; a broken file fails the keyword with every problem listed (file,
        field path, what was expected). Models already loaded stay loaded.

        | ${ids} =    Load Device Models    ${CURDIR}/../models
        | Should Contain    ${ids}    environmental-sensor-v1
        """
        ids = self._ctx.models.load(path)
        logger.info(f"Loaded {len(ids)} model(s) from {path}: {', '.join(ids)}")
        return ids

    def _model(self, model: str) -> DeviceModel:
        if model.endswith((".json", ".yaml", ".yml")) and Path(model).is_file():
            ids = self._ctx.models.load(Path(model))
            return self._ctx.models.get(ids[0])
        return self._ctx.models.get(model)

    # -- fleets ---------------------------------------------------------------------------------------

    @keyword
    def create_fleet(
        self,
        model: str,
        count: int = 1,
        name: str = "",
        id_pattern: str = "",
        seed: int | None = None,
        host: str = "",
        port: int | None = None,
        username: str = "",
        password: Secret = None,  # not "Secret | None": with a union Robot echoes a plain-text value in its error
        qos: int | None = None,
        offline_queue_size: int = 1000,
        reconnect_base: timedelta = timedelta(seconds=0.5),
        reconnect_cap: timedelta = timedelta(seconds=30),
        tls_dir: str = "",
        max_retries: int | None = None,
        circuit_threshold: int | None = None,
        circuit_cooldown: timedelta | None = None,
        error_threshold: int | None = None,
        transmission_log: int = 100,
    ) -> str:
        """Creates a fleet of ``count`` devices of ``model`` and returns its name. Nothing connects yet.

        - ``model``: a loaded model id (see `Load Device Models`) or a path to a model file.
        - ``name``: defaults to the model id (``-2``, ``-3``, ... appended when taken).
        - ``id_pattern``: device ids, ``{index}`` 0-based, ``{n}`` 1-based, ``{fleet}``, ``{model}``;
          format specs work (``env-{index:05d}``). Default ``<name>-{index}``.
        - ``seed``: makes every generated value reproducible (default 0).
        - ``host``, ``port``, ``username``, ``password`` (a ``Secret``), ``qos``: override the model's
          ``connection``.
        - ``offline_queue_size``: QoS 1/2 readings kept per device while it reconnects; beyond that they
          are dropped and counted in ``messagesDropped``.
        - ``reconnect_base``, ``reconnect_cap``: exponential backoff with full jitter after a lost connection.
        - ``tls_dir``: the directory where the relative paths of the model's ``connection.tls`` resolve
          (``certs/${deviceId}.pem``); default: the model file's directory.
        - ``max_retries``, ``circuit_threshold``, ``circuit_cooldown``, ``error_threshold``: override the
          model's ``connection.retry.maxRetries``, ``connection.circuitBreaker`` and
          ``connection.errorThreshold`` (HTTP, CoAP CON and Kafka sends; see `Circuit Should Be`).
        - ``transmission_log``: entries kept per device for `Get Transmission Log` (0: none).

        | ${fleet} =    Create Fleet    environmental-sensor-v1    count=100    id_pattern=env-{index:03d}
        | ...    host=${BROKER}[host]    port=${BROKER}[port]
        """
        m = self._model(model)
        if count < 0:
            raise KeywordError(f"count must be >= 0, got {count}.")
        sim = self._ctx.simulator
        fleet_name = name or self._free_name(m.id)
        pattern = id_pattern or f"{fleet_name}-{{index}}"
        ids = [format_device_id(pattern, i, fleet_name, m.id) for i in range(count)]
        connection = dict(m.connection)
        if host:
            connection["host"] = host
            connection.pop("broker", None)
        if port is not None:
            connection["port"] = port
        if qos is not None:
            if qos not in (0, 1, 2):
                raise KeywordError(f"qos must be 0, 1 or 2, got {qos}.")
            connection["qos"] = qos
        creds = Credentials(
            username or connection.get("username"),
            password.value if password is not None else connection.get("password"),
        )
        options = FleetOptions(
            offline_queue_size=offline_queue_size,
            reconnect_base_s=seconds(reconnect_base),
            reconnect_cap_s=seconds(reconnect_cap),
            tls_dir=tls_dir or None,
        )
        try:
            delivery = DeliverySettings.from_connection(
                connection,
                max_retries=max_retries,
                circuit_threshold=circuit_threshold,
                circuit_cooldown_s=seconds(circuit_cooldown) if circuit_cooldown is not None else None,
                error_threshold=error_threshold,
                log_size=transmission_log,
            )
        except ConfigurationError as err:
            raise KeywordError(f"Create Fleet of model '{m.id}': {err}") from None

        def create() -> Fleet:
            return sim.create_fleet(
                fleet_name,
                m,
                ids,
                seed=seed,
                connection=connection,
                credentials=creds,
                options=options,
                delivery=delivery,
            )

        fleet = self._ctx.call(create)
        self._ctx.own(f"fleet '{fleet_name}'", lambda: self._ctx.call(sim.delete_fleet, fleet_name))
        logger.info(
            f"Created fleet '{fleet_name}': {count} x {m.id} ({m.protocol}) -> {fleet.transport.target}; "
            f"ids {ids[0] if ids else '-'} .. {ids[-1] if ids else '-'}"
        )
        return fleet_name

    def _free_name(self, base: str) -> str:
        taken = self._ctx.simulator.fleets
        if base not in taken:
            return base
        i = 2
        while f"{base}-{i}" in taken:
            i += 1
        return f"{base}-{i}"

    def _fleet(self, name: str) -> Fleet:
        fleet = self._ctx.simulator.fleet(name)
        errors = fleet.take_errors()
        if errors:
            raise KeywordError(f"Fleet '{name}' reported errors in the background: " + "; ".join(errors))
        return fleet

    @keyword
    def start_fleet(
        self,
        name: str,
        strategy: LaunchStrategy = LaunchStrategy.IMMEDIATE,
        delay: timedelta = timedelta(0),
        batch_size: int = 100,
        max_delay: timedelta = timedelta(seconds=60),
        exponent_base: float = 1.5,
    ) -> None:
        """Starts connecting the fleet's devices following a launch strategy; returns at once.

        - ``immediate``: all at once (connection attempts are still bounded per fleet).
        - ``linear``: one device every ``delay``.
        - ``batch``: ``batch_size`` devices, then ``delay``, then the next batch.
        - ``exponential``: the gap before device i is ``delay * exponent_base^(i-1)``, at most ``max_delay``.

        Use `Wait Until Fleet Is Running` to wait for the devices to connect.

        | Start Fleet    env    strategy=batch    batch_size=100    delay=1s
        """
        fleet = self._fleet(name)
        try:
            settings = LaunchSettings(
                strategy=strategy,
                delay_ms=seconds(delay) * 1000,
                batch_size=batch_size,
                max_delay_ms=seconds(max_delay) * 1000,
                exponent_base=exponent_base,
            )
        except ConfigurationError as err:
            raise KeywordError(f"Fleet '{name}': {err}") from None
        self._ctx.call(fleet.start, settings)
        logger.info(f"Fleet '{name}': launch of {len(fleet.devices)} devices scheduled ({strategy.value}).")

    @keyword
    def wait_until_fleet_is_running(self, name: str, timeout: timedelta = timedelta(seconds=30)) -> None:
        """Waits until every device of the fleet is connected and sending.

        Fails after ``timeout`` with how many devices are not running and why (their last errors), and at
        once when the fleet was never started or has been stopped.

        | Wait Until Fleet Is Running    env    timeout=1 minute
        """
        fleet = self._fleet(name)
        limit = seconds(timeout)
        if fleet.state in ("created", "stopped"):  # nothing would ever connect: fail now, not after the timeout
            what = "was never started" if fleet.state == "created" else "is stopped"
            raise AssertionError(f"Fleet '{name}' {what}: use Start Fleet first.")

        async def wait(span: float) -> bool:
            loop = asyncio.get_running_loop()
            end = loop.time() + span
            while True:
                if fleet.devices and all(d.state is DeviceState.RUNNING for d in fleet.devices):
                    return True
                if not fleet.devices and fleet.state == "running":
                    return True
                if loop.time() >= end:
                    return False
                await asyncio.sleep(0.05)

        started = time.monotonic()
        while True:  # in slices, so that a long launch shows its progress on the console
            remaining = limit - (time.monotonic() - started)
            if self._ctx.call(wait, max(0.0, min(PROGRESS_EVERY_S, remaining)), timeout=limit + 10):
                logger.info(f"Fleet '{name}': all {len(fleet.devices)} devices running.")
                return
            if time.monotonic() - started >= limit:
                raise AssertionError(self._not_running_message(fleet, limit))
            running = self._ctx.call(lambda: fleet.count_states()["running"])
            progress = (
                f"Fleet '{name}': {running:,} of {len(fleet.devices):,} devices running after "
                f"{time.monotonic() - started:.0f} s (launched {fleet.launched:,})."
            )
            logger.info(progress)
            logger.console(progress)

    def _not_running_message(self, fleet: Fleet, limit: float) -> str:
        def collect() -> tuple[dict[str, int], dict[str, list[str]]]:
            reasons: dict[str, list[str]] = {}
            for d in fleet.devices:
                if d.state is not DeviceState.RUNNING:
                    reason = d.last_error or f"still {d.state.value}"
                    # Group devices that failed the same way: without the device's own name in the reason.
                    reason = reason.removeprefix(f"device '{d.id}': ")
                    reasons.setdefault(reason, []).append(d.id)
            return fleet.count_states(), reasons

        states, reasons = self._ctx.call(collect)
        running = states["running"]
        total = len(fleet.devices)
        parts = [f"Fleet '{fleet.name}': {total - running} of {total} devices not running after {limit:g} s"]
        parts.append(
            f"(launched {fleet.launched} of {total}; states: "
            + ", ".join(f"{k} {v}" for k, v in states.items() if v)
            + ")."
        )
        for reason, ids in sorted(reasons.items(), key=lambda kv: -len(kv[1]))[:3]:
            sample = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            parts.append(f"{len(ids)} device{'s' if len(ids) != 1 else ''} ({sample}): {reason}.")
        return " ".join(parts)

    @keyword
    def stop_fleet(self, name: str) -> None:
        """Stops every device of the fleet (graceful MQTT DISCONNECT). Counters stay readable.

        The fleet can be started again with `Start Fleet`.
        """
        fleet = self._ctx.simulator.fleet(name)
        self._ctx.call(fleet.stop)
        stats = fleet.stats()
        logger.info(
            f"Fleet '{name}' stopped: {stats['messagesSent']} messages sent, "
            f"{stats['messagesFailed']} failed, {stats['messagesDropped']} dropped."
        )

    @keyword
    def delete_fleet(self, name: str) -> None:
        """Stops the fleet and forgets it; its name and device ids become free again."""
        self._ctx.call(self._ctx.simulator.delete_fleet, name)
        self._ctx.disown(f"fleet '{name}'")

    @keyword
    def get_fleets(self) -> list[str]:
        """Returns the names of the fleets of this process."""
        return list(self._ctx.simulator.fleets)

    @keyword
    def get_fleet_stats(self, name: str) -> dict[str, Any]:
        """Returns the fleet's counters as a dictionary.

        Keys include ``deviceCount``, ``runningDeviceCount``, ``messagesSent``, ``messagesAcked``
        (acknowledged by the target: MQTT QoS 1/2 PUBACK, HTTP success status, CoAP 2.xx),
        ``messagesFailed``, ``messagesDropped``, ``messagesQueued``, ``bytesSent``, ``connects``,
        ``disconnects``, ``reconnects``, ``connectFailures``, ``commandsReceived``, ``behaviorsFired``,
        ``states`` (devices per state), ``sendLatenessMs`` (how late sends ran against their schedule:
        p50, p99, max) and ``transport`` (protocol details, e.g. ``requestLatencyMs`` for HTTP and CoAP).

        | ${stats} =    Get Fleet Stats    env
        | Should Be True    ${stats}[messagesSent] > 0
        """
        fleet = self._fleet(name)
        return self._ctx.call(fleet.stats)

    @keyword
    def get_devices(self, name: str, state: DeviceState | None = None) -> list[str]:
        """Returns the ids of the fleet's devices, optionally only those in ``state``.

        States: ``created``, ``connecting``, ``running``, ``reconnecting``, ``dropped``, ``stopped``, ``error``.
        """
        fleet = self._fleet(name)
        return [d.id for d in fleet.devices if state is None or d.state is state]

    @keyword
    def get_device_status(self, device_id: str) -> dict[str, Any]:
        """Returns one device's state, counters and last error.

        A CoAP device in server mode also has ``port`` and ``url`` (``coap://host:port``): where it
        answers, e.g. for `Observe CoAP Resource` on ``${status}[url]/telemetry``.
        """
        device = self._ctx.simulator.find_device(device_id)

        def status() -> dict[str, Any]:
            out = device.status()
            transport = device.fleet.transport
            port_of = getattr(transport, "server_port_of", None)
            port = port_of(device) if port_of is not None else None
            if port:
                host = str(transport.host)
                out["port"] = port
                out["url"] = f"coap://{f'[{host}]' if ':' in host else host}:{port}"
            return out

        return self._ctx.call(status)

    @keyword
    def set_telemetry_override(self, device_id: str, field: str, value: Any) -> None:
        """Forces ``field`` of a device to ``value`` until `Clear Telemetry Override`.

        Use it to make a behavior fire (heart rate 130 triggers the ECG arrhythmia alert). The value is
        converted to the field's type; the generator keeps running underneath.

        | Set Telemetry Override    ecg-0    heartRate    130
        """
        device = self._device_with_field(device_id, field)
        try:
            self._ctx.call(device.values.set_override, field, value)
        except ConfigurationError as err:
            field_type = device.fleet.model.get_field(field).type
            raise KeywordError(
                f"Cannot override '{field}' of device '{device_id}' with {value!r}: {err} "
                f"(the field is of type {field_type})."
            ) from None

    @keyword
    def clear_telemetry_override(self, device_id: str, field: str) -> None:
        """Lets ``field`` of a device follow its generator again (nothing happens if it has no override)."""
        device = self._device_with_field(device_id, field)
        self._ctx.call(device.values.clear_override, field)

    def _device_with_field(self, device_id: str, field: str) -> Device:
        device = self._ctx.simulator.find_device(device_id)
        if field not in device.fleet.model.field_names:
            raise KeywordError(
                f"Device '{device_id}' (model '{device.fleet.model.id}') has no telemetry field "
                f"'{field}'; fields: {', '.join(device.fleet.model.field_names)}."
            )
        return device

    @keyword
    def get_received_commands(self, device_id: str) -> list[dict[str, Any]]:
        """Returns the commands the device received, oldest first.

        Each item has ``command``, ``parameters``, ``topic``, ``receivedAt`` and ``status``.
        """
        device = self._ctx.simulator.find_device(device_id)
        return self._ctx.call(lambda: [dict(c) for c in device.commands or []])

    # -- CSV -------------------------------------------------------------------------------------------

    @keyword
    def get_transmission_log(self, device_id: str, last: int = 100) -> list[dict[str, Any]]:
        """Returns the device's last ``last`` transmissions, oldest first.

        Each entry: ``time`` (UTC, ISO 8601), ``bytes``, ``result``, ``latencyMs`` and ``error``.
        Results: ``ok`` (acknowledged: HTTP 2xx, CoAP ACK, Kafka broker ack), ``sent`` (MQTT: handed to the
        broker connection), ``retrying`` (failed, tried again), ``failed``, ``circuit_open`` (not attempted:
        the fleet's circuit is open). The log keeps the last ``transmission_log`` entries (`Create Fleet`).

        | ${log} =    Get Transmission Log    vehicle-3    last=10
        | Should Be Equal    ${log}[-1][result]    ok
        """
        if last < 1:
            raise KeywordError(f"last must be >= 1, got {last}.")
        device = self._ctx.simulator.find_device(device_id)
        return self._ctx.call(lambda: list(device.tlog.entries(last)) if device.tlog is not None else [])

    @keyword
    def export_transmission_log(self, name: str, path: Path, last: int = 100) -> Path:
        """Writes the transmission logs of all devices of fleet ``name`` to a CSV file and returns its path.

        Columns: ``deviceId``, ``time``, ``bytes``, ``result``, ``latencyMs``, ``error``; up to ``last``
        entries per device. Cells that a spreadsheet would run as a formula are written with a leading ``'``.
        """
        fleet = self._fleet(name)

        def rows() -> list[list[Any]]:
            out = []
            for d in fleet.devices:
                if d.tlog is not None:
                    out.extend([d.id, *e.values()] for e in d.tlog.entries(last))
            return out

        data = self._ctx.call(rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["deviceId", "time", "bytes", "result", "latencyMs", "error"])
            writer.writerows([neutralise_cell(cell) for cell in row] for row in data)
        logger.info(f"Exported {len(data)} transmissions of fleet '{name}' to {path}.")
        return path

    @keyword
    def circuit_should_be(self, name: str, state: CircuitState, timeout: timedelta = timedelta(0)) -> None:
        """Fails unless the circuit breaker of fleet ``name`` is in ``state``: ``open``, ``closed`` or ``half_open``.

        With a ``timeout``, waits up to that long for the state. The breaker guards HTTP, CoAP CON and
        Kafka sends: it opens after ``failureThreshold`` consecutive failures, half-opens after
        ``cooldownMs`` (one trial send) and closes when a send succeeds.

        | Circuit Should Be    ${fleet}    open    timeout=10s
        """
        fleet = self._fleet(name)
        if not fleet.delivery.guarded:
            raise KeywordError(
                f"Fleet '{name}' has no circuit breaker ({fleet.model.protocol} sends are not requests, "
                "or circuit_threshold is 0)."
            )
        self._wait_for(
            timeout,
            lambda: fleet.delivery.breaker.state is state,
            lambda: (
                f"Circuit of fleet '{name}' ({fleet.delivery.breaker.endpoint}) is "
                f"{fleet.delivery.breaker.state.value}, expected {state.value}; "
                f"{fleet.delivery.breaker.failures} consecutive failures, last: "
                f"{fleet.delivery.breaker.last_reason or '-'}"
            ),
        )

    @keyword
    def devices_in_state_should_be(
        self, name: str, state: DeviceState, count: int, timeout: timedelta = timedelta(0)
    ) -> None:
        """Fails unless exactly ``count`` devices of fleet ``name`` are in ``state``.

        With a ``timeout``, waits up to that long. The message lists the states of all devices and the last
        errors of a few devices in state ``error``.

        | Devices In State Should Be    ${fleet}    error    0
        | Devices In State Should Be    ${fleet}    running    20    timeout=15s
        """
        fleet = self._fleet(name)

        def message() -> str:
            counts = {k: v for k, v in fleet.count_states().items() if v}
            errors = [f"{d.id}: {d.last_error}" for d in fleet.devices if d.state is DeviceState.ERROR][:3]
            detail = f"; in error: {'; '.join(errors)}" if errors else ""
            return (
                f"Fleet '{name}' has {counts.get(state.value, 0)} devices in state {state.value}, "
                f"expected {count} (states: {counts}){detail}"
            )

        self._wait_for(timeout, lambda: sum(d.state is state for d in fleet.devices) == count, message)

    def _wait_for(self, timeout: timedelta, condition: Any, message: Any) -> None:
        """Poll ``condition`` on the loop until true or ``timeout``; fail with ``message()`` (built on the loop)."""
        deadline = time.monotonic() + seconds(timeout)
        while not self._ctx.call(condition):
            if time.monotonic() >= deadline:
                raise KeywordError(self._ctx.call(message))
            time.sleep(0.1)

    @keyword("Export Devices To CSV")
    def export_devices_to_csv(self, name: str, path: Path) -> Path:
        """Writes one row per device of the fleet (id, state, counters, last error) to a CSV file.

        Cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``) are
        written with a leading ``'``.
        """
        fleet = self._fleet(name)
        rows = self._ctx.call(lambda: [d.status() for d in fleet.devices])
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(EXPORT_COLUMNS)
            for status in rows:
                row = {**status, "model": fleet.model.id}
                writer.writerow([neutralise_cell(row.get(c)) for c in EXPORT_COLUMNS])
        logger.info(f"Exported {len(rows)} devices of fleet '{name}' to {path}.")
        return path

    @keyword("Import Devices From CSV")
    def import_devices_from_csv(
        self,
        path: Path,
        model: str = "",
        name: str = "",
        seed: int | None = None,
        host: str = "",
        port: int | None = None,
    ) -> str:
        """Creates a fleet from a CSV file of devices; returns the fleet name.

        The file needs a ``deviceId`` column. A ``model`` column is used when the ``model`` argument is
        not given (all rows must then name the same model). Columns named like a telemetry field of the
        model set a per-device override of that field (an empty cell means no override).

        | ${fleet} =    Import Devices From CSV    ${CURDIR}/devices.csv    model=temperature-sensor
        """
        if not path.is_file():
            raise KeywordError(f"Device CSV '{path}' does not exist.")
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = reader.fieldnames or []
        if "deviceId" not in columns:
            raise KeywordError(f"Device CSV '{path}' needs a 'deviceId' column; it has: {', '.join(columns)}.")
        ids = [(r.get("deviceId") or "").strip() for r in rows]
        blank = [i + 2 for i, d in enumerate(ids) if not d]
        if blank:
            raise KeywordError(f"Device CSV '{path}': empty deviceId on line(s) {', '.join(map(str, blank[:5]))}.")
        model_id = model or _single_model(path, rows)
        m = self._model(model_id)
        fleet_name = self.create_fleet(m.id, count=0, name=name, seed=seed, host=host, port=port)
        sim = self._ctx.simulator

        def rebuild() -> Fleet:
            old = sim.fleets.pop(fleet_name)
            try:
                return sim.create_fleet(
                    fleet_name,
                    m,
                    ids,
                    seed=seed,
                    connection=old.connection,
                    credentials=old.credentials,
                    options=old.options,
                )
            except Exception:
                sim.fleets[fleet_name] = old
                raise

        try:
            fleet = self._ctx.call(rebuild)
        except ConfigurationError as err:
            self.delete_fleet(fleet_name)
            raise KeywordError(f"Device CSV '{path}': {err}") from None
        fields = [c for c in columns if c in m.field_names]
        for line, row in enumerate(rows, start=2):
            device = fleet.by_id[row["deviceId"].strip()]
            for f in fields:
                cell = (row.get(f) or "").strip()
                if cell:
                    try:
                        self._ctx.call(device.values.set_override, f, cell)
                    except (ValueError, TypeError, ConfigurationError) as err:
                        self.delete_fleet(fleet_name)  # all or nothing: no half-configured fleet stays behind
                        raise KeywordError(
                            f"Device CSV '{path}', line {line}, device '{device.id}', column '{f}': {err}"
                        ) from None
        logger.info(
            f"Imported {len(ids)} devices from {path} into fleet '{fleet_name}' "
            f"(overrides: {', '.join(fields) or 'none'})."
        )
        return fleet_name

    # -- certificates ----------------------------------------------------------------------------------

    @keyword
    def create_device_certificates(
        self, fleet: str, ca_dir: Path, expired: bool = False, days: int = 365
    ) -> dict[str, Any]:
        """Signs one client certificate per device of ``fleet`` with the CA in ``ca_dir``, where the devices
        will look for them; returns ``directory``, ``count`` and ``caFile``.

        The fleet must have been created with ``tls_dir`` (see `Create Fleet`) from a model whose
        ``connection.tls`` has ``certFile`` and ``keyFile`` patterns such as ``certs/${deviceId}.pem`` and
        ``certs/${deviceId}.key``: each device's certificate (subject common name = its device id, EC
        P-256) and key (mode 0600) are written to the paths those patterns give under ``tls_dir``. When
        ``caFile`` is a relative path too (``certs/ca.pem``), the CA certificate is copied there. The CA
        (``ca.pem``, ``ca.key``) is created in ``ca_dir`` unless it is there; use the ``ca_dir`` of
        `Start Local MQTT Broker` ``tls=True`` so that the broker trusts the devices.

        - ``expired``: make certificates that expired yesterday (to test refused devices).
        - ``days``: how long the certificates are valid.

        Certificates already there are replaced. Private keys are never logged.

        | ${secure} =    Start Local MQTT Broker    tls=True    ca_dir=${WORKDIR}/ca
        | ${fleet} =    Create Fleet    secure-env-sensor    count=10    tls_dir=${WORKDIR}/devices
        | ...    host=${secure}[host]    port=${secure}[port]
        | ${certs} =    Create Device Certificates    ${fleet}    ${secure}[caDir]
        | Start Fleet    ${fleet}
        """
        from iotix.security.certs import create_device_certificates, device_targets, load_or_create_ca
        from iotix.transport.tls import FleetTls

        f = self._ctx.simulator.fleet(fleet)
        tls_dir = f.options.tls_dir
        if not tls_dir:
            raise KeywordError(
                f"Fleet '{fleet}' has no tls_dir: create it with Create Fleet and tls_dir=<a folder for its "
                "certificates>, so that private keys are not written next to the model file."
            )
        if days < 1:
            raise KeywordError(f"days must be >= 1, got {days}.")

        def resolve() -> tuple[FleetTls | None, list[dict[str, Any]]]:
            tls = getattr(f.transport, "tls", None) or FleetTls.of(f)
            return tls, [d.variables() for d in f.devices]

        try:
            tls, devices = self._ctx.call(resolve)
        except ConfigurationError as err:
            raise KeywordError(str(err)) from None
        cert_pattern = tls.pattern("certFile") if tls is not None else None
        key_pattern = tls.pattern("keyFile") if tls is not None else None
        if tls is None or cert_pattern is None or key_pattern is None:
            raise KeywordError(
                f"Fleet '{fleet}' (model '{f.model.id}') has no connection.tls with certFile and keyFile: "
                "its devices would not use client certificates."
            )
        if tls.fleet_path("certFile") is not None:
            raise KeywordError(
                f"Fleet '{fleet}': connection.tls.certFile '{cert_pattern}' is the same file for every device; "
                "use a per-device pattern such as certs/${deviceId}.pem."
            )
        base = tls.base_dir
        ca_file = tls.fleet_path("caFile")
        ca_copy = ca_file if ca_file is not None and ca_file.is_relative_to(base) else None
        try:
            ca = load_or_create_ca(ca_dir)
            targets = device_targets(base, devices, cert_pattern=cert_pattern, key_pattern=key_pattern)
            count = create_device_certificates(ca, targets, days=days, expired=expired, ca_copy=ca_copy)
        except (ConfigurationError, OSError) as err:
            raise KeywordError(f"Cannot create the certificates of fleet '{fleet}': {err}") from None
        state = "expired " if expired else ""
        logger.info(
            f"Fleet '{fleet}': {count} {state}device certificates signed by '{ca.common_name}' ({ca.cert_path}) "
            f"written under {base} ({cert_pattern}, {key_pattern})"
            + (f"; CA certificate copied to {ca_copy}." if ca_copy else ".")
        )
        return {"directory": str(base), "count": count, "caFile": str(ca_copy or ca.cert_path)}


def _single_model(path: Path, rows: list[dict[str, str]]) -> str:
    models = {(r.get("model") or "").strip() for r in rows} - {""}
    if len(models) != 1:
        raise KeywordError(
            f"Device CSV '{path}': give model= or a 'model' column naming one model "
            f"(found: {', '.join(sorted(models)) or 'none'})."
        )
    return models.pop()
