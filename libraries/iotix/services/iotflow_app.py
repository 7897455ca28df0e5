"""A small IoTFlow-compatible backend (aiohttp + SQLite) to test HTTP device fleets against.

Modelled on the connectivity layer of IoTFlow: devices register by name and get an API key, then send
telemetry and heartbeats with ``X-API-Key``; admins read everything with ``Authorization: admin <token>``.
Every answer is JSON; every error is ``{"status": "error", "message": ...}``.

==========  ==========================================  ===============================================
method      path                                        auth, answers
==========  ==========================================  ===============================================
POST        /api/v1/devices/register                    none; 201, 400, 409 (``auto_suffix`` avoids 409)
POST        /api/v1/devices/telemetry                   key; 201, 400, 401, 403, 429
GET         /api/v1/devices/telemetry                   key; 200 (the caller's records, newest first)
POST        /api/v1/devices/heartbeat                   key; 200, 401, 403, 429
GET         /api/v1/devices/status                      key; 200 (the caller, with ``is_online``)
GET         /api/v1/devices/mqtt-credentials            key; 200, 404 when no MQTT broker is configured
GET         /api/v1/devices/statuses                    admin; 200, 401
GET         /api/v1/telemetry/{id}                      that device's key or admin; 200, 400, 401, 403, 404
GET         /api/v1/telemetry/{id}/latest               that device's key or admin; 200, 404 when empty
GET         /api/v1/admin/devices                       admin; 200, 401
GET         /api/v1/admin/devices/{id}                  admin; 200, 401, 404
PUT         /api/v1/admin/devices/{id}/status           admin; 200, 400, 401, 404 (revokes a key)
GET         /api/v1/admin/stats                         admin; 200, 401
DELETE      /api/v1/admin/telemetry[?device_id=]        admin; 200, 401, 404
GET         /api/v1/admin/telemetry/export              admin; 200 (records in insertion order)
GET         /health                                     none; 200
==========  ==========================================  ===============================================

Storage: one SQLite database in WAL mode (see :class:`Store`). Telemetry and ``last_seen`` updates are queued
and written in batches (one ``executemany`` and one commit per batch, a group commit): a request is answered
once its batch is committed, so a 201 means stored and a read after it sees the record. Devices and counters
are also kept in memory, so authenticating a request costs a dict lookup.

API keys and the admin token are never logged (a 4-character prefix at most). Run as
``python -m iotix.services.iotflow_app --host 127.0.0.1 --port P --db PATH`` with the admin token in
``--admin-token`` or the environment variable ``IOTIX_IOTFLOW_ADMIN_TOKEN`` (preferred: argv is visible to
every local user). It prints ``IoTFlow backend listening on HOST:PORT`` once it serves and stops on SIGTERM
or SIGINT after committing what is queued.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hmac
import json
import logging
import math
import os
import re
import secrets
import signal
import sqlite3
import string
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web

from iotix.errors import ConfigurationError
from iotix.services.iotflow import ADMIN_TOKEN_ENV, RateLimit, parse_rate_limit, ready_line

__all__ = [
    "DEVICE_STATUSES",
    "Device",
    "IoTFlowService",
    "Settings",
    "create_app",
    "main",
]

LOG = logging.getLogger("iotix.iotflow")
T = TypeVar("T")

DEVICE_STATUSES = ("active", "inactive", "maintenance")
API_KEY_LENGTH = 32
_API_KEY_ALPHABET = string.ascii_letters + string.digits
MAX_NAME_LENGTH = 100
MAX_TEXT_LENGTH = 1000
DEFAULT_READ_LIMIT = 1000
MAX_READ_LIMIT = 10000
_OPTIONAL_DEVICE_FIELDS = ("description", "location", "firmware_version", "hardware_version")
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_RELATIVE_TIME = re.compile(r"^-(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MICROS = 2**62
#: Compact JSON; ASCII only, so that any string (even a lone surrogate) encodes and stores.
_dumps = functools.partial(json.dumps, separators=(",", ":"))

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    device_type TEXT NOT NULL,
    api_key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    location TEXT NOT NULL DEFAULT '',
    firmware_version TEXT NOT NULL DEFAULT '',
    hardware_version TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_seen INTEGER
);
CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    data TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS telemetry_device_ts ON telemetry (device_id, ts);
"""
_DEVICE_COLUMNS = (
    "id, name, device_type, api_key, status, description, location, firmware_version, hardware_version, "
    "created_at, updated_at, last_seen"
)
_RECORD_COLUMNS = "id, device_id, ts, received_at, data, metadata"


# ------------------------------------------------------------------------------------------------- time


def now_us() -> int:
    """Wall-clock time in integer microseconds since the epoch (how every time is stored)."""
    return time.time_ns() // 1000


def iso_from_us(micros: int) -> str:
    """ISO-8601 UTC text of ``micros`` microseconds since the epoch (exact, no float rounding)."""
    return (_EPOCH + timedelta(microseconds=micros)).isoformat()


