"""Robot Framework keyword library: telemetry figures of a fleet (loss, duplicates, latency), as numbers."""

from __future__ import annotations

from datetime import timedelta

from iotix import __version__
from iotix._robot.library import IoTixLibrary
from iotix._robot.report_keywords import ReportKeywords

__all__ = ["Metrics", "__version__"]

#: Metrics' default timeout: a grace for messages still on their way, not a wait for something to happen.
METRICS_TIMEOUT = timedelta(seconds=5)


class Metrics(IoTixLibrary):
    """Figures about what a fleet's telemetry did on the way: per-device loss, duplicates, reordering and
    end-to-end latency (receive time minus the envelope's ``ts``), from a receiver of ProtocolClient.

    Fleets are those of ``iotix.DeviceFleet`` and receivers those of ``iotix.ProtocolClient`` (MQTT
    subscriptions, the local CoAP server and observations, the local IoTFlow backend, Kafka subscriptions):
    the libraries share them within the process. ``source`` names a receiver; by default it is the one
    that can have heard the fleet.

    = Timeouts =

    A report waits for messages still on their way for up to its ``timeout``; left out, that is the
    library's ``timeout``, 5 seconds unless set when the library is imported (see `Importing`). It is
    shorter than the other libraries' default because a report describes what arrived rather than waiting
    for something to happen: lost messages never arrive, and the report should not wait long for them.
    """

    def __init__(self, timeout: timedelta = METRICS_TIMEOUT) -> None:
        """``timeout``: how long reports wait for messages still on their way unless given their own
        ``timeout`` (default 5 seconds).

        | =Setting= | =Value= | =Value= |
        | Library | iotix.Metrics | timeout=10s |
        """
        super().__init__([ReportKeywords(self)], timeout=timeout)
