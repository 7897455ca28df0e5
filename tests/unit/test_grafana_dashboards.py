"""The Grafana dashboards and provisioning files of tools/grafana, checked without a Grafana server.

Structure: what Grafana needs to import a dashboard (uid, title, schema version, panels with unique ids on the
24-column grid, targets with unique refIds, datasource references through the ``${datasource}`` variable).
Queries: every PromQL expression and Flux query names only series, measurements, fields and labels that the
export and the endpoint produce (so a renamed metric breaks this test), with balanced brackets and the
dashboard's variables. tests/integration/test_grafana_queries.py runs the PromQL against a real store.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from iotix.observe.influx import (
    COUNTER_FIELDS,
    FAILURES_MEASUREMENT,
    GAUGE_FIELDS,
    LATENCY_FIELDS,
    LATENCY_MEASUREMENT,
    MEASUREMENT,
)

GRAFANA = Path(__file__).resolve().parents[2] / "tools" / "grafana"
PROMETHEUS_DASHBOARD = GRAFANA / "dashboards" / "iotix-prometheus.json"
INFLUX_DASHBOARD = GRAFANA / "dashboards" / "iotix-influxdb.json"

#: Every series name the export (via VictoriaMetrics) and the endpoint produce.
SERIES = (
    {f"{MEASUREMENT}_{f}" for f in (*COUNTER_FIELDS.values(), *GAUGE_FIELDS.values())}
    | {f"{LATENCY_MEASUREMENT}_{f}" for f in LATENCY_FIELDS.values()}
    | {f"{FAILURES_MEASUREMENT}_total"}
)
FIELDS = {
    MEASUREMENT: {*COUNTER_FIELDS.values(), *GAUGE_FIELDS.values()},
    LATENCY_MEASUREMENT: set(LATENCY_FIELDS.values()),
    FAILURES_MEASUREMENT: {"total"},
}
LABELS = {"fleet", "model", "protocol", "run_id", "kind", "reason", "suite", "test"}
PROMQL_FUNCTIONS = {"sum", "max", "min", "avg", "rate", "increase", "by", "without", "max_over_time", "histogram"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def balanced(text: str) -> bool:
    """Brackets balance outside string literals."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    for char in text:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
            continue
        if char in "\"'":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack and quote is None


