"""Semantic checks of model data: what the JSON Schema cannot express.

The checks run after the schema and tolerate data the schema rejected: each one looks only at the parts
that have the expected shape, so one file's schema and semantic problems are reported together. Generator
parameters are checked only for telemetry fields the schema accepted (``broken`` lists the schema error
paths), because the generator checks expect well-typed parameters.

Checks here: unique names, reserved field names, ``${var}`` templates, ``host``/``broker`` conflicts,
command topics, behavior conditions, the raw payload field, the field type of built-in custom handlers,
and generator semantics (delegated to ``iotix.generate.check_generator``, which also checks that the
generator can feed the field's type: numbers for ``random``, an object for ``gps``, ``choice``/``constant``
values of the field's type, ...).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from iotix.behavior import ConditionError, TemplateError, compile_condition, compile_template
from iotix.generate import check_generator
from iotix.model.errors import Problem
from iotix.model.schema_errors import PathParts, format_path, show
from iotix.model.types import is_firmware_update

#: Variables every template may use.
BASE_VARIABLES: tuple[str, ...] = ("deviceId", "index", "modelId", "fleet", "seq", "ts")
#: Variables of command topics (and ``connection.commandTopicPattern``).
COMMAND_VARIABLES: tuple[str, ...] = (*BASE_VARIABLES, "command")
#: Telemetry field names that would collide with payload keys or template variables.
RESERVED_FIELD_NAMES: frozenset[str] = frozenset(BASE_VARIABLES)
#: Field types the built-in custom handlers produce (other generator/type pairs: ``check_generator``).
BUILTIN_HANDLER_FIELD_TYPES: dict[str, str] = {"ecg_generator": "binary"}

# connection keys holding templates, with the variables they may use
_CONNECTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "clientIdPattern": BASE_VARIABLES,
    "topicPattern": BASE_VARIABLES,
    "commandTopicPattern": COMMAND_VARIABLES,
    "path": BASE_VARIABLES,
    "url": BASE_VARIABLES,
    "headers": (*BASE_VARIABLES, "token"),
    "registration": BASE_VARIABLES,
    "topic": BASE_VARIABLES,
    "lastWill": BASE_VARIABLES,
    "tls": ("deviceId", "index", "modelId", "fleet"),  # file paths: certs/${deviceId}.pem
}

# HTTP connection keys that belong to one flow only
_IOTFLOW_ONLY_KEYS = ("heartbeatIntervalMs", "onConflict", "registration", "telemetryOver")
_GENERIC_ONLY_KEYS = ("bodyTemplate", "token")

_PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "string": (str,),
    "object": (dict,),
    "array": (list,),
}


def semantic_problems(
    data: dict[str, Any],
    base_dir: Path | None,
    broken: Collection[PathParts],
    data_dirs: Iterable[str | Path] = (),
) -> list[Problem]:
    """Every semantic problem of ``data``; ``broken`` holds the paths the schema already rejected.

    ``data_dirs``: data roots replay files may lie under besides ``base_dir`` (``IOTIX_DATA_PATH`` too).
    """
    return [
        *_unique_names(data, "telemetry", "telemetry field"),
        *_unique_names(data, "commands", "command"),
        *_unique_names(data, "behaviors", "behavior"),
        *_reserved_field_names(data),
        *_connection_problems(data),
        *_command_problems(data),
        *_behavior_problems(data),
        *_payload_problems(data),
        *_generator_problems(data, base_dir, broken, data_dirs),
    ]


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _entries(data: dict[str, Any], key: str) -> list[tuple[int, dict[str, Any]]]:
    """``(index, item)`` of the mappings in the list ``data[key]`` (anything else is skipped)."""
    items = data.get(key)
    if not isinstance(items, list):
        return []
    return [(i, item) for i, item in enumerate(items) if isinstance(item, dict)]


def field_types(data: dict[str, Any]) -> dict[str, str]:
    """Telemetry field name -> field type, for the well-formed fields (first one wins on duplicates)."""
    types: dict[str, str] = {}
    for _, item in _entries(data, "telemetry"):
        name, field_type = item.get("name"), item.get("type")
        if isinstance(name, str) and isinstance(field_type, str):
            types.setdefault(name, field_type)
    return types


def _join(prefix: PathParts, relative: str) -> str:
    """``telemetry[0].generator`` + ``max`` (or ``[1]``, or ``""``) -> one path string."""
    base = format_path(prefix)
    if not relative:
        return base
    return base + relative if relative.startswith("[") else f"{base}.{relative}"


def _is_broken(prefix: PathParts, broken: Collection[PathParts]) -> bool:
    return any(path[: len(prefix)] == prefix for path in broken)


def template_problems(value: Any, parts: PathParts, allowed: Iterable[str]) -> list[Problem]:
    """Unknown or malformed ``${var}`` in every string of ``value`` (recursing into objects and lists)."""
    names = tuple(allowed)
    if isinstance(value, str):
        try:
            compile_template(value, names)
        except TemplateError as err:
            return [(format_path(parts), err.reason)]
        return []
    problems: list[Problem] = []
    if isinstance(value, dict):
        for key, item in value.items():
            problems += template_problems(key, (*parts, key), names)
            problems += template_problems(item, (*parts, key), names)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems += template_problems(item, (*parts, index), names)
    return problems


# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------


def _unique_names(data: dict[str, Any], key: str, what: str) -> list[Problem]:
    """Each ``data[key][i].name`` must differ from the earlier ones."""
    first_seen: dict[str, int] = {}
    problems: list[Problem] = []
    for index, item in _entries(data, key):
        name = item.get("name")
        if not isinstance(name, str):
            continue
        if name in first_seen:
            earlier = format_path((key, first_seen[name]))
            problems.append((format_path((key, index, "name")), f"duplicate {what} name {show(name)} (also {earlier})"))
        else:
            first_seen[name] = index
    return problems


def _reserved_field_names(data: dict[str, Any]) -> list[Problem]:
    """Field names may not shadow the payload keys and template variables."""
    reserved = ", ".join(BASE_VARIABLES)
    return [
        (
            format_path(("telemetry", index, "name")),
            f"{show(item['name'])} is reserved (reserved names: {reserved})",
        )
        for index, item in _entries(data, "telemetry")
        if item.get("name") in RESERVED_FIELD_NAMES
    ]


# --------------------------------------------------------------------------------------------------
# Connection and commands
# --------------------------------------------------------------------------------------------------


#: Connection keys that belong to one protocol (keys not listed here, like host and port, serve every protocol).
PROTOCOL_KEYS: dict[str, frozenset[str]] = {
    "mqtt": frozenset(
        {
            "clientIdPattern",
            "topicPattern",
            "keepAlive",
            "cleanSession",
            "mqttVersion",
            "lastWill",
            "commandTopicPattern",
            "connectTimeoutMs",
            "maxInflight",
            "pubackTimeoutMs",
        }
    ),
    "coap": frozenset({"path", "confirmable", "mode", "serverPort", "ackTimeoutMs", "maxRetransmit"}),
    "http": frozenset(
        {
            "url",
            "headers",
            "token",
            "bodyTemplate",
            "successStatuses",
            "timeoutMs",
            "maxConnections",
            "flow",
            "heartbeatIntervalMs",
            "onConflict",
            "registration",
            "telemetryOver",
        }
    ),
    "kafka": frozenset({"bootstrap", "topic", "acks", "compression", "lingerMs", "maxBlockMs", "producers", "sasl"}),
}


def _protocol_key_problems(protocol: Any, connection: dict[str, Any]) -> list[Problem]:
    """Keys of another protocol in this model's connection (a copied block, a wrong protocol)."""
    if protocol not in PROTOCOL_KEYS:
        return []
    problems = []
    for other, keys in PROTOCOL_KEYS.items():
        if other == protocol:
            continue
        for key in sorted(keys & connection.keys() - PROTOCOL_KEYS[protocol]):
            problems.append(
                (format_path(("connection", key)), f"is a {other} key; this model's protocol is '{protocol}'")
            )
    return problems


