"""The InfluxDB export without a server: the points a row becomes, the bound on waiting points, the figures,
and the token kept out of every text. The write API is replaced by a recorder (no network)."""

from __future__ import annotations

import re
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from iotix.errors import ConfigurationError
from iotix.observe.influx import (
    COUNTER_FIELDS,
    GAUGE_FIELDS,
    InfluxExport,
    build_points,
    record_of,
)
from iotix.observe.series import COUNTERS, GAUGES

TOKEN = "s3cr3t-T0KEN-value"  # a made-up token whose absence from every text is checked


def series(totals: dict[str, int] | None = None, failures: dict[str, int] | None = None) -> Any:
    return SimpleNamespace(
        totals={**dict.fromkeys(COUNTERS, 0), **(totals or {})},
        failures_total=dict(failures or {}),
        labels=lambda: {"fleet": "env", "model": "env-sensor", "protocol": "mqtt"},
    )


def row(ts: float = 1796420201.0, **values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "time": "2026-12-06T21:50:01Z",
        "ts": ts,
        "elapsed": 12.0,
        **dict.fromkeys(COUNTERS, 0),
        **dict.fromkeys(GAUGES, 0),
        "failedByReason": {},
        "latenessMs": {"count": 100, "p50": 0.3, "p90": 0.9, "p99": 2.1, "max": 3.0},
        "requestLatencyMs": None,
        "e2eLatencyMs": {"count": 0, "p50": None, "p90": None, "p99": None, "max": None},
    }
    base.update(values)
    return base


def parts(line: str) -> list[str]:
    """Measurement+tags, fields, timestamp of a line of line protocol (spaces in tags are escaped)."""
    return re.split(r"(?<!\\) ", line)


def lines(record: Any) -> list[str]:
    return [p.to_line_protocol() for p in build_points(record)]


HUB_LABELS = {"suite": "Metrics.Export", "test": "Export A Fleet"}


def test_the_main_point_has_every_counter_cumulative_and_every_gauge_of_the_second() -> None:
    s = series(totals={"sent": 1200, "acked": 1190, "bytes": 99_000, "connectFailures": 2})
    record = record_of(s, row(sent=100, devices=10, connected=9, inError=1, backlogBytes=512), "run-1", HUB_LABELS, {})
    main = build_points(record)[0]
    protocol = main.to_line_protocol()
    measurement_and_tags, fields, timestamp = parts(protocol)
    assert measurement_and_tags == (
        "iotix,fleet=env,model=env-sensor,protocol=mqtt,run_id=run-1,suite=Metrics.Export,test=Export\\ A\\ Fleet"
    )
    values = dict(f.split("=") for f in fields.split(","))
    assert set(values) == set(COUNTER_FIELDS.values()) | set(GAUGE_FIELDS.values())
    # counters come from the series' cumulative totals, not from the row's per-second deltas
    assert values["messages_sent_total"] == "1200i"
    assert values["messages_acked_total"] == "1190i"
    assert values["bytes_sent_total"] == "99000i"
    assert values["connect_failures_total"] == "2i"
    assert values["devices"] == "10i"
    assert values["devices_connected"] == "9i"
    assert values["devices_in_error"] == "1i"
    assert values["network_backlog_bytes"] == "512i"
    assert timestamp == "1796420201000"  # the row's ts, milliseconds


def test_latency_points_only_for_kinds_with_samples_in_seconds() -> None:
    record = record_of(series(), row(), "run-1", {}, {})
    latency = [line for line in lines(record) if line.startswith("iotix_latency,")]
    assert len(latency) == 1  # lateness only: request is None, e2e has count 0
    tags, fields, ts = parts(latency[0])
    assert "kind=lateness" in tags.split(",")
    values = dict(f.split("=") for f in fields.split(","))
    assert values.pop("count") == "100i"
    assert {k: float(v) for k, v in values.items()} == pytest.approx(
        {"p50_seconds": 0.0003, "p90_seconds": 0.0009, "p99_seconds": 0.0021, "max_seconds": 0.003}
    )
    assert ts == "1796420201000"


def test_one_failures_point_per_reason_with_the_cumulative_total() -> None:
    record = record_of(series(failures={"timeout": 3, "refused": 7}), row(), "run-1", {}, {})
    failures = sorted(line for line in lines(record) if line.startswith("iotix_failures,"))
    assert len(failures) == 2
    assert "reason=refused" in failures[0] and parts(failures[0])[1] == "total=7i"
    assert "reason=timeout" in failures[1] and parts(failures[1])[1] == "total=3i"
    assert record.points == 1 + 1 + 2


def test_user_tags_are_on_every_point_and_empty_hub_labels_are_left_out() -> None:
    record = record_of(series(failures={"timeout": 1}), row(), "run-9", {"suite": "", "test": ""}, {"team": "iot"})
    for line in lines(record):
        tags = parts(line)[0].split(",")
        assert "team=iot" in tags and "run_id=run-9" in tags
        assert not any(t.startswith(("suite=", "test=")) for t in tags)


