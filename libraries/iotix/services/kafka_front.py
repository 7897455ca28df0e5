"""A TLS and SASL front for the local Tansu broker: the secured listener that Tansu 0.6.0 cannot offer itself.

Tansu 0.6.0 cannot be started with TLS from its command line (``--cert`` and ``--key`` are in one clap argument
group, so giving both is refused, and the broker needs both), and its ``--authentication`` offers only SCRAM
with users that must be created over an authenticated connection: a broker with memory storage starts with
no user and no way to add one. So a secured local broker is Tansu on a private port behind this front, which
runs as one process with Tansu as its child (one process group: stopping the front stops Tansu):

- it listens on the public port, with TLS when given a server certificate (``--cert``/``--key``; with
  ``--client-ca`` a client certificate signed by that CA is required: mutual TLS);
- with ``--users`` (a JSON file ``{"user": "password"}``, mode 0600) every connection must authenticate with
  SASL first: ``SaslHandshake`` v0/v1 and ``SaslAuthenticate`` v0-v2 are answered here (PLAIN,
  SCRAM-SHA-256, SCRAM-SHA-512 per RFC 5802/7677; only ApiVersions may come before), then the connection is
  joined to Tansu's byte for byte;
- Tansu advertises the public port, so clients that follow the metadata stay on the secured listener.

Run as ``python -m iotix.services.kafka_front --port P --tansu BIN [...]``; it prints ``iotix kafka front
ready`` once Tansu answers. It is a test server: users and passwords live in memory, the salts are made at
start, and nothing it logs holds a password.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

API_VERSIONS = 18
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58
MECHANISMS: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
SCRAM_ITERATIONS = 4096
READY = "iotix kafka front ready"
MAX_FRAME = 1 << 20  # before authentication: a SASL or ApiVersions request is small


# ---------------------------------------------------------------------------------------------- SASL


class AuthFailed(Exception):
    """The client's credentials were wrong; the message goes back to it (it holds no password)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _scram_name(text: str) -> str:
    return text.replace("=2C", ",").replace("=3D", "=")


@dataclass
class ScramExchange:
    """The server side of one SCRAM exchange (RFC 5802): client-first -> server-first -> client-final."""

    mechanism: str
    users: Mapping[str, str]
    salts: dict[str, bytes]
    step: int = 0
    user: str = ""
    nonce: str = ""
    client_first_bare: str = ""
    server_first: str = ""

    def next(self, message: bytes) -> tuple[bytes, bool]:
        """The answer to ``message`` and whether the exchange is complete; raises :class:`AuthFailed`."""
        try:
            text = message.decode()
        except UnicodeDecodeError:
            raise AuthFailed("SCRAM message is not UTF-8") from None
        if self.step == 0:
            return self._first(text), False
        if self.step == 1:
            return self._final(text), True
        raise AuthFailed("SCRAM exchange already complete")

    def _first(self, text: str) -> bytes:
        parts = text.split(",", 2)
        if len(parts) != 3 or parts[0] not in ("n", "y"):
            raise AuthFailed("malformed SCRAM client-first message")
        bare = parts[2]
        attrs = dict(item.split("=", 1) for item in bare.split(",") if "=" in item)
        if "n" not in attrs or "r" not in attrs:
            raise AuthFailed("malformed SCRAM client-first message")
        self.user = _scram_name(attrs["n"])
        self.client_first_bare = bare
        self.nonce = attrs["r"] + secrets.token_urlsafe(18)
        salt = self.salts.setdefault(self.user, secrets.token_bytes(16))
        self.server_first = f"r={self.nonce},s={_b64(salt)},i={SCRAM_ITERATIONS}"
        self.step = 1
        return self.server_first.encode()

    def _final(self, text: str) -> bytes:
        self.step = 2
        head, sep, proof_text = text.rpartition(",p=")
        attrs = dict(item.split("=", 1) for item in head.split(",") if "=" in item)
        if not sep or attrs.get("r") != self.nonce:
            raise AuthFailed("malformed SCRAM client-final message (nonce)")
        password = self.users.get(self.user)
        failure = (
            "Authentication failed during authentication due to invalid credentials with SASL mechanism "
            f"{self.mechanism}"
        )
        if password is None:
            raise AuthFailed(failure)
        name = _HASHES[self.mechanism]
        salted = hashlib.pbkdf2_hmac(name, password.encode(), self.salts[self.user], SCRAM_ITERATIONS)
        client_key = hmac.new(salted, b"Client Key", name).digest()
        stored_key = hashlib.new(name, client_key).digest()
        auth_message = f"{self.client_first_bare},{self.server_first},{head}".encode()
        signature = hmac.new(stored_key, auth_message, name).digest()
        try:
            proof = base64.b64decode(proof_text, validate=True)
        except ValueError:
            raise AuthFailed(failure) from None
        if len(proof) != len(signature):
            raise AuthFailed(failure)
        recovered = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.new(name, recovered).digest(), stored_key):
            raise AuthFailed(failure)
        server_key = hmac.new(salted, b"Server Key", name).digest()
        return f"v={_b64(hmac.new(server_key, auth_message, name).digest())}".encode()


