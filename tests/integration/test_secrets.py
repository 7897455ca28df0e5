"""A password given as a Robot ``Secret`` never reaches Robot's output, not even at TRACE level; nor does a
private key of the mutual TLS suite.

Runs the acceptance suite ``suites/acceptance/07_secrets`` (devices and a receiver log in to a Mosquitto that
accepts one username and password) in a subprocess with random passwords in the environment, then searches
everything Robot wrote: output.xml, log.html (its string table decoded: long texts are zlib-compressed
there), report.html, the xUnit file, the debug file and the console. The same for
``suites/acceptance/10_mqtt_tls/mutual_tls.robot`` and every private key it made (collected by ``tls_key_listener.py``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from iotix.services import find_mosquitto

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        find_mosquitto() is None or shutil.which("mosquitto_passwd") is None,
        reason="Mosquitto and mosquitto_passwd are not installed",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "suites" / "acceptance" / "07_secrets"
TLS_SUITE = ROOT / "suites" / "acceptance" / "10_mqtt_tls" / "mutual_tls.robot"
KEY_LISTENER = Path(__file__).with_name("tls_key_listener.py")
# The string table of log.html / report.html: `window.output["strings"] = [...];` and `... .concat([...]);`
STRING_TABLE = re.compile(
    r'^window\.output\["strings"\] = (?:window\.output\["strings"\]\.concat\()?(\[.*\])\)?;$', re.M
)

# Robot writes "</" as "\x3c/", an escape JavaScript knows and JSON does not (robot.htmldata.jsonwriter).
JS_ONLY_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\x3c")


def log_strings(html: str) -> Iterator[str]:
    """Every string of the string table of a Robot log or report, decoded: raw ones start with '*', the
    others are base64 of zlib-compressed UTF-8 (robot.reporting.stringcache)."""
    tables = STRING_TABLE.findall(html)
    assert tables, "no string table found in the log: has Robot's log format changed?"
    for text in (s for table in tables for s in json.loads(JS_ONLY_ESCAPE.sub(r"\1\\u003c", table))):
        if text.startswith("*"):
            yield text[1:]
            continue
        try:
            yield zlib.decompress(base64.b64decode(text, validate=True)).decode("utf-8")
        except (ValueError, zlib.error, UnicodeDecodeError):
            yield text


def robot_outputs_at_trace(suite: Path, out: Path, env: dict[str, str], *options: str) -> dict[str, str]:
    """Run ``suite`` at TRACE level; return everything Robot wrote (log and report decoded too) by name."""
    command = [
        sys.executable,
        "-m",
        "robot",
        "--loglevel",
        "TRACE",
        "--outputdir",
        str(out),
        "--xunit",
        "xunit.xml",
        "--debugfile",
        "debug.txt",
        *options,
        str(suite),
    ]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    console = result.stdout + result.stderr
    assert result.returncode == 0, f"the suite {suite.name} failed:\n{console[-4000:]}"

    outputs = {
        name: (out / name).read_text(encoding="utf-8")
        for name in ("output.xml", "log.html", "report.html", "xunit.xml", "debug.txt")
    }
    outputs["console"] = console
    outputs["log.html, decoded"] = "\n".join(log_strings(outputs["log.html"]))
    outputs["report.html, decoded"] = "\n".join(log_strings(outputs["report.html"]))
    return outputs


def test_secret_passwords_do_not_appear_in_robot_output(tmp_path: Path) -> None:
    password = "iotix-pw-" + secrets.token_hex(12)
    wrong = "iotix-wrong-" + secrets.token_hex(12)
    env = {**os.environ, "IOTIX_TEST_PASSWORD": password, "IOTIX_TEST_WRONG_PASSWORD": wrong}
    outputs = robot_outputs_at_trace(SUITE, tmp_path, env)

    # The search must be able to see what it looks for: TRACE logged the keywords' arguments, the decoded
    # log holds the (compressed) suite documentation, and the masked secret is there instead of the value.
    assert "Arguments:" in outputs["output.xml"]
    assert "Passwords are Robot Secrets" in outputs["log.html, decoded"]
    assert "password=Secret(value=&lt;secret&gt;)" in outputs["output.xml"]
    for name, text in outputs.items():
        for value in (password, wrong):
            assert value not in text, f"a password was written to {name}"


def test_private_keys_of_the_tls_suite_do_not_appear_in_robot_output(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    outputs = robot_outputs_at_trace(
        TLS_SUITE, tmp_path / "out", dict(os.environ), "--listener", f"{KEY_LISTENER}:{keys_file}"
    )
    keys: dict[str, str] = json.loads(keys_file.read_text(encoding="utf-8"))
    # Device keys of every fleet, the two CAs' keys, the broker's server key and the receiver's key.
    names = {Path(path).name for path in keys}
    assert {"secure-0.key", "secure-4.key", "expired-0.key", "alien-0.key", "ca.key", "server.key"} <= names
    assert "receiver.key" in names
    key_lines = {line for pem in keys.values() for line in pem.splitlines() if line and not line.startswith("-----")}
    assert len(key_lines) >= 2 * len(keys)  # a P-256 key in PKCS#8 PEM is three or four base64 lines

    # The search can see what it looks for: TRACE logged the arguments, and the key files' paths are there.
    assert "Arguments:" in outputs["output.xml"]
    assert "clientKey" in outputs["output.xml"] and "secure-4" in outputs["log.html, decoded"]
    for name, text in outputs.items():
        assert "PRIVATE KEY" not in text, f"a private key header was written to {name}"
        leaked = [line for line in key_lines if line in text]
        assert not leaked, f"private key material was written to {name}: {len(leaked)} base64 line(s)"
