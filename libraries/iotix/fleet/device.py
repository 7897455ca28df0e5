"""One simulated device: small, slot-only state; the fleet and its transport do the work.

A device is the :class:`iotix.transport.base.Link` its fleet hands the transport: the transport reads
``id``, ``index``, ``topic``, ``seq`` and ``variables()`` and owns ``conn``; everything else is the fleet's.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iotix.fleet.fleet import Fleet
    from iotix.generate import DeviceValues


class DeviceState(str, Enum):
    CREATED = "created"  # not started yet
    CONNECTING = "connecting"  # first connection in progress (with retries)
    RUNNING = "running"  # connected and sending
    RECONNECTING = "reconnecting"  # lost its connection unexpectedly, coming back with backoff
    DROPPED = "dropped"  # switched off by a dropout (Chaos); silent until reconnected
    STOPPED = "stopped"  # the fleet was stopped
    ERROR = "error"  # sends keep failing

    def __str__(self) -> str:
        return self.value


class Device:
    """A virtual device. Counters are plain ints updated on the runtime loop only."""

    __slots__ = (
        "acked",
        "behavior_last",
        "bytes_sent",
        "commands",
        "conn",
        "connect_failures",
        "connects",
        "disconnects",
        "dropped",
        "fail_streak",
        "failed",
        "firmware",
        "firmware_update",
        "fleet",
        "gen",
        "id",
        "index",
        "interval_override_s",
        "last_error",
        "last_values",
        "offline_queue",
        "queued",
        "reconnects",
        "retries",
        "scheduled",
        "sent",
        "seq",
        "started_at",
        "state",
        "task",
        "tlog",
        "topic",
        "values",
    )

    def __init__(self, fleet: Fleet, device_id: str, index: int, values: DeviceValues) -> None:
        self.fleet = fleet
        self.id = device_id
        self.index = index
        self.values = values
        self.state = DeviceState.CREATED
        self.conn: Any = None  # the one slot the transport owns (its per-device connection state)
        self.topic: str | None = None
        self.gen = 0  # bumped whenever the device's scheduled sends must be forgotten
        self.scheduled = False  # whether sends of the current generation are in the scheduler
        self.task: Any = None  # the connect/reconnect task, if one runs
        self.started_at = 0.0  # loop time of the first send; logical time 0 for generators
        self.seq = 0  # messages handed to the transport so far (next envelope's seq)
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self.dropped = 0
        self.queued = 0
        self.bytes_sent = 0
        self.connects = 0
        self.disconnects = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.retries = 0  # request retries after failed attempts
        self.fail_streak = 0  # consecutive failed messages (error state at the fleet's threshold)
        self.tlog: Any = None  # TransmissionLog, allocated at the first send
        self.last_error: str | None = None
        self.interval_override_s: float | None = None
        self.offline_queue: deque[tuple[int, int, dict[str, Any]]] | None = None
        self.commands: list[dict[str, Any]] | None = None
        self.behavior_last: list[float] | None = None
        self.last_values: dict[str, Any] | None = None
        self.firmware: str | None = None  # the version an update installed (None: the model's)
        self.firmware_update: tuple[str, Any] | None = None  # (version, task) of an update in progress

    def forget_schedule(self) -> None:
        """Invalidate every scheduled send of this device (they are skipped when due)."""
        self.gen += 1
        self.scheduled = False

    def variables(self) -> dict[str, Any]:
        """The ``${...}`` variables of this device's patterns."""
        return {
            "deviceId": self.id,
            "index": self.index,
            "modelId": self.fleet.model.id,
            "fleet": self.fleet.name,
        }

    def status(self) -> dict[str, Any]:
        return {
            "deviceId": self.id,
            "fleet": self.fleet.name,
            "index": self.index,
            "state": self.state.value,
            "messagesSent": self.sent,
            "messagesAcked": self.acked,
            "messagesFailed": self.failed,
            "messagesDropped": self.dropped,
            "messagesQueued": len(self.offline_queue) if self.offline_queue else 0,
            "retries": self.retries,
            "bytesSent": self.bytes_sent,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "reconnects": self.reconnects,
            "connectFailures": self.connect_failures,
            "nextSeq": self.seq,
            "lastError": self.last_error,
            "commandsReceived": len(self.commands) if self.commands else 0,
            "firmwareVersion": self.firmware or self.fleet.model.firmware_version,
        }

    def __repr__(self) -> str:
        return f"<Device {self.id} {self.state.value}>"
