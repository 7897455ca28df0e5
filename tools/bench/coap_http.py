#!/usr/bin/env python3
"""CoAP and HTTP fleet benchmarks: IoTix against the simplest client, in one invocation per protocol.

For each protocol the target runs in a SEPARATE process and this process runs, one after the other:

1. ``iotix``: an IoTix fleet (built through :class:`iotix.fleet.simulator.Simulator` on the runtime loop)
   of N devices x one message per interval, launched linearly over ``--launch-s`` (2,000 devices over 2 s:
   one device every millisecond), then a 2 s settle, then a measured window of ``--duration`` seconds;
2. ``baseline``: the simplest client that sends the same number of requests at the same rate to the same
   target (pre-encoded requests, no generators, no bookkeeping beyond counting answers), measured over a
   window of the same length.

Targets and clients:

- ``coap``: the target is the standalone aiocoap sink (``python -m iotix.services.coap_server``), which
  answers every POST with a piggybacked 2.04 and counts the requests it handled (its count is read with a
  CoAP GET before and after each phase, and its exit summary gives the total). IoTix devices are client mode,
  confirmable (CON) POSTs of a JSON envelope to ``/telemetry/<deviceId>``. The baseline is a raw asyncio UDP
  sender: pre-encoded CON messages (only the message id is packed per send), ACKs matched by message id,
  RFC 7252 retransmissions (first timeout random in 2-3 s, doubled, at most 4), at most
  ``min(8192, max(256, devices))`` open exchanges and a fresh socket every 65,536 message ids, like IoTix.
  ``--coap-sink raw`` replaces the aiocoap sink by a minimal responder run from this script (the aiocoap sink
  needs most of a core at 2,000 requests/s, so it can be the bottleneck).
- ``http``: the target is the local IoTFlow-compatible backend (``start_iotflow_backend()``, aiohttp +
  SQLite, a 201 means committed). IoTix devices use the ``iotflow`` flow (register, then POST telemetry with
  ``X-API-Key``) with ``heartbeatIntervalMs: 0`` (no heartbeats, so both clients send exactly the same
  requests) and ``maxConnections: 100``. The baseline is one bare ``aiohttp.ClientSession`` with a pool of
  the same 100 connections, devices registered before its window, one task per request posting a
  pre-encoded IoTFlow body with the device's pre-fetched key. The backend's stored-record count
  (``GET /api/v1/admin/stats``) is read before and after each phase.

Figures (per phase): messages sent/acked/failed in the window and over the whole phase (launch to stop,
after the in-flight requests drained), delivered % (acked / sent over the whole phase) and target % (what
the target counted / sent), CPU % of one core of this process over the window (/proc/self/stat deltas) and
of the target process, RSS and RSS per device (delta over fleet creation + connect), open sockets of this
process (/proc/self/fd entries that are sockets, peak over 1 s samples in the window), p50/p99 request
latency (IoTix: ``transport.latency``, hand-over to answer; baseline: the same span measured by the
baseline). Ratios: IoTix CPU / baseline CPU, and both delivered %. tools/bench/README.md explains every key.

``--protocol both`` runs each protocol in a child process of its own (one after the other), so that each
fleet's RSS per device is measured from a fresh process.

Usage:
    python tools/bench/coap_http.py --protocol both --devices 2000 --duration 60
    python tools/bench/coap_http.py --protocol coap --coap-sink raw --devices 500 --duration 10 --json /tmp/c.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import math
import os
import random
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, cast

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "libraries"))

import aiohttp  # noqa: E402

from iotix.fleet.fleet import Fleet  # noqa: E402
from iotix.fleet.simulator import Simulator  # noqa: E402
from iotix.fleet.timeline import LaunchSettings, LaunchStrategy  # noqa: E402
from iotix.model.loader import load_model_dict  # noqa: E402
from iotix.model.types import DeviceModel  # noqa: E402
from iotix.runtime import get_runtime  # noqa: E402
from iotix.services.iotflow import IoTFlowBackend, start_iotflow_backend  # noqa: E402
from iotix.transport import coap_codec as coap_wire  # noqa: E402
from iotix.transport import http as _http_transport  # noqa: E402, F401  (imported before the RSS baseline)
from iotix.transport.coap import enlarge_receive_buffer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Json, cpu_seconds, rss_bytes, run_child_script, telemetry  # noqa: E402

SETTLE_S = 2.0  # after the last device is running, before the window
PAUSE_S = 3.0  # between the IoTix phase and the baseline
DRAIN_S = 10.0  # at most this long for a baseline's in-flight requests after its window
MID_SPACE = 1 << 16
HTTP_CONNECTIONS = 100
HTTP_TIMEOUT_S = 10.0
TICK_S = 0.005  # the baselines fire what is due in 5 ms ticks, like the IoTix scheduler


# -- /proc measurements ---------------------------------------------------------------------------------


def open_sockets(exclude: frozenset[int] = frozenset()) -> int:
    """File descriptors of this process that are sockets (``socket:[inode]``), minus ``exclude``."""
    n = 0
    for name in os.listdir("/proc/self/fd"):
        if int(name) in exclude:
            continue
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                n += 1
    return n


def fd_limit(pid: int | str = "self") -> int | None:
    """The soft ``Max open files`` of a process."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/limits") as fh:
        for line in fh:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return None


