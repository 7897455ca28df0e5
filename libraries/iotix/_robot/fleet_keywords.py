"""DeviceFleet components: device models, and fleets (create, start, wait, stop, delete, query)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from robot.api import logger
from robot.api.deco import keyword
from robot.api.types import Secret

from iotix._robot.component import LibraryComponent, awaited
from iotix._robot.convert import seconds
from iotix._robot.types import FleetStats
from iotix.cluster.ray_support import ray_module
from iotix.cluster.sharded import CREATE_TIMEOUT_S, build_sharded_fleet, check_shards
from iotix.errors import ConfigurationError, error_context
from iotix.fleet.device import DeviceState
from iotix.fleet.fleet import FleetOptions
from iotix.fleet.setup import ConnectionOverrides, FleetSetup
from iotix.fleet.timeline import LaunchSettings, LaunchStrategy
from iotix.model.loader import default_model_path, pending_data_files

#: Long waits print their progress to the console this often.
PROGRESS_EVERY_S = 5.0


class ModelKeywords(LibraryComponent):
    """Loading device models."""

    @keyword
    def load_device_models(self, path: Path | None = None, data_dir: Path | None = None) -> list[str]:
        """Loads device models from a JSON/YAML file or a folder of them; returns their ids.

        - ``path``: a model file or a folder (searched recursively; ``schema``, ``data``, ``scenarios`` and
          hidden folders skipped). Default: the folder named by the ``DEVICE_MODEL_PATH`` environment
          variable (the iotix convention), else ``models`` in the working directory.
        - ``data_dir``: a folder replay data files (``dataFile``) may lie under besides the model's own
          folder, e.g. where the absolute ``/data/historical/...`` paths of iotix models live. Folders in
          the ``IOTIX_DATA_PATH`` environment variable (separated by ``:``, ``;`` on Windows) count too.
          An absolute ``dataFile`` outside every such folder does not stop the model from loading (a warning
          says so); `Create Fleet` refuses it and says how to allow it.

        Every file is validated; a broken file fails the keyword with every problem listed (file,
        field path, what was expected). Models already loaded stay loaded. Models are written in the
        IoTix format or in the format of iotix device models (see docs/model-format.md).

        | ${ids} =    Load Device Models    ${CURDIR}/../models
        | Should Contain    ${ids}    environmental-sensor-v1
        | Load Device Models    ${CURDIR}/iotix-models    data_dir=${CURDIR}/historical
        | Load Device Models    # DEVICE_MODEL_PATH, else ./models
        """
        data_dirs = []
        if data_dir is not None:
            if not data_dir.is_dir():
                raise ConfigurationError(
                    f"Load Device Models: data_dir '{data_dir}' is not a folder (it must exist: it is where replay "
                    "data files of the models may lie)"
                )
            data_dirs.append(data_dir)
        where = path if path is not None else default_model_path()
        ids = self.models.load(path, data_dirs)
        logger.info(f"Loaded {len(ids)} model(s) from {where}: {', '.join(ids)}")
        for model_id in ids:
            for field_name, data_file in pending_data_files(self.models.get(model_id)):
                logger.warn(
                    f"Model '{model_id}': field '{field_name}' replays '{data_file}', which is outside the model's "
                    "folder and every data root: Create Fleet will refuse it unless its folder is given as "
                    "data_dir= or in IOTIX_DATA_PATH."
                )
        return ids


class FleetKeywords(LibraryComponent):
    """Fleets: create, start, wait until running, stop, delete, and their counters."""

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
        fault_layer: bool = True,
        source_addresses: str = "",
        shards: int = 1,
    ) -> str:
        """Creates a fleet of ``count`` devices of ``model`` and returns its name. Nothing connects yet.

        - ``model``: a loaded model id (see `Load Device Models`) or a path to a model file.
        - ``name``: defaults to the model id (``-2``, ``-3``, ... appended when taken).
        - ``id_pattern``: device ids, ``{index}`` 0-based, ``{n}`` 1-based, ``{fleet}``, ``{model}``;
          format specs work (``env-{index:05d}``). Default ``<name>-{index}``.
        - ``count``: at least 1 (a fleet of no devices would run and pass while testing nothing).
        - ``seed``: makes every generated value reproducible (default 0).
        - ``host``, ``port`` (1-65535), ``username``, ``password`` (a ``Secret``), ``qos``: override the
          model's ``connection``.
        - ``host`` may name several targets, comma separated: ``host=127.0.0.1:1883,127.0.0.1:1884`` (an entry
          without a port takes ``port``, else the model's port; ``[::1]:1883`` for IPv6). The device with index
          i connects to target i mod n, like devices behind a load balancer in front of a broker cluster.
          MQTT fleets only; `Get Fleet Stats` shows the first targets in ``target`` and all in
          ``transport.targets``.
        - ``source_addresses``: local IPv4 addresses the devices connect from, as a range
          (``127.0.0.2-127.0.0.9``), a comma separated list, or one address (at most 256). The device with
          index i binds to address i mod m, so connections are spread over several (source, destination) pairs
          of 28,232 ephemeral ports each: needed past ~28,000 connections to one broker address. Any 127.x.y.z
          works for a local broker; other addresses must be configured on this machine. MQTT fleets only.
        - ``offline_queue_size``: QoS 1/2 readings kept per device while it reconnects; beyond that they
          are dropped and counted in ``messagesDropped``.
        - ``reconnect_base``, ``reconnect_cap``: exponential backoff with full jitter after a lost connection.
        - ``tls_dir``: the directory where the relative paths of the model's ``connection.tls`` resolve
          (``certs/${deviceId}.pem``); default: the model file's directory.
        - ``max_retries``, ``circuit_threshold``, ``circuit_cooldown``, ``error_threshold``: override the
          model's ``connection.retry.maxRetries``, ``connection.circuitBreaker`` and
          ``connection.errorThreshold`` (HTTP, CoAP CON and Kafka sends; see `Circuit Should Be`).
        - ``transmission_log``: entries kept per device for `Get Transmission Log` (0: none).
        - ``fault_layer``: route the fleet's connections through the network-fault layer, so that Chaos
          keywords (`Add Network Fault`, `Partition Devices`, ...) can act on it at any time. With no fault
          active it passes bytes straight through; ``False`` takes it out for a benchmark of the bare path.

        - ``shards``: split the fleet's devices over this many processes (Ray actors, each running the
          simulator core on its own core), for fleets larger than one process can hold (about 19,000 devices:
          the open-file limit) or faster than one core can drive. Needs the ``cluster`` extra
          (``pip install 'robotframework-iotix[cluster]'``); a local Ray starts on demand unless the library's
          ``ray_address`` or ``IOTIX_RAY_ADDRESS`` names a cluster. Every device is the same device whatever the
          shard count (same id and seed, same payloads); `Start Fleet`, `Stop Fleet`, `Get Fleet Stats` (summed
          over the shards), `Get Devices`, `Get Device Status`, overrides, `Drop Devices`, network faults and
          the Metrics keywords act on the whole fleet. See docs/scale.md.

        Invalid arguments fail the keyword before anything is created, naming the value; so does a fleet
        that needs more sockets than the process may open (its open-file limit), naming both numbers.
        Fleets that already run are not touched.

        The fleet is deleted when the suite that created it ends.

        | ${fleet} =    Create Fleet    environmental-sensor-v1    count=100    id_pattern=env-{index:03d}
        | ...    host=${BROKER}[host]    port=${BROKER}[port]
        | Create Fleet    environmental-sensor-v1    count=60000    name=big
        | ...    host=127.0.0.1:1883,127.0.0.1:1884,127.0.0.1:1885    source_addresses=127.0.0.2-127.0.0.9
        """
        m = self.models.resolve(model)
        # Every argument is checked here, before the loop: a refused fleet leaves the running ones untouched.
        with error_context(f"Create Fleet '{name}'" if name else f"Create Fleet of model '{m.id}'"):
            setup = FleetSetup(
                name=name,
                count=count,
                id_pattern=id_pattern,
                seed=seed,
                connection=ConnectionOverrides(
                    host=host,
                    port=port,
                    qos=qos,
                    username=username,
                    password=password.value if password is not None else None,
                    source_addresses=source_addresses,
                ),
                options=FleetOptions(
                    offline_queue_size=offline_queue_size,
                    reconnect_base_s=seconds(reconnect_base),
                    reconnect_cap_s=seconds(reconnect_cap),
                    tls_dir=tls_dir or None,
                    fault_layer=fault_layer,
                ),
                delivery={
                    "max_retries": max_retries,
                    "circuit_threshold": circuit_threshold,
                    "circuit_cooldown_s": seconds(circuit_cooldown) if circuit_cooldown is not None else None,
                    "error_threshold": error_threshold,
                    "log_size": transmission_log,
                },
            )
            setup.resolve(m)  # the model's retry/breaker settings with the overrides
            if shards != 1:
                check_shards(shards, count if setup.device_ids is None else len(setup.device_ids))
                ray_module(f"shards={shards}")
        sim = self.simulator
        address = self.context.ray_address

        def create() -> tuple[str, str, list[str]]:
            fleet = sim.build_fleet(m, setup)
            return fleet.name, fleet.target, fleet.device_ids()

        async def create_sharded() -> tuple[str, str, list[str]]:
            fleet = await build_sharded_fleet(sim, m, setup, shards, address)
            return fleet.name, fleet.target, fleet.ids

        if shards == 1:
            fleet_name, target, ids = self.call(create)
        else:
            with error_context(f"Create Fleet '{name or m.id}' with {shards} shards"):
                fleet_name, target, ids = self.call(create_sharded, timeout=CREATE_TIMEOUT_S + 60)
        self.own_fleet(fleet_name)
        logger.info(
            f"Created fleet '{fleet_name}': {len(ids)} x {m.id} ({m.protocol}) -> {target}; "
            f"ids {ids[0] if ids else '-'} .. {ids[-1] if ids else '-'}" + (f"; {shards} shards" if shards != 1 else "")
        )
        return fleet_name

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
        fleet = self.checked_fleet(name)
        with error_context(f"Fleet '{name}'"):
            settings = LaunchSettings(
                strategy=strategy,
                delay_ms=seconds(delay) * 1000,
                batch_size=batch_size,
                max_delay_ms=seconds(max_delay) * 1000,
                exponent_base=exponent_base,
            )

        async def start() -> int:
            await awaited(fleet.start(settings))
            return fleet.device_count

        count = self.call(start)
        logger.info(f"Fleet '{name}': launch of {count} devices scheduled ({strategy.value}).")

    @keyword
    def wait_until_fleet_is_running(self, name: str, timeout: timedelta | None = None) -> None:
        """Waits until every device of the fleet is connected and sending.

        ``timeout`` defaults to the library's ``timeout`` (30 seconds unless set at import). Fails after it
        with how many devices are not running and why (their last errors), and at once when the fleet was
        never started or has been stopped. A long wait reports its progress on the console every 5 seconds.

        | Wait Until Fleet Is Running    env    timeout=1 minute
        """
        fleet = self.checked_fleet(name)
        limit = self.timeout_or_default(timeout)

        def not_started() -> str | None:  # nothing would ever connect: fail now, not after the timeout
            if fleet.state == "created":
                return f"Fleet '{name}' was never started: use Start Fleet first."
            if fleet.state == "stopped":
                return f"Fleet '{name}' is stopped: use Start Fleet first."
            return None

        problem = self.call(not_started)
        if problem:
            raise AssertionError(problem)
        started = time.monotonic()
        while True:  # in slices, so that a long launch shows its progress on the console
            remaining = limit - (time.monotonic() - started)
            if self.call_wait(fleet.wait_until_running, max(0.0, min(PROGRESS_EVERY_S, remaining)), limit=limit):
                count = self.call(lambda: fleet.device_count)
                logger.info(f"Fleet '{name}': all {count} devices running.")
                return
            if time.monotonic() - started >= limit:
                raise AssertionError(self.call(fleet.not_running_report, limit))
            running, total, launched = self.call(fleet.launch_progress)
            progress = (
                f"Fleet '{name}': {running:,} of {total:,} devices running after "
                f"{time.monotonic() - started:.0f} s (launched {launched:,})."
            )
            logger.info(progress)
            logger.console(progress)

    @keyword
    def stop_fleet(self, name: str) -> None:
        """Stops every device of the fleet (graceful MQTT DISCONNECT). Counters stay readable.

        The fleet can be started again with `Start Fleet`.
        """
        fleet = self.fleet(name)

        async def stop() -> dict[str, Any]:
            await fleet.stop()
            return await awaited(fleet.stats())

        stats = self.call(stop)
        logger.info(
            f"Fleet '{name}' stopped: {stats['messagesSent']} messages sent, "
            f"{stats['messagesFailed']} failed, {stats['messagesDropped']} dropped."
        )

    @keyword
    def delete_fleet(self, name: str) -> None:
        """Stops the fleet and forgets it; its name and device ids become free again."""
        self.call(self.simulator.delete_fleet, name)
        self.context.disown(f"fleet '{name}'")

    @keyword
    def get_fleets(self) -> list[str]:
        """Returns the names of the fleets of this process."""
        return self.call(self.simulator.fleet_names)

    @keyword
    def get_fleet_stats(self, name: str) -> FleetStats:
        """Returns the fleet's counters as a dictionary.

        | =Key= | =Value= |
        | ``fleet``, ``model``, ``protocol``, ``target`` | what the fleet is and where it sends |
        | ``state`` | ``created``, ``starting``, ``running`` or ``stopped`` |
        | ``deviceCount``, ``runningDeviceCount``, ``launchedDeviceCount`` | devices, of them running, launched |
        | ``states`` | devices per state (``created``, ``connecting``, ``running``, ...) |
        | ``messagesSent`` | handed to the transport (each envelope's ``seq`` counts these per device) |
        | ``messagesAcked`` | acknowledged: MQTT QoS 1/2 PUBACK, HTTP success, CoAP 2.xx, Kafka broker ack |
        | ``messagesFailed`` | not delivered, after retries |
        | ``messagesDropped`` | produced while offline and not kept (QoS 0, or a full offline queue) |
        | ``messagesQueued`` | kept for after a reconnect |
        | ``bytesSent`` | payload bytes handed over |
        | ``connects``, ``disconnects``, ``reconnects``, ``connectFailures`` | connection events |
        | ``commandsReceived``, ``behaviorsFired`` | commands that reached devices, behaviors' events handed over |
        | ``dropoutSteps``, ``dropoutStepsDone`` | the current dropout (see Chaos) |
        | ``circuitState``, ``circuitOpens`` | the circuit breaker (``disabled`` when there is none) |
        | ``retries``, ``failuresByReason`` | request retries, final failures per reason code |
        | ``devicesEnteredError``, ``devicesRecovered`` | devices that went to state error and came back |
        | ``sendLatenessMs`` | how late sends ran against their schedule: ``count``, ``p50``, ``p99``, ``max``, ... |
        | ``transport`` | protocol details, e.g. ``requestLatencyMs`` for HTTP and CoAP (below) |
        | ``shards`` | a sharded fleet only: each shard's device range, ``pid`` and whether it is ``alive`` |

        A behavior's event is never counted as telemetry; the ``transport`` of HTTP, CoAP and Kafka fleets
        counts the events' outcomes in ``eventsSent`` and ``eventsFailed``.

        | ${stats} =    Get Fleet Stats    env
        | Should Be True    ${stats}[messagesSent] > 0
        """
        fleet = self.checked_fleet(name)
        return self.call(fleet.stats)

    @keyword
    def get_devices(self, name: str, state: DeviceState | None = None) -> list[str]:
        """Returns the ids of the fleet's devices, optionally only those in ``state``.

        States: ``created``, ``connecting``, ``running``, ``reconnecting``, ``dropped``, ``stopped``, ``error``.
        """
        fleet = self.checked_fleet(name)
        return self.call(fleet.device_ids, state)

    @keyword
    def devices_in_state_should_be(
        self, name: str, state: DeviceState, count: int, timeout: timedelta = timedelta(0)
    ) -> None:
        """Fails unless exactly ``count`` devices of fleet ``name`` are in ``state``.

        With a ``timeout``, waits up to that long; without one it checks once (an assertion: the library's
        default timeout does not apply). The message lists the states of all devices and the last errors of
        a few devices in state ``error``.

        | Devices In State Should Be    ${fleet}    error    0
        | Devices In State Should Be    ${fleet}    running    20    timeout=15s
        """
        fleet = self.checked_fleet(name)

        async def message() -> str:
            counts = {k: v for k, v in (await awaited(fleet.count_states())).items() if v}
            errors = [f"{device_id}: {error}" for device_id, error in await awaited(fleet.devices_in_error(3))]
            detail = f"; in error: {'; '.join(errors)}" if errors else ""
            return (
                f"Fleet '{name}' has {counts.get(state.value, 0)} devices in state {state.value}, "
                f"expected {count} (states: {counts}){detail}"
            )

        async def reached() -> bool:
            return await awaited(fleet.count_in(state)) == count

        self.poll_until(seconds(timeout), reached, message)
