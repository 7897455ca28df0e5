"""A plain ``robot`` run with a soft open-file limit of 1,024: 3,000 MQTT devices still connect to a real
Mosquitto (the runtime raised the limit, and the broker it started inherited it); a fleet that needs more
descriptors than the hard limit allows is refused at Create Fleet, naming both numbers.

Each case runs Robot in a shell of its own that sets the limits first, as a user's shell would.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from iotix.services import find_mosquitto

resource = pytest.importorskip("resource")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed"),
]

MODEL = """\
id: fd-sensor
name: File descriptor test sensor
version: 1.0.0
type: sensor
protocol: mqtt
connection: {host: localhost, port: 1883, topicPattern: "fd/${deviceId}", qos: 0, keepAlive: 60}
telemetry:
  - {name: v, type: number, intervalMs: 5000, generator: {type: constant, value: 1}}
"""

SUITE = """\
*** Settings ***
Library    iotix.DeviceFleet
Library    iotix.ProtocolClient

*** Test Cases ***
Three Thousand Devices Connect Under A Soft Limit Of 1024
    ${broker} =    Start Local MQTT Broker
    Load Device Models    ${MODEL}
    ${fleet} =    Create Fleet    fd-sensor    count=3000    name=wide    id_pattern=wide-{index:04d}
    ...    host=${broker}[host]    port=${broker}[port]
    Start Fleet    ${fleet}
    Wait Until Fleet Is Running    ${fleet}    timeout=90s
    ${stats} =    Get Fleet Stats    ${fleet}
    Should Be Equal As Integers    ${stats}[runningDeviceCount]    3000
    ${soft} =    Evaluate    resource.getrlimit(resource.RLIMIT_NOFILE)[0]    modules=resource
    Log To Console    soft open-file limit during the run: ${soft}
    Stop Fleet    ${fleet}

A Fleet Beyond The Hard Limit Is Refused At Once
    ${broker} =    Start Local MQTT Broker
    Load Device Models    ${MODEL}
    ${error} =    Run Keyword And Expect Error    *
    ...    Create Fleet    fd-sensor    count=3000    name=toobig    host=${broker}[host]    port=${broker}[port]
    Log To Console    refused: ${error}
    ${fleets} =    Get Fleets
    Should Be Empty    ${fleets}
"""


def run_robot(tmp_path: Path, limits: str, test: str) -> str:
    """Run one test of SUITE with ``ulimit`` options ``limits`` set in its shell; return Robot's console."""
    (tmp_path / "fd-sensor.yaml").write_text(MODEL, encoding="utf-8")
    suite = tmp_path / "fd.robot"
    suite.write_text(SUITE, encoding="utf-8")
    robot = [sys.executable, "-m", "robot", "--outputdir", str(tmp_path / "out"), "--console", "verbose"]
    robot += ["--variable", f"MODEL:{tmp_path / 'fd-sensor.yaml'}", "--test", test, str(suite)]
    command = f"ulimit {limits} && exec {shlex.join(robot)}"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300, check=False)
    console = done.stdout + done.stderr
    assert done.returncode == 0, f"robot failed:\n{console[-4000:]}"
    return console


def test_3000_mqtt_devices_connect_with_a_soft_limit_of_1024(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 3000 + 200:
        pytest.fail(f"this machine's hard open-file limit ({hard}) is below what the test needs (3,200)")
    console = run_robot(tmp_path, "-Sn 1024", "Three Thousand Devices Connect Under A Soft Limit Of 1024")
    expected = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    assert f"soft open-file limit during the run: {expected}" in console or hard == resource.RLIM_INFINITY


def test_a_fleet_beyond_the_hard_limit_is_refused_naming_both_numbers(tmp_path: Path) -> None:
    console = run_robot(tmp_path, "-n 2048", "A Fleet Beyond The Hard Limit Is Refused At Once")
    message = " ".join(console.split())
    assert "refused: Fleet 'toobig': its 3,000 devices need 3,000 file descriptors (sockets); with " in message
    assert "but it can have at most 2,048 open files (its hard limit)." in message
    assert "ulimit -Hn" in message and "shard the devices over several processes" in message
