"""Ray, the optional engine under sharded fleets: imported only when a fleet or a receiver asks for shards.

- :func:`ray_module` imports ``ray`` or fails with what to install (``robotframework-iotix[cluster]``).
- :func:`ensure_ray` connects this process to a Ray cluster once: the address given (a library's
  ``ray_address`` import argument), else ``IOTIX_RAY_ADDRESS``, else a local Ray started on demand. A local Ray
  lives in a temporary folder of its own (no ``/tmp/ray`` left behind), sends no usage statistics and starts
  no dashboard; it is shut down, and its folder removed, when the process ends (or by :func:`shutdown_ray`).
- :func:`remote` makes a Ray actor class of a plain class, lazily, so that modules defining actors import
  without Ray.

Actors are anonymous and owned by the process that made them: two Robot processes (pabot) on one cluster
never share or clash over names, and a Robot process that ends takes its actors with it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from iotix.errors import ConfigurationError

log = logging.getLogger("iotix.cluster")

#: The environment variable that names the Ray cluster to join (``ray://host:10001`` or ``host:6379``).
ADDRESS_ENV = "IOTIX_RAY_ADDRESS"
#: Ray's namespace for IoTix' actors (they are anonymous within it).
NAMESPACE = "iotix"
_SHORT_TMP = "/tmp"  # noqa: S108 (a fresh mkdtemp inside it; $TMPDIR may be too long for Ray's sockets)
INSTALL_HINT = "pip install 'robotframework-iotix[cluster]' (or: pip install ray)"

_lock = threading.Lock()
_state: dict[str, Any] = {"address": None, "temp_dir": None}


def ray_module(why: str = "shards") -> ModuleType:
    """``ray``, imported; a ConfigurationError saying what to install when it is not there."""
    try:
        import ray
    except ImportError:
        raise ConfigurationError(
            f"{why} need Ray, which is not installed in this Python ({sys.executable}): {INSTALL_HINT}. "
            "Without Ray, leave shards at 1."
        ) from None
    return ray


def _library_root() -> str:
    """The folder that holds the ``iotix`` package, for the PYTHONPATH of a local Ray's workers."""
    return str(Path(__file__).resolve().parents[2])


def ensure_ray(address: str | None = None) -> str:
    """Connect this process to Ray (once) and return a description of the cluster: its address or 'local'.

    ``address`` (or ``IOTIX_RAY_ADDRESS``) joins an existing cluster; without one a local Ray is started
    with as many CPUs as the machine has. Connecting again with another address fails: one process, one
    cluster.

    Ray is always started on one thread of its own that lives as long as the process: on the main thread
    ``ray.init`` replaces the process's SIGTERM handler with one that exits at once (which would take Robot's
    graceful stop away), and the servers a local Ray starts die with the thread that started them (Linux's
    parent-death signal follows the thread), so a short-lived thread would take the local cluster with it.
    """
    global _init_thread
    with _lock:
        if _init_thread is None:
            _init_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iotix-ray")
        executor = _init_thread
    if threading.current_thread().name.startswith("iotix-ray"):
        return _ensure_ray(address)
    return executor.submit(_ensure_ray, address).result()


_init_thread: ThreadPoolExecutor | None = None