def us_from_iso(text: str) -> int:
    """Microseconds since the epoch of an ISO-8601 time; ``Z`` accepted, no offset means UTC.

    Raises ValueError when ``text`` is not such a time.
    """
    text = text.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_time_bound(text: str, now: int) -> int:
    """A query time bound: ISO-8601, a relative ``-30s``/``-5m``/``-1h``/``-7d``, or epoch seconds.

    Raises ValueError for anything else, and for times beyond what SQLite's 64-bit integers hold.
    """
    text = text.strip()
    relative = _RELATIVE_TIME.match(text)
    if relative is not None:
        micros = now - int(float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)] * 1_000_000)
    else:
        try:
            seconds = float(text)
        except ValueError:
            return us_from_iso(text)
        if not math.isfinite(seconds):
            raise ValueError(f"not a finite time: {text!r}")
        micros = int(seconds * 1_000_000)
    if abs(micros) > _MAX_MICROS:
        raise ValueError(f"time out of range: {text!r}")
    return micros


# ---------------------------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answer: HTTP ``status`` with ``{"status": "error", "message": message, **extra}``."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra

    def response(self) -> web.Response:
        """The JSON answer of this error."""
        return error_response(self.status, self.message, headers=self.headers, **self.extra)


class StorageError(Exception):
    """Writing to the database failed."""


def error_response(status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    """``{"status": "error", "message": message, **extra}`` with HTTP ``status``."""
    body = {"status": "error", "message": message, **extra}
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def ok(body: dict[str, Any], status: int = 200) -> web.Response:
    """``{"status": "success", **body}`` with HTTP ``status``."""
    return web.json_response({"status": "success", **body}, status=status, dumps=_dumps)


def json_with_list(head: dict[str, Any], key: str, items: list[str]) -> web.Response:
    """A 200 JSON answer: ``head`` plus ``key`` holding ``items``, each already JSON text (spliced, not re-encoded)."""
    text = _dumps({"status": "success", **head})
    return web.Response(text=f'{text[:-1]},"{key}":[{",".join(items)}]}}', content_type="application/json")


def key_hint(key: str) -> str:
    """What may be logged of an API key: its first 4 characters."""
    return f"{key[:4]}..."


# ------------------------------------------------------------------------------------------------ model


@dataclass(slots=True)
class Device:
    """A registered device, as kept in memory (times in microseconds since the epoch)."""

    id: int
    name: str
    device_type: str
    api_key: str
    status: str = "active"
    description: str = ""
    location: str = ""
    firmware_version: str = ""
    hardware_version: str = ""
    created_at: int = 0
    updated_at: int = 0
    last_seen: int | None = None
    telemetry_count: int = 0

    def is_online(self, now: int, window_us: int) -> bool:
        """Whether the device was seen within the last ``window_us`` microseconds."""
        return self.last_seen is not None and now - self.last_seen <= window_us

    def to_dict(self, now: int, window_us: int, *, with_api_key: bool = False) -> dict[str, Any]:
        """The device as the API shows it; the API key only when asked (the registration answer)."""
        result: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "device_type": self.device_type,
            "status": self.status,
            "location": self.location,
            "firmware_version": self.firmware_version,
            "hardware_version": self.hardware_version,
            "created_at": iso_from_us(self.created_at),
            "updated_at": iso_from_us(self.updated_at),
            "last_seen": iso_from_us(self.last_seen) if self.last_seen is not None else None,
            "is_online": self.is_online(now, window_us),
            "telemetry_count": self.telemetry_count,
        }
        if with_api_key:
            result["api_key"] = self.api_key
        return result

    def row(self) -> tuple[Any, ...]:
        """Values in the order of the ``devices`` columns."""
        return (
            self.id,
            self.name,
            self.device_type,
            self.api_key,
            self.status,
            self.description,
            self.location,
            self.firmware_version,
            self.hardware_version,
            self.created_at,
            self.updated_at,
            self.last_seen,
        )


def record_json(row: tuple[int, int, int, int, str, str]) -> str:
    """A stored telemetry row as JSON text; ``data`` and ``metadata`` are spliced in as stored."""
    record_id, device_id, ts, received_at, data, metadata = row
    return (
        f'{{"id":{record_id},"device_id":{device_id},"timestamp":"{iso_from_us(ts)}",'
        f'"received_at":"{iso_from_us(received_at)}","data":{data},"metadata":{metadata}}}'
    )


# ---------------------------------------------------------------------------------------------- storage


