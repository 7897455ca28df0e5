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


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    topic: str | None = None
    response_topic: str | None = None
    parameters: tuple[dict[str, Any], ...] = ()
    description: str | None = None


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
    version: str
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

    def get_field(self, name: str) -> TelemetryField:
        for f in self.telemetry:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.telemetry)
