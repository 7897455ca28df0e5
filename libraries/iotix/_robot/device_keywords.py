"""DeviceFleet component: single devices (status, telemetry overrides, received commands)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from robot.api.deco import keyword

from iotix._robot.component import LibraryComponent
from iotix._robot.context import KeywordError
from iotix._robot.types import DeviceStatus, ReceivedCommand
from iotix.errors import ConfigurationError
from iotix.fleet.device import Device

if TYPE_CHECKING:
    from iotix.cluster.sharded import ShardedFleet
    from iotix.model.types import DeviceModel


class DeviceKeywords(LibraryComponent):
    """One device of any fleet, by its id."""

    @keyword
    def get_device_status(self, device_id: str) -> DeviceStatus:
        """Returns one device's state, counters and last error.

        | =Key= | =Value= |
        | ``deviceId``, ``fleet``, ``index`` | which device |
        | ``state`` | ``created``, ``connecting``, ``running``, ``reconnecting``, ``dropped``, ``stopped``, ``error`` |
        | ``messagesSent``, ``messagesAcked``, ``messagesFailed`` | as in `Get Fleet Stats`, for this device |
        | ``messagesDropped``, ``messagesQueued`` | as in `Get Fleet Stats`, for this device |
        | ``retries``, ``bytesSent`` | request retries, payload bytes handed over |
        | ``connects``, ``disconnects``, ``reconnects``, ``connectFailures`` | connection events |
        | ``nextSeq`` | the ``seq`` of the device's next telemetry envelope |
        | ``lastError`` | the last thing that went wrong (None if nothing did) |
        | ``commandsReceived`` | commands that reached the device |
        | ``firmwareVersion`` | the firmware it runs (below) |
        | ``port``, ``url`` | only a CoAP device in server mode: where it answers (``coap://host:port``) |

        ``firmwareVersion`` is the model's (``metadata.firmwareVersion``, ``metadata.firmware`` or the model's
        ``version``; None when it names none) until an ``updateFirmware`` command installs another.

        | ${status} =    Get Device Status    env-0
        | Observe CoAP Resource    ${status}[url]/telemetry
        """
        sim = self.simulator

        async def status() -> dict[str, Any]:
            sharded = sim.sharded_owner(device_id)
            if sharded is not None:
                return await sharded.device_status(device_id)
            device = sim.find_device(device_id)
            return device.fleet.device_status(device)

        return self.call(status)

    @keyword
    def set_telemetry_override(self, device_id: str, field: str, value: Any) -> None:
        """Forces ``field`` of a device to ``value`` until `Clear Telemetry Override`.

        Use it to make a behavior fire (heart rate 130 triggers the ECG arrhythmia alert). The value is
        converted to the field's type; the generator keeps running underneath.

        | Set Telemetry Override    ecg-0    heartRate    130
        """
        sharded = self._sharded_with_field(device_id, field)
        if sharded is not None:
            self.call(sharded.set_override, device_id, field, value)
            return
        device = self._device_with_field(device_id, field)

        def override() -> None:
            try:
                device.values.set_override(field, value)
            except ConfigurationError as err:
                field_type = device.fleet.model.get_field(field).type
                raise KeywordError(
                    f"Cannot override '{field}' of device '{device_id}' with {value!r}: {err} "
                    f"(the field is of type {field_type})."
                ) from None

        self.call(override)

    @keyword
    def clear_telemetry_override(self, device_id: str, field: str) -> None:
        """Lets ``field`` of a device follow its generator again (nothing happens if it has no override)."""
        sharded = self._sharded_with_field(device_id, field)
        if sharded is not None:
            self.call(sharded.clear_override, device_id, field)
            return
        device = self._device_with_field(device_id, field)
        self.call(device.values.clear_override, field)

    def _device_with_field(self, device_id: str, field: str) -> Device:
        device = self.device(device_id)
        _check_field(device_id, device.fleet.model, field)
        return device

    def _sharded_with_field(self, device_id: str, field: str) -> ShardedFleet | None:
        """The sharded fleet of ``device_id`` (None for a device of a plain fleet), its model checked."""
        sharded = self.call(self.simulator.sharded_owner, device_id)
        if sharded is not None:
            _check_field(device_id, sharded.model, field)
        return sharded

    @keyword
    def get_received_commands(self, device_id: str) -> list[ReceivedCommand]:
        """Returns the commands the device received, oldest first.

        | =Key= | =Value= |
        | ``command`` | the command's name |
        | ``parameters`` | its parameters (a dictionary) |
        | ``topic`` | where it arrived |
        | ``receivedAt`` | when (UTC, ISO 8601) |
        | ``status`` | ``ok`` or ``error``; ``accepted`` while an ``updateFirmware`` is still in progress |
        | ``detail`` | what the device did, or why it failed (as in the command's response) |

        ``updateFirmware`` (with a ``version``, or a ``url``/``firmwareUrl`` whose path names one) is
        answered ``accepted`` at once; the device then reports its download progress (``downloading``,
        ``progress`` 0, 25, 50, 75, 100) and the result (``ok`` or ``error``) on the command's
        ``responseTopic``, and on success reboots and runs the new version (``firmwareVersion`` in `Get Device
        Status` and in its telemetry envelopes). The model's ``failureRate`` makes a share of updates fail.

        | ${commands} =    Get Received Commands    gw-0
        | Should Be Equal    ${commands}[-1][status]    ok
        """
        sharded = self.call(self.simulator.sharded_owner, device_id)
        if sharded is not None:
            return self.call(sharded.commands_of, device_id)
        device = self.device(device_id)
        return self.call(lambda: [dict(c) for c in device.commands or []])


def _check_field(device_id: str, model: DeviceModel, field: str) -> None:
    if field not in model.field_names:  # the model is immutable: read anywhere
        raise KeywordError(
            f"Device '{device_id}' (model '{model.id}') has no telemetry field "
            f"'{field}'; fields: {', '.join(model.field_names)}."
        )
