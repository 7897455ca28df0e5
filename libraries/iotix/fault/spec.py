"""What a network fault is: its kind, direction and settings, parsed from what a Robot user typed (pure).

:func:`parse_fault` turns ``Add Network Fault    env    latency    latency=200ms    jitter=20ms`` into a
:class:`FaultSpec` whose ``params`` are normalised, so the engine (:mod:`iotix.fault.pipe`) never parses:

========== =========================================================================================
unit       accepted input -> stored as
========== =========================================================================================
time       ``200ms``, ``1.5s``, ``2 min``, ``500us``, ``1h``; a bare number (``0.2``, ``"0.2"``) is seconds,
           as everywhere in Robot Framework -> seconds (float)
rate       **bits** per second, as link speeds are quoted: ``64kbps`` = ``64kbit`` = ``64 kbit/s`` = 64,000
           bit/s; ``1mbps`` = ``1Mbit``; ``bps``/``bit``; a bare number is bit/s (as in ``tc``). Bytes with a
           capital ``B`` and ``/s``: ``8KB/s`` = 8,000 B/s, ``1MB/s``, ``1KiB/s`` = 1,024 B/s. Note that
           ``tc`` reads ``kbps`` as kilobytes: here it is kilobits, the telecom usage -> bytes/s (float)
size       ``16KB`` = 16,000, ``16KiB`` = 16,384, ``1MB``, ``1MiB``, ``512B``; a bare number is bytes -> int
share      ``10%``, ``0.1``, ``0.1%``; a bare number above 1 is refused (write ``10%``) -> 0..1 (float)
========== =========================================================================================

Every error is a :class:`FaultError` that names the fault (its name, or its kind when it has none yet), the
target and the setting, and says what to do, e.g. ``Network fault 'lat-1' on fleet 'env': latency must be
>= 0, got '-5ms'.``
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from iotix.errors import ConfigurationError

from .mqtt_frames import packet_type_name, parse_packet_types

DIRECTIONS = ("upstream", "downstream", "both")

#: Kinds for both TCP streams and UDP datagrams.
COMMON_KINDS = ("latency", "bandwidth", "blackhole", "limit_data")
#: Kinds that need a connection (a stream with a close and a reset).
TCP_KINDS = ("reset", "slow_close", "timeout", "slicer", "mqtt")
#: Kinds that act on single datagrams (netem's vocabulary).
DATAGRAM_KINDS = ("loss", "duplicate", "corrupt", "reorder")
KINDS = COMMON_KINDS + TCP_KINDS + DATAGRAM_KINDS

#: Kinds that hold the bytes of a connection (nothing passes): admission answers "blackhole" for them.
HOLD_KINDS = ("blackhole", "timeout")

#: Settings every kind takes (they land in FaultSpec fields, not in params).
COMMON_SETTINGS = ("direction", "duration", "toxicity")

#: The settings each kind takes, with their defaults (None = required).
KIND_SETTINGS: dict[str, dict[str, Any]] = {
    "latency": {"latency": 0.0, "jitter": 0.0, "distribution": "uniform", "correlation": 0.0},
    "bandwidth": {"rate": None, "shared": False},
    "blackhole": {},
    "limit_data": {"bytes": None},
    "reset": {"after": 0.0},
    "slow_close": {"delay": None},
    "timeout": {"timeout": 0.0},
    "slicer": {"average_size": None, "size_variation": 0, "delay": 0.0},
    "mqtt": {"packet": None, "action": "drop", "probability": 1.0, "delay": 0.0, "after": 1},
    "loss": {"probability": None, "model": "random", "p": None, "r": None, "loss_good": 0.0, "loss_bad": 1.0},
    "duplicate": {"probability": None},
    "corrupt": {"probability": None},
    "reorder": {"probability": None, "gap": 1},
}

#: Other spellings users write for a setting.
ALIASES = {"packets": "packet", "type": "packet", "size": "bytes", "limit": "bytes", "delay_time": "delay"}

DISTRIBUTIONS = ("uniform", "normal")
MQTT_ACTIONS = ("drop", "delay", "disconnect")
LOSS_MODELS = ("random", "gilbert")


class FaultError(ConfigurationError):
    """A network fault that cannot be added or removed as asked; the message names fault, target and setting."""


@dataclass(frozen=True)
class FaultSpec:
    """One fault as the engine needs it: every setting already checked and in base units.

    ``name`` is None until :meth:`iotix.fault.faultset.FaultSet.add` gives it one (``{kind}-{n}``).
    ``params`` hold seconds (float), rates in bytes/s (float), probabilities 0..1, sizes in bytes (int), and
    for ``mqtt`` the packet types as a frozenset of ints. ``toxicity`` is the share of connections affected
    (drawn once per connection, or per device for per-device faults); ``duration`` None lasts until removed.
    """

    name: str | None
    kind: str
    direction: str = "both"
    params: Mapping[str, Any] = field(default_factory=dict)
    toxicity: float = 1.0
    duration: float | None = None

    @property
    def label(self) -> str:
        """How messages name the fault: its name, or its kind while it has none."""
        return self.name or self.kind

    def acts_upstream(self) -> bool:
        return self.direction in ("upstream", "both")

    def acts_downstream(self) -> bool:
        return self.direction in ("downstream", "both")

    def settings_text(self) -> str:
        """The settings as a person reads them: ``200 ms +- 20 ms (normal)``, ``64 kbit/s``."""
        return describe_params(self.kind, self.params)


# --- unit parsing -----------------------------------------------------------------------------------------

_NUMBER = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"
_TIME_UNITS = {
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "ms": 1e-3,
    "millis": 1e-3,
    "millisecond": 1e-3,
    "milliseconds": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "microsecond": 1e-6,
    "microseconds": 1e-6,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}
_PREFIX = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}
_BINARY = {"ki": 1024, "mi": 1024**2, "gi": 1024**3}
_VALUE = re.compile(rf"^\s*{_NUMBER}\s*(.*?)\s*$")


class _Bad(ValueError):
    """A value that does not parse. The caller says what form is expected; ``hint`` marks a message worth adding
    (a bare ``10`` for a share: write ``10%``)."""

    def __init__(self, message: str, *, hint: bool = False) -> None:
        super().__init__(message)
        self.hint = hint


def _must_be(what: str, err: _Bad) -> str:
    return f"must be {what}" + (f" ({err})" if err.hint else "")


def _split(value: Any) -> tuple[float, str]:
    if isinstance(value, bool):
        raise _Bad("expected a number")
    if isinstance(value, (int, float)):
        return float(value), ""
    match = _VALUE.match(str(value))
    if not match:
        raise _Bad("expected a number with an optional unit")
    number = float(match.group(1))
    if not math.isfinite(number):
        raise _Bad("expected a finite number")
    return number, match.group(2)


def parse_seconds(value: Any) -> float:
    """``200ms`` -> 0.2; ``1.5s``, ``2 min``, ``500us``, a bare number (seconds), a ``timedelta``."""
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    number, unit = _split(value)
    factor = _TIME_UNITS.get(unit.lower().replace(" ", ""))
    if factor is None:
        raise _Bad("expected a time like 200ms, 1.5s or 2min")
    return number * factor


def parse_flag(value: Any) -> bool:
    """``true``/``false`` (also yes/no, on/off, 1/0, a bool)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise _Bad("expected true or false")