def _connection_problems(data: dict[str, Any]) -> list[Problem]:
    connection = data.get("connection")
    if not isinstance(connection, dict):
        return []
    problems: list[Problem] = _protocol_key_problems(data.get("protocol"), connection)
    if "host" in connection and "broker" in connection:
        problems.append(
            (format_path(("connection", "broker")), "broker is an alias of host: give one of them, not both")
        )
    for key, allowed in _CONNECTION_TEMPLATES.items():
        if key in connection:
            problems += template_problems(connection[key], ("connection", key), allowed)
    if "bodyTemplate" in connection:
        body_variables = (*BASE_VARIABLES, *field_types(data))
        problems += template_problems(connection["bodyTemplate"], ("connection", "bodyTemplate"), body_variables)
    return problems + _http_flow_problems(connection) + unused_key_problems(data.get("protocol"), connection)


def unused_key_problems(protocol: Any, connection: dict[str, Any]) -> list[Problem]:
    """Keys the schema accepts that this model's protocol, mode or flow would not use: refused, never ignored.

    (Keys of another protocol altogether are :data:`PROTOCOL_KEYS`'s business.)
    """
    if not isinstance(protocol, str):
        return []
    unused: dict[str, str] = {}
    mqtt_telemetry = protocol == "mqtt" or (
        protocol == "http" and connection.get("flow") == "iotflow" and connection.get("telemetryOver") == "mqtt"
    )
    if not mqtt_telemetry and "qos" in connection:
        unused["qos"] = "MQTT QoS: only for protocol 'mqtt' (and IoTFlow devices with telemetryOver 'mqtt')"
    if protocol in ("mqtt", "kafka") and "method" in connection:
        unused["method"] = "only for protocols 'coap' and 'http'"
    if protocol == "coap":
        if "tls" in connection:
            unused["tls"] = (
                "CoAP over DTLS is not supported: IoTix sends CoAP over plain UDP only; remove connection.tls"
            )
        for key in ("username", "password"):
            if key in connection:
                unused[key] = "CoAP has no user name/password login; remove it"
        if connection.get("mode") == "server":
            why = "not used in CoAP server mode (devices listen on serverPort + index and answer requests)"
            for key in ("path", "method", "confirmable", "ackTimeoutMs", "maxRetransmit"):
                if key in connection:
                    unused[key] = why
        elif "serverPort" in connection:
            unused["serverPort"] = "only for connection.mode 'server'"
    if protocol == "kafka":
        for key in ("username", "password"):
            if key in connection:
                unused[key] = f"Kafka logs in with SASL: use connection.sasl.{key} (and connection.sasl.mechanism)"
    if protocol == "http":
        url = connection.get("url")
        if "tls" in connection and isinstance(url, str) and url.lower().startswith("http://"):
            unused["tls"] = f"TLS applies to https:// URLs only, and connection.url is {show(url)}: use https://"
        if "username" in connection:
            unused["username"] = "HTTP has no user name: the password (or connection.token) is the bearer token"
    request_based = protocol in ("http", "kafka") or (protocol == "coap" and connection.get("mode") != "server")
    if protocol == "coap" and connection.get("confirmable") is False:
        request_based = False
    if protocol == "http" and connection.get("telemetryOver") == "mqtt":
        request_based = False
    if not request_based:
        for key in ("retry", "circuitBreaker"):
            if key in connection:
                unused[key] = "only for request-based sends (HTTP, CoAP confirmable client requests, Kafka)"
    return [(format_path(("connection", key)), message) for key, message in unused.items()]


