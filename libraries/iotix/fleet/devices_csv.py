"""Devices as CSV files: a fleet made from a file of device ids (with per-device overrides), and a fleet's
devices and transmissions written to files a spreadsheet opens safely."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iotix.errors import ConfigurationError, NotFoundError, error_context
from iotix.model.types import DeviceModel

if TYPE_CHECKING:
    from iotix.fleet.fleet import Fleet
    from iotix.fleet.setup import FleetSetup
    from iotix.fleet.simulator import Simulator

#: A cell starting with one of these runs as a formula in a spreadsheet.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

DEVICE_COLUMNS = [
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
TRANSMISSION_COLUMNS = ["deviceId", "time", "bytes", "result", "latencyMs", "error"]


def neutralise_cell(value: Any) -> Any:
    """Make a CSV cell safe to open in a spreadsheet: text that would run as a formula gets a leading '."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


@dataclass(frozen=True)
class DeviceTable:
    """The rows of a device CSV file: a ``deviceId`` column, optionally ``model`` and telemetry fields."""

    path: Path
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]

    @property
    def ids(self) -> list[str]:
        return [(r.get("deviceId") or "").strip() for r in self.rows]

    def model_id(self) -> str:
        """The one model the ``model`` column names."""
        models = {(r.get("model") or "").strip() for r in self.rows} - {""}
        if len(models) != 1:
            raise ConfigurationError(
                f"Device CSV '{self.path}': give model= or a 'model' column naming one model "
                f"(found: {', '.join(sorted(models)) or 'none'})."
            )
        return models.pop()

    def override_columns(self, model: DeviceModel) -> list[str]:
        """The columns named like a telemetry field of ``model``."""
        return [c for c in self.columns if c in model.field_names]


def read_device_table(path: Path) -> DeviceTable:
    """Read and check a device CSV file (UTF-8, a BOM is fine)."""
    if not path.is_file():
        raise NotFoundError(f"Device CSV '{path}' does not exist.")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        rows = tuple(reader)
        columns = tuple(reader.fieldnames or ())
    if "deviceId" not in columns:
        raise ConfigurationError(f"Device CSV '{path}' needs a 'deviceId' column; it has: {', '.join(columns)}.")
    if not rows:
        raise ConfigurationError(
            f"Device CSV '{path}' has no devices (a header line only): a fleet of no devices would test nothing."
        )
    table = DeviceTable(path, columns, rows)
    blank = [i + 2 for i, d in enumerate(table.ids) if not d]
    if blank:
        raise ConfigurationError(f"Device CSV '{path}': empty deviceId on line(s) {', '.join(map(str, blank[:5]))}.")
    return table


async def import_fleet(sim: Simulator, model: DeviceModel, table: DeviceTable, setup: FleetSetup) -> Fleet:
    """Create a fleet of ``model`` with the table's devices and set their overrides; all or nothing.

    Runs on the loop. A value that does not convert deletes the fleet again and names line, device and column.
    """
    name = setup.name or sim.free_name(model.id)
    sim.check_name_free(name)
    with error_context(f"Device CSV '{table.path}'"):
        fleet = sim.build_fleet(model, replace(setup, name=name, device_ids=table.ids))
    fields = table.override_columns(model)
    for line, row in enumerate(table.rows, start=2):
        device = fleet.device(row["deviceId"].strip())
        for f in fields:
            cell = (row.get(f) or "").strip()
            if not cell:
                continue
            try:
                device.values.set_override(f, cell)
            except (ValueError, TypeError, ConfigurationError) as err:
                await sim.delete_fleet(name)  # no half-configured fleet stays behind
                raise ConfigurationError(
                    f"Device CSV '{table.path}', line {line}, device '{device.id}', column '{f}': {err}"
                ) from None
    return fleet


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write ``rows`` under ``header`` with every cell neutralised; the number of rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow([neutralise_cell(cell) for cell in row])
            n += 1
    return n


def write_devices_csv(path: Path, model_id: str, statuses: Iterable[dict[str, Any]]) -> int:
    """One row per device status (:data:`DEVICE_COLUMNS`)."""
    rows = ({**status, "model": model_id} for status in statuses)
    return write_csv(path, DEVICE_COLUMNS, ([row.get(c) for c in DEVICE_COLUMNS] for row in rows))


def write_transmissions_csv(path: Path, transmissions: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """One row per ``(device id, transmission log entry)`` (:data:`TRANSMISSION_COLUMNS`)."""
    return write_csv(path, TRANSMISSION_COLUMNS, ([device_id, *entry.values()] for device_id, entry in transmissions))
