"""Loading and validating device models: every malformed input ends as a ModelError naming the JSON path
of the problem and saying what was expected."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

from iotix.errors import ConfigurationError, NotFoundError
from iotix.model import (
    DeviceModel,
    ModelCollectionError,
    ModelError,
    ModelNotFoundError,
    ModelRegistry,
    UnknownModelError,
    load_model,
    load_model_dict,
    load_models,
    validate_model_dict,
)

MQTT = '{host: localhost, port: 1883, topicPattern: "iotix/${modelId}/${deviceId}/telemetry"}'
TEMPERATURE = """
  - name: temperature
    type: number
    unit: "°C"
    intervalMs: 1000
    generator: {type: random, min: 0, max: 10}
"""


def model_yaml(
    *,
    telemetry: str = TEMPERATURE,
    connection: str = MQTT,
    protocol: str = "mqtt",
    version: str = "1.0.0",
    extra: str = "",
) -> str:
    """A small valid model, with the given parts replaced (``extra`` is appended as top-level YAML)."""
    head = textwrap.dedent(
        f"""\
        id: test-model
        name: Test model
        version: {version}
        type: sensor
        protocol: {protocol}
        connection: {connection}
        telemetry:"""
    )
    return head + textwrap.indent(textwrap.dedent(telemetry).rstrip(), "  ") + "\n" + textwrap.dedent(extra)


def field(name: str, field_type: str, generator: str, interval: int = 1000) -> str:
    """One telemetry entry as YAML."""
    return f"\n- {{name: {name}, type: {field_type}, intervalMs: {interval}, generator: {generator}}}\n"


BEHAVIOR = """
behaviors:
  - name: alert
    condition: {condition!r}
    action: {{type: publish, topic: "iotix/${{deviceId}}/alerts"}}
