"""Robot Framework keyword library: break devices and networks on purpose (dropouts, network faults, outages)."""

from __future__ import annotations

from datetime import timedelta

from iotix import __version__
from iotix._robot.dropout_keywords import DropoutKeywords
from iotix._robot.library import DEFAULT_TIMEOUT, IoTixLibrary
from iotix._robot.network_keywords import NetworkFaultKeywords

__all__ = ["Chaos", "__version__"]


class Chaos(IoTixLibrary):
    """Device dropouts and network faults: devices that lose power, links that are slow, lossy, cut off or down.

    = Dropouts =

    A dropped device closes its connection abruptly (no MQTT DISCONNECT, so the broker publishes its
    last will) and stops sending. With ``reconnect`` it comes back after ``reconnect_delay`` and goes on
    where it stopped: its ``seq`` continues, so receivers see no gap for the time it was off.

    Which devices drop is reproducible: the same ``seed`` picks the same devices in the same order.

    = Network faults =

    A fault layer in the simulator's own process (no root, no kernel netem) sits between every fleet and its
    target: `Add Network Fault` (latency, jitter, bandwidth, blackhole, reset, slow close, timeout, data limit,
    slicer; and for CoAP's UDP loss, duplicates, corruption, reordering), `Add MQTT Fault` (drop, delay or
    disconnect on whole MQTT packets), `Partition Devices`, `Apply Network Profile` (gprs, 3g, nb-iot,
    satellite, ...) and `Take Target Down`. The other side sees what it would see on a real network: a
    partitioned MQTT device's connection stays open and silent until the broker's keep-alive fires its last
    will. `Start Network Fault Proxy` puts the same faults in front of any address (a test client, or the
    system under test's own database). Details in docs/network-faults.md.

    Fleets are those of ``iotix.DeviceFleet`` (the libraries share the fleets of the process); a fleet
    must be started before its devices can drop out.

    = Timeouts =

    `Wait Until Dropout Is Complete` waits, when its ``timeout`` is not given, for what is left of the
    dropout's plan plus the library's ``timeout`` (30 seconds unless set when the library is imported,
    see `Importing`).
    """

    def __init__(self, timeout: timedelta = DEFAULT_TIMEOUT) -> None:
        """``timeout``: the time devices get to come back after the last step of a dropout's plan, when
        `Wait Until Dropout Is Complete` is not given a ``timeout`` (default 30 seconds).

        | =Setting= | =Value= | =Value= |
        | Library | iotix.Chaos | timeout=1 minute |
        """
        super().__init__([DropoutKeywords(self), NetworkFaultKeywords(self)], timeout=timeout)
