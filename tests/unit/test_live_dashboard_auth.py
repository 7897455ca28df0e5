"""The live dashboard's pure parts: token checks, the snapshot it serves, a page that needs nothing from elsewhere."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from iotix.errors import ConfigurationError
from iotix.observe.live import (
    LiveDashboard,
    check_token,
    content_security_policy,
    fleet_entry,
    page_html,
    snapshot,
    sse,
    token_matches,
)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cr3t-T0ken_abcdef"


# -- the token --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "authorization"),
    [
        (TOKEN, None),
        (None, f"Bearer {TOKEN}"),
        (None, f"bearer {TOKEN}"),
        (None, f"  Bearer   {TOKEN}  "),
        ("wrong", f"Bearer {TOKEN}"),  # either place may carry it
        (TOKEN, "Bearer wrong"),
    ],
)
def test_the_token_in_the_query_or_as_bearer_credentials_is_accepted(query: str | None, authorization: str | None):
    assert token_matches(TOKEN, query, authorization)


@pytest.mark.parametrize(
    ("query", "authorization"),
    [
        (None, None),
        ("", None),
        (None, ""),
        (TOKEN[:-1], None),  # a prefix
        (TOKEN + "x", None),  # a longer value
        (TOKEN.upper(), None),  # case matters
        (None, f"Basic {TOKEN}"),  # another scheme
        (None, TOKEN),  # no scheme
        (None, f"Token {TOKEN}"),
        ("ünïcode-☃", "Bearer ünïcode-☃"),  # non-ASCII input is compared, not an error
        ("\udcff", None),  # a lone surrogate (aiohttp can hand one over from a percent-escape)
    ],
)
def test_a_missing_or_wrong_token_is_refused(query: str | None, authorization: str | None):
    assert not token_matches(TOKEN, query, authorization)


def test_an_empty_expected_token_matches_nothing():
    assert not token_matches("", "", "Bearer ")


def test_the_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch):
    from iotix.observe import live

    compared: list[tuple[bytes, bytes]] = []
    real = live.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(live.hmac, "compare_digest", spy)
    assert token_matches(TOKEN, TOKEN, f"Bearer {TOKEN}x")
    # both offered values are compared (no early exit that tells which one matched), as bytes
    assert compared == [(TOKEN.encode(), TOKEN.encode()), ((TOKEN + "x").encode(), TOKEN.encode())]


@pytest.mark.parametrize("bad", ["short", "has space-12345", "tab\tin-the-middle", "bell\x07-123456"])
def test_an_unusable_given_token_is_refused_without_repeating_it(bad: str):
    with pytest.raises(ConfigurationError) as error:
        check_token(bad)
    assert bad not in str(error.value)
    assert "token" in str(error.value)


def test_a_generated_token_is_random_and_long_and_not_in_the_repr_or_the_public_url():
    hub = SimpleNamespace(published={})
    first, second = LiveDashboard(hub), LiveDashboard(hub)
    assert first.token != second.token
    assert len(first.token) >= 20  # token_urlsafe(16): 22 characters, 128 bits
    assert first.token not in repr(first) and first.token not in first.public_url
    assert first.url.endswith(f"?token={first.token}")
    given = LiveDashboard(hub, token=TOKEN)
    assert given.token == TOKEN and TOKEN not in repr(given)


@pytest.mark.parametrize(
    ("kwargs", "named"), [({"port": 70000}, "port"), ({"port": -1}, "port"), ({"host": ""}, "host")]
)
def test_bad_addresses_are_configuration_errors(kwargs: dict[str, Any], named: str):
    with pytest.raises(ConfigurationError, match=named):
        LiveDashboard(SimpleNamespace(published={}), **kwargs)


def test_the_default_host_is_loopback_and_a_wildcard_is_reached_on_loopback():
    hub = SimpleNamespace(published={})
    assert LiveDashboard(hub).host == "127.0.0.1"
    assert LiveDashboard(hub, host="0.0.0.0", port=8089).local_url == "http://127.0.0.1:8089/"
    assert LiveDashboard(hub, host="::", port=8089).local_url == "http://[::1]:8089/"


# -- the page ---------------------------------------------------------------------------------------------------


def test_the_page_is_self_contained_and_names_no_other_origin():
    html = page_html()
    # no absolute or protocol-relative URL at all (not even the SVG namespace: the HTML parser supplies it)
    assert not re.search(r"https?:|wss?:|ftp:|//[A-Za-z0-9.-]+\.[A-Za-z]{2,}", html)
    # nothing loaded from anywhere: no src/href attributes, no CSS imports or url(), no @font-face
    assert not re.search(r"\b(src|href|srcset|action|poster)\s*=", html, flags=re.I)
    assert not re.search(r"@import|url\(|@font-face", html, flags=re.I)
    # the only things the script fetches are the page's own relative paths
    assert 'new EventSource("/events?token="' in html
    assert not re.search(r"\bfetch\(|XMLHttpRequest|WebSocket|importScripts|\bimport\(", html)


def test_the_page_reads_its_token_from_the_address_and_gives_the_test_stable_hooks():
    html = page_html()
    assert 'new URLSearchParams(location.search).get("token")' in html
    assert "encodeURIComponent(token)" in html
    for hook in (
        'class="fleet"',
        "card.dataset.fleet",
        'class="value rate"',
        "data-points",
        'data-chart="rate"',
        'data-chart="connected"',
        'data-chart="p99"',
        'id="status"',
        'class="faults"',
    ):
        assert hook in html, hook
    # names reach the DOM as text, never as markup
    assert "innerHTML" not in html and "insertAdjacentHTML" not in html and "document.write" not in html


def test_the_content_security_policy_allows_exactly_the_inline_style_and_script():
    html = page_html()
    policy = dict(part.split(" ", 1) for part in content_security_policy(html).split("; "))
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        assert len(bodies) == 1
        digest = base64.b64encode(hashlib.sha256(bodies[0].encode()).digest()).decode()
        assert policy[directive] == f"'sha256-{digest}'"


def test_the_page_is_package_data():
    """A wheel carries live_page.html only when pyproject's package-data names it."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = data["tool"]["setuptools"]["package-data"]["iotix"]
    assert any(Path("observe/live_page.html").match(p) for p in patterns), patterns


