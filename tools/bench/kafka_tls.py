#!/usr/bin/env python3
"""Issue 6's benchmark in one invocation: Kafka devices, then MQTT connects over mutual TLS against plain.

1. ``kafka``: N devices (default 10,000) x 1 msg/s for D seconds (default 60) to a local Tansu broker
   (:mod:`kafka_fleet`): acknowledged %, what confluent-kafka reads from the topic, CPU %, producers used,
   RSS per device.
2. ``mqtt_mutual_tls``: M devices (default 2,000) connecting over mutual TLS and M plain ones against local
   Mosquitto (:mod:`tls_connect`): connects/s of each, CPU during the launch, the ratios.

Usage:
    python tools/bench/kafka_tls.py                          # 10,000 Kafka devices for 60 s; 2,000 TLS + plain
    python tools/bench/kafka_tls.py --kafka-devices 1000 --duration 10 --tls-devices 200
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kafka_fleet
import tls_connect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kafka-devices", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=60.0, help="Kafka steady window, seconds")
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--tls-devices", type=int, default=2_000)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = {"kafka": kafka_fleet.run(args.kafka_devices, args.duration, 3, args.producers)}
    print(json.dumps(out, indent=2), flush=True)
    out["mqtt_mutual_tls"] = tls_connect.run(args.tls_devices)
    text = json.dumps(out, indent=2)
    print(json.dumps({"mqtt_mutual_tls": out["mqtt_mutual_tls"]}, indent=2), flush=True)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
