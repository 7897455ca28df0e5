"""DeviceFleet component: what happened to each send (transmission logs) and the circuit breaker."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from robot.api import logger
from robot.api.deco import keyword

from iotix._robot.component import LibraryComponent
from iotix._robot.context import KeywordError
from iotix._robot.convert import seconds
from iotix._robot.types import TransmissionLogEntry
from iotix.fleet.delivery import CircuitState
from iotix.fleet.devices_csv import write_transmissions_csv


class DeliveryKeywords(LibraryComponent):
    """Transmission logs of devices and fleets, and the fleet's circuit breaker."""

    @keyword
    def get_transmission_log(self, device_id: str, last: int = 100) -> list[TransmissionLogEntry]:
        """Returns the device's last ``last`` transmissions, oldest first.

        | =Key= | =Value= |
        | ``time`` | when (UTC, ISO 8601) |
        | ``bytes`` | payload size |
        | ``result`` | see below |
        | ``latencyMs`` | until the acknowledgement (None when there was none) |
        | ``error`` | the reason of a failure (None for a success) |

        Results: ``ok`` (acknowledged: HTTP 2xx, CoAP ACK, Kafka broker ack), ``sent`` (MQTT: handed to the
        broker connection), ``retrying`` (failed, tried again), ``failed``, ``circuit_open`` (not attempted:
        the fleet's circuit is open). The log keeps the last ``transmission_log`` entries (`Create Fleet`).

        | ${log} =    Get Transmission Log    vehicle-3    last=10
        | Should Be Equal    ${log}[-1][result]    ok
        """
        if last < 1:
            raise KeywordError(f"last must be >= 1, got {last}.")
        device = self.device(device_id)
        return self.call(lambda: list(device.tlog.entries(last)) if device.tlog is not None else [])

    @keyword
    def export_transmission_log(self, name: str, path: Path, last: int = 100) -> Path:
        """Writes the transmission logs of all devices of fleet ``name`` to a CSV file and returns its path.

        Columns: ``deviceId``, ``time``, ``bytes``, ``result``, ``latencyMs``, ``error``; up to ``last``
        entries per device. Cells that a spreadsheet would run as a formula are written with a leading ``'``.
        """
        fleet = self.checked_fleet(name)
        count = write_transmissions_csv(path, self.call(fleet.transmissions, last))
        logger.info(f"Exported {count} transmissions of fleet '{name}' to {path}.")
        return path

    @keyword
    def circuit_should_be(self, name: str, state: CircuitState, timeout: timedelta = timedelta(0)) -> None:
        """Fails unless the circuit breaker of fleet ``name`` is in ``state``: ``open``, ``closed`` or ``half_open``.

        With a ``timeout``, waits up to that long for the state; without one it checks once (an assertion:
        the library's default timeout does not apply). The breaker guards HTTP, CoAP CON and Kafka sends: it
        opens after ``failureThreshold`` consecutive failures, half-opens after ``cooldownMs`` (one trial
        send) and closes when a send succeeds.

        | Circuit Should Be    ${fleet}    open    timeout=10s
        """
        fleet = self.checked_fleet(name)
        if not self.call(lambda: fleet.has_circuit_breaker):
            raise KeywordError(
                f"Fleet '{name}' has no circuit breaker ({fleet.model.protocol} sends are not requests, "
                "or circuit_threshold is 0)."
            )

        def message() -> str:
            circuit = fleet.circuit()
            return (
                f"Circuit of fleet '{name}' ({circuit.endpoint}) is {circuit.state.value}, expected "
                f"{state.value}; {circuit.failures} consecutive failures, last: {circuit.last_reason or '-'}"
            )

        self.poll_until(seconds(timeout), lambda: fleet.circuit().state is state, message)
