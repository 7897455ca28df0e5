"""DeviceFleet component: devices to and from CSV files."""

from __future__ import annotations

from pathlib import Path

from robot.api import logger
from robot.api.deco import keyword

from iotix._robot.component import LibraryComponent
from iotix.fleet.devices_csv import import_fleet, read_device_table, write_devices_csv
from iotix.fleet.setup import ConnectionOverrides, FleetSetup


class CsvKeywords(LibraryComponent):
    """Fleets from CSV files of devices, and a fleet's devices to a CSV file."""

    @keyword("Export Devices To CSV")
    def export_devices_to_csv(self, name: str, path: Path) -> Path:
        """Writes one row per device of the fleet (id, state, counters, last error) to a CSV file.

        Columns: ``deviceId``, ``fleet``, ``model``, ``index``, ``state``, ``messagesSent``,
        ``messagesFailed``, ``messagesDropped``, ``bytesSent``, ``connects``, ``disconnects``,
        ``reconnects``, ``lastError``. Cells that a spreadsheet would run as a formula (starting with ``=``,
        ``+``, ``-``, ``@``) are written with a leading ``'``.
        """
        fleet = self.checked_fleet(name)
        statuses = self.call(fleet.device_statuses)
        count = write_devices_csv(path, fleet.model.id, statuses)
        logger.info(f"Exported {count} devices of fleet '{name}' to {path}.")
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
        model set a per-device override of that field (an empty cell means no override). ``name``,
        ``seed``, ``host`` and ``port`` are as in `Create Fleet`.

        All or nothing: when a row cannot be used, the keyword fails naming the line, device and column,
        and no fleet is left behind.

        | ${fleet} =    Import Devices From CSV    ${CURDIR}/devices.csv    model=temperature-sensor
        """
        table = read_device_table(path)
        m = self.models.resolve(model or table.model_id())
        setup = FleetSetup(name=name, seed=seed, connection=ConnectionOverrides(host=host, port=port))
        fleet = self.call(import_fleet, self.simulator, m, table, setup)
        self.own_fleet(fleet.name)
        fields = table.override_columns(m)
        logger.info(
            f"Imported {len(table.rows)} devices from {path} into fleet '{fleet.name}' "
            f"(overrides: {', '.join(fields) or 'none'})."
        )
        return fleet.name
