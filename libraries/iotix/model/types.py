"""The immutable in-memory form of a device model.

Files use camelCase keys (``intervalMs``); attributes here are snake_case. Mappings kept from the file
(``connection``, generator specs, actions, metadata) are plain dicts that nobody mutates after loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

FieldType = Literal["number", "integer", "boolean", "string", "binary", "object"]
Protocol = Literal["mqtt", "coap", "http", "kafka"]
DeviceType = Literal["sensor", "gateway", "actuator", "custom"]
PayloadFormat = Literal["json", "raw", "cbor"]


@dataclass(frozen=True, slots=True)
class TelemetryField:
    name: str
    type: FieldType
    interval_ms: int
    generator: dict[str, Any]
    unit: str | None = None
    description: str | None = None


#: Command names (lower case) that devices act on as a firmware update.
FIRMWARE_UPDATE_COMMANDS = ("updatefirmware", "update_firmware")


def is_firmware_update(command_name: str) -> bool:
    """Whether a command of this name is a firmware update (``updateFirmware``, any case, or ``update_firmware``)."""
    return command_name.lower() in FIRMWARE_UPDATE_COMMANDS


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    topic: str | None = None
    response_topic: str | None = None
    parameters: tuple[dict[str, Any], ...] = ()
    description: str | None = None
    failure_rate: float = 0.0  # the share of executions that fail (reproducible with the fleet's seed)
    duration_ms: int | None = None  # updateFirmware: how long the download takes (None: the default)


@dataclass(frozen=True, slots=True)
class BehaviorSpec:
    name: str
    condition: str
    action: dict[str, Any]
    cooldown_ms: int = 0
    description: str | None = None


@dataclass(frozen=True, slots=True)
class PayloadSpec:
    format: PayloadFormat = "json"
    binary_encoding: Literal["base64"] = "base64"
    field: str | None = None  # for format "raw": the binary field that is the whole payload


@dataclass(frozen=True, slots=True)
class DeviceModel:
    id: str
    name: str
    version: str | None  # optional (the iotix format has none)
    type: DeviceType
    protocol: Protocol
    connection: dict[str, Any]
    telemetry: tuple[TelemetryField, ...]
    description: str = ""
    commands: tuple[CommandSpec, ...] = ()
    behaviors: tuple[BehaviorSpec, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    payload: PayloadSpec = PayloadSpec()
    source: Path | None = None  # the file it was loaded from
    base_dir: Path | None = None  # where relative data files resolve (the file's folder)
    data_roots: tuple[Path, ...] = ()  # data_dir= given when loading: more folders replay files may lie under

    def get_field(self, name: str) -> TelemetryField:
        for f in self.telemetry:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.telemetry)

    @property
    def firmware_version(self) -> str | None:
        """The firmware version devices of this model start with: ``metadata.firmwareVersion`` or
        ``metadata.firmware``, else the IoTFlow registration's ``firmware_version`` (when it is plain text),
        else the model's ``version``."""
        for key in ("firmwareVersion", "firmware"):
            firmware = self.metadata.get(key)
            if isinstance(firmware, (str, int, float)) and not isinstance(firmware, bool):
                return str(firmware)
        registration = self.connection.get("registration")
        registered = registration.get("firmware_version") if isinstance(registration, dict) else None
        if isinstance(registered, str) and "${" not in registered:
            return registered
        return self.version
