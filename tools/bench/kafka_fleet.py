#!/usr/bin/env python3
"""Kafka fleet benchmark: N devices x 1 message/s produced to a local Tansu broker.

Starts Tansu (``Start Local Kafka Broker``'s broker), creates the topic with confluent-kafka, runs the
shipped ``kafka-vehicle-telemetry`` model (GPS position, speed, fuel, engine temperature; acks=1, gzip,
linger 5 ms, 2 pooled producers) in this process and prints, as JSON:

- messages handed over, acknowledged by the broker (and %), failed, retries, in the measured window and in
  all; the rate; the messages on the topic as confluent-kafka counts them (high watermarks: independent);
- CPU % (of one core) of this process and of the broker during the window, RSS and RSS per device;
- producers used, produce latency (hand-over to broker ack) percentiles, send lateness.

Usage:
    python tools/bench/kafka_fleet.py                         # 10,000 devices, 60 s
    python tools/bench/kafka_fleet.py --devices 1000 --duration 10
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "libraries"))

from iotix.fleet.simulator import Simulator  # noqa: E402
from iotix.fleet.timeline import LaunchSettings, LaunchStrategy  # noqa: E402
from iotix.model.loader import load_model  # noqa: E402
from iotix.runtime import get_runtime  # noqa: E402
from iotix.services.kafka_broker import KafkaBroker, start_local_kafka_broker  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds, rss_bytes  # noqa: E402

MODEL = ROOT / "models" / "kafka-vehicle-telemetry.yaml"


def topic_messages(broker: KafkaBroker, topic: str, partitions: int, expected: int) -> int:
    """Messages on the topic, read from the beginning by confluent-kafka (no consumer group)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bench-count", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    count, idle_until = 0, time.monotonic() + 10
    try:
        while time.monotonic() < idle_until:
            batch = [m for m in consumer.consume(10_000, 0.5) if m.error() is None]
            count += len(batch)
            if batch:
                idle_until = time.monotonic() + (2 if count >= expected else 10)
    finally:
        consumer.close()
    return count


def create_topic(broker: KafkaBroker, partitions: int) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(10)
    return name


def run(devices: int, duration: float, partitions: int, producers: int) -> dict[str, Any]:
    broker = start_local_kafka_broker()
    try:
        topic = create_topic(broker, partitions)
        rt = get_runtime()
        model = load_model(MODEL)
        sim: Simulator = rt.call(lambda: Simulator(rt.loop))
        conn = {**model.connection, "host": broker.host, "port": broker.port, "topic": topic, "producers": producers}
        ids = [f"veh-{i:05d}" for i in range(devices)]
        rss0 = rss_bytes()
        fleet = rt.call(lambda: sim.create_fleet("bench", model, ids, seed=1, connection=conn))
        t0 = time.perf_counter()
        # Spread the first readings over one interval, as real vehicles would not all start on the same ms.
        rt.call(fleet.start, LaunchSettings(strategy=LaunchStrategy.LINEAR, delay_ms=1000 / max(devices, 1)))
        while rt.call(lambda: fleet.count_states()["running"]) < devices and time.perf_counter() - t0 < 120:
            time.sleep(0.05)
        launch_s = time.perf_counter() - t0
        time.sleep(3.0)  # settle
        rt.call(fleet.lateness.__init__)
        s0 = rt.call(fleet.stats)
        c0, b0, w0 = cpu_seconds(), cpu_seconds(broker.pid), time.perf_counter()
        time.sleep(duration)
        c1, b1, w1 = cpu_seconds(), cpu_seconds(broker.pid), time.perf_counter()
        s1 = rt.call(fleet.stats)
        rss1 = rss_bytes()
        rt.call(fleet.stop, timeout=120)
        final = rt.call(fleet.stats)
        rt.call(sim.shutdown)
        on_topic = topic_messages(broker, topic, partitions, final["messagesAcked"])
    finally:
        broker.stop()
    wall = w1 - w0
    sent = s1["messagesSent"] - s0["messagesSent"]
    acked = s1["messagesAcked"] - s0["messagesAcked"]
    return {
        "devices": devices,
        "running": s1["runningDeviceCount"],
        "launch_s": round(launch_s, 2),
        "window_s": round(wall, 1),
        "window": {
            "sent": sent,
            "acked": acked,
            "failed": s1["messagesFailed"] - s0["messagesFailed"],
            "rate_msg_s": round(sent / wall, 1),
        },
        "total": {
            "sent": final["messagesSent"],
            "acked": final["messagesAcked"],
            "failed": final["messagesFailed"],
            "retries": final["retries"],
            "acked_pct": round(100 * final["messagesAcked"] / final["messagesSent"], 3)
            if final["messagesSent"]
            else None,
            "on_topic_confluent_kafka": on_topic,
        },
        "cpu_pct_iotix": round(100 * (c1 - c0) / wall, 1),
        "cpu_pct_broker": round(100 * (b1 - b0) / wall, 1),
        "rss_mb": round(rss1 / 2**20, 1),
        "rss_per_device_kb": round((rss1 - rss0) / devices / 1024, 2),
        "producers_used": s1["transport"]["producers"],
        "produce_latency_ms": s1["transport"]["produceLatencyMs"],
        "send_lateness_ms": s1["sendLatenessMs"],
        "circuit": s1["circuitState"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--producers", type=int, default=2)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(json.dumps({"kafka": run(args.devices, args.duration, args.partitions, args.producers)}, indent=2))


if __name__ == "__main__":
    main()
