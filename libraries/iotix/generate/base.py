"""The :class:`Generator` interface and the signature of the per-type factories."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iotix.generate._spec import SpecReader


class Generator:
    """The value source of one telemetry field of one device.

    ``next(t)`` returns the next reading, already converted to the field's type; ``t`` is the device's
    logical time in seconds since it started sending. Generators are stateful (a sequence counts, a random
    walk remembers where it is) and are called once per reading, in time order. They are not thread-safe:
    one device's generators belong to one scheduler.
    """

    __slots__ = ()

    def next(self, t: float) -> Any:
        """The next value at logical time ``t`` (seconds)."""
        raise NotImplementedError


# A factory reads its parameters through the SpecReader (recording problems) and returns the generator,
# or None when it recorded problems. Arguments: reader, field type, rng, base_dir.
Maker = Callable[[SpecReader, str, random.Random, "Path | None"], "Generator | None"]
