"""Robot listener for test_secrets.py: before the TLS suite's teardown removes them, copy every private key
the suite created (device keys and the CA key under ${WORKDIR}, the local TLS broker's server and receiver
keys) to the JSON file given as the listener's argument, so that the test can search Robot's output for them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from robot.libraries.BuiltIn import BuiltIn

TEARDOWN_KEYWORD = "Stop Acceptance Environment"


class tls_key_listener:  # Robot takes the class named like its module
    ROBOT_LISTENER_API_VERSION = 3

    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def start_keyword(self, data: Any, result: Any) -> None:
        if data.name != TEARDOWN_KEYWORD:
            return
        builtin = BuiltIn()
        folders = [Path(builtin.get_variable_value("${WORKDIR}"))]
        broker = builtin.get_variable_value("${TLS}")
        if broker:
            folders.append(Path(broker["clientKey"]).parent)
        keys = {str(p): p.read_text(encoding="ascii") for folder in folders for p in sorted(folder.rglob("*.key"))}
        self.out.write_text(json.dumps(keys), encoding="utf-8")
