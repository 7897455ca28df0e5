#!/usr/bin/env python3
"""MQTT connect benchmark: N devices over mutual TLS against N plain devices, in one invocation.

Makes a test CA and one certificate per TLS device (EC P-256; the time is reported), starts two local
Mosquitto brokers with the same settings, one with a TLS listener for mutual TLS (``Start Local MQTT Broker
tls=True``) and one plain, and then, in this one process and one after the other, launches a fleet of N
devices all at once against each (devices send once a minute, so the launch is what is measured):

- ``connects_per_s``: devices running / time from the launch until the last one runs;
- ``cpu_pct``: CPU of this process over the launch, % of one core (/proc/self/stat deltas); ``broker_cpu_pct``
  the same for the broker process; ``cpu_ms_per_connect`` this process's CPU per connected device;
- ``rss_per_device_kb``: RSS growth of this process per device over fleet creation and launch (for TLS it
  includes each device's SSL context and TLS socket).

``ratios`` compares TLS with plain: connect rate and CPU per connect. The plain fleet goes first unless
``--tls-first``; compare the ratios of one run, not absolute figures across machines (PERFORMANCE.md).

Usage:
    python tools/bench/tls_connect.py                      # 2,000 devices each (the full run)
    python tools/bench/tls_connect.py --devices 200        # a light run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "libraries"))

from iotix.fleet.fleet import FleetOptions  # noqa: E402
from iotix.fleet.simulator import Simulator  # noqa: E402
from iotix.fleet.timeline import LaunchSettings, LaunchStrategy  # noqa: E402
from iotix.model.loader import load_model_dict  # noqa: E402
from iotix.runtime import get_runtime  # noqa: E402
from iotix.security import create_device_certificates, default_device_targets, load_or_create_ca  # noqa: E402
from iotix.services import MqttBroker, start_local_broker  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Json, cpu_seconds, rss_bytes, telemetry  # noqa: E402

#: Devices send once a minute: the launch, not the telemetry, is measured.
INTERVAL_MS = 60_000
LAUNCH_TIMEOUT_S = 300.0


def bench_model(tls: bool) -> Json:
    connection: Json = {
        "host": "127.0.0.1",
        "port": 1883,
        "topicPattern": "bench/${deviceId}/telemetry",
        "qos": 0,
        "keepAlive": 60,
    }
    if tls:
        connection["tls"] = {
            "caFile": "certs/ca.pem",
            "certFile": "certs/${deviceId}.pem",
            "keyFile": "certs/${deviceId}.key",
        }
    return {
        "id": "bench-tls" if tls else "bench-plain",
        "name": "Benchmark sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": connection,
        "telemetry": telemetry(INTERVAL_MS),
    }


def make_certificates(ca_dir: Path, tls_dir: Path, ids: list[str]) -> Json:
    """The CA and one certificate per device; how long that took."""
    t0 = time.perf_counter()
    ca = load_or_create_ca(ca_dir)
    count = create_device_certificates(ca, default_device_targets(tls_dir, ids), ca_copy=tls_dir / "certs/ca.pem")
    elapsed = time.perf_counter() - t0
    return {"count": count, "seconds": round(elapsed, 2), "per_s": round(count / elapsed, 1) if elapsed else None}


def launch(broker: MqttBroker, devices: int, *, tls: bool, tls_dir: Path | None) -> Json:
    """Launch ``devices`` devices at once against ``broker``; figures of the launch."""
    rt = get_runtime()
    model = load_model_dict(bench_model(tls))
    sim: Simulator = rt.call(lambda: Simulator(rt.loop))
    prefix = "tls" if tls else "plain"
    ids = [f"{prefix}-{i:05d}" for i in range(devices)]
    options = FleetOptions(tls_dir=str(tls_dir) if tls_dir else None)
    connection = {**model.connection, "host": broker.host, "port": broker.port}
    rss0 = rss_bytes()
    fleet = rt.call(lambda: sim.create_fleet(prefix, model, ids, seed=1, connection=connection, options=options))
    assert broker.pid is not None
    c0, b0, w0 = cpu_seconds(), cpu_seconds(broker.pid), time.perf_counter()
    rt.call(fleet.start, LaunchSettings(strategy=LaunchStrategy.IMMEDIATE))
    running = 0
    while running < devices and time.perf_counter() - w0 < LAUNCH_TIMEOUT_S:
        time.sleep(0.01)
        running = rt.call(lambda: fleet.count_states()["running"])
    c1, b1, w1 = cpu_seconds(), cpu_seconds(broker.pid), time.perf_counter()
    rss1 = rss_bytes()
    errors = rt.call(lambda: sorted({d.last_error for d in fleet.devices if d.last_error})[:3])
    rt.call(sim.shutdown)
    wall = w1 - w0
    return {
        "devices": devices,
        "connected": running,
        "launch_s": round(wall, 2),
        "connects_per_s": round(running / wall, 1) if wall else None,
        "cpu_pct": round(100 * (c1 - c0) / wall, 1),
        "broker_cpu_pct": round(100 * (b1 - b0) / wall, 1),
        "cpu_ms_per_connect": round(1000 * (c1 - c0) / running, 3) if running else None,
        "rss_per_device_kb": round((rss1 - rss0) / devices / 1024, 1) if devices else None,
        "errors": errors,
    }


def run(devices: int = 2000, *, tls_first: bool = False) -> Json:
    """One benchmark run: certificates, both brokers, a plain and a TLS launch of ``devices`` devices each.

    Returns (and ``main`` prints) the figures as a dictionary: ``certificates``, ``plain``, ``tls`` and
    ``ratios``. Stops both brokers and removes the certificates at the end.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the brokers inherit it
    work = Path(tempfile.mkdtemp(prefix="iotix-bench-tls-"))
    brokers: list[MqttBroker] = []
    out: Json = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "devices": devices}
    try:
        ids = [f"tls-{i:05d}" for i in range(devices)]
        out["certificates"] = make_certificates(work / "ca", work / "fleet", ids)
        tls_broker = start_local_broker(tls=True, ca_dir=work / "ca")
        brokers.append(tls_broker)
        plain_broker = start_local_broker("mosquitto")
        brokers.append(plain_broker)
        out["brokers"] = {"tls": tls_broker.url, "plain": plain_broker.url}
        order = ("tls", "plain") if tls_first else ("plain", "tls")
        for mode in order:
            if mode == "tls":
                out["tls"] = launch(tls_broker, devices, tls=True, tls_dir=work / "fleet")
            else:
                out["plain"] = launch(plain_broker, devices, tls=False, tls_dir=None)
            time.sleep(1.0)  # let the broker close the connections of the fleet just stopped
        plain, tls = out["plain"], out["tls"]
        out["ratios"] = {
            "connect_rate_tls_over_plain": _ratio(tls["connects_per_s"], plain["connects_per_s"]),
            "cpu_per_connect_tls_over_plain": _ratio(tls["cpu_ms_per_connect"], plain["cpu_ms_per_connect"]),
        }
    finally:
        get_runtime().stop()
        for broker in brokers:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 2) if a and b else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=2000, help="devices per launch, TLS and plain (default 2000)")
    ap.add_argument("--tls-first", action="store_true", help="launch the TLS fleet before the plain one")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    out = run(args.devices, tls_first=args.tls_first)
    text = json.dumps(out, indent=2)
    print(text, flush=True)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
