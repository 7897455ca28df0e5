"""updateFirmware: download progress and result on the response topic, a reboot, the new version reported;
a share of updates fails, reproducibly with the fleet's seed. The fleet runs on a loop of its own with its
transport's ``send`` and the reboot recorded instead of a broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from transport_fakes import run

from iotix.encode import decode_envelope, make_encoder
from iotix.fleet.device import DeviceState
from iotix.fleet.fleet import FIRMWARE_PROGRESS, Fleet, firmware_version_of
from iotix.fleet.simulator import Simulator
from iotix.model import ModelError
from iotix.model.loader import load_model_dict
from iotix.transport.iotflow import make_iotflow_encoder


def gateway(failure_rate: float = 0.0, duration_ms: int = 40, **metadata: Any) -> dict[str, Any]:
    command: dict[str, Any] = {
        "name": "updateFirmware",
        "responseTopic": "t/${deviceId}/fw/response",
        "parameters": [{"name": "version", "type": "string"}, {"name": "url", "type": "string"}],
        "durationMs": duration_ms,
    }
    if failure_rate:
        command["failureRate"] = failure_rate
    return {
        "id": "fw-gateway",
        "name": "gateway",
        "version": "1.0.0",
        "type": "gateway",
        "protocol": "mqtt",
        "connection": {
            "host": "127.0.0.1",
            "topicPattern": "t/${deviceId}/telemetry",
            "commandTopicPattern": "t/${deviceId}/cmd/${command}",
        },
        "telemetry": [
            {"name": "cpu", "type": "number", "intervalMs": 1000, "generator": {"type": "constant", "value": 5}}
        ],
        "commands": [command, {"name": "reboot"}],
        "metadata": metadata,
    }


class Rig:
    """A fleet whose devices are running without a broker: sends and reboots are recorded."""

    def __init__(self, data: dict[str, Any], count: int = 1, seed: int | str | None = None) -> None:
        self.sim = Simulator(asyncio.get_running_loop())
        self.fleet: Fleet = self.sim.create_fleet(
            "gw", load_model_dict(data), [f"gw-{i}" for i in range(count)], seed=seed
        )
        self.sent: list[tuple[str, str | None, dict[str, Any]]] = []
        self.reboots: list[str] = []
        for device in self.fleet.devices:
            device.state = DeviceState.RUNNING

        def send(
            link: Any, payload: bytes, topic: str | None = None, qos: int | None = None, retain: bool = False
        ) -> bool:
            self.sent.append((link.id, topic, json.loads(payload)))
            return True

        async def reboot(device: Any, delay: float = 0.0) -> None:
            self.reboots.append(device.id)

        async def drain(timeout: float) -> None:
            return None

        self.fleet.transport.send = send  # type: ignore[method-assign]
        self.fleet.transport.drain = drain  # type: ignore[method-assign]
        self.fleet.reboot = reboot  # type: ignore[method-assign]

    def command(self, device_id: str, params: dict[str, Any], name: str = "updateFirmware") -> str:
        device = self.fleet.by_id[device_id]
        return self.fleet.command_received(device, name, json.dumps(params).encode(), f"t/{device_id}/cmd/{name}")

    def responses(self, device_id: str) -> list[dict[str, Any]]:
        return [body for who, topic, body in self.sent if who == device_id and topic == f"t/{device_id}/fw/response"]

    async def settle(self) -> None:
        tasks = [d.firmware_update[1] for d in self.fleet.devices if d.firmware_update is not None]
        await asyncio.gather(*tasks)


def scenario(body: Callable[[], Any]) -> None:
    run(body, timeout=20.0)


def test_an_update_reports_progress_then_the_result_then_reboots_into_the_new_version() -> None:
    async def go() -> None:
        rig = Rig(gateway(firmware="3.1.4"))
        device = rig.fleet.devices[0]
        assert device.status()["firmwareVersion"] == "3.1.4"
        assert rig.command("gw-0", {"version": "3.2.0", "url": "https://fw.example/gw.bin"}) == "accepted"
        assert device.commands is not None and device.commands[0]["status"] == "accepted"
        assert rig.fleet.firmware_of(device) == "3.1.4"  # not before the download is done
        await rig.settle()
        bodies = rig.responses("gw-0")
        assert [b["status"] for b in bodies] == ["accepted", *["downloading"] * len(FIRMWARE_PROGRESS), "ok"]
        assert bodies[0]["detail"] == "downloading firmware 3.2.0 from https://fw.example/gw.bin"
        assert [b["progress"] for b in bodies[1:-1]] == [0, 25, 50, 75, 100]
        assert all(b["version"] == "3.2.0" and b["command"] == "updateFirmware" for b in bodies[1:])
        result = bodies[-1]
        assert result["previousVersion"] == "3.1.4" and result["firmwareVersion"] == "3.2.0"
        assert result["detail"] == "firmware 3.2.0 installed (was 3.1.4); rebooting"
        assert rig.reboots == ["gw-0"]
        assert device.status()["firmwareVersion"] == "3.2.0"
        assert device.commands[0]["status"] == "ok" and device.commands[0]["detail"] == result["detail"]
        assert device.firmware_update is None

    scenario(go)


def test_the_download_takes_duration_ms() -> None:
    async def go() -> None:
        rig = Rig(gateway(duration_ms=400))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        rig.command("gw-0", {"version": "2"})
        await rig.settle()
        assert 0.4 <= loop.time() - t0 < 2.0

    scenario(go)


def test_the_version_comes_from_the_url_when_not_given() -> None:
    async def go() -> None:
        rig = Rig(gateway())
        rig.command("gw-0", {"url": "https://10.0.0.5/images/gw-4.0.1.bin"})
        await rig.settle()
        assert rig.fleet.devices[0].status()["firmwareVersion"] == "4.0.1"

    scenario(go)


def test_an_update_without_a_version_or_a_second_one_at_once_is_refused() -> None:
    async def go() -> None:
        rig = Rig(gateway())
        assert rig.command("gw-0", {"url": "https://fw.example/latest.bin"}) == "error"
        assert rig.responses("gw-0")[-1]["detail"].startswith("updateFirmware needs a 'version'")
        assert rig.command("gw-0", {"version": "2.0.0"}) == "accepted"
        assert rig.command("gw-0", {"version": "3.0.0"}) == "error"
        assert rig.responses("gw-0")[-1]["detail"] == "an update to firmware 2.0.0 is already in progress"
        await rig.settle()
        assert rig.fleet.devices[0].status()["firmwareVersion"] == "2.0.0"
        assert rig.command("gw-0", {"version": "3.0.0"}) == "accepted"  # after the first one: fine
        await rig.settle()

    scenario(go)


def test_a_device_that_goes_down_during_the_download_abandons_the_update() -> None:
    async def go() -> None:
        rig = Rig(gateway(duration_ms=400))
        device = rig.fleet.devices[0]
        rig.command("gw-0", {"version": "9.9.9"})
        await asyncio.sleep(0.15)
        device.state = DeviceState.DROPPED
        await rig.settle()
        assert device.commands is not None
        assert device.commands[0]["status"] == "error"
        assert "the device went dropped during the download" in device.commands[0]["detail"]
        assert device.status()["firmwareVersion"] == "1.0.0" and rig.reboots == []

    scenario(go)


def test_a_failed_install_reports_the_error_keeps_the_version_and_does_not_reboot() -> None:
    async def go() -> None:
        rig = Rig(gateway(failure_rate=1.0, firmwareVersion="2.1.0"))
        device = rig.fleet.devices[0]
        rig.command("gw-0", {"version": "2.2.0"})
        await rig.settle()
        bodies = rig.responses("gw-0")
        assert [b["status"] for b in bodies][-2:] == ["downloading", "error"]
        assert bodies[-1]["firmwareVersion"] == "2.1.0"
        assert bodies[-1]["detail"] == (
            "firmware 2.2.0 failed to install (simulated: the command's failureRate is 1); still running 2.1.0"
        )
        assert device.status()["firmwareVersion"] == "2.1.0" and rig.reboots == []
        assert device.commands is not None and device.commands[0]["status"] == "error"

    scenario(go)


def _failing(count: int, seed: int | str | None, rate: float = 0.3) -> set[str]:
    result: set[str] = set()

    async def go() -> None:
        rig = Rig(gateway(failure_rate=rate, duration_ms=0), count=count, seed=seed)
        for device in rig.fleet.devices:
            rig.command(device.id, {"version": "5.0.0"})
        await rig.settle()
        result.update(d.id for d in rig.fleet.devices if d.commands and d.commands[0]["status"] == "error")

    scenario(go)
    return result


def test_the_failing_share_follows_failure_rate_and_is_reproducible_with_the_seed() -> None:
    count, rate = 400, 0.3
    first = _failing(count, 7, rate)
    # Binomial(400, 0.3): mean 120, standard deviation 9.2; 5 standard deviations either way.
    assert 74 <= len(first) <= 166
    assert _failing(count, 7, rate) == first
    assert _failing(count, "7", rate) == first  # 7 and "7" are the same seed
    other = _failing(count, 8, rate)
    assert other != first and 74 <= len(other) <= 166


def test_failure_rate_applies_to_other_commands_too() -> None:
    async def go() -> None:
        data = gateway()
        data["commands"][1] = {"name": "reboot", "failureRate": 1.0, "responseTopic": "t/${deviceId}/fw/response"}
        rig = Rig(data)
        assert rig.command("gw-0", {}, name="reboot") == "error"
        assert rig.responses("gw-0")[-1]["detail"] == "failed (simulated: the command's failureRate is 1)"
        assert rig.reboots == []

    scenario(go)


def test_telemetry_envelopes_carry_the_new_version_only_after_an_update() -> None:
    async def go() -> None:
        rig = Rig(gateway())
        device = rig.fleet.devices[0]
        rig.fleet._send_values(device, {"cpu": 5}, 1000)
        assert "firmwareVersion" not in rig.sent[-1][2]
        rig.command("gw-0", {"version": "3.0.0"})
        await rig.settle()
        rig.fleet._send_values(device, {"cpu": 5}, 2000)
        assert rig.sent[-1][1] is None and rig.sent[-1][2]["firmwareVersion"] == "3.0.0"

    scenario(go)


def test_the_iotflow_body_carries_the_version_in_its_metadata() -> None:
    model = load_model_dict(gateway())
    body = json.loads(make_iotflow_encoder(model)("d", 1, 5, {"cpu": 5, "firmwareVersion": "3.0.0"}))
    assert body["data"] == {"cpu": 5}
    assert body["metadata"]["firmwareVersion"] == "3.0.0"
    envelope = decode_envelope(make_encoder(model)("d", 1, 5, {"cpu": 5, "firmwareVersion": "3.0.0"}))
    assert envelope is not None and envelope["firmwareVersion"] == "3.0.0"


@pytest.mark.parametrize(
    ("version", "url", "expected"),
    [
        ("3.2.0", "https://fw.example/gw-9.9.9.bin", "3.2.0"),
        (2, None, "2"),
        (None, "https://fw.example/gw-3.2.0.bin", "3.2.0"),
        (None, "https://fw.example/firmware/4.1/image", "4.1"),
        (None, "https://fw.example/v1.2.3-rc.1.bin", "1.2.3-rc.1"),
        (None, "http://10.0.0.5:8080/fw.bin", None),
        (None, "https://fw.example/latest.bin", None),
        ("  ", None, None),
        (True, None, None),
    ],
)
def test_firmware_version_of(version: Any, url: Any, expected: str | None) -> None:
    assert firmware_version_of(version, url) == expected


def test_the_starting_version_comes_from_the_model() -> None:
    assert load_model_dict(gateway(firmwareVersion="2.1.0", firmware="9")).firmware_version == "2.1.0"
    assert load_model_dict(gateway(firmware="3.1.4")).firmware_version == "3.1.4"
    assert load_model_dict(gateway()).firmware_version == "1.0.0"  # the model's version


def test_duration_ms_belongs_to_update_firmware_and_failure_rate_is_a_share() -> None:
    data = gateway()
    data["commands"][1] = {"name": "reboot", "durationMs": 100}
    with pytest.raises(ModelError, match=r"commands\[1\]\.durationMs: only an updateFirmware command has a"):
        load_model_dict(data)
    data = gateway(failure_rate=1.5)
    with pytest.raises(ModelError, match=r"commands\[0\]\.failureRate"):
        load_model_dict(data)