def pct(part: float, whole: float) -> float | None:
    return round(100 * part / whole, 3) if whole else None


def latency_summary(samples: list[float]) -> Json:
    """count, p50, p90, p99, max in ms of latencies in seconds (nearest rank, like the IoTix histogram)."""
    if not samples:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return round(1000 * ordered[max(1, math.ceil(len(ordered) * p / 100)) - 1], 3)

    return {"count": len(ordered), "p50": rank(50), "p90": rank(90), "p99": rank(99), "max": rank(100)}


# -- the fleet models -----------------------------------------------------------------------------------


def coap_model(port: int, interval_ms: int) -> Json:
    return {
        "id": "bench-coap",
        "name": "Benchmark CoAP sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "coap",
        "connection": {
            "host": "127.0.0.1",
            "port": port,
            "mode": "client",
            "confirmable": True,
            "path": "/telemetry/${deviceId}",
        },
        "telemetry": telemetry(interval_ms),
    }


def http_model(url: str, interval_ms: int) -> Json:
    return {
        "id": "bench-http",
        "name": "Benchmark IoTFlow sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "http",
        "connection": {
            "url": url,
            "flow": "iotflow",
            "heartbeatIntervalMs": 0,  # no heartbeats: IoTix and the baseline send the same requests
            "maxConnections": HTTP_CONNECTIONS,
            "timeoutMs": int(HTTP_TIMEOUT_S * 1000),
            "onConflict": "fail",
        },
        "telemetry": telemetry(interval_ms),
    }


SAMPLE_VALUES = b'{"temperature":21.37,"humidity":55.1,"pressure":1013.4,"battery":99.98}'


def coap_body(device_id: str) -> bytes:
    """A JSON envelope like IoTix's, fixed values."""
    return b'{"deviceId":"%s","seq":0,"ts":1732390000123,"temperature":21.37,"humidity":55.1,' % device_id.encode() + (
        b'"pressure":1013.4,"battery":99.98}'
    )


def iotflow_body(device_id: str) -> bytes:
    """IoTFlow's telemetry body like IoTix's ``iotflow`` encoder writes it, fixed values."""
    meta = b'{"deviceId":"%s","seq":0,"ts":1732390000123,"simulator":"iotix"}' % device_id.encode()
    return b'{"data":%s,"metadata":%s,"timestamp":"2024-11-23T19:26:40.123Z"}' % (SAMPLE_VALUES, meta)


def due_per_tick(devices: int, interval_s: float) -> list[list[int]]:
    """Device indexes per 5 ms tick of one interval: each device once per interval, evenly spread."""
    ticks = max(1, round(interval_s / TICK_S))
    return [list(range(k, devices, ticks)) for k in range(ticks)]


# -- targets (separate processes) -----------------------------------------------------------------------


