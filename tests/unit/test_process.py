"""ManagedProcess and the port helpers, with tiny Python servers as children."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iotix.errors import IoTixError
from iotix.services import process as process_module
from iotix.services.process import (
    ManagedProcess,
    ProcessStartError,
    group_listens_on,
    live_processes,
    pick_free_port,
    pick_port_candidates,
    port_accepts,
    start_with_port_retry,
    stop_all,
)

# Listens on 127.0.0.1:<argv[1]>, says so, accepts forever. Fails with "Address already in use" if taken.
SERVER = """
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
print("server listening", flush=True)
while True:
    connection, _ = server.accept()
    connection.close()
"""

# Like SERVER but ignores SIGTERM, and starts a grandchild in its process group.
STUBBORN_SERVER = (
    """
import signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("grandchild", child.pid, flush=True)
"""
    + SERVER
)


def server_command(port: int, script: str = SERVER) -> list[str]:
    """A python -c command running ``script`` with the port as its argument."""
    return [sys.executable, "-c", script, str(port)]


def pid_gone(pid: int) -> bool:
    """Whether no process (not even a zombie) has this pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/status").exists() and "zombie" in Path(f"/proc/{pid}/status").read_text()


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    yield
    leftovers = live_processes()
    stop_all(timeout=1)
    assert not leftovers, f"test left processes running: {leftovers}"


def test_start_waits_for_the_port_and_stop_removes_the_process(tmp_path: Path) -> None:
    port = pick_free_port()
    process = ManagedProcess(server_command(port), port, log_dir=tmp_path, name="tiny server")
    assert process.start() is process
    assert process.is_running
    assert port_accepts("127.0.0.1", port)
    assert process in live_processes()
    assert process.log_path == tmp_path / "tiny-server.log"
    pid = process.pid
    assert pid is not None
    assert os.getpgid(pid) == pid  # own process group

    assert process.stop() == -signal.SIGTERM
    assert not process.is_running
    assert pid_gone(pid)
    assert process not in live_processes()
    assert "server listening" in process.log_tail()
    assert process.stop() == -signal.SIGTERM  # idempotent


def test_context_manager_and_log_in_a_temp_dir() -> None:
    port = pick_free_port()
    with ManagedProcess(server_command(port), port) as process:
        assert process.is_running
        pid = process.pid
        assert process.log_path.parent.name.startswith("iotix-")
    assert pid is not None and pid_gone(pid)


def test_restart_appends_to_the_log_and_ready_pattern_counts_only_this_start(tmp_path: Path) -> None:
    port = pick_free_port()
    process = ManagedProcess(server_command(port), port, log_dir=tmp_path, ready_pattern="server listening")
    process.start()
    process.stop()
    process.start()
    process.stop()
    assert process.log_path.read_text().count("server listening") == 2


def test_early_exit_raises_with_command_exit_code_and_log_tail() -> None:
    script = "import sys\nfor i in range(30): print('line', i)\nsys.exit(3)"
    process = ManagedProcess([sys.executable, "-c", script], pick_free_port(), name="quitter")
    with pytest.raises(ProcessStartError) as caught:
        process.start()
    error = caught.value
    assert isinstance(error, IoTixError)
    assert error.exit_code == 3
    assert "Exit code: 3" in str(error)
    assert "quitter exited during startup" in str(error)
    assert sys.executable in str(error)
    assert "line 29" in error.log_tail and "line 10" in error.log_tail
    assert "line 9\n" not in error.log_tail + "\n"  # only the last 20 lines
    assert not error.address_in_use
    assert not process.is_running


def test_missing_program_raises_process_start_error() -> None:
    process = ManagedProcess(["/nonexistent/iotix-server"], pick_free_port())
    with pytest.raises(ProcessStartError, match="could not be run"):
        process.start()


def test_failure_pattern_stops_a_process_that_keeps_running() -> None:
    script = "import time\nprint('FATAL: cannot bind', flush=True)\ntime.sleep(60)"
    process = ManagedProcess([sys.executable, "-c", script], pick_free_port(), failure_pattern="FATAL")
    started = time.monotonic()
    with pytest.raises(ProcessStartError, match="reported a startup failure") as caught:
        process.start()
    assert time.monotonic() - started < 5
    assert "FATAL: cannot bind" in caught.value.log_tail
    assert caught.value.exit_code == -signal.SIGTERM