def _http_flow_problems(connection: dict[str, Any]) -> list[Problem]:
    """Keys of one HTTP flow given to the other (``flow`` generic vs iotflow)."""
    flow = "iotflow" if connection.get("flow") == "iotflow" else "generic"
    wrong, other = (_GENERIC_ONLY_KEYS, "generic") if flow == "iotflow" else (_IOTFLOW_ONLY_KEYS, "iotflow")
    return [
        (format_path(("connection", key)), f"only for connection.flow '{other}' (this model's flow is '{flow}')")
        for key in wrong
        if key in connection
    ]


def _command_problems(data: dict[str, Any]) -> list[Problem]:
    connection = data.get("connection")
    has_pattern = isinstance(connection, dict) and "commandTopicPattern" in connection
    problems: list[Problem] = []
    for index, command in _entries(data, "commands"):
        for key in ("topic", "responseTopic"):
            if key in command:
                problems += template_problems(command[key], ("commands", index, key), COMMAND_VARIABLES)
        if data.get("protocol") == "mqtt" and "topic" not in command and not has_pattern:
            problems.append(
                (
                    format_path(("commands", index, "topic")),
                    "required for protocol 'mqtt' when connection.commandTopicPattern is not set",
                )
            )
        if "durationMs" in command and not is_firmware_update(str(command.get("name", ""))):
            problems.append(
                (
                    format_path(("commands", index, "durationMs")),
                    "only an updateFirmware command has a duration (its download); remove it",
                )
            )
        problems += _parameter_problems(command, index)
    return problems


