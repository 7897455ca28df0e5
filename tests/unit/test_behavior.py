"""Unit tests of iotix.behavior: the safe condition language and ${name} templates."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest

from iotix.behavior import (
    MAX_CONDITION_DEPTH,
    MAX_CONDITION_LENGTH,
    Condition,
    ConditionError,
    TemplateError,
    compile_condition,
    compile_template,
    format_embedded,
    template_names,
)
from iotix.errors import ConfigurationError


def holds(expression: str, **values: Any) -> bool:
    return compile_condition(expression).evaluate(values)


# --------------------------------------------------------------------------------------------------
# Conditions: the documented examples
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heart_rate", "expected"), [(130, True), (121, True), (120, False), (70, False), (50, False), (49, True)]
)
def test_heart_rate_example(heart_rate: int, expected: bool) -> None:
    condition = compile_condition("heartRate > 120 || heartRate < 50")
    assert condition.evaluate({"heartRate": heart_rate}) is expected
    assert condition.names == frozenset({"heartRate"})
    assert condition.expression == "heartRate > 120 || heartRate < 50"


@pytest.mark.parametrize(
    ("cpu", "memory", "expected"), [(95, 85, True), (95, 80, False), (90, 85, False), (10, 10, False)]
)
def test_cpu_memory_example(cpu: float, memory: float, expected: bool) -> None:
    condition = compile_condition("cpuUsage > 90 and memoryUsage > 80", ["cpuUsage", "memoryUsage"])
    assert condition.evaluate({"cpuUsage": cpu, "memoryUsage": memory}) is expected
    assert condition.names == frozenset({"cpuUsage", "memoryUsage"})


def test_evaluate_returns_bool_and_accepts_any_mapping() -> None:
    class Values(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            return {"x": 3}[key]

        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(["x"])

        def __len__(self) -> int:
            return 1

    condition = compile_condition("x + 1")
    assert condition.evaluate(Values()) is True
    assert condition.evaluate({"x": -1}) is False


# --------------------------------------------------------------------------------------------------
# Conditions: literals, operators, precedence
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1", True),
        ("0", False),
        ("0.0", False),
        ("1.5 == 1.5", True),
        (".5 == 0.5", True),
        ("5. == 5", True),
        ("1e3 == 1000", True),
        ("1E-3 == 0.001", True),
        ("2.5e+2 == 250", True),
        ("007 == 7", True),
        ("true", True),
        ("false", False),
        ("True", True),
        ("False", False),
        ("true == 1", True),
        ("'a' == 'a'", True),
        ("\"a\" == 'a'", True),
        ("'a' != 'b'", True),
        ("''", False),
        ("'x'", True),
        ("'it\\'s' == \"it's\"", True),
        ("'a\\nb' == \"a\\u000ab\"", True),
        ("'tab\\there' == 'tab\\u0009here'", True),
        ("'back\\\\slash' == \"back\\u005cslash\"", True),
        ('\'q\\"\' == "q\\""', True),
        ("'\\0' == '\\u0000'", True),
        ("'abc' < 'abd'", True),
    ],
)
def test_literals(expression: str, expected: bool) -> None:
    assert holds(expression) is expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3 == 7", True),
        ("(1 + 2) * 3 == 9", True),
        ("10 - 4 - 3 == 3", True),  # left associative
        ("100 / 10 / 5 == 2", True),
        ("7 % 4 == 3", True),
        ("7.5 % 2 == 1.5", True),
        ("-7 % 3 == 2", True),  # Python modulo semantics
        ("1 / 2 == 0.5", True),  # true division
        ("2 * 3 % 4 == 2", True),
        ("-2 * -3 == 6", True),
        ("- - 2 == 2", True),
        ("-(1 + 2) == -3", True),
        ("1 - -1 == 2", True),
        ("2 + 3 * 4 - 6 / 2 == 11", True),
        ("x * 2 + 1 == 7", True),
        ("-x == -3", True),
        ("1 < 2", True),
        ("2 <= 2", True),
        ("3 > 2", True),
        ("2 >= 3", False),
        ("2 == 2.0", True),
        ("2 != 2", False),
    ],
)
def test_arithmetic_and_comparisons(expression: str, expected: bool) -> None:
    assert holds(expression, x=3) is expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # and binds tighter than or
        ("true or true and false", True),
        ("(true or true) and false", False),
        ("false and false or true", True),
        ("false && false || true", True),
        # not binds looser than comparison: not (1 == 2)
        ("not 1 == 2", True),
        ("!1 == 2", True),
        ("not x > 5 and x > 1", True),  # (not (x > 5)) and (x > 1)
        ("not (x > 1 and x < 5)", False),
        ("not not true", True),
        ("!!x", True),
        ("! false", True),
        ("not 0", True),
        # comparison binds looser than arithmetic
        ("x + 1 > 3", True),
        ("x > 2 + 2", False),
        ("1 + 1 == 2 and 2 * 2 == 4", True),
        # mixed spellings
        ("x > 1 and x < 5 || false", True),
        ("x == 3 && !(x == 4)", True),
    ],
)
def test_precedence(expression: str, expected: bool) -> None:
    assert holds(expression, x=3) is expected


def test_whitespace_and_newlines_are_ignored() -> None:
    assert holds("  x\n>\t1\r\n", x=2) is True


def test_string_field_equality() -> None:
    condition = compile_condition("status == 'error' or status == \"fatal\"")
    assert condition.evaluate({"status": "error"}) is True
    assert condition.evaluate({"status": "fatal"}) is True
    assert condition.evaluate({"status": "ok"}) is False


def test_boolean_field() -> None:
    condition = compile_condition("doorOpen and temperature > 8")
    assert condition.evaluate({"doorOpen": True, "temperature": 9}) is True
    assert condition.evaluate({"doorOpen": False, "temperature": 9}) is False
    assert compile_condition("doorOpen == true").evaluate({"doorOpen": True}) is True


def test_name_on_the_right_and_between_names() -> None:
    assert holds("100 < x", x=101) is True
    assert holds("x > y", x=2, y=1) is True
    assert holds("x > y", x=1, y=2) is False


def test_names_collects_every_name_once() -> None:
    condition = compile_condition("a > 1 or (b < 2 and not c) or a == b", ["a", "b", "c", "d"])
    assert condition.names == frozenset({"a", "b", "c"})
    assert compile_condition("1 < 2").names == frozenset()


def test_names_may_start_with_one_underscore_and_contain_keywords() -> None:
    assert holds("_x > 1 and android == 1 and notable == 2 and order == 3", _x=2, android=1, notable=2, order=3)


def test_condition_repr_and_equality() -> None:
    assert repr(compile_condition("x > 1")) == "Condition('x > 1')"
    assert compile_condition("x > 1") == compile_condition("x > 1")
    assert compile_condition("x > 1") != compile_condition("x > 2")
    assert len({compile_condition("x > 1"), compile_condition("x > 1")}) == 1
    assert isinstance(compile_condition("1"), Condition)


# --------------------------------------------------------------------------------------------------
# Conditions: runtime semantics (never raise)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    ["x > 1", "x < 1", "x == 1", "x != 1", "x", "-x < 0", "x + 1 > 0", "x * 0 == 0", "not x > 1", "!x"],
)
@pytest.mark.parametrize("values", [{}, {"x": None}], ids=["missing", "none"])
def test_missing_or_none_value_is_false(expression: str, values: dict[str, Any]) -> None:
    assert compile_condition(expression).evaluate(values) is False


def test_unknown_follows_three_valued_logic() -> None:
    assert holds("x > 1 or y > 1", y=2) is True  # unknown or true
    assert holds("x > 1 or y > 1", y=0) is False  # unknown or false
    assert holds("x > 1 and y > 1", y=0) is False  # unknown and false
    assert holds("x > 1 and y > 1", y=2) is False  # unknown and true -> unknown -> False
    assert holds("not (x > 1 and y > 1)", y=0) is True  # not false
    assert holds("not (x > 1 or y > 1)", y=0) is False  # not unknown


def test_unknown_in_longer_chains() -> None:
    assert holds("x > 1 or y > 1 or z > 1", z=2) is True
    assert holds("x > 1 or y > 1 or z > 1", y=0, z=0) is False
    assert holds("x > 1 and y > 1 and z > 1", y=0, z=2) is False
    assert holds("x > 1 and y > 1 and z > 1", y=2, z=2) is False
    assert holds("not (x > 1 and y > 1 and z > 1)", y=0, z=2) is True
    assert holds("not (x > 1 or y > 1 or z > 1)", y=0, z=0) is False
    assert holds("y > 1 and z > 1 and w > 1", y=2, z=2, w=2) is True
    assert holds("y > 1 or z > 1 or w > 1", y=0, z=0, w=0) is False


@pytest.mark.parametrize(
    "expression",
    ["s < 1", "s >= 1", "1 > s", "s + 1 > 0", "s * 3 == 'aaa'", "-s == 1", "'a' < 1", "not s < 1", "g > 1"],
)
def test_incompatible_types_are_false(expression: str) -> None:
    assert holds(expression, s="a", g={"lat": 1.0}) is False


def test_equality_across_types_is_defined() -> None:
    assert holds("s == 1", s="1") is False
    assert holds("s != 1", s="1") is True


def test_string_arithmetic_is_not_allowed_at_runtime() -> None:
    assert holds("s + s == 'aa'", s="a") is False
    assert holds("'a' * 1000000000 == ''") is False


@pytest.mark.parametrize(
    "expression",
    ["x / 0 > 1", "x % 0 == 0", "x / zero > 1", "1 / (x - 3) > 0", "x / 0 > 1 or true", "not x / 0.0 > 1"],
)
def test_division_by_zero_makes_the_whole_condition_false(expression: str) -> None:
    assert holds(expression, x=3, zero=0) is False


def test_overflow_is_false_not_an_error() -> None:
    huge = int("9" * 400)
    assert holds("x / 3 > 1", x=huge) is False
    assert holds("x * 1e308 * 10 > 1", x=10) is True  # float inf, still a number


def test_booleans_are_numbers_in_arithmetic() -> None:
    assert holds("(x > 1) + (y > 1) >= 2", x=2, y=2) is True
    assert holds("(x > 1) + (y > 1) >= 2", x=2, y=0) is False


def test_nan_compares_false() -> None:
    assert holds("x > 1 or x <= 1", x=float("nan")) is False


def test_evaluate_is_fast() -> None:
    condition = compile_condition("heartRate > 120 || heartRate < 50")
    values = {"heartRate": 80}
    start = time.perf_counter()
    for _ in range(100_000):
        condition.evaluate(values)
    assert time.perf_counter() - start < 2.0


# --------------------------------------------------------------------------------------------------
# Conditions: everything that is refused, with the reason and the column
# --------------------------------------------------------------------------------------------------

REJECTED = [
    # (expression, reason fragment, 1-based column or None)
    ("__import__('os')", "names starting with '__' are not allowed", 1),
    ("x.__class__", "attribute access is not allowed", 2),
    ("heartRate.real", "attribute access is not allowed (at column 10: '.real')", 10),
    ("'abc'.upper", "attribute access is not allowed", 6),
    ("x[0]", "indexing is not allowed", 2),
    ("x > 1 and y[0] > 1", "indexing is not allowed", 12),
    ("[1, 2]", "list literals are not allowed", 1),
    ("f(x)", "function calls are not allowed", 1),
    ("x > 1 and f(x)", "function calls are not allowed (at column 11: 'f(')", 11),
    ("len ('a')", "function calls are not allowed", 1),
    ("(x)(1)", "function calls are not allowed", 3),
    ("a = 1", "assignment is not allowed", 3),
    ("a := 1", "assignment is not allowed", 3),
    ("a += 1", "assignment is not allowed", 4),
    ("a ** 2", "the power operator '**' is not allowed", 3),
    ("a // 2", "floor division '//' is not allowed", 3),
    ("a << 2", "bit shifts are not allowed", 3),
    ("a & b", "'&' is not allowed (use 'and' or '&&')", 3),
    ("a | b", "'|' is not allowed (use 'or' or '||')", 3),
    ("~a", "bitwise operators are not allowed", 1),
    ("a ^ b", "bitwise operators are not allowed", 3),
    ("lambda: 1", "'lambda' is not part of the condition language", 1),
    ("x if y else z", "'if' is not part of the condition language", 3),
    ("x in y", "'in' is not part of the condition language", 3),
    ("x is None", "'is' is not part of the condition language", 3),
    ("import os", "'import' is not part of the condition language", 1),
    ("None", "'None' is not part of the condition language", 1),
    ("a < b < c", "chained comparisons are not allowed", 7),
    ("a == b == c", "chained comparisons are not allowed", 8),
    ("1 < x > 0", "chained comparisons are not allowed", 7),
    ("'abc", "unterminated string", 1),
    ('x == "abc', "unterminated string", 6),
    ("'abc\\", "unterminated string", 5),
    ("'\\q'", "unknown escape sequence '\\q'", 2),
    ("'\\u12'", "'\\u' must be followed by 4 hex digits", 2),
    ("", "the expression is empty", None),
    ("   ", "the expression is empty", None),
    ("x >", "the expression ends where a value is expected", 4),
    ("not", "the expression ends where a value is expected", 4),
    ("x y", "expected an operator or the end of the expression, found 'y'", 3),
    ("1 2", "expected an operator or the end of the expression, found '2'", 3),
    ("x > 1 'a'", "expected an operator or the end of the expression", 7),
    ("(x > 1", "missing ')' for this '('", 1),
    ("(x > 1 y", "expected ')', found 'y'", 8),
    ("x > 1)", "unbalanced ')'", 6),
    ("()", "expected a value, found ')'", 2),
    ("x > and", "expected a value, found 'and'", 5),
    ("or x", "expected a value, found 'or'", 1),
    ("* x", "expected a value, found '*'", 1),
    ("+x", "expected a value, found '+'", 1),
    ("x + not y", "'not' binds more loosely than comparisons and arithmetic", 5),
    ("a; b", "';' is not allowed", 2),
    ("a, b", "',' is not allowed", 2),
    ("{'a': 1}", "braces are not allowed", 1),
    ("x]", "brackets are not allowed", 2),
    ("`x`", "backticks are not allowed", 1),
    ("a @ b", "'@' is not allowed", 3),
    ("x # comment", "comments are not allowed", 3),
    ("x \\ y", "a backslash is only allowed inside a string", 3),
    ("${x} > 1", "'${...}' placeholders are not used in conditions", 1),
    ("$x", "character '$' is not allowed", 1),
    ("x > 1 ? 1 : 0", "character '?' is not allowed", 7),
    ("température > 1", "character 'é' is not allowed", 5),
    ("0x1F > 1", "invalid number '0x1F'", 1),
    ("1_000 > 1", "invalid number '1_000'", 1),
    ("1.2.3", "invalid number '1.2.3'", 1),
    ("1e > 1", "invalid number '1e'", 1),
    ("1.real", "invalid number '1.real'", 1),
    (". > 1", "character '.' is not allowed", 1),
]


@pytest.mark.parametrize(("expression", "fragment", "column"), REJECTED, ids=[r[0] or "<empty>" for r in REJECTED])
def test_rejected(expression: str, fragment: str, column: int | None) -> None:
    with pytest.raises(ConditionError) as caught:
        compile_condition(expression)
    error = caught.value
    assert fragment in str(error)
    assert error.reason in str(error)
    assert error.expression == expression
    assert error.column == column
    assert error.position == (None if column is None else column - 1)
    if column is not None:
        assert f"(at column {column}:" in str(error)


def test_error_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        compile_condition("f(x)")


def test_unknown_name_lists_the_allowed_ones() -> None:
    with pytest.raises(ConditionError) as caught:
        compile_condition("cpuUsage > 90 and memUsage > 80", ["cpuUsage", "memoryUsage"])
    message = str(caught.value)
    assert "unknown name 'memUsage'" in message
    assert "did you mean 'memoryUsage'?" in message
    assert "allowed: cpuUsage, memoryUsage" in message
    assert caught.value.column == 19


def test_unknown_name_with_nothing_allowed() -> None:
    with pytest.raises(ConditionError, match=r"unknown name 'x' \(allowed: none\)"):
        compile_condition("x > 1", [])


def test_allowed_names_accept_any_iterable() -> None:
    assert compile_condition("a > b", (n for n in "ab")).evaluate({"a": 2, "b": 1}) is True


def test_booleans_and_keywords_are_not_names() -> None:
    assert compile_condition("true and not false", []).names == frozenset()


def test_too_long() -> None:
    expression = " or ".join(["x > 1"] * 200)
    assert len(expression) > MAX_CONDITION_LENGTH
    with pytest.raises(ConditionError, match="the expression is too long") as caught:
        compile_condition(expression)
    assert caught.value.position is None
    assert "..." in str(caught.value)  # the message does not repeat the whole expression


def test_longest_accepted_flat_expression_evaluates() -> None:
    expression = "+".join(["1"] * 498) + " > 0"
    assert len(expression) <= MAX_CONDITION_LENGTH
    assert holds(expression) is True
    assert holds(" and ".join(["x"] * 160), x=1) is True


@pytest.mark.parametrize(
    "template",
    [
        "(" * 51 + "x" + ")" * 51,
        "-" * 51 + "x",
        "not " * 51 + "x",
        "!" * 51 + "x",
        "-(" * 26 + "x" + ")" * 26,
    ],
)
def test_too_deep(template: str) -> None:
    with pytest.raises(ConditionError, match="nested too deeply"):
        compile_condition(template)


def test_deepest_accepted_nesting_evaluates() -> None:
    depth = MAX_CONDITION_DEPTH
    assert holds("(" * depth + "x > 1" + ")" * depth, x=2) is True
    assert holds("-" * depth + "x == x", x=2) is True


@pytest.mark.parametrize("value", [None, 1, True, ["x"]])
def test_condition_must_be_a_string(value: Any) -> None:
    with pytest.raises(ConditionError, match="a condition must be a string"):
        compile_condition(value)


# --------------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------------


def test_whole_value_keeps_the_type() -> None:
    template = compile_template({"alert": "high_cpu", "cpu": "${cpuUsage}", "ok": "${ok}", "n": "${n}"})
    rendered = template.render({"cpuUsage": 93.5, "ok": False, "n": 3})
    assert rendered == {"alert": "high_cpu", "cpu": 93.5, "ok": False, "n": 3}
    assert type(rendered["n"]) is int
    assert template.names == frozenset({"cpuUsage", "ok", "n"})


def test_whole_value_can_be_a_structure() -> None:
    assert compile_template("${gps}").render({"gps": {"lat": 1.5, "lon": 2}}) == {"lat": 1.5, "lon": 2}


def test_embedded_values_are_strings() -> None:
    template = compile_template("iotix/${modelId}/${deviceId}/telemetry")
    assert template.render({"modelId": "env-v1", "deviceId": "env-0007"}) == "iotix/env-v1/env-0007/telemetry"
    assert compile_template("cpu=${cpu}%").render({"cpu": 93.5}) == "cpu=93.5%"
    assert compile_template("${a}${b}").render({"a": 1, "b": 2}) == "12"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        ("s", "s"),
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (0.1, "0.1"),
        ({"a": [1, "é"]}, '{"a":[1,"é"]}'),
        ([1, 2], "[1,2]"),
        (b"\x00\xff", "AP8="),
    ],
)
def test_format_embedded(value: Any, text: str) -> None:
    assert format_embedded(value) == text
    assert compile_template("<${v}>").render({"v": value}) == f"<{text}>"


def test_missing_values() -> None:
    assert compile_template("${x}").render({}) is None
    assert compile_template("a/${x}/b").render({}) == "a//b"
    assert compile_template({"v": "${x}", "t": "v=${x}"}).render({"x": None}) == {"v": None, "t": "v="}


def test_nested_dicts_lists_and_keys() -> None:
    template = compile_template(
        {
            "device": "${deviceId}",
            "${field}_value": "${value}",
            "readings": [{"at": "${ts}", "tags": ["${deviceId}", "fixed", 7, None, True]}],
            "pair": ("${a}", "x${a}"),
            3: 4.5,
        }
    )
    rendered = template.render({"deviceId": "d1", "field": "temp", "value": 21, "ts": 17, "a": 1})
    assert rendered == {
        "device": "d1",
        "temp_value": 21,
        "readings": [{"at": 17, "tags": ["d1", "fixed", 7, None, True]}],
        "pair": (1, "x1"),
        3: 4.5,
    }
    assert template.names == frozenset({"deviceId", "field", "value", "ts", "a"})


def test_keys_always_render_as_strings() -> None:
    assert compile_template({"${n}": 1}).render({"n": 5}) == {"5": 1}
    assert compile_template({"${n}": 1}).render({}) == {"": 1}


def test_render_returns_a_fresh_structure() -> None:
    template = compile_template({"list": [1, 2], "inner": {"a": "b"}})
    first = template.render({})
    first["list"].append(3)
    first["inner"]["a"] = "changed"
    assert template.render({}) == {"list": [1, 2], "inner": {"a": "b"}}


@pytest.mark.parametrize("value", [42, 1.5, True, None])
def test_non_string_templates_are_constants(value: Any) -> None:
    template = compile_template(value)
    assert template.render({"x": 1}) == value
    assert template.names == frozenset()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$${x}", "${x}"),
        ("a $${x} b ${x}", "a ${x} b 1"),
        ("$$${x}", "$${x}"),  # "$" then the escape
        ("cost: $5", "cost: $5"),
        ("$", "$"),
        ("$$", "$$"),
        ("${x}$", "1$"),
        ("", ""),
        ("plain", "plain"),
    ],
)
def test_dollar_escapes(text: str, expected: str) -> None:
    assert compile_template(text, ["x"]).render({"x": 1}) == expected


def test_escaped_placeholder_is_not_a_name() -> None:
    assert compile_template("$${secret}", ["x"]).names == frozenset()


def test_unknown_variable_lists_the_allowed_ones() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template({"alert": {"cpu": "${cpuUsag}"}}, ["cpuUsage", "deviceId"])
    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert error.name == "cpuUsag"
    assert error.path == "alert.cpu"
    assert error.position == 0
    message = str(error)
    assert "unknown variable 'cpuUsag'" in message
    assert "did you mean 'cpuUsage'?" in message
    assert "allowed: cpuUsage, deviceId" in message
    assert "at alert.cpu" in message


def test_unknown_variable_in_a_key_and_a_list() -> None:
    with pytest.raises(TemplateError, match=r"at items\[1\]: unknown variable 'nope'"):
        compile_template({"items": ["${ok}", "x-${nope}"]}, ["ok"])
    with pytest.raises(TemplateError, match="unknown variable 'k'"):
        compile_template({"${k}": 1}, [])


def test_without_allowed_names_any_variable_is_accepted() -> None:
    assert compile_template("${anything}").names == frozenset({"anything"})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a/${x", "'${' without a closing '}'"),
        ("${}", "empty placeholder '${}'"),
        ("${a.b}", "invalid variable name 'a.b'"),
        ("${ x }", "invalid variable name ' x '"),
        ("${1x}", "invalid variable name '1x'"),
        ("${a-b}", "invalid variable name 'a-b'"),
    ],
)
def test_malformed_placeholders(text: str, fragment: str) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(text)
    assert fragment in str(caught.value)
    assert caught.value.template == text


def test_render_text_always_gives_a_string() -> None:
    assert compile_template("${index}").render_text({"index": 7}) == "7"
    assert compile_template("${index}").render_text({}) == ""
    assert compile_template("t/${ok}").render_text({"ok": True}) == "t/true"
    assert compile_template({"a": "${x}"}).render_text({"x": 1}) == '{"a":1}'


def test_template_repr() -> None:
    assert repr(compile_template("a${b}")) == "Template('a${b}')"


def test_template_names_is_lenient_and_recursive() -> None:
    template = {"${k}": ["${a}", "x${b}y", "$${c}", "${bad", "${}", "${d.e}", 5], "t": ("${f}",)}
    assert template_names(template) == {"k", "a", "b", "f"}
    assert template_names("iotix/${modelId}/${deviceId}") == {"modelId", "deviceId"}
    assert template_names(None) == set()
    assert template_names("$$${x}") == set()  # "$" then the escape, like compile_template