class CoapSinkProcess:
    """``python -m iotix.services.coap_server`` in a process (group) of its own; counts read with CoAP GET."""

    COMMANDS: ClassVar[dict[str, list[str]]] = {
        "aiocoap": [sys.executable, "-m", "iotix.services.coap_server", "--port", "0", "--every", "3600"],
        "raw": [sys.executable, str(Path(__file__).resolve()), "--serve-raw-coap-sink"],
    }
    KINDS: ClassVar[dict[str, str]] = {
        "aiocoap": "aiocoap sink (python -m iotix.services.coap_server)",
        "raw": "raw asyncio CoAP responder (coap_http.py --serve-raw-coap-sink)",
    }

    def __init__(self, kind: str = "aiocoap", startup_timeout: float = 20.0) -> None:
        self.kind = kind
        self.summary: Json | None = None
        self.stopped = False
        self.log = Path(tempfile.mkstemp(prefix="iotix-bench-coap-sink-", suffix=".log")[1])
        env = {**os.environ, "PYTHONPATH": str(ROOT / "libraries"), "PYTHONUNBUFFERED": "1"}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.COMMANDS[kind],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C goes to us; we stop it (and read its summary)
            )
        self.pid = self.proc.pid
        deadline = time.monotonic() + startup_timeout
        self.port = 0
        while not self.port:
            match = re.search(r"CoAP sink listening on coap://127\.0\.0\.1:(\d+)", self.log.read_text())
            if match:
                self.port = int(match.group(1))
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the CoAP sink did not start:\n{self.log.read_text()[-2000:]}")
            else:
                time.sleep(0.05)
        self._query = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._query.connect(("127.0.0.1", self.port))
        self._mid = int.from_bytes(os.urandom(2), "big")

    def info(self) -> Json:
        return {"kind": self.KINDS[self.kind], "url": f"coap://127.0.0.1:{self.port}"}

    def count(self) -> int:
        """Requests the sink has handled (its GET answer); retransmitted duplicates are not counted by it."""
        options = coap_wire.request_options("/bench-count", None)
        for _attempt in range(5):
            self._mid = (self._mid + 1) % MID_SPACE
            token = os.urandom(4)
            request = coap_wire.encode_message(coap_wire.CON, coap_wire.CODE_GET, self._mid, token, options, b"")
            self._query.send(request)
            self._query.settimeout(2.0)
            with contextlib.suppress(TimeoutError):
                while True:
                    msg = coap_wire.parse_message(self._query.recv(65536))
                    if msg is None or msg.token != token or not msg.code:  # not ours, or an empty ACK
                        continue
                    if msg.mtype == coap_wire.CON:  # a separate response: acknowledge it
                        self._query.send(coap_wire.empty_message(coap_wire.ACK, msg.mid))
                    return int(json.loads(msg.payload)["requests"])
        raise RuntimeError("the CoAP sink does not answer GET")

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if hasattr(self, "_query"):
            self._query.close()
        lines = self.log.read_text().strip().splitlines()
        with contextlib.suppress(IndexError, ValueError):
            self.summary = json.loads(lines[-1])
        self.log.unlink(missing_ok=True)