# -- what it serves ---------------------------------------------------------------------------------------------


def _row(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "time": "2026-12-06T21:50:01Z", "ts": 1796420201.0, "elapsed": 12.0,
        "sent": 100, "acked": 98, "failed": 2, "failedByReason": {"timeout": 2}, "dropped": 0, "retries": 0,
        "bytes": 12345, "devices": 10, "connected": 9, "inError": 1, "queued": 0, "networkFaults": 1,
        "latenessMs": {"count": 100, "p50": 0.3, "p90": 0.9, "p99": 2.1, "max": 3.0},
        "requestLatencyMs": None,
        "e2eLatencyMs": {"count": 0, "p50": None, "p90": None, "p99": None, "max": None},
    }  # fmt: skip
    row.update(over)
    return row


def _hub(**fleets: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(published=fleets, run_id="20261206-213700-ab12", labels={"suite": "S"}, series={})


def test_a_fleet_entry_has_the_figures_of_its_last_row_and_only_the_latency_kinds_present():
    entry = fleet_entry(
        "env",
        {"fleet": "env", "model": "env-sensor", "protocol": "mqtt"},
        _row(),
        totals={"sent": 1200, "acked": 1190, "failed": 10},
        faults=[{"name": "latency-1", "kind": "latency", "summary": "latency 200ms", "devices": 3, "extra": "x"}],
        state="running",
    )
    assert entry["rate"] == 100 and entry["acked"] == 98 and entry["failed"] == 2
    assert (entry["devices"], entry["connected"], entry["inError"]) == (10, 9, 1)
    assert entry["latency"] == {"lateness": {"count": 100, "p50": 0.3, "p99": 2.1, "max": 3.0}}  # e2e had count 0
    assert entry["totals"] == {"sent": 1200, "acked": 1190, "failed": 10}
    assert entry["faults"] == [
        {"name": "latency-1", "kind": "latency", "summary": "latency 200ms", "devices": 3, "direction": ""}
    ]
    assert entry["state"] == "running" and entry["model"] == "env-sensor" and entry["protocol"] == "mqtt"


def test_the_snapshot_lists_fleets_by_name_and_is_strict_json():
    hub = _hub(
        zeta={"labels": {"model": "m"}, "row": _row(sent=float("nan")), "totals": {}, "faults": [], "state": "running"},
        alpha={"labels": {"model": "m"}, "row": None, "totals": {}, "faults": [], "state": "created"},
    )
    data = snapshot(hub)
    assert [f["name"] for f in data["fleets"]] == ["alpha", "zeta"]
    assert data["runId"] == "20261206-213700-ab12" and data["labels"] == {"suite": "S"}
    assert data["fleets"][0]["rate"] is None and data["fleets"][0]["latency"] == {}  # no row yet
    assert data["fleets"][1]["rate"] is None  # NaN is not JSON
    json.dumps(data, allow_nan=False)


def test_a_deleted_fleet_is_marked():
    hub = _hub(old={"labels": {}, "row": _row(), "totals": {}, "faults": [], "state": "deleted"})
    assert snapshot(hub)["fleets"][0]["deleted"] is True


def test_an_event_is_one_data_line():
    event = sse({"text": "two\nlines"}, "history").decode()
    assert event == 'event: history\ndata: {"text":"two\\nlines"}\n\n'
    assert sse([1]).decode() == "data: [1]\n\n"
