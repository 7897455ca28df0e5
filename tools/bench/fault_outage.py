#!/usr/bin/env python3
"""Outage benchmark: a fleet's target goes down for a minute and comes back; how does the fleet recover?

Starts a local Mosquitto (INFRA.md settings) and an independent ``mosquitto_sub`` (QoS 1) that records every
message the broker delivered, then, in this one process, an MQTT fleet (QoS 1, one reading per device per
interval, the fleet's default reconnect backoff: full jitter, base 0.5 s, cap 30 s). After a steady phase the
fleet's target is taken down through the network-fault layer (``Take Target Down mode=refuse``: every open
connection is reset, every new one refused, as devices see a broker or a load balancer that is gone), kept
down for ``--outage`` seconds and brought up again. Reported:

- reconnects: how many devices were cut off and reconnected, the time from bring-up to the last one (full
  recovery), the peak reconnects per second and a per-second histogram after bring-up (with full jitter they
  spread over the backoff window instead of arriving in one burst), and the connection attempts per second
  during the outage (the backoff thinning them out);
- messages: sent, acknowledged (PUBACK), received by the independent subscriber (distinct and duplicates),
  lost (sequence numbers the subscriber never saw; must be 0 at QoS 1), dropped from full offline queues,
  the time until the offline queues were flushed;
- CPU % (of one core) and RSS of this process, per phase.

Usage:
    python tools/bench/fault_outage.py                 # 2,000 devices, 60 s outage
    python tools/bench/fault_outage.py --quick         # 200 devices, 10 s outage (a smoke run, ~1 min)
    python tools/bench/fault_outage.py --devices 5000 --outage 120 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "libraries"))

from iotix.fleet.device import DeviceState  # noqa: E402
from iotix.fleet.fleet import Fleet, FleetOptions  # noqa: E402
from iotix.fleet.simulator import Simulator  # noqa: E402
from iotix.fleet.timeline import LaunchSettings, LaunchStrategy  # noqa: E402
from iotix.model.loader import load_model_dict  # noqa: E402
from iotix.runtime import get_runtime  # noqa: E402
from iotix.services import start_local_broker  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MosquittoSub, cpu_seconds, mqtt_model, rss_bytes  # noqa: E402

FLEET = "outage"
TOPIC = "outage/+/telemetry"
#: How often the sampler on the loop looks at the devices (the resolution of the reconnect times; its cost,
#: a pass over the devices, is in the CPU figures: about 1 % of a core at 2,000 devices).
SAMPLE_S = 0.1


def bench_model(interval_ms: int) -> dict[str, Any]:
    return mqtt_model("bench-outage", "outage", qos=1, interval_ms=interval_ms)


class Subscriber(MosquittoSub):
    """An independent ``mosquitto_sub`` at QoS 1 writing every payload (one JSON envelope a line) to a file."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        super().__init__(host, port, [topic], qos=1, fmt="%p")

    def close(self) -> dict[str, Counter[int]]:
        """Stop it; per device the distinct sequence numbers seen, and how often each one came."""
        self.stop()
        seen: dict[str, Counter[int]] = {}
        with self.path.open("rb") as fh:
            for line in fh:
                try:
                    env = json.loads(line)
                except ValueError:
                    continue
                seen.setdefault(env["deviceId"], Counter())[env["seq"]] += 1
        self.remove()
        return seen


class Sampler:
    """Watches the devices on the loop: when each one reconnected, and connection attempts per interval."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.connects = [d.connects for d in fleet.devices]
        self.reconnect_times: list[float] = []  # loop time of every completed (re)connect while sampling
        self.attempts: list[tuple[float, int]] = []  # (loop time, failed attempts since the previous sample)
        self.lost_times: list[float] = []  # loop time a device noticed it lost its connection
        self._disconnects = [d.disconnects for d in fleet.devices]
        self._failures = sum(d.connect_failures for d in fleet.devices)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        devices = self.fleet.devices
        while True:
            await asyncio.sleep(SAMPLE_S)
            now = loop.time()
            failures = 0
            for i, d in enumerate(devices):
                if d.connects != self.connects[i]:
                    self.reconnect_times.extend([now] * (d.connects - self.connects[i]))
                    self.connects[i] = d.connects
                if d.disconnects != self._disconnects[i]:
                    self.lost_times.append(now)
                    self._disconnects[i] = d.disconnects
                failures += d.connect_failures
            self.attempts.append((now, failures - self._failures))
            self._failures = failures

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def per_second(times: list[float], origin: float, until: float) -> list[int]:
    """Counts per whole second after ``origin`` up to ``until`` (events before ``origin`` are left out)."""
    n = max(1, int(until - origin) + 1)
    hist = [0] * n
    for t in times:
        k = int(t - origin)
        if 0 <= k < n:
            hist[k] += 1
    while len(hist) > 1 and hist[-1] == 0:
        hist.pop()
    return hist


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def wait_for(rt: Any, predicate: Any, timeout: float) -> float | None:
    """Seconds until ``predicate`` (run on the loop) is true, or None after ``timeout``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if rt.call(predicate):
            return time.perf_counter() - t0
        time.sleep(0.05)
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    broker = start_local_broker("mosquitto")
    rt = get_runtime()
    out: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "broker": broker.info(),
        "settings": {
            "devices": args.devices,
            "interval_ms": args.interval_ms,
            "qos": 1,
            "outage_s": args.outage,
            "mode": "refuse",
            "reconnect_backoff": "full jitter, base 0.5 s, cap 30 s (FleetOptions defaults)",
        },
    }
    sub = Subscriber(broker.host, broker.port, TOPIC)
    try:
        out.update(outage_run(rt, broker, sub, args))
    finally:
        rt.stop()
        broker.stop()
    return out


