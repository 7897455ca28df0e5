"""parse_fault: what a Robot user types becomes a checked FaultSpec in base units, or a FaultError that names
the fault, the target and the setting."""

from __future__ import annotations

import datetime

import pytest

from iotix.errors import ConfigurationError
from iotix.fault.spec import (
    KINDS,
    FaultError,
    FaultSpec,
    parse_fault,
    parse_rate,
    parse_seconds,
    parse_share,
    parse_size,
)

TARGET = "fleet 'env'"


def tcp(kind: str, name: str | None = None, **settings: object) -> FaultSpec:
    return parse_fault(kind, settings, name=name, target=TARGET, datagram=False)


def udp(kind: str, name: str | None = None, **settings: object) -> FaultSpec:
    return parse_fault(kind, settings, name=name, target=TARGET, datagram=True)


# --- units ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("200ms", 0.2),
        ("1.5s", 1.5),
        ("2 min", 120.0),
        ("500us", 0.0005),
        ("0.25", 0.25),
        (3, 3.0),
        ("1h", 3600.0),
        (datetime.timedelta(milliseconds=20), 0.02),
    ],
)
def test_times(text: object, seconds: float) -> None:
    assert parse_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "bytes_per_second"),
    [
        ("64kbps", 8_000),
        ("64 kbit/s", 8_000),
        ("64kbit", 8_000),
        ("1mbit", 125_000),
        ("1Mbps", 125_000),
        ("2gbit", 250_000_000),
        ("9600bps", 1_200),
        ("64000", 8_000),  # a bare number is bit/s, as in tc
        ("8KB/s", 8_000),
        ("1MB/s", 1_000_000),
        ("1KiB/s", 1_024),
        ("100B/s", 100),
    ],
)
def test_rates_are_bits_unless_written_as_bytes(text: str, bytes_per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(bytes_per_second)


@pytest.mark.parametrize(
    ("text", "size"), [("16KB", 16_000), ("16KiB", 16_384), ("1MiB", 1_048_576), ("512B", 512), (512, 512)]
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "share"), [("10%", 0.1), ("0.1", 0.1), (0.25, 0.25), ("0.5%", 0.005), (1, 1.0)])
def test_shares(text: object, share: float) -> None:
    assert parse_share(text) == pytest.approx(share)


# --- kinds ------------------------------------------------------------------------------------------------


def test_latency_is_normalised_with_defaults() -> None:
    spec = tcp("latency", latency="200ms", jitter="20ms", distribution="Normal", correlation="25%")
    assert spec == FaultSpec(
        name=None,
        kind="latency",
        direction="both",
        params={"latency": 0.2, "jitter": 0.02, "distribution": "normal", "correlation": 0.25},
    )
    assert spec.settings_text() == "200 ms ± 20 ms (normal), correlation 25 %"
    assert tcp("latency", latency="1s").params == {
        "latency": 1.0,
        "jitter": 0.0,
        "distribution": "uniform",
        "correlation": 0.0,
    }


def test_common_settings() -> None:
    spec = tcp("bandwidth", name="slow", rate="64kbps", direction="UPSTREAM", duration="30s", toxicity="40%")
    assert (spec.name, spec.direction, spec.duration, spec.toxicity) == ("slow", "upstream", 30.0, 0.4)
    assert spec.params == {"rate": 8_000, "shared": False}
    assert spec.acts_upstream() and not spec.acts_downstream()
    assert spec.settings_text() == "64 kbit/s per connection"
    assert tcp("blackhole", duration="None").duration is None


def test_every_kind_parses_with_its_settings() -> None:
    assert tcp("limit_data", bytes="16KB").params == {"bytes": 16_000}
    assert tcp("reset", after="2s").params == {"after": 2.0}
    assert tcp("reset_peer").params == {"after": 0.0}
    assert tcp("slow_close", delay="3s").params == {"delay": 3.0}
    assert tcp("timeout", timeout="5s").params == {"timeout": 5.0}
    assert tcp("slicer", average_size=64, size_variation=16, delay="1ms").params == {
        "average_size": 64,
        "size_variation": 16,
        "delay": 0.001,
    }
    assert tcp("mqtt", packet="PUBLISH", probability="10%").params == {
        "packets": frozenset({3}),
        "action": "drop",
        "probability": 0.1,
        "delay": 0.0,
        "after": 1,
    }
    assert tcp("mqtt", packets="PUBACK|PUBCOMP", action="delay", delay="2s").params["packets"] == {4, 7}
    assert tcp("mqtt", packet="PUBLISH", action="disconnect", after=3).params["after"] == 3
    assert udp("loss", probability="20%").params == {"model": "random", "probability": 0.2}
    assert udp("loss", model="gilbert", p="1%", r="30%", loss_bad="90%").params == {
        "model": "gilbert",
        "p": 0.01,
        "r": 0.3,
        "loss_good": 0.0,
        "loss_bad": 0.9,
    }
    assert udp("loss", model="gemodel", p="5%").params["r"] == pytest.approx(0.95)  # netem: r = 1 - p
    assert udp("duplicate", probability="1%").params == {"probability": 0.01}
    assert udp("corrupt", probability="0.1%").params == {"probability": 0.001}
    assert udp("reorder", probability="25%", gap=3).params == {"probability": 0.25, "gap": 3}
    assert udp("latency", latency="100ms").kind == "latency"
    assert set(KINDS) == {
        "latency",
        "bandwidth",
        "blackhole",
        "limit_data",
        "reset",
        "slow_close",
        "timeout",
        "slicer",
        "mqtt",
        "loss",
        "duplicate",
        "corrupt",
        "reorder",
    }