def check_plain(message: bytes, users: Mapping[str, str]) -> None:
    """A SASL PLAIN message ``authzid NUL user NUL password``; raises :class:`AuthFailed` unless it matches."""
    parts = message.split(b"\0")
    if len(parts) != 3:
        raise AuthFailed("malformed SASL PLAIN message")
    user, password = parts[1].decode(errors="replace"), parts[2].decode(errors="replace")
    expected = users.get(user)
    if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
        raise AuthFailed("Authentication failed: Invalid username or password")


# ------------------------------------------------------------------------------------------ the wire


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _put_uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _request_body(frame: bytes, flexible: bool) -> bytes:
    """The body of a request frame (after its header: key, version, correlation id, client id[, tags])."""
    (client_len,) = struct.unpack(">h", frame[8:10])
    pos = 10 + max(client_len, 0)
    if flexible:
        count, pos = _uvarint(frame, pos)
        for _ in range(count):
            _tag, pos = _uvarint(frame, pos)
            size, pos = _uvarint(frame, pos)
            pos += size
    return frame[pos:]


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def handshake_response(correlation: int, error: int, mechanisms: Sequence[str]) -> bytes:
    body = struct.pack(">ih", correlation, error) + struct.pack(">i", len(mechanisms))
    return body + b"".join(_string(m) for m in mechanisms)


def authenticate_response(correlation: int, version: int, error: int, message: str | None, data: bytes) -> bytes:
    if version >= 2:  # flexible: response header v1 (tagged fields), compact strings and bytes
        out = struct.pack(">i", correlation) + b"\0" + struct.pack(">h", error)
        out += _put_uvarint(0) if message is None else _put_uvarint(len(message.encode()) + 1) + message.encode()
        out += _put_uvarint(len(data) + 1) + data + struct.pack(">q", 0) + b"\0"
        return out
    out = struct.pack(">ih", correlation, error)
    out += struct.pack(">h", -1) if message is None else _string(message)
    out += struct.pack(">i", len(data)) + data
    if version >= 1:
        out += struct.pack(">q", 0)
    return out


async def _read_frame(reader: asyncio.StreamReader, limit: int = MAX_FRAME) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    if not 8 <= size <= limit:
        raise ConnectionError(f"frame of {size} bytes before authentication")
    return await reader.readexactly(size)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


@dataclass
class Gate:
    """What a connection must pass before it reaches Tansu: SASL with these users and mechanisms."""

    users: Mapping[str, str]
    mechanisms: Sequence[str] = MECHANISMS
    salts: dict[str, bytes] = field(default_factory=dict)

    async def authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        peer: str,
    ) -> bool:
        """Serve ApiVersions (from Tansu), SaslHandshake and SaslAuthenticate until the client authenticated."""
        mechanism: str | None = None
        scram: ScramExchange | None = None
        while True:
            frame = await _read_frame(reader)
            api_key, version, correlation = struct.unpack(">hhi", frame[:8])
            if api_key == API_VERSIONS:
                up_writer.write(_frame(frame))
                await up_writer.drain()
                writer.write(_frame(await _read_frame(up_reader, 1 << 24)))
            elif api_key == SASL_HANDSHAKE:
                body = _request_body(frame, flexible=False)
                (length,) = struct.unpack(">h", body[:2])
                asked = body[2 : 2 + length].decode(errors="replace")
                if asked not in self.mechanisms:
                    writer.write(_frame(handshake_response(correlation, UNSUPPORTED_SASL_MECHANISM, self.mechanisms)))
                    await writer.drain()
                    print(f"{peer}: SASL mechanism {asked!r} refused", flush=True)
                    return False
                mechanism = asked
                scram = ScramExchange(asked, self.users, self.salts) if asked in _HASHES else None
                writer.write(_frame(handshake_response(correlation, 0, self.mechanisms)))
            elif api_key == SASL_AUTHENTICATE and mechanism is not None:
                body = _request_body(frame, flexible=version >= 2)
                if version >= 2:
                    size, pos = _uvarint(body, 0)
                    token = body[pos : pos + size - 1]
                else:
                    (size,) = struct.unpack(">i", body[:4])
                    token = body[4 : 4 + size]
                try:
                    if scram is None:
                        check_plain(token, self.users)
                        answer, done = b"", True
                    else:
                        answer, done = scram.next(token)
                except AuthFailed as failure:
                    refusal = authenticate_response(correlation, version, SASL_AUTHENTICATION_FAILED, str(failure), b"")
                    writer.write(_frame(refusal))
                    await writer.drain()
                    print(f"{peer}: SASL {mechanism} authentication failed: {failure}", flush=True)
                    return False
                writer.write(_frame(authenticate_response(correlation, version, 0, None, answer)))
                if done:
                    await writer.drain()
                    who = scram.user if scram is not None else "(PLAIN)"
                    print(f"{peer}: SASL {mechanism} authenticated {who}", flush=True)
                    return True
            else:
                print(f"{peer}: request {api_key} v{version} before SASL authentication: closed", flush=True)
                return False
            await writer.drain()