class Store:
    """The SQLite database: writes on the event loop's thread, reads in one worker thread.

    A write is short (a batch of inserts and one commit; with ``synchronous=OFF`` nothing waits for the
    disk), so it runs on the loop thread: handing each batch to a worker thread cost 20-35 % more CPU per
    request (measured side by side at 2,000 and at ~3,000 requests/s). A read can be long (an export of every
    record), so it runs in a worker thread on a connection of its own; WAL lets it read while the loop
    writes, and it sees every committed batch. ``synchronous=OFF`` keeps what a killed process wrote (it is
    in the OS cache) and only risks the last writes on a power loss, which does not matter for a test backend.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iotflow-read")

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError("the database is not open")
        return self._db

    # ---------------------------------------------------------------- loop thread

    def open(self) -> list[Device]:
        """Open (or create) the database and return the stored devices with their telemetry counts."""
        db = sqlite3.connect(self._path)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                LOG.warning("SQLite journal mode is %s, not WAL", mode)
            db.execute("PRAGMA synchronous=OFF")
            db.executescript(SCHEMA)
            db.commit()
            counts = dict(db.execute("SELECT device_id, COUNT(*) FROM telemetry GROUP BY device_id").fetchall())
            devices = []
            for row in db.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY id"):  # noqa: S608 - constant
                device = Device(*row)
                device.telemetry_count = counts.get(device.id, 0)
                devices.append(device)
        except BaseException:
            db.close()
            raise
        self._db = db
        return devices

    def insert_device(self, row: tuple[Any, ...]) -> None:
        """Insert a device row (the values of :meth:`Device.row`)."""
        db = self._conn()
        with db:
            db.execute(f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row)  # noqa: S608

    def update_status(self, device_id: int, status: str, updated_at: int) -> None:
        """Set a device's status."""
        db = self._conn()
        with db:
            db.execute("UPDATE devices SET status=?, updated_at=? WHERE id=?", (status, updated_at, device_id))

    def write_batch(self, rows: list[tuple[int, int, int, str, str]], seen: list[tuple[int, int]]) -> None:
        """Insert telemetry ``rows`` and set ``(last_seen, device_id)`` pairs in one transaction."""
        db = self._conn()
        with db:
            if rows:
                db.executemany(
                    "INSERT INTO telemetry (device_id, ts, received_at, data, metadata) VALUES (?,?,?,?,?)", rows
                )
            if seen:
                db.executemany("UPDATE devices SET last_seen=? WHERE id=?", seen)

    def clear(self, device_id: int | None) -> int:
        """Delete the telemetry (of one device if given); return how many records were deleted."""
        db = self._conn()
        with db:
            if device_id is None:
                cursor = db.execute("DELETE FROM telemetry")
            else:
                cursor = db.execute("DELETE FROM telemetry WHERE device_id=?", (device_id,))
        return cursor.rowcount

    async def close(self) -> None:
        """Close the read connection and its thread, checkpoint the WAL into the database file, close it."""
        try:
            await self.read(self._close_reader)
        finally:
            self._executor.shutdown(wait=True)
            if self._db is not None:
                try:
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    self._db.close()
                    self._db = None

    # ---------------------------------------------------------------- read thread

    async def read(self, method: Callable[..., T], *args: Any) -> T:
        """Run the read ``method(*args)`` in the read thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(method, *args))

    def _read_conn(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = sqlite3.connect(self._path)
            self._reader.execute("PRAGMA query_only=ON")
        return self._reader

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def query(self, device_id: int, start: int | None, end: int | None, limit: int) -> list[str]:
        """Records of a device with ``start <= ts <= end``, newest first, at most ``limit``, as JSON texts."""
        sql = f"SELECT {_RECORD_COLUMNS} FROM telemetry WHERE device_id=?"  # noqa: S608 - constant
        args: list[Any] = [device_id]
        if start is not None:
            sql += " AND ts>=?"
            args.append(start)
        if end is not None:
            sql += " AND ts<=?"
            args.append(end)
        sql += " ORDER BY ts DESC, id DESC LIMIT ?"
        args.append(limit)
        return [record_json(row) for row in self._read_conn().execute(sql, args)]

    def export(self, device_id: int | None, since_id: int) -> list[str]:
        """Every record (of one device if given) with ``id > since_id`` in insertion order, as JSON texts."""
        sql = f"SELECT {_RECORD_COLUMNS} FROM telemetry WHERE id>?"  # noqa: S608 - constant
        args: list[Any] = [since_id]
        if device_id is not None:
            sql += " AND device_id=?"
            args.append(device_id)
        sql += " ORDER BY id"
        return [record_json(row) for row in self._read_conn().execute(sql, args)]


class _Batch:
    """Writes queued for the next commit, and the requests waiting for it."""

    __slots__ = ("counts", "rows", "seen", "waiters")

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int, str, str]] = []
        self.seen: dict[int, int] = {}
        self.counts: dict[int, int] = {}
        self.waiters: list[asyncio.Future[None]] = []

    def __bool__(self) -> bool:
        return bool(self.rows or self.seen)


# ---------------------------------------------------------------------------------------------- service


@dataclass(frozen=True, slots=True)
class Settings:
    """Configuration of one backend."""

    db_path: str
    admin_token: str
    rate_limit: RateLimit | None = None
    mqtt_host: str | None = None
    mqtt_port: int | None = None
    online_window: float = 60.0
    flush_interval: float = 0.0


class IoTFlowService:
    """State and request handlers of one backend: devices in memory, telemetry batched into SQLite."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._admin_token = settings.admin_token.encode()
        self._window_us = int(settings.online_window * 1_000_000)
        self._store = Store(settings.db_path)
        self._by_id: dict[int, Device] = {}
        self._by_key: dict[str, Device] = {}
        self._by_name: dict[str, Device] = {}
        self._next_id = 1
        self._rate_windows: dict[str, list[float]] = {}
        self._batch = _Batch()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self._started = time.monotonic()

    # ---------------------------------------------------------------- lifecycle

    async def startup(self, _app: web.Application) -> None:
        """Open the database, load the devices and start the batch writer."""
        for device in self._store.open():
            self._add(device)
        self._next_id = max(self._by_id, default=0) + 1
        self._writer = asyncio.create_task(self._run_writer(), name="iotflow-writer")
        self._writer.add_done_callback(self._writer_done)
        records = sum(device.telemetry_count for device in self._by_id.values())
        LOG.info("Database %s: %d devices, %d telemetry records", self._settings.db_path, len(self._by_id), records)

    async def cleanup(self, _app: web.Application) -> None:
        """Commit what is queued, then close the database."""
        self._closing = True
        self._wakeup.set()
        if self._writer is not None:
            with contextlib.suppress(Exception):  # a failed writer was logged by _writer_done
                await self._writer
        await self._store.close()
        LOG.info("Stopped; database closed")

    def _add(self, device: Device) -> None:
        self._by_id[device.id] = device
        self._by_key[device.api_key] = device
        self._by_name[device.name] = device

    # ---------------------------------------------------------------- batch writer

    def _queue(self, device: Device, seen: int, row: tuple[int, int, int, str, str] | None) -> asyncio.Future[None]:
        """Queue a ``last_seen`` update and optionally a telemetry row; the future ends with their commit."""
        if self._writer is None or self._writer.done():
            raise ApiError(503, "The backend is not accepting writes (starting, stopping or its writer failed)")
        batch = self._batch
        if row is not None:
            batch.rows.append(row)
            batch.counts[device.id] = batch.counts.get(device.id, 0) + 1
        batch.seen[device.id] = seen
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        batch.waiters.append(waiter)
        self._wakeup.set()
        return waiter

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            LOG.error("The telemetry writer failed", exc_info=task.exception())
            for waiter in self._batch.waiters:
                if not waiter.done():
                    waiter.set_exception(StorageError("the telemetry writer failed"))

    async def _run_writer(self) -> None:
        """Commit everything queued since the last commit in one transaction, each time something is queued.

        Requests handled in the same turn of the event loop (and during ``flush_interval``, if set) share a
        commit, so the number of commits per second stays bounded however many devices send.
        """
        interval = self._settings.flush_interval
        while True:
            await self._wakeup.wait()
            if interval > 0 and not self._closing:
                await asyncio.sleep(interval)
            self._wakeup.clear()
            batch, self._batch = self._batch, _Batch()
            if batch:
                self._commit(batch)
            if self._closing and not self._batch:
                return

    def _commit(self, batch: _Batch) -> None:
        seen = [(last_seen, device_id) for device_id, last_seen in batch.seen.items()]
        try:
            self._store.write_batch(batch.rows, seen)
        except Exception as error:  # answered as 500 to every request of the batch
            LOG.error("Writing %d telemetry records failed: %s", len(batch.rows), error)
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(StorageError(str(error)))
            return
        for device_id, count in batch.counts.items():
            device = self._by_id.get(device_id)
            if device is not None:
                device.telemetry_count += count
        for waiter in batch.waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _stored(self, waiter: Awaitable[None], what: str) -> None:
        try:
            await waiter
        except StorageError as error:
            raise ApiError(500, f"{what} could not be stored: {error}") from error

    # ---------------------------------------------------------------- authentication

    def _device(self, request: web.Request) -> Device:
        """The active device whose ``X-API-Key`` came with the request (401, 403), within its rate limit (429)."""
        key = request.headers.get("X-API-Key")
        if not key:
            raise ApiError(401, "API key required: send it in the X-API-Key header")
        device = self._by_key.get(key)
        if device is None:
            LOG.debug("Rejected API key %s", key_hint(key))
            raise ApiError(401, "Invalid API key")
        if device.status != "active":
            raise ApiError(
                403, f"Device {device.id} is {device.status}: its API key is not accepted", device_id=device.id
            )
        self._check_rate(key)
        return device

    def _check_rate(self, key: str) -> None:
        limit = self._settings.rate_limit
        if limit is None:
            return
        now = time.monotonic()
        window = self._rate_windows.get(key)
        if window is None or now - window[0] >= limit.period:
            self._rate_windows[key] = [now, 1.0]
            return
        if window[1] >= limit.requests:
            retry_after = max(1, math.ceil(window[0] + limit.period - now))
            raise ApiError(
                429,
                f"Rate limit exceeded: at most {limit.requests} requests per {limit.period:g} s per device",
                headers={"Retry-After": str(retry_after)},
                retry_after=retry_after,
            )
        window[1] += 1

    def _admin(self, request: web.Request) -> bool:
        """True with a valid ``Authorization: admin <token>``, False without the header, 401 for a wrong one."""
        header = request.headers.get("Authorization")
        if header is None:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() == "admin" and hmac.compare_digest(token.strip().encode(), self._admin_token):
            return True
        raise ApiError(401, "Invalid admin authorization: send 'Authorization: admin <token>'")

    def _require_admin(self, request: web.Request) -> None:
        if not self._admin(request):
            raise ApiError(401, "Admin authorization required: send 'Authorization: admin <token>'")

    def _device_or_admin(self, request: web.Request, device_id: int) -> Device:
        """The device ``device_id`` for an admin (404 if unknown) or for that device's own key (403 otherwise)."""
        if self._admin(request):
            device = self._by_id.get(device_id)
            if device is None:
                raise ApiError(404, f"Device {device_id} not found")
            return device
        caller = self._device(request)
        if caller.id != device_id:
            raise ApiError(403, f"The API key of device {caller.id} cannot read device {device_id}")
        return caller

    def _path_device(self, request: web.Request) -> Device:
        device_id = int(request.match_info["device_id"])
        device = self._by_id.get(device_id)
        if device is None:
            raise ApiError(404, f"Device {device_id} not found")
        return device

    # ---------------------------------------------------------------- device endpoints

    async def register(self, request: web.Request) -> web.Response:
        """``POST /api/v1/devices/register``: 201 with the device and its API key; 400; 409 for a taken name."""
        body = await read_json_object(request)
        name = text_field(body, "name", required=True, max_length=MAX_NAME_LENGTH)
        device_type = text_field(body, "device_type", required=True, max_length=MAX_NAME_LENGTH)
        optional = {field: text_field(body, field) for field in _OPTIONAL_DEVICE_FIELDS}
        auto_suffix = is_true(request.query.get("auto_suffix")) or is_true(body.get("auto_suffix"))
        requested = name
        if name in self._by_name:
            if not auto_suffix:
                raise ApiError(409, "Device name already exists", name=name)
            number = 1
            while f"{requested}_{number}" in self._by_name:
                number += 1
            name = f"{requested}_{number}"
        api_key = "".join(secrets.choice(_API_KEY_ALPHABET) for _ in range(API_KEY_LENGTH))
        while api_key in self._by_key:
            api_key = "".join(secrets.choice(_API_KEY_ALPHABET) for _ in range(API_KEY_LENGTH))
        created = now_us()
        device = Device(
            id=self._next_id,
            name=name,
            device_type=device_type,
            api_key=api_key,
            created_at=created,
            updated_at=created,
            **optional,
        )
        try:
            self._store.insert_device(device.row())
        except Exception as error:
            LOG.error("Registering device %r failed: %s", name, error)
            raise ApiError(500, f"Registration failed: {error}") from error
        self._next_id += 1
        self._add(device)
        LOG.info("Registered device %r (id %d, type %r, key %s)", name, device.id, device_type, key_hint(api_key))
        message = "Device registered successfully"
        if name != requested:
            message += f" as {name!r} ({requested!r} was taken)"
        now = now_us()
        return ok({"message": message, "device": device.to_dict(now, self._window_us, with_api_key=True)}, 201)

    async def post_telemetry(self, request: web.Request) -> web.Response:
        """``POST /api/v1/devices/telemetry``: 201 once stored; 400, 401, 403, 429."""
        device = self._device(request)
        body = await read_json_object(request)
        if body.get("data") is None:
            raise ApiError(400, "Missing required field: data")
        data = body["data"]
        if not isinstance(data, dict):
            raise ApiError(400, "Telemetry data must be a JSON object")
        metadata = body.get("metadata")
        if metadata is None:
            metadata = {}
        elif not isinstance(metadata, dict):
            raise ApiError(400, "Telemetry metadata must be a JSON object")
        received = now_us()
        stamp = body.get("timestamp")
        if stamp is None:
            ts = received
        elif isinstance(stamp, str) and stamp.strip():
            try:
                ts = us_from_iso(stamp)
            except (ValueError, OverflowError):
                raise ApiError(400, f"Invalid timestamp {stamp[:64]!r}: use ISO 8601") from None
        else:
            raise ApiError(400, "Invalid timestamp: use an ISO 8601 string")
        device.last_seen = received
        row = (device.id, ts, received, _dumps(data), _dumps(metadata))
        await self._stored(self._queue(device, received, row), "Telemetry")
        return ok(
            {
                "message": "Telemetry data stored successfully",
                "device_id": device.id,
                "device_name": device.name,
                "timestamp": iso_from_us(ts),
            },
            201,
        )

    async def own_telemetry(self, request: web.Request) -> web.Response:
        """``GET /api/v1/devices/telemetry``: the caller's records, newest first (``limit``, time bounds)."""
        device = self._device(request)
        return await self._records(request, device, "telemetry")

    async def heartbeat(self, request: web.Request) -> web.Response:
        """``POST /api/v1/devices/heartbeat``: 200, sets ``last_seen``."""
        device = self._device(request)
        seen = now_us()
        device.last_seen = seen
        await self._stored(self._queue(device, seen, None), "Heartbeat")
        return ok(
            {
                "message": "Heartbeat received",
                "device_id": device.id,
                "timestamp": iso_from_us(seen),
                "device_status": "online",
            }
        )

    async def device_status(self, request: web.Request) -> web.Response:
        """``GET /api/v1/devices/status``: the caller with ``is_online`` and ``telemetry_count``."""
        device = self._device(request)
        return ok({"device": device.to_dict(now_us(), self._window_us)})

    async def mqtt_credentials(self, request: web.Request) -> web.Response:
        """``GET /api/v1/devices/mqtt-credentials``: broker, credentials and topics; 404 without a broker."""
        device = self._device(request)
        settings = self._settings
        if settings.mqtt_host is None or settings.mqtt_port is None:
            raise ApiError(404, "MQTT is not configured on this backend")
        base = f"iotflow/devices/{device.id}"
        credentials = {
            "host": settings.mqtt_host,
            "port": settings.mqtt_port,
            "mqtt_host": settings.mqtt_host,
            "mqtt_port": settings.mqtt_port,
            "username": str(device.id),
            "password": device.api_key,
            "client_id": f"device_{device.id}_{device.name.replace(' ', '_')}",
            "topics": {
                "telemetry": f"{base}/telemetry",
                "status": f"{base}/status",
                "commands": f"{base}/commands",
                "config": f"{base}/config",
                "telemetry_publish": f"{base}/telemetry",
                "status_publish": f"{base}/status",
                "commands_subscribe": f"{base}/commands",
                "config_subscribe": f"{base}/config",
            },
        }
        return ok({"device_id": device.id, "credentials": credentials})

    async def device_statuses(self, request: web.Request) -> web.Response:
        """``GET /api/v1/devices/statuses`` (admin): every device's status, ``last_seen`` and counts."""
        self._require_admin(request)
        now = now_us()
        devices = [
            {
                "id": device.id,
                "name": device.name,
                "device_type": device.device_type,
                "status": device.status,
                "last_seen": iso_from_us(device.last_seen) if device.last_seen is not None else None,
                "is_online": device.is_online(now, self._window_us),
                "telemetry_count": device.telemetry_count,
            }
            for device in self._by_id.values()
        ]
        return ok({"count": len(devices), "devices": devices})

    # ---------------------------------------------------------------- telemetry read-back

    async def device_telemetry(self, request: web.Request) -> web.Response:
        """``GET /api/v1/telemetry/{id}``: records newest first; ``limit``, ``start_time``, ``end_time``."""
        device = self._device_or_admin(request, int(request.match_info["device_id"]))
        return await self._records(request, device, "data")

    async def latest_telemetry(self, request: web.Request) -> web.Response:
        """``GET /api/v1/telemetry/{id}/latest``: the newest record; 404 when there is none."""
        device = self._device_or_admin(request, int(request.match_info["device_id"]))
        records = await self._store.read(self._store.query, device.id, None, None, 1)
        if not records:
            raise ApiError(404, f"No telemetry data found for device {device.id}", device_id=device.id)
        head = {"device_id": device.id, "device_name": device.name, "device_type": device.device_type}
        text = _dumps({"status": "success", **head})
        return web.Response(text=f'{text[:-1]},"latest_data":{records[0]}}}', content_type="application/json")

    async def _records(self, request: web.Request, device: Device, key: str) -> web.Response:
        limit = int_query(request, "limit", DEFAULT_READ_LIMIT, 1, MAX_READ_LIMIT)
        now = now_us()
        start = time_query(request, "start_time", now)
        end = time_query(request, "end_time", now)
        records = await self._store.read(self._store.query, device.id, start, end, limit)
        head = {
            "device_id": device.id,
            "device_name": device.name,
            "device_type": device.device_type,
            "count": len(records),
            "limit": limit,
            "start_time": iso_from_us(start) if start is not None else None,
            "end_time": iso_from_us(end) if end is not None else None,
        }
        return json_with_list(head, key, records)

    # ---------------------------------------------------------------- admin endpoints

    async def admin_devices(self, request: web.Request) -> web.Response:
        """``GET /api/v1/admin/devices``: every device (no API keys) with counts."""
        self._require_admin(request)
        now = now_us()
        devices = [device.to_dict(now, self._window_us) for device in self._by_id.values()]
        return ok({"total_devices": len(devices), "devices": devices})

    async def admin_device(self, request: web.Request) -> web.Response:
        """``GET /api/v1/admin/devices/{id}``: one device (no API key); 404 if unknown."""
        self._require_admin(request)
        device = self._path_device(request)
        return ok({"device": device.to_dict(now_us(), self._window_us)})

    async def admin_set_status(self, request: web.Request) -> web.Response:
        """``PUT /api/v1/admin/devices/{id}/status`` with ``{"status": ...}``: anything but active revokes the key."""
        self._require_admin(request)
        device = self._path_device(request)
        body = await read_json_object(request)
        status = body.get("status")
        if status is None:
            raise ApiError(400, "Missing required field: status")
        if status not in DEVICE_STATUSES:
            raise ApiError(400, f"Invalid status {status!r}: use one of {', '.join(DEVICE_STATUSES)}")
        old_status, old_updated = device.status, device.updated_at
        device.status, device.updated_at = status, now_us()
        try:
            self._store.update_status(device.id, status, device.updated_at)
        except Exception as error:
            device.status, device.updated_at = old_status, old_updated
            raise ApiError(500, f"Status update failed: {error}") from error
        LOG.info("Device %r (id %d) status %s -> %s", device.name, device.id, old_status, status)
        return ok(
            {
                "message": f"Device status updated from {old_status} to {status}",
                "device_id": device.id,
                "old_status": old_status,
                "new_status": status,
            }
        )

    async def admin_stats(self, request: web.Request) -> web.Response:
        """``GET /api/v1/admin/stats``: device totals by status, online count, records, devices per type."""
        self._require_admin(request)
        now = now_us()
        by_status = dict.fromkeys(DEVICE_STATUSES, 0)
        by_type: dict[str, int] = {}
        online = records = 0
        for device in self._by_id.values():
            by_status[device.status] = by_status.get(device.status, 0) + 1
            by_type[device.device_type] = by_type.get(device.device_type, 0) + 1
            records += device.telemetry_count
            if device.status == "active" and device.is_online(now, self._window_us):
                online += 1
        device_stats = {
            "total": len(self._by_id),
            **by_status,
            "online": online,
            "offline": by_status["active"] - online,
        }
        return ok(
            {
                "timestamp": iso_from_us(now),
                "device_stats": device_stats,
                "telemetry_stats": {"total_records": records},
                "device_types": by_type,
            }
        )

    async def admin_clear_telemetry(self, request: web.Request) -> web.Response:
        """``DELETE /api/v1/admin/telemetry[?device_id=]``: delete stored telemetry; 404 for an unknown device."""
        self._require_admin(request)
        device = self._query_device(request)
        deleted = self._store.clear(device.id if device else None)
        for cleared in [device] if device else self._by_id.values():
            cleared.telemetry_count = 0
        where = f"device {device.id}" if device else "all devices"
        LOG.info("Deleted %d telemetry records of %s", deleted, where)
        return ok({"message": f"Deleted {deleted} telemetry records of {where}", "deleted": deleted})

    async def admin_export(self, request: web.Request) -> web.Response:
        """``GET /api/v1/admin/telemetry/export[?device_id=&since_id=]``: every record in insertion order."""
        self._require_admin(request)
        device = self._query_device(request)
        since_id = int_query(request, "since_id", 0, 0, sys.maxsize)
        records = await self._store.read(self._store.export, device.id if device else None, since_id)
        return json_with_list({"count": len(records), "device_id": device.id if device else None}, "records", records)

    def _query_device(self, request: web.Request) -> Device | None:
        if request.query.get("device_id") in (None, ""):
            return None
        device_id = int_query(request, "device_id", 0, 0, sys.maxsize)
        device = self._by_id.get(device_id)
        if device is None:
            raise ApiError(404, f"Device {device_id} not found")
        return device

    # ---------------------------------------------------------------- health

    async def health(self, _request: web.Request) -> web.Response:
        """``GET /health``: liveness and a few counts."""
        return web.json_response(
            {
                "status": "healthy",
                "service": "iotix IoTFlow-compatible backend",
                "timestamp": iso_from_us(now_us()),
                "uptime_seconds": round(time.monotonic() - self._started, 3),
                "database": "sqlite",
                "devices": len(self._by_id),
            },
            dumps=_dumps,
        )


