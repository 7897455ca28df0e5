"""A local CoAP server that accepts every POST and PUT and remembers what arrived (the "CoAP sink").

:class:`CoapSink` runs on an asyncio loop of the caller (the runtime's): ``sink = await CoapSink.start()``
binds a free UDP port on 127.0.0.1 (read back as :attr:`CoapSink.port`), answers every POST/PUT on any path
with 2.04 Changed (or with a chosen error code, for tests of failure handling), records each request per
path and feeds every payload into a :class:`~iotix.observe.tracker.TelemetryTracker` (envelopes in JSON or
CBOR; anything else counts as an invalid message). ``await sink.stop()`` closes it.

Run it standalone in a process of its own (benchmarks)::

    python -m iotix.services.coap_server --port 5683 --every 5

prints ``CoAP sink listening on coap://127.0.0.1:5683`` when ready and every ``--every`` seconds the request
count (and at exit a JSON summary line), until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import deque
from typing import Any

from iotix.encode import decode_envelope
from iotix.observe.tracker import TelemetryTracker
from iotix.services.process import LOCALHOST
from iotix.transport.coap_base import enlarge_receive_buffer
from iotix.transport.coap_server_mode import (
    AIOCOAP_LOGGER,
    release_udp_port,
    reserve_udp_port,
    udp_port_of,
    udp_socket_of,
)

__all__ = ["CoapSink", "main"]

#: Requests kept per path for :meth:`CoapSink.requests` (older ones are counted, not kept).
DEFAULT_KEEP_PER_PATH = 10_000


def _parse_code(code: str | int | None) -> Any:
    """``"5.00"``, ``"4.04"`` or a raw number -> an aiocoap Code; None for None."""
    from aiocoap.numbers.codes import Code

    if code is None:
        return None
    if isinstance(code, int):
        return Code(code)
    major, _, minor = str(code).partition(".")
    try:
        return Code(int(major) << 5 | int(minor or 0))
    except ValueError:
        raise ValueError(f"not a CoAP response code: {code!r} (expected e.g. '5.00' or '4.04')") from None


def _make_catch_all(sink: CoapSink) -> Any:
    """The one resource of the sink: it sees the whole Uri-Path of every request."""
    import aiocoap
    from aiocoap import resource

    class CatchAll(resource.Resource, resource.PathCapable):
        async def render_post(self, request: Any) -> Any:
            return sink._handle("POST", request)

        async def render_put(self, request: Any) -> Any:
            return sink._handle("PUT", request)

        async def render_get(self, request: Any) -> Any:
            summary = {"requests": sink.count, "paths": len(sink._by_path)}
            return aiocoap.Message(payload=json.dumps(summary).encode(), content_format=50)

    return CatchAll()


class CoapSink:
    """An aiocoap server accepting POST/PUT on any path; see the module docstring.

    Everything runs on the loop that started it: read ``requests()``, ``counts()`` and ``tracker`` there
    (``runtime.call``), not from another thread while requests arrive.
    """

    def __init__(
        self, host: str, port: int, *, error_code: str | int | None = None, keep_per_path: int = DEFAULT_KEEP_PER_PATH
    ) -> None:
        self.host = host
        self.port = port
        self.tracker = TelemetryTracker("coap-sink")
        self.count = 0
        self.error_code = _parse_code(error_code)
        self.error_payload = b"injected error"
        self.keep_per_path = keep_per_path
        self._by_path: dict[str, deque[dict[str, Any]]] = {}
        self._counts: dict[str, int] = {}
        self._ctx: Any = None

    @classmethod
    async def start(
        cls,
        host: str = LOCALHOST,
        port: int = 0,
        *,
        error_code: str | int | None = None,
        keep_per_path: int = DEFAULT_KEEP_PER_PATH,
    ) -> CoapSink:
        """Bind ``host:port`` (0: a free port) and serve on the running loop."""
        import aiocoap

        port = reserve_udp_port(host, port)
        sink = cls(host, port, error_code=error_code, keep_per_path=keep_per_path)
        try:
            sink._ctx = await aiocoap.Context.create_server_context(
                _make_catch_all(sink), bind=(host, port), transports=["udp6"], loggername=AIOCOAP_LOGGER
            )
        except BaseException:
            release_udp_port(host, port)
            raise
        sink.port = udp_port_of(sink._ctx) or port
        enlarge_receive_buffer(udp_socket_of(sink._ctx))
        return sink

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"coap://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._ctx is not None

    async def stop(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return
        try:
            await ctx.shutdown()
        finally:
            release_udp_port(self.host, self.port)

    def set_error(self, code: str | int | None, payload: bytes = b"injected error") -> None:
        """Answer every following request with ``code`` (e.g. ``"5.00"``); None answers 2.04 again."""
        self.error_code = _parse_code(code)
        self.error_payload = payload

    # -- requests ------------------------------------------------------------------------------------------

    def _handle(self, method: str, request: Any) -> Any:
        import aiocoap

        now = time.time()
        path = "/" + "/".join(request.opt.uri_path)
        payload = bytes(request.payload)
        content_format = request.opt.content_format
        self.count += 1
        self._counts[path] = self._counts.get(path, 0) + 1
        envelope = decode_envelope(payload)
        if self.keep_per_path:
            records = self._by_path.get(path)
            if records is None:
                records = self._by_path[path] = deque(maxlen=self.keep_per_path)
            records.append(
                {
                    "path": path,
                    "method": method,
                    "payload": payload,
                    "contentFormat": None if content_format is None else int(content_format),
                    "deviceId": envelope.get("deviceId") if envelope else None,
                    "time": now,
                }
            )
        self.tracker.record_envelope(envelope, now)
        if self.error_code is not None:
            return aiocoap.Message(code=self.error_code, payload=self.error_payload)
        return aiocoap.Message(code=aiocoap.CHANGED)

    def requests(self, path: str | None = None, device_id: str | None = None) -> list[dict[str, Any]]:
        """Recorded requests, oldest first: of one path and/or of one device (the envelope's ``deviceId``).

        Each is ``{"path", "method", "payload" (bytes), "contentFormat" (int or None), "deviceId" (or None),
        "time" (epoch seconds)}``. Call on the sink's loop (``runtime.call``).
        """
        if path is not None:
            records = list(self._by_path.get(path if path.startswith("/") else "/" + path, ()))
        else:
            records = [r for kept in self._by_path.values() for r in kept]
            records.sort(key=lambda r: r["time"])
        if device_id is not None:
            records = [r for r in records if r["deviceId"] == device_id]
        return records

    def counts(self) -> dict[str, int]:
        """Requests per path (all of them, also those no longer kept)."""
        return dict(self._counts)

    def clear(self) -> None:
        """Forget recorded requests and start a new tracker."""
        self._by_path.clear()
        self._counts.clear()
        self.count = 0
        self.tracker = TelemetryTracker("coap-sink", self.tracker.group_of)

    def summary(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "requests": self.count,
            "paths": len(self._counts),
            "devices": len(self.tracker.devices),
            "invalidMessages": self.tracker.invalid,
            "latencyMs": self.tracker.latency.summary(),
        }


# -- standalone ---------------------------------------------------------------------------------------------


async def _serve(host: str, port: int, every: float, keep: int) -> None:
    sink = await CoapSink.start(host, port, keep_per_path=keep)
    print(f"CoAP sink listening on {sink.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    last, last_t = 0, time.monotonic()
    try:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            now = time.monotonic()
            rate = (sink.count - last) / max(now - last_t, 1e-9)
            print(f"requests {sink.count} ({rate:.0f}/s) devices {len(sink.tracker.devices)}", flush=True)
            last, last_t = sink.count, now
    finally:
        print(json.dumps(sink.summary()), flush=True)
        await sink.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iotix.services.coap_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=LOCALHOST)
    parser.add_argument("--port", type=int, default=0, help="UDP port (0: a free one, printed)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between count lines")
    parser.add_argument("--keep", type=int, default=0, help="requests kept per path (default 0: count only)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args.host, args.port, args.every, args.keep))
    except OSError as err:
        print(f"cannot start the CoAP sink: {err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
