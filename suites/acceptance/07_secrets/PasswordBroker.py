"""A Mosquitto that requires a username and password, for the acceptance tests of Secret passwords.

The local broker of ``Start Local MQTT Broker`` lets anyone in, so it cannot tell whether a device sent the
right password (or the text ``<secret>``). This one refuses anonymous clients and every password but one.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from robot.api.deco import keyword, library
from robot.api.types import Secret

from iotix.services.mqtt_broker import find_mosquitto, mosquitto_config
from iotix.services.process import LOCALHOST, ManagedProcess, start_with_port_retry


@library(scope="SUITE", auto_keywords=False)
class PasswordBroker:
    """Starts and stops one password-protected Mosquitto on 127.0.0.1 (a port of its own, like pabot needs)."""

    def __init__(self) -> None:
        self._process: ManagedProcess | None = None
        self._dir: Path | None = None

    @keyword
    def start_password_protected_broker(self, username: str, password: Secret) -> dict[str, Any]:
        """Starts Mosquitto accepting only ``username`` with ``password``; returns ``host`` and ``port``."""
        mosquitto = find_mosquitto()
        passwd_tool = shutil.which("mosquitto_passwd")
        if mosquitto is None or passwd_tool is None:
            raise AssertionError("Mosquitto and mosquitto_passwd must be installed for this test.")
        self._dir = Path(tempfile.mkdtemp(prefix="iotix-password-broker-"))
        self._dir.chmod(0o755)  # Mosquitto started as root reads its files as the 'mosquitto' user
        passwd = self._dir / "passwd"
        subprocess.run(  # noqa: S603 - fixed tool, arguments from the test
            [passwd_tool, "-b", "-c", str(passwd), username, password.value],
            check=True,
            capture_output=True,
        )
        passwd.chmod(0o644)
        directory = self._dir

        def make(port: int) -> ManagedProcess:
            config = directory / "mosquitto.conf"
            text = mosquitto_config(port).replace("allow_anonymous true", "allow_anonymous false")
            config.write_text(text + f"password_file {passwd}\n", encoding="utf-8")
            config.chmod(0o644)
            return ManagedProcess(
                [mosquitto, "-c", str(config)],
                port,
                name="password-protected Mosquitto",
                log_dir=directory,
                cwd=directory,
                ready_pattern=r"mosquitto version \S+ running",
            )

        self._process = start_with_port_retry(make, 0)
        return {"host": LOCALHOST, "port": self._process.port}

    @keyword
    def stop_password_protected_broker(self) -> None:
        """Stops the broker and removes its files (nothing happens if none runs)."""
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
