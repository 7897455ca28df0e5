#!/usr/bin/env python3
"""MQTT fleet benchmark: IoTix against a raw asyncio publisher baseline, in one invocation.

Starts a local Mosquitto (INFRA.md settings), an independent ``mosquitto_sub`` that counts what the broker
delivered, and then, in this one process:

1. ``steady``: N devices x 1 message/s (QoS 0) for D seconds: devices connected and the time to connect
   them, messages sent, messages received by the independent subscriber, CPU % (of one core) and RSS of
   this process, RSS per device, p50/p99 send lateness against the schedule; and the same load from the
   raw baseline (pre-encoded packets, no generation, no bookkeeping) for the CPU ratio.
2. ``maxrate``: M devices sending as fast as the schedule allows (interval 1 ms, set on the devices since a
   model allows no less than 10 ms; the scheduler fires every 5 ms, so a device sends ~5 messages per tick
   in one system call): the highest sustained QoS 0 rate IoTix reaches, against the raw publisher's rate in
   the same run.

Usage:
    python tools/bench/mqtt_fleet.py                         # both, the issue's sizes (10,000 and 1,000)
    python tools/bench/mqtt_fleet.py --devices 2000 --duration 20 --skip-maxrate
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "libraries"))

from iotix.fleet.simulator import Simulator  # noqa: E402
from iotix.model.loader import load_model_dict  # noqa: E402
from iotix.runtime import get_runtime  # noqa: E402
from iotix.services import start_local_broker  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MosquittoSub, cpu_seconds, launch_all, mqtt_model, rss_bytes  # noqa: E402

#: The shortest ``intervalMs`` a model may give; the max-rate run goes below it by setting device intervals.
MIN_MODEL_INTERVAL_MS = 10


def bench_model(interval_ms: int) -> dict:
    return mqtt_model("bench-env", "bench", qos=0, interval_ms=interval_ms)


class Subscriber(MosquittoSub):
    """Counts the messages the broker delivered on ``topic`` (QoS 0)."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        super().__init__(host, port, [topic], qos=0, fmt="%t")

    def count(self) -> int:
        with self.path.open("rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))

    def close(self) -> int:
        self.stop()
        n = self.count()
        self.remove()
        return n


# -- IoTix run ----------------------------------------------------------------------------------------


def run_iotix(host: str, port: int, devices: int, interval_ms: float, duration: float, prefix: str) -> dict:
    rt = get_runtime()
    model = load_model_dict(bench_model(max(round(interval_ms), MIN_MODEL_INTERVAL_MS)))
    sim: Simulator = rt.call(lambda: Simulator(rt.loop))
    ids = [f"{prefix}-{i:05d}" for i in range(devices)]
    rss0 = rss_bytes()
    fleet = rt.call(
        lambda: sim.create_fleet(
            prefix, model, ids, seed=1, connection={**model.connection, "host": host, "port": port}
        )
    )
    if interval_ms < MIN_MODEL_INTERVAL_MS:  # below what a model may say: set each device's interval directly
        rt.call(lambda: [setattr(d, "interval_override_s", interval_ms / 1000.0) for d in fleet.devices])
    connect_s, running = launch_all(rt, fleet)
    time.sleep(min(2.0, duration / 5))  # settle
    rt.call(fleet.lateness.__init__)  # measure lateness over the steady window only
    sent0 = rt.call(lambda: sum(d.sent for d in fleet.devices))
    c0, w0 = cpu_seconds(), time.perf_counter()
    time.sleep(duration)
    c1, w1 = cpu_seconds(), time.perf_counter()
    stats = rt.call(fleet.stats)
    sent = stats["messagesSent"] - sent0
    rss1 = rss_bytes()
    rt.call(sim.shutdown)
    stats["messagesSent"] = rt.call(fleet.stats)["messagesSent"]  # all sent until the fleet stopped
    wall = w1 - w0
    return {
        "devices": devices,
        "connected": running,
        "connect_s": round(connect_s, 2),
        "connects_per_s": round(running / connect_s, 1) if connect_s else None,
        "sent_window": sent,
        "sent_total": stats["messagesSent"],
        "failed": stats["messagesFailed"],
        "dropped": stats["messagesDropped"],
        "rate": round(sent / wall, 1),
        "cpu_pct": round(100 * (c1 - c0) / wall, 1),
        "rss_mb": round(rss1 / 2**20, 1),
        "rss_per_device_kb": round((rss1 - rss0) / devices / 1024, 2) if devices else None,
        "lateness_ms": stats["sendLatenessMs"],
    }


# -- raw baseline ---------------------------------------------------------------------------------------


def _connect_packet(client_id: str, keepalive: int = 60) -> bytes:
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02" + keepalive.to_bytes(2, "big")
    payload = len(cid).to_bytes(2, "big") + cid
    return b"\x10" + _remaining(len(var) + len(payload)) + var + payload


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _publish_packet(topic: str, payload: bytes) -> bytes:
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + payload
    return b"\x30" + _remaining(len(body)) + body


async def _raw(host: str, port: int, devices: int, interval: float, duration: float, prefix: str) -> dict:
    writers = []
    packets = []
    sample = (
        b'{"deviceId":"%s","seq":0,"ts":1732390000123,"temperature":21.37,"humidity":55.1,'
        b'"pressure":1013.4,"battery":99.98}'
    )
    for i in range(devices):
        did = f"{prefix}-{i:05d}"
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(_connect_packet(did))
        await reader.readexactly(4)
        writers.append((reader, writer))
        packets.append(_publish_packet(f"bench/{did}/telemetry", sample % did.encode()))
    loop = asyncio.get_running_loop()
    sent = 0
    c0, w0 = cpu_seconds(), time.perf_counter()
    end = loop.time() + duration
    if interval <= 0:  # as fast as possible, yielding to the loop between rounds
        while loop.time() < end:
            for (_, w), p in zip(writers, packets, strict=True):
                w.write(p)
            sent += devices
            if any(w.transport.get_write_buffer_size() > 1 << 16 for _, w in writers[:10]):
                await asyncio.sleep(0.001)
            else:
                await asyncio.sleep(0)
    else:  # each device once per interval, fired in 5 ms ticks like the IoTix scheduler
        ticks = max(1, round(interval / 0.005))
        per_tick = [list(range(k, devices, ticks)) for k in range(ticks)]
        k = 0
        nxt = loop.time()
        while loop.time() < end:
            for i in per_tick[k % ticks]:
                writers[i][1].write(packets[i])
            sent += len(per_tick[k % ticks])
            k += 1
            nxt += 0.005
            await asyncio.sleep(max(0.0, nxt - loop.time()))
    c1, w1 = cpu_seconds(), time.perf_counter()
    for _, w in writers:
        w.close()
    return {
        "devices": devices,
        "sent_window": sent,
        "rate": round(sent / (w1 - w0), 1),
        "cpu_pct": round(100 * (c1 - c0) / (w1 - w0), 1),
    }


def run_raw(host: str, port: int, devices: int, interval_ms: int, duration: float, prefix: str) -> dict:
    rt = get_runtime()
    return rt.call(_raw, host, port, devices, interval_ms / 1000.0, duration, prefix, timeout=duration + 300)


# -- main ---------------------------------------------------------------------------------------------------


def per_1k(cpu: float, rate: float) -> float | None:
    return round(cpu / (rate / 1000), 2) if rate else None


def steady(host: str, port: int, devices: int, duration: float) -> dict:
    sub = Subscriber(host, port, "bench/#")
    iotix = run_iotix(host, port, devices, 1000, duration, "iot")
    iotix["received_by_mosquitto_sub"] = sub.close()
    iotix["received_pct"] = (
        round(100 * iotix["received_by_mosquitto_sub"] / iotix["sent_total"], 3) if iotix["sent_total"] else None
    )
    iotix["cpu_pct_per_1k_msg_s"] = per_1k(iotix["cpu_pct"], iotix["rate"])
    time.sleep(2)
    raw = run_raw(host, port, devices, 1000, duration, "raw")
    raw["cpu_pct_per_1k_msg_s"] = per_1k(raw["cpu_pct"], raw["rate"])
    return {"iotix": iotix, "raw_baseline": raw}


def maxrate(host: str, port: int, devices: int, duration: float, interval_ms: float) -> dict:
    sub = Subscriber(host, port, "bench/#")
    iotix = run_iotix(host, port, devices, interval_ms, duration, "fast")
    iotix["received_by_mosquitto_sub"] = sub.close()
    time.sleep(2)
    sub = Subscriber(host, port, "bench/#")
    raw = run_raw(host, port, devices, 0, duration, "rawfast")
    raw["received_by_mosquitto_sub"] = sub.close()
    return {
        "iotix": iotix,
        "raw_baseline": raw,
        "ratio_of_raw": round(iotix["rate"] / raw["rate"], 3) if raw["rate"] else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10_000, help="devices in the steady run (1 msg/s each)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds measured in the steady run")
    ap.add_argument("--maxrate-devices", type=int, default=1000)
    ap.add_argument("--maxrate-duration", type=float, default=20.0)
    ap.add_argument(
        "--maxrate-interval",
        type=float,
        default=1.0,
        help="ms between a device's messages (default 1: 1,000 devices could send 1M msg/s, so the rate is bounded "
        "by CPU, not by the schedule; a model allows >= 10 ms, the benchmark sets shorter intervals on the devices)",
    )
    ap.add_argument("--skip-steady", action="store_true")
    ap.add_argument("--skip-maxrate", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    broker = start_local_broker("mosquitto")
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "broker": broker.info()}
    try:
        if not args.skip_steady:
            out["steady"] = steady(broker.host, broker.port, args.devices, args.duration)
            print(json.dumps({"steady": out["steady"]}, indent=2), flush=True)
        if not args.skip_maxrate:
            out["maxrate"] = maxrate(
                broker.host, broker.port, args.maxrate_devices, args.maxrate_duration, args.maxrate_interval
            )
            print(json.dumps({"maxrate": out["maxrate"]}, indent=2), flush=True)
    finally:
        get_runtime().stop()
        broker.stop()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