SERVICE_KEY = web.AppKey("iotflow", IoTFlowService)


# ----------------------------------------------------------------------------------------- request helpers


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; 400 when it is empty, not JSON (NaN included) or not an object."""
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "Request body must be a JSON object")
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise ApiError(400, f"Request body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "Request body must be a JSON object")
    return value


def text_field(body: dict[str, Any], name: str, *, required: bool = False, max_length: int = MAX_TEXT_LENGTH) -> str:
    """A string field of a request body ('' if optional and absent); 400 when missing, not text or too long."""
    value = body.get(name)
    if value is None or (required and isinstance(value, str) and not value.strip()):
        if required:
            raise ApiError(400, f"Missing required field: {name}")
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f"Field {name} must be a string")
    value = value.strip()
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ApiError(400, f"Field {name} is not valid Unicode text") from None
    if len(value) > max_length:
        raise ApiError(400, f"Field {name} is longer than {max_length} characters")
    return value


def is_true(value: object) -> bool:
    """Whether a query or body flag is set (``true``, ``1``, ``yes``, ``on`` or JSON true)."""
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in _TRUE_WORDS


def int_query(request: web.Request, name: str, default: int, minimum: int, maximum: int) -> int:
    """An integer query parameter in ``minimum..maximum``, ``default`` when absent; 400 otherwise."""
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"Query parameter {name} must be an integer, got {text[:32]!r}") from None
    if not minimum <= value <= maximum:
        raise ApiError(400, f"Query parameter {name} must be {minimum}..{maximum}, got {value}")
    return value


def time_query(request: web.Request, name: str, now: int) -> int | None:
    """A time-bound query parameter in microseconds (see :func:`parse_time_bound`), None when absent; 400."""
    text = request.query.get(name)
    if text is None or text == "":
        return None
    try:
        return parse_time_bound(text, now)
    except (ValueError, OverflowError):
        raise ApiError(
            400, f"Query parameter {name} must be ISO 8601, epoch seconds or like -1h, got {text[:64]!r}"
        ) from None


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer every error as ``{"status": "error", "message": ...}``: ours, aiohttp's (404, 405, 413), crashes."""
    try:
        return await handler(request)
    except ApiError as error:
        return error.response()
    except web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        return error_response(error.status, f"{error.reason}: {request.method} {request.path}", headers=headers)
    except Exception:
        LOG.exception("Error handling %s %s", request.method, request.path)
        return error_response(500, "Internal server error")


