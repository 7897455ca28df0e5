"""Charts in the Robot log and the HTML run report, from a real ``robot`` run against a real local broker.

Each test writes a small suite, runs it with ``python -m robot`` in a subprocess, then opens what Robot
wrote: log.html keeps long messages compressed (``window.output["strings"]``: an entry starting with ``*``
is plain text, any other is base64 of zlib), so the strings are decoded and the charts looked for in them;
output.xml says in which test (or keyword) each message was logged.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

from iotix.observe.charts import CHART_TITLES, iter_svgs
from iotix.services import find_mosquitto

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed"),
]

MODEL = """\
id: chart-sensor
name: Chart test sensor
version: 1.0.0
type: sensor
protocol: mqtt
connection: {host: localhost, port: 1883, topicPattern: "charts/${deviceId}", qos: 1, keepAlive: 10}
telemetry:
  - {name: v, type: number, intervalMs: 100, generator: {type: constant, value: 1}}
"""

SETTINGS = """\
*** Settings ***
Library    iotix.DeviceFleet
Library    iotix.ProtocolClient
Library    iotix.Chaos
Library    iotix.Metrics{metrics_args}
Suite Setup    Start Broker

*** Keywords ***
Start Broker
    ${{broker}} =    Start Local MQTT Broker
    VAR    ${{BROKER}}    ${{broker}}    scope=SUITE
    Load Device Models    ${{MODEL}}

Run A Fleet
    [Arguments]    ${{name}}    ${{seconds}}
    ${{fleet}} =    Create Fleet    chart-sensor    count=4    name=${{name}}    id_pattern=${{name}}-{{index}}
    ...    host=${{BROKER}}[host]    port=${{BROKER}}[port]
    Start Fleet    ${{fleet}}
    Wait Until Fleet Is Running    ${{fleet}}
    Sleep    ${{seconds}}
    RETURN    ${{fleet}}
"""

EXPLICIT = """
*** Test Cases ***
Charts And A Report
    ${fleet} =    Run A Fleet    logged    1.5s
    Drop Devices    ${fleet}    count=2    delay=0s    duration=0s    reconnect=True    reconnect_delay=1s
    Add Network Fault    ${fleet}    latency    latency=50ms    duration=2s
    Sleep    3s
    Log Fleet Charts    ${fleet}
    ${report} =    Export Run Report    ${OUTPUT DIR}/reports/run.html
    Should Be Equal    ${report.name}    run.html
    Stop Fleet    ${fleet}

Unknown Fleet
    Run Keyword And Expect Error    No fleet named 'nope' has figures (fleets with figures: 'logged').
    ...    Log Fleet Charts    nope

Charts Of A Deleted Fleet
    Delete Fleet    logged
    Log Fleet Charts    logged
"""

AUTOMATIC = """
*** Test Cases ***
A Test That Runs A Fleet
    ${fleet} =    Run A Fleet    automatic    3s
    [Teardown]    Delete Fleet    automatic

A Test That Runs None
    Log    nothing ran here
"""


def run_robot(tmp_path: Path, tests: str, metrics_args: str = "") -> Path:
    """Run a suite of ``tests`` (with the shared settings and keywords); return Robot's output folder."""
    (tmp_path / "chart-sensor.yaml").write_text(MODEL, encoding="utf-8")
    suite = tmp_path / "charts.robot"
    suite.write_text(SETTINGS.format(metrics_args=metrics_args) + tests, encoding="utf-8")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "robot", "--outputdir", str(out), "--console", "verbose"]
    command += ["--variable", f"MODEL:{tmp_path / 'chart-sensor.yaml'}", str(suite)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"robot failed:\n{(done.stdout + done.stderr)[-4000:]}"
    return out


def log_strings(log_html: Path) -> list[str]:
    """Every string of a Robot log.html, decompressed."""
    text = log_html.read_text(encoding="utf-8")
    pattern = r'window\.output\["strings"\] = window\.output\["strings"\]\.concat\((\[.*?\])\);'
    raw: list[str] = []
    for chunk in re.findall(pattern, text, re.DOTALL):
        raw += json.loads(chunk.replace("\\x3c", "\\u003c"))  # Robot writes "<" as \x3c (JavaScript, not JSON)
    return [s[1:] if s.startswith("*") else zlib.decompress(base64.b64decode(s)).decode("utf-8") for s in raw]


def chart_fragments(strings: list[str]) -> list[str]:
    return [s for s in strings if s.startswith('<div class="iotix-fleet-charts"')]


def check_charts(fragment: str, fleet: str) -> list[ET.Element]:
    """The fragment has the four charts of ``fleet``, each valid SVG with its title; returns them parsed."""
    assert f"Fleet <b>{fleet}</b>" in fragment
    svgs = [ET.fromstring(svg) for svg in iter_svgs(fragment)]
    titles = [next(el.text for el in svg.iter() if "plot_title" in el.get("class", "").split()) for svg in svgs]
    assert titles == list(CHART_TITLES.values())
    return svgs


def messages_by_place(output_xml: Path) -> list[tuple[str, str, str]]:
    """(test name, where: 'test' or the keyword's name, message) of every HTML message in output.xml."""
    found = []
    for test in ET.parse(output_xml).getroot().iter("test"):
        for parent in test.iter():
            for child in parent:
                if child.tag == "msg" and child.get("html") == "true":
                    where = "test" if parent is test else str(parent.get("name"))
                    found.append((str(test.get("name")), where, child.text or ""))
    return found


def test_log_fleet_charts_and_the_html_report(tmp_path: Path) -> None:
    out = run_robot(tmp_path, EXPLICIT)
    fragments = chart_fragments(log_strings(out / "log.html"))
    assert len(fragments) == 2  # the running fleet, then the same fleet once deleted
    svgs = check_charts(fragments[0], "logged")
    words = {el.text for svg in svgs for el in svg.iter() if el.text}
    # the dropout and the fault are marked, labelled, on every chart
    assert "dropouts (1)" in words and "network faults (1)" in words
    assert "2 devices dropped" in words and "latency-1 started" in words
    assert "lateness p99" in words and "connected" in words
    check_charts(fragments[1], "logged")
    assert "(deleted)" in fragments[1]

    places = messages_by_place(out / "output.xml")
    assert ("Charts And A Report", "Log Fleet Charts") in {(test, where) for test, where, _ in places}
    link = next(msg for _, where, msg in places if where == "Export Run Report")
    assert link == 'Run report of 1 fleet(s) written: <a href="reports/run.html">run.html</a>'

    page = (out / "reports" / "run.html").read_text(encoding="utf-8")
    assert "Fleet logged" in page and 'id="fleet-logged"' in page
    assert len(list(iter_svgs(page))) == 4
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.IGNORECASE)
    assert "2 devices dropped" in page and "Worst devices" in page


def test_charts_import_option_charts_every_test_that_ran_a_fleet(tmp_path: Path) -> None:
    out = run_robot(tmp_path, AUTOMATIC, metrics_args="    charts=True")
    fragments = chart_fragments(log_strings(out / "log.html"))
    assert len(fragments) == 1
    svgs = check_charts(fragments[0], "automatic")
    assert "(deleted)" in fragments[0]  # drawn after the test's teardown deleted the fleet
    sent = [el for svg in svgs[:1] for el in svg.iter() if el.text == "sent"]
    assert sent, "the message rate chart has its lines"
    places = [(test, where) for test, where, msg in messages_by_place(out / "output.xml") if "<svg" in msg]
    assert places == [("A Test That Runs A Fleet", "test")]
