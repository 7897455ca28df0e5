"""Behavior conditions, without ``eval``.

``compile_condition("heartRate > 120 || heartRate < 50")`` parses a small, safe expression language
(see ``docs/model-format.md``, "Behaviors: the condition language") with a hand-written tokenizer and
recursive-descent parser, and compiles it once into nested Python closures. Python's ``eval``,
``compile`` and ``ast`` are never used, so nothing in an expression can reach Python objects.

Grammar, loosest binding first::

    or_expr     := and_expr (("or" | "||") and_expr)*
    and_expr    := not_expr (("and" | "&&") not_expr)*
    not_expr    := ("not" | "!") not_expr | comparison
    comparison  := additive [("<" | "<=" | ">" | ">=" | "==" | "!=") additive]   # no chains
    additive    := multiplicative (("+" | "-") multiplicative)*
    multiplicative := unary (("*" | "/" | "%") unary)*
    unary       := "-" unary | primary
    primary     := NUMBER | STRING | true | false | True | False | NAME | "(" or_expr ")"

Runtime semantics (``Condition.evaluate``), chosen so that a condition never raises while a fleet runs:

* A name that is missing from the values, or whose value is ``None``, is *unknown*. Comparisons and
  arithmetic with an unknown operand are unknown; ``not unknown`` is unknown; ``and``/``or`` follow
  three-valued (SQL/Kleene) logic, so ``unknown or true`` is true and ``unknown and false`` is false.
  A condition whose result is unknown evaluates to ``False``.
* Ordering comparisons (``< <= > >=``) of incompatible types (a string and a number) are unknown.
  ``==`` and ``!=`` compare any two values (a string is never equal to a number).
* Arithmetic is numeric only (``int``, ``float``, ``bool``); on anything else it is unknown.
* Division or modulo by zero makes the whole condition ``False``.
* The result is the truthiness of the final value.
"""

from __future__ import annotations

import keyword
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from iotix.behavior._shared import Fn, Values, shorten, unknown_name_reason
from iotix.errors import ConfigurationError

__all__ = [
    "MAX_CONDITION_DEPTH",
    "MAX_CONDITION_LENGTH",
    "Condition",
    "ConditionError",
    "compile_condition",
]

#: Longest accepted condition, in characters.
MAX_CONDITION_LENGTH = 1000
#: Deepest accepted nesting of parentheses and unary operators.
MAX_CONDITION_DEPTH = 50

# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class ConditionError(ConfigurationError):
    """A behavior condition that cannot be compiled.

    ``position`` is the 0-based offset of the offending text in ``expression`` (``None`` when the
    problem is the expression as a whole); the message shows it as a 1-based column.
    """

    def __init__(self, expression: str, position: int | None, reason: str, fragment: str | None = None):
        self.expression = expression
        self.position = position
        self.reason = reason
        self.fragment = fragment
        where = ""
        if position is not None:
            shown = repr(fragment) if fragment else "end of expression"
            where = f" (at column {position + 1}: {shown})"
        super().__init__(f"Invalid condition {shorten(expression)!r}: {reason}{where}")

    @property
    def column(self) -> int | None:
        """1-based column of the problem, or ``None``."""
        return None if self.position is None else self.position + 1


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------


class _Token(NamedTuple):
    kind: str  # "num" | "str" | "bool" | "name" | "op" | "end"
    value: Any  # number, string, bool, name, or canonical operator ("and", "or", "not", "<=", ...)
    pos: int
    end: int