def test_user_tags_may_not_replace_the_tags_of_iotix() -> None:
    with pytest.raises(ConfigurationError, match="'fleet' is set by IoTix"):
        InfluxExport("http://127.0.0.1:1", None, "", "iotix", tags={"fleet": "x"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "127.0.0.1:8428"}, "must start with http"),
        ({"bucket": ""}, "needs a bucket"),
        ({"interval_s": 0}, "more than 0 seconds"),
        ({"max_buffered": 0}, "at least 1"),
    ],
)
def test_unusable_settings_are_configuration_errors(kwargs: dict[str, Any], message: str) -> None:
    settings = {"url": "http://127.0.0.1:1", "token": None, "org": "", "bucket": "iotix", **kwargs}
    with pytest.raises(ConfigurationError, match=message):
        InfluxExport(**settings)


class Recorder:
    """Takes the place of the batching write API: remembers what it was given, writes nothing."""

    def __init__(self) -> None:
        self.written: list[list[str]] = []
        self.event = threading.Event()

    def write(self, bucket: str, org: str, record: list[Any]) -> None:
        self.written.append([p.to_line_protocol() for p in record])
        self.event.set()

    def close(self) -> None:
        pass


@pytest.fixture
def export() -> Any:
    ex = InfluxExport("http://127.0.0.1:1", TOKEN, "org", "iotix", interval_s=3600, max_buffered=10)
    recorder = Recorder()
    ex._write_api = recorder  # type: ignore[assignment]
    ex.recorder = recorder  # type: ignore[attr-defined]
    yield ex
    ex.close(timeout=0)


def pairs(n: int, failures: dict[str, int] | None = None) -> list[tuple[Any, dict[str, Any]]]:
    s = series(failures=failures)
    return [(s, row(ts=1796420201.0 + i)) for i in range(n)]


def test_points_beyond_the_bound_are_dropped_and_counted(export: Any) -> None:
    export.sink(pairs(6))  # 2 points each (main + lateness): 5 fit in 10
    stats = export.stats()
    assert stats["pointsQueued"] == 10
    assert stats["pointsDropped"] == 2
    assert stats["pointsWritten"] == stats["pointsFailed"] == 0


def test_points_handed_to_the_write_api_count_until_written_or_failed(export: Any) -> None:
    export.sink(pairs(5))
    export._write_buffered()
    assert sum(map(len, export.recorder.written)) == 10
    # handed over but not written yet: still waiting, so nothing more fits
    export.sink(pairs(1))
    assert export.stats()["pointsDropped"] == 2
    batch = "\n".join(export.recorder.written[0][:6]).encode()
    export._on_success(("iotix", "org", "ms"), batch)
    export._on_error(("iotix", "org", "ms"), "\n".join(export.recorder.written[0][6:]), OSError("refused"))
    stats = export.stats()
    assert stats == {
        "pointsQueued": 0,
        "pointsWritten": 6,
        "pointsFailed": 4,
        "pointsDropped": 2,
        "lastError": "OSError: refused",
    }
    export.sink(pairs(5))
    assert export.stats()["pointsQueued"] == 10  # room again


def test_the_sink_copies_the_totals_of_the_moment(export: Any) -> None:
    s = series(totals={"sent": 5})
    export.sink([(s, row())])
    s.totals["sent"] = 999  # the next second on the loop must not change what was buffered
    export._write_buffered()
    assert "messages_sent_total=5i" in export.recorder.written[0][0]


def test_problems_are_reported_once_and_never_show_the_token(export: Any) -> None:
    assert export.problems_since_last_call() is None
    export.sink(pairs(7))
    export._on_error(("iotix", "org", "ms"), b"a\nb", RuntimeError(f"401 Unauthorized: Token {TOKEN} refused"))
    message = export.problems_since_last_call()
    assert message is not None
    assert "4 points dropped" in message and "2 points failed" in message and "http://127.0.0.1:1" in message
    assert TOKEN not in message and "***" in message
    assert export.problems_since_last_call() is None
    assert TOKEN not in repr(export) and TOKEN not in str(export.stats())
    assert TOKEN not in repr(vars(export).get("tags"))


def test_close_writes_what_is_buffered_and_counts_the_unwritten_as_failed(export: Any) -> None:
    export.sink(pairs(3))
    stats = export.close(timeout=0.05)
    assert sum(map(len, export.recorder.written)) == 6
    assert stats["pointsQueued"] == 0
    assert stats["pointsFailed"] == 6  # nothing acknowledged them within the timeout
    assert "not written within" in stats["lastError"]
    export.sink(pairs(1))  # a late round after close is ignored
    assert export.stats()["pointsDropped"] == 0
    assert not export._thread.is_alive()
