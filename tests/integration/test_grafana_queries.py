"""Every PromQL query of the Grafana dashboard tools/grafana/dashboards/iotix-prometheus.json, run against a
real VictoriaMetrics after a real run exported to it (an MQTT fleet against Mosquitto, and an HTTP fleet whose
target refuses connections, so that failures by reason exist): each returns data, as Grafana would ask for it
(a range query with the dashboard's variables substituted). The variables' own queries return the run and
the fleets."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from harness import BrokerHarness

from iotix.observe.influx import InfluxExport
from iotix.services import (
    MetricsStore,
    find_mosquitto,
    find_victoria_metrics,
    pick_free_port,
    start_local_broker,
    start_local_metrics_store,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed"),
    pytest.mark.skipif(find_victoria_metrics() is None, reason="VictoriaMetrics is not installed"),
]

DASHBOARD = Path(__file__).resolve().parents[2] / "tools" / "grafana" / "dashboards" / "iotix-prometheus.json"
#: What Grafana puts in for its own variables with a 1 s datasource interval: $__interval is the step,
#: $__rate_interval max(4 x scrape interval, $__interval + scrape interval).
GRAFANA_VARIABLES = {"$__rate_interval": "4s", "$__interval": "1s"}


def telemetry(interval_ms: int) -> list[dict[str, Any]]:
    return [
        {
            "name": "temperature",
            "type": "number",
            "intervalMs": interval_ms,
            "generator": {"type": "random", "min": 10, "max": 30, "precision": 2},
        }
    ]


def mqtt_model() -> dict[str, Any]:
    return {
        "id": "dash-mqtt",
        "name": "dashboard MQTT sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {"host": "127.0.0.1", "port": 1883, "topicPattern": "dash/${deviceId}", "qos": 1},
        "telemetry": telemetry(100),
    }


def http_model(url: str) -> dict[str, Any]:
    return {
        "id": "dash-http",
        "name": "dashboard HTTP sensor",
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "http",
        "connection": {"url": url},
        "telemetry": telemetry(200),
    }


@pytest.fixture(scope="module")
def run() -> Iterator[tuple[MetricsStore, str, float, float]]:
    """One run of two fleets exported to a local VictoriaMetrics: (store, run id, start, end)."""
    broker = start_local_broker("mosquitto")
    store = start_local_metrics_store()
    h = BrokerHarness(broker)
    try:
        export = InfluxExport(store.url, None, "", "iotix", interval_s=0.5, hub=h.sim.metrics)
        h.rt.call(h.sim.metrics.add_sink, export.sink)
        started = time.time()
        mqtt = h.fleet("dash-mqtt", mqtt_model(), 10)
        http = h.fleet("dash-http", http_model(f"http://127.0.0.1:{pick_free_port()}/telemetry"), 3)
        h.start(mqtt)
        h.start(http)
        h.running(mqtt)
        time.sleep(6.0)
        h.stop(mqtt)
        h.stop(http)
        time.sleep(1.5)  # the hub's round with the fleets' last second
        h.rt.call(h.sim.metrics.remove_sink, export.sink)
        stats = export.close(10.0)
        assert stats["pointsWritten"] > 0 and stats["pointsFailed"] == stats["pointsDropped"] == 0, stats
        assert http.stats()["failuresByReason"], "the HTTP fleet was meant to fail"
        store.flush()
        yield store, h.sim.metrics.run_id, started, time.time()
    finally:
        h.close()
        store.stop()
        broker.stop()


def dashboard_targets() -> list[tuple[str, str, str]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        (panel["title"], target["refId"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def substitute(expr: str, run_id: str, fleet: str) -> str:
    text = expr.replace("$run_id", run_id).replace("$fleet", fleet)
    for name, value in GRAFANA_VARIABLES.items():
        text = text.replace(name, value)
    assert "$" not in text, f"a variable was left in {text}"
    return text


def wait_for_data(store: MetricsStore, promql: str, start: float, end: float) -> list[dict[str, Any]]:
    """The range query's series with at least one value; retried briefly (samples become searchable ~1 s
    after they are written)."""
    deadline = time.monotonic() + 5.0
    while True:
        series = [s for s in store.query_range(promql, start - 5, end + 5, step=1) if s.get("values")]
        if series or time.monotonic() >= deadline:
            return series
        store.flush()
        time.sleep(0.3)


@pytest.mark.parametrize(("title", "ref", "expr"), dashboard_targets())
@pytest.mark.parametrize("fleet", [".*", "dash-mqtt|dash-http"])
def test_every_query_of_the_dashboard_returns_data(
    run: tuple[MetricsStore, str, float, float], title: str, ref: str, expr: str, fleet: str
) -> None:
    store, run_id, start, end = run
    promql = substitute(expr, run_id, fleet)
    series = wait_for_data(store, promql, start, end)
    assert series, f"panel '{title}' query {ref} returned no data: {promql}"
    values = [float(v[1]) for s in series for v in s["values"]]
    assert all(v == v for v in values), f"panel '{title}' query {ref}: NaN in {promql}"  # noqa: PLR0124
    if "by (fleet" in expr and "reason" not in expr:
        assert {s["metric"].get("fleet") for s in series} == {"dash-mqtt", "dash-http"}, (title, ref)


def test_the_message_rate_panel_shows_the_configured_rate(run: tuple[MetricsStore, str, float, float]) -> None:
    store, run_id, start, end = run
    (expr,) = [e for title, ref, e in dashboard_targets() if title == "Message rate" and ref == "A"]
    series = wait_for_data(store, substitute(expr, run_id, "dash-mqtt"), start, end)
    rates = sorted(float(v[1]) for v in series[0]["values"])
    assert rates[-1] == pytest.approx(100.0, rel=0.15)  # 10 devices, 10 messages a second each


def test_the_failures_panel_names_the_reason(run: tuple[MetricsStore, str, float, float]) -> None:
    store, run_id, start, end = run
    (expr,) = [e for title, _, e in dashboard_targets() if title == "Failures by reason"]
    series = wait_for_data(store, substitute(expr, run_id, ".*"), start, end)
    reasons = {(s["metric"]["fleet"], s["metric"]["reason"]) for s in series}
    assert ("dash-http", "connection_error") in reasons  # then the circuit opens: circuit_open
    assert {fleet for fleet, _ in reasons} == {"dash-http"}


def test_the_variables_list_the_run_and_the_fleets(run: tuple[MetricsStore, str, float, float]) -> None:
    store, run_id, start, _ = run
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"}
    found = {}
    for name, definition in variables.items():
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", definition)
        assert match, definition
        selector, label = match.groups()
        selector = selector.replace("$run_id", run_id)
        response = requests.get(
            f"{store.url}/api/v1/label/{label}/values",
            params={"match[]": selector, "start": f"{start - 60:.0f}"},
            timeout=5,
        )
        response.raise_for_status()
        found[name] = response.json()["data"]
    assert run_id in found["run_id"]
    assert set(found["fleet"]) == {"dash-mqtt", "dash-http"}
