"""What the condition and template compilers share: the compiled-closure types and message wording.

Both compile once into closures over a mapping of values (``Fn``); both refuse an unknown name with the
same ``did you mean`` message.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

#: The values a compiled condition or template reads (telemetry fields, template variables).
Values = Mapping[str, Any]
#: A compiled condition or template: values in, result out.
Fn = Callable[[Values], Any]


def shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, for messages."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unknown_name_reason(kind: str, name: str, allowed: frozenset[str]) -> str:
    """``unknown variable 'x' (did you mean 'y'?; allowed: a, b)``."""
    close = difflib.get_close_matches(name, sorted(allowed), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listing = ", ".join(sorted(allowed)) if allowed else "none"
    return f"unknown {kind} {name!r} ({hint}allowed: {listing})"