def _parameter_problems(command: dict[str, Any], index: int) -> list[Problem]:
    """Parameter names unique; a ``default`` of the parameter's type."""
    problems = _unique_names(command, "parameters", "parameter")
    problems = [(f"{format_path(('commands', index))}.{path}", message) for path, message in problems]
    for position, parameter in _entries(command, "parameters"):
        expected = _PARAMETER_TYPES.get(str(parameter.get("type")))
        if expected is None or "default" not in parameter:
            continue
        default = parameter["default"]
        bool_mismatch = isinstance(default, bool) and bool not in expected
        if bool_mismatch or not isinstance(default, expected):
            problems.append(
                (
                    format_path(("commands", index, "parameters", position, "default")),
                    f"must be of the parameter's type {parameter['type']!r}, got {show(default)}",
                )
            )
    return problems


# --------------------------------------------------------------------------------------------------
# Behaviors
# --------------------------------------------------------------------------------------------------


def _behavior_problems(data: dict[str, Any]) -> list[Problem]:
    fields = tuple(field_types(data))
    action_variables = (*BASE_VARIABLES, *fields)
    problems: list[Problem] = []
    for index, behavior in _entries(data, "behaviors"):
        condition, parts = behavior.get("condition"), ("behaviors", index, "condition")
        trigger = behavior.get("trigger")
        if condition is None and isinstance(trigger, dict):  # the iotix format: trigger {type: condition, ...}
            condition, parts = trigger.get("condition"), ("behaviors", index, "trigger", "condition")
        if isinstance(condition, str) and condition.strip():
            problems += _condition_problems(condition, parts, fields)
        action = behavior.get("action")
        if isinstance(action, dict):
            for key in ("topic", "payload"):
                if key in action:
                    problems += template_problems(action[key], ("behaviors", index, "action", key), action_variables)
            if isinstance(action.get("topic"), str):
                problems += _destination_problems(data.get("protocol"), action["topic"], index)
    return problems


_KAFKA_TOPIC_TEXT = re.compile(r"^[A-Za-z0-9._-]*$")