# ------------------------------------------------------------------------------------------ the front


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: tuple[str, int], gate: Gate | None
) -> None:
    peer = "{}:{}".format(*writer.get_extra_info("peername")[:2])
    try:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
    except OSError as err:
        print(f"{peer}: Tansu at {upstream[0]}:{upstream[1]} refused: {err}", flush=True)
        writer.close()
        return
    try:
        if gate is not None and not await gate.authenticate(reader, writer, up_reader, up_writer, peer):
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    except (ConnectionError, OSError, asyncio.IncompleteReadError, struct.error, ValueError, IndexError) as err:
        print(f"{peer}: connection ended: {type(err).__name__}: {err}", flush=True)
    finally:
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.close()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _start_tansu(tansu: str, host: str, public_port: int, timeout: float) -> tuple[subprocess.Popen[bytes], int]:
    """Tansu on a free private port of ``host``, advertising the public port; waits until it answers."""
    from iotix.transport.kafka_wire import probe_kafka

    env = dict(os.environ)  # KafkaBroker already took Tansu's settings out of it
    env["NO_COLOR"] = "1"
    for _attempt in range(5):
        port = _free_port(host)
        command = [
            tansu,
            "broker",
            "--listener-url",
            f"tcp://{host}:{port}",
            "--advertised-listener-url",
            f"tcp://{host}:{public_port}",
            "--storage-engine",
            "memory://tansu/",
        ]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, env=env)  # noqa: S603 - our own command
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if probe_kafka(host, port, 0.5) is None:
                return process, port
            time.sleep(0.05)
        with contextlib.suppress(Exception):
            process.kill()
            process.wait(2)
    raise SystemExit(f"Tansu did not start on {host} (command: {' '.join(command)})")


def _server_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def run(args: argparse.Namespace) -> None:
    host, port = args.host, args.port
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as err:
        print(f"cannot listen on {host}:{port}: {err}", flush=True)  # "Address already in use": retried
        raise SystemExit(1) from None
    listener.listen(1024)
    port = listener.getsockname()[1]
    tansu, private_port = _start_tansu(args.tansu, host, port, args.startup_timeout)
    users: dict[str, str] = {}
    if args.users:
        users = {str(k): str(v) for k, v in json.loads(Path(args.users).read_text()).items()}
    gate = Gate(users, tuple(args.mechanisms.split(","))) if args.users else None
    context = _server_context(args.cert, args.key, args.client_ca) if args.cert else None
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, (host, private_port), gate), sock=listener, ssl=context, ssl_handshake_timeout=10
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    what = ", ".join(
        part
        for part in (
            "TLS" if context else "",
            "client certificates required" if args.client_ca else "",
            f"SASL {args.mechanisms} ({len(users)} users)" if gate else "",
        )
        if part
    )
    print(f"{READY} on {host}:{port} ({what}) -> Tansu on {host}:{private_port}", flush=True)
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                if tansu.poll() is not None:
                    print(f"Tansu exited with code {tansu.returncode}", flush=True)
                    break
    finally:
        server.close()
        if tansu.poll() is None:
            tansu.terminate()
            try:
                tansu.wait(5)
            except subprocess.TimeoutExpired:
                tansu.kill()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iotix.services.kafka_front", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tansu", required=True, help="the tansu binary")
    parser.add_argument("--cert", help="server certificate (PEM): TLS on the public port")
    parser.add_argument("--key", help="the server certificate's private key (PEM)")
    parser.add_argument("--client-ca", help="require client certificates signed by this CA (PEM)")
    parser.add_argument("--users", help='JSON file {"user": "password"}: SASL required')
    parser.add_argument("--mechanisms", default=",".join(MECHANISMS), help="SASL mechanisms offered")
    parser.add_argument("--startup-timeout", type=float, default=15.0)
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    if args.client_ca and not args.cert:
        parser.error("--client-ca needs --cert and --key (client certificates are a TLS feature)")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