def parse_rate(value: Any) -> float:
    """A link rate -> bytes per second. Bits: ``64kbps``, ``64kbit``, ``64 kbit/s``, bare numbers; bytes:
    ``8KB/s``, ``1MB/s``, ``1KiB/s``, ``100B/s`` (a capital B followed by /s means bytes)."""
    number, unit = _split(value)
    compact = unit.replace(" ", "")
    lower = compact.lower()
    byte_match = re.fullmatch(r"([kKmMgG]i?)?B(?:ps|/s|/sec)", compact)
    if byte_match:  # bytes per second: B/s, KB/s, KiB/s, MBps
        prefix = (byte_match.group(1) or "").lower()
        factor = _BINARY.get(prefix) or _PREFIX.get(prefix)
        if factor is None:
            raise _Bad("expected a rate like 64kbps, 1mbit or 8KB/s")
        return number * factor
    bit_match = re.fullmatch(r"([kmg]i?)?(?:bps|bit|bits|bit/s|bits/s|b/s)?", lower)
    if bit_match:
        prefix = bit_match.group(1) or ""
        factor = _BINARY.get(prefix) or _PREFIX.get(prefix)
        if factor is None:
            raise _Bad("expected a rate like 64kbps, 1mbit or 8KB/s")
        return number * factor / 8.0
    raise _Bad("expected a rate like 64kbps, 1mbit or 8KB/s")