class IoTFlowTarget:
    """The local IoTFlow backend (its own process, see :mod:`iotix.services.iotflow`)."""

    def __init__(self) -> None:
        self.backend: IoTFlowBackend = start_iotflow_backend()
        self.pid = self.backend.pid or 0
        self.url = self.backend.url

    def info(self) -> Json:
        return {"kind": "IoTFlow-compatible backend (iotix.services.iotflow_app, SQLite)", "url": self.url}

    def count(self) -> int:
        """Telemetry records stored (admin stats)."""
        request = urllib.request.Request(  # our own http://127.0.0.1 backend
            self.url + "/api/v1/admin/stats", headers=self.backend.admin_headers
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            return int(json.load(resp)["telemetry_stats"]["total_records"])

    def stop(self) -> None:
        self.backend.stop()


Target = CoapSinkProcess | IoTFlowTarget


# -- the IoTix phase ------------------------------------------------------------------------------------


def counters(fleet: Fleet) -> tuple[int, int, int]:
    ds = fleet.devices
    return sum(d.sent for d in ds), sum(d.acked for d in ds), sum(d.failed for d in ds)


def sample_window(duration: float, exclude: frozenset[int]) -> int:
    """Sleep ``duration`` seconds, sampling open sockets every second; return the peak."""
    end = time.perf_counter() + duration
    peak = open_sockets(exclude)
    while (left := end - time.perf_counter()) > 0:
        time.sleep(min(1.0, left))
        peak = max(peak, open_sockets(exclude))
    return peak


def run_iotix(
    model_dict: Json, target: Target, devices: int, duration: float, launch_s: float, exclude: frozenset[int]
) -> Json:
    rt = get_runtime()
    model = load_model_dict(model_dict)
    sim: Simulator = rt.call(lambda: Simulator(rt.loop))
    try:
        return _iotix_phase(sim, model, target, devices, duration, launch_s, exclude)
    finally:  # normally done already; after Ctrl-C this stops the fleet before the target goes
        with contextlib.suppress(Exception):
            rt.call(sim.shutdown, timeout=30)


def _iotix_phase(
    sim: Simulator,
    model: DeviceModel,
    target: Target,
    devices: int,
    duration: float,
    launch_s: float,
    exclude: frozenset[int],
) -> Json:
    rt = get_runtime()
    ids = [f"iot-{i:05d}" for i in range(devices)]
    target_before = target.count()
    sockets_before = open_sockets(exclude)
    rss0 = rss_bytes()
    fleet: Fleet = rt.call(lambda: sim.create_fleet("bench", model, ids, seed=1))
    launch = LaunchSettings(strategy=LaunchStrategy.LINEAR, delay_ms=launch_s * 1000 / devices)
    t0 = time.perf_counter()
    rt.call(fleet.start, launch)
    running = 0
    while time.perf_counter() - t0 < launch_s + 120:
        running = rt.call(lambda: fleet.count_states()["running"])
        if running == devices:
            break
        time.sleep(0.05)
    connect_s = time.perf_counter() - t0
    rss_connected = rss_bytes()
    time.sleep(SETTLE_S)
    transport: Any = fleet.transport

    def window_start() -> tuple[int, int, int]:  # one call on the loop: nothing happens in between
        transport.latency.__init__()
        fleet.lateness.__init__()
        return counters(fleet)

    def window_end() -> tuple[tuple[int, int, int], int, Json, Json, Json]:
        lateness = fleet.lateness
        return counters(fleet), lateness.count, transport.latency.summary(), lateness.summary(), transport.describe()

    s0, t_in0 = rt.call(window_start), target.count()
    c0, tc0, w0 = cpu_seconds(), cpu_seconds(target.pid), time.perf_counter()
    peak_sockets = sample_window(duration, exclude)
    c1, tc1, w1 = cpu_seconds(), cpu_seconds(target.pid), time.perf_counter()
    (s1, due, latency, lateness, describe), t_in1 = rt.call(window_end), target.count()
    reasons = Counter(
        re.sub(r"iot-\d+", "<device>", (d.last_error or "")[:200]) for d in fleet.devices if d.failed and d.last_error
    )
    rss_end = rss_bytes()
    rt.call(sim.shutdown, timeout=120)  # stops the fleet: in-flight requests are drained or failed
    s2 = counters(fleet)
    time.sleep(1.0)  # the target answers/commits what is left
    target_total = target.count() - target_before
    wall = w1 - w0
    sent, acked, failed = (b - a for a, b in zip(s0, s1, strict=True))
    out: Json = {
        "devices": devices,
        "running": running,
        "launch": f"linear, {launch.delay_ms:g} ms apart ({launch_s:g} s for all)",
        "connect_s": round(connect_s, 2),
        "window_s": round(wall, 1),
        "due_window": due,
        "sent_window": sent,
        "not_sent_window": due - sent,
        "acked_window": acked,
        "failed_window": failed,
        "rate": round(sent / wall, 1),
        "acked_of_due_window_pct": pct(acked, due),
        "target_received_window": t_in1 - t_in0,
        "sent_total": s2[0],
        "acked_total": s2[1],
        "failed_total": s2[2],
        "target_received_total": target_total,
        "delivered_pct": pct(s2[1], s2[0]),
        "target_pct": pct(target_total, s2[0]),
        "cpu_pct": round(100 * (c1 - c0) / wall, 1),
        "target_cpu_pct": round(100 * (tc1 - tc0) / wall, 1),
        "rss_mb": round(rss_end / 2**20, 1),
        "rss_per_device_kb": round((rss_connected - rss0) / devices / 1024, 2),
        "open_sockets_before": sockets_before,
        "open_sockets_peak": peak_sockets,
        "open_sockets_of_fleet": peak_sockets - sockets_before,
        "latency_ms": latency,
        "send_lateness_ms": lateness,
        "failure_reasons_by_devices": dict(reasons.most_common(3)),
    }
    if "retransmissions" in describe:
        out["retransmissions"] = describe.get("retransmissions")
        out["separate_responses"] = describe.get("separateResponses")
    if "heartbeatsSent" in describe:
        out["heartbeats"] = describe["heartbeatsSent"]
    return out


# -- the CoAP baseline ----------------------------------------------------------------------------------

_HEAD = struct.Struct("!BBH")
_CON_POST = 0x40 | coap_wire.CON << 4 | 4  # version 1, CON, 4-byte token
ACK_TIMEOUT_S = 2.0
MAX_RETRANSMIT = 4


class _RawCoap(asyncio.DatagramProtocol):
    """One UDP socket of the raw sender: its message ids and the exchanges open on it."""

    def __init__(self, owner: RawCoapSender) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None
        self.next_mid = 0
        self.pending: dict[int, list[Any]] = {}  # mid -> [device, first sent, datagram, transmissions, timeout]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 4:
            return
        first, code, mid = _HEAD.unpack_from(data)
        mtype = first >> 4 & 3
        owner = self.owner
        if mtype in (coap_wire.ACK, coap_wire.RST):
            ex = self.pending.pop(mid, None)
            if ex is None:
                return
            if mtype == coap_wire.RST:
                owner.answered(ex, 0)
            elif code == 0:  # empty ACK: the answer comes separately, matched by the device's token
                owner.separate[ex[0].to_bytes(4, "big")] = ex
            else:
                owner.answered(ex, code)
            return
        token = data[4 : 4 + (first & 0x0F)]
        ex = owner.separate.pop(token, None)
        if mtype == coap_wire.CON and self.transport is not None:
            self.transport.sendto(_HEAD.pack(0x60, 0, mid))  # ACK the separate response
        if ex is not None:
            owner.answered(ex, code)


class RawCoapSender:
    """The CoAP baseline: pre-encoded CON POSTs, ACK matching, RFC 7252 retransmissions, socket rotation.

    Like IoTix it keeps at most ``min(8192, max(256, devices))`` exchanges open (beyond that a message is
    refused, not sent) and times out per RFC 7252 (first timeout random in [2, 3] s, doubled, 4 retransmissions).
    """

    def __init__(self, port: int, devices: int, socks: list[socket.socket], target_pid: int) -> None:
        self.port = port
        self.target_pid = target_pid
        self.socks = socks
        self.tails: list[bytes] = []  # token + options + payload marker + payload, per device
        for i in range(devices):
            did = f"raw-{i:05d}"
            options = coap_wire.request_options(f"/telemetry/{did}", 50)
            self.tails.append(i.to_bytes(4, "big") + options + b"\xff" + coap_body(did))
        self.max_in_flight = min(8192, max(256, devices))
        self.in_flight = 0
        self.endpoints: list[_RawCoap] = []
        self.separate: dict[bytes, list[Any]] = {}
        self.timers: list[tuple[float, int, _RawCoap, int]] = []  # heap of (deadline, seq, endpoint, mid)
        self.sent = self.acked = self.failed = self.refused = self.retransmissions = 0
        self.latencies: list[float] = []
        self.loop = asyncio.get_running_loop()
        self.rng = random.Random(1)

    def answered(self, ex: list[Any], code: int) -> None:
        self.in_flight -= 1
        if code >> 5 == 2:
            self.acked += 1
            self.latencies.append(self.loop.time() - ex[1])
        else:
            self.failed += 1

    async def _next_endpoint(self) -> _RawCoap:
        sock = self.socks[len(self.endpoints)]  # reserved before the IoTix phase: its port was never used
        sock.connect(("127.0.0.1", self.port))
        _, endpoint = await self.loop.create_datagram_endpoint(lambda: _RawCoap(self), sock=sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.endpoints.append(endpoint)
        return endpoint

    def _expire(self, now: float) -> None:
        """Retransmit (or give up on) the exchanges whose timeout passed."""
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, _, endpoint, mid = heapq.heappop(timers)
            ex = endpoint.pending.get(mid)
            if ex is None:
                continue
            if ex[3] > MAX_RETRANSMIT:
                del endpoint.pending[mid]
                self.in_flight -= 1
                self.failed += 1
                continue
            assert endpoint.transport is not None
            endpoint.transport.sendto(ex[2])
            ex[3] += 1
            ex[4] *= 2
            self.retransmissions += 1
            heapq.heappush(timers, (now + ex[4], self.sent + self.retransmissions, endpoint, mid))

    async def run(self, interval: float, duration: float) -> Json:
        endpoint = await self._next_endpoint()
        per_tick = due_per_tick(len(self.tails), interval)
        loop, tails, timers, rng = self.loop, self.tails, self.timers, self.rng
        c0, tc0, w0 = cpu_seconds(), cpu_seconds(self.target_pid), time.perf_counter()
        k = 0
        nxt = loop.time()
        ticks = round(duration / TICK_S)  # all of them, also when the loop falls behind: the same count
        peak_sockets = 0
        next_sample = nxt
        while k < ticks:
            now = loop.time()
            for i in per_tick[k % len(per_tick)]:
                if self.in_flight >= self.max_in_flight:
                    self.refused += 1
                    continue
                if endpoint.next_mid == MID_SPACE:
                    endpoint = await self._next_endpoint()
                mid = endpoint.next_mid
                endpoint.next_mid += 1
                datagram = _HEAD.pack(_CON_POST, coap_wire.CODE_POST, mid) + tails[i]
                assert endpoint.transport is not None
                endpoint.transport.sendto(datagram)
                timeout = rng.uniform(ACK_TIMEOUT_S, 1.5 * ACK_TIMEOUT_S)
                endpoint.pending[mid] = [i, now, datagram, 1, timeout]
                self.sent += 1
                self.in_flight += 1
                heapq.heappush(timers, (now + timeout, self.sent + self.retransmissions, endpoint, mid))
            self._expire(now)
            if now >= next_sample:
                peak_sockets = max(peak_sockets, open_sockets())
                next_sample = now + 1.0
            k += 1
            nxt += TICK_S
            await asyncio.sleep(max(0.0, nxt - loop.time()))
        c1, tc1, w1 = cpu_seconds(), cpu_seconds(self.target_pid), time.perf_counter()
        drain_end = loop.time() + DRAIN_S
        while self.in_flight and loop.time() < drain_end:
            self._expire(loop.time())
            await asyncio.sleep(0.05)
        wall = w1 - w0
        return {
            "client": "raw asyncio UDP, pre-encoded CON POSTs, ACK matching, RFC 7252 retransmissions",
            "window_s": round(wall, 1),
            "sent": self.sent,
            "refused_in_flight_limit": self.refused,
            "rate": round(self.sent / wall, 1),
            "acked": self.acked,
            "failed": self.failed,
            "unanswered_after_drain": self.in_flight,
            "retransmissions": self.retransmissions,
            "delivered_pct": pct(self.acked, self.sent),
            "acked_of_due_pct": pct(self.acked, self.sent + self.refused),
            "cpu_pct": round(100 * (c1 - c0) / wall, 1),
            "target_cpu_pct": round(100 * (tc1 - tc0) / wall, 1),
            "open_sockets_peak": peak_sockets,
            "udp_sockets_used": len(self.endpoints),
            "latency_ms": latency_summary(self.latencies),
        }


async def _raw_coap(
    port: int,
    devices: int,
    interval: float,
    duration: float,
    socks: list[socket.socket],
    target_pid: int,
    endpoints: list[_RawCoap],
) -> Json:
    sender = RawCoapSender(port, devices, socks, target_pid)
    sender.endpoints = endpoints  # the caller closes them at the very end
    return await sender.run(interval, duration)


# -- the HTTP baseline ----------------------------------------------------------------------------------


async def _raw_http(url: str, devices: int, interval: float, duration: float, target_pid: int) -> Json:
    """One aiohttp session (100 connections), one task per request, pre-encoded bodies, pre-registered keys."""
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=HTTP_CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"Content-Type": "application/json"}
    ) as session:
        registering = asyncio.Semaphore(10)  # not a burst that opens the whole pool before the window

        async def register(i: int) -> dict[str, str]:
            body = {"name": f"raw-{os.getpid()}-{i:05d}", "device_type": "sensor"}
            async with registering, session.post(url + "/api/v1/devices/register", json=body) as resp:
                resp.raise_for_status()
                return {"X-API-Key": (await resp.json())["device"]["api_key"]}

        headers = await asyncio.gather(*(register(i) for i in range(devices)))
        bodies = [iotflow_body(f"raw-{i:05d}") for i in range(devices)]
        telemetry_url = url + "/api/v1/devices/telemetry"
        acked = failed = 0
        latencies: list[float] = []
        tasks: set[asyncio.Task[None]] = set()

        async def post(i: int, t0: float) -> None:
            nonlocal acked, failed
            try:
                async with session.post(telemetry_url, data=bodies[i], headers=headers[i]) as resp:
                    await resp.read()
                    if resp.status == 201:
                        acked += 1
                        latencies.append(loop.time() - t0)
                    else:
                        failed += 1
            except (TimeoutError, aiohttp.ClientError):
                failed += 1

        per_tick = due_per_tick(devices, interval)
        sent = k = peak_sockets = 0
        c0, tc0, w0 = cpu_seconds(), cpu_seconds(target_pid), time.perf_counter()
        nxt = loop.time()
        ticks = round(duration / TICK_S)  # all of them, also when the loop falls behind: the same count
        next_sample = nxt
        while k < ticks:
            now = loop.time()
            for i in per_tick[k % len(per_tick)]:
                task = loop.create_task(post(i, now))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            sent += len(per_tick[k % len(per_tick)])
            if now >= next_sample:
                peak_sockets = max(peak_sockets, open_sockets())
                next_sample = now + 1.0
            k += 1
            nxt += TICK_S
            await asyncio.sleep(max(0.0, nxt - loop.time()))
        c1, tc1, w1 = cpu_seconds(), cpu_seconds(target_pid), time.perf_counter()
        if tasks:
            await asyncio.wait(tasks, timeout=DRAIN_S)
        unanswered = len(tasks)
        for task in list(tasks):
            task.cancel()
    wall = w1 - w0
    return {
        "client": f"bare aiohttp ClientSession, {HTTP_CONNECTIONS} connections, a task per request",
        "window_s": round(wall, 1),
        "sent": sent,
        "rate": round(sent / wall, 1),
        "acked": acked,
        "failed": failed,
        "unanswered_after_drain": unanswered,
        "delivered_pct": pct(acked, sent),
        "cpu_pct": round(100 * (c1 - c0) / wall, 1),
        "target_cpu_pct": round(100 * (tc1 - tc0) / wall, 1),
        "open_sockets_peak": peak_sockets,
        "latency_ms": latency_summary(latencies),
    }


