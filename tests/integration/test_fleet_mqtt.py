"""Fleets against a real Mosquitto, checked by our own receiver and by an independent mosquitto_sub."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
from typing import Any

import pytest
from harness import BrokerHarness, all_running

from iotix.fleet.device import DeviceState
from iotix.fleet.fleet import Credentials, FleetOptions
from iotix.fleet.timeline import DropoutSettings, LaunchSettings
from iotix.services import find_mosquitto, start_local_broker
from iotix.transport.mqtt_probe import MqttProbe

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed"),
]
MOSQUITTO_SUB = shutil.which("mosquitto_sub")


def model_dict(model_id: str = "it-sensor", interval_ms: int = 100, qos: int = 0, **connection: Any) -> dict:
    return {
        "id": model_id,
        "name": "integration sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {
            "host": "127.0.0.1",
            "port": 1883,
            "topicPattern": "it/${modelId}/${deviceId}/telemetry",
            "qos": qos,
            "keepAlive": 30,
            **connection,
        },
        "telemetry": [
            {
                "name": "temperature",
                "type": "number",
                "intervalMs": interval_ms,
                "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
            },
            {
                "name": "cpu",
                "type": "number",
                "intervalMs": interval_ms,
                "generator": {"type": "randomWalk", "min": 0, "max": 100, "step": 5},
            },
        ],
    }


class Harness(BrokerHarness):
    """The shared harness with fleets pointed at one broker, and a receiver."""

    def __init__(self, broker: Any) -> None:
        super().__init__(broker)
        self.probe: MqttProbe | None = None

    def receiver(self, topic: str = "it/#", qos: int = 1) -> MqttProbe:
        async def make() -> MqttProbe:
            probe = MqttProbe("default", f"it-probe-{os.getpid()}-{time.monotonic_ns()}")
            await probe.connect(self.broker.host, self.broker.port)
            await probe.subscribe(topic, qos)
            return probe

        self.probe = probe = self.rt.call(make)
        self.on_close(lambda: self.rt.call(probe.close))
        return probe


@pytest.fixture(scope="module")
def broker():
    b = start_local_broker("mosquitto")
    yield b
    b.stop()


@pytest.fixture
def h(broker):
    harness = Harness(broker)
    yield harness
    harness.close()


def test_every_message_arrives_and_mosquitto_sub_agrees(h: Harness) -> None:
    if MOSQUITTO_SUB is None:
        pytest.skip("mosquitto_sub missing")
    sub = subprocess.Popen(
        [MOSQUITTO_SUB, "-h", h.broker.host, "-p", str(h.broker.port), "-t", "it/it-sensor/+/telemetry"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    fleet = h.fleet("indep", model_dict(interval_ms=100), 20)
    h.start(fleet)
    h.wait(lambda: all_running(fleet), what="fleet running")
    time.sleep(1.5)
    h.rt.call(fleet.stop)
    sent = fleet.stats()["messagesSent"]
    time.sleep(1.0)
    sub.terminate()
    out, _ = sub.communicate(timeout=5)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert sent >= 20 * 10
    assert len(lines) == sent
    per_device: dict[str, list[int]] = {}
    for msg in lines:
        per_device.setdefault(msg["deviceId"], []).append(msg["seq"])
    assert set(per_device) == {f"indep-{i}" for i in range(20)}
    for seqs in per_device.values():
        assert seqs == list(range(len(seqs)))  # in order, no gap, no duplicate


def test_a_graceful_disconnect_writes_what_was_corked_first(h: Harness) -> None:
    """QoS 0 packets are corked until the end of the loop iteration; a stop in that same iteration must
    write them before DISCONNECT (at high rates a stop always finds some)."""
    probe = h.receiver("it/it-sensor/+/telemetry", qos=0)
    fleet = h.fleet("cork", model_dict(interval_ms=60000), 3)
    h.start(fleet)
    h.running(fleet)

    async def send_then_disconnect() -> None:
        for device in fleet.devices:
            payload = json.dumps({"deviceId": device.id, "seq": 1, "ts": 0}).encode()
            assert fleet.transport.send(device, payload)  # corked, not yet written
            await fleet.transport.disconnect(device)  # no await in between: same loop iteration

    h.rt.call(send_then_disconnect)
    h.wait(lambda: probe.tracker.total >= 6, 5, "the corked messages at the receiver")
    assert all(track.count_seen(0, 2) == 2 for track in probe.tracker.devices.values())


@pytest.mark.parametrize("qos", [1, 2])
def test_receiver_tracker_sees_no_loss_at_qos_1_and_2(h: Harness, qos: int) -> None:
    probe = h.receiver(qos=qos)
    fleet = h.fleet(f"q{qos}", model_dict(interval_ms=50, qos=qos), 10)
    h.start(fleet)
    h.wait(lambda: all_running(fleet))
    time.sleep(1.0)

    async def check():
        from iotix._robot.telemetry import collect, probe_source

        return await collect(fleet, probe_source(probe), 5.0)

    report = h.rt.call(check).report
    assert report.expected >= 10 * 15
    assert report.lost == 0 and report.duplicates == 0
    assert fleet.stats()["messagesAcked"] > 0
    assert report.latency["p50"] is not None and report.latency["p50"] < 500


def test_unreachable_broker_is_retried_and_named_while_other_fleets_run(h: Harness) -> None:
    good = h.fleet("good", model_dict(), 3)
    bad = h.fleet(
        "bad",
        model_dict(model_id="it-bad"),
        2,
        connection={"port": 1},
        options=FleetOptions(reconnect_base_s=0.05, reconnect_cap_s=0.2),
    )
    h.start(good)
    h.start(bad)
    h.wait(lambda: all_running(good))
    h.wait(lambda: all(d.connect_failures >= 2 for d in bad.devices), what="retries")
    status = bad.devices[0].status()
    assert status["state"] == "connecting"
    assert "bad-0" in status["lastError"] and "127.0.0.1:1" in status["lastError"]
    assert "refused" in status["lastError"].lower()
    sent = good.stats()["messagesSent"]
    time.sleep(0.5)
    assert good.stats()["messagesSent"] > sent


def test_broker_restart_reconnects_and_flushes_the_qos1_queue(h: Harness) -> None:
    probe = h.receiver()
    fleet = h.fleet(
        "restart",
        model_dict(interval_ms=100, qos=1),
        5,
        options=FleetOptions(reconnect_base_s=0.1, reconnect_cap_s=0.5),
    )
    h.start(fleet)
    h.wait(lambda: all_running(fleet))
    time.sleep(0.5)
    h.broker.restart(down_for=1.5)
    h.wait(lambda: all_running(fleet) and all(d.reconnects >= 1 for d in fleet.devices), 20, "reconnect")
    stats = fleet.stats()
    assert stats["disconnects"] >= 5
    assert stats["messagesDropped"] == 0  # queued while offline, not dropped
    h.wait(lambda: probe.client.is_open, what="receiver back")
    time.sleep(1.0)

    async def check():
        from iotix._robot.telemetry import collect, probe_source

        return await collect(fleet, probe_source(probe), 5.0)

    report = h.rt.call(check).report
    # QoS 1 readings produced while the broker was down were queued and sent after the reconnect; what
    # the receiver missed is only what was in flight on the broker when it died.
    assert report.received > 0
    assert stats["messagesQueued"] == 0
    assert sum(d.queued for d in fleet.devices) >= 5 * 5


def test_qos0_readings_while_offline_are_dropped_and_counted(h: Harness) -> None:
    fleet = h.fleet(
        "q0drop", model_dict(interval_ms=50, qos=0), 3, options=FleetOptions(reconnect_base_s=0.1, reconnect_cap_s=0.3)
    )
    h.start(fleet)
    h.wait(lambda: all_running(fleet))
    h.broker.restart(down_for=1.0)
    h.wait(lambda: all_running(fleet) and all(d.reconnects for d in fleet.devices), 20, "reconnect")
    assert fleet.stats()["messagesDropped"] >= 3 * 5


def test_dropped_device_fires_its_last_will_and_comes_back(h: Harness) -> None:
    data = model_dict(
        interval_ms=100, lastWill={"topic": "it/wills/${deviceId}", "payload": "gone ${deviceId}", "qos": 1}
    )
    probe = h.receiver("it/wills/#")
    fleet = h.fleet("will", data, 4)
    h.start(fleet)
    h.wait(lambda: all_running(fleet))
    plan = h.rt.call(
        fleet.start_dropout, DropoutSettings(strategy="immediate", count=2, reconnect=True, reconnect_delay_ms=800), 3
    )
    assert len(plan) == 2
    msgs = h.rt.call(probe.wait_for, "it/wills/#", 2, 10.0)
    assert sorted(m.payload.decode() for m in msgs) == sorted(f"gone {d}" for d in plan)
    h.wait(lambda: all_running(fleet) and all(fleet.by_id[d].reconnects == 1 for d in plan), what="back")
    again = h.rt.call(fleet.start_dropout, DropoutSettings(strategy="immediate", count=2), 3)
    assert again == plan  # the same seed picks the same devices


def test_commands_reboot_and_set_interval_with_response(h: Harness) -> None:
    data = model_dict(interval_ms=1000)
    data["connection"]["commandTopicPattern"] = "it/${deviceId}/cmd/${command}"
    data["commands"] = [
        {"name": "reboot", "responseTopic": "it/${deviceId}/cmd/reboot/response"},
        {"name": "setInterval", "parameters": [{"name": "intervalMs", "type": "integer", "required": True}]},
    ]
    probe = h.receiver("it/cmd-0/cmd/#")
    fleet = h.fleet("cmd", data, 1)
    h.start(fleet)
    h.wait(lambda: all_running(fleet))
    time.sleep(0.3)
    h.rt.call(probe.publish, "it/cmd-0/cmd/reboot", b"{}", 1)
    responses = h.rt.call(probe.wait_for, "it/cmd-0/cmd/#", 2, 10.0)  # the command itself + the response
    device = fleet.devices[0]
    h.wait(lambda: device.reconnects == 1 and device.state is DeviceState.RUNNING, what="reboot")
    body = json.loads(next(m for m in responses if m.topic.endswith("/response")).payload)
    assert body["command"] == "reboot" and body["status"] == "ok" and body["deviceId"] == "cmd-0"
    before = device.sent
    h.rt.call(probe.publish, "it/cmd-0/cmd/setInterval", b'{"intervalMs": 50}', 1)
    h.wait(lambda: device.interval_override_s == 0.05, what="interval applied")
    time.sleep(1.0)
    assert device.sent - before >= 10  # was 1/s, now 20/s
    cmds = [c["command"] for c in device.commands]
    assert cmds == ["reboot", "setInterval"]
    h.rt.call(probe.publish, "it/cmd-0/cmd/setInterval", b"{}", 1)  # intervalMs is required
    h.wait(lambda: len(device.commands) == 3, what="third command recorded")
    assert device.commands[-1]["status"] == "error"
    assert device.interval_override_s == 0.05  # unchanged


def test_update_firmware_reports_progress_and_result_reboots_and_runs_the_new_version(h: Harness) -> None:
    """mosquitto_sub (not IoTix) sees the progress and the result on the response topic; the device reboots,
    its status and its telemetry name the new version."""
    if MOSQUITTO_SUB is None:
        pytest.skip("mosquitto_sub missing")
    data = model_dict(model_id="it-gw", interval_ms=100, qos=1)
    data["connection"]["commandTopicPattern"] = "it/${deviceId}/cmd/${command}"
    data["commands"] = [
        {
            "name": "updateFirmware",
            "responseTopic": "it/${deviceId}/cmd/updateFirmware/response",
            "parameters": [{"name": "version", "type": "string", "required": True}, {"name": "url", "type": "string"}],
            "durationMs": 400,
        }
    ]
    data["metadata"] = {"firmware": "1.0.0"}
    sub = subprocess.Popen(
        [MOSQUITTO_SUB, "-h", h.broker.host, "-p", str(h.broker.port), "-t", "it/fw-0/cmd/+/response", "-q", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    probe = h.receiver("it/it-gw/fw-0/telemetry")
    fleet = h.fleet("fw", data, 1)
    h.start(fleet)
    h.running(fleet)
    device = fleet.devices[0]
    time.sleep(0.3)
    assert fleet.device_status(device)["firmwareVersion"] == "1.0.0"
    h.rt.call(probe.publish, "it/fw-0/cmd/updateFirmware", b'{"version": "1.1.0", "url": "https://fw/x.bin"}', 1)
    h.wait(lambda: device.reconnects == 1 and device.state is DeviceState.RUNNING, what="reboot after the update")
    assert fleet.device_status(device)["firmwareVersion"] == "1.1.0"
    assert device.commands is not None and device.commands[0]["status"] == "ok"
    seen = len(probe.subscription("it/it-gw/fw-0/telemetry").messages)
    messages = h.rt.call(probe.wait_for, "it/it-gw/fw-0/telemetry", seen + 3, 10.0)
    latest = json.loads(messages[-1].payload)
    assert latest["firmwareVersion"] == "1.1.0" and latest["deviceId"] == "fw-0"
    time.sleep(0.3)
    sub.terminate()
    out, _ = sub.communicate(timeout=5)
    bodies = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [b["status"] for b in bodies] == [
        "accepted",
        "downloading",
        "downloading",
        "downloading",
        "downloading",
        "downloading",
        "ok",
    ]
    assert [b.get("progress") for b in bodies[1:6]] == [0, 25, 50, 75, 100]
    assert bodies[-1]["firmwareVersion"] == "1.1.0" and bodies[-1]["previousVersion"] == "1.0.0"
    progress_times = [b["ts"] for b in bodies[1:6]]
    assert progress_times[-1] - progress_times[0] >= 350  # the download took durationMs (400 ms)


def test_behavior_fires_on_override_with_values_substituted(h: Harness) -> None:
    data = model_dict(interval_ms=50)
    data["behaviors"] = [
        {
            "name": "hot",
            "condition": "temperature > 100 && cpu >= 0",
            "cooldownMs": 100000,
            "action": {
                "type": "publish",
                "topic": "it/alerts/${deviceId}",
                "payload": {"alert": "hot", "t": "${temperature}"},
                "qos": 1,
            },
        }
    ]
    probe = h.receiver("it/alerts/#")
    fleet = h.fleet("beh", data, 2)
    h.start(fleet)
    h.wait(lambda: all_running(fleet))
    time.sleep(0.3)
    assert fleet.behaviors_fired == 0  # random values stay within 10..30
    h.rt.call(fleet.devices[1].values.set_override, "temperature", 150)
    msgs = h.rt.call(probe.wait_for, "it/alerts/#", 1, 5.0)
    assert msgs[0].topic == "it/alerts/beh-1"
    assert json.loads(msgs[0].payload) == {"alert": "hot", "t": 150.0}
    time.sleep(0.3)
    assert fleet.behaviors_fired == 1  # the cooldown holds further alerts back


def test_mqtt5_and_credentials_are_accepted_and_password_is_never_logged(h: Harness, caplog) -> None:
    secret = "s3cr3t-never-logged"
    fleet = h.fleet("v5", model_dict(mqttVersion="5"), 2, credentials=Credentials("user", secret))
    with caplog.at_level("DEBUG", logger="iotix"):
        h.start(fleet)
        h.wait(lambda: all_running(fleet))
        time.sleep(0.3)
    assert fleet.stats()["messagesSent"] > 0
    assert secret not in caplog.text
    assert secret not in repr(fleet.credentials)


def test_launch_follows_the_batch_timeline(h: Harness) -> None:
    fleet = h.fleet("batch", model_dict(interval_ms=1000), 12)
    t0 = time.monotonic()
    h.start(fleet, LaunchSettings(strategy="batch", batch_size=4, delay_ms=400))
    time.sleep(0.2)
    assert 4 <= fleet.launched < 12
    h.wait(lambda: all_running(fleet))
    assert time.monotonic() - t0 >= 0.8  # the third batch starts at 0.8 s


def test_stop_and_runtime_shutdown_leave_no_thread_or_socket(broker) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    threads_before = set(threading.enumerate())
    fds_before = fds()
    harness = Harness(broker)
    fleet = harness.fleet("clean", model_dict(), 30)
    harness.start(fleet)
    harness.wait(lambda: all_running(fleet))
    assert fds() >= fds_before + 30
    harness.close()
    time.sleep(0.2)
    assert set(threading.enumerate()) <= threads_before
    assert fds() <= fds_before + 1  # the loop's selector is gone too, give or take a lazily opened file


def test_fleet_keeps_sending_while_the_caller_sleeps(h: Harness) -> None:
    fleet = h.fleet("sleepy", model_dict(interval_ms=100), 2)
    h.start(fleet)
    h.wait(lambda: all_running(fleet))
    before = fleet.stats()["messagesSent"]
    time.sleep(1.0)  # the calling thread does nothing
    assert fleet.stats()["messagesSent"] - before >= 2 * 8
    asyncio.run(asyncio.sleep(0))  # another loop in this thread does not disturb the runtime's
