"""The single-writer lock of a table, robust against writers that die.

The lock is an exclusive ``flock`` on a descriptor of the table's header
segment.  The kernel releases a ``flock`` when its holder's last descriptor
closes, which includes death by SIGKILL, so a crashed writer blocks the next
one for no longer than it takes the kernel to reap it (LMDB's robust-mutex
problem does not arise).  Crash *consistency* is the table's job: a writer
marks the header dirty while it works and the next writer repairs (see
``_table.Table._recover``).

``flock`` locks belong to an open file description, so:

* threads of one process share the descriptor, and a :class:`threading.RLock`
  serialises them first (the lock is reentrant per thread);
* a forked child must not inherit the parent's description (it would "hold"
  the parent's lock); the owner of this object reopens the descriptor in the
  child (:meth:`WriterLock.reset_after_fork`).

Waiting is a poll with exponential back-off (50 us up to 5 ms), because
``flock`` has no timed wait; the timeout is exact to within one back-off step.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable

from .errors import LockTimeoutError

__all__ = ["WriterLock"]


class WriterLock:
    """A reentrant, cross-process, cross-thread writer lock on a descriptor.

    Parameters
    ----------
    fd_getter : callable
        Returns the descriptor to ``flock`` (the table's header descriptor).
    holder : callable
        Returns the pid recorded as the current holder, for timeout messages.
    name : str
        The table name, for messages.
    """

    def __init__(self, fd_getter: Callable[[], int], holder: Callable[[], int], name: str) -> None:
        self._fd_getter = fd_getter
        self._holder = holder
        self._name = name
        self._rlock = threading.RLock()
        self._depth = 0

    @property
    def depth(self) -> int:
        """How many times the calling thread holds the lock (0 when it does not)."""
        return self._depth if self._owned() else 0

    def _owned(self) -> bool:
        return self._rlock._is_owned()  # type: ignore[attr-defined]

    def acquire(self, timeout: float | None) -> bool:
        """Acquire the lock; return True when this call took the OS lock (depth 0 -> 1).

        Raises
        ------
        LockTimeoutError
            When ``timeout`` seconds pass first; names the holder's pid.
        """
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        if timeout is None:
            self._rlock.acquire()
        elif not self._rlock.acquire(timeout=max(timeout, 0.0)):
            raise self._timeout(timeout, in_process=True)
        if self._depth > 0:
            self._depth += 1
            return False
        try:
            fd = self._fd_getter()
            delay = 50e-6
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR):
                        raise
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._timeout(timeout or 0.0)
                time.sleep(delay)
                delay = min(delay * 2, 5e-3)
        except BaseException:
            self._rlock.release()
            raise
        self._depth = 1
        return True

    def release(self) -> bool:
        """Release one level; return True when the OS lock was released."""
        self._depth -= 1
        released = False
        try:
            if self._depth == 0:
                try:
                    fcntl.flock(self._fd_getter(), fcntl.LOCK_UN)
                except (OSError, ValueError):
                    pass  # descriptor already closed: the kernel dropped the lock
                released = True
        finally:
            self._rlock.release()
        return released

    def reset_after_fork(self) -> None:
        """Forget any holding inherited through fork (the child holds nothing)."""
        self._rlock = threading.RLock()
        self._depth = 0

    def _timeout(self, timeout: float, in_process: bool = False) -> LockTimeoutError:
        pid = self._holder() or None
        who = f"process {pid}" if pid else "another process"
        if in_process:
            who = f"another thread of this process ({os.getpid()})"
            pid = os.getpid()
        return LockTimeoutError(
            f"timed out after {timeout:g}s waiting for the writer lock of table "
            f"{self._name!r}, held by {who}; retry, raise `timeout`, or stop that writer",
            holder_pid=pid,
        )
