#!/usr/bin/env python3
"""100,000 MQTT devices on one box: one sharded fleet against several Mosquittos, counted from outside.

One command (issue 14, "One box, 100,000 devices"):

1. starts ``--brokers`` Mosquitto processes (INFRA.md configuration; each limited to 20,000 open files) and one
   independent ``mosquitto_sub`` per broker (QoS 0, one line per message);
2. creates ONE fleet of ``--devices`` MQTT devices sharded over ``--shards`` Ray actors
   (:func:`iotix.cluster.sharded.build_sharded_fleet`): device i connects to broker i mod brokers
   (``host=h:p1,h:p2,...``) from source address i mod m (``--sources``, default 127.0.0.2-127.0.0.9), sends one
   message every ``--interval`` seconds with keep-alive ``--keepalive``;
3. starts it (one launch timeline across shards; ``--launch-rate`` for a linear launch), measures the connect
   rate, then holds it for ``--duration`` seconds: CPU and RSS of every shard process and every Mosquitto (from
   /proc/<pid>), system memory and kernel TCP memory, devices still connected;
4. stops it and compares what every device handed over (the fleet's expected sequences) with what the
   subscribers counted per device: lost, extra;
5. with ``--raw-baseline`` (default on) runs the raw reference of PERFORMANCE.md in the same invocation: as many
   processes as shards holding the same number of bare asyncio MQTT connections (CONNECT, CONNACK, PINGREQ, no
   telemetry) against fresh brokers with the same targets and source addresses, and prints IoTix's figures as
   ratios of it (and of the figures in PERFORMANCE.md).

The full run is long and takes the whole machine (2 cores): run it alone. A trial first::

    python tools/bench/scale_100k.py --devices 12000 --shards 3 --brokers 3 --duration 60
    python tools/bench/scale_100k.py --json results/scale_100k.json      # 100,000 x 6 shards x 6 brokers x 300 s

Needs Ray (``pip install 'robotframework-iotix[cluster]'``), Mosquitto and mosquitto_sub.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "libraries"))

from iotix.fleet.setup import ConnectionOverrides, FleetSetup, parse_source_addresses  # noqa: E402
from iotix.fleet.simulator import Simulator  # noqa: E402
from iotix.fleet.timeline import LaunchSettings, LaunchStrategy  # noqa: E402
from iotix.model.loader import load_model_dict  # noqa: E402
from iotix.runtime import get_runtime  # noqa: E402
from iotix.services import MqttBroker, start_local_broker  # noqa: E402
from iotix.transport.paho_driver import bind_source  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MosquittoSub, cpu_seconds, mqtt_model  # noqa: E402

Json = dict[str, Any]
#: Open files of each Mosquitto (the machine kind's per-process limit; see PERFORMANCE.md).
BROKER_FILES = 20_000
#: PERFORMANCE.md, "raw idle connections, 6 processes x 17,000 against 6 Mosquittos" (2026-11-22), and the
#: per-connection costs of "raw idle MQTT connections, one process".
PERFORMANCE_MD = {
    "raw_connects_per_s": 1300,
    "raw_client_kb_per_conn": 1.9,
    "raw_broker_kb_per_conn": 0.7,
    "raw_kernel_kb_per_conn": 10.0,
    "raw_system_mb_per_100k": 1250 / 1.02,
}
TOPIC_PREFIX = "scale"


# -- /proc ---------------------------------------------------------------------------------------------


def rss_kb(pid: int | str = "self") -> int:
    """Resident set size of a process in KB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def cpu_s(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def meminfo_kb() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            name, value = line.split(":", 1)
            out[name] = int(value.split()[0])
    return out


def slab_mb() -> float:
    """Kernel slab memory (sockets, TCP and inode structures live there), MB: less noisy than system memory on a
    machine where other work runs."""
    return meminfo_kb()["Slab"] / 1024


def system_used_mb() -> float:
    """Memory in use by the whole machine (MemTotal - MemAvailable), MB."""
    info = meminfo_kb()
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


def tcp_sockstat() -> Json:
    """``TCP: inuse ... mem <pages>`` from /proc/net/sockstat: sockets in use and the kernel's TCP buffer MB."""
    with open("/proc/net/sockstat") as fh:
        for line in fh:
            if line.startswith("TCP:"):
                parts = line.split()
                fields = dict(zip(parts[1::2], (int(v) for v in parts[2::2]), strict=False))
                return {
                    "inuse": fields.get("inuse", 0),
                    "time_wait": fields.get("tw", 0),
                    "mem_mb": round(fields.get("mem", 0) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1),
                }
    return {}


class CpuMeter:
    """CPU % (of one core) and peak RSS of a set of processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.cpu0: dict[str, float] = {}
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.cpu0 = {name: cpu_s(pid) for name, pid in self.pids.items()}
        self.sample()

    def sample(self) -> None:
        for name, pid in self.pids.items():
            self.peak[name] = max(self.peak[name], rss_kb(pid))

    def stop(self) -> dict[str, Json]:
        self.sample()
        wall = time.perf_counter() - self.t0
        return {
            name: {
                "pid": pid,
                "cpu_pct": round(100 * (cpu_s(pid) - self.cpu0[name]) / wall, 1) if wall else None,
                "rss_mb": round(rss_kb(pid) / 1024, 1),
                "peak_rss_mb": round(self.peak[name] / 1024, 1),
            }
            for name, pid in self.pids.items()
        }


# -- brokers and subscribers ------------------------------------------------------------------------------


def start_brokers(count: int) -> list[MqttBroker]:
    """``count`` Mosquittos, each limited to :data:`BROKER_FILES` open files (soft and hard)."""
    brokers = []
    try:
        for _ in range(count):
            broker = start_local_broker("mosquitto")
            brokers.append(broker)
            if broker.pid is not None and broker_limit(broker.pid) != BROKER_FILES:
                try:
                    resource.prlimit(broker.pid, resource.RLIMIT_NOFILE, (BROKER_FILES, BROKER_FILES))
                except (OSError, ValueError) as err:  # Mosquitto runs as user mosquitto: may be refused
                    print(f"note: broker {broker.port}: open-file limit not set to {BROKER_FILES}: {err}")
    except BaseException:
        stop_all(brokers)
        raise
    return brokers


def stop_all(brokers: list[MqttBroker]) -> None:
    for broker in brokers:
        try:
            broker.stop()
        except Exception as err:  # stop the others too
            print(f"note: stopping broker {broker.port}: {err}")


def broker_limit(pid: int | None) -> int | None:
    """The soft open-file limit of a process, from /proc/<pid>/limits."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/limits") as fh:
            for line in fh:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError):
        return None
    return None


