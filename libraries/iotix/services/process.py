"""Child server processes (brokers, sinks) on 127.0.0.1 that never outlive the run.

:class:`ManagedProcess` starts a command in its own process group with its output captured to a log file,
waits until its TCP port accepts connections, reports an early exit with the tail of the log, and stops the
whole group (SIGTERM, then SIGKILL). Every live instance is kept in a module-level registry that an ``atexit``
hook stops, so a finished run leaves no child behind.

Servers such as Mosquitto cannot listen on port 0 and tell which port they got, so
:func:`start_with_port_retry` asks the kernel for a free port, starts the server on it and, when the server
reports that the address is in use (another pabot process took the port in between), tries a new port.

POSIX only (process groups, ``os.killpg``, ``os.waitid``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from iotix.errors import IoTixError
from iotix.fdlimit import raise_soft_limit

__all__ = [
    "LOCALHOST",
    "ManagedProcess",
    "ProcessStartError",
    "group_listens_on",
    "live_processes",
    "pick_free_port",
    "pick_port_candidates",
    "port_accepts",
    "start_with_port_retry",
    "stop_all",
]

LOCALHOST = "127.0.0.1"
LOG_TAIL_LINES = 20
DEFAULT_PORT_ATTEMPTS = 5

#: What servers print when their listening address is taken (Mosquitto, asyncio/Python, Go, Windows).
ADDRESS_IN_USE = re.compile(
    r"address already in use|errno 98\b|eaddrinuse|only one usage of each socket address", re.IGNORECASE
)

Pattern = str | re.Pattern[str]


class ProcessStartError(IoTixError):
    """A managed server did not come up: it exited, reported a failure or did not open its port in time."""

    def __init__(
        self,
        message: str,
        *,
        command: Sequence[str],
        exit_code: int | None,
        log_tail: str,
        address_in_use: bool,
    ) -> None:
        super().__init__(message)
        self.command = tuple(command)
        self.exit_code = exit_code
        self.log_tail = log_tail
        self.address_in_use = address_in_use


# --------------------------------------------------------------------------------------------- registry

_LIVE: dict[int, ManagedProcess] = {}
_LIVE_LOCK = threading.RLock()  # re-entrant: the SIGTERM handler may interrupt a holder


def _register(process: ManagedProcess) -> None:
    with _LIVE_LOCK:
        _LIVE[id(process)] = process
    _install_sigterm_cleanup()


def _install_sigterm_cleanup() -> None:
    """Make SIGTERM stop the children first, when nobody else handles SIGTERM (``atexit`` does not run then).

    Robot Framework installs its own handler and exits normally, so ``atexit`` covers it; this covers plain
    Python programs (a demo script, pytest) that are terminated.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop_all_then_terminate)


def _stop_all_then_terminate(signum: int, _frame: object) -> None:
    stop_all(timeout=2.0)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _unregister(process: ManagedProcess) -> None:
    with _LIVE_LOCK:
        _LIVE.pop(id(process), None)


def live_processes() -> list[ManagedProcess]:
    """The managed processes started and not yet stopped, oldest first."""
    with _LIVE_LOCK:
        return list(_LIVE.values())


def stop_all(timeout: float = 5.0) -> None:
    """Stop every live managed process, newest first. Registered with ``atexit``."""
    for process in reversed(live_processes()):
        with contextlib.suppress(Exception):
            process.stop(timeout=timeout)


atexit.register(stop_all)


# ------------------------------------------------------------------------------------------------ ports

_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def pick_free_port(host: str = LOCALHOST) -> int:
    """Return a port that is free on ``host`` right now: bind ``(host, 0)``, read the port, close the socket.

    The port can be taken by someone else before the caller binds it, so start servers through
    :func:`start_with_port_retry`. Ports already handed out by this process are not handed out again.
    """
    port = 0
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        with _HANDED_OUT_LOCK:
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port
    return port


def pick_port_candidates(attempts: int = DEFAULT_PORT_ATTEMPTS, host: str = LOCALHOST) -> Iterator[int]:
    """Yield up to ``attempts`` free ports, each picked only when asked for (just before a start)."""
    for _ in range(attempts):
        yield pick_free_port(host)


def port_accepts(host: str, port: int, timeout: float = 0.25) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def group_listens_on(pgid: int, port: int) -> bool | None:
    """Whether a process of group ``pgid`` holds a TCP socket listening on ``port`` (Linux ``/proc``).

    None when that cannot be told (no ``/proc``, or another user's process that we may not inspect). This
    tells our server apart from another one that took the port first and answers connections in its place.
    """
    listeners = _listening_socket_inodes(port)
    if listeners is None:
        return None
    unknown = False
    for pid in _group_members(pgid):
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except PermissionError:
            unknown = True
            continue
        except OSError:
            continue  # exited meanwhile
        if links & listeners:
            return True
    return None if unknown else False


