"""Behavior conditions and ``${name}`` templates, without ``eval``.

Two independent halves that share only their message wording and closure types (``_shared``):

* ``iotix.behavior.conditions``: ``compile_condition("heartRate > 120 || heartRate < 50")`` parses the safe
  condition language (see ``docs/model-format.md``, "Behaviors: the condition language") with a hand-written
  tokenizer and recursive-descent parser into a ``Condition`` whose ``evaluate`` never raises.
* ``iotix.behavior.templates``: ``compile_template({"cpu": "${cpuUsage}"})`` substitutes ``${name}`` in
  strings, dicts, lists and tuples into a ``Template`` whose ``render`` never raises.

The public names of both are importable from ``iotix.behavior``.
"""

from iotix.behavior.conditions import (
    MAX_CONDITION_DEPTH,
    MAX_CONDITION_LENGTH,
    Condition,
    ConditionError,
    compile_condition,
)
from iotix.behavior.templates import Template, TemplateError, compile_template, format_embedded, template_names

__all__ = [
    "MAX_CONDITION_DEPTH",
    "MAX_CONDITION_LENGTH",
    "Condition",
    "ConditionError",
    "Template",
    "TemplateError",
    "compile_condition",
    "compile_template",
    "format_embedded",
    "template_names",
]
