"""Process identity: pid plus process start time, and liveness.

A pid alone is not an identity: Linux reuses pids.  ETS ties a table to an
Erlang process; we tie it to ``(pid, start_time)`` where ``start_time`` is field
22 of ``/proc/<pid>/stat`` (clock ticks since boot).  A live process whose start
time differs from the recorded one is a different process that reused the pid.
One of the modules that touch the OS (with ``_segment``, ``_lock`` and ``_threads``).
"""

from __future__ import annotations

import os

__all__ = ["Ident", "alive", "current", "pid", "start_time"]

Ident = tuple[int, int]

_cached: tuple[int, Ident] | None = None
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def pid() -> int:
    """This process's pid, without a system call (refreshed in a forked child)."""
    return _pid


def start_time(pid: int) -> int | None:
    """Return the start time of ``pid`` in clock ticks since boot, or None if it does not exist."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may contain spaces
    rp = data.rfind(b")")
    fields = data[rp + 2 :].split()
    try:
        state = fields[0]
        if state in (b"Z", b"X"):  # zombie or dead: it will run no more code
            return None
        return int(fields[19])  # field 22 overall
    except (IndexError, ValueError):
        return None


def current() -> Ident:
    """Return this process's identity ``(pid, start_time)`` (cached per pid, fork-safe)."""
    global _cached
    pid = _pid
    if _cached is None or _cached[0] != pid:
        st = start_time(pid)
        _cached = (pid, (pid, st if st is not None else 0))
    return _cached[1]


def alive(pid: int, start: int) -> bool:
    """Return True when the process ``pid`` that started at ``start`` is running.

    ``start == 0`` means "unknown start time": only the pid is checked.
    """
    if pid <= 0:
        return False
    st = start_time(pid)
    if st is None:
        return False
    return start == 0 or st == start


def ident_of(pid: int) -> Ident | None:
    """Return the identity of a running process ``pid``, or None when it is not running."""
    st = start_time(pid)
    if st is None:
        return None
    return (pid, st)