def create_app(settings: Settings) -> web.Application:
    """The aiohttp application of a backend; opening and closing the database follow the app's lifecycle."""
    app = web.Application(middlewares=[json_errors])
    service = IoTFlowService(settings)
    app[SERVICE_KEY] = service
    app.on_startup.append(service.startup)
    app.on_cleanup.append(service.cleanup)
    app.add_routes(
        [
            web.post("/api/v1/devices/register", service.register),
            web.post("/api/v1/devices/telemetry", service.post_telemetry),
            web.get("/api/v1/devices/telemetry", service.own_telemetry),
            web.post("/api/v1/devices/heartbeat", service.heartbeat),
            web.get("/api/v1/devices/status", service.device_status),
            web.get("/api/v1/devices/statuses", service.device_statuses),
            web.get("/api/v1/devices/mqtt-credentials", service.mqtt_credentials),
            web.get(r"/api/v1/telemetry/{device_id:\d+}", service.device_telemetry),
            web.get(r"/api/v1/telemetry/{device_id:\d+}/latest", service.latest_telemetry),
            web.get("/api/v1/admin/devices", service.admin_devices),
            web.get(r"/api/v1/admin/devices/{device_id:\d+}", service.admin_device),
            web.put(r"/api/v1/admin/devices/{device_id:\d+}/status", service.admin_set_status),
            web.get("/api/v1/admin/stats", service.admin_stats),
            web.delete("/api/v1/admin/telemetry", service.admin_clear_telemetry),
            web.get("/api/v1/admin/telemetry/export", service.admin_export),
            web.get("/health", service.health),
        ]
    )
    return app


