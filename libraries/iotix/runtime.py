"""The asyncio loop that runs every simulated device, in its own daemon thread, and the bridge to it.

Robot Framework runs keywords on its main thread and only turns an asyncio loop while an ``async def``
keyword runs, but a fleet must keep publishing during ``Sleep`` and between keywords. So one
:class:`Runtime` per process owns a loop in a daemon thread; keywords reach it through
:meth:`Runtime.call`, modelled on anyio's blocking portal:

- ``call`` runs a coroutine function (or a plain function) on the loop and waits for its result;
- any exception in the waiting thread (Robot's test timeout, Ctrl-C) cancels the task inside the loop
  before it is re-raised, so nothing keeps running behind the user's back;
- calling it from the loop thread itself is an error (it would deadlock);
- the loop is created on first use, never at import time (libdoc and ``--dryrun`` start nothing), and
  stopped with its thread joined at interpreter exit;
- when it starts, the soft open-file limit is raised to the hard limit (:mod:`iotix.fdlimit`): a plain
  ``robot`` run often inherits a soft limit of 1,024, and every device socket is a file descriptor.

Robot silently drops log messages written from other threads, so the core logs with :mod:`logging` and
:class:`LogBuffer` keeps the records until the Robot side flushes them from the main thread.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from iotix.errors import IoTixError
from iotix.fdlimit import raise_soft_limit

T = TypeVar("T")
log = logging.getLogger("iotix.runtime")

#: How long a cancelled call waits for the task inside the loop to finish its cleanup.
CANCEL_GRACE_S = 2.0


class RuntimeCallError(IoTixError):
    """The bridge was used in a way that cannot work (from the loop thread, after shutdown)."""


class LogBuffer(logging.Handler):
    """Thread-safe buffer of log records, drained by the thread that may write to the Robot log."""

    def __init__(self, capacity: int = 10_000) -> None:
        super().__init__(logging.DEBUG)
        self._records: deque[logging.LogRecord] = deque(maxlen=capacity)
        self._lock_ = threading.Lock()
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_:
            if len(self._records) == self._records.maxlen:
                self.dropped += 1
            self._records.append(record)

    def drain(self) -> list[logging.LogRecord]:
        with self._lock_:
            records = list(self._records)
            self._records.clear()
            return records


class Runtime:
    """One asyncio event loop in a daemon thread, shared by all keyword libraries of the process."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._shutdown_hooks: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first access."""
        self.start()
        assert self._loop is not None
        return self._loop

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def start(self) -> None:
        with self._lock:
            if self.started:
                return
            if self._stopped:
                raise RuntimeCallError("The IoTix runtime has been shut down; no more calls are possible.")
            raise_soft_limit()
            ready = threading.Event()
            loop = asyncio.new_event_loop()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:
                    _finish_loop(loop)

            self._loop = loop
            self._thread = threading.Thread(target=run, name="iotix-runtime", daemon=True)
            self._thread.start()
            ready.wait()
            log.debug("runtime loop started in thread %s", self._thread.name)

    def add_shutdown_hook(self, hook: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Register a coroutine function run on the loop when the runtime stops (e.g. stop all fleets)."""
        if hook not in self._shutdown_hooks:
            self._shutdown_hooks.append(hook)

    def stop(self, timeout: float = 10.0) -> None:
        """Run the shutdown hooks, cancel what still runs, stop the loop and join its thread."""
        with self._lock:
            thread, loop = self._thread, self._loop
            if thread is None or loop is None or not thread.is_alive():
                self._stopped = True
                return
        if self.in_loop_thread():
            raise RuntimeCallError("Runtime.stop() cannot be called from the runtime's own thread.")
        for hook in list(self._shutdown_hooks):
            with contextlib.suppress(BaseException):
                self.call(hook, timeout=timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        with self._lock:
            self._thread = None
            self._loop = None
            self._stopped = True

    # -- the bridge -------------------------------------------------------------------------------

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the loop and return its result (awaiting it if it is a coroutine).

        ``timeout`` (seconds) bounds the wait; on timeout the task is cancelled and :class:`TimeoutError`
        raised. Any other exception in the waiting thread also cancels the task, then propagates.
        """
        if self.in_loop_thread():
            raise RuntimeCallError(
                f"{getattr(fn, '__qualname__', fn)!s} was called through Runtime.call from the runtime's own "
                "thread; inside the loop, await it directly."
            )
        loop = self.loop

        async def runner() -> Any:
            result = fn(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        future = asyncio.run_coroutine_threadsafe(runner(), loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            _cancel_and_wait(future)
            name = getattr(fn, "__qualname__", str(fn))
            raise TimeoutError(f"{name} did not finish within {timeout:g} s and was cancelled.") from None
        except concurrent.futures.CancelledError:
            raise RuntimeCallError("The call was cancelled inside the IoTix runtime (it is shutting down).") from None
        except BaseException:
            _cancel_and_wait(future)
            raise

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule a plain function on the loop without waiting (thread-safe)."""
        self.loop.call_soon_threadsafe(fn, *args)


def _cancel_and_wait(future: concurrent.futures.Future[Any]) -> None:
    if future.cancel():
        with contextlib.suppress(BaseException):
            # run_coroutine_threadsafe cancels the task in the loop; give its cleanup a moment.
            concurrent.futures.wait([future], timeout=CANCEL_GRACE_S)


def _finish_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel leftover tasks, let them unwind, close async generators and the loop."""
    try:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=CANCEL_GRACE_S))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()
log_buffer = LogBuffer()


def get_runtime() -> Runtime:
    """The process-wide runtime (created lazily; its loop starts on first use)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime._stopped:
            _runtime = Runtime()
        return _runtime


def install_log_buffer(level: int = logging.DEBUG) -> LogBuffer:
    """Route the ``iotix`` logger into :data:`log_buffer` (idempotent)."""
    logger = logging.getLogger("iotix")
    if log_buffer not in logger.handlers:
        logger.addHandler(log_buffer)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    logger.propagate = False
    return log_buffer


@atexit.register
def _stop_at_exit() -> None:
    rt = _runtime
    if rt is not None and rt.started:
        rt.stop(timeout=5.0)