class Subscriber(MosquittoSub):
    """Counts, per device, the messages one broker delivered on ``scale/#`` (QoS 0)."""

    def __init__(self, broker: MqttBroker) -> None:
        super().__init__(broker.host, broker.port, [f"{TOPIC_PREFIX}/#"], qos=0, fmt="%t")

    def per_device(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        with self.path.open("rb") as fh:
            for line in fh:
                parts = line.split(b"/")
                if len(parts) >= 2:
                    counts[parts[1].decode()] += 1
        return counts


# -- the IoTix run ---------------------------------------------------------------------------------------


def idle_shard_rss_kb() -> int:
    """RSS of a shard process without a fleet (a Ray worker with IoTix's runtime and simulator), measured on a
    probe actor of the same class that is then killed; 0 when that fails (the figure is then left out)."""
    try:
        from iotix.cluster.ray_support import ray_module, remote
        from iotix.cluster.shard import ShardWorker

        ray = ray_module()
        probe = remote(ShardWorker, num_cpus=0, max_concurrency=16).remote()
        try:
            pid = ray.get(probe.pid.remote(), timeout=120)
            time.sleep(1.0)
            return rss_kb(pid)
        finally:
            ray.kill(probe)
    except Exception as err:  # a figure less, not a failed run
        print(f"note: no idle shard measured: {err}")
        return 0


def run_iotix(args: argparse.Namespace, sources: str) -> Json:
    from iotix.cluster.sharded import START_MARGIN_S, build_sharded_fleet  # needs Ray: imported only here

    brokers = start_brokers(args.brokers)
    subs: list[Subscriber] = []
    rt = get_runtime()
    out: Json = {"brokers": [{"port": b.port, "pid": b.pid, "open_files": broker_limit(b.pid)} for b in brokers]}
    try:
        subs = [Subscriber(b) for b in brokers]
        interval_ms = int(args.interval * 1000)
        data = mqtt_model("scale-env", TOPIC_PREFIX, qos=0, interval_ms=interval_ms)
        data["connection"]["keepAlive"] = args.keepalive
        model = load_model_dict(data)
        host = ",".join(f"{b.host}:{b.port}" for b in brokers)
        delivery = {"log_size": args.transmission_log} if args.transmission_log is not None else {}
        setup = FleetSetup(
            name="scale",
            count=args.devices,
            id_pattern="scale-{index:06d}",
            seed=1,
            connection=ConnectionOverrides(host=host, source_addresses=sources),
            delivery=delivery,
        )
        mem0 = system_used_mb()
        slab0 = slab_mb()
        sock0 = tcp_sockstat()
        sim: Simulator = rt.call(lambda: Simulator(rt.loop))
        t_build = time.perf_counter()
        fleet = rt.call(build_sharded_fleet, sim, model, setup, args.shards, address=args.ray_address, timeout=600)
        build_s = time.perf_counter() - t_build
        mem_built = system_used_mb()
        shards = rt.call(fleet.shards_info)
        pids = {f"shard-{s['index']}": int(s["pid"]) for s in shards}
        base_kb = idle_shard_rss_kb()
        rss_built = {name: rss_kb(pid) for name, pid in pids.items()}
        broker_rss0 = {b.port: rss_kb(b.pid) for b in brokers if b.pid}
        print(f"built {args.devices} devices in {args.shards} shards in {build_s:.1f} s: {shards}", flush=True)

        # -- connect --------------------------------------------------------------------------------------
        if args.launch_rate:
            launch = LaunchSettings(strategy=LaunchStrategy.LINEAR, delay_ms=1000.0 / args.launch_rate)
        else:
            launch = LaunchSettings(strategy=LaunchStrategy.IMMEDIATE)
        connect_meter = CpuMeter({**pids, **{f"broker-{b.port}": b.pid for b in brokers if b.pid}})
        connect_meter.start()
        t0 = time.perf_counter()
        rt.call(fleet.start, launch, timeout=120)
        curve: list[tuple[float, int]] = []
        running = 0
        while True:
            time.sleep(0.2)
            rt.call(fleet.poll, timeout=60)  # fresh counts from every shard (its background poll lags)
            running = rt.call(fleet.launch_progress)[0]
            elapsed = time.perf_counter() - t0
            curve.append((round(elapsed, 2), running))
            connect_meter.sample()
            if len(curve) % 25 == 0:
                print(f"  {elapsed:6.1f} s: {running} running", flush=True)
            if running >= args.devices or elapsed > args.connect_timeout:
                break
        connect_s = curve[-1][0] - START_MARGIN_S  # the devices start that long after the keyword
        connect_cpu = connect_meter.stop()
        stats = rt.call(fleet.stats, timeout=60)
        steps = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(curve, curve[25:], strict=False) if b[0] > a[0]]
        first = next((t for t, n in curve if n > 0), curve[-1][0])
        out["connect"] = {
            "launch": launch.strategy.value if not args.launch_rate else f"linear {args.launch_rate}/s",
            "running": running,
            "all_connected": running == args.devices,
            "seconds": round(connect_s, 2),  # from the launch's start time until all ran (~0.2 s sampling)
            "connects_per_s": round(running / connect_s, 1) if connect_s else None,
            "peak_5s_connects_per_s": round(max(steps), 1) if steps else None,
            "first_to_all_s": round(curve[-1][0] - first, 2),  # from the first device seen running to the last
            "curve": curve[:: max(1, len(curve) // 40)] + curve[-1:],  # (seconds since the keyword, running)
            "connect_failures": stats["connectFailures"],
            "cpu": connect_cpu,
        }
        print(json.dumps({"connect": out["connect"]}, indent=2), flush=True)

        # -- hold ------------------------------------------------------------------------------------------
        time.sleep(args.settle)
        before = rt.call(fleet.stats, timeout=60)
        meter = CpuMeter({**pids, **{f"broker-{b.port}": b.pid for b in brokers if b.pid}})
        meter.start()
        t_hold = time.perf_counter()
        lowest_running = before["runningDeviceCount"]
        next_check = t_hold + args.check_every
        while time.perf_counter() - t_hold < args.duration:
            time.sleep(min(1.0, max(0.0, args.duration - (time.perf_counter() - t_hold))))
            meter.sample()
            if time.perf_counter() >= next_check:
                lowest_running = min(lowest_running, rt.call(fleet.stats, timeout=60)["runningDeviceCount"])
                next_check += args.check_every
        hold_wall = time.perf_counter() - t_hold
        procs = meter.stop()
        after = rt.call(fleet.stats, timeout=60)
        lowest_running = min(lowest_running, after["runningDeviceCount"])
        mem1 = system_used_mb()
        slab1 = slab_mb()
        sock1 = tcp_sockstat()
        shards_after = rt.call(fleet.shards_info)
        per_shard_devices = {f"shard-{s['index']}": int(s["count"]) for s in shards}
        shard_rows = []
        for name, pid in pids.items():
            row = {**procs[name], "devices": per_shard_devices[name]}
            row["rss_per_device_kb"] = round(rss_kb(pid) / row["devices"], 2)
            row["rss_connected_per_device_kb"] = round((rss_kb(pid) - rss_built[name]) / row["devices"], 2)
            row["alive"] = next((s["alive"] for s in shards_after if f"shard-{s['index']}" == name), None)
            shard_rows.append({"shard": name, **row})
        broker_rows = []
        for position, b in enumerate(brokers):
            row = procs[f"broker-{b.port}"]
            conns = len(range(position, args.devices, len(brokers)))
            row["devices"] = conns
            row["rss_per_connection_kb"] = round((rss_kb(b.pid) - broker_rss0[b.port]) / conns, 2) if conns else None
            broker_rows.append({"broker": b.port, **row})
        sent = after["messagesSent"] - before["messagesSent"]
        out["hold"] = {
            "seconds": round(hold_wall, 1),
            "running_at_start": before["runningDeviceCount"],
            "lowest_running": lowest_running,
            "running_at_end": after["runningDeviceCount"],
            "disconnects": after["disconnects"] - before["disconnects"],
            "reconnects": after["reconnects"] - before["reconnects"],
            "sent": sent,
            "rate_msg_s": round(sent / hold_wall, 1),
            "shards": shard_rows,
            "shards_cpu_pct_total": round(sum(r["cpu_pct"] or 0 for r in shard_rows), 1),
            "shards_rss_mb_total": round(sum(r["rss_mb"] for r in shard_rows), 1),
            "rss_per_device_kb": round(sum(r["rss_mb"] for r in shard_rows) * 1024 / args.devices, 2),
            "idle_shard_rss_mb": round(base_kb / 1024, 1) if base_kb else None,
            # what a device costs in its shard: (shard RSS - an idle shard's) / devices
            "rss_per_device_kb_net": (
                round((sum(rss_kb(pid) for pid in pids.values()) - base_kb * len(pids)) / args.devices, 2)
                if base_kb
                else None
            ),
            "brokers": broker_rows,
            "brokers_cpu_pct_total": round(sum(r["cpu_pct"] or 0 for r in broker_rows), 1),
            "brokers_rss_mb_total": round(sum(r["rss_mb"] for r in broker_rows), 1),
            "system_memory_mb": round(mem1 - mem0, 1),  # since before Ray and the shards started
            "system_memory_mb_ray_and_devices_built": round(mem_built - mem0, 1),
            "system_memory_mb_connections": round(mem1 - mem_built, 1),  # since the fleet was built, unconnected
            "system_memory_kb_per_device": round((mem1 - mem_built) * 1024 / args.devices, 2),
            "kernel_slab_mb": round(slab1 - slab0, 1),
            "kernel_slab_kb_per_device": round((slab1 - slab0) * 1024 / args.devices, 2),
            "tcp_before": sock0,
            "tcp_after": sock1,
        }
        print(json.dumps({"hold": out["hold"]}, indent=2), flush=True)

        # -- stop and count --------------------------------------------------------------------------------
        rt.call(fleet.stop, timeout=300)
        final = rt.call(fleet.stats, timeout=60)
        expected = rt.call(fleet.expected_sequences, timeout=120)
        received: Counter[str] = Counter()
        per_broker = []
        for sub in subs:
            sub.stop()
            counts = sub.per_device()
            per_broker.append(sum(counts.values()))
            received.update(counts)
        want = {device: hi - lo for device, (lo, hi) in expected.items()}
        lost = sum(max(0, n - received.get(device, 0)) for device, n in want.items())
        extra = sum(max(0, n - want.get(device, 0)) for device, n in received.items())
        worst = max(want, key=lambda d: want[d] - received.get(d, 0)) if want else None
        out["delivery"] = {
            "sent": final["messagesSent"],
            "expected_by_sequences": sum(want.values()),
            "received_by_mosquitto_sub": sum(received.values()),
            "received_per_broker": per_broker,
            "lost": lost,
            "extra": extra,
            "devices_heard": len(received),
            "worst_device": worst if lost else None,
        }
        print(json.dumps({"delivery": out["delivery"]}, indent=2), flush=True)
        out["build_s"] = round(build_s, 1)
        rt.call(fleet.delete, timeout=300)
        rt.call(sim.shutdown, timeout=300)
    finally:
        for sub in subs:
            if sub.proc.poll() is None:
                sub.stop()
            sub.remove()
        stop_all(brokers)
    return out


# -- the raw baseline (PERFORMANCE.md's idle connections), one child process per shard ------------------


class _RawConnection(asyncio.Protocol):
    __slots__ = ("acked", "lost", "transport")

    def __init__(self, acked: asyncio.Future[None]) -> None:
        self.acked = acked
        self.lost = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.acked.done() and data[:1] == b"\x20":
            self.acked.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.acked.done():
            self.acked.set_exception(ConnectionError("closed before CONNACK"))


def _connect_packet(client_id: str, keepalive: int) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02" + keepalive.to_bytes(2, "big") + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + bytes((len(body),)) + body


async def _raw_hold(args: argparse.Namespace) -> Json:
    loop = asyncio.get_running_loop()
    targets = [(host, int(port)) for host, port in (t.rsplit(":", 1) for t in args.raw_targets.split(","))]
    sources = parse_source_addresses(args.raw_sources) if args.raw_sources else ()
    rss0 = rss_kb()
    gate = asyncio.Semaphore(256)  # attempts in flight, as a fleet's max_connecting
    conns: list[_RawConnection] = []
    failures = Counter[str]()

    async def one(index: int) -> None:
        host, port = targets[index % len(targets)]
        async with gate:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                if sources:
                    bind_source(sock, sources[index % len(sources)])
                await loop.sock_connect(sock, (host, port))
                acked = loop.create_future()
                _, proto = await loop.create_connection(lambda: _RawConnection(acked), sock=sock)
                proto.transport.write(_connect_packet(f"raw-{index:06d}", args.keepalive))  # type: ignore[union-attr]
                await asyncio.wait_for(acked, 30)
                conns.append(proto)
            except (OSError, ConnectionError, TimeoutError) as err:
                sock.close()
                failures[type(err).__name__ + ": " + str(err)[:60]] += 1

    t0 = time.perf_counter()
    c0 = cpu_seconds()
    await asyncio.gather(*(one(i) for i in range(args.raw_first, args.raw_first + args.raw_count)))
    connect_s = time.perf_counter() - t0
    connect_cpu = cpu_seconds() - c0
    rss1 = rss_kb()
    c1, t1 = cpu_seconds(), time.perf_counter()
    end = t1 + args.raw_hold
    while time.perf_counter() < end:
        await asyncio.sleep(min(args.keepalive / 2, max(0.0, end - time.perf_counter())))
        for c in conns:
            if not c.lost and c.transport is not None:
                c.transport.write(b"\xc0\x00")  # PINGREQ
    hold_cpu = cpu_seconds() - c1
    alive = sum(1 for c in conns if not c.lost)
    for c in conns:
        if c.transport is not None:
            c.transport.abort()
    return {
        "count": args.raw_count,
        "connected": len(conns),
        "alive_after_hold": alive,
        "connect_s": round(connect_s, 2),
        "connect_cpu_s": round(connect_cpu, 2),
        "hold_cpu_pct": round(100 * hold_cpu / max(1e-9, time.perf_counter() - t1), 2),
        "rss_kb_before": rss0,
        "rss_kb_after": rss1,
        "failures": dict(failures.most_common(5)),
        "t_start": t0,
    }


def raw_child(args: argparse.Namespace) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = asyncio.run(_raw_hold(args))
    Path(args.json).write_text(json.dumps(result))


def run_raw(args: argparse.Namespace, sources: str) -> Json:
    brokers = start_brokers(args.brokers)
    children: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        mem0 = system_used_mb()
        slab0 = slab_mb()
        broker_rss0 = {b.port: rss_kb(b.pid) for b in brokers if b.pid}
        targets = ",".join(f"{b.host}:{b.port}" for b in brokers)
        per = -(-args.devices // args.shards)
        t0 = time.perf_counter()
        for k in range(args.shards):
            first, count = k * per, min(per, args.devices - k * per)
            if count <= 0:
                break
            out = Path(f"/tmp/iotix-scale-raw-{os.getpid()}-{k}.json")
            command = [sys.executable, __file__, "--raw-child", "--json", str(out), "--raw-targets", targets]
            command += ["--raw-first", str(first), "--raw-count", str(count), "--raw-hold", str(args.raw_hold)]
            command += ["--keepalive", str(args.keepalive)]
            if sources:
                command += ["--raw-sources", sources]
            children.append((subprocess.Popen(command), out))
        meter = CpuMeter({f"raw-{i}": p.pid for i, (p, _) in enumerate(children)})
        meter.start()
        peak_mem = peak_slab = 0.0
        broker_peak = dict(broker_rss0)
        while any(p.poll() is None for p, _ in children):
            time.sleep(1.0)
            meter.sample()
            peak_mem = max(peak_mem, system_used_mb() - mem0)
            peak_slab = max(peak_slab, slab_mb() - slab0)
            for b in brokers:
                if b.pid:
                    broker_peak[b.port] = max(broker_peak[b.port], rss_kb(b.pid))
        wall = time.perf_counter() - t0
        results = [json.loads(path.read_text()) for p, path in children if p.returncode == 0 and path.exists()]
        connected = sum(r["connected"] for r in results)
        connect_end = max((r["t_start"] + r["connect_s"] for r in results), default=t0)
        connect_start = min((r["t_start"] for r in results), default=t0)
        span = connect_end - connect_start
        client_kb = sum(r["rss_kb_after"] - r["rss_kb_before"] for r in results)
        broker_kb = sum(broker_peak[p] - broker_rss0[p] for p in broker_rss0)
        return {
            "processes": len(children),
            "connected": connected,
            "alive_after_hold": sum(r["alive_after_hold"] for r in results),
            "connect_seconds": round(span, 1),
            "connects_per_s": round(connected / span, 1) if span else None,
            "client_kb_per_connection": round(client_kb / connected, 2) if connected else None,
            "broker_kb_per_connection": round(broker_kb / connected, 2) if connected else None,
            "system_memory_mb_peak": round(peak_mem, 1),
            "system_kb_per_connection": round(peak_mem * 1024 / connected, 2) if connected else None,
            "kernel_slab_mb_peak": round(peak_slab, 1),
            "kernel_slab_kb_per_connection": round(peak_slab * 1024 / connected, 2) if connected else None,
            "hold_cpu_pct_per_process": [r["hold_cpu_pct"] for r in results],
            "failures": [r["failures"] for r in results if r["failures"]],
            "wall_s": round(wall, 1),
        }
    finally:
        for p, path in children:
            if p.poll() is None:
                p.terminate()
                p.wait(30)
            path.unlink(missing_ok=True)
        stop_all(brokers)


# -- comparison ------------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def compare(iotix: Json, raw: Json | None) -> Json:
    """IoTix's connect rate and memory as ratios of the raw baseline of this run and of PERFORMANCE.md."""
    connect = iotix.get("connect", {})
    hold = iotix.get("hold", {})
    out: Json = {
        "connects_per_s_vs_performance_md": ratio(connect.get("connects_per_s"), PERFORMANCE_MD["raw_connects_per_s"]),
        "client_kb_per_device_vs_performance_md_raw": ratio(
            hold.get("rss_per_device_kb_net"), PERFORMANCE_MD["raw_client_kb_per_conn"]
        ),
        "system_memory_vs_performance_md_raw": ratio(
            hold.get("system_memory_kb_per_device"),
            PERFORMANCE_MD["raw_system_mb_per_100k"] * 1024 / 100_000,
        ),
        "kernel_slab_kb_per_device_vs_performance_md_raw": ratio(
            hold.get("kernel_slab_kb_per_device"), PERFORMANCE_MD["raw_kernel_kb_per_conn"]
        ),
    }
    if raw:
        out["connects_per_s_vs_raw_this_run"] = ratio(connect.get("connects_per_s"), raw.get("connects_per_s"))
        out["client_kb_per_device_vs_raw_this_run"] = ratio(
            hold.get("rss_per_device_kb_net"), raw.get("client_kb_per_connection")
        )
        out["system_memory_vs_raw_this_run"] = ratio(
            hold.get("system_memory_kb_per_device"), raw.get("system_kb_per_connection")
        )
        out["kernel_slab_vs_raw_this_run"] = ratio(
            hold.get("kernel_slab_kb_per_device"), raw.get("kernel_slab_kb_per_connection")
        )
    return out


def summary(args: argparse.Namespace, out: Json) -> str:
    """The run in a few lines, for the console and a closing note."""
    iotix, raw = out["iotix"], out.get("raw_baseline") or {}
    c, h, d = iotix["connect"], iotix["hold"], iotix["delivery"]
    shard_cpu = [r["cpu_pct"] for r in h["shards"]]
    shard_rss = [r["rss_mb"] for r in h["shards"]]
    lines = [
        f"{args.devices:,} devices x 1 msg / {args.interval:g} s, keep-alive {args.keepalive} s, {args.shards} shards, "
        f"{args.brokers} Mosquittos, held {h['seconds']:g} s",
        f"connected: {c['running']:,} of {args.devices:,} in {c['seconds']:g} s = {c['connects_per_s']:,} /s "
        f"(raw baseline {raw.get('connects_per_s', '-')} /s); lowest during the hold {h['lowest_running']:,}; "
        f"disconnects {h['disconnects']}",
        f"messages: sent {d['sent']:,}, received by mosquitto_sub {d['received_by_mosquitto_sub']:,}, "
        f"lost {d['lost']}, extra {d['extra']}",
        f"shards: CPU {min(shard_cpu)}-{max(shard_cpu)} % of a core each, RSS {min(shard_rss)}-{max(shard_rss)} MB "
        f"each (idle shard {h['idle_shard_rss_mb']} MB), {h['rss_per_device_kb_net']} KB per device "
        f"(raw baseline {raw.get('client_kb_per_connection', '-')} KB per connection)",
        f"Mosquittos: CPU {h['brokers_cpu_pct_total']} % in all, RSS {h['brokers_rss_mb_total']} MB in all, "
        f"{min(r['rss_per_connection_kb'] or 0 for r in h['brokers'])}-"
        f"{max(r['rss_per_connection_kb'] or 0 for r in h['brokers'])} KB per connection",
    ]
    return "\n".join(lines)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=6, help="Ray actors (processes) the fleet is split over")
    ap.add_argument("--brokers", type=int, default=6, help="Mosquitto processes; device i uses broker i mod n")
    ap.add_argument("--duration", type=float, default=300.0, help="seconds held once all devices run")
    ap.add_argument("--interval", type=float, default=60.0, help="seconds between a device's messages")
    ap.add_argument("--keepalive", type=int, default=60, help="MQTT keep-alive, seconds")
    ap.add_argument("--sources", default="127.0.0.2-127.0.0.9", help="source addresses ('' for none)")
    ap.add_argument("--launch-rate", type=float, default=0.0, help="devices per second (0: immediate launch)")
    ap.add_argument("--connect-timeout", type=float, default=900.0, help="give up waiting for all to run after")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds between all running and the hold")
    ap.add_argument("--check-every", type=float, default=30.0, help="seconds between running-count checks")
    ap.add_argument("--transmission-log", type=int, default=None, help="entries per device (default: IoTix's)")
    ap.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: IOTIX_RAY_ADDRESS/local)")
    ap.add_argument("--no-raw-baseline", dest="raw_baseline", action="store_false", help="skip the raw baseline")
    ap.add_argument("--raw-hold", type=float, default=45.0, help="seconds the raw baseline holds its connections")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--raw-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--raw-targets", help=argparse.SUPPRESS)
    ap.add_argument("--raw-sources", help=argparse.SUPPRESS)
    ap.add_argument("--raw-first", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--raw-count", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.raw_child:
        raw_child(args)
        return
    if args.devices < 1 or args.shards < 1 or args.brokers < 1:
        ap.error("--devices, --shards and --brokers must be at least 1")
    per_broker = -(-args.devices // args.brokers)
    if per_broker > BROKER_FILES - 100:
        ap.error(f"{per_broker} devices per broker do not fit a broker's {BROKER_FILES} open files: more --brokers")
    sources = args.sources.strip()
    if sources:
        parse_source_addresses(sources)  # a clear error before anything starts
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the brokers and the children
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up like Ctrl-C: brokers, subscribers, Ray
    out: Json = {
        "command": " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "nofile": hard},
        "load_before": os.getloadavg(),
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("raw_") or k == "raw_hold"},
    }
    out["settings"]["json"] = str(args.json) if args.json else None
    try:
        out["iotix"] = run_iotix(args, sources)
    finally:
        get_runtime().stop()
        if "iotix.cluster.ray_support" in sys.modules:
            sys.modules["iotix.cluster.ray_support"].shutdown_ray()  # its processes and memory gone before the raw run
    if args.raw_baseline:
        time.sleep(5)
        out["raw_baseline"] = run_raw(args, sources)
        print(json.dumps({"raw_baseline": out["raw_baseline"]}, indent=2), flush=True)
    out["compare"] = compare(out["iotix"], out.get("raw_baseline"))
    print(json.dumps({"compare": out["compare"]}, indent=2), flush=True)
    print(summary(args, out), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