"""


def behavior(condition: str) -> str:
    return BEHAVIOR.format(condition=condition)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ModelError) as caught:
        load_model(path)
    assert caught.value.source == str(path)
    return caught.value.problems


def assert_problem(problems: list[tuple[str, str]], path: str, fragment: str) -> None:
    matching = [message for p, message in problems if p == path]
    assert matching, f"no problem at {path!r}; got {problems}"
    assert any(fragment in message for message in matching), f"{fragment!r} not in {matching}"


# --------------------------------------------------------------------------------------------------
# Valid models
# --------------------------------------------------------------------------------------------------


def test_valid_yaml_model_builds_the_dataclasses(tmp_path: Path) -> None:
    extra = """
    commands:
      - name: reboot
        topic: "iotix/${deviceId}/cmd/${command}"
        responseTopic: "iotix/${deviceId}/cmd/${command}/response"
        parameters: [{name: delayMs, type: integer, required: false, default: 0}]
    behaviors:
      - name: hot
        condition: temperature > 8 and not (temperature >= 9.5)
        cooldownMs: 5000
        action: {type: publish, topic: "iotix/${deviceId}/alerts", payload: {t: "${temperature}"}, qos: 1}
    metadata: {vendor: ACME}
    """
    path = write(tmp_path, "m.yaml", model_yaml(extra=extra))
    model = load_model(path)
    assert isinstance(model, DeviceModel)
    assert (model.id, model.name, model.version, model.type, model.protocol) == (
        "test-model",
        "Test model",
        "1.0.0",
        "sensor",
        "mqtt",
    )
    assert model.source == path
    assert model.base_dir == tmp_path
    (temperature,) = model.telemetry
    assert (temperature.name, temperature.type, temperature.interval_ms, temperature.unit) == (
        "temperature",
        "number",
        1000,
        "°C",
    )
    assert temperature.generator == {"type": "random", "min": 0, "max": 10}
    (reboot,) = model.commands
    assert reboot.response_topic == "iotix/${deviceId}/cmd/${command}/response"
    assert reboot.parameters == ({"name": "delayMs", "type": "integer", "required": False, "default": 0},)
    (hot,) = model.behaviors
    assert hot.cooldown_ms == 5000
    assert hot.action["payload"] == {"t": "${temperature}"}
    assert model.metadata == {"vendor": "ACME"}
    assert model.payload.format == "json"


def test_valid_json_model(tmp_path: Path) -> None:
    data = {
        "$schema": "./schema/device-model.schema.json",
        "id": "json-model",
        "name": "JSON",
        "version": "2.1.0-beta.1+build.5",
        "type": "gateway",
        "protocol": "kafka",
        "connection": {"bootstrap": "localhost:9092", "topic": "telemetry", "acks": "all"},
        "telemetry": [
            {
                "name": "up",
                "type": "boolean",
                "intervalMs": 500,
                "generator": {"type": "constant", "value": True},
            }
        ],
    }
    model = load_model(write(tmp_path, "m.json", json.dumps(data)))
    assert model.id == "json-model"
    assert model.telemetry[0].generator == {"type": "constant", "value": True}


def test_load_model_dict_copies_the_data_and_applies_defaults() -> None:
    data = {
        "id": "d",
        "name": "D",
        "version": "0.1.0",
        "type": "sensor",
        "protocol": "mqtt",
        "connection": {"broker": "mqtt.local", "topicPattern": "t/${deviceId}"},
        "telemetry": [
            {
                "name": "ecg",
                "type": "binary",
                "intervalMs": 400,
                "generator": {"type": "custom", "handler": "ecg_generator"},
            }
        ],
        "payload": {"format": "raw"},
    }
    model = load_model_dict(data)
    assert model.source is None and model.base_dir is None
    assert model.connection["host"] == "mqtt.local"  # broker is an alias of host
    assert "host" not in data["connection"]  # the caller's dict is untouched
    assert model.payload.field == "ecg"  # raw: the only binary field
    assert model.description == "" and model.commands == () and model.behaviors == ()


def test_load_model_dict_base_dir_defaults_to_the_source_folder(tmp_path: Path) -> None:
    write(tmp_path, "data/values.csv", "v\n1\n2\n")
    data = _minimal("replay")
    data["telemetry"] = [
        {
            "name": "v",
            "type": "integer",
            "intervalMs": 100,
            "generator": {"type": "replay", "dataFile": "data/values.csv", "column": "v"},
        }
    ]
    model = load_model_dict(data, source=tmp_path / "r.yaml")  # the CSV resolves against tmp_path
    assert model.base_dir == tmp_path
    assert model.source == tmp_path / "r.yaml"


def test_validate_model_dict_returns_problems_without_raising() -> None:
    assert validate_model_dict([1, 2]) == [("(root)", "the top level must be a mapping of keys to values, got list")]


# --------------------------------------------------------------------------------------------------
# Malformed models: each reports the exact JSON path and what was expected
# --------------------------------------------------------------------------------------------------

# (case id, file name, content, extra files, expected path, message fragment)
MALFORMED = [
    (
        "interval-as-string",
        "m.yaml",
        model_yaml(
            telemetry=field("temperature", "number", "{type: random, min: 0, max: 1}").replace("1000", '"1000"')
        ),
        {},
        "telemetry[0].intervalMs",
        "expected an integer, got string '1000'",
    ),
    (
        "unknown-generator",
        "m.yaml",
        model_yaml(telemetry=field("temperature", "number", "{type: gaussian}")),
        {},
        "telemetry[0].generator.type",
        "unknown generator type 'gaussian' (expected one of: random, sequence, constant",
    ),
    (
        "min-greater-than-max",
        "m.yaml",
        model_yaml(telemetry=field("temperature", "number", "{type: random, min: 10, max: 5}")),
        {},
        "telemetry[0].generator.max",
        "must be >= min (10), got 5",
    ),
    (
        "missing-name",
        "m.yaml",
        model_yaml().replace("name: Test model\n", ""),
        {},
        "name",
        "required",
    ),
    (
        "missing-generator",
        "m.yaml",
        model_yaml(telemetry="\n- {name: t, type: number, intervalMs: 1000}\n"),
        {},
        "telemetry[0].generator",
        "required",
    ),
    (
        "empty-telemetry",
        "m.yaml",
        model_yaml(telemetry=" []"),
        {},
        "telemetry",
        "must have at least 1 item, got 0",
    ),
    (
        "unknown-top-level-key",
        "m.yaml",
        model_yaml(extra="colour: red\n"),
        {},
        "colour",
        "unknown top-level key 'colour'",
    ),
    (
        "typo-in-field-key",
        "m.yaml",
        model_yaml(telemetry="\n- {name: t, type: number, interval: 1000, generator: {type: constant, value: 1}}\n"),
        {},
        "telemetry[0].interval",
        "did you mean 'intervalMs'?",
    ),
    (
        "typo-in-generator-parameter",
        "m.yaml",
        model_yaml(telemetry=field("t", "number", "{type: random, distribution: normal, mean: 1, stdev: 2}")),
        {},
        "telemetry[0].generator.stdev",
        "did you mean 'stddev'?",
    ),
    (
        "wrong-protocol",
        "m.yaml",
        model_yaml(protocol="amqp"),
        {},
        "protocol",
        "unknown protocol 'amqp' (expected one of: mqtt, coap, http, kafka)",
    ),
    (
        "bad-field-type",
        "m.yaml",
        model_yaml(telemetry=field("t", "float", "{type: random, min: 0, max: 1}")),
        {},
        "telemetry[0].type",
        "expected one of: number, integer, boolean, string, binary, object; got 'float'",
    ),
    ("bad-version", "m.yaml", model_yaml(version='"1.0"'), {}, "version", "must be a semantic version"),
    (
        "bad-id",
        "m.yaml",
        model_yaml().replace("id: test-model", "id: Test Model"),
        {},
        "id",
        "lower case letters",
    ),
    (
        "python-tag",
        "m.yaml",
        'id: x\nname: y\nmetadata: !!python/object/apply:os.system ["echo should-not-run"]\n',
        {},
        "(root)",
        "YAML tag '!!python/object/apply:os.system' at line 3, column 11 is not allowed",
    ),
    (
        "yaml-syntax-error",
        "m.yaml",
        "id: test-model\nname: Test\nversion: [1.0.0\ntype: sensor\n",
        {},
        "(root)",
        "YAML syntax error at line 4, column 5",
    ),
    (
        "json-syntax-error",
        "m.json",
        '{\n  "id": "x",\n  "name": \n}\n',
        {},
        "(root)",
        "JSON syntax error at line 4, column 1",
    ),
    (
        "top-level-list",
        "m.yaml",
        "- id: x\n",
        {},
        "(root)",
        "the top level must be a mapping of keys to values, got list",
    ),
    ("empty-file", "m.yaml", "# nothing here\n", {}, "(root)", "got nothing (the file is empty)"),
    (
        "condition-import",
        "m.yaml",
        model_yaml(extra=behavior("__import__('os')")),
        {},
        "behaviors[0].condition",
        "names starting with '__' are not allowed",
    ),
    (
        "condition-attribute",
        "m.yaml",
        model_yaml(extra=behavior("temperature.real > 1")),
        {},
        "behaviors[0].condition",
        "attribute access is not allowed",
    ),
    (
        "condition-call",
        "m.yaml",
        model_yaml(extra=behavior("f(x)")),
        {},
        "behaviors[0].condition",
        "function calls are not allowed",
    ),
    (
        "condition-unknown-name",
        "m.yaml",
        model_yaml(extra=behavior("heartRate > 120")),
        {},
        "behaviors[0].condition",
        "unknown name 'heartRate' (allowed: temperature)",
    ),
    (
        "unknown-variable-in-topic",
        "m.yaml",
        model_yaml(connection='{host: localhost, topicPattern: "iotix/${unknownVar}/telemetry"}'),
        {},
        "connection.topicPattern",
        "unknown variable 'unknownVar'",
    ),
    (
        "command-variable-outside-command-topics",
        "m.yaml",
        model_yaml(connection='{host: localhost, topicPattern: "iotix/${deviceId}/${command}"}'),
        {},
        "connection.topicPattern",
        "unknown variable 'command'",
    ),
    (
        "unknown-variable-in-behavior-payload",
        "m.yaml",
        model_yaml(
            extra="""
            behaviors:
              - name: hot
                condition: temperature > 9
                action: {type: publish, topic: "a/${deviceId}", payload: {value: "${humidity}"}}
            """
        ),
        {},
        "behaviors[0].action.payload.value",
        "unknown variable 'humidity'",
    ),
    (
        "replay-escapes-folder",
        "m.yaml",
        model_yaml(telemetry=field("t", "string", "{type: replay, dataFile: ../../etc/passwd, column: root}")),
        {},
        "telemetry[0].generator.dataFile",
        "escapes the model's folder",
    ),
    (
        "replay-missing-file",
        "m.yaml",
        model_yaml(telemetry=field("t", "number", "{type: replay, dataFile: data/missing.csv, column: t}")),
        {},
        "telemetry[0].generator.dataFile",
        "not found",
    ),
    (
        "replay-missing-column",
        "m.yaml",
        model_yaml(telemetry=field("t", "number", "{type: replay, dataFile: data/log.csv, column: humidity}")),
        {"data/log.csv": "timestamp,temperature\n2024-01-01T00:00:00Z,21.5\n"},
        "telemetry[0].generator.column",
        "column 'humidity' not in",
    ),
    (
        "replay-needs-one-source",
        "m.yaml",
        model_yaml(telemetry=field("t", "number", "{type: replay}")),
        {},
        "telemetry[0].generator",
        "replay needs exactly one of dataFile or values",
    ),
    (
        "mqtt-key-in-a-coap-model",
        "m.yaml",
        model_yaml(protocol="coap", connection="{host: localhost, topicPattern: 'x/${deviceId}'}"),
        {},
        "connection.topicPattern",
        "is a mqtt key; this model's protocol is 'coap'",
    ),
    (
        "http-without-url",
        "m.yaml",
        model_yaml(protocol="http", connection="{host: localhost}"),
        {},
        "connection.url",
        "required for protocol 'http'",
    ),
    (
        "kafka-without-topic",
        "m.yaml",
        model_yaml(protocol="kafka", connection="{bootstrap: 'localhost:9092'}"),
        {},
        "connection.topic",
        "required for protocol 'kafka'",
    ),
    (
        "mqtt-without-topic-pattern",
        "m.yaml",
        model_yaml(connection="{host: localhost}"),
        {},
        "connection.topicPattern",
        "required for protocol 'mqtt'",
    ),
    (
        "duplicate-telemetry-names",
        "m.yaml",
        model_yaml(telemetry=TEMPERATURE + TEMPERATURE),
        {},
        "telemetry[1].name",
        "duplicate telemetry field name 'temperature' (also telemetry[0])",
    ),
    (
        "reserved-field-name",
        "m.yaml",
        model_yaml(telemetry=field("ts", "number", "{type: random, min: 0, max: 1}")),
        {},
        "telemetry[0].name",
        "'ts' is reserved",
    ),
    (
        "raw-payload-without-binary-field",
        "m.yaml",
        model_yaml(extra="payload: {format: raw}\n"),
        {},
        "payload.format",
        "format 'raw' needs exactly one binary telemetry field",
    ),
    (
        "raw-payload-field-not-binary",
        "m.yaml",
        model_yaml(extra="payload: {format: raw, field: temperature}\n"),
        {},
        "payload.field",
        "must name a binary field, 'temperature' has type 'number'",
    ),
    (
        "interval-zero",
        "m.yaml",
        model_yaml(telemetry=field("t", "number", "{type: random, min: 0, max: 1}", interval=0)),
        {},
        "telemetry[0].intervalMs",
        "must be >= 10, got 0",
    ),
    (
        "qos-3",
        "m.yaml",
        model_yaml(connection='{host: localhost, topicPattern: "t", qos: 3}'),
        {},
        "connection.qos",
        "expected one of: 0, 1, 2; got 3",
    ),
    (
        "port-out-of-range",
        "m.yaml",
        model_yaml(connection='{host: localhost, topicPattern: "t", port: 70000}'),
        {},
        "connection.port",
        "must be <= 65535, got 70000",
    ),
    (
        "unquoted-mqtt-version",
        "m.yaml",
        model_yaml(connection='{host: localhost, topicPattern: "t", mqttVersion: 5}'),
        {},
        "connection.mqttVersion",
        "quote it",
    ),
    (
        "host-and-broker",
        "m.yaml",
        model_yaml(connection='{host: localhost, broker: other, topicPattern: "t"}'),
        {},
        "connection.broker",
        "alias of host",
    ),
    (
        "gps-needs-object-field",
        "m.yaml",
        model_yaml(telemetry=field("pos", "number", "{type: gps, route: [[52.1, 4.3], [52.2, 4.4]]}")),
        {},
        "telemetry[0].generator.type",
        "cannot feed a 'number' field",
    ),
    (
        "latitude-out-of-range",
        "m.yaml",
        model_yaml(telemetry=field("pos", "object", "{type: gps, route: [[52.1, 4.3], [95, 4.4]]}")),
        {},
        "telemetry[0].generator.route[1][0]",
        "must be <= 90, got 95",
    ),
    (
        "ecg-needs-binary-field",
        "m.yaml",
        model_yaml(telemetry=field("ecg", "number", "{type: custom, handler: ecg_generator}")),
        {},
        "telemetry[0].type",
        "handler 'ecg_generator' produces binary values: use type 'binary', got 'number'",
    ),
    (
        "choice-value-of-wrong-type",
        "m.yaml",
        model_yaml(telemetry=field("mode", "string", "{type: choice, values: [heat, off]}")),
        {},
        "telemetry[0].generator.values[1]",
        "False is not a string",
    ),
    (
        "constant-value-of-wrong-type",
        "m.yaml",
        model_yaml(telemetry=field("enabled", "boolean", "{type: constant, value: 1}")),
        {},
        "telemetry[0].generator.value",
        "is not a boolean",
    ),
    (
        "uniform-needs-max",
        "m.yaml",
        model_yaml(telemetry=field("t", "number", "{type: random, min: 0}")),
        {},
        "telemetry[0].generator.max",
        "required for the uniform distribution",
    ),
    (
        "negative-stddev",
        "m.yaml",
        model_yaml(telemetry=field("t", "number", "{type: random, distribution: normal, mean: 5, stddev: -1}")),
        {},
        "telemetry[0].generator.stddev",
        "must be >= 0, got -1",
    ),
    (
        "sinusoidal-needs-period",
        "m.yaml",
        model_yaml(telemetry=field("t", "number", "{type: sinusoidal, amplitude: 2}")),
        {},
        "telemetry[0].generator.periodMs",
        "required",
    ),
    (
        "mqtt-command-without-topic",
        "m.yaml",
        model_yaml(extra="commands: [{name: reboot}]\n"),
        {},
        "commands[0].topic",
        "connection.commandTopicPattern is not set",
    ),
    (
        "duplicate-command-names",
        "m.yaml",
        model_yaml(extra='commands: [{name: reboot, topic: "a/${command}"}, {name: reboot, topic: "b"}]\n'),
        {},
        "commands[1].name",
        "duplicate command name 'reboot'",
    ),
    (
        "action-type",
        "m.yaml",
        model_yaml(
            extra="""
            behaviors:
              - {name: b, condition: temperature > 1, action: {type: email, topic: t}}
            """
        ),
        {},
        "behaviors[0].action.type",
        "expected one of: publish; got 'email'",
    ),
    (
        "unsupported-extension",
        "m.txt",
        model_yaml(),
        {},
        "(root)",
        "unsupported file type '.txt'",
    ),
]


class Case(NamedTuple):
    """A malformed model: the file to write (plus data files) and the problem it must report."""

    file_name: str
    content: str
    files: dict[str, str]
    path: str
    fragment: str


@pytest.mark.parametrize("case", [Case(*c[1:]) for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_model_reports_path_and_reason(tmp_path: Path, case: Case) -> None:
    for name, text in case.files.items():
        write(tmp_path, name, text)
    model_file = write(tmp_path, case.file_name, case.content)
    assert_problem(problems_of(model_file), case.path, case.fragment)


def test_there_are_many_malformed_cases() -> None:
    assert len(MALFORMED) >= 25


def test_python_tag_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "X"
    content = model_yaml(extra=f'metadata: !!python/object/apply:os.system ["touch {marker}"]\n')
    model_file = write(tmp_path, "evil.yaml", content)
    problems = problems_of(model_file)
    assert_problem(problems, "(root)", "is not allowed")
    assert not marker.exists()


def test_error_message_format_and_all_problems_of_a_file(tmp_path: Path) -> None:
    content = model_yaml(
        telemetry=field("temperature", "number", "{type: random, min: 10, max: 5}"),
        protocol="http",
        connection="{host: localhost}",
        extra=behavior("temperature.real > 1"),
    )
    model_file = write(tmp_path, "bad.yaml", content)
    with pytest.raises(ModelError) as caught:
        load_model(model_file)
    err = caught.value
    assert isinstance(err, ConfigurationError)
    assert sorted(path for path, _ in err.problems) == [
        "behaviors[0].condition",
        "connection.url",
        "telemetry[0].generator.max",
    ]
    text = str(err)
    assert text.startswith(f"Device model '{model_file}' is invalid (3 problems):\n  - ")
    assert "\n  - telemetry[0].generator.max: must be >= min (10), got 5" in text
    assert "\n  - connection.url: required for protocol 'http'" in text


def test_a_dict_without_source_is_named_generically() -> None:
    with pytest.raises(ModelError) as caught:
        load_model_dict({"id": "x"})
    assert caught.value.source is None
    assert str(caught.value).startswith("Device model is invalid (")


def test_missing_file_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        load_model(tmp_path / "nope.yaml")
    assert isinstance(caught.value, NotFoundError)
    assert isinstance(caught.value, ModelError)
    assert caught.value.problems == [("(root)", "file not found")]


def test_non_utf8_file_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert_problem(problems_of(path), "(root)", "not UTF-8 text")


# --------------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------------


def test_folder_loading_is_recursive_and_skips_schema_and_data(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", model_yaml().replace("test-model", "model-a"))
    write(tmp_path, "nested/b.yml", model_yaml().replace("test-model", "model-b"))
    write(tmp_path, "nested/c.json", json.dumps({**_minimal("model-c")}))
    write(tmp_path, "schema/device-model.schema.json", '{"not": "a model"}')
    write(tmp_path, "data/readings.json", "[1, 2, 3]")
    write(tmp_path, ".hidden/x.yaml", "broken: [")
    write(tmp_path, "notes.txt", "not a model")
    models = load_models(tmp_path)
    assert [m.id for m in models] == ["model-a", "model-b", "model-c"]
    assert load_models(tmp_path / "a.yaml")[0].id == "model-a"


def _minimal(model_id: str) -> dict[str, object]:
    return {
        "id": model_id,
        "name": model_id,
        "version": "1.0.0",
        "type": "sensor",
        "protocol": "http",
        "connection": {"url": "http://localhost:8080/t/${deviceId}"},
        "telemetry": [{"name": "v", "type": "integer", "intervalMs": 100, "generator": {"type": "sequence"}}],
    }


def test_folder_with_several_broken_files_reports_every_file(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", model_yaml())
    bad_one = write(tmp_path, "bad-one.yaml", model_yaml(version="1.0.x"))
    bad_two = write(tmp_path, "sub/bad-two.json", '{"id": ')
    with pytest.raises(ModelCollectionError) as caught:
        load_models(tmp_path)
    err = caught.value
    assert [e.source for e in err.errors] == [str(bad_one), str(bad_two)]
    assert err.source == str(tmp_path)
    assert (f"{bad_one}: version", err.problems[0][1]) == err.problems[0]
    text = str(err)
    assert text.startswith(f"2 device model files in '{tmp_path}' are invalid (2 problems in total):")
    assert f"Device model '{bad_one}' is invalid (1 problem):\n  - version: must be a semantic version" in text
    assert f"Device model '{bad_two}' is invalid (1 problem):\n  - (root): JSON syntax error" in text


def test_folder_with_one_broken_file_raises_that_files_error(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", model_yaml())
    bad = write(tmp_path, "bad.yaml", model_yaml(protocol="zigbee"))
    with pytest.raises(ModelError) as caught:
        load_models(tmp_path)
    assert caught.value.source == str(bad)
    assert not isinstance(caught.value, ModelCollectionError)


def test_duplicate_ids_in_a_folder_name_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", model_yaml())
    second = write(tmp_path, "b.yaml", model_yaml())
    with pytest.raises(ModelError) as caught:
        load_models(tmp_path)
    assert caught.value.source == str(second)
    assert caught.value.problems == [("id", f"duplicate model id 'test-model': already defined in '{first}'")]


def test_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        load_models(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no model files"):
        load_models(tmp_path / "empty")


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def test_registry_loads_and_finds_models(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", model_yaml().replace("test-model", "model-a"))
    write(tmp_path, "b.yaml", model_yaml().replace("test-model", "model-b"))
    registry = ModelRegistry()
    assert registry.load(tmp_path) == ["model-a", "model-b"]
    assert len(registry) == 2
    assert "model-a" in registry and "model-c" not in registry
    assert registry.get("model-b").id == "model-b"
    assert registry["model-a"].id == "model-a"
    assert list(registry) == ["model-a", "model-b"]
    assert registry.ids == ["model-a", "model-b"]
    with pytest.raises(NotFoundError, match=r"No device model with id 'model-c' \(known: model-a, model-b\)"):
        registry.get("model-c")
    with pytest.raises(KeyError):
        registry["model-c"]
    with pytest.raises(UnknownModelError) as caught:
        registry.get("model-c")
    assert caught.value.known == ["model-a", "model-b"]


def test_registry_rejects_a_duplicate_id_from_another_file(tmp_path: Path) -> None:
    first = write(tmp_path, "one/model.yaml", model_yaml())
    second = write(tmp_path, "two/model.yaml", model_yaml())
    registry = ModelRegistry()
    registry.load(first)
    with pytest.raises(ModelError) as caught:
        registry.load(second)
    message = str(caught.value)
    assert str(first) in message and str(second) in message
    assert "duplicate model id 'test-model'" in message
    assert registry.get("test-model").source == first


def test_registry_reload_of_the_same_file_replaces_the_model(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", model_yaml())
    registry = ModelRegistry()
    registry.load(path)
    path.write_text(model_yaml().replace("Test model", "Renamed"), encoding="utf-8")
    registry.load(path)
    assert registry.get("test-model").name == "Renamed"


def test_registry_load_is_all_or_nothing(tmp_path: Path) -> None:
    registry = ModelRegistry()
    registry.add(load_model(write(tmp_path, "taken/m.yaml", model_yaml())))
    write(tmp_path, "batch/new.yaml", model_yaml().replace("test-model", "fresh"))
    write(tmp_path, "batch/clash.yaml", model_yaml())
    with pytest.raises(ModelError):
        registry.load(tmp_path / "batch")
    assert registry.ids == ["test-model"]


def test_registry_add_of_an_equal_dict_model_is_harmless() -> None:
    registry = ModelRegistry()
    model = load_model_dict(_minimal("same"))
    registry.add(model)
    registry.add(load_model_dict(_minimal("same")))
    assert registry.values() == [model]
    other = {**_minimal("same"), "name": "different"}
    with pytest.raises(ModelError, match="already defined in a model given as data"):
        registry.add(load_model_dict(other))
