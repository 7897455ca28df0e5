"""What the benchmarks share: /proc measurements and the four-field telemetry of the benchmark devices."""

from __future__ import annotations

import os
from typing import Any

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