def parse_size(value: Any) -> int:
    """``16KB`` -> 16000, ``16KiB`` -> 16384, ``1MB``, ``512B``, ``512`` (bytes)."""
    number, unit = _split(value)
    lower = unit.replace(" ", "").lower()
    match = re.fullmatch(r"([kmg]i?)?(?:b|bytes?)?", lower)
    if not match:
        raise _Bad("expected a size like 512, 16KB or 1MiB")
    prefix = match.group(1) or ""
    factor = _BINARY.get(prefix) or _PREFIX.get(prefix)
    if factor is None:
        raise _Bad("expected a size like 512, 16KB or 1MiB")
    size = number * factor
    if size != int(size):
        raise _Bad("expected a whole number of bytes")
    return int(size)


def parse_share(value: Any) -> float:
    """``10%`` -> 0.1, ``0.1`` -> 0.1; a bare number above 1 is refused (is ``10`` 10 % or 1000 %?)."""
    number, unit = _split(value)
    if unit == "%":
        return number / 100.0
    if unit:
        raise _Bad("expected a share like 10% or 0.1")
    if number > 1:
        raise _Bad(f"a bare number is a share between 0 and 1; write '{number:g}%' for percent", hint=True)
    return number


def parse_int(value: Any) -> int:
    number, unit = _split(value)
    if unit or number != int(number):
        raise _Bad("expected a whole number")
    return int(number)


# --- parse_fault ------------------------------------------------------------------------------------------

_TCP_INSTEAD = (
    "TCP retransmits a lost, duplicated, corrupted or reordered segment, so on a TCP connection it shows up as "
    "latency: use 'latency' (with jitter) or 'slicer' instead, or 'Add MQTT Fault' to drop whole MQTT packets"
)


def _prefix(name: str | None, kind: str, target: str) -> str:
    return f"Network fault '{name or kind}' on {target}"


