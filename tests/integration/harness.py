"""A private runtime + simulator for integration tests (each test gets its own, stopped at the end)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from iotix.fleet.device import DeviceState
from iotix.fleet.fleet import Fleet
from iotix.fleet.simulator import Simulator
from iotix.fleet.timeline import LaunchSettings
from iotix.model.loader import load_model_dict
from iotix.runtime import Runtime


def process_gone(pid: int) -> bool:
    """Whether neither the process nor anything in its process group exists any more."""
    for probe in (os.kill, os.killpg):
        try:
            probe(pid, 0)
        except ProcessLookupError:
            continue
        return False
    return True


def all_running(fleet: Fleet) -> bool:
    return all(d.state is DeviceState.RUNNING for d in fleet.devices)


class Harness:
    """Fleets built from model dicts in a runtime of their own; ``close`` stops everything."""

    def __init__(self) -> None:
        self.rt = Runtime()
        self.sim: Simulator = self.rt.call(lambda: Simulator(self.rt.loop))
        self._closers: list[Callable[[], Any]] = []

    def connection(self, model_connection: dict[str, Any]) -> dict[str, Any]:
        """The connection a fleet gets unless the test overrides keys (subclasses point it at a server)."""
        return dict(model_connection)

    def fleet(
        self,
        name: str,
        data: dict[str, Any],
        count: int,
        *,
        connection: dict[str, Any] | None = None,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> Fleet:
        model = load_model_dict(data)
        conn = {**self.connection(model.connection), **(connection or {})}
        ids = ids or [f"{name}-{i}" for i in range(count)]
        return self.rt.call(lambda: self.sim.create_fleet(name, model, ids, connection=conn, **kwargs))

    def start(self, fleet: Fleet, settings: LaunchSettings | None = None) -> None:
        self.rt.call(fleet.start, settings or LaunchSettings())

    def stop(self, fleet: Fleet) -> None:
        self.rt.call(fleet.stop)

    def delete(self, fleet: Fleet) -> None:
        self.rt.call(self.sim.delete_fleet, fleet.name)

    def wait(self, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> None:
        """Poll ``predicate`` on the loop until it is true; fail naming ``what`` after ``timeout``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.rt.call(predicate):
                return
            time.sleep(0.05)
        raise AssertionError(f"{what} did not become true within {timeout} s")

    def running(self, fleet: Fleet, timeout: float = 15.0) -> None:
        self.wait(lambda: all_running(fleet), timeout, what=f"fleet {fleet.name} running")

    def on_close(self, closer: Callable[[], Any]) -> None:
        self._closers.append(closer)

    def close(self) -> None:
        self.rt.call(self.sim.shutdown)
        for closer in reversed(self._closers):
            closer()
        self.rt.stop()


class BrokerHarness(Harness):
    """The harness with every fleet pointed at one broker (anything with ``host`` and ``port``); a connection
    that names a ``url`` (an HTTP fleet) is left as it is."""

    def __init__(self, broker: Any) -> None:
        super().__init__()
        self.broker = broker

    def connection(self, model_connection: dict[str, Any]) -> dict[str, Any]:
        if "url" in model_connection:
            return dict(model_connection)
        return {**model_connection, "host": self.broker.host, "port": self.broker.port}
