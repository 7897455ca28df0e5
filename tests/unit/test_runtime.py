"""The runtime bridge: a loop in its own thread, calls that cancel on timeout, logs kept for the caller."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from iotix.runtime import LogBuffer, Runtime, RuntimeCallError


@pytest.fixture
def rt():
    runtime = Runtime()
    yield runtime
    runtime.stop()


def test_nothing_runs_before_first_use() -> None:
    before = threading.active_count()
    runtime = Runtime()
    assert not runtime.started
    assert threading.active_count() == before


def test_call_runs_coroutines_and_functions_on_the_loop_thread(rt: Runtime) -> None:
    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    assert rt.call(where) == "iotix-runtime"
    assert rt.call(lambda: threading.current_thread().name) == "iotix-runtime"
    assert rt.call(lambda a, b=0: a + b, 2, b=3) == 5


def test_exceptions_propagate_unchanged(rt: Runtime) -> None:
    async def boom() -> None:
        raise ValueError("bad value")

    with pytest.raises(ValueError, match="bad value"):
        rt.call(boom)


def test_timeout_cancels_the_task_inside_the_loop(rt: Runtime) -> None:
    state = {"cancelled": False, "finished": False}

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
            state["finished"] = True
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not finish within 0.2 s"):
        rt.call(slow, timeout=0.2)
    assert time.monotonic() - t0 < 3
    assert state == {"cancelled": True, "finished": False}
    # the loop is still usable afterwards
    assert rt.call(lambda: 42) == 42


def test_interrupt_in_the_waiting_thread_cancels_the_task(rt: Runtime) -> None:
    """Robot's test timeout and Ctrl-C arrive as exceptions in the waiting (main) thread."""
    import signal

    state = {"cancelled": False}

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            rt.call(slow)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert state["cancelled"]


def test_calling_from_the_loop_thread_is_an_error(rt: Runtime) -> None:
    def inner() -> None:
        rt.call(lambda: 1)

    with pytest.raises(RuntimeCallError, match="from the runtime's own thread"):
        rt.call(inner)


def test_stop_runs_hooks_and_joins_the_thread() -> None:
    runtime = Runtime()
    ran = []

    async def hook() -> None:
        ran.append(threading.current_thread().name)

    runtime.add_shutdown_hook(hook)
    runtime.start()
    thread = runtime._thread
    assert thread is not None and thread.is_alive()
    runtime.stop()
    assert ran == ["iotix-runtime"]
    assert not thread.is_alive()
    with pytest.raises(RuntimeCallError, match="shut down"):
        runtime.call(lambda: 1)


def test_stop_cancels_leftover_tasks() -> None:
    runtime = Runtime()
    state = {"cancelled": False}

    async def forever() -> None:
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    runtime.call(lambda: asyncio.get_running_loop().create_task(forever()))
    runtime.stop()
    assert state["cancelled"]


def test_log_buffer_keeps_records_from_any_thread_and_counts_overflow() -> None:
    buf = LogBuffer(capacity=3)
    logger = logging.getLogger("iotix.test.buffer")
    logger.addHandler(buf)
    logger.setLevel(logging.DEBUG)
    try:
        t = threading.Thread(target=lambda: [logger.info("msg %d", i) for i in range(5)])
        t.start()
        t.join()
    finally:
        logger.removeHandler(buf)
    records = buf.drain()
    assert [r.getMessage() for r in records] == ["msg 2", "msg 3", "msg 4"]
    assert buf.dropped == 2
    assert buf.drain() == []
