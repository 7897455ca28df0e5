"""What the benchmarks share: /proc measurements, the benchmark devices' model, launching a fleet, child runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from iotix.fleet.timeline import LaunchSettings, LaunchStrategy  # the scripts put libraries/ on sys.path first

CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

Json = dict[str, Any]


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / CLK


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def telemetry(interval_ms: int) -> list[Json]:
    """The four number fields every benchmark device sends (about 150 bytes as a JSON envelope)."""
    return [
        {
            "name": "temperature",
            "type": "number",
            "unit": "C",
            "intervalMs": interval_ms,
            "generator": {
                "type": "random",
                "distribution": "normal",
                "mean": 21,
                "stddev": 2,
                "min": -20,
                "max": 50,
                "precision": 2,
            },
        },
        {
            "name": "humidity",
            "type": "number",
            "unit": "%",
            "intervalMs": interval_ms,
            "generator": {"type": "random", "min": 20, "max": 80, "precision": 1},
        },
        {
            "name": "pressure",
            "type": "number",
            "unit": "hPa",
            "intervalMs": interval_ms,
            "generator": {"type": "randomWalk", "start": 1013, "step": 0.5, "min": 950, "max": 1050, "precision": 1},
        },
        {
            "name": "battery",
            "type": "number",
            "unit": "%",
            "intervalMs": interval_ms,
            "generator": {"type": "battery", "start": 100, "drainPerHour": 0.5, "floor": 0},
        },
    ]


def mqtt_model(model_id: str, topic_prefix: str, *, qos: int, interval_ms: int) -> Json:
    """A benchmark MQTT device model: :func:`telemetry` on ``<topic_prefix>/<device id>/telemetry``."""
    return {
        "id": model_id,
        "name": f"Benchmark sensor ({model_id})",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {
            "host": "127.0.0.1",
            "port": 1883,
            "topicPattern": topic_prefix + "/${deviceId}/telemetry",
            "qos": qos,
            "keepAlive": 60,
        },
        "telemetry": telemetry(interval_ms),
    }


def launch_all(rt: Any, fleet: Any, timeout: float = 120.0) -> tuple[float, int]:
    """Start ``fleet`` with every device at once and wait until all run (at most ``timeout``): the seconds it
    took and how many devices run."""
    t0 = time.perf_counter()
    rt.call(fleet.start, LaunchSettings(strategy=LaunchStrategy.IMMEDIATE))
    while True:
        running = rt.call(lambda: fleet.count_states()["running"])
        if running == len(fleet.devices) or time.perf_counter() - t0 > timeout:
            return time.perf_counter() - t0, running
        time.sleep(0.05)


def run_child_script(args: list[str], what: str) -> Json:
    """Run ``python <args> --json <file>`` (a benchmark script in a fresh process) and return the JSON it wrote;
    Ctrl-C stops the child too. Exits naming ``what`` when the child fails."""
    fd, name = tempfile.mkstemp(prefix="iotix-bench-", suffix=".json")
    os.close(fd)
    result = Path(name)
    child = subprocess.Popen([sys.executable, *args, "--json", name])
    try:
        code = child.wait()
    except KeyboardInterrupt:
        child.terminate()  # it stops its own fleet, runtime and target processes
        child.wait(60)
        raise
    finally:
        text = result.read_text() if result.exists() else ""
        result.unlink(missing_ok=True)
    if code != 0 or not text:
        raise SystemExit(f"{what} failed (exit code {code})")
    return json.loads(text)


class MosquittoSub:
    """An independent ``mosquitto_sub`` writing one line per message (``-F fmt``) to a temporary file: the
    receiver benchmarks count with. ``stop`` waits for what is still in flight and ends the process; the file
    stays until ``remove``."""

    def __init__(self, host: str, port: int, topics: list[str], *, qos: int, fmt: str) -> None:
        exe = shutil.which("mosquitto_sub")
        if exe is None:
            raise SystemExit("mosquitto_sub is needed (apt-get install mosquitto-clients)")
        self.path = Path(tempfile.mkstemp(prefix="iotix-bench-sub-", suffix=".txt")[1])
        self.fh = self.path.open("wb")
        command = [exe, "-h", host, "-p", str(port), "-q", str(qos), "-F", fmt]
        for topic in topics:
            command += ["-t", topic]
        self.proc = subprocess.Popen(command, stdout=self.fh, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # subscribed before the first message is due

    def stop(self) -> None:
        """Stop after the last messages in flight arrived (1 s)."""
        time.sleep(1.0)
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.fh.close()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