# -- one protocol -----------------------------------------------------------------------------------------


def run_baseline(target: Target, coro: Callable[[], Any], duration: float) -> Json:
    rt = get_runtime()
    before = target.count()
    out: Json = rt.call(coro, timeout=duration + 600)
    time.sleep(1.0)
    out["target_received"] = target.count() - before
    out["target_pct"] = pct(out["target_received"], out["sent"])
    return out


def compare(iotix: Json, baseline: Json) -> Json:
    return {
        "cpu_iotix_over_baseline": round(iotix["cpu_pct"] / baseline["cpu_pct"], 2) if baseline["cpu_pct"] else None,
        "delivered_pct": {"iotix": iotix["delivered_pct"], "baseline": baseline["delivered_pct"]},
        "target_pct": {"iotix": iotix["target_pct"], "baseline": baseline["target_pct"]},
        "latency_p50_ms": {"iotix": iotix["latency_ms"]["p50"], "baseline": baseline["latency_ms"]["p50"]},
        "latency_p99_ms": {"iotix": iotix["latency_ms"]["p99"], "baseline": baseline["latency_ms"]["p99"]},
    }


def run_phases(phases: dict[str, Callable[[], Json]], baseline_first: bool) -> Json:
    """Run the IoTix phase and the baseline phase in the chosen order, with a pause between them."""
    out: Json = {"order": ["baseline", "iotix"] if baseline_first else ["iotix", "baseline"]}
    if baseline_first:
        out["note"] = "baseline first: the fleet reuses memory the baseline freed, so rss_per_device_kb is too low"
    for n, name in enumerate(out["order"]):
        if n:
            time.sleep(PAUSE_S)
        out[name] = phases[name]()
    return out


