"""Named link profiles (iotix.fault.profiles): the data is sane, every profile is a valid set of faults as the
user would type them, and TCP targets get no loss."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest

from iotix.errors import ConfigurationError
from iotix.fault.profiles import PROFILES, LinkProfile, profile, profile_faults, profiles_table

#: The profiles the issue asks for by name (more may exist).
REQUIRED = ("gprs", "edge", "3g", "4g", "lte-m", "nb-iot", "satellite", "flaky-wifi")

#: The spec module is written in parallel; its helper creates this file once parse_fault is usable.
CORE_READY = os.path.exists("/tmp/fault_core_ready") or os.path.exists("/tmp/fault_core_done")


def test_required_profiles_exist_with_unique_lowercase_names() -> None:
    assert set(REQUIRED) <= set(PROFILES)
    names = [p.name for p in PROFILES.values()]
    assert len(names) == len(set(names))
    for key, p in PROFILES.items():
        assert key == p.name
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", p.name), p.name


@pytest.mark.parametrize("name", list(PROFILES))
def test_figures_are_positive_and_plausible(name: str) -> None:
    p = PROFILES[name]
    assert 0 < p.latency_s < 5, "one-way latency in seconds"
    assert 0 < p.jitter_s <= p.latency_s, "jitter never exceeds the latency it widens"
    assert 0 < p.loss < 0.5
    assert p.up_bps >= 1_000 and p.down_bps >= 1_000, "rates are bit/s, not kbit/s"
    assert p.description.strip()


@pytest.mark.parametrize("name", list(PROFILES))
def test_every_profile_names_its_sources(name: str) -> None:
    p = PROFILES[name]
    assert p.sources and all(s.strip() for s in p.sources)
    figures = " ".join(p.sources).lower()
    for figure in ("latency", "jitter", "loss", "rate"):
        assert figure in figures, f"{name}: no source line for {figure}"


def test_profiles_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PROFILES["3g"].latency_s = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        PROFILES["wimax"] = PROFILES["3g"]  # type: ignore[index]


def test_rtt_figures_are_halved() -> None:
    # WebPageTest "3G": 300 ms RTT -> 150 ms each way; Ookla HughesNet 724 ms RTT -> 362 ms each way.
    assert profile("3g").latency_s == pytest.approx(0.150)
    assert profile("satellite").latency_s == pytest.approx(0.362)


def test_lookup_ignores_case_and_spaces() -> None:
    assert profile(" NB-IoT ") is PROFILES["nb-iot"]


def test_unknown_profile_lists_the_known_names() -> None:
    with pytest.raises(ConfigurationError) as err:
        profile("wimax")
    message = str(err.value)
    assert "'wimax'" in message
    for name in PROFILES:
        assert name in message
    with pytest.raises(ConfigurationError):
        profile_faults("wimax", datagram=True)


def test_faults_on_udp_include_loss_both_ways() -> None:
    assert profile_faults("gprs", datagram=True) == [
        ("latency", {"latency": "250ms", "jitter": "100ms"}, "both"),
        ("bandwidth", {"rate": "20kbps"}, "upstream"),
        ("bandwidth", {"rate": "50kbps"}, "downstream"),
        ("loss", {"probability": "2%"}, "both"),
    ]


@pytest.mark.parametrize("name", list(PROFILES))
def test_faults_on_tcp_leave_loss_out_and_add_nothing(name: str) -> None:
    udp = profile_faults(name, datagram=True)
    tcp = profile_faults(name, datagram=False)
    assert tcp == [f for f in udp if f[0] != "loss"]
    assert [kind for kind, _, _ in tcp] == ["latency", "bandwidth", "bandwidth"]


@pytest.mark.parametrize("name", list(PROFILES))
def test_fault_names_derived_from_kind_and_direction_are_unique(name: str) -> None:
    # the Chaos side names each added fault '<profile>-<kind>-<direction>'
    keys = [(kind, direction) for kind, _, direction in profile_faults(name, datagram=True)]
    assert len(keys) == len(set(keys))


def test_settings_are_typed_strings() -> None:
    settings = {k: v for _, s, _ in profile_faults("5g", datagram=True) for k, v in s.items()}
    assert settings == {"latency": "16ms", "jitter": "5ms", "rate": "166.13mbps", "probability": "0.0001%"}


def test_table_has_a_row_and_sources_per_profile() -> None:
    table = profiles_table()
    lines = table.splitlines()
    assert lines[0].startswith("| profile |")
    rows = [line for line in lines if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(PROFILES)
    assert all(row.count("|") == lines[0].count("|") for row in rows)
    for p in PROFILES.values():
        assert f"- `{p.name}`:" in table
        assert p.sources[0] in table


@pytest.mark.skipif(not CORE_READY, reason="iotix.fault.spec.parse_fault not ready yet (/tmp/fault_core_ready)")
@pytest.mark.parametrize("datagram", [True, False])
@pytest.mark.parametrize("name", list(PROFILES))
def test_every_profile_parses_as_the_user_would_type_it(name: str, datagram: bool) -> None:
    from iotix.fault.spec import parse_fault

    p: LinkProfile = PROFILES[name]
    rates = {}
    for kind, settings, direction in profile_faults(name, datagram=datagram):
        spec = parse_fault(
            kind,
            {**settings, "direction": direction},
            name=f"{name}-{kind}-{direction}",
            target="fleet 'profiles'",
            datagram=datagram,
        )
        assert spec.kind == kind
        assert spec.direction == direction
        if kind == "latency":
            assert spec.params["latency"] == pytest.approx(p.latency_s)
            assert spec.params["jitter"] == pytest.approx(p.jitter_s)
        elif kind == "bandwidth":
            rates[direction] = spec.params["rate"]
        elif kind == "loss":
            assert spec.params["probability"] == pytest.approx(p.loss)
    # parse_fault normalises rates to bytes per second; the profile holds bits per second
    assert rates == {"upstream": pytest.approx(p.up_bps / 8), "downstream": pytest.approx(p.down_bps / 8)}
