"""``${name}`` templates: connection patterns, topics, URLs and behavior payloads.

``compile_template({"alert": "high_cpu", "cpu": "${cpuUsage}"})`` substitutes ``${name}`` in strings,
recursively in dicts (keys and values), lists and tuples. A string that is exactly ``"${x}"`` renders
as the raw value (so numbers stay numbers in JSON payloads, a missing value is ``None``); inside other
text the value is formatted for humans and JSON alike (see ``format_embedded``). ``$${x}`` is the
escape for a literal ``${x}``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from iotix.behavior._shared import Fn, Values, shorten, unknown_name_reason
from iotix.errors import ConfigurationError

__all__ = [
    "Template",
    "TemplateError",
    "compile_template",
    "format_embedded",
    "template_names",
]

# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class TemplateError(ConfigurationError):
    """A ``${name}`` template that cannot be compiled (unknown or malformed variable).

    ``template`` is the offending string, ``name`` the variable (when there is one), ``position``
    the 0-based offset of its ``${`` and ``path`` where the string sits in a dict/list template
    (``""`` at the top level, e.g. ``"payload.cpu"`` or ``"items[2]"``).
    """

    def __init__(
        self,
        template: str,
        reason: str,
        name: str | None = None,
        position: int | None = None,
        path: str = "",
    ):
        self.template = template
        self.reason = reason
        self.name = name
        self.position = position
        self.path = path
        where = f" at {path}" if path else ""
        super().__init__(f"Invalid template {shorten(template)!r}{where}: {reason}")


# --------------------------------------------------------------------------------------------------
# Compiling and rendering
# --------------------------------------------------------------------------------------------------

_PLACEHOLDER_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def format_embedded(value: Any) -> str:
    """How a value appears inside surrounding template text.

    ``None`` (or a missing value) is ``""``; booleans are ``true``/``false`` and dicts/lists compact
    JSON (matching the JSON payloads); bytes are base64; anything else is ``str(value)``.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def _split_template(text: str, allowed: frozenset[str] | None, path: str) -> list[str | tuple[str]]:
    """``text`` as literal strings and ``(name,)`` placeholders, with ``$${`` unescaped."""
    parts: list[str | tuple[str]] = []
    literal: list[str] = []
    i = 0
    while True:
        dollar = text.find("$", i)
        if dollar < 0:
            literal.append(text[i:])
            break
        literal.append(text[i:dollar])
        if text.startswith("$${", dollar):
            literal.append("${")
            i = dollar + 3
        elif text.startswith("${", dollar):
            name, i = _placeholder(text, dollar, allowed, path)
            parts.append("".join(literal))
            parts.append((name,))
            literal = []
        else:
            literal.append("$")
            i = dollar + 1
    parts.append("".join(literal))
    return [part for part in parts if part != ""]


def _placeholder(text: str, dollar: int, allowed: frozenset[str] | None, path: str) -> tuple[str, int]:
    """The variable name of the ``${...}`` at ``dollar`` and the index after its ``}``."""
    close = text.find("}", dollar + 2)
    if close < 0:
        raise TemplateError(text, "'${' without a closing '}'", position=dollar, path=path)
    name = text[dollar + 2 : close]
    if not name:
        raise TemplateError(text, "empty placeholder '${}'", position=dollar, path=path)
    if not _IDENTIFIER_RE.match(name):
        raise TemplateError(text, f"invalid variable name {name!r} (letters, digits and '_' only)", name, dollar, path)
    if allowed is not None and name not in allowed:
        raise TemplateError(text, unknown_name_reason("variable", name, allowed), name, dollar, path)
    return name, close + 1


def _compile_string(text: str, allowed: frozenset[str] | None, path: str, names: set[str]) -> Fn:
    parts = _split_template(text, allowed, path)
    names.update(part[0] for part in parts if isinstance(part, tuple))
    if not parts:
        return lambda _values: ""
    if len(parts) == 1:
        only = parts[0]
        if isinstance(only, str):
            return lambda _values: only
        name = only[0]
        return lambda values: values.get(name)  # the whole string: the raw value
    pieces: list[tuple[bool, str]] = [(True, part[0]) if isinstance(part, tuple) else (False, part) for part in parts]

    def embedded(values: Values) -> str:
        return "".join([format_embedded(values.get(p)) if is_var else p for is_var, p in pieces])

    return embedded


def _compile_key(key: Any, allowed: frozenset[str] | None, path: str, names: set[str]) -> Fn:
    """A dict key: strings are templated but always render to strings; other keys stay as they are."""
    if not isinstance(key, str):
        return lambda _values: key
    before = len(names)
    fn = _compile_string(key, allowed, path, names)
    if len(names) == before and "$" not in key:
        return lambda _values: key
    return lambda values: format_embedded(fn(values))


def _compile_object(obj: Any, allowed: frozenset[str] | None, path: str, names: set[str]) -> Fn:
    if isinstance(obj, str):
        return _compile_string(obj, allowed, path, names)
    if isinstance(obj, dict):
        items = [
            (
                _compile_key(key, allowed, f"{path}.{key}" if path else str(key), names),
                _compile_object(value, allowed, f"{path}.{key}" if path else str(key), names),
            )
            for key, value in obj.items()
        ]
        return lambda values: {k(values): v(values) for k, v in items}
    if isinstance(obj, (list, tuple)):
        fns = [_compile_object(item, allowed, f"{path}[{i}]", names) for i, item in enumerate(obj)]
        if isinstance(obj, tuple):
            return lambda values: tuple(fn(values) for fn in fns)
        return lambda values: [fn(values) for fn in fns]
    return lambda _values: obj


class Template:
    """A compiled template. Build it with ``compile_template``; ``render`` never raises."""

    __slots__ = ("_fn", "names", "template")

    def __init__(self, template: Any, fn: Fn, names: frozenset[str]):
        self.template = template
        self.names = names
        self._fn = fn

    def render(self, values: Mapping[str, Any]) -> Any:
        """The template with every ``${name}`` replaced from ``values`` (a fresh structure)."""
        return self._fn(values)

    def render_text(self, values: Mapping[str, Any]) -> str:
        """``render`` formatted as text (for topics, client ids, URLs): a whole-string ``"${index}"``
        gives ``"7"`` rather than ``7`` and a missing value ``""``; dicts/lists become compact JSON."""
        return format_embedded(self._fn(values))

    def __repr__(self) -> str:
        return f"Template({self.template!r})"


def compile_template(template: Any, allowed_names: Iterable[str] | None = None) -> Template:
    """Compile a string, dict or list template (other values are constants).

    With ``allowed_names``, a ``${name}`` not among them raises ``TemplateError`` naming the variable
    and listing the allowed ones. Malformed placeholders (``${``, ``${}``, ``${a.b}``) always raise.
    """
    allowed = None if allowed_names is None else frozenset(allowed_names)
    names: set[str] = set()
    fn = _compile_object(template, allowed, "", names)
    return Template(template, fn, frozenset(names))


def _strings(obj: Any) -> Iterator[str]:
    """Every string in ``obj``, including dict keys."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _strings(item)


def template_names(obj: Any) -> set[str]:
    """The variable names used in a string/dict/list template, without validating it.

    Lenient: ``$${x}`` escapes and malformed placeholders are skipped; ``compile_template`` is the
    validating counterpart.
    """
    return {
        match.group(1)
        for text in _strings(obj)
        for match in _PLACEHOLDER_RE.finditer(text)
        if match.group(1) is not None
    }
