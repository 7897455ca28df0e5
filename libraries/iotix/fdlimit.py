"""The process's open-file limit: every socket a device holds is a file descriptor.

A plain ``robot`` run inherits a soft limit that is often 1,024 while the hard limit is far higher, and a fleet
of a few thousand MQTT devices would then fail device by device with "Too many open files". So:

- :func:`raise_soft_limit` lifts the soft limit to the hard one (no privilege needed); the runtime calls it
  when it starts;
- :func:`check_descriptors` refuses a fleet that needs more descriptors than the process can have, when it
  is created and before any device connects, naming both numbers and how to raise the limit or shard.

Where the ``resource`` module does not exist (Windows) there is no such limit to manage: both do nothing.
"""

from __future__ import annotations

import logging
import os

from iotix.errors import ConfigurationError

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

log = logging.getLogger("iotix.fdlimit")

#: Descriptors kept free for everything but fleets' sockets: Robot's output files, receivers, local servers'
#: pipes, the loop's own.
RESERVE = 64
#: Tried in turn when the hard limit is unlimited (macOS refuses an unlimited soft limit above its own maximum).
_UNLIMITED_TRIES = (1_048_576, 65_536, 24_576, 10_240)


def limits() -> tuple[int, int] | None:
    """``(soft, hard)`` open-file limits of this process (unlimited as a very large number), or None."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = 2**62
    return (
        unlimited if soft == resource.RLIM_INFINITY else soft,
        unlimited if hard == resource.RLIM_INFINITY else hard,
    )


def raise_soft_limit() -> tuple[int, int] | None:
    """Lift the soft open-file limit to the hard limit; return the limits now in force (None: no limits)."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or (hard != resource.RLIM_INFINITY and soft >= hard):
        return limits()
    tries = (hard,) if hard != resource.RLIM_INFINITY else _UNLIMITED_TRIES
    for wanted in tries:
        if wanted <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            continue
        log.debug("open-file limit raised from %s to %s (hard limit %s)", soft, wanted, hard)
        break
    return limits()


def open_descriptors() -> int:
    """How many file descriptors this process has open now (0 where that cannot be read)."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return max(0, len(os.listdir(folder)) - 1)  # less the one that lists the folder
        except OSError:
            continue
    return 0


def too_many_message(fleet: str, devices: int, needed: int, in_use: int, pending: int, soft: int, hard: int) -> str:
    """Why a fleet that needs ``needed`` descriptors does not fit under ``soft``, and what to do (pure)."""
    total = in_use + pending + needed + RESERVE
    suggestion = -(-total // 1024) * 1024
    others = f"{in_use:,} already open, {RESERVE} kept in reserve"
    if pending:
        others += f" and {pending:,} for fleets created but not started yet"
    if soft >= hard or total > hard:
        limit, which = hard, "its hard limit"
        raise_it = (
            f"Raise the hard limit before starting the run (as root: `ulimit -Hn {suggestion}`; "
            f"`LimitNOFILE={suggestion}` for a systemd service, `nofile` in /etc/security/limits.conf, "
            f"`docker run --ulimit nofile={suggestion}:{suggestion}`)"
        )
    else:
        limit, which = soft, f"its soft limit, which could not be raised to its hard limit of {hard:,}"
        raise_it = f"Raise the soft limit before starting the run (`ulimit -Sn {hard}`)"
    return (
        f"Fleet '{fleet}': its {devices:,} devices need {needed:,} file descriptors (sockets); with {others}, "
        f"this process would need {total:,}, but it can have at most {limit:,} open files ({which}). "
        f"{raise_it}, or shard the devices over several processes (fewer devices per fleet, e.g. one fleet per "
        "pabot process)."
    )


def check_descriptors(fleet: str, devices: int, needed: int, pending: int = 0) -> None:
    """Refuse a fleet whose ``needed`` descriptors do not fit under the process's open-file limit.

    ``pending``: descriptors of other fleets that are created but not connected yet (they count against the
    same limit once they start). The soft limit is raised to the hard one first when that is what it takes.
    """
    current = limits()
    if current is None or needed <= 0:
        return
    soft, hard = current
    in_use = open_descriptors()
    total = in_use + pending + needed + RESERVE
    if total > soft and total <= hard:
        soft, hard = raise_soft_limit() or current
    if total > soft:
        raise ConfigurationError(too_many_message(fleet, devices, needed, in_use, pending, soft, hard))
