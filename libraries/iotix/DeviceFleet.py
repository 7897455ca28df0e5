"""Robot Framework keyword library: fleets of virtual IoT devices."""

from __future__ import annotations

from datetime import timedelta

from iotix import __version__
from iotix._robot.certificate_keywords import CertificateKeywords
from iotix._robot.csv_keywords import CsvKeywords
from iotix._robot.delivery_keywords import DeliveryKeywords
from iotix._robot.device_keywords import DeviceKeywords
from iotix._robot.fleet_keywords import FleetKeywords, ModelKeywords
from iotix._robot.library import DEFAULT_TIMEOUT, IoTixLibrary
from iotix._robot.scenario_keywords import ScenarioKeywords

__all__ = ["DeviceFleet", "__version__"]


class DeviceFleet(IoTixLibrary):
    """Creates fleets of virtual IoT devices from device models and runs them against a real system.

    = Fleets and devices =

    A *model* (a JSON or YAML file, see the project's ``docs/model-format.md``) says what a device is
    and what it sends. `Create Fleet` makes ``count`` devices of one model; each device gets an id from
    ``id_pattern`` (``{index}`` is its 0-based position: ``env-{index:05d}`` gives ``env-00000``, ...).
    `Start Fleet` connects the devices following a launch strategy; from then on every device sends its
    telemetry at the model's intervals, in the background, while the test goes on (also during
    ``Sleep``) until `Stop Fleet` or the end of the suite that created the fleet.

    Fleets are named (by default after their model) and device ids are unique in the process, so
    keywords about one device (`Get Device Status`, `Set Telemetry Override`, ...) take just its id.

    The keywords come in groups: models and fleets (`Create Fleet`, `Start Fleet`,
    `Wait Until Fleet Is Running`, `Get Fleet Stats`, ...), sites of several models at once
    (`Create Fleets From Scenario`, with IoTFlow's home, office and factory presets), single devices
    (`Get Device Status`, overrides, received commands), CSV files of devices, transmission logs and the
    circuit breaker, and device certificates for mutual TLS. Dropouts are in the ``iotix.Chaos`` library,
    test clients and receivers in ``iotix.ProtocolClient``, telemetry figures in ``iotix.Metrics``; all
    four libraries share the fleets of the process.

    = Counters =

    `Get Fleet Stats` and `Get Device Status` count what the devices did: ``messagesSent`` is what was
    handed to the transport (each telemetry envelope carries ``seq``, counting from 0 per device, so a
    gap at a receiver means a message was lost on the way), ``messagesFailed`` what could not be handed
    over, ``messagesDropped`` what a device produced while it was offline and could not keep.

    = Timeouts and time =

    Durations accept Robot's time format: ``500ms``, ``2s``, ``1 minute``, or plain seconds.
    Keywords that wait have a ``timeout`` and fail with a message that says what did not happen.
    A wait whose ``timeout`` is not given uses the library's ``timeout`` (30 seconds unless set when the
    library is imported, see `Importing`). Assertions (`Circuit Should Be`, `Devices In State Should Be`)
    check once unless they are given a ``timeout``.

    Runs are deterministic by default: the same model, device id and ``seed`` give the same values.

    = Parallel runs =

    Each process (each pabot worker) has its own simulator. Fleets, device ids and client ids are local
    to the process; make ids unique across workers when they share a broker, e.g.
    ``id_pattern=env-${PABOTQUEUEINDEX}-{index}``.

    = Secrets =

    Passwords are accepted only as Robot ``Secret`` values and are never logged.
    """

    def __init__(self, timeout: timedelta = DEFAULT_TIMEOUT, ray_address: str = "") -> None:
        """``timeout`` is how long keywords wait when their own ``timeout`` is not given (default 30 seconds).

        ``ray_address`` is the Ray cluster that sharded fleets (`Create Fleet` ``shards=``) run on, e.g.
        ``ray://head:10001``; default: ``IOTIX_RAY_ADDRESS``, else a local Ray started when a fleet first asks
        for shards (see docs/scale.md).

        | =Setting= | =Value= | =Value= |
        | Library | iotix.DeviceFleet | |
        | Library | iotix.DeviceFleet | timeout=2 minutes |
        | Library | iotix.DeviceFleet | ray_address=ray://ray-head:10001 |
        """
        super().__init__(
            [
                ModelKeywords(self),
                FleetKeywords(self),
                ScenarioKeywords(self),
                DeviceKeywords(self),
                CsvKeywords(self),
                DeliveryKeywords(self),
                CertificateKeywords(self),
            ],
            timeout=timeout,
        )
        if ray_address:
            self.context.ray_address = ray_address
