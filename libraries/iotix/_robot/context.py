"""Glue shared by the four keyword libraries: the one runtime and simulator, the bridge call, log flushing,
and cleanup of what a suite created when that suite ends."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

from robot.api import logger
from robot.libraries.BuiltIn import BuiltIn, RobotNotRunningError

from iotix.errors import IoTixError
from iotix.fleet.simulator import Simulator
from iotix.model.loader import ModelRegistry
from iotix.observe.receivers import Receivers
from iotix.runtime import Runtime, get_runtime, install_log_buffer

T = TypeVar("T")

_LEVELS = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "ERROR",
}


class KeywordError(IoTixError):
    """A keyword failed for a reason the user can act on; Robot shows just the message."""


class Context:
    """Process-wide state of the Robot side. Created lazily: importing a library starts nothing."""

    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        self._simulator: Simulator | None = None
        #: the Ray cluster sharded fleets and receivers use (None: IOTIX_RAY_ADDRESS, else a local Ray)
        self.ray_address: str | None = None
        self.models = ModelRegistry()
        self.owned: dict[str, list[tuple[str, Callable[[], Any]]]] = {}  # suite -> [(what, cleanup)]
        #: every receiver of telemetry (MQTT subscriptions, CoAP server and observations, backends, Kafka)
        self.receivers = Receivers()
        self._states: dict[type[Any], Any] = {}
        #: suite and test now running (labels of exported figures)
        self.labels: dict[str, str] = {}
        #: console progress interval set by the Metrics library's import (None: IOTIX_PROGRESS or 10 s)
        self.progress_s: float | None = None

    def state(self, cls: type[T]) -> T:
        """The process-wide state of type ``cls`` (local servers, connections by alias), made on first use.

        Library instances come and go (one per import with other arguments); what they open is shared
        through here. A state with an ``aclose()`` coroutine method is closed when the runtime stops.
        """
        state = self._states.get(cls)
        if state is None:
            state = self._states[cls] = cls()
        return state  # type: ignore[no-any-return]

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None or not self._runtime.started:
            install_log_buffer()
            self._runtime = get_runtime()
            self._runtime.start()
            self._runtime.add_shutdown_hook(self._shutdown)
        return self._runtime

    @property
    def has_simulator(self) -> bool:
        """Whether something already created the simulator (and the runtime): listeners look, never start it."""
        return self._simulator is not None

    @property
    def simulator(self) -> Simulator:
        if self._simulator is None:
            rt = self.runtime
            sim = rt.call(lambda: Simulator(rt.loop))
            hub = sim.metrics
            hub.progress_interval_s = self.progress_s if self.progress_s is not None else progress_default()
            hub.progress_writer = logger.console
            hub.labels = dict(self.labels)
            self._simulator = sim
        return self._simulator

    def set_progress(self, interval_s: float) -> None:
        """Console progress lines every ``interval_s`` seconds (0: none), now and for a simulator made later."""
        self.progress_s = interval_s
        if self._simulator is not None:
            self._simulator.metrics.progress_interval_s = interval_s

    def set_test(self, suite: str, test: str) -> None:
        """The suite and test now running: labels of exported figures (replaced as a whole: read on the loop)."""
        self.labels = {"suite": suite, "test": test} if test else {"suite": suite}
        if self._simulator is not None:
            self._simulator.metrics.labels = dict(self.labels)

    async def _shutdown(self) -> None:
        if self._simulator is not None:
            await self._simulator.shutdown()
        for state in list(self._states.values()):
            aclose = getattr(state, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception as err:
                    logging.getLogger("iotix").warning("closing %r failed: %s", state, err)

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = 60.0, **kwargs: Any) -> Any:
        """Run ``fn`` on the runtime loop, then copy its log records into the Robot log."""
        try:
            return self.runtime.call(fn, *args, timeout=timeout, **kwargs)
        finally:
            flush_logs()

    # -- suite ownership ------------------------------------------------------------------------------

    def own(self, what: str, cleanup: Callable[[], Any]) -> None:
        """Remember that the running suite created ``what``; ``cleanup`` runs when that suite ends."""
        self.owned.setdefault(current_suite(), []).append((what, cleanup))

    def disown(self, what: str) -> None:
        for items in self.owned.values():
            items[:] = [(w, c) for w, c in items if w != what]

    def end_suite(self, suite: str) -> None:
        for what, cleanup in reversed(self.owned.pop(suite, [])):
            try:
                cleanup()
                logger.info(f"Cleaned up {what} created by suite '{suite}'.")
            except Exception as err:
                logger.warn(f"Cleaning up {what} after suite '{suite}' failed: {err}")


#: Console progress lines every this many seconds unless IOTIX_PROGRESS says otherwise (0: off).
PROGRESS_DEFAULT_S = 10.0


def progress_default() -> float:
    """The console progress interval: ``IOTIX_PROGRESS`` (seconds, 0 = off) or :data:`PROGRESS_DEFAULT_S`."""
    value = os.environ.get("IOTIX_PROGRESS", "").strip()
    try:
        return max(0.0, float(value)) if value else PROGRESS_DEFAULT_S
    except ValueError:
        logging.getLogger("iotix").warning("IOTIX_PROGRESS=%r is not a number of seconds; using 10", value)
        return PROGRESS_DEFAULT_S


def current_suite() -> str:
    try:
        return str(BuiltIn().get_variable_value("${SUITE NAME}", ""))
    except RobotNotRunningError:
        return ""


def flush_logs() -> None:
    """Write records logged by the runtime thread into the Robot log, from this (the main) thread."""
    from iotix.runtime import log_buffer

    for record in log_buffer.drain():
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        if record.exc_info and record.levelno >= logging.ERROR:
            import traceback

            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        level = _LEVELS.get(record.levelno, "INFO")
        with contextlib.suppress(Exception):  # outside Robot there is no log to write to
            logger.write(f"[{record.name}] {message}", level)
    if log_buffer.dropped:
        logger.warn(f"{log_buffer.dropped} IoTix log records were dropped (buffer full).")
        log_buffer.dropped = 0


_context: Context | None = None


def get_context() -> Context:
    global _context
    if _context is None:
        _context = Context()
    return _context


class SuiteCleanupListener:
    """Library listener (API v3): stops what a suite created when that suite ends; tells the context which
    suite and test run (labels of exported figures)."""

    ROBOT_LISTENER_API_VERSION = 3

    def start_suite(self, data: Any, result: Any) -> None:
        get_context().set_test(str(getattr(data, "full_name", "") or getattr(data, "longname", "")), "")

    def start_test(self, data: Any, result: Any) -> None:
        parent = getattr(data, "parent", None)
        suite = getattr(parent, "full_name", "") or getattr(parent, "longname", "")
        get_context().set_test(str(suite), str(data.name))

    def end_test(self, data: Any, result: Any) -> None:
        parent = getattr(data, "parent", None)
        get_context().set_test(str(getattr(parent, "full_name", "") or getattr(parent, "longname", "")), "")

    def end_suite(self, data: Any, result: Any) -> None:
        name = getattr(data, "full_name", None) or getattr(data, "longname", "")
        ctx = _context
        if ctx is not None and ctx._runtime is not None:
            ctx.end_suite(str(name))
            flush_logs()
