"""A tiny HTTP server for the acceptance suites: a deterministic target for the generic HTTP flow.

    python tiny_http_server.py [--record FILE] [--silent]

Binds a free port on 127.0.0.1 and prints ``listening on <port>`` once it accepts connections.

- ``POST|PUT|PATCH /sensors/<n>/readings``: 201 ``{"stored": true}`` for an even ``n``; 500 ``storm at
  sensor <n>`` for an odd ``n`` (a "500 storm" on half of the devices, the others unaffected);
- ``PUT /control/answer/<status>``: from now on every reading is answered ``<status>`` (with the body
  ``backend failing`` when it is not 2xx): a whole backend in trouble, or all well; ``/control/answer/0``
  goes back to the odd/even behaviour above. Answers 204.
- anything else: 404.
- ``--record FILE``: appends one JSON line per request: ``method``, ``path``, ``headers`` and ``body``; the
  Authorization header is kept as the SHA-256 of its value (``authorizationSha256``), so that the token of a
  test is neither in the file nor in the Robot log of a test that reads it.
- ``--silent``: accepts connections and never answers (a target that does not answer).

Runs until it is terminated (the Process library's Terminate All Processes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

READINGS = re.compile(r"^/sensors/(\d+)/readings$")
CONTROL = re.compile(r"^/control/answer/(\d+)$")


def make_handler(record: str | None) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()
    answer = [0]  # the status every reading gets (0: by the sensor number)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the fleets' pooled clients expect

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if record:
                headers = dict(self.headers.items())
                authorization = headers.pop("Authorization", None)
                digest = hashlib.sha256(authorization.encode()).hexdigest() if authorization else None
                line = {
                    "method": self.command,
                    "path": self.path,
                    "headers": headers,
                    "authorizationSha256": digest,
                    "body": body.decode("utf-8", "replace"),
                }
                with lock, open(record, "a", encoding="utf-8") as out:
                    out.write(json.dumps(line) + "\n")
            control = CONTROL.match(self.path)
            if control is not None:
                answer[0] = int(control.group(1))
                self._answer(204, b"")
                return
            match = READINGS.match(self.path)
            if match is not None and answer[0]:
                ok = 200 <= answer[0] < 300
                self._answer(answer[0], b'{"stored": true}' if ok else b"backend failing", "text/plain")
            elif match is None:
                self._answer(404, b'{"error": "not found"}')
            elif int(match.group(1)) % 2:
                self._answer(500, f"storm at sensor {match.group(1)}".encode(), "text/plain")
            else:
                self._answer(201, b'{"stored": true}')

        def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_PUT = do_PATCH = do_GET = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--record", help="append each request to this file (JSON lines)")
    parser.add_argument("--silent", action="store_true", help="accept connections, never answer")
    args = parser.parse_args()
    if args.silent:
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(128)  # connections complete in the backlog; nobody accepts or answers them
            print(f"listening on {server.getsockname()[1]}", flush=True)
            while True:
                time.sleep(3600)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(args.record))
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
