"""Named network link profiles for ``Apply Network Profile``: gprs, edge, 3g, 4g, 5g, lte-m, nb-iot, satellite,
dsl and flaky-wifi, each with the published reference every figure comes from.

Pure data and string formatting: no loop, no sockets. :func:`profile_faults` turns a profile into the faults a
user would add by hand (``Add Network Fault``), so a profile is nothing more than a documented shortcut and
everything it does shows up in ``Get Network Faults``.

How the figures are read:

- ``latency_s`` is ONE-WAY. The fault layer delays each direction by the latency it is given, so a round trip
  through a ``latency`` fault with direction ``both`` costs twice the figure. Most references (WebPageTest,
  Lighthouse, DevTools, Ookla, netem wrappers such as comcast) quote a round-trip time (RTT): those are halved
  here, and the comment of each profile says so.
- ``jitter_s`` widens the one-way latency by up to that much either way (the engine's ``uniform`` distribution,
  as netem's ``delay TIME JITTER``). Few references publish jitter; where none does, the figure is an IoTix
  modelling choice and its source line says exactly that.
- ``loss`` is the share of datagrams lost in EACH direction (as netem and comcast drop on egress). It applies to
  UDP (CoAP) only. On TCP, the link layer and TCP retransmit a lost segment, so a real lossy link shows up as
  extra latency and stalls, never as a missing byte: a profile applied to a TCP target (MQTT, HTTP, Kafka)
  leaves the loss out and adds nothing in its place; use ``latency`` with more ``jitter``, ``slicer``, or
  ``Add MQTT Fault`` (dropping whole MQTT packets) to model it yourself.
- ``up_bps`` / ``down_bps`` are bits per second; upstream is device -> target, downstream is target -> device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from iotix.fault.spec import FaultError

# The references, one constant each so every profile names the same source the same way.
WPT = (
    "WebPageTest connectivity profiles, www/settings/connectivity.ini.sample "
    "(https://github.com/WPO-Foundation/webpagetest/blob/master/www/settings/connectivity.ini.sample; "
    "'latency' there is the RTT)"
)
FIREFOX = (
    "Firefox DevTools network throttling presets "
    "(https://github.com/mozilla-firefox/firefox/blob/main/devtools/docs/user/network_monitor/throttling/index.rst)"
)
COMCAST = (
    "comcast 'Network Condition Profiles' table, netem-based (https://github.com/tylertreat/comcast#network-"
    "condition-profiles; its latency is added once per round trip, so it is read as RTT)"
)
LOADERO = (
    "Loadero network condition presets, latency/jitter/loss per mode "
    "(https://wiki.loadero.com/test-creation/participant-configuration/network-conditions/)"
)
LIGHTHOUSE = (
    "Lighthouse throttling docs: mobile preset 150 ms RTT, 1.6 Mbps down / 750 kbps up, no loss, the same figures "
    "as WebPageTest '3G Fast' (https://github.com/GoogleChrome/lighthouse/blob/main/docs/throttling.md)"
)
PERFECTO = (
    "Perfecto network virtualization, 'Unstable Network' level: 3 % loss "
    "(https://help.perfecto.io/perfecto-help/content/perfecto/automation-testing/network_virtualization_update_fr_.htm)"
)
QCI = (
    "3GPP TS 23.203 table 6.1.7 (standardized QCI characteristics): default non-GBR bearers QCI 6/8/9 have a "
    "packet error loss rate of 1e-6; residual radio loss is retransmitted (HARQ/RLC) and shows up as delay"
)
FIVEQI = "3GPP TS 23.501 table 5.7.4-1: default 5QI 9 (non-GBR) packet error rate 1e-6"
TR45820 = "3GPP TR 45.820 (Cellular IoT study, Rel-13): latency target 10 s or less for an uplink exception report"
CATM1 = (
    "3GPP Rel-13 UE category M1 (TS 36.306): 1 Mbps peak in full duplex; 300 kbps down / 375 kbps up for the "
    "half-duplex (HD-FDD) modules most devices use, scheduling included "
    "(https://www.rfwireless-world.com/Terminology/Difference-between-LTE-M-device-categories-Cat-0-vs-Cat-M1-vs-"
    "Cat-M2.html)"
)
CATNB1 = (
    "3GPP Rel-13 UE category NB1 (TS 36.306): peak 26 kbps down, 62.5 kbps up (multi-tone), half duplex; "
    "latency range 1.6-10 s (https://blog.mbedded.ninja/electronics/communication-protocols/cellular, "
    "https://www.5g6gacademy.com/courses/cellular-iot/lesson-29.2.2)"
)
CIOT_LATENCY = (
    "RCR Wireless, 'NB-IoT and LTE CAT-M1 field measurements and SLA verification' (2017): latency Cat-M1 "
    "10-15 ms, NB-IoT 100 ms to 8 s (https://www.rcrwireless.com/20171120/internet-of-things/"
    "nb-iot-lte-cat-m1-field-measurements-sla-verification)"
)
LTEM_WHITEPAPER = (
    "'Evaluation of LTE-M towards 5G IoT requirements' white paper (industry group, against 3GPP TR 45.820): "
    "message latency 0.1 s at the edge of normal coverage, 6.2 s in extreme coverage"
)
NBIOT_MEASURED = (
    "Ugwuanyi, Paul, Irvine, 'Survey of IoT for Developing Countries: Performance Analysis of LoRaWAN and "
    "Cellular NB-IoT Networks', Electronics 10(18) 2224, 2021 (https://doi.org/10.3390/electronics10182224): "
    "837 ms measured latency on a commercial NB-IoT network"
)
OOKLA_SAT = (
    "Ookla, 'How Starlink's Satellite Internet Stacks Up Against HughesNet and Viasat' (Q2 2021 Speedtest data): "
    "HughesNet (GEO) median 19.73 Mbps down, 2.43 Mbps up, 724 ms latency (RTT) "
    "(https://www.ookla.com/articles/starlink-hughesnet-viasat-performance-q2-2021)"
)
G114 = (
    "ITU-T G.114 (one-way transmission time): 400 ms one-way is the general planning limit; a GEO hop alone "
    "(35,786 km up and down at the speed of light) is at least 239 ms one-way before any queueing"
)
OOKLA_5G = (
    "Ookla, 'Growing and Slowing: The State of 5G Worldwide in 2021' (20 December 2021): Q3 2021 global median 5G "
    "166.13 Mbps down, 21.08 Mbps up"
)
OOKLA_5G_LATENCY = (
    "Ookla Q1 2021 via RCR Wireless, 'Ookla speed tests peg T-Mo as having fastest 5G': US operators' median "
    "latency 32-33 ms (RTT) (http://www.rcrwireless.com/20210416/test-and-measurement/"
    "ookla-speed-tests-peg-t-mo-as-having-fastest-5g)"
)


def modelled(what: str) -> str:
    """The source line of a figure that no reference publishes: say so, and how it was chosen."""
    return f"IoTix modelling choice, no published figure: {what}"


@dataclass(frozen=True)
class LinkProfile:
    """One named link: one-way latency and jitter (seconds), datagram loss per direction (0..1), rates (bit/s).

    ``sources`` holds one line per figure (or group of figures) naming the published reference it comes from.
    """

    name: str
    description: str
    latency_s: float
    jitter_s: float
    loss: float
    up_bps: float
    down_bps: float
    sources: tuple[str, ...]


_PROFILES = (
    # GPRS (2.5G). Firefox DevTools "GPRS": 50 kbps down, 20 kbps up, 500 ms latency; comcast "GPRS (good)":
    # 500 ms, 50 kbps, 2 % loss. 500 ms RTT -> 250 ms one way. Jitter: Loadero "GPRS" 100 ms.
    LinkProfile(
        name="gprs",
        description="GPRS (2.5G), good signal: 50 kbps down / 20 kbps up, 500 ms RTT, 2 % loss",
        latency_s=0.250,
        jitter_s=0.100,
        loss=0.02,
        up_bps=20_000,
        down_bps=50_000,
        sources=(
            f"latency 500 ms RTT (halved), rates 50/20 kbps: {FIREFOX}",
            f"latency 500 ms, loss 2 %: {COMCAST}, 'GPRS (good)'",
            f"jitter 100 ms: {LOADERO}, 'GPRS'",
        ),
    ),
    # EDGE (2.75G). WebPageTest "Mobile Edge": 240 kbps down, 200 kbps up, 840 ms RTT -> 420 ms one way.
    # Loss: comcast "EDGE (good)" 1.5 %. Jitter: Loadero "Edge" 100 ms.
    LinkProfile(
        name="edge",
        description="EDGE (2.75G): 240 kbps down / 200 kbps up, 840 ms RTT, 1.5 % loss",
        latency_s=0.420,
        jitter_s=0.100,
        loss=0.015,
        up_bps=200_000,
        down_bps=240_000,
        sources=(
            f"latency 840 ms RTT (halved), rates 240/200 kbps: {WPT}, '[Edge]'",
            f"loss 1.5 %: {COMCAST}, 'EDGE (good)'",
            f"jitter 100 ms: {LOADERO}, 'Edge'",
        ),
    ),
    # 3G (UMTS/HSPA). WebPageTest "3G": 1.6 Mbps down, 768 kbps up, 300 ms RTT -> 150 ms one way (WebPageTest
    # "3G Fast" / Lighthouse use 150 ms RTT with the same rates). Loss: comcast "3G/HSDPA (good)" 1.5 %.
    # Jitter: Loadero "3G" 50 ms.
    LinkProfile(
        name="3g",
        description="3G (UMTS/HSPA): 1.6 Mbps down / 768 kbps up, 300 ms RTT, 1.5 % loss",
        latency_s=0.150,
        jitter_s=0.050,
        loss=0.015,
        up_bps=768_000,
        down_bps=1_600_000,
        sources=(
            f"latency 300 ms RTT (halved), rates 1.6 Mbps/768 kbps: {WPT}, '[3G]'",
            f"same rates with 150 ms RTT ('3G Fast'): {LIGHTHOUSE}",
            f"loss 1.5 %: {COMCAST}, '3G/HSDPA (good)'",
            f"jitter 50 ms: {LOADERO}, '3G'",
        ),
    ),
    # 4G (LTE), a busy or average cell. WebPageTest "4G": 9 Mbps both ways, 170 ms RTT -> 85 ms one way.
    # Loss 0.2 % and jitter 5 ms down / 15 ms up (mean 10 ms): Loadero "4G".
    LinkProfile(
        name="4g",
        description="4G (LTE), average cell: 9 Mbps both ways, 170 ms RTT, 0.2 % loss",
        latency_s=0.085,
        jitter_s=0.010,
        loss=0.002,
        up_bps=9_000_000,
        down_bps=9_000_000,
        sources=(
            f"latency 170 ms RTT (halved), rates 9/9 Mbps: {WPT}, '[4G]'",
            f"loss 0.2 %, jitter 5 ms in / 15 ms out (the mean, 10 ms, both ways): {LOADERO}, '4G'",
        ),
    ),
    # 5G (NR, mostly non-standalone). Rates: Ookla Q3 2021 global 5G medians 166.13 / 21.08 Mbps. Latency:
    # Ookla Q1 2021 US operators' median 32-33 ms RTT -> 16 ms one way. Loss: 3GPP 5QI 9 target (1e-6).
    # Jitter: no published figure, 5 ms chosen (a third of the one-way latency).
    LinkProfile(
        name="5g",
        description="5G (NR), global median: 166 Mbps down / 21 Mbps up, 32 ms RTT",
        latency_s=0.016,
        jitter_s=0.005,
        loss=1e-6,
        up_bps=21_080_000,
        down_bps=166_130_000,
        sources=(
            f"rates 166.13/21.08 Mbps: {OOKLA_5G}",
            f"latency 32 ms RTT (halved): {OOKLA_5G_LATENCY}",
            f"loss 1e-6: {FIVEQI}",
            modelled("jitter 5 ms, about a third of the one-way latency"),
        ),
    ),
    # LTE-M (Cat-M1, half duplex). Rates: 300 kbps down / 375 kbps up (HD-FDD, 3GPP Rel-13 Cat M1).
    # Latency: 0.1 s message latency at the edge of normal coverage (LTE-M white paper against TR 45.820),
    # read as one way (air interface alone is 10-15 ms). Loss: QCI 9 target 1e-6. Jitter: modelled, 50 ms.
    LinkProfile(
        name="lte-m",
        description="LTE-M (Cat-M1, half duplex), edge of normal coverage: 300 kbps down / 375 kbps up, 100 ms one way",
        latency_s=0.100,
        jitter_s=0.050,
        loss=1e-6,
        up_bps=375_000,
        down_bps=300_000,
        sources=(
            f"rates 300/375 kbps: {CATM1}",
            f"latency 100 ms one way: {LTEM_WHITEPAPER}",
            f"air-interface latency 10-15 ms (the floor): {CIOT_LATENCY}",
            f"loss 1e-6: {QCI}",
            modelled("jitter 50 ms, half the one-way latency (scheduling and HARQ repetitions)"),
        ),
    ),
    # NB-IoT (Cat-NB1, half duplex). Rates: 26 kbps down / 62.5 kbps up (3GPP Rel-13 Cat NB1 peaks). Latency:
    # 1.6-10 s is the range quoted for Cat-NB1 (TR 45.820 targets <= 10 s); 1.6 s RTT -> 800 ms one way, which
    # matches the 837 ms measured by Ugwuanyi et al. on a commercial network. Loss: QCI 9 target 1e-6.
    # Jitter: modelled, 400 ms (coverage-class repetitions make delay vary by seconds: 100 ms to 8 s measured).
    LinkProfile(
        name="nb-iot",
        description="NB-IoT (Cat-NB1, half duplex), good coverage: 26 kbps down / 62.5 kbps up, 1.6 s RTT",
        latency_s=0.800,
        jitter_s=0.400,
        loss=1e-6,
        up_bps=62_500,
        down_bps=26_000,
        sources=(
            f"rates 26/62.5 kbps, latency range 1.6-10 s (lower bound as RTT, halved): {CATNB1}",
            f"latency target: {TR45820}",
            f"latency measured: {NBIOT_MEASURED}",
            f"latency spread 100 ms to 8 s: {CIOT_LATENCY}",
            f"loss 1e-6: {QCI}",
            modelled("jitter 400 ms, half the one-way latency"),
        ),
    ),
    # Satellite, geostationary (HughesNet, Viasat). Ookla Q2 2021 HughesNet medians: 19.73 Mbps down,
    # 2.43 Mbps up, 724 ms RTT -> 362 ms one way (ITU-T G.114: a GEO hop alone is ~250 ms one way).
    # Loss: comcast "Satellite" 0.2 %. Jitter: modelled, 50 ms.
    LinkProfile(
        name="satellite",
        description="Satellite, geostationary (GEO): 19.7 Mbps down / 2.4 Mbps up, 724 ms RTT, 0.2 % loss",
        latency_s=0.362,
        jitter_s=0.050,
        loss=0.002,
        up_bps=2_430_000,
        down_bps=19_730_000,
        sources=(
            f"latency 724 ms RTT (halved), rates 19.73/2.43 Mbps: {OOKLA_SAT}",
            f"propagation floor: {G114}",
            f"loss 0.2 %: {COMCAST}, 'Satellite'",
            modelled("jitter 50 ms (queueing on the shared beam; propagation itself barely varies)"),
        ),
    ),
    # DSL (ADSL). WebPageTest "DSL": 1.5 Mbps down, 384 kbps up, 50 ms RTT -> 25 ms one way. Loss: comcast
    # "DSL (good)" 0.5 %. Jitter: modelled, 5 ms.
    LinkProfile(
        name="dsl",
        description="DSL (ADSL): 1.5 Mbps down / 384 kbps up, 50 ms RTT, 0.5 % loss",
        latency_s=0.025,
        jitter_s=0.005,
        loss=0.005,
        up_bps=384_000,
        down_bps=1_500_000,
        sources=(
            f"latency 50 ms RTT (halved), rates 1.5 Mbps/384 kbps: {WPT}, '[DSL]'",
            f"loss 0.5 %: {COMCAST}, 'DSL (good)'",
            modelled("jitter 5 ms, a fifth of the one-way latency"),
        ),
    ),
    # Flaky Wi-Fi: a contended or distant access point. Latency: comcast "WIFI (good)" 40 ms RTT -> 20 ms one way;
    # rates: Firefox DevTools "Wi-Fi" 30 Mbps down / 15 Mbps up; loss 3 %: Perfecto "Unstable Network".
    # Jitter: modelled, 20 ms (one-way delay anywhere from 0 to 40 ms: retries and contention).
    LinkProfile(
        name="flaky-wifi",
        description="Flaky Wi-Fi (contended or distant access point): 30 Mbps down / 15 Mbps up, 40 ms RTT, 3 % loss",
        latency_s=0.020,
        jitter_s=0.020,
        loss=0.03,
        up_bps=15_000_000,
        down_bps=30_000_000,
        sources=(
            f"latency 40 ms RTT (halved): {COMCAST}, 'WIFI (good)'",
            f"rates 30/15 Mbps: {FIREFOX}, 'Wi-Fi'",
            f"loss 3 %: {PERFECTO}",
            modelled("jitter 20 ms: one-way delay anywhere from 0 to 40 ms (link-layer retries, contention)"),
        ),
    ),
)

#: The profiles by name (read only), in the order of the table in docs/network-faults.md.
PROFILES: Mapping[str, LinkProfile] = MappingProxyType({p.name: p for p in _PROFILES})


def profile(name: str) -> LinkProfile:
    """The profile called ``name`` (case and surrounding spaces ignored).

    Raises :class:`~iotix.fault.spec.FaultError` (a configuration error) naming the known profiles.
    """
    key = str(name).strip().lower()
    try:
        return PROFILES[key]
    except KeyError:
        raise FaultError(
            f"Unknown network profile '{name}'. Known profiles: {', '.join(PROFILES)}; "
            "or add latency, bandwidth and loss faults one by one with Add Network Fault."
        ) from None


def profile_faults(name: str, *, datagram: bool) -> list[tuple[str, dict[str, str], str]]:
    """The faults that make up profile ``name``, as ``(kind, settings, direction)`` with the settings written as
    a user would type them in ``Add Network Fault``.

    Latency (with jitter) both ways, bandwidth upstream at ``up_bps`` and downstream at ``down_bps``, and, for a
    datagram (UDP) target only, loss both ways. On TCP the loss is left out and nothing replaces it: TCP
    retransmits what the link loses, so loss there only shows up as delay (see the module docstring).
    """
    p = profile(name)
    faults: list[tuple[str, dict[str, str], str]] = [
        ("latency", {"latency": _ms(p.latency_s), "jitter": _ms(p.jitter_s)}, "both"),
        ("bandwidth", {"rate": _rate(p.up_bps)}, "upstream"),
        ("bandwidth", {"rate": _rate(p.down_bps)}, "downstream"),
    ]
    if datagram and p.loss > 0:
        faults.append(("loss", {"probability": _percent(p.loss)}, "both"))
    return faults


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000, 3):g}ms"


def _rate(bps: float) -> str:
    """Bits per second as ``kbps``/``mbps`` (kilo/megabits per second), the way link figures are quoted."""
    if bps >= 1_000_000:
        return f"{round(bps / 1_000_000, 6):g}mbps"
    return f"{round(bps / 1_000, 6):g}kbps"


def _percent(share: float) -> str:
    return f"{round(share * 100, 8):g}%"


def _human_rate(bps: float) -> str:
    if bps >= 1_000_000:
        return f"{round(bps / 1_000_000, 2):g} Mbit/s"
    return f"{round(bps / 1_000, 1):g} kbit/s"


def profiles_table() -> str:
    """A markdown table of every profile (for docs/network-faults.md): the figures, then the references."""
    lines = [
        "| profile | one-way latency | jitter | loss (UDP only, each way) | up | down | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in PROFILES.values():
        lines.append(
            f"| `{p.name}` | {_ms(p.latency_s).replace('ms', ' ms')} | {_ms(p.jitter_s).replace('ms', ' ms')} | "
            f"{_percent(p.loss).replace('%', ' %')} | {_human_rate(p.up_bps)} | {_human_rate(p.down_bps)} | "
            f"{p.description} |"
        )
    lines += [
        "",
        "Latency is one way: the references quote round-trip times, halved here because the fault layer delays "
        "each direction. On TCP targets (MQTT, HTTP, Kafka) the loss is left out: TCP retransmits, so a lossy "
        "link shows up as delay; nothing is added in its place.",
        "",
        "Sources:",
        "",
    ]
    for p in PROFILES.values():
        lines.append(f"- `{p.name}`:")
        lines.extend(f"  - {s}" for s in p.sources)
    return "\n".join(lines) + "\n"