_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER_RE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_NUMBER_TAIL_RE = re.compile(r"[A-Za-z0-9_.]*")
_KEYWORD_OPS = {"and": "and", "or": "or", "not": "not"}
_BOOLEANS = {"true": True, "false": False, "True": True, "False": False}
_FORBIDDEN_WORDS = frozenset(keyword.kwlist) - {"and", "or", "not", "True", "False"}
_TWO_CHAR_OPS = {"<=": "<=", ">=": ">=", "==": "==", "!=": "!=", "&&": "and", "||": "or"}
_ONE_CHAR_OPS = {
    "<": "<",
    ">": ">",
    "+": "+",
    "-": "-",
    "*": "*",
    "/": "/",
    "%": "%",
    "(": "(",
    ")": ")",
    "!": "not",
}
_FORBIDDEN_PAIRS = {
    "**": "the power operator '**' is not allowed",
    "//": "floor division '//' is not allowed (use '/')",
    "<<": "bit shifts are not allowed",
    ">>": "bit shifts are not allowed",
    ":=": "assignment is not allowed (use '==' to compare)",
}
_FORBIDDEN_CHARS = {
    "=": "assignment is not allowed (use '==' to compare)",
    ";": "';' is not allowed (a condition is a single expression)",
    ",": "',' is not allowed (no tuples or argument lists)",
    ":": "':' is not allowed (no lambdas, slices or dicts)",
    "`": "backticks are not allowed",
    "@": "'@' is not allowed",
    "#": "comments are not allowed",
    "{": "braces are not allowed",
    "}": "braces are not allowed",
    "]": "brackets are not allowed",
    "&": "'&' is not allowed (use 'and' or '&&')",
    "|": "'|' is not allowed (use 'or' or '||')",
    "^": "bitwise operators are not allowed",
    "~": "bitwise operators are not allowed",
    "\\": "a backslash is only allowed inside a string",
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"'}
_VALUE_KINDS = frozenset({"num", "str", "bool", "name"})


class _Tokenizer:
    """Turns an expression into tokens, refusing everything outside the language on the spot."""

    def __init__(self, expression: str):
        self.text = expression
        self.tokens: list[_Token] = []

    def error(self, pos: int | None, reason: str, fragment: str | None = None) -> ConditionError:
        """A ``ConditionError`` about this expression."""
        return ConditionError(self.text, pos, reason, fragment)

    def run(self) -> list[_Token]:
        """All tokens, ending with an ``end`` token."""
        text, i = self.text, 0
        while i < len(text):
            ch = text[i]
            if ch in " \t\r\n":
                i += 1
            elif ch.isdigit() or (ch == "." and text[i + 1 : i + 2].isdigit()):
                i = self._number(i)
            elif ch in "'\"":
                i = self._string(i)
            elif ch.isascii() and (ch.isalpha() or ch == "_"):
                i = self._word(i)
            else:
                i = self._operator(i)
        self.tokens.append(_Token("end", None, len(text), len(text)))
        return self.tokens

    def _previous_is_value(self) -> bool:
        return bool(self.tokens) and (self.tokens[-1].kind in _VALUE_KINDS or self.tokens[-1].value == ")")

    def _number(self, i: int) -> int:
        match = _NUMBER_RE.match(self.text, i)
        assert match is not None
        end = match.end()
        tail = _NUMBER_TAIL_RE.match(self.text, end)
        if tail is not None and tail.end() > end:
            bad = self.text[i : tail.end()]
            raise self.error(i, f"invalid number {bad!r}", bad)
        literal = match.group()
        value: float = float(literal) if any(c in literal for c in ".eE") else int(literal)
        self.tokens.append(_Token("num", value, i, end))
        return end

    def _string(self, start: int) -> int:
        text, quote = self.text, self.text[start]
        chars: list[str] = []
        i = start + 1
        while i < len(text):
            ch = text[i]
            if ch == quote:
                self.tokens.append(_Token("str", "".join(chars), start, i + 1))
                return i + 1
            if ch == "\\":
                chars.append(self._escape(i))
                i += 6 if text[i + 1 : i + 2] == "u" else 2
            else:
                chars.append(ch)
                i += 1
        raise self.error(start, "unterminated string", shorten(text[start:], 20))

    def _escape(self, i: int) -> str:
        code = self.text[i + 1 : i + 2]
        if code in _ESCAPES:
            return _ESCAPES[code]
        if code == "u":
            digits = self.text[i + 2 : i + 6]
            if len(digits) == 4 and all(c in "0123456789abcdefABCDEF" for c in digits):
                return chr(int(digits, 16))
            raise self.error(i, "'\\u' must be followed by 4 hex digits", self.text[i : i + 6])
        if not code:
            raise self.error(i, "unterminated string", self.text[i:])
        raise self.error(i, f"unknown escape sequence '\\{code}'", self.text[i : i + 2])

    def _word(self, i: int) -> int:
        match = _NAME_RE.match(self.text, i)
        assert match is not None
        word, end = match.group(), match.end()
        if word in _KEYWORD_OPS:
            self.tokens.append(_Token("op", _KEYWORD_OPS[word], i, end))
        elif word in _BOOLEANS:
            self.tokens.append(_Token("bool", _BOOLEANS[word], i, end))
        elif word in _FORBIDDEN_WORDS:
            raise self.error(i, f"{word!r} is not part of the condition language", word)
        elif word.startswith("__"):
            raise self.error(i, "names starting with '__' are not allowed", word)
        else:
            self.tokens.append(_Token("name", word, i, end))
        return end

    def _operator(self, i: int) -> int:
        text = self.text
        pair = text[i : i + 2]
        if pair in _TWO_CHAR_OPS:
            self.tokens.append(_Token("op", _TWO_CHAR_OPS[pair], i, i + 2))
            return i + 2
        if pair in _FORBIDDEN_PAIRS:
            raise self.error(i, _FORBIDDEN_PAIRS[pair], pair)
        ch = text[i]
        if ch == "(" and self._previous_is_value():
            previous = self.tokens[-1]
            raise self.error(previous.pos, "function calls are not allowed", text[previous.pos : i + 1])
        if ch in _ONE_CHAR_OPS:
            self.tokens.append(_Token("op", _ONE_CHAR_OPS[ch], i, i + 1))
            return i + 1
        raise self._forbidden_char(i)

    def _forbidden_char(self, i: int) -> ConditionError:
        text, ch = self.text, self.text[i]
        if ch == ".":
            attribute = _NAME_RE.match(text, i + 1)
            if attribute is not None:
                return self.error(i, "attribute access is not allowed", text[i : attribute.end()])
        if ch == "[":
            close = text.find("]", i, i + 20)
            fragment = text[i : close + 1] if close >= 0 else "["
            if self._previous_is_value():
                return self.error(i, "indexing is not allowed", fragment)
            return self.error(i, "list literals are not allowed", fragment)
        if ch == "$" and text[i + 1 : i + 2] == "{":
            close = text.find("}", i)
            fragment = text[i : close + 1] if close >= 0 else "${"
            return self.error(
                i, "'${...}' placeholders are not used in conditions: write the field name alone", fragment
            )
        if ch in _FORBIDDEN_CHARS:
            return self.error(i, _FORBIDDEN_CHARS[ch], ch)
        return self.error(i, f"character {ch!r} is not allowed", ch)


# --------------------------------------------------------------------------------------------------
# Runtime helpers shared by the compiled closures
# --------------------------------------------------------------------------------------------------


class _Unknown:
    """The single *unknown* value (missing name, ``None``, incompatible types)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN"


_UNKNOWN: Any = _Unknown()


class _DivisionByZero(Exception):
    """Raised inside a compiled condition to make the whole condition False."""


_NUMBERS = (int, float)
_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
}


def _arith(op: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """``op(a, b)`` for numbers; unknown for anything else; division by zero aborts."""
    if not (isinstance(a, _NUMBERS) and isinstance(b, _NUMBERS)):
        return _UNKNOWN
    try:
        return op(a, b)
    except ZeroDivisionError:
        raise _DivisionByZero from None
    except OverflowError:
        return _UNKNOWN


def _compare(op: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """``op(a, b)``; unknown when an operand is unknown or the types cannot be ordered."""
    if a is _UNKNOWN or b is _UNKNOWN:
        return _UNKNOWN
    try:
        return op(a, b)
    except TypeError:
        return _UNKNOWN


# --------------------------------------------------------------------------------------------------
# Compiled nodes: (closure, is-constant, constant value, is-name, name)
# --------------------------------------------------------------------------------------------------


class _Node(NamedTuple):
    fn: Fn
    constant: bool = False
    value: Any = None
    name: str | None = None


def _literal(value: Any) -> _Node:
    def literal(_values: Values) -> Any:
        return value

    return _Node(literal, constant=True, value=value)


def _name(name: str) -> _Node:
    def lookup(values: Values) -> Any:
        value = values.get(name)
        return _UNKNOWN if value is None else value

    return _Node(lookup, name=name)


def _comparison(op_name: str, left: _Node, right: _Node) -> _Node:
    op = _COMPARISONS[op_name]
    if left.name is not None and right.constant:
        name, constant = left.name, right.value

        def name_vs_constant(values: Values) -> Any:
            # The hot path: ``heartRate > 120``.
            a = values.get(name)
            if a is None:
                return _UNKNOWN
            try:
                return op(a, constant)
            except TypeError:
                return _UNKNOWN

        return _Node(name_vs_constant)
    lf, rf = left.fn, right.fn

    def compare(values: Values) -> Any:
        return _compare(op, lf(values), rf(values))

    return _Node(compare)


def _arithmetic_chain(first: _Node, rest: list[tuple[str, _Node]]) -> _Node:
    if len(rest) == 1:
        op, lf, rf = _ARITHMETIC[rest[0][0]], first.fn, rest[0][1].fn

        def binary(values: Values) -> Any:
            return _arith(op, lf(values), rf(values))

        return _Node(binary)
    head = first.fn
    steps = [(_ARITHMETIC[name], node.fn) for name, node in rest]

    def chain(values: Values) -> Any:
        acc = head(values)
        for op, fn in steps:
            acc = _arith(op, acc, fn(values))
        return acc

    return _Node(chain)


def _negate(operand: _Node) -> _Node:
    fn = operand.fn

    def negative(values: Values) -> Any:
        value = fn(values)
        return -value if isinstance(value, _NUMBERS) else _UNKNOWN

    return _Node(negative)


def _logical_not(operand: _Node) -> _Node:
    fn = operand.fn

    def logical_not(values: Values) -> Any:
        value = fn(values)
        return _UNKNOWN if value is _UNKNOWN else not value

    return _Node(logical_not)


def _logical_and(operands: list[_Node]) -> _Node:
    if len(operands) == 2:
        return _logical_and2(operands[0].fn, operands[1].fn)
    fns = [node.fn for node in operands]

    def logical_and(values: Values) -> Any:
        unknown = False
        for fn in fns:
            value = fn(values)
            if value is _UNKNOWN:
                unknown = True
            elif not value:
                return False
        return _UNKNOWN if unknown else True

    return _Node(logical_and)


def _logical_or(operands: list[_Node]) -> _Node:
    if len(operands) == 2:
        return _logical_or2(operands[0].fn, operands[1].fn)
    fns = [node.fn for node in operands]

    def logical_or(values: Values) -> Any:
        unknown = False
        for fn in fns:
            value = fn(values)
            if value is _UNKNOWN:
                unknown = True
            elif value:
                return True
        return _UNKNOWN if unknown else False

    return _Node(logical_or)


def _logical_and2(first: Fn, second: Fn) -> _Node:
    """``a and b``: the common case, without the loop."""

    def logical_and2(values: Values) -> Any:
        a = first(values)
        if a is not _UNKNOWN and not a:
            return False
        b = second(values)
        if b is not _UNKNOWN and not b:
            return False
        return _UNKNOWN if a is _UNKNOWN or b is _UNKNOWN else True

    return _Node(logical_and2)


def _logical_or2(first: Fn, second: Fn) -> _Node:
    """``a or b``: the common case, without the loop."""

    def logical_or2(values: Values) -> Any:
        a = first(values)
        if a is not _UNKNOWN and a:
            return True
        b = second(values)
        if b is not _UNKNOWN and b:
            return True
        return _UNKNOWN if a is _UNKNOWN or b is _UNKNOWN else False

    return _Node(logical_or2)


# --------------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------------


class _Parser:
    """Recursive descent over the tokens, building closures as it goes."""

    def __init__(self, expression: str, tokens: list[_Token], allowed: frozenset[str] | None):
        self.text = expression
        self.tokens = tokens
        self.index = 0
        self.depth = 0
        self.allowed = allowed
        self.names: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at_op(self, *ops: str) -> bool:
        token = self.current
        return token.kind == "op" and token.value in ops

    def source(self, token: _Token) -> str:
        return self.text[token.pos : token.end]

    def error(self, token: _Token, reason: str) -> ConditionError:
        return ConditionError(self.text, token.pos, reason, self.source(token) or None)

    def enter(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_CONDITION_DEPTH:
            reason = f"the expression is nested too deeply (more than {MAX_CONDITION_DEPTH} levels)"
            raise self.error(token, reason)

    # -- grammar ---------------------------------------------------------------------------------

    def parse(self) -> _Node:
        node = self.or_expr()
        token = self.current
        if token.kind != "end":
            if token.value == ")":
                raise self.error(token, "unbalanced ')'")
            found = self.source(token)
            raise self.error(token, f"expected an operator or the end of the expression, found {found!r}")
        return node

    def or_expr(self) -> _Node:
        operands = [self.and_expr()]
        while self.at_op("or"):
            self.advance()
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else _logical_or(operands)

    def and_expr(self) -> _Node:
        operands = [self.not_expr()]
        while self.at_op("and"):
            self.advance()
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else _logical_and(operands)

    def not_expr(self) -> _Node:
        if not self.at_op("not"):
            return self.comparison()
        token = self.advance()
        self.enter(token)
        node = _logical_not(self.not_expr())
        self.depth -= 1
        return node

    def comparison(self) -> _Node:
        left = self.additive()
        if not self.at_op(*_COMPARISONS):
            return left
        op = self.advance().value
        right = self.additive()
        if self.at_op(*_COMPARISONS):
            raise self.error(self.current, "chained comparisons are not allowed (write 'a < b and b < c')")
        return _comparison(op, left, right)

    def additive(self) -> _Node:
        first = self.multiplicative()
        rest: list[tuple[str, _Node]] = []
        while self.at_op("+", "-"):
            rest.append((self.advance().value, self.multiplicative()))
        return _arithmetic_chain(first, rest) if rest else first

    def multiplicative(self) -> _Node:
        first = self.unary()
        rest: list[tuple[str, _Node]] = []
        while self.at_op("*", "/", "%"):
            rest.append((self.advance().value, self.unary()))
        return _arithmetic_chain(first, rest) if rest else first

    def unary(self) -> _Node:
        if not self.at_op("-"):
            return self.primary()
        token = self.advance()
        self.enter(token)
        operand = self.unary()
        self.depth -= 1
        if operand.constant and isinstance(operand.value, _NUMBERS):
            return _literal(-operand.value)
        return _negate(operand)

    def primary(self) -> _Node:
        token = self.current
        if token.kind in ("num", "str", "bool"):
            self.advance()
            return _literal(token.value)
        if token.kind == "name":
            self.advance()
            return self.name(token)
        if token.kind == "op" and token.value == "(":
            return self.parenthesised()
        raise self.unexpected(token)

    def name(self, token: _Token) -> _Node:
        name = token.value
        if self.allowed is not None and name not in self.allowed:
            raise self.error(token, unknown_name_reason("name", name, self.allowed))
        self.names.add(name)
        return _name(name)

    def parenthesised(self) -> _Node:
        opening = self.advance()
        self.enter(opening)
        node = self.or_expr()
        if not self.at_op(")"):
            token = self.current
            if token.kind == "end":
                fragment = self.text[opening.pos : opening.pos + 10]
                raise ConditionError(self.text, opening.pos, "missing ')' for this '('", fragment)
            raise self.error(token, f"expected ')', found {self.source(token)!r}")
        self.advance()
        self.depth -= 1
        return node

    def unexpected(self, token: _Token) -> ConditionError:
        if token.kind == "end":
            if not self.tokens[:-1]:
                return ConditionError(self.text, None, "the expression is empty")
            return self.error(token, "the expression ends where a value is expected")
        if token.value == "not":
            return self.error(token, "'not' binds more loosely than comparisons and arithmetic: put it in parentheses")
        return self.error(token, f"expected a value, found {self.source(token)!r}")


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


class Condition:
    """A compiled condition. Build it with ``compile_condition``; ``evaluate`` never raises."""

    __slots__ = ("_fn", "expression", "names")

    def __init__(self, expression: str, fn: Fn, names: frozenset[str]):
        self.expression = expression
        self.names = names
        self._fn = fn

    def evaluate(self, values: Mapping[str, Any]) -> bool:
        """True when the condition holds for ``values`` (see the module docstring for the rules)."""
        try:
            result = self._fn(values)
        except _DivisionByZero:
            return False
        return result is not _UNKNOWN and bool(result)

    def __repr__(self) -> str:
        return f"Condition({self.expression!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other.expression == self.expression

    def __hash__(self) -> int:
        return hash(("Condition", self.expression))


def compile_condition(expression: str, allowed_names: Iterable[str] | None = None) -> Condition:
    """Parse ``expression`` once into a fast ``Condition``.

    ``allowed_names``, when given, are the only names the expression may use (the telemetry field
    names of a model); an unknown name is an error listing them. Raises ``ConditionError`` for
    anything outside the language, naming the column and the reason.
    """
    if not isinstance(expression, str):
        reason = f"a condition must be a string, got {type(expression).__name__}"
        raise ConditionError(repr(expression), None, reason)
    if len(expression) > MAX_CONDITION_LENGTH:
        size = f"{len(expression):,} characters; the limit is {MAX_CONDITION_LENGTH:,}"
        raise ConditionError(expression, None, f"the expression is too long ({size})")
    allowed = None if allowed_names is None else frozenset(allowed_names)
    tokens = _Tokenizer(expression).run()
    parser = _Parser(expression, tokens, allowed)
    node = parser.parse()
    return Condition(expression, node.fn, frozenset(parser.names))
