"""Pure logic of resilient delivery: the circuit breaker's states, the transmission log ring, settings."""

from __future__ import annotations

import pytest

from iotix.errors import ConfigurationError
from iotix.fleet.delivery import (
    CIRCUIT_OPEN,
    FAILED,
    OK,
    CircuitBreaker,
    CircuitState,
    DeliverySettings,
    TransmissionLog,
)


def test_the_breaker_opens_after_the_threshold_half_opens_after_the_cooldown_and_closes_on_success() -> None:
    b = CircuitBreaker("http://x:1", threshold=3, cooldown=5.0)
    for t in (0.0, 0.1):
        b.failure(t, "HTTP 500")
        assert b.state is CircuitState.CLOSED and b.allow(t)
    b.success()  # a success in between resets the count
    for t in (1.0, 1.1, 1.2):
        b.failure(t, "HTTP 500")
    assert b.state is CircuitState.OPEN and b.opens == 1
    assert not b.allow(6.1) and b.remaining(6.1) == pytest.approx(0.1)
    assert b.allow(6.3) and b.state is CircuitState.HALF_OPEN  # one trial ...
    assert not b.allow(6.3)  # ... at a time
    b.failure(6.4, "timeout")  # the trial failed: open again, for a full cool-down
    assert b.state is CircuitState.OPEN and b.opens == 2 and not b.allow(11.0)
    assert b.allow(11.5) and b.state is CircuitState.HALF_OPEN
    b.success()
    assert b.state is CircuitState.CLOSED and b.failures == 0 and b.allow(11.6) and b.allow(11.6)


def test_the_log_keeps_the_newest_entries_oldest_first() -> None:
    log = TransmissionLog(3)
    for i in range(5):
        log.add(1_700_000_000.0 + i, 100 + i, float(i), OK if i % 2 == 0 else FAILED, None if i % 2 == 0 else f"e{i}")
    entries = list(log.entries(10))
    assert [e["bytes"] for e in entries] == [102, 103, 104]
    assert [e["result"] for e in entries] == ["ok", "failed", "ok"]
    assert [e["error"] for e in entries] == [None, "e3", None]
    assert entries[0]["time"] == "2023-11-14T22:13:22.000+00:00" and entries[1]["latencyMs"] == 3.0
    assert [e["bytes"] for e in log.entries(1)] == [104]


def test_an_entry_without_latency_and_an_error_slot_reused_after_a_failure() -> None:
    log = TransmissionLog(2)
    log.add(0.0, 10, -1.0, CIRCUIT_OPEN, "circuit_open: ...")
    log.add(0.0, 10, 1.5, OK, None)
    log.add(0.0, 10, 2.5, OK, None)  # overwrites the failure: its error must not linger
    assert [(e["result"], e["latencyMs"], e["error"]) for e in log.entries(5)] == [("ok", 1.5, None), ("ok", 2.5, None)]
    empty = TransmissionLog(4)
    empty.add(0.0, 1, -1.0, CIRCUIT_OPEN, "x")
    assert next(empty.entries(1))["latencyMs"] is None


def test_settings_come_from_the_model_and_keyword_overrides_win() -> None:
    connection = {
        "retry": {"maxRetries": 4, "baseMs": 50, "capMs": 800, "maxElapsedMs": 3000},
        "circuitBreaker": {"failureThreshold": 9, "cooldownMs": 1500},
        "errorThreshold": 7,
    }
    s = DeliverySettings.from_connection(connection, circuit_threshold=2, log_size=None)
    assert (s.max_retries, s.retry_base_s, s.retry_cap_s, s.retry_budget_s) == (4, 0.05, 0.8, 3.0)
    assert (s.circuit_threshold, s.circuit_cooldown_s, s.error_threshold, s.log_size) == (2, 1.5, 7, 100)
    assert DeliverySettings.from_connection({}) == DeliverySettings()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": -1}, "maxRetries must be >= 0"),
        ({"retry_base_s": 2.0, "retry_cap_s": 1.0}, "0 < baseMs <= capMs"),
        ({"circuit_cooldown_s": 0}, "cooldownMs must be > 0"),
        ({"log_size": -5}, "transmission log size"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        DeliverySettings(**kwargs)
