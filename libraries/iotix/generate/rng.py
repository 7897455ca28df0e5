"""Deterministic random number generators per device and per field."""

from __future__ import annotations

import hashlib
import random


def device_rng(model_id: str, device_id: str, seed: int | str | None, stream: str = "") -> random.Random:
    """A ``random.Random`` seeded from sha256(model id, device id, seed, stream).

    The same arguments give the same sequence in every process and on every machine (unlike ``hash()``,
    which Python salts per process). ``seed=None`` means seed 0: runs are reproducible by default and differ
    only when the caller passes another seed. ``stream`` separates independent sequences of one device
    (IoTix uses the field name), so adding a field to a model does not change the values of the others.
    The seed is used through ``str()``: ``7`` and ``"7"`` are the same seed.
    """
    parts = (model_id, device_id, "0" if seed is None else str(seed), stream)
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest, "big"))