def _listening_socket_inodes(port: int) -> set[str] | None:
    """``socket:[inode]`` names of the TCP sockets listening on ``port``, or None without ``/proc/net``."""
    found: set[str] = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(f"socket:[{fields[9]}]")
    return found if readable else None


def _group_members(pgid: int) -> list[int]:
    """Pids of the processes whose process group is ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[2] == str(pgid):
            members.append(int(entry))
    return members


def start_with_port_retry(
    factory: Callable[[int], ManagedProcess],
    port: int = 0,
    *,
    attempts: int = DEFAULT_PORT_ATTEMPTS,
    retry_delay: float = 0.25,
    host: str = LOCALHOST,
) -> ManagedProcess:
    """Start ``factory(port)`` and retry while the server fails because its address is in use.

    With ``port=0`` every attempt uses a new free port (see :func:`pick_free_port`); with a fixed port (a
    restart that clients reconnect to) every attempt uses that port again after ``retry_delay`` seconds. Any
    other startup failure is raised at once. Returns the started process.
    """
    last_error: ProcessStartError | None = None
    for attempt in range(attempts):
        if port:
            chosen = port
            if attempt:
                time.sleep(retry_delay * (1.0 + random.random()))
        else:
            chosen = pick_free_port(host)
        try:
            return factory(chosen).start()
        except ProcessStartError as error:
            if not error.address_in_use:
                raise
            last_error = error
    where = f"port {port}" if port else f"{attempts} free ports"
    raise IoTixError(f"The address stayed in use after {attempts} attempts on {where}.\n{last_error}")


# ------------------------------------------------------------------------------------------ the process


def _compile(pattern: Pattern | None) -> re.Pattern[str] | None:
    if pattern is None or isinstance(pattern, re.Pattern):
        return pattern
    return re.compile(pattern)


class ManagedProcess:
    """One child server process with a TCP port on ``host``, its output in a log file.

    ``ready_pattern`` (a regex searched in the output of this start) must also appear before the process
    counts as ready: the port alone can be answered by another server that took it first. ``failure_pattern``
    in the output counts as a startup failure even if the process keeps running (amqtt stays up when it cannot
    bind).
    With ``check_owner`` (Linux) the listening socket must belong to the process group too (see
    :func:`group_listens_on`). Without ``log_dir`` the log goes to a new temporary directory, which is kept
    for reading after the run.
    """

    def __init__(
        self,
        command: Sequence[str | os.PathLike[str]],
        port: int,
        *,
        host: str = LOCALHOST,
        name: str | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        log_name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        ready_pattern: Pattern | None = None,
        failure_pattern: Pattern | None = None,
        startup_timeout: float = 10.0,
        poll_interval: float = 0.02,
        check_owner: bool = True,
    ) -> None:
        self._command = tuple(os.fspath(part) for part in command)
        if not self._command:
            raise IoTixError("ManagedProcess needs a command to run.")
        self._port = port
        self._host = host
        self._name = name or Path(self._command[0]).name
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._log_name = log_name or f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', self._name)}.log"
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._ready = _compile(ready_pattern)
        self._failure = _compile(failure_pattern)
        self._startup_timeout = startup_timeout
        self._poll_interval = poll_interval
        self._check_owner = check_owner
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._lock = threading.RLock()

    # ---------------------------------------------------------------- properties

    @property
    def command(self) -> tuple[str, ...]:
        """The command line, as given."""
        return self._command

    @property
    def name(self) -> str:
        """Name used in messages (default: the program's file name)."""
        return self._name

    @property
    def host(self) -> str:
        """Address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """TCP port the server listens on."""
        return self._port

    @property
    def address(self) -> str:
        """``host:port``."""
        return f"{self._host}:{self._port}"

    @property
    def pid(self) -> int | None:
        """Process id (also the process group id) of the last start, or None if never started."""
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit code once the process has been stopped and reaped, negative for a signal; else None."""
        return self._popen.returncode if self._popen is not None else None

    @property
    def log_path(self) -> Path:
        """The log file (stdout and stderr of every start, appended)."""
        return self._resolve_log_dir() / self._log_name

    @property
    def is_running(self) -> bool:
        """Whether the process has been started and has not exited."""
        return self._popen is not None and not self._has_exited()

    # ---------------------------------------------------------------- start

    def start(self) -> ManagedProcess:
        """Start the command and wait until ``host:port`` accepts connections; return self.

        Raises :class:`ProcessStartError` (the process is stopped first) when the program cannot be run,
        exits, prints ``failure_pattern`` or does not become ready within ``startup_timeout`` seconds.
        """
        with self._lock:
            if self.is_running:
                raise IoTixError(f"{self._name} is already running (pid {self.pid}).")
            self._spawn()
            try:
                self._wait_ready()
            except BaseException:
                self.stop()
                raise
            return self

    def _spawn(self) -> None:
        # A server inherits our open-file limit and Mosquitto does not raise its own: one socket per device.
        raise_soft_limit()
        log_path = self.log_path
        with log_path.open("ab") as log:
            self._log_offset = log.tell()
            try:
                self._popen = subprocess.Popen(  # noqa: S603 - the command comes from our own service modules
                    self._command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=self._env,
                    cwd=self._cwd,
                )
            except OSError as error:
                self._popen = None
                raise ProcessStartError(
                    f"{self._name} could not be run: {error}\nCommand: {shlex.join(self._command)}",
                    command=self._command,
                    exit_code=None,
                    log_tail="",
                    address_in_use=False,
                ) from error
        _register(self)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if self._has_exited():
                raise self._start_error("exited during startup")
            output = self._startup_output()
            if self._failure is not None and self._failure.search(output):
                raise self._start_error("reported a startup failure")
            if self._looks_ready(output):
                return
            if time.monotonic() >= deadline:
                raise self._start_error(f"was not ready on {self.address} within {self._startup_timeout:g} s")
            time.sleep(self._poll_interval)

    def _looks_ready(self, output: str) -> bool:
        """Ready pattern seen, port accepts, and the listener belongs to our group (when that can be told)."""
        if self._ready is not None and self._ready.search(output) is None:
            return False
        if not port_accepts(self._host, self._port) or self._has_exited():
            return False
        return not self._check_owner or group_listens_on(self._popen_pid(), self._port) is not False

    def _popen_pid(self) -> int:
        assert self._popen is not None
        return self._popen.pid

    def _start_error(self, reason: str) -> ProcessStartError:
        """Stop the process and describe why it did not start, with the tail of this start's output."""
        output = self._startup_output()
        self.stop()
        tail = "\n".join(output.splitlines()[-LOG_TAIL_LINES:])
        message = (
            f"{self._name} {reason}.\n"
            f"Command: {shlex.join(self._command)}\n"
            f"Exit code: {self.returncode}\n"
            f"Last lines of {self.log_path}:\n{tail or '(no output)'}"
        )
        return ProcessStartError(
            message,
            command=self._command,
            exit_code=self.returncode,
            log_tail=tail,
            address_in_use=ADDRESS_IN_USE.search(output) is not None,
        )

    # ---------------------------------------------------------------- stop

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop the process group: SIGTERM, after ``timeout`` s SIGKILL; reap it and return its exit code.

        Does nothing (returns the old exit code) if the process was never started or is already stopped.
        Anything else left in the group is killed too.
        """
        with self._lock:
            popen = self._popen
            if popen is None:
                return None
            if popen.returncode is None:
                if not self._has_exited():
                    self._signal_group(signal.SIGTERM)
                    if not self._wait_exited(timeout):
                        self._signal_group(signal.SIGKILL)
                        self._wait_exited(timeout)
                # The leader is a zombie until reaped, so its pid still names the group: kill stragglers.
                self._signal_group(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout=timeout)
            _unregister(self)
            return popen.returncode

    def _signal_group(self, signum: signal.Signals) -> None:
        if self._popen is None or self._popen.returncode is not None:
            return  # reaped: the pid may already belong to someone else
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signum)

    def _has_exited(self) -> bool:
        """Whether the leader has exited, without reaping it (so its pid cannot be reused meanwhile)."""
        popen = self._popen
        if popen is None or popen.returncode is not None:
            return True
        if not hasattr(os, "waitid"):
            return popen.poll() is not None
        try:
            result = os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere: let Popen record it so its pid is never signalled
            popen.poll()
            return True
        return result is not None

    def _wait_exited(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._has_exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # ---------------------------------------------------------------- log

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the log file ('' if there is none yet)."""
        try:
            text = _read_tail(self.log_path, 0)
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _startup_output(self) -> str:
        try:
            return _read_tail(self.log_path, self._log_offset)
        except FileNotFoundError:
            return ""

    def _resolve_log_dir(self) -> Path:
        if self._log_dir is None:
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", self._name)
            self._log_dir = Path(tempfile.mkdtemp(prefix=f"iotix-{safe}-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return self._log_dir

    # ---------------------------------------------------------------- context manager, repr

    def __enter__(self) -> ManagedProcess:
        if not self.is_running:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<ManagedProcess {self._name} {self.address} pid={self.pid} {state}>"


def _read_tail(path: Path, offset: int, limit: int = 64 * 1024) -> str:
    """Text of ``path`` from ``offset`` on, at most its last ``limit`` bytes."""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(offset, size - limit))
        return handle.read().decode("utf-8", errors="replace")
