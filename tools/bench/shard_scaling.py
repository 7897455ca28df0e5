#!/usr/bin/env python3
"""Sharded max rate: the aggregate QoS 0 rate of one fleet over N shards against N x one shard's, in one run.

For each shard count (default 1, then 2) a fresh sharded fleet of ``--devices-per-shard`` devices per shard
sends every ``--interval`` ms (10 ms, the least a model allows: at most 100 msg/s per device) to its own local
Mosquitto per shard (device i goes to broker i mod N, so no broker takes more than one shard's traffic), with
no subscriber (the broker only counts and drops QoS 0 messages). Over a ``--window`` of seconds it reads the
fleet's summed stats and the CPU of every shard process and every Mosquitto from /proc, and prints the
aggregate rate as a share of N x the 1-shard rate (issue 14: >= 0.8 where the broker is not the bottleneck)
and what bounded it: on a machine with fewer free cores than shards + brokers, the CPU.

Usage:
    python tools/bench/shard_scaling.py                      # 1 and 2 shards, 1,000 devices each, 20 s
    python tools/bench/shard_scaling.py --shards 1 2 --rounds 2 --json results/shard_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "libraries"))

from iotix.cluster.ray_support import ensure_ray, shutdown_ray  # noqa: E402
from iotix.cluster.sharded import build_sharded_fleet  # noqa: E402
from iotix.fleet.setup import ConnectionOverrides, FleetSetup  # noqa: E402
from iotix.fleet.simulator import Simulator  # noqa: E402
from iotix.fleet.timeline import LaunchSettings, LaunchStrategy  # noqa: E402
from iotix.model.loader import load_model_dict  # noqa: E402
from iotix.runtime import get_runtime  # noqa: E402
from iotix.services import start_local_broker  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds, mqtt_model  # noqa: E402

Json = dict[str, Any]


def run(shards: int, args: argparse.Namespace, round_no: int) -> Json:
    brokers = [start_local_broker() for _ in range(shards)]
    rt = get_runtime()
    sim = rt.call(lambda: Simulator(rt.loop))
    model = load_model_dict(mqtt_model("shard-bench", "shardbench", qos=0, interval_ms=args.interval))
    host = ",".join(f"{b.host}:{b.port}" for b in brokers)
    setup = FleetSetup(
        name=f"rate-{shards}-{round_no}",
        count=args.devices_per_shard * shards,
        connection=ConnectionOverrides(host=host),
    )
    fleet = rt.call(build_sharded_fleet, sim, model, setup, shards, timeout=300)
    try:
        rt.call(fleet.start, LaunchSettings(strategy=LaunchStrategy.IMMEDIATE))
        if not rt.call(fleet.wait_until_running, 120.0, timeout=180):
            raise SystemExit(f"{shards} shards: not every device connected")
        time.sleep(args.warmup)
        pids = {f"shard {s['index']}": s["pid"] for s in fleet.shards_info()}
        pids.update({f"mosquitto {k}": b.pid for k, b in enumerate(brokers)})
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        sent0, t0 = rt.call(fleet.stats)["messagesSent"], time.monotonic()
        time.sleep(args.window)
        sent1, t1 = rt.call(fleet.stats)["messagesSent"], time.monotonic()
        cpu = {name: round(100 * (cpu_seconds(pid) - cpu0[name]) / (t1 - t0), 1) for name, pid in pids.items()}
        rt.call(fleet.stop, timeout=120)
        return {"shards": shards, "rate": round((sent1 - sent0) / (t1 - t0)), "cpu_pct": cpu}
    finally:
        rt.call(sim.delete_fleet, fleet.name, timeout=120)
        for broker in brokers:
            broker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--devices-per-shard", type=int, default=1000)
    ap.add_argument("--interval", type=int, default=10, help="ms between a device's messages (>= 10)")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=1, help="alternate the shard counts this many times")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    ensure_ray()
    runs: list[Json] = []
    try:
        for round_no in range(args.rounds):
            for shards in args.shards:
                result = run(shards, args, round_no)
                runs.append(result)
                print(json.dumps(result), flush=True)
    finally:
        shutdown_ray()
    rates = {n: statistics.median(r["rate"] for r in runs if r["shards"] == n) for n in args.shards}
    one = rates.get(1)
    out: Json = {"cores": os.cpu_count(), "runs": runs, "median_rate": rates}
    if one:
        out["aggregate_of_n_times_one"] = {n: round(rate / (n * one), 3) for n, rate in rates.items()}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