def parse_fault(kind: str, settings: Mapping[str, Any], *, name: str | None, target: str, datagram: bool) -> FaultSpec:
    """Check and normalise a fault as typed by a user; raise :class:`FaultError` naming what is wrong.

    ``settings`` may hold the kind's settings (see :data:`KIND_SETTINGS`) plus ``direction``
    (upstream|downstream|both, default both), ``duration`` (a time; none = until removed) and ``toxicity``
    (share of connections affected, default 100 %). ``target`` is a display string (``fleet 'env'``);
    ``datagram`` says whether the target speaks UDP (refusing TCP-only kinds) or TCP (refusing datagram kinds).
    """
    kind_key = str(kind).strip().lower().replace("-", "_").replace(" ", "_")
    if kind_key in ("reset_peer",):
        kind_key = "reset"
    where = _prefix(name, kind_key or str(kind), target)
    if kind_key not in KIND_SETTINGS:
        raise FaultError(f"{where}: unknown kind '{kind}'; the kinds are {', '.join(KINDS)}.")
    transport = "UDP" if datagram else "TCP"
    if not datagram and kind_key in DATAGRAM_KINDS:
        raise FaultError(f"{where}: '{kind_key}' acts on datagrams and {target} speaks TCP. {_TCP_INSTEAD}.")
    if datagram and kind_key in TCP_KINDS:
        raise FaultError(
            f"{where}: '{kind_key}' needs a TCP connection and {target} speaks UDP; on datagrams use "
            f"{', '.join(COMMON_KINDS + DATAGRAM_KINDS)}."
        )
    if name is not None and not str(name).strip():
        raise FaultError(f"{where}: the name must not be empty; leave it out to get '{kind_key}-<n>'.")

    defaults = KIND_SETTINGS[kind_key]
    given: dict[str, Any] = {}
    for raw_key, value in settings.items():
        key = ALIASES.get(str(raw_key).lower(), str(raw_key).lower())
        if key not in defaults and key not in COMMON_SETTINGS:
            accepted = ", ".join([*defaults, *COMMON_SETTINGS])
            raise FaultError(
                f"{where}: unknown setting '{raw_key}' for {kind_key} on {transport}; it takes {accepted}."
            )
        given[key] = value

    def bad(key: str, why: str) -> FaultError:
        return FaultError(f"{where}: {key} {why}, got '{given[key]}'.")

    def get(key: str, parser: Any, what: str) -> Any:
        if key not in given or given[key] is None or given[key] == "":
            default = defaults.get(key)
            if default is None and key in defaults:
                raise FaultError(f"{where}: {key} is required for {kind_key} ({what}).")
            return default
        try:
            return parser(given[key])
        except _Bad as err:
            raise bad(key, _must_be(what, err)) from None

    def non_negative(key: str, parser: Any, what: str) -> Any:
        value = get(key, parser, what)
        if value is not None and value < 0:
            raise bad(key, "must be >= 0")
        return value

    def share(key: str) -> float:
        value = get(key, parse_share, "a share like 10% or 0.1")
        if value is not None and not 0.0 <= value <= 1.0:
            raise bad(key, "must be between 0 and 100 %")
        return value

    # common settings
    direction = str(given.get("direction") or "both").strip().lower()
    if direction not in DIRECTIONS:
        raise FaultError(f"{where}: direction must be upstream, downstream or both, got '{given['direction']}'.")
    duration: float | None = None
    raw_duration = given.get("duration")
    if raw_duration is not None and str(raw_duration).strip().lower() not in ("", "none"):
        try:
            duration = parse_seconds(raw_duration)
        except _Bad as err:
            raise bad("duration", _must_be("a time like 30s or 5min", err)) from None
        if duration <= 0:
            raise bad("duration", "must be > 0 (leave it out to keep the fault until it is removed)")
    toxicity = 1.0
    if given.get("toxicity") not in (None, ""):
        try:
            toxicity = parse_share(given["toxicity"])
        except _Bad as err:
            raise bad("toxicity", _must_be("a share like 50% or 0.5", err)) from None
        if not 0.0 <= toxicity <= 1.0:
            raise bad("toxicity", "must be between 0 and 100 %")

    time_what = "a time like 200ms or 1.5s"
    params: dict[str, Any] = {}
    if kind_key == "latency":
        params["latency"] = non_negative("latency", parse_seconds, time_what)
        params["jitter"] = non_negative("jitter", parse_seconds, time_what)
        distribution = str(given.get("distribution") or "uniform").strip().lower()
        if distribution not in DISTRIBUTIONS:
            raise bad("distribution", "must be uniform or normal")
        params["distribution"] = distribution
        params["correlation"] = share("correlation")
        if "latency" not in given and "jitter" not in given:
            raise FaultError(f"{where}: latency is required for latency ({time_what}), e.g. latency=200ms.")
    elif kind_key == "bandwidth":
        rate = get("rate", parse_rate, "a rate like 64kbps, 1mbit or 8KB/s")
        if rate <= 0:
            raise bad("rate", "must be > 0 (use 'blackhole' to let nothing through)")
        params["rate"] = rate
        params["shared"] = get("shared", parse_flag, "true or false")
    elif kind_key == "limit_data":
        params["bytes"] = non_negative("bytes", parse_size, "a size like 512, 16KB or 1MiB")
    elif kind_key == "reset":
        params["after"] = non_negative("after", parse_seconds, time_what)
    elif kind_key == "slow_close":
        params["delay"] = non_negative("delay", parse_seconds, time_what)
    elif kind_key == "timeout":
        params["timeout"] = non_negative("timeout", parse_seconds, time_what)
    elif kind_key == "slicer":
        average = get("average_size", parse_size, "a size like 64 or 1KB")
        if average < 1:
            raise bad("average_size", "must be >= 1 byte")
        variation = non_negative("size_variation", parse_size, "a size like 16")
        if variation >= average:
            raise bad("size_variation", f"must be smaller than average_size ({average} bytes)")
        params["average_size"] = average
        params["size_variation"] = variation
        params["delay"] = non_negative("delay", parse_seconds, time_what)
    elif kind_key == "mqtt":
        try:
            params["packets"] = parse_packet_types(get("packet", lambda v: v, "a packet type like PUBLISH"))
        except ValueError as err:
            raise bad("packet", str(err)) from None
        action = str(given.get("action") or "drop").strip().lower()
        if action not in MQTT_ACTIONS:
            raise bad("action", "must be drop, delay or disconnect")
        params["action"] = action
        params["probability"] = share("probability")
        params["delay"] = non_negative("delay", parse_seconds, time_what)
        if action == "delay" and params["delay"] <= 0:
            raise FaultError(f"{where}: action=delay needs delay > 0 ({time_what}), e.g. delay=2s.")
        after = get("after", parse_int, "a whole number of packets")
        if after < 1:
            raise bad("after", "must be >= 1 (the connection closes at the N-th matching packet)")
        params["after"] = after
    elif kind_key == "loss":
        model = str(given.get("model") or "random").strip().lower().replace("-", "_")
        if model in ("gemodel", "gilbert_elliott", "gilbert_elliot", "ge"):
            model = "gilbert"
        if model not in LOSS_MODELS:
            raise bad("model", "must be random or gilbert")
        params["model"] = model
        if model == "random":
            for key in ("p", "r", "loss_good", "loss_bad"):
                if key in given:
                    raise FaultError(f"{where}: {key} belongs to model=gilbert; random loss takes probability.")
            params["probability"] = share("probability")
        else:
            if "probability" in given:
                raise FaultError(
                    f"{where}: model=gilbert takes p (good->bad), r (bad->good), loss_good and loss_bad, "
                    "not probability."
                )
            if "p" not in given:
                raise FaultError(f"{where}: p is required for model=gilbert (chance of going from good to bad).")
            p = share("p")
            r = share("r") if "r" in given else 1.0 - p
            params.update(p=p, r=r, loss_good=share("loss_good"), loss_bad=share("loss_bad"))
            if p > 0 and r == 0:
                raise bad("r", "must be > 0 with p > 0, or the link stays in the bad state for ever")
    elif kind_key in ("duplicate", "corrupt"):
        params["probability"] = share("probability")
    elif kind_key == "reorder":
        params["probability"] = share("probability")
        gap = get("gap", parse_int, "a whole number of datagrams")
        if gap < 1:
            raise bad("gap", "must be >= 1")
        params["gap"] = gap
    return FaultSpec(
        name=str(name).strip() if name is not None else None,
        kind=kind_key,
        direction=direction,
        params=params,
        toxicity=toxicity,
        duration=duration,
    )


