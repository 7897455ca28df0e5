"""Resilient delivery for one fleet: retries, a circuit breaker, the device error state, transmission logs.

Request-based transports (HTTP, CoAP, Kafka) report the outcome of every attempt here:

- :meth:`Delivery.succeeded`: the target acknowledged the message;
- :meth:`Delivery.failed`: an attempt failed. A failure the target is to blame for (a timeout, a refused
  connection, a 5xx answer, a broker error) is retried with exponential backoff and full jitter, bounded by
  ``maxRetries`` and ``maxElapsedMs``, and counted in ``retries``; the last failure counts in
  ``messagesFailed`` with its reason code (``http_500``, ``timeout``, ...).

The circuit breaker guards the fleet's endpoint: after ``failureThreshold`` consecutive failures it opens,
and telemetry is not attempted (:meth:`Delivery.admit` says no; counted as failed with reason
``circuit_open``) until ``cooldownMs`` have passed; then one trial goes through (``half_open``): success
closes it, failure opens it again.

A device whose last ``errorThreshold`` sends all failed goes to state ``error`` (it keeps trying); its
first success brings it back to ``running``.

Every outcome goes to the device's transmission log, a fixed-size ring of packed entries allocated at the
first send: 17 bytes an entry for request-based transports (with the latency of the answer), 6 bytes for
connection-based ones (MQTT hands a message to its connection: no latency), so that 10,000 MQTT devices x 100
entries take 6 MB.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from iotix.errors import ConfigurationError
from iotix.fleet.device import DeviceState
from iotix.transport.backoff import full_jitter

if TYPE_CHECKING:
    import random

    from iotix.fleet.device import Device
    from iotix.fleet.fleet import Fleet

log = logging.getLogger("iotix.delivery")

_RUNNING = DeviceState.RUNNING
_ERROR = DeviceState.ERROR


class CircuitState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class DeliverySettings:
    """Retry, circuit breaker, error state and transmission log settings of a fleet."""

    max_retries: int = 2  # retries after the first attempt (0: none)
    retry_base_s: float = 0.1
    retry_cap_s: float = 2.0
    retry_budget_s: float = 10.0  # no retry starts later than this after the first attempt
    circuit_threshold: int = 5  # consecutive failures that open the circuit (0: no breaker)
    circuit_cooldown_s: float = 5.0
    error_threshold: int = 5  # consecutive failed messages that put a device in state error (0: never)
    log_size: int = 100  # transmission log entries kept per device (0: no log)

    def __post_init__(self) -> None:
        checks = (
            (self.max_retries >= 0, f"maxRetries must be >= 0, got {self.max_retries}"),
            (
                0 < self.retry_base_s <= self.retry_cap_s,
                f"retry backoff needs 0 < baseMs <= capMs, got {self.retry_base_s * 1000:g} and "
                f"{self.retry_cap_s * 1000:g}",
            ),
            (self.retry_budget_s >= 0, f"maxElapsedMs must be >= 0, got {self.retry_budget_s * 1000:g}"),
            (self.circuit_threshold >= 0, f"failureThreshold must be >= 0, got {self.circuit_threshold}"),
            (self.circuit_cooldown_s > 0, f"cooldownMs must be > 0, got {self.circuit_cooldown_s * 1000:g}"),
            (self.error_threshold >= 0, f"errorThreshold must be >= 0, got {self.error_threshold}"),
            (0 <= self.log_size <= 100_000, f"transmission log size must be 0..100000, got {self.log_size}"),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigurationError(message)

    @classmethod
    def from_connection(cls, connection: Mapping[str, Any], **overrides: Any) -> DeliverySettings:
        """Settings from a model's ``connection.retry``, ``connection.circuitBreaker`` and ``errorThreshold``;
        keyword arguments that are not None win."""
        retry = connection.get("retry") or {}
        breaker = connection.get("circuitBreaker") or {}
        d = cls()
        values: dict[str, Any] = {
            "max_retries": int(retry.get("maxRetries", d.max_retries)),
            "retry_base_s": float(retry.get("baseMs", d.retry_base_s * 1000)) / 1000.0,
            "retry_cap_s": float(retry.get("capMs", d.retry_cap_s * 1000)) / 1000.0,
            "retry_budget_s": float(retry.get("maxElapsedMs", d.retry_budget_s * 1000)) / 1000.0,
            "circuit_threshold": int(breaker.get("failureThreshold", d.circuit_threshold)),
            "circuit_cooldown_s": float(breaker.get("cooldownMs", d.circuit_cooldown_s * 1000)) / 1000.0,
            "error_threshold": int(connection.get("errorThreshold", d.error_threshold)),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True)
class CircuitStatus:
    """A snapshot of a circuit breaker, for messages."""

    endpoint: str
    state: CircuitState
    failures: int  # consecutive
    last_reason: str


class CircuitBreaker:
    """Consecutive-failure breaker for one endpoint. Runs on the loop; ``now`` is loop time."""

    __slots__ = (
        "cooldown",
        "endpoint",
        "failures",
        "last_reason",
        "opened_at",
        "opens",
        "state",
        "threshold",
        "trial",
    )

    def __init__(self, endpoint: str, threshold: int, cooldown: float) -> None:
        self.endpoint = endpoint
        self.threshold = threshold
        self.cooldown = cooldown
        self.state = CircuitState.CLOSED
        self.failures = 0  # consecutive
        self.opened_at = 0.0
        self.opens = 0
        self.trial = False  # a half-open trial is in flight
        self.last_reason = ""  # of the last failure, quoted while the circuit is open

    def allow(self, now: float) -> bool:
        """Whether a send may be attempted now (an open circuit half-opens after the cool-down)."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN:
            if now - self.opened_at < self.cooldown:
                return False
            self.state = CircuitState.HALF_OPEN
            log.info("circuit to %s half-open: trying one send", self.endpoint)
            self.trial = False
        if self.trial:
            return False
        self.trial = True
        return True

    def success(self) -> None:
        self.failures = 0
        self.trial = False
        if self.state is not CircuitState.CLOSED:
            log.info("circuit to %s closed: the endpoint answers again", self.endpoint)
            self.state = CircuitState.CLOSED

    def failure(self, now: float, reason: str = "") -> None:
        self.failures += 1
        self.last_reason = reason
        self.trial = False
        if self.state is CircuitState.HALF_OPEN or (
            self.state is CircuitState.CLOSED and self.failures >= self.threshold
        ):
            if self.state is CircuitState.CLOSED:
                log.info(
                    "circuit to %s open after %d consecutive failures; sends paused for %.1f s",
                    self.endpoint,
                    self.failures,
                    self.cooldown,
                )
            self.state = CircuitState.OPEN
            self.opened_at = now
            self.opens += 1

    def status(self) -> CircuitStatus:
        return CircuitStatus(self.endpoint, self.state, self.failures, self.last_reason)

    def remaining(self, now: float) -> float:
        return max(0.0, self.opened_at + self.cooldown - now) if self.state is CircuitState.OPEN else 0.0