# --- errors -----------------------------------------------------------------------------------------------


def test_fault_error_is_a_configuration_error() -> None:
    assert issubclass(FaultError, ConfigurationError)


def test_negative_latency_names_fault_target_and_value() -> None:
    with pytest.raises(FaultError) as err:
        tcp("latency", name="lat-1", latency="-5ms")
    assert str(err.value) == "Network fault 'lat-1' on fleet 'env': latency must be >= 0, got '-5ms'."


def test_a_fault_without_a_name_is_named_by_its_kind() -> None:
    with pytest.raises(FaultError, match=r"^Network fault 'latency' on fleet 'env': jitter must be >= 0"):
        tcp("latency", latency="1s", jitter="-1ms")


def test_unknown_kind_lists_the_kinds() -> None:
    with pytest.raises(FaultError, match=r"unknown kind 'lagg'; the kinds are latency, bandwidth"):
        tcp("lagg")


def test_unknown_setting_says_what_the_kind_takes() -> None:
    expected = r"unknown setting 'rat' for bandwidth on TCP; it takes rate, shared, direction"
    with pytest.raises(FaultError, match=expected):
        tcp("bandwidth", rat="1mbit")


@pytest.mark.parametrize("kind", ["loss", "duplicate", "corrupt", "reorder"])
def test_datagram_kinds_on_tcp_say_what_tcp_does_instead(kind: str) -> None:
    with pytest.raises(FaultError) as err:
        tcp(kind, probability="10%")
    message = str(err.value)
    assert message.startswith(f"Network fault '{kind}' on fleet 'env': '{kind}' acts on datagrams")
    assert "retransmits" in message and "'latency'" in message and "'slicer'" in message
    assert "Add MQTT Fault" in message


@pytest.mark.parametrize("kind", ["reset", "slow_close", "timeout", "slicer", "mqtt"])
def test_tcp_kinds_on_udp_are_refused(kind: str) -> None:
    with pytest.raises(FaultError, match=rf"'{kind}' needs a TCP connection and fleet 'env' speaks UDP"):
        udp(kind)


def test_probability_over_100_percent() -> None:
    with pytest.raises(
        FaultError, match=r"'drops' on fleet 'env': probability must be between 0 and 100 %, got '150%'"
    ):
        udp("loss", name="drops", probability="150%")


def test_a_bare_number_above_one_is_not_guessed_as_percent() -> None:
    with pytest.raises(
        FaultError,
        match=r"probability must be a share like 10% or 0.1 \(a bare number .*write '10%' for percent\), got '10'",
    ):
        udp("loss", probability=10)


def test_zero_rate_points_at_blackhole() -> None:
    with pytest.raises(FaultError, match=r"rate must be > 0 \(use 'blackhole'.*got '0kbps'"):
        tcp("bandwidth", rate="0kbps")


def test_bad_units() -> None:
    with pytest.raises(FaultError, match=r"rate must be a rate like 64kbps, 1mbit or 8KB/s, got 'fast'\.$"):
        tcp("bandwidth", rate="fast")
    with pytest.raises(FaultError, match=r"latency must be a time like 200ms or 1.5s, got '5 parsecs'\.$"):
        tcp("latency", latency="5 parsecs")


@pytest.mark.parametrize("duration", ["-1s", "0"])
def test_duration_must_be_positive(duration: str) -> None:
    with pytest.raises(FaultError, match=rf"duration must be > 0 .*got '{duration}'"):
        tcp("blackhole", duration=duration)


def test_required_settings_are_named() -> None:
    with pytest.raises(FaultError, match="rate is required for bandwidth"):
        tcp("bandwidth")
    with pytest.raises(FaultError, match="latency is required for latency"):
        tcp("latency")
    with pytest.raises(FaultError, match="probability is required for loss"):
        udp("loss")
    with pytest.raises(FaultError, match="p is required for model=gilbert"):
        udp("loss", model="gilbert")
    with pytest.raises(FaultError, match="packet is required for mqtt"):
        tcp("mqtt")


def test_other_setting_errors() -> None:
    with pytest.raises(FaultError, match="direction must be upstream, downstream or both, got 'sideways'"):
        tcp("blackhole", direction="sideways")
    with pytest.raises(FaultError, match="distribution must be uniform or normal, got 'pareto'"):
        tcp("latency", latency="1s", distribution="pareto")
    with pytest.raises(FaultError, match=r"packet names no MQTT packet type 'PUBLISHED'"):
        tcp("mqtt", packet="PUBLISHED")
    with pytest.raises(FaultError, match="action must be drop, delay or disconnect, got 'explode'"):
        tcp("mqtt", packet="PUBLISH", action="explode")
    with pytest.raises(FaultError, match="action=delay needs delay > 0"):
        tcp("mqtt", packet="PUBACK", action="delay")
    with pytest.raises(FaultError, match="size_variation must be smaller than average_size"):
        tcp("slicer", average_size=10, size_variation=10)
    with pytest.raises(FaultError, match="gap must be >= 1"):
        udp("reorder", probability="10%", gap=0)
    with pytest.raises(FaultError, match="model=gilbert takes p"):
        udp("loss", model="gilbert", probability="10%")
    with pytest.raises(FaultError, match="p belongs to model=gilbert"):
        udp("loss", probability="10%", p="1%")
    with pytest.raises(FaultError, match="toxicity must be between 0 and 100 %"):
        tcp("blackhole", toxicity="120%")
    with pytest.raises(FaultError, match="the name must not be empty"):
        tcp("blackhole", name=" ")