# --- human readable ---------------------------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    if seconds == 0:
        return "0 s"
    if seconds < 1e-3:
        return f"{seconds * 1e6:g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:g} ms"
    return f"{seconds:g} s"


def format_rate(bytes_per_second: float) -> str:
    bits = bytes_per_second * 8
    for unit, factor in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits >= factor:
            return f"{bits / factor:g} {unit}"
    return f"{bits:g} bit/s"


def format_share(share: float) -> str:
    return f"{share * 100:g} %"


def describe_params(kind: str, params: Mapping[str, Any]) -> str:
    """Settings as a sentence fragment, for ``Get Network Faults`` and the logs."""
    p = params
    if kind == "latency":
        text = format_seconds(p["latency"])
        if p["jitter"]:
            text += f" ± {format_seconds(p['jitter'])} ({p['distribution']})"
        if p["correlation"]:
            text += f", correlation {format_share(p['correlation'])}"
        return text
    if kind == "bandwidth":
        return format_rate(p["rate"]) + (" shared by every connection" if p.get("shared") else " per connection")
    if kind == "blackhole":
        return "nothing passes, nothing closes"
    if kind == "limit_data":
        return f"close after {p['bytes']} bytes"
    if kind == "reset":
        return f"reset after {format_seconds(p['after'])}"
    if kind == "slow_close":
        return f"close delayed {format_seconds(p['delay'])}"
    if kind == "timeout":
        return f"nothing passes, closed after {format_seconds(p['timeout'])}" if p["timeout"] else "nothing passes"
    if kind == "slicer":
        return f"pieces of {p['average_size']} ± {p['size_variation']} bytes, {format_seconds(p['delay'])} apart"
    if kind == "mqtt":
        names = "|".join(packet_type_name(t) for t in sorted(p["packets"]))
        text = f"{p['action']} {names}"
        if p["probability"] < 1:
            text += f" with probability {format_share(p['probability'])}"
        if p["action"] == "delay":
            text += f" by {format_seconds(p['delay'])}"
        if p["action"] == "disconnect":
            text += f" at matching packet {p['after']}"
        return text
    if kind == "loss":
        if p["model"] == "gilbert":
            return (
                f"gilbert p={format_share(p['p'])} r={format_share(p['r'])} "
                f"loss_good={format_share(p['loss_good'])} loss_bad={format_share(p['loss_bad'])}"
            )
        return format_share(p["probability"])
    if kind in ("duplicate", "corrupt"):
        return format_share(p["probability"])
    if kind == "reorder":
        return f"{format_share(p['probability'])}, gap {p['gap']}"
    return ", ".join(f"{key}={value}" for key, value in p.items())