class _NoSigtermWarning(logging.Filter):
    """Ray warns that it set no SIGTERM handler off the main thread: on purpose here (see ensure_ray)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


_SIGTERM_FILTER = _NoSigtermWarning()


def _ensure_ray(address: str | None) -> str:
    ray = ray_module()
    logging.getLogger("ray._private.worker").addFilter(_SIGTERM_FILTER)  # once: filters are a set
    wanted = address or os.environ.get(ADDRESS_ENV) or None
    with _lock:
        if ray.is_initialized():
            current = _state["address"]
            if wanted and current != wanted:
                raise ConfigurationError(
                    f"This process already uses the Ray cluster {current or 'started locally'}; it cannot also "
                    f"join {wanted}. Give every library the same ray_address (or set {ADDRESS_ENV} once)."
                )
            return current or "local"
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        env_path = os.pathsep.join(p for p in (_library_root(), os.environ.get("PYTHONPATH", "")) if p)
        options: dict[str, Any] = {
            "namespace": NAMESPACE,
            "log_to_driver": False,
            "logging_level": logging.WARNING,
            "configure_logging": False,
        }
        if wanted:
            try:
                ray.init(address=wanted, **options)
            except Exception as err:
                raise ConfigurationError(
                    f"Cannot join the Ray cluster at {wanted} ({type(err).__name__}: {err}). Check that the "
                    f"cluster runs and the address (ray_address / {ADDRESS_ENV}) is right."
                ) from None
            _state.update(address=wanted)
            log.info("joined the Ray cluster at %s", wanted)
            return wanted
        # A short folder: Ray's Unix socket paths must stay under 107 characters.
        temp_dir = tempfile.mkdtemp(prefix="iotix-ray-", dir=_SHORT_TMP if os.path.isdir(_SHORT_TMP) else None)
        # The local cluster's token lives in its folder (not in ~/.ray) and it listens on loopback only.
        if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
            token = Path(temp_dir) / "auth_token"
            # One token per process: Ray keeps the first it read, so a local Ray started again after
            # shutdown_ray (the next test module, say) must have the same one.
            token.write_text(_state.setdefault("token", secrets.token_hex(32)))
            token.chmod(0o600)
            os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
            _state["token_env"] = True  # ours: forgotten at shutdown (a later local Ray gets a new token)
        try:
            ray.init(
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                _temp_dir=temp_dir,
                _node_ip_address="127.0.0.1",
                runtime_env={"env_vars": {"PYTHONPATH": env_path, "RAY_USAGE_STATS_ENABLED": "0"}},
                **options,
            )
        except Exception as err:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise ConfigurationError(
                f"Cannot start a local Ray ({type(err).__name__}: {err}); set {ADDRESS_ENV} to join a running "
                "cluster instead."
            ) from None
        _state.update(address=None, temp_dir=temp_dir)
        log.info("started a local Ray in %s", temp_dir)
        return "local"


def shutdown_ray() -> None:
    """Disconnect from Ray; a local Ray this process started stops, its folder is removed and no process of
    it is left behind (Ray 2.60's dashboard and runtime-env agents can outlive ``ray.shutdown()``)."""
    with _lock:
        temp_dir = _state["temp_dir"]
        leftovers = _processes_using(temp_dir) if temp_dir else []
        if "ray" in sys.modules:
            ray = sys.modules["ray"]
            with contextlib.suppress(Exception):
                if ray.is_initialized():
                    ray.shutdown()
        _state.update(address=None, temp_dir=None)
        if _state.pop("token_env", False):
            os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        for pid in leftovers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _processes_using(folder: str) -> list[int]:
    """Processes (other than this one) with a file open in ``folder``: the local Ray's own (Linux /proc)."""
    own, found = os.getpid(), []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd).startswith(folder) for fd in (entry / "fd").iterdir()):
                found.append(int(entry.name))
    return found


atexit.register(shutdown_ray)


def remote(cls: type, **actor_options: Any) -> Any:
    """``cls`` as a Ray actor class (``ray.remote(**actor_options)(cls)``), made on first use."""
    ray = ray_module()
    cache = cls.__dict__.get("_iotix_remote")
    key = tuple(sorted(actor_options.items(), key=lambda kv: kv[0]))
    if cache is None:
        cache = {}
        cls._iotix_remote = cache  # type: ignore[attr-defined]
    if key not in cache:
        cache[key] = ray.remote(**actor_options)(cls) if actor_options else ray.remote(cls)
    return cache[key]


def actor_died_error() -> tuple[type[BaseException], ...]:
    """The exceptions Ray raises for a call to an actor whose process is gone."""
    ray = ray_module()
    return (ray.exceptions.RayActorError,)


def task_error() -> tuple[type[BaseException], ...]:
    """The exception Ray raises for a call whose method raised (``.cause`` is the original exception)."""
    ray = ray_module()
    return (ray.exceptions.RayTaskError,)