# ------------------------------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m iotix.services.iotflow_app", description="IoTFlow-compatible backend for tests."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port, printed when ready)")
    parser.add_argument("--db", required=True, help="SQLite database file (created if missing)")
    parser.add_argument(
        "--admin-token", help=f"admin token (prefer the environment variable {ADMIN_TOKEN_ENV}: argv is public)"
    )
    parser.add_argument("--rate-limit", help="per-API-key limit N/S: N requests per S seconds, then 429")
    parser.add_argument("--mqtt-host", help="MQTT broker host handed out by /api/v1/devices/mqtt-credentials")
    parser.add_argument("--mqtt-port", type=int, default=1883, help="MQTT broker port (default 1883)")
    parser.add_argument("--online-window", type=float, default=60.0, help="seconds a device counts as online")
    parser.add_argument(
        "--flush-interval", type=float, default=0.0, help="seconds to gather telemetry before each commit (default 0)"
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (no headers, so no keys)")
    return parser


async def serve(settings: Settings, host: str, port: int, *, access_log: bool = False) -> int:
    """Serve until SIGTERM or SIGINT; return the exit code (1 when the address cannot be bound)."""
    app = create_app(settings)
    access_logger = logging.getLogger("aiohttp.access") if access_log else None
    runner = web.AppRunner(app, access_log=access_logger, handle_signals=False, shutdown_timeout=2.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await runner.setup()
    except (sqlite3.Error, OSError) as error:
        print(f"IoTFlow backend could not open its database {settings.db_path}: {error}", file=sys.stderr, flush=True)
        return 2
    site = web.TCPSite(runner, host, port, backlog=2048)
    try:
        await site.start()
    except OSError as error:
        print(f"IoTFlow backend could not listen on {host}:{port}: {error}", file=sys.stderr, flush=True)
        await runner.cleanup()
        return 1
    bound_port = int(runner.addresses[0][1]) if runner.addresses else port
    print(ready_line(host, bound_port), flush=True)
    await stop.wait()
    LOG.info("Stopping")
    await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: parse the options, serve, return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    admin_token = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV)
    if not admin_token:
        parser.error(f"an admin token is required: --admin-token or the environment variable {ADMIN_TOKEN_ENV}")
    try:
        rate_limit = parse_rate_limit(args.rate_limit) if args.rate_limit else None
    except ConfigurationError as error:
        parser.error(str(error))
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0..65535, got {args.port}")
    if not args.online_window > 0 or args.flush_interval < 0:
        parser.error("--online-window must be positive and --flush-interval not negative")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(
        db_path=args.db,
        admin_token=admin_token,
        rate_limit=rate_limit,
        mqtt_host=args.mqtt_host,
        mqtt_port=args.mqtt_port if args.mqtt_host else None,
        online_window=args.online_window,
        flush_interval=args.flush_interval,
    )
    limit = f", rate limit {rate_limit} per key" if rate_limit else ""
    LOG.info("Starting IoTFlow backend on %s:%d, database %s%s", args.host, args.port, args.db, limit)
    try:
        return asyncio.run(serve(settings, args.host, args.port, access_log=args.access_log))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