# -- transmission log ---------------------------------------------------------------------------------------

RESULTS = ("ok", "sent", "failed", "retrying", "circuit_open")
OK, SENT, FAILED, RETRYING, CIRCUIT_OPEN = range(len(RESULTS))
_ENTRY = struct.Struct("<dIfB")  # wall time (s), bytes, latency (ms, -1: none), result
_HANDOVER = struct.Struct("<IH")  # wall time (ms, modulo 2**32), bytes (13 bits, see HandoverLog) | result << 13
_MS_MASK = (1 << 32) - 1
_SMALL_BYTES = (1 << 13) - 1  # byte counts from here on are kept aside
_SENT_BITS = SENT << 13


class TransmissionLog:
    """A ring of the last ``size`` transmissions of one device."""

    __slots__ = ("buf", "count", "errors", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.buf = bytearray(_ENTRY.size * size)
        self.count = 0  # entries ever written
        self.errors: list[str | None] | None = None  # allocated at the first failure

    def add(self, wall: float, nbytes: int, latency_ms: float, result: int, error: str | None) -> None:
        slot = self.count % self.size
        _ENTRY.pack_into(self.buf, slot * _ENTRY.size, wall, nbytes, latency_ms, result)
        if error is not None or self.errors is not None:
            if self.errors is None:
                self.errors = [None] * self.size
            self.errors[slot] = error
        self.count += 1

    def entries(self, last: int) -> Iterator[dict[str, Any]]:
        """The last ``last`` entries, oldest first."""
        n = min(last, self.count, self.size)
        for i in range(self.count - n, self.count):
            slot = i % self.size
            wall, nbytes, latency, result = _ENTRY.unpack_from(self.buf, slot * _ENTRY.size)
            yield {
                "time": datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds"),
                "bytes": nbytes,
                "result": RESULTS[result],
                "latencyMs": round(latency, 3) if latency >= 0 else None,
                "error": self.errors[slot] if self.errors is not None else None,
            }


class HandoverLog:
    """The transmission log of a connection-based device (MQTT): 6 bytes an entry, no latency.

    An entry is the wall time in milliseconds modulo 2**32 (read back as the latest such time not after now, so
    entries are exact for 49 days) and 16 bits: the result (3 bits) and the byte count; a count of 8,191 bytes
    or more is kept aside (:attr:`big`), exact.
    """

    __slots__ = ("big", "buf", "count", "errors", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.buf = bytearray(_HANDOVER.size * size)
        self.count = 0  # entries ever written
        self.errors: list[str | None] | None = None  # allocated at the first failure
        self.big: dict[int, int] | None = None  # slot -> byte count, for counts of _SMALL_BYTES and more

    def add(self, wall: float, nbytes: int, latency_ms: float, result: int, error: str | None) -> None:
        """Same arguments as :meth:`TransmissionLog.add`; the latency is not kept."""
        slot = self.count % self.size
        self._put(slot, int(wall * 1000), nbytes, result)
        if error is not None or self.errors is not None:
            if self.errors is None:
                self.errors = [None] * self.size
            self.errors[slot] = error
        self.count += 1

    def add_sent(self, wall_ms: int, nbytes: int) -> None:
        """A message handed to the connection at ``wall_ms`` (epoch milliseconds): the hot path of a fleet."""
        count = self.count
        slot = count % self.size
        if nbytes < _SMALL_BYTES and self.big is None:
            _HANDOVER.pack_into(self.buf, slot * 6, wall_ms & _MS_MASK, nbytes | _SENT_BITS)
        else:
            self._put(slot, wall_ms, nbytes, SENT)
        if self.errors is not None:
            self.errors[slot] = None
        self.count = count + 1

    def _put(self, slot: int, wall_ms: int, nbytes: int, result: int) -> None:
        big = self.big
        if nbytes >= _SMALL_BYTES:
            if big is None:
                big = self.big = {}
            big[slot] = nbytes
            nbytes = _SMALL_BYTES
        elif big:
            big.pop(slot, None)
        _HANDOVER.pack_into(self.buf, slot * _HANDOVER.size, wall_ms & _MS_MASK, nbytes | result << 13)

    def entries(self, last: int) -> Iterator[dict[str, Any]]:
        """The last ``last`` entries, oldest first."""
        n = min(last, self.count, self.size)
        now_ms = int(time.time() * 1000)
        for i in range(self.count - n, self.count):
            slot = i % self.size
            ms, packed = _HANDOVER.unpack_from(self.buf, slot * _HANDOVER.size)
            wall_ms = now_ms - ((now_ms - ms) & _MS_MASK)
            nbytes = packed & _SMALL_BYTES
            if nbytes == _SMALL_BYTES and self.big is not None:
                nbytes = self.big.get(slot, nbytes)
            yield {
                "time": datetime.fromtimestamp(wall_ms / 1000, UTC).isoformat(timespec="milliseconds"),
                "bytes": nbytes,
                "result": RESULTS[packed >> 13],
                "latencyMs": None,
                "error": self.errors[slot] if self.errors is not None else None,
            }


# -- the fleet's delivery bookkeeping ---------------------------------------------------------------------


class Delivery:
    """Outcomes of sends: counters, retries, breaker, error state, logs. Everything runs on the loop."""

    def __init__(
        self, fleet: Fleet, settings: DeliverySettings, endpoint: str, rng: random.Random, *, request_based: bool
    ) -> None:
        self.fleet = fleet
        self.settings = settings
        self.breaker = CircuitBreaker(endpoint, settings.circuit_threshold, settings.circuit_cooldown_s)
        # The breaker needs outcomes per request: MQTT hands messages to a connection and has none.
        self.guarded = request_based and settings.circuit_threshold > 0
        self.reasons: Counter[str] = Counter()
        self.retries = 0
        self.errors_entered = 0
        self.recovered = 0
        self._rng = rng
        self._log_size = settings.log_size
        #: request-based transports log outcomes with their latency; connection-based ones hand-overs
        self._log_class: type[TransmissionLog] | type[HandoverLog] = TransmissionLog if request_based else HandoverLog

    # -- log ------------------------------------------------------------------------------------------------

    def record(
        self, device: Device, nbytes: int, result: int, latency_s: float | None = None, error: str | None = None
    ) -> None:
        size = self._log_size
        if not size:
            return
        tlog = device.tlog
        if tlog is None:
            tlog = device.tlog = self._log_class(size)
        tlog.add(time.time(), nbytes, latency_s * 1000.0 if latency_s is not None else -1.0, result, error)

    def record_sent(self, device: Device, nbytes: int, wall_ms: int) -> None:
        """A message a connection-based transport took at ``wall_ms`` (the fleet logs these only when it keeps
        a log, and only for connection-based transports)."""
        tlog = device.tlog
        if tlog is None:
            tlog = device.tlog = HandoverLog(self._log_size)
        tlog.add_sent(wall_ms, nbytes)

    # -- outcomes -----------------------------------------------------------------------------------------

    def admit(self, device: Device, nbytes: int) -> bool:
        """Before a telemetry send: False (counted as failed, ``circuit_open``) while the circuit is open."""
        if not self.guarded:
            return True
        breaker = self.breaker
        now = asyncio.get_running_loop().time()
        if breaker.allow(now):
            return True
        reason = (
            f"circuit_open: not sent, {breaker.endpoint} failed {breaker.failures} times in a row "
            f"(last: {breaker.last_reason}); next try in {breaker.remaining(now):.1f} s"
        )
        self._final_failure(device, nbytes, None, reason, "circuit_open", CIRCUIT_OPEN)
        return False

    def succeeded(self, device: Device, nbytes: int, latency_s: float | None) -> None:
        device.acked += 1
        device.fail_streak = 0
        if self.guarded:
            self.breaker.success()
        if device.state is _ERROR:
            device.state = _RUNNING
            self.recovered += 1
            log.info("fleet %s: device %s recovered (sends succeed again)", self.fleet.name, device.id)
        self.record(device, nbytes, OK, latency_s)

    def failed(
        self,
        device: Device,
        reason: str,
        code: str,
        nbytes: int = 0,
        latency_s: float | None = None,
        *,
        fault: bool = True,
        resend: Callable[[int], None] | None = None,
        attempt: int = 0,
        first_try: float | None = None,
    ) -> None:
        """An attempt failed. ``fault``: the endpoint is to blame (counts for the breaker, may be retried with
        ``resend(attempt + 1)``). ``first_try``: loop time of the first attempt (for the retry budget)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if fault and self.guarded:
            self.breaker.failure(now, reason)
        s = self.settings
        if (
            fault
            and resend is not None
            and attempt < s.max_retries
            and (first_try is None or now - first_try < s.retry_budget_s)
            and self.breaker.state is not CircuitState.OPEN
            and device.state in (_RUNNING, _ERROR)
        ):
            self.retries += 1
            device.retries += 1
            self.record(device, nbytes, RETRYING, latency_s, reason)
            delay = full_jitter(attempt, s.retry_base_s, s.retry_cap_s, self._rng)
            gen = device.gen
            loop.call_later(delay, self._retry, device, gen, resend, attempt + 1)
            return
        self._final_failure(device, nbytes, latency_s, reason, code, FAILED)

    def _retry(self, device: Device, gen: int, resend: Callable[[int], None], attempt: int) -> None:
        if device.gen != gen or device.state not in (_RUNNING, _ERROR):
            self._final_failure(device, 0, None, "not retried: the device was stopped or dropped", "stopped", FAILED)
            return
        resend(attempt)

    def _final_failure(
        self, device: Device, nbytes: int, latency_s: float | None, reason: str, code: str, result: int
    ) -> None:
        device.failed += 1
        device.last_error = reason
        self.reasons[code] += 1
        device.fail_streak += 1
        threshold = self.settings.error_threshold
        if threshold and device.fail_streak >= threshold and device.state is _RUNNING:
            device.state = _ERROR
            self.errors_entered += 1
            log.info(
                "fleet %s: device %s in state error after %d failed sends: %s",
                self.fleet.name,
                device.id,
                device.fail_streak,
                reason,
            )
        self.record(device, nbytes, result, latency_s, reason)

    def circuit_status(self) -> CircuitStatus:
        return self.breaker.status()

    def describe(self) -> dict[str, Any]:
        return {
            "circuitState": self.breaker.state.value if self.guarded else "disabled",
            "circuitOpens": self.breaker.opens,
            "retries": self.retries,
            "failuresByReason": dict(sorted(self.reasons.items())),
            "devicesEnteredError": self.errors_entered,
            "devicesRecovered": self.recovered,
        }
