#!/usr/bin/env python3
"""Cost of the figures' export (issue 13): the same MQTT fleet with the per-second figures only, with the
InfluxDB export to VictoriaMetrics on, and (optionally) with a Prometheus endpoint scraped as well, in one run.

Starts a local Mosquitto (INFRA.md settings, as ``mqtt_fleet.py``) and a local VictoriaMetrics
(``iotix.services.start_local_metrics_store``), then runs each variant in a child process of its own (a fresh
process each, so CPU and RSS are not skewed by what the previous fleet left to the allocator), one after the
other against the same broker and store:

- ``A``: ``--devices`` (10,000) MQTT devices x 1 message/s, QoS 0; the simulator's ``MetricsHub`` samples the
  fleet every second as always; no export;
- ``B``: the same plus ``iotix.observe.influx.InfluxExport`` (``interval_s=1``) writing to the VictoriaMetrics
  of the parent, registered as a hub sink before the fleet is created, removed and closed (flushed) after the
  window; its stats (points written, dropped, failed) go into the figures;
- ``C`` (``--order ABC``): B plus ``iotix.observe.prometheus.MetricsEndpoint`` scraped once a second by a
  thread of the child (``requests``): the cost of both exports at once.

Every variant imports the export modules before its first RSS reading, so the RSS figures compare the running
export, not the import. Per variant: all devices launched at once, a settle of ``--settle`` seconds after all
run, then a ``--duration`` window. Figures: messages sent per second (the fleet's counters) and received per
second by an independent ``mosquitto_sub`` on ``bench/#`` (counted by receive time within the window; messages
on other topics are counted apart and should be 0), CPU % of the child (of one core, /proc deltas over the
window), CPU % per 1k msg/s and CPU µs per message, RSS and RSS per device (RSS delta from before the export and
the fleet to the end of the window / devices), points written to VictoriaMetrics in the window (the export's
counter), the CPU % of Mosquitto and VictoriaMetrics over the same window, the busy CPU of the whole machine
(``host %``, of all cores: whatever else ran shows here), and the hub's send lateness p50/p99
over the window; the child's CPU per thread (the runtime loop, the export's threads, threads that ended in the
window), the CPU its hub sink took on the loop, and from those ``own %``: what the exports take for themselves
(their sink plus every thread but the loop and the main thread); and the child's CPU divided by Mosquitto's
(the broker does the same work in every variant, so the ratio evens out a machine whose speed drifts between
processes). Then the delta of B (and C) against A in CPU per 1k msg/s, with the issue's target for B
(at most +10 %), the delta of the Mosquitto-relative CPU, and the exports' own CPU as a share of A's.

After all runs, the parent asks VictoriaMetrics for the samples it stored of each B/C run
(``iotix_messages_sent_total``, ``iotix_latency_count``, ``iotix_failures_total`` of that run's fleet: one
sample per point) and prints them next to the export's ``pointsWritten`` (they should be equal).

``--rounds N`` repeats the order (ABAB...) and reports the median of each figure, to even out drift on a busy
machine; the per-round pairs (A and B of the same round) are shown too.

Usage:
    python tools/bench/metrics_export.py --rounds 2 --json /tmp/metrics_export.json   # about 4 minutes
    python tools/bench/metrics_export.py --order ABC --rounds 3                      # + the Prometheus scrape (~10 min)
    python tools/bench/metrics_export.py --quick                                     # smoke test, < 1 minute
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "libraries"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CLK, cpu_seconds, launch_all, rss_bytes, run_child_script  # noqa: E402
from fault_layer import TimedSubscriber  # noqa: E402
from mqtt_fleet import bench_model, per_1k  # noqa: E402

Json = dict[str, Any]

#: variant -> (label, InfluxDB export on, Prometheus endpoint scraped)
VARIANTS: dict[str, tuple[str, bool, bool]] = {
    "A": ("figures, no export", False, False),
    "B": ("+ InfluxDB export", True, False),
    "C": ("+ Influx + /metrics", True, True),
}
#: the issue's target for B against A: CPU per 1k msg/s
TARGET_CPU_PCT = 10.0
#: one stored sample per point: the ``iotix`` point has messages_sent_total, a latency point has count, a
#: failures point has total
POINT_METRICS = ("iotix_messages_sent_total", "iotix_latency_count", "iotix_failures_total")


# -- one variant (child process) ------------------------------------------------------------------------------


class Scraper:
    """A thread that GETs the Prometheus endpoint once a second and checks that the fleet's counter is there."""

    def __init__(self, url: str, fleet: str) -> None:
        import requests

        self.url = url
        self.needle = f'iotix_messages_sent_total{{fleet="{fleet}"'
        self.session = requests.Session()
        self.scrapes = self.failures = self.missing = self.bytes = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                response = self.session.get(self.url, timeout=5)
                response.raise_for_status()
                self.scrapes += 1
                self.bytes += len(response.content)
                if self.needle not in response.text:
                    self.missing += 1
            except Exception as err:  # count and keep scraping
                self.failures += 1
                self.last_error = f"{type(err).__name__}: {err}"
            next_at += 1.0
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def snapshot(self) -> tuple[int, int, int, int]:
        return self.scrapes, self.failures, self.missing, self.bytes

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.session.close()


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK


def thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of every live thread of this process by native id, with the thread's Python name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            secs = cpu_seconds(f"self/task/{tid}")
        except OSError:  # ended meanwhile
            continue
        out[int(tid)] = (names.get(int(tid), "?"), secs)
    return out


def cpu_by_thread(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], total: float, wall: float):
    """CPU % (of one core) over the window per thread name (numbered suffixes merged); threads that ended in the
    window (timers, for one) are the rest of ``total``."""
    out: dict[str, float] = {}
    accounted = 0.0
    for tid, (name, secs) in after.items():
        used = secs - before.get(tid, (name, 0.0))[1]
        accounted += used
        key = name.rstrip("0123456789_ -") or name
        out[key] = out.get(key, 0.0) + used
    out["(ended in the window)"] = total - accounted
    return {k: round(100 * v / wall, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if abs(v) > 0}


class TimedSink:
    """Wraps a hub sink and adds up the CPU time it takes on the loop thread (``time.thread_time``)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, pairs: list[Any]) -> None:
        t0 = time.thread_time()
        try:
            self.sink(pairs)
        finally:
            self.seconds += time.thread_time() - t0
            self.calls += 1


def _written(export: Any) -> int:
    return int(export.stats()["pointsWritten"]) if export is not None else 0


def run_variant(p: Json) -> Json:
    """Create, start and measure one fleet in this process; return its figures (window times are epoch s)."""
    from iotix.fleet.simulator import Simulator
    from iotix.model.loader import load_model_dict
    from iotix.observe.influx import InfluxExport
    from iotix.observe.prometheus import MetricsEndpoint
    from iotix.runtime import get_runtime

    rt = get_runtime()
    devices, prefix = p["devices"], p["prefix"]
    model = load_model_dict(bench_model(p["interval_ms"]))
    sim: Simulator = rt.call(lambda: Simulator(rt.loop))
    hub = sim.metrics
    ids = [f"{prefix}-{i:05d}" for i in range(devices)]
    rss0 = rss_bytes()
    export: InfluxExport | None = None
    endpoint: MetricsEndpoint | None = None
    scraper: Scraper | None = None
    sink: TimedSink | None = None
    if p["export"]:
        export = InfluxExport(url=p["store_url"], token="", org="iotix", bucket="iotix", interval_s=1.0, hub=hub)
        sink = TimedSink(export.sink)
        rt.call(lambda: hub.add_sink(sink))
    if p["prometheus"]:
        endpoint = MetricsEndpoint(hub)
    connection = {**model.connection, "host": p["host"], "port": p["port"]}
    fleet = rt.call(lambda: sim.create_fleet(prefix, model, ids, seed=1, connection=connection))
    export_stats = None
    scrape: Json | None = None
    try:
        if endpoint is not None:
            scraper = Scraper(endpoint.url, prefix)
        connect_s, running = launch_all(rt, fleet)
        time.sleep(p["settle_s"])
        others = {name: pid for name, pid in p["pids"].items() if pid}
        sent0 = rt.call(lambda: sum(d.sent for d in fleet.devices))
        points0 = _written(export)
        scrape0 = scraper.snapshot() if scraper is not None else None
        sink0 = rt.call(lambda: sink.seconds if sink is not None else 0.0)
        o0 = {name: cpu_seconds(pid) for name, pid in others.items()}
        b0 = machine_busy_seconds()
        t0 = thread_cpu()
        c0, w0, m0 = cpu_seconds(), time.time(), time.perf_counter()
        time.sleep(p["duration_s"])
        c1, w1, m1 = cpu_seconds(), time.time(), time.perf_counter()
        o1 = {name: cpu_seconds(pid) for name, pid in others.items()}
        sink1 = rt.call(lambda: sink.seconds if sink is not None else 0.0)
        b1 = machine_busy_seconds()
        t1 = thread_cpu()
        points1 = _written(export)
        scrape1 = scraper.snapshot() if scraper is not None else None
        stats = rt.call(fleet.stats)
        rss1 = rss_bytes()
        series = hub.series[prefix]
        lateness = rt.call(lambda: series.latency_window("lateness", p["duration_s"]).summary())
        rows_window = rt.call(lambda: len(series.rows(p["duration_s"])))
        sink_errors = hub.sink_errors
        if scraper is not None and scrape0 is not None and scrape1 is not None:
            scraper.stop()
            d = [b - a for a, b in zip(scrape0, scrape1, strict=True)]
            scrape = {
                "scrapes_window": d[0],
                "failures_window": d[1],
                "fleet_missing_window": d[2],
                "bytes_per_scrape": round(d[3] / d[0]) if d[0] else None,
                "last_error": scraper.last_error,
            }
    finally:
        if scraper is not None:
            scraper.stop()
        if export is not None:
            rt.call(lambda: hub.remove_sink(sink))
            export_stats = export.close()  # flushes what is buffered
        if endpoint is not None:
            endpoint.close()
        rt.call(sim.shutdown, timeout=120)
        rt.stop()
    wall = m1 - m0
    sent = stats["messagesSent"] - sent0
    cpu = c1 - c0
    threads = cpu_by_thread(t0, t1, cpu, wall)
    own_threads = sum(pct for name, pct in threads.items() if name not in ("iotix-runtime", "MainThread"))
    return {
        "variant": p["variant"],
        "prefix": prefix,
        "run_id": hub.run_id,
        "export": export is not None,
        "prometheus": endpoint is not None,
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
        "points_written_window": points1 - points0,
        "other_cpu_pct": {name: round(100 * (o1[name] - o0[name]) / wall, 1) for name in others},
        "machine_cpu_pct": round(100 * (b1 - b0) / wall, 1),
        "cpu_by_thread_pct": threads,
        "sink_on_loop_pct": round(100 * (sink1 - sink0) / wall, 3),
        # what the exports take for themselves: their sink on the loop and every thread but the loop and main
        "export_own_cpu_pct": round(100 * (sink1 - sink0) / wall + own_threads, 2),
        "lateness_ms": lateness,
        "hub_rows_window": rows_window,
        "sink_errors": sink_errors,
        "failed": stats["messagesFailed"],
        "dropped": stats["messagesDropped"],
        "export_stats": export_stats,
        "scrape": scrape,
    }


# -- the runs (parent process) --------------------------------------------------------------------------------


def run_child(params: Json) -> Json:
    args = [str(Path(__file__).resolve()), "--child", json.dumps(params)]
    return run_child_script(args, f"variant {params['variant']} (round {params['round']})")


def loadavg() -> list[str]:
    with open("/proc/loadavg") as fh:
        return fh.read().split()[:3]


def run_all(args: argparse.Namespace, broker: Any, store: Any) -> dict[str, list[Json]]:
    params: Json = {
        "host": broker.host,
        "port": broker.port,
        "store_url": store.url,
        "pids": {"mosquitto": broker.pid, "victoria": store.pid},
        "devices": args.devices,
        "interval_ms": 1000,
        "duration_s": args.duration,
        "settle_s": args.settle,
    }
    runs: dict[str, list[Json]] = {v: [] for v in args.order}
    for round_no in range(args.rounds):
        for variant in args.order:
            _label, export, prometheus = VARIANTS[variant]
            prefix = f"m{variant.lower()}{round_no}"
            counter = TimedSubscriber(broker.host, broker.port, ["bench/#"], "%U %t")  # waits until subscribed
            try:
                run = run_child(
                    {
                        **params,
                        "variant": variant,
                        "round": round_no,
                        "prefix": prefix,
                        "export": export,
                        "prometheus": prometheus,
                    }
                )
            finally:
                counter.stop()
            w0, w1 = run["window"]
            received, stray = counter.count_between(w0, w1, f"bench/{prefix}-".encode())
            run["loadavg_after"] = loadavg()
            run["received_window"] = received
            run["received_other_topics"] = stray
            run["received_per_s"] = round(received / (w1 - w0), 1)
            run["received_pct"] = round(100 * received / run["sent_window"], 2) if run["sent_window"] else None
            run["cpu_pct_per_1k_msg_s"] = per_1k(run["cpu_pct"], run["sent_per_s"])
            mosquitto = run["other_cpu_pct"].get("mosquitto")
            run["cpu_per_broker_cpu"] = round(run["cpu_pct"] / mosquitto, 3) if mosquitto else None
            runs[variant].append(run)
            print(json.dumps({variant: brief(run)}), flush=True)
            time.sleep(args.pause)
    return runs


def count_stored(store: Any, runs: dict[str, list[Json]]) -> None:
    """Add to every run with an export what VictoriaMetrics stored of its fleet: samples per point metric."""
    store.flush()
    time.sleep(1.0)  # force_flush makes the samples searchable; give the indexes a moment as well
    store.flush()
    for variant_runs in runs.values():
        for run in variant_runs:
            if not run["export"]:
                continue
            stored: Json = {}
            for metric in POINT_METRICS:
                series = store.export(f'{metric}{{fleet="{run["prefix"]}",run_id="{run["run_id"]}"}}')
                stored[metric] = sum(len(s.get("timestamps", [])) for s in series)
            stored["points"] = sum(stored[m] for m in POINT_METRICS)
            written = (run["export_stats"] or {}).get("pointsWritten")
            stored["points_written"] = written
            stored["equal"] = written == stored["points"]
            run["stored"] = stored


FIGURES = (
    "sent_per_s",
    "received_per_s",
    "cpu_pct",
    "cpu_pct_per_1k_msg_s",
    "cpu_us_per_msg",
    "rss_mb",
    "rss_per_device_kb",
    "points_written_window",
    "received_pct",
    "machine_cpu_pct",
    "cpu_per_broker_cpu",
    "export_own_cpu_pct",
    "sink_on_loop_pct",
)


def brief(run: Json) -> Json:
    keys = ("connected", *FIGURES, "received_other_topics", "other_cpu_pct", "hub_rows_window", "sink_errors")
    out = {k: run.get(k) for k in keys}
    out["lateness_ms"] = {k: (run["lateness_ms"] or {}).get(k) for k in ("count", "p50", "p99")}
    if run["export_stats"]:
        out["export_stats"] = run["export_stats"]
    if run["scrape"]:
        out["scrape"] = run["scrape"]
    out["cpu_by_thread_pct"] = run["cpu_by_thread_pct"]
    return out


def combine(runs: list[Json]) -> Json:
    """The median of each figure over the rounds, and the runs themselves."""
    out: Json = {"rounds": len(runs), "runs": runs}
    for key in FIGURES:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = round(statistics.median(values), 2) if values else None
    for name in runs[0]["other_cpu_pct"]:
        out.setdefault("other_cpu_pct", {})[name] = round(statistics.median(r["other_cpu_pct"][name] for r in runs), 1)
    for q in ("p50", "p99"):
        values = [r["lateness_ms"][q] for r in runs if r["lateness_ms"] and r["lateness_ms"].get(q) is not None]
        out[f"lateness_{q}_ms"] = round(statistics.median(values), 2) if values else None
    return out


def pct_of(part: float | None, whole: float | None) -> float | None:
    return round(100 * part / whole, 1) if part is not None and whole else None


def pct_delta(value: float | None, base: float | None) -> float | None:
    return round(100 * (value / base - 1), 1) if value and base else None


def deltas(runs: dict[str, list[Json]], variants: Json) -> Json:
    base = variants.get("A")
    if base is None:
        return {}
    out: Json = {}
    for v in ("B", "C"):
        other = variants.get(v)
        if other is None:
            continue
        d: Json = {
            "cpu_per_1k_msg_s_pct": pct_delta(other["cpu_pct_per_1k_msg_s"], base["cpu_pct_per_1k_msg_s"]),
            "cpu_per_msg_pct": pct_delta(other["cpu_us_per_msg"], base["cpu_us_per_msg"]),
            "cpu_pct_points": round(other["cpu_pct"] - base["cpu_pct"], 1),
            # the child's CPU in units of Mosquitto's (same work in every variant): evens out a machine that is
            # faster or slower from one process to the next
            "cpu_per_broker_cpu_pct": pct_delta(other["cpu_per_broker_cpu"], base["cpu_per_broker_cpu"]),
            # the exports' own threads and sink against the whole CPU of A: the part of the delta they explain
            "own_cpu_of_A_pct": pct_of(other["export_own_cpu_pct"], base["cpu_pct"]),
            "rss_mb": round(other["rss_mb"] - base["rss_mb"], 1),
            "per_round_cpu_per_1k_msg_s_pct": [
                pct_delta(b["cpu_pct_per_1k_msg_s"], a["cpu_pct_per_1k_msg_s"])
                for a, b in zip(runs["A"], runs[v], strict=True)
            ],
        }
        if v == "B":
            cpu = d["cpu_per_1k_msg_s_pct"]
            d["target_met"] = cpu is not None and cpu <= TARGET_CPU_PCT
            d["target"] = f"<= +{TARGET_CPU_PCT:g} % CPU per 1k msg/s"
        out[f"{v}_vs_A"] = d
    return out


def table(result: Json) -> str:
    head = (
        f"{'variant':<24} {'sent/s':>8} {'recv/s':>8} {'recv %':>7} {'CPU %':>6} {'%/1k/s':>7} {'us/msg':>7} "
        f"{'RSS MB':>7} {'KB/dev':>7} {'pts/win':>7} {'mosq %':>6} {'VM %':>5} "
        f"{'host %':>6} {'own %':>5} {'late p99':>8}"
    )
    lines = [head]
    for v, r in result["variants"].items():
        other = r.get("other_cpu_pct", {})
        lines.append(
            f"{v + ' ' + VARIANTS[v][0]:<24} {r['sent_per_s']:>8} {r['received_per_s']:>8} "
            f"{r['received_pct']!s:>7} {r['cpu_pct']:>6} {r['cpu_pct_per_1k_msg_s']!s:>7} "
            f"{r['cpu_us_per_msg']!s:>7} {r['rss_mb']:>7} {r['rss_per_device_kb']!s:>7} "
            f"{r['points_written_window']:>7g} {other.get('mosquitto', '-')!s:>6} {other.get('victoria', '-')!s:>5} "
            f"{r['machine_cpu_pct']!s:>6} {r['export_own_cpu_pct']!s:>5} {r['lateness_p99_ms']!s:>8}"
        )
    lines.append("per round (CPU %/1k msg/s, and / Mosquitto's CPU): " + "; ".join(per_round(result["runs"])))
    for name, d in result["deltas"].items():
        cpu = "n/a" if d["cpu_per_1k_msg_s_pct"] is None else f"{d['cpu_per_1k_msg_s_pct']:+}"
        line = f"{name}: CPU per 1k msg/s {cpu} % (per round {d['per_round_cpu_per_1k_msg_s_pct']}), "
        line += f"CPU {d['cpu_pct_points']:+} points, RSS {d['rss_mb']:+} MB"
        rel = d["cpu_per_broker_cpu_pct"]
        line += f"\n    {name}: CPU relative to Mosquitto's {'n/a' if rel is None else f'{rel:+}'} %; "
        line += f"the export's own threads + sink: +{d['own_cpu_of_A_pct']} % of A's CPU"
        if "target" in d:
            line += f"  [target {d['target']}: {'met' if d['target_met'] else 'MISSED'}]"
        lines.append(line)
    for v, variant_runs in result["runs"].items():
        for i, run in enumerate(variant_runs):
            threads = ", ".join(f"{name} {pct}" for name, pct in list(run["cpu_by_thread_pct"].items())[:6])
            lines.append(f"{v} round {i}: CPU % by thread: {threads}")
    for v, variant_runs in result["runs"].items():
        for i, run in enumerate(variant_runs):
            if run.get("stored"):
                s, st = run["stored"], run["export_stats"]
                lines.append(
                    f"{v} round {i}: pointsWritten {st['pointsWritten']}, pointsDropped {st['pointsDropped']}, "
                    f"pointsFailed {st['pointsFailed']}; stored in VictoriaMetrics: {s['points']} points "
                    f"(iotix_messages_sent_total {s['iotix_messages_sent_total']}, iotix_latency_count "
                    f"{s['iotix_latency_count']}, iotix_failures_total {s['iotix_failures_total']}): "
                    f"{'N written = N stored' if s['equal'] else 'MISMATCH'}"
                )
            if run.get("scrape"):
                sc = run["scrape"]
                lines.append(
                    f"{v} round {i}: /metrics scraped {sc['scrapes_window']} times in the window "
                    f"({sc['bytes_per_scrape']} B each), {sc['failures_window']} failures, "
                    f"fleet missing {sc['fleet_missing_window']}"
                )
    return "\n".join(lines)


def per_round(runs: dict[str, list[Json]]) -> list[str]:
    rounds = max(len(rs) for rs in runs.values())
    out = []
    for i in range(rounds):
        parts = [
            f"{v} {rs[i]['cpu_pct_per_1k_msg_s']} ({rs[i]['cpu_per_broker_cpu']})"
            for v, rs in runs.items()
            if i < len(rs)
        ]
        out.append(f"round {i}: " + ", ".join(parts))
    return out


# -- main -----------------------------------------------------------------------------------------------------


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10_000, help="devices (1 msg/s each, QoS 0)")
    ap.add_argument("--duration", type=float, default=40.0, help="seconds measured per variant")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds after all devices run, before measuring")
    ap.add_argument("--pause", type=float, default=3.0, help="seconds between variants")
    ap.add_argument("--order", default="AB", help="variants and their order (A, B, C)")
    ap.add_argument("--rounds", type=int, default=2, help="repeat the order; figures are the medians")
    ap.add_argument("--hash-seed", type=int, default=0, help="PYTHONHASHSEED of the children (-1: random)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 300 devices, a few seconds each")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # one variant in this (child) process
        out = run_variant(json.loads(args.child))
        args.json.write_text(json.dumps(out, default=str))
        return
    if args.quick:
        args.devices, args.duration, args.settle, args.pause = 300, 5.0, 2.0, 0.5
    args.order = args.order.upper()
    if not args.order or any(v not in VARIANTS for v in args.order) or len(set(args.order)) != len(args.order):
        raise SystemExit(f"--order takes each of A, B, C at most once (the deltas need A), got '{args.order}'")
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the servers and the children
    if args.hash_seed >= 0:  # the same string hashes in every child: one source of variance less
        os.environ["PYTHONHASHSEED"] = str(args.hash_seed)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up like Ctrl-C

    from iotix.services import start_local_broker, start_local_metrics_store

    out: Json = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "loadavg_at_start": loadavg()},
        "settings": {k: getattr(args, k) for k in ("devices", "duration", "settle", "order", "rounds", "hash_seed")},
    }
    broker = start_local_broker("mosquitto")
    store = None
    try:
        store = start_local_metrics_store()
        out["broker"], out["store"] = broker.info(), store.info()
        runs = run_all(args, broker, store)
        count_stored(store, runs)
    except KeyboardInterrupt:
        print("interrupted: child processes stopped", file=sys.stderr)
        sys.exit(130)
    finally:
        if store is not None:
            store.stop()
        broker.stop()
    out["machine"]["loadavg_at_end"] = loadavg()
    variants = {v: combine(rs) for v, rs in runs.items()}
    out["runs"] = runs
    out["variants"] = variants
    out["deltas"] = deltas(runs, variants)
    print(json.dumps({"deltas": out["deltas"]}, indent=2), flush=True)
    print(f"\nload average at start {out['machine']['loadavg_at_start']}, at end {out['machine']['loadavg_at_end']}")
    print(table(out), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