def promql_targets() -> list[tuple[str, str]]:
    dashboard = load(PROMETHEUS_DASHBOARD)
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def flux_targets() -> list[tuple[str, str]]:
    dashboard = load(INFLUX_DASHBOARD)
    return [(panel["title"], target["query"]) for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.mark.parametrize(("path", "ds_type"), [(PROMETHEUS_DASHBOARD, "prometheus"), (INFLUX_DASHBOARD, "influxdb")])
def test_a_dashboard_has_what_grafana_needs_to_import_it(path: Path, ds_type: str) -> None:
    dashboard = load(path)
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert "id" not in dashboard or dashboard["id"] is None  # a provisioned dashboard gets its id from Grafana
    panels = dashboard["panels"]
    assert len(panels) >= 8
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids), "panel ids are unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("x", "y", "w", "h")), panel["title"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        mine = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"panel '{panel['title']}' overlaps another"
        cells |= mine
        assert panel["type"] in {"timeseries", "stat"}
        assert panel["datasource"] == {"type": ds_type, "uid": "${datasource}"}
        targets = panel["targets"]
        assert targets, f"panel '{panel['title']}' has no targets"
        refs = [t["refId"] for t in targets]
        assert len(set(refs)) == len(refs)
        for target in targets:
            assert target["datasource"] == {"type": ds_type, "uid": "${datasource}"}
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == ds_type
    for name in ("run_id", "fleet"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == {"type": ds_type, "uid": "${datasource}"}
        assert variables[name]["multi"] and variables[name]["includeAll"] and variables[name]["allValue"] == ".*"


def test_the_dashboards_have_the_panels_of_the_issue() -> None:
    for path in (PROMETHEUS_DASHBOARD, INFLUX_DASHBOARD):
        titles = {p["title"] for p in load(path)["panels"]}
        for wanted in (
            "Message rate",
            "Devices connected / in error",
            "Failures by reason",
            "Latency p50 / p90 / p99",
            "Connections",
            "Network faults",
            "Dropped",
        ):
            assert wanted in titles, f"{path.name} lacks '{wanted}'"


@pytest.mark.parametrize(("title", "expr"), promql_targets())
def test_every_promql_expression_names_known_series_and_labels(title: str, expr: str) -> None:
    assert balanced(expr), f"{title}: unbalanced brackets in {expr}"
    names = set(re.findall(r"\b(iotix_[a-z0-9_]+)\b", expr))
    assert names, f"{title}: no iotix series in {expr}"
    assert names <= SERIES, f"{title}: unknown series {names - SERIES}"
    for selector in re.findall(r"iotix_[a-z0-9_]+\{([^}]*)\}", expr):
        matchers = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', selector)
        assert {m[0] for m in matchers} == {"run_id", "fleet"}, f"{title}: selector {{{selector}}}"
        assert ("run_id", "=~", "$run_id") in matchers and ("fleet", "=~", "$fleet") in matchers
    for labels in re.findall(r"\bby \(([^)]*)\)", expr):
        assert {label.strip() for label in labels.split(",")} <= LABELS, f"{title}: grouping by {labels}"
    for function, series in re.findall(r"\b(rate|increase)\((iotix_[a-z0-9_]+)", expr):
        assert series.endswith("_total"), f"{title}: {function}() of the gauge {series}"
    ranges = re.findall(r"\[([^\]]+)\]", expr)
    assert all(r == "$__rate_interval" for r in ranges), f"{title}: ranges {ranges}"
    words = set(re.findall(r"\b([a-z_]+)\s*\(", expr))
    assert words <= PROMQL_FUNCTIONS, f"{title}: unexpected functions {words - PROMQL_FUNCTIONS}"


@pytest.mark.parametrize(("title", "query"), flux_targets())
def test_every_flux_query_names_known_measurements_and_fields(title: str, query: str) -> None:
    assert balanced(query), f"{title}: unbalanced brackets"
    assert query.startswith('from(bucket: "${bucket}")'), title
    assert "|> range(start: v.timeRangeStart, stop: v.timeRangeStop)" in query, title
    assert "r.run_id =~ /^${run_id:regex}$/" in query and "r.fleet =~ /^${fleet:regex}$/" in query, title
    measurements = re.findall(r'r\._measurement == "([^"]+)"', query)
    assert len(measurements) == 1 and measurements[0] in FIELDS, f"{title}: {measurements}"
    fields = set(re.findall(r'r\._field == "([^"]+)"', query))
    assert fields and fields <= FIELDS[measurements[0]], f"{title}: unknown fields {fields - FIELDS[measurements[0]]}"
    grouped = re.findall(r"group\(columns: \[([^\]]*)\]\)", query)
    for columns in grouped:
        assert {c.strip().strip('"') for c in columns.split(",")} <= LABELS | {"_field"}, f"{title}: {columns}"
    if "derivative(" in query:
        assert fields <= {*COUNTER_FIELDS.values(), "total"}, f"{title}: derivative of a gauge"


def test_the_influx_variables_are_flux_tag_value_queries() -> None:
    variables = {v["name"]: v for v in load(INFLUX_DASHBOARD)["templating"]["list"]}
    assert variables["bucket"]["type"] == "textbox" and variables["bucket"]["query"] == "iotix"
    for name in ("run_id", "fleet"):
        query = variables[name]["query"]
        assert balanced(query)
        assert 'import "influxdata/influxdb/schema"' in query
        assert f'schema.tagValues(bucket: "${{bucket}}", tag: "{name}"' in query


def test_the_prometheus_variables_are_label_values_of_a_counter() -> None:
    variables = {v["name"]: v for v in load(PROMETHEUS_DASHBOARD)["templating"]["list"]}
    assert variables["run_id"]["definition"] == "label_values(iotix_messages_sent_total, run_id)"
    assert variables["fleet"]["definition"] == 'label_values(iotix_messages_sent_total{run_id=~"$run_id"}, fleet)'
    for name in ("run_id", "fleet"):
        assert variables[name]["query"]["query"] == variables[name]["definition"]


def test_the_datasource_provisioning_file_is_valid() -> None:
    config = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "iotix.yaml").read_text())
    assert config["apiVersion"] == 1
    sources = {s["type"]: s for s in config["datasources"]}
    assert set(sources) == {"prometheus", "influxdb"}
    for source in sources.values():
        assert source["name"] and re.fullmatch(r"[a-z0-9-]+", source["uid"])
        assert source["access"] == "proxy"
        assert source["url"].startswith(("http://", "https://", "${"))
    assert sources["prometheus"]["jsonData"]["timeInterval"] == "1s"
    influx = sources["influxdb"]
    assert influx["jsonData"]["version"] == "Flux"
    assert influx["jsonData"]["defaultBucket"] == "iotix"
    # the token comes from Grafana's environment, never from the file
    assert re.fullmatch(r"\$\{[A-Z_]+\}", influx["secureJsonData"]["token"])
    assert sum(bool(s.get("isDefault")) for s in sources.values()) == 1


def test_the_dashboard_provider_loads_the_dashboards_folder() -> None:
    config = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "iotix.yaml").read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["name"] and provider["folder"] == "IoTix"
    assert provider["options"]["path"].startswith("/")
    readme = (GRAFANA / "README.md").read_text()
    assert provider["options"]["path"] in readme  # the README says where to put the JSON files