def _destination_problems(protocol: Any, topic: str, index: int) -> list[Problem]:
    """Whether a behavior's destination can be one for the protocol: a Kafka topic name (its text outside
    ``${...}``), an HTTP URL or path (a URL only ``http://`` or ``https://``)."""
    where = format_path(("behaviors", index, "action", "topic"))
    literal = re.sub(r"\$\{[^}]*\}", "", topic)
    if protocol == "kafka" and not _KAFKA_TOPIC_TEXT.match(literal):
        return [(where, f"{show(topic)} is not a Kafka topic name: letters, digits, '.', '_' and '-' only")]
    if protocol == "http" and "://" in topic and not topic.lower().startswith(("http://", "https://", "${")):
        return [(where, f"{show(topic)}: an HTTP destination is a path or an http:// or https:// URL")]
    return []


def _condition_problems(condition: str, parts: PathParts, fields: tuple[str, ...]) -> list[Problem]:
    try:
        compile_condition(condition, fields)
    except ConditionError as err:
        message = str(err)
        return [(format_path(parts), message[:1].lower() + message[1:])]
    return []


# --------------------------------------------------------------------------------------------------
# Payload
# --------------------------------------------------------------------------------------------------


def _payload_problems(data: dict[str, Any]) -> list[Problem]:
    """``payload.field`` must name a binary field; ``raw`` needs one binary field to send."""
    payload = data.get("payload")
    if not isinstance(payload, dict):
        return []
    types = field_types(data)
    binary = [name for name, field_type in types.items() if field_type == "binary"]
    listing = ", ".join(binary) or "none"
    chosen = payload.get("field")
    if isinstance(chosen, str):
        if chosen not in types:
            return [
                (
                    format_path(("payload", "field")),
                    f"no telemetry field named {show(chosen)} (binary fields: {listing})",
                )
            ]
        if types[chosen] != "binary":
            return [
                (
                    format_path(("payload", "field")),
                    f"must name a binary field, {show(chosen)} has type {types[chosen]!r} (binary fields: {listing})",
                )
            ]
        return []
    if payload.get("format") == "raw" and len(binary) != 1:
        return [
            (
                format_path(("payload", "format")),
                "format 'raw' needs exactly one binary telemetry field, or payload.field naming one; "
                f"found {len(binary)} (binary fields: {listing})",
            )
        ]
    return []


# --------------------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------------------


def _generator_problems(
    data: dict[str, Any], base_dir: Path | None, broken: Collection[PathParts], data_dirs: Iterable[str | Path]
) -> list[Problem]:
    """``iotix.generate.check_generator`` on each telemetry field the schema accepted."""
    problems: list[Problem] = []
    for index, item in _entries(data, "telemetry"):
        if _is_broken(("telemetry", index), broken):
            continue
        generator, field_type = item["generator"], item["type"]
        handler_type = _handler_field_type(generator)
        if handler_type is not None and handler_type != field_type:
            handler = generator["handler"]
            message = f"handler {handler!r} produces {handler_type} values: use type {handler_type!r}"
            problems.append((format_path(("telemetry", index, "type")), f"{message}, got {field_type!r}"))
            field_type = handler_type  # check the parameters as if the type were right
        prefix = ("telemetry", index, "generator")
        for relative, message in _check_generator(generator, field_type, base_dir, data_dirs):
            problems.append((_join(prefix, relative), message))
    return problems


def _handler_field_type(generator: dict[str, Any]) -> str | None:
    """The field type a built-in custom handler needs, or None (not custom, or any type will do)."""
    if generator.get("type") != "custom":
        return None
    return BUILTIN_HANDLER_FIELD_TYPES.get(str(generator.get("handler")))


def _check_generator(
    spec: dict[str, Any], field_type: str, base_dir: Path | None, data_dirs: Iterable[str | Path]
) -> list[Problem]:
    try:
        return list(check_generator(spec, field_type, base_dir, data_dirs))
    except Exception as exc:  # a bug in a checker must still end as a model problem, not a traceback
        return [("", f"could not check the generator: {type(exc).__name__}: {exc}")]
