"""Robot Framework keyword library: break devices on purpose (dropouts and reconnects)."""

from __future__ import annotations

from datetime import timedelta

from iotix import __version__
from iotix._robot.dropout_keywords import DropoutKeywords
from iotix._robot.library import DEFAULT_TIMEOUT, IoTixLibrary

__all__ = ["Chaos", "__version__"]


class Chaos(IoTixLibrary):
    """Device dropouts: devices that lose power or network, in patterns, and come back (or not).

    A dropped device closes its connection abruptly (no MQTT DISCONNECT, so the broker publishes its
    last will) and stops sending. With ``reconnect`` it comes back after ``reconnect_delay`` and goes on
    where it stopped: its ``seq`` continues, so receivers see no gap for the time it was off.

    Which devices drop is reproducible: the same ``seed`` picks the same devices in the same order.

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
        super().__init__([DropoutKeywords(self)], timeout=timeout)
