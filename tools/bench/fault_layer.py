#!/usr/bin/env python3
"""Cost of the network-fault layer (issue 12): the same MQTT fleet without the layer, with it and no fault
active, and with a latency fault, in one invocation.

Starts a local Mosquitto (INFRA.md settings, as ``mqtt_fleet.py``) and then, per phase, runs each variant in a
child process of its own (a fresh process each, so CPU and RSS are not skewed by what the previous fleet left
to the allocator), one after the other against the same broker:

- ``A``: fleet created with ``FleetOptions(fault_layer=False)``: no fault layer in the data path;
- ``B``: the layer present (the default), no fault active: the cost every user pays;
- ``C``: the layer with a ``latency`` fault acting both ways (``--latency``, 20 ms by default).

Phases (the issue's two settings):

1. ``steady``: ``--devices`` (5,000) devices x 1 message/s, QoS 0, a ``--duration`` (40 s) window after all
   devices run and a settle of ``--settle`` seconds;
2. ``maxrate``: the max-rate setting of ``mqtt_fleet.py``: ``--maxrate-devices`` (1,000) devices sending
   every ``--maxrate-interval`` ms (10) for ``--maxrate-duration`` seconds (15): the highest rate through.

Receivers, independent of the simulator: one ``mosquitto_sub`` on ``bench/#`` writing the receive time of
every message and its topic (``-F '%U %t'``: counts in the window; messages on other topics are counted
apart and should be 0), and one on a sample of ``--latency-sample`` devices' topics
writing receive time and payload (``-F '%U %p'``): end-to-end latency = receive time - the envelope's ``ts``
(epoch ms at the scheduler run that sent it, the figure ``iotix.observe`` uses), so it includes the send
lateness, the fault layer, the broker and ``mosquitto_sub``. ``ts`` has 1 ms resolution: compare p99s of
thousands of samples, not single messages. The sample also counts duplicates (a device's sequence number
seen twice), which should be 0 at QoS 0.

Figures per variant: messages sent and received in the window and per second, CPU % (of one core, this
variant's process, /proc deltas over the window), CPU % per 1k msg/s and CPU µs per message, latency
p50/p90/p99/max (ms), RSS and RSS per device, send lateness, the fault layer's backlog and the fault's counters.
Deltas against ``A``: CPU per message (%) and added p50/p99 (ms), with the issue's targets for ``B``
(<= 15 % CPU per message, < 1 ms at p99); for ``C`` the added p50 should be about the latency set.
``--rounds N`` repeats the order (ABCABC...) and reports the median of each figure, to even out drift on a
busy machine; ``--order`` changes the order (e.g. ``CBA`` to check that it does not matter).

Usage:
    python tools/bench/fault_layer.py                            # the issue's sizes (about 5 minutes)
    python tools/bench/fault_layer.py --rounds 3 --json /tmp/fault_layer.json
    python tools/bench/fault_layer.py --quick                    # smoke test: small counts, a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "libraries"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import MosquittoSub, cpu_seconds, launch_all, rss_bytes, run_child_script  # noqa: E402
from mqtt_fleet import bench_model, per_1k  # noqa: E402

Json = dict[str, Any]

#: variant -> (label, fault layer in the data path, fault added)
VARIANTS: dict[str, tuple[str, bool, bool]] = {
    "A": ("no fault layer", False, False),
    "B": ("layer, no fault", True, False),
    "C": ("layer + latency fault", True, True),
}
#: the issue's targets for B against A
TARGET_CPU_PCT = 15.0
TARGET_P99_MS = 1.0
TS_RE = re.compile(rb'"ts":(\d+(?:\.\d+)?)')
ID_SEQ_RE = re.compile(rb'"deviceId":"[^"]*","seq":\d+')


# -- receivers (parent process) ---------------------------------------------------------------------------


class TimedSubscriber(MosquittoSub):
    """An independent ``mosquitto_sub`` writing one line per message, starting with its receive time (%U)."""

    def __init__(self, host: str, port: int, topics: list[str], fmt: str) -> None:
        super().__init__(host, port, topics, qos=0, fmt=fmt)
        self.lines: list[bytes] = []

    def stop(self) -> None:
        """Stop after the last messages in flight arrived; keep the lines."""
        super().stop()
        self.lines = self.path.read_bytes().splitlines()
        self.remove()

    def _in_window(self, w0: float, w1: float) -> list[bytes]:
        out = []
        for line in self.lines:
            try:
                t = float(line.partition(b" ")[0])
            except ValueError:
                continue
            if w0 <= t < w1:
                out.append(line)
        return out

    def count_between(self, w0: float, w1: float, topic_prefix: bytes) -> tuple[int, int]:
        """Messages received in ``[w0, w1)`` on topics starting with ``topic_prefix``, and on any other topic
        (a stray publisher on the broker: should be 0). Needs the format ``%U %t``."""
        ours = other = 0
        for line in self._in_window(w0, w1):
            if line.partition(b" ")[2].startswith(topic_prefix):
                ours += 1
            else:
                other += 1
        return ours, other

    def latencies_ms_between(self, w0: float, w1: float) -> tuple[list[float], int]:
        """End-to-end latencies (ms) of the messages received in ``[w0, w1)``, and how many were duplicates
        (the same device and sequence number again: should be 0 at QoS 0). Needs the format ``%U %p``."""
        out = []
        seen: set[bytes] = set()
        duplicates = 0
        for line in self._in_window(w0, w1):
            head, _, payload = line.partition(b" ")
            key = ID_SEQ_RE.search(payload)
            if key:
                if key.group(0) in seen:
                    duplicates += 1
                    continue
                seen.add(key.group(0))
            match = TS_RE.search(payload)
            if match:
                out.append(float(head) * 1000.0 - float(match.group(1)))
        return out, duplicates


def summary_ms(values: list[float]) -> Json:
    if not values:
        return {"count": 0}
    values = sorted(values)

    def pct(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 2)

    return {
        "count": len(values),
        "min": round(values[0], 2),
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": round(values[-1], 2),
    }


# -- one variant (child process) ------------------------------------------------------------------------------


def run_variant(p: Json) -> Json:
    """Create, start and measure one fleet in this process; return its figures (window times are epoch s)."""
    from iotix.fleet.fleet import FleetOptions
    from iotix.fleet.simulator import Simulator
    from iotix.model.loader import load_model_dict
    from iotix.runtime import get_runtime

    rt = get_runtime()
    devices, prefix = p["devices"], p["prefix"]
    model = load_model_dict(bench_model(p["interval_ms"]))
    sim: Simulator = rt.call(lambda: Simulator(rt.loop))
    ids = [f"{prefix}-{i:05d}" for i in range(devices)]
    rss0 = rss_bytes()
    options = FleetOptions(fault_layer=p["fault_layer"])
    connection = {**model.connection, "host": p["host"], "port": p["port"]}
    fleet = rt.call(lambda: sim.create_fleet(prefix, model, ids, seed=1, connection=connection, options=options))
    try:
        connect_s, running = launch_all(rt, fleet)
        fault = None
        if p["latency"]:
            settings = {"latency": p["latency"], "direction": "both"}
            fault = rt.call(lambda: sim.network.add(prefix, "latency", settings, fault_name="bench-latency"))
        time.sleep(p["settle_s"])
        rt.call(fleet.lateness.__init__)  # lateness over the window only
        sent0 = rt.call(lambda: sum(d.sent for d in fleet.devices))
        c0, w0, m0 = cpu_seconds(), time.time(), time.perf_counter()
        time.sleep(p["duration_s"])
        c1, w1, m1 = cpu_seconds(), time.time(), time.perf_counter()
        stats = rt.call(fleet.stats)
        faults = rt.call(lambda: fleet.faults.describe() if fleet.faults is not None else [])
        rss1 = rss_bytes()
    finally:
        rt.call(sim.shutdown, timeout=120)
        rt.stop()
    wall = m1 - m0
    sent = stats["messagesSent"] - sent0
    cpu = c1 - c0
    return {
        "variant": p["variant"],
        "fault_layer": fleet.faults is not None,
        "fault": fault,
        "devices": devices,
        "connected": running,
        "connect_s": round(connect_s, 2),
        "window": [w0, w1],
        "sent_window": sent,
        "sent_per_s": round(sent / wall, 1),
        "cpu_pct": round(100 * cpu / wall, 1),
        "cpu_us_per_msg": round(1e6 * cpu / sent, 2) if sent else None,
        "rss_mb": round(rss1 / 2**20, 1),
        "rss_per_device_kb": round((rss1 - rss0) / devices / 1024, 2) if devices else None,
        "send_lateness_ms": stats["sendLatenessMs"],
        "failed": stats["messagesFailed"],
        "dropped": stats["messagesDropped"],
        "backlog_bytes": stats.get("networkBacklogBytes", 0),
        "faults": faults,
    }


# -- phases (parent process) --------------------------------------------------------------------------------


def run_child(params: Json) -> Json:
    args = [str(Path(__file__).resolve()), "--child", json.dumps(params)]
    return run_child_script(args, f"variant {params['variant']} of the {params['phase']} phase")


def run_phase(phase: str, args: argparse.Namespace, host: str, port: int) -> Json:
    steady = phase == "steady"
    devices = args.devices if steady else args.maxrate_devices
    params: Json = {
        "phase": phase,
        "host": host,
        "port": port,
        "devices": devices,
        "interval_ms": 1000 if steady else args.maxrate_interval,
        "duration_s": args.duration if steady else args.maxrate_duration,
        "settle_s": args.settle,
    }
    step = max(1, devices // max(1, args.latency_sample))
    runs: dict[str, list[Json]] = {v: [] for v in args.order}
    for round_no in range(args.rounds):
        for variant in args.order:
            _label, layer, with_fault = VARIANTS[variant]
            prefix = f"{phase[0]}{variant.lower()}{round_no}"
            topics = [f"bench/{prefix}-{i:05d}/telemetry" for i in range(0, devices, step)]
            counter = TimedSubscriber(host, port, ["bench/#"], "%U %t")
            sampler = TimedSubscriber(host, port, topics, "%U %p")  # each waits until it subscribed
            try:
                run = run_child(
                    {
                        **params,
                        "variant": variant,
                        "prefix": prefix,
                        "fault_layer": layer,
                        "latency": args.latency if with_fault else None,
                    }
                )
            finally:
                counter.stop()
                sampler.stop()
            w0, w1 = run["window"]
            received, stray = counter.count_between(w0, w1, f"bench/{prefix}-".encode())
            latencies, duplicates = sampler.latencies_ms_between(w0, w1)
            run["received_window"] = received
            run["received_other_topics"] = stray
            run["sampled_duplicates"] = duplicates
            run["received_per_s"] = round(received / (w1 - w0), 1)
            run["received_pct"] = round(100 * received / run["sent_window"], 2) if run["sent_window"] else None
            run["latency_ms"] = summary_ms(latencies)
            run["latency_sampled_devices"] = len(topics)
            run["cpu_pct_per_1k_msg_s"] = per_1k(run["cpu_pct"], run["sent_per_s"])
            runs[variant].append(run)
            print(json.dumps({phase: {variant: brief(run)}}), flush=True)
            time.sleep(args.pause)
    variants = {v: combine(rs) for v, rs in runs.items()}
    return {"settings": params, "variants": variants, "deltas": deltas(variants, args.latency)}


FIGURES = ("sent_per_s", "received_per_s", "cpu_pct", "cpu_pct_per_1k_msg_s", "cpu_us_per_msg", "rss_mb")


def brief(run: Json) -> Json:
    keys = ("connected", *FIGURES, "received_pct", "received_other_topics", "sampled_duplicates", "backlog_bytes")
    out = {k: run.get(k) for k in keys}
    out["latency_ms"] = {k: run["latency_ms"].get(k) for k in ("count", "p50", "p99")}
    return out


def combine(runs: list[Json]) -> Json:
    """One run as it is; several: the median of each figure, and the runs themselves."""
    if len(runs) == 1:
        return runs[0]
    out: Json = {"rounds": len(runs), "runs": runs}
    for key in (*FIGURES, "received_pct"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = round(statistics.median(values), 2) if values else None
    measured = [r["latency_ms"] for r in runs if r["latency_ms"]["count"]]
    out["latency_ms"] = {"count": sum(m["count"] for m in measured)}
    if measured:
        out["latency_ms"].update(
            {q: round(statistics.median(m[q] for m in measured), 2) for q in ("p50", "p90", "p99", "max")}
        )
    out["fault_layer"] = runs[0]["fault_layer"]
    return out


def deltas(variants: Json, latency: str) -> Json:
    base = variants.get("A")
    if base is None:
        return {}
    out: Json = {}
    for v in ("B", "C"):
        other = variants.get(v)
        if other is None or "p50" not in other["latency_ms"] or "p50" not in base["latency_ms"]:
            continue
        cpu = (
            round(100 * (other["cpu_us_per_msg"] / base["cpu_us_per_msg"] - 1), 1)
            if base.get("cpu_us_per_msg") and other.get("cpu_us_per_msg")
            else None
        )
        d: Json = {
            "cpu_per_msg_pct": cpu,
            "added_p50_ms": round(other["latency_ms"]["p50"] - base["latency_ms"]["p50"], 2),
            "added_p99_ms": round(other["latency_ms"]["p99"] - base["latency_ms"]["p99"], 2),
            "received_rate_ratio": round(other["received_per_s"] / base["received_per_s"], 3)
            if base["received_per_s"]
            else None,
        }
        if v == "B":
            d["cpu_target_met"] = cpu is not None and cpu <= TARGET_CPU_PCT
            d["p99_target_met"] = d["added_p99_ms"] < TARGET_P99_MS
            d["targets"] = f"<= {TARGET_CPU_PCT:g} % CPU per message, < {TARGET_P99_MS:g} ms added p99"
        else:
            d["latency_set"] = f"{latency} each way (the p50 of a one-way path should rise by about that)"
        out[f"{v}_vs_A"] = d
    return out


def table(phase: str, result: Json) -> str:
    head = (
        f"{'variant':<26} {'sent/s':>9} {'recv/s':>9} {'CPU %':>6} {'%/1k/s':>7} {'us/msg':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7}"
    )
    lines = [f"== {phase} ==", head]
    for v, r in result["variants"].items():
        lat = r["latency_ms"]
        lines.append(
            f"{v + ' ' + VARIANTS[v][0]:<26} {r['sent_per_s']:>9} {r['received_per_s']:>9} {r['cpu_pct']:>6} "
            f"{r['cpu_pct_per_1k_msg_s']!s:>7} {r['cpu_us_per_msg']!s:>7} {lat.get('p50')!s:>7} "
            f"{lat.get('p99')!s:>7} {r['rss_mb']:>7}"
        )
    for name, d in result["deltas"].items():
        cpu = "n/a" if d["cpu_per_msg_pct"] is None else f"{d['cpu_per_msg_pct']:+}"
        line = f"{name}: CPU per message {cpu} %, p50 {d['added_p50_ms']:+} ms, "
        line += f"p99 {d['added_p99_ms']:+} ms, received rate x{d['received_rate_ratio']}"
        if "targets" in d:
            ok = {True: "met", False: "MISSED"}
            line += f"  [targets: CPU {ok[d['cpu_target_met']]}, p99 {ok[d['p99_target_met']]}]"
        lines.append(line)
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------------------


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=5000, help="devices in the steady phase (1 msg/s each)")
    ap.add_argument("--duration", type=float, default=40.0, help="seconds measured per steady variant")
    ap.add_argument("--maxrate-devices", type=int, default=1000)
    ap.add_argument("--maxrate-duration", type=float, default=15.0, help="seconds measured per max-rate variant")
    ap.add_argument("--maxrate-interval", type=int, default=10, help="ms between a device's messages (>= 10)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after all devices run, before measuring")
    ap.add_argument("--pause", type=float, default=2.0, help="seconds between variants")
    ap.add_argument("--latency", default="20ms", help="the latency fault of variant C (each way)")
    ap.add_argument("--latency-sample", type=int, default=500, help="devices whose messages give the latency")
    ap.add_argument("--order", default="ABC", help="variants and their order (A, B, C)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the order; figures are the medians")
    ap.add_argument("--skip-steady", action="store_true")
    ap.add_argument("--skip-maxrate", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke test: 200 + 50 devices, a few seconds each")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # one variant in this (child) process
        out = run_variant(json.loads(args.child))
        args.json.write_text(json.dumps(out, default=str))
        return
    if args.quick:
        args.devices, args.duration, args.settle, args.pause = 200, 4.0, 1.0, 0.5
        args.maxrate_devices, args.maxrate_duration = 50, 3.0
    args.order = args.order.upper()
    if not args.order or any(v not in VARIANTS for v in args.order) or len(set(args.order)) != len(args.order):
        raise SystemExit(f"--order takes each of A, B, C at most once, got '{args.order}'")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the broker and the children
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up like Ctrl-C

    from iotix.services import start_local_broker

    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    broker = start_local_broker("mosquitto")
    out: Json = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "loadavg_at_start": load},
        "broker": broker.info(),
    }
    tables = []
    try:
        for phase, skip in (("steady", args.skip_steady), ("maxrate", args.skip_maxrate)):
            if skip:
                continue
            out[phase] = run_phase(phase, args, broker.host, broker.port)
            tables.append(table(phase, out[phase]))
            print(json.dumps({phase: {"deltas": out[phase]["deltas"]}}, indent=2), flush=True)
    except KeyboardInterrupt:
        print("interrupted: child processes stopped", file=sys.stderr)
        sys.exit(130)
    finally:
        broker.stop()
    print("\n" + "\n\n".join(tables), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