def test_timeout_when_the_port_never_opens() -> None:
    script = "import time\ntime.sleep(60)"
    process = ManagedProcess([sys.executable, "-c", script], pick_free_port(), startup_timeout=0.5)
    with pytest.raises(ProcessStartError, match=r"was not ready on 127\.0\.0\.1:\d+ within 0\.5 s"):
        process.start()
    assert not process.is_running


def test_port_answered_by_someone_else_is_not_ready_without_the_ready_pattern() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        process = ManagedProcess(server_command(port), port, ready_pattern="server listening")
        with pytest.raises(ProcessStartError) as caught:
            process.start()
    assert caught.value.address_in_use
    assert "Address already in use" in caught.value.log_tail


def test_stop_kills_a_process_that_ignores_sigterm_and_its_group() -> None:
    port = pick_free_port()
    process = ManagedProcess(server_command(port, STUBBORN_SERVER), port, ready_pattern="server listening")
    process.start()
    grandchild = int(process.log_tail().split("grandchild ")[1].split()[0])
    pid = process.pid
    started = time.monotonic()
    assert process.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 3
    assert pid is not None and pid_gone(pid)
    deadline = time.monotonic() + 5
    while not pid_gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pid_gone(grandchild)


def test_starting_twice_is_an_error() -> None:
    port = pick_free_port()
    with ManagedProcess(server_command(port), port) as process, pytest.raises(IoTixError, match="already"):
        process.start()


def test_stop_all_stops_every_live_process() -> None:
    processes = []
    for _ in range(3):
        port = pick_free_port()
        processes.append(ManagedProcess(server_command(port), port).start())
    assert all(process in live_processes() for process in processes)
    stop_all()
    assert not any(process.is_running for process in processes)
    assert live_processes() == []


def test_pick_free_port_hands_out_distinct_bindable_ports() -> None:
    ports = [pick_free_port() for _ in range(20)] + list(pick_port_candidates(5))
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))


def test_retry_with_a_new_port_when_the_address_is_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        offered = iter([taken_port, taken_port])
        real_pick = process_module.pick_free_port
        monkeypatch.setattr(
            process_module, "pick_free_port", lambda host="127.0.0.1": next(offered, None) or real_pick(host)
        )
        tried: list[int] = []

        def factory(port: int) -> ManagedProcess:
            tried.append(port)
            return ManagedProcess(server_command(port), port, ready_pattern="server listening")

        process = start_with_port_retry(factory)
    try:
        assert tried[:2] == [taken_port, taken_port]
        assert len(tried) == 3
        assert process.port == tried[-1] != taken_port
        assert process.is_running
    finally:
        process.stop()


def test_gives_up_after_the_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        monkeypatch.setattr(process_module, "pick_free_port", lambda host="127.0.0.1": taken_port)
        with pytest.raises(IoTixError, match="stayed in use after 2 attempts"):
            start_with_port_retry(lambda port: ManagedProcess(server_command(port), port), attempts=2)


def test_fixed_port_is_retried_until_it_is_free() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    threading.Timer(0.3, taken.close).start()
    process = start_with_port_retry(
        lambda chosen: ManagedProcess(server_command(chosen), chosen, ready_pattern="listening"),
        port,
        attempts=10,
        retry_delay=0.1,
    )
    try:
        assert process.port == port
    finally:
        process.stop()


def test_other_start_errors_are_not_retried() -> None:
    calls: list[int] = []

    def factory(port: int) -> ManagedProcess:
        calls.append(port)
        return ManagedProcess([sys.executable, "-c", "raise SystemExit(2)"], port)

    with pytest.raises(ProcessStartError):
        start_with_port_retry(factory)
    assert len(calls) == 1


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_group_listens_on_tells_our_listener_from_someone_elses() -> None:
    port = pick_free_port()
    with ManagedProcess(server_command(port), port) as process, socket.socket() as other:
        assert process.pid is not None
        assert group_listens_on(process.pid, port) is True
        other.bind(("127.0.0.1", 0))
        other.listen()
        assert group_listens_on(process.pid, other.getsockname()[1]) is False


def test_sigterm_to_a_plain_python_parent_stops_its_children(tmp_path: Path) -> None:
    port = pick_free_port()
    parent_script = (
        "import sys, time\n"
        "from iotix.services import ManagedProcess\n"
        f"process = ManagedProcess({server_command(port)!r}, {port}).start()\n"
        "print(process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert not pid_gone(child)
    parent.terminate()
    assert parent.wait(timeout=10) == -signal.SIGTERM
    assert pid_gone(child)
