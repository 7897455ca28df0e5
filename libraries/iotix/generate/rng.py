"""Deterministic random number generators per device and per field."""

from __future__ import annotations

import hashlib
import math
import random

_M64 = (1 << 64) - 1
#: Knuth's MMIX linear congruential generator (multiplier and increment), modulo 2**64
_LCG_A = 6364136223846793005
_LCG_C = 1442695040888963407
_TWO_53 = 2.0**-53
_TWO_PI = 2.0 * math.pi


def _digest(model_id: str, device_id: str, seed: int | str | None, stream: str) -> int:
    parts = (model_id, device_id, "0" if seed is None else str(seed), stream)
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest(), "big")


def device_rng(model_id: str, device_id: str, seed: int | str | None, stream: str = "") -> random.Random:
    """A ``random.Random`` seeded from sha256(model id, device id, seed, stream).

    The same arguments give the same sequence in every process and on every machine (unlike ``hash()``,
    which Python salts per process). ``seed=None`` means seed 0: runs are reproducible by default and differ
    only when the caller passes another seed. ``stream`` separates independent sequences of one device
    (IoTix uses the field name), so adding a field to a model does not change the values of the others.
    The seed is used through ``str()``: ``7`` and ``"7"`` are the same seed.
    """
    return random.Random(_digest(model_id, device_id, seed, stream))


class DeviceRandom:
    """The random stream the built-in generators of one device share: 40 bytes instead of ``random.Random``'s 2.5 KB.

    A 64-bit linear congruential generator (Knuth's MMIX constants) whose top 53 bits make each float: period
    2**64, fine for simulated readings (not for cryptography, nor for statistics that need Mersenne Twister's
    equidistribution in many dimensions). A fleet of 100,000 devices saves 250 MB with it. It offers what the
    built-in generators draw: :meth:`random` and :meth:`gauss`. Custom handlers, which may call anything of
    ``random.Random``, get a :func:`device_rng` of their own.
    """

    __slots__ = ("_state",)

    def __init__(self, seed: int) -> None:
        self._state = seed & _M64

    def random(self) -> float:
        """A float in [0, 1)."""
        state = self._state = (self._state * _LCG_A + _LCG_C) & _M64
        return (state >> 11) * _TWO_53

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        """A normal value (Box-Muller, one value per two draws: no spare kept, so the state stays one int)."""
        angle = _TWO_PI * self.random()
        return mu + sigma * math.cos(angle) * math.sqrt(-2.0 * math.log(1.0 - self.random()))


def device_stream(model_id: str, device_id: str, seed: int | str | None) -> DeviceRandom:
    """The :class:`DeviceRandom` of a device, seeded like :func:`device_rng` (same arguments, same values)."""
    return DeviceRandom(_digest(model_id, device_id, seed, ""))