def outage_run(rt: Any, broker: Any, sub: Subscriber, args: argparse.Namespace) -> dict[str, Any]:
    model = load_model_dict(bench_model(args.interval_ms))
    sim: Simulator = rt.call(lambda: Simulator(rt.loop))
    ids = [f"out-{i:05d}" for i in range(args.devices)]
    options = FleetOptions()  # the defaults: what the benchmark is about
    rss0 = rss_bytes()
    fleet: Fleet = rt.call(
        lambda: sim.create_fleet(
            FLEET,
            model,
            ids,
            seed=1,
            options=options,
            connection={**model.connection, "host": broker.host, "port": broker.port},
        )
    )
    n = args.devices
    loop_time = rt.loop.time
    t0 = time.perf_counter()
    rt.call(fleet.start, LaunchSettings(strategy=LaunchStrategy.IMMEDIATE))
    if wait_for(rt, lambda: fleet.count_states()["running"] == n, 180) is None:
        raise SystemExit(f"only {rt.call(fleet.count_states)['running']} of {n} devices connected within 180 s")
    connect_s = time.perf_counter() - t0
    sampler: Sampler = rt.call(lambda: Sampler(fleet))
    rt.call(sampler.start)
    phases: dict[str, dict[str, float]] = {}

    def phase(name: str, c0: float, w0: float) -> None:
        w = time.perf_counter() - w0
        phases[name] = {
            "seconds": round(w, 2),
            "cpu_pct": round(100 * (cpu_seconds() - c0) / w, 1) if w else 0.0,
            "rss_mb": round(rss_bytes() / 2**20, 1),
        }

    c0, w0 = cpu_seconds(), time.perf_counter()
    time.sleep(args.before)
    phase("steady", c0, w0)
    steady = rt.call(fleet.stats)
    phase_steady = {"sent": steady["messagesSent"], "acked": steady["messagesAcked"]}

    # -- down ------------------------------------------------------------------------------------------------
    c0, w0 = cpu_seconds(), time.perf_counter()
    t_down = rt.call(loop_time)
    rt.call(sim.network.take_down, FLEET, "refuse", None)
    cut = wait_for(rt, lambda: sum(d.state is DeviceState.RUNNING for d in fleet.devices) == 0, 10)
    time.sleep(max(0.0, args.outage - (time.perf_counter() - w0)))
    down_stats = rt.call(fleet.stats)
    phase("outage", c0, w0)

    # -- up -------------------------------------------------------------------------------------------------
    c0, w0 = cpu_seconds(), time.perf_counter()
    t_up = rt.call(loop_time)
    outage_record = rt.call(lambda: next(f for f in sim.network.describe(FLEET) if f["kind"] == "outage"))
    rt.call(sim.network.bring_up, FLEET)

    def recovered() -> bool:
        return all(d.state is DeviceState.RUNNING and d.reconnects >= 1 for d in fleet.devices)

    recovery_s = wait_for(rt, recovered, args.recovery_timeout)

    def flushed() -> bool:
        return all(not d.offline_queue for d in fleet.devices) and not any(
            d.conn is not None and d.conn.in_flight for d in fleet.devices
        )

    flush_wait = wait_for(rt, flushed, 60)
    flushed_s = (time.perf_counter() - w0) if flush_wait is not None else None
    phase("recovery", c0, w0)
    time.sleep(args.after)
    rt.call(sampler.stop)
    states = rt.call(fleet.count_states)
    rt.call(fleet.stop)  # drains what is in flight, then DISCONNECT
    stats = rt.call(fleet.stats)
    expected = rt.call(lambda: {d.id: d.seq for d in fleet.devices})
    reconnected = rt.call(lambda: sum(1 for d in fleet.devices if d.reconnects >= 1))
    rt.call(sim.shutdown)
    rss1 = rss_bytes()
    seen = sub.close()

    # -- figures ---------------------------------------------------------------------------------------------
    after_up = [t for t in sampler.reconnect_times if t >= t_up]
    during = [t for t in sampler.reconnect_times if t_down <= t < t_up]
    hist = per_second(after_up, t_up, max(after_up, default=t_up))
    delays = [t - t_up for t in after_up]
    attempt_hist = per_second([t for t, k in sampler.attempts if t_down <= t < t_up for _ in range(k)], t_down, t_up)
    lost = 0
    duplicates = 0
    received = 0
    worst: list[tuple[int, str]] = []
    for device, stop in expected.items():
        got = seen.get(device, Counter())
        distinct = sum(1 for s in got if 0 <= s < stop)
        received += distinct
        missing = stop - distinct
        lost += missing
        duplicates += sum(c - 1 for c in got.values() if c > 1)
        if missing:
            worst.append((missing, device))
    sent = stats["messagesSent"]
    return {
        "connect": {"devices": n, "seconds": round(connect_s, 2), "per_s": round(n / connect_s, 1)},
        "outage": {
            "devices_cut_off_within_s": round(cut, 2) if cut is not None else None,
            "disconnects": down_stats["disconnects"],
            "connections_refused": outage_record.get("connections_refused"),
            "connection_attempts_per_s": attempt_hist,
            "reconnects_during_outage": len(during),
            "queued_at_end_of_outage": down_stats["messagesQueued"],
        },
        "recovery": {
            "all_reconnected": recovery_s is not None,
            "reconnected_devices": reconnected,
            "running_before_stop": states["running"],
            # from bring-up to the last device's reconnect (sampled every SAMPLE_S on the loop)
            "time_to_full_recovery_s": _r(max(delays)) if recovery_s is not None and delays else None,
            "reconnect_delay_s": {
                "p10": _r(quantile(delays, 0.1)),
                "p50": _r(quantile(delays, 0.5)),
                "p90": _r(quantile(delays, 0.9)),
                "max": _r(max(delays, default=None)),
            },
            "peak_reconnects_per_s": max(hist) if after_up else 0,
            "backoff_window_s": options.reconnect_cap_s,
            "share_in_peak_second_pct": round(100 * max(hist) / len(after_up), 1) if after_up else None,
            "reconnects_per_s_histogram": hist,
            "offline_queues_flushed_after_s": round(flushed_s, 2) if flushed_s is not None else None,
        },
        "messages": {
            "sent": sent,
            "acked": stats["messagesAcked"],
            "unacked": sent - stats["messagesAcked"],
            "received_distinct": received,
            "duplicates": duplicates,
            "lost": lost,
            "lost_pct": round(100 * lost / sent, 3) if sent else None,
            "devices_with_loss": len(worst),
            "worst_devices": [f"{d} ({k})" for k, d in sorted(worst, reverse=True)[:5]],
            "dropped_offline_queue_full": stats["messagesDropped"],
            "failed": stats["messagesFailed"],
            "sent_before_outage": phase_steady["sent"],
        },
        "resources": {
            **{f"{k}_{m}": v for k, p in phases.items() for m, v in p.items() if m != "seconds"},
            "rss_mb_end": round(rss1 / 2**20, 1),
            "rss_growth_mb": round((rss1 - rss0) / 2**20, 1),
        },
        "lateness_ms": stats["sendLatenessMs"],
    }


def _r(x: float | None) -> float | None:
    return round(x, 2) if x is not None else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--outage", type=float, default=60.0, help="seconds the target stays down")
    ap.add_argument("--interval-ms", type=int, default=1000, help="ms between a device's readings (QoS 1)")
    ap.add_argument("--before", type=float, default=10.0, help="seconds of steady sending before the outage")
    ap.add_argument("--after", type=float, default=5.0, help="seconds of steady sending after the recovery")
    ap.add_argument("--recovery-timeout", type=float, default=180.0, help="give up waiting for the reconnects")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 200 devices, 10 s outage")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    if args.quick:
        args.devices, args.outage, args.before, args.after, args.recovery_timeout = 200, 10.0, 3.0, 2.0, 60.0
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = run(args)
    print(json.dumps(out, indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    ok = out["recovery"]["all_reconnected"] and out["messages"]["lost"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
