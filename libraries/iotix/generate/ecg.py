"""The built-in ``ecg_generator`` custom handler: a synthetic single-lead ECG.

SYNTHETIC DATA, NOT FOR DIAGNOSIS. The waveform is a textbook-shaped PQRST complex good enough to exercise
ingestion pipelines, dashboards and beat detectors; it is not a physiological model and must never be used
to develop or validate anything clinical.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from iotix.errors import ConfigurationError
from iotix.generate._values import is_number, show

# (name, offset from the R peak in s, width (sigma) in s, amplitude relative to an R peak of 1.2 mV,
#  whether offset and width stretch with the beat). Timings are for a 60 bpm beat (RR = 1 s).
# P and T move with sqrt(RR) (the Bazett relation for QT); the QRS complex keeps its width.
_WAVES: tuple[tuple[str, float, float, float, bool], ...] = (
    ("P", -0.200, 0.025, 0.15, True),
    ("Q", -0.035, 0.010, -0.12, False),
    ("R", 0.000, 0.011, 1.20, False),
    ("S", 0.035, 0.011, -0.30, False),
    ("T", 0.300, 0.060, 0.35, True),
)
_REFERENCE_R_MV = 1.2
_OVERSAMPLING = 8  # template points per output sample: the timing error stays below 1/(8*samplingRate)
_WANDER_HZ = 0.25  # baseline wander at a breathing rate of 15 per minute
_WANDER_MV = 0.04
_R_PHASE = 0.35  # where in the beat (fraction of RR) the R peak sits when the phase offset is 0

_DEFAULTS: dict[str, float] = {
    "samplingRate": 500,
    "samples": 200,
    "heartRate": 72,
    "noise": 0.02,
    "amplitude": 1.2,
    "sampleSize": 16,
}
#: Settings without a default: ``noiseLevel`` (the iotix spelling) is the noise as a fraction of ``amplitude``.
_OPTIONAL: tuple[str, ...] = ("noiseLevel",)
# name: (lowest, highest) accepted
_LIMITS: dict[str, tuple[float, float]] = {
    "samplingRate": (1, 100_000),
    "samples": (1, 100_000),
    "heartRate": (20, 300),
    "noise": (0, 5),
    "amplitude": (0.01, 30),
    "sampleSize": (8, 32),
    "noiseLevel": (0, 5),
}
#: ``sampleSize`` (bits per sample) -> µV per least significant bit. Samples are signed big-endian integers of
#: ``sampleSize / 8`` bytes, so a reading is ``samples * sampleSize / 8`` bytes (200 x 16 bit = 400 bytes).
#: 8-bit samples use 16 µV steps (±2.05 mV) so that an R peak still fits; wider samples use 1 µV steps.
SAMPLE_SIZES: dict[int, float] = {8: 16.0, 16: 1.0, 24: 1.0, 32: 1.0}
_STRUCT_CODES: dict[int, str] = {8: "b", 16: "h", 32: "i"}


@lru_cache(maxsize=64)
def beat_template(heart_rate: float, sampling_rate: float, amplitude: float) -> tuple[tuple[float, ...], float]:
    """One beat (R peak at ``_R_PHASE`` of RR) in µV, oversampled; returns (points, points per second).

    Shared between all devices with the same settings: a fleet of ECG monitors holds one copy.
    """
    rr = 60.0 / heart_rate
    stretch = math.sqrt(rr)
    scale = 1000.0 * amplitude / _REFERENCE_R_MV  # to µV
    count = max(1, round(rr * sampling_rate * _OVERSAMPLING))
    per_second = count / rr
    r_time = _R_PHASE * rr
    waves = [
        (
            r_time + (offset * stretch if stretches else offset),
            width * stretch if stretches else width,
            amp * scale,
        )
        for _, offset, width, amp, stretches in _WAVES
    ]
    points = []
    for i in range(count):
        time = i / per_second
        value = 0.0
        for centre, width, amp in waves:
            for shift in (-rr, 0.0, rr):  # neighbouring beats overlap the edges of this one
                d = time - centre - shift
                value += amp * math.exp(-d * d / (2.0 * width * width))
        points.append(value)
    return tuple(points), per_second


def _read_config(config: dict[str, Any]) -> dict[str, float]:
    known = (*_DEFAULTS, *_OPTIONAL)
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise ConfigurationError(f"unknown ecg_generator setting(s) {', '.join(unknown)} (known: {', '.join(known)})")
    if "noise" in config and "noiseLevel" in config:
        raise ConfigurationError(
            "give noise (mV) or noiseLevel (a fraction of amplitude, the iotix spelling), not both"
        )
    settings: dict[str, float] = {}
    for name in known:
        if name not in _DEFAULTS and name not in config:
            continue
        value = config.get(name, _DEFAULTS.get(name))
        low, high = _LIMITS[name]
        if not is_number(value):
            raise ConfigurationError(f"{name} must be a number, got {show(value)}")
        if not low <= value <= high:
            raise ConfigurationError(f"{name} must be between {low} and {high}, got {show(value)}")
        settings[name] = value
    if not float(settings["samples"]).is_integer():
        raise ConfigurationError(f"samples must be an integer, got {show(settings['samples'])}")
    if settings["sampleSize"] not in SAMPLE_SIZES:
        sizes = ", ".join(str(bits) for bits in SAMPLE_SIZES)
        raise ConfigurationError(
            f"sampleSize (bits per sample) must be one of {sizes}, got {show(settings['sampleSize'])}"
        )
    if "noiseLevel" in settings:
        settings["noise"] = settings.pop("noiseLevel") * settings["amplitude"]
    return settings


def _packer(samples: int, bits: int) -> Callable[[list[int]], bytes]:
    """Packs ``samples`` signed integers of ``bits`` bits, big-endian."""
    if bits == 24:
        return lambda values: b"".join(v.to_bytes(3, "big", signed=True) for v in values)
    packer = struct.Struct(f">{samples}{_STRUCT_CODES[bits]}")
    return lambda values: packer.pack(*values)


def ecg_generator(config: dict[str, Any], rng: random.Random) -> Callable[[float], bytes]:
    """Synthetic ECG handler factory. SYNTHETIC DATA, NOT FOR DIAGNOSIS.

    Config: ``samplingRate`` (Hz, default 500), ``samples`` per reading (default 200), ``heartRate`` (bpm,
    default 72), ``noise`` (Gaussian, mV stddev, default 0.02) or ``noiseLevel`` (the same as a fraction of
    ``amplitude``: 0.05 with the default amplitude is 0.06 mV), ``amplitude`` (R peak in mV, default 1.2),
    ``sampleSize`` (bits per sample: 8, 16 (default), 24 or 32).

    Each reading is ``samples`` signed big-endian integers of ``sampleSize`` bits, so ``samples *
    sampleSize / 8`` bytes; 1 LSB = 1 µV (16 µV for 8-bit samples, see :data:`SAMPLE_SIZES`), values beyond
    the sample size are clipped (16 bit: ±32.767 mV). The signal is a sum of Gaussians for the P, Q, R, S and
    T waves at fixed positions in a beat of RR = 60/heartRate seconds (P and T scaled by sqrt(RR)), plus a
    0.25 Hz baseline wander and the noise. It continues across readings: sample k of reading n is at time
    (n*samples + k)/samplingRate, whatever ``t`` the caller passes. The beat phase and the wander phase come
    from ``rng``, so devices differ but each is reproducible.
    """
    settings = _read_config(config)
    rate = float(settings["samplingRate"])
    samples = int(settings["samples"])
    bits = int(settings["sampleSize"])
    per_lsb = 1.0 / SAMPLE_SIZES[bits]
    highest = (1 << (bits - 1)) - 1
    lowest = -highest - 1
    template, per_second = beat_template(float(settings["heartRate"]), rate, float(settings["amplitude"]))
    size = len(template)
    step = per_second / rate  # template points per output sample
    beat_offset = rng.random() * size
    wander_omega = 2.0 * math.pi * _WANDER_HZ / rate  # radians per output sample
    wander_phase = 2.0 * math.pi * rng.random()
    noise_uv = float(settings["noise"]) * 1000.0
    wander_uv = _WANDER_MV * 1000.0
    rand = rng.random
    sin, cos, log, sqrt = math.sin, math.cos, math.log, math.sqrt
    two_pi = 2.0 * math.pi
    pairs = (samples + 1) // 2
    silence = [0.0] * samples
    pack = _packer(samples, bits)
    reading = [0]

    def noise_block() -> list[float]:
        """``samples`` Gaussian values (Box-Muller inline: rng.gauss per sample costs twice as much)."""
        values: list[float] = []
        for _ in range(pairs):
            radius = noise_uv * sqrt(-2.0 * log(1.0 - rand()))
            angle = two_pi * rand()
            values.append(radius * cos(angle))
            values.append(radius * sin(angle))
        return values

    def next_reading(t: float) -> bytes:
        first = reading[0] * samples
        reading[0] += 1
        noise = noise_block() if noise_uv else silence
        out = [
            round(template[int((k * step + beat_offset) % size)] + wander_uv * sin(wander_omega * k + wander_phase) + e)
            for k, e in zip(range(first, first + samples), noise, strict=False)
        ]
        if per_lsb != 1.0:
            out = [round(v * per_lsb) for v in out]
        if max(out) > highest or min(out) < lowest:
            out = [highest if v > highest else lowest if v < lowest else v for v in out]
        return pack(out)

    return next_reading