def bench_coap(settings: argparse.Namespace, cleanup: contextlib.ExitStack) -> Json:
    devices, duration, interval_ms = settings.devices, settings.duration, settings.interval_ms
    sink = CoapSinkProcess(settings.coap_sink)
    cleanup.callback(sink.stop)
    # The baseline's sockets are bound now, before IoTix opens any, and stay open until the end: the sink
    # remembers message ids per source address for 247 s, and a baseline socket on a port IoTix used (or
    # the other way round) would make new requests look like duplicates.
    expected = devices * duration * 1000 / interval_ms
    reserved = []
    for _ in range(math.ceil(expected * 1.1 / MID_SPACE) + 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        reserved.append(sock)
        cleanup.callback(sock.close)
    endpoints: list[_RawCoap] = []

    def close_endpoints() -> None:
        for endpoint in endpoints:
            if endpoint.transport is not None:
                endpoint.transport.close()

    cleanup.callback(lambda: get_runtime().call(close_endpoints, timeout=10))  # before the sockets (LIFO)
    exclude = frozenset(s.fileno() for s in reserved)
    out: Json = {"target": {**sink.info(), "fd_limit": fd_limit(sink.pid)}}
    phases: dict[str, Callable[[], Json]] = {
        "iotix": lambda: run_iotix(
            coap_model(sink.port, interval_ms), sink, devices, duration, settings.launch_s, exclude
        ),
        "baseline": lambda: run_baseline(
            sink,
            lambda: _raw_coap(sink.port, devices, interval_ms / 1000, duration, reserved, sink.pid, endpoints),
            duration,
        ),
    }
    out.update(run_phases(phases, settings.baseline_first))
    out["ratios"] = compare(out["iotix"], out["baseline"])
    sink.stop()
    out["target"]["summary_requests_total"] = (sink.summary or {}).get("requests")
    out["target"]["counted_in_phases"] = out["iotix"]["target_received_total"] + out["baseline"]["target_received"]
    return out


def bench_http(settings: argparse.Namespace, cleanup: contextlib.ExitStack) -> Json:
    devices, duration, interval_ms = settings.devices, settings.duration, settings.interval_ms
    target = IoTFlowTarget()
    cleanup.callback(target.stop)
    out: Json = {"target": {**target.info(), "fd_limit": fd_limit(target.pid)}}
    phases: dict[str, Callable[[], Json]] = {
        "iotix": lambda: run_iotix(
            http_model(target.url, interval_ms), target, devices, duration, settings.launch_s, frozenset()
        ),
        "baseline": lambda: run_baseline(
            target, lambda: _raw_http(target.url, devices, interval_ms / 1000, duration, target.pid), duration
        ),
    }
    out.update(run_phases(phases, settings.baseline_first))
    out["iotix"]["heartbeat_interval_ms"] = 0
    out["ratios"] = compare(out["iotix"], out["baseline"])
    target.stop()
    return out


# -- the raw CoAP responder (--coap-sink raw) ------------------------------------------------------------


class _RawSink(asyncio.DatagramProtocol):
    """Piggybacked 2.04 to every CON POST/PUT, counted once per (source address, message id); GET: the count."""

    def __init__(self) -> None:
        self.count = 0
        self.seen: dict[Any, bytearray] = {}  # per source address: message ids seen (clients never reuse one)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        enlarge_receive_buffer(transport.get_extra_info("socket"))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 4 or self.transport is None:
            return
        first, code, mid = _HEAD.unpack_from(data)
        tkl = first & 0x0F
        if first >> 6 != 1 or tkl > 8:
            return
        token = data[4 : 4 + tkl]
        confirmable = first >> 4 & 3 == coap_wire.CON
        if code == coap_wire.CODE_GET:
            payload = json.dumps({"requests": self.count}).encode()
            mtype = coap_wire.ACK if confirmable else coap_wire.NON
            self.transport.sendto(coap_wire.encode_message(mtype, 69, mid, token, b"", payload), addr)
            return
        if code not in (coap_wire.CODE_POST, coap_wire.CODE_PUT):
            return
        seen = self.seen.get(addr)
        if seen is None:
            seen = self.seen[addr] = bytearray(MID_SPACE)
        if not seen[mid]:
            seen[mid] = 1
            self.count += 1
        if confirmable:
            self.transport.sendto(_HEAD.pack(0x60 | tkl, 68, mid) + token, addr)  # ACK, 2.04 Changed


async def _serve_raw_sink() -> None:
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_datagram_endpoint(_RawSink, local_addr=("127.0.0.1", 0))
    print(f"CoAP sink listening on coap://127.0.0.1:{transport.get_extra_info('sockname')[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(json.dumps({"requests": sink.count}), flush=True)
    transport.close()


# -- main ---------------------------------------------------------------------------------------------------


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def runtime_stopped() -> Iterator[None]:
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            get_runtime().stop()


def run_in_children(args: argparse.Namespace, protocols: tuple[str, ...]) -> Json:
    """One child process of this script per protocol, one after the other (a fresh process for each fleet,
    so RSS per device is not skewed by memory the previous protocol's fleet left to the allocator)."""
    out: Json = {}
    for protocol in protocols:
        child_args = [str(Path(__file__).resolve()), "--protocol", protocol]
        child_args += ["--devices", str(args.devices), "--duration", str(args.duration)]
        child_args += ["--interval-ms", str(args.interval_ms), "--launch-s", str(args.launch_s)]
        child_args += ["--coap-sink", args.coap_sink] + (["--baseline-first"] if args.baseline_first else [])
        figures = run_child_script(child_args, f"the {protocol} benchmark")
        out.setdefault("machine", figures["machine"])
        out.setdefault("settings", figures["settings"])
        out[protocol] = figures[protocol]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=("coap", "http", "both"), default="both")
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds measured per phase")
    ap.add_argument("--interval-ms", type=int, default=1000, help="ms between a device's messages")
    ap.add_argument("--launch-s", type=float, default=2.0, help="the fleet starts linearly over this many seconds")
    ap.add_argument(
        "--coap-sink",
        choices=("aiocoap", "raw"),
        default="aiocoap",
        help="CoAP target: the aiocoap sink of iotix.services (default) or a raw responder of this script",
    )
    ap.add_argument("--baseline-first", action="store_true", help="run the baseline before the IoTix fleet")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--serve-raw-coap-sink", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_raw_coap_sink:
        asyncio.run(_serve_raw_sink())
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the processes started below
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up like Ctrl-C
    protocols = ("coap", "http") if args.protocol == "both" else (args.protocol,)
    try:
        out = run_in_children(args, protocols) if len(protocols) > 1 else run_here(args, protocols[0])
    except KeyboardInterrupt:
        print("interrupted: child processes stopped", file=sys.stderr)
        sys.exit(130)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


def run_here(args: argparse.Namespace, protocol: str) -> Json:
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    out: Json = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "loadavg_at_start": load},
        "settings": {
            "devices": args.devices,
            "duration_s": args.duration,
            "interval_ms": args.interval_ms,
            "launch": f"linear over {args.launch_s:g} s",
            "settle_s": SETTLE_S,
            "fd_limit": fd_limit(),
        },
    }
    benches = {"coap": bench_coap, "http": bench_http}
    # the fleet is stopped by run_iotix; the stack then stops the target process, and last the runtime
    with runtime_stopped(), contextlib.ExitStack() as stack:
        out[protocol] = benches[protocol](args, stack)
    print(json.dumps({protocol: out[protocol]}, indent=2), flush=True)
    return out


if __name__ == "__main__":
    main()
