"""Crash-point test hook: kill this process at a named point of a write.

The engine calls :func:`crash_point` between the stores of a write (``put.stored``,
``arena.reused``, ...).  It is a no-op unless ``SHAREDZARR_CRASH_AT`` (a point name or
``*``) is set in the environment when the process starts; ``SHAREDZARR_CRASH_AFTER``
(N) then lets N passes through and SIGKILLs the process at the next one.  The fault
tests (``make stress``) drive it from outside, through the environment only.

:func:`pause_point` is its twin for races: with ``SHAREDZARR_PAUSE_AT`` naming the point,
the process stops itself there (SIGSTOP) and goes on when the test sends SIGCONT, so a
test can put another process's work exactly between two steps of this one.
"""

from __future__ import annotations

import os

__all__ = ["CRASHES", "crash_point", "pause_point"]

_CRASH_AT: str | None = os.environ.get("SHAREDZARR_CRASH_AT") or None
_CRASH_AFTER = int(os.environ.get("SHAREDZARR_CRASH_AFTER", "0") or 0)
_crash_count = 0
_PAUSE_AT: str | None = os.environ.get("SHAREDZARR_PAUSE_AT") or None
#: Whether crash points are armed in this process: the hottest write paths test this
#: before calling :func:`crash_point` (a call costs more than the test).
CRASHES = _CRASH_AT is not None


def crash_point(where: str) -> None:
    """Test hook: SIGKILL this process at the N-th pass of a named point.

    Enabled only by ``SHAREDZARR_CRASH_AT`` (a point name or ``*``) and
    ``SHAREDZARR_CRASH_AFTER`` (N) in the environment; a no-op otherwise.

    Parameters
    ----------
    where : str
        The point's name, e.g. ``"put.stored"``.
    """
    global _crash_count
    if _CRASH_AT is None:
        return
    if _CRASH_AT != "*" and _CRASH_AT != where:
        return
    _crash_count += 1
    if _crash_count > _CRASH_AFTER:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def pause_point(where: str) -> None:
    """Test hook: stop this process (SIGSTOP) at a named point until it gets SIGCONT.

    Enabled only by ``SHAREDZARR_PAUSE_AT`` naming the point; a no-op otherwise.
    Only the first pass stops.

    Parameters
    ----------
    where : str
        The point's name, e.g. ``"reap.decided"``.
    """
    global _PAUSE_AT
    if _PAUSE_AT is None or _PAUSE_AT != where:
        return
    _PAUSE_AT = None
    import signal

    os.kill(os.getpid(), signal.SIGSTOP)
