"""The process's helper thread for big copies, rebuilt in a forked child.

numpy releases the GIL while it copies, so a big read or write runs part of its copies on
a second thread.  The thread belongs to one process: a forked child has none of its
parent's threads, so the fork hook here drops the inherited pool and the child starts its
own on first use.  One of the modules that touch the OS (threads, the CPU count, fork).
"""

from __future__ import annotations

import concurrent.futures
import os

__all__ = ["COPY_THREADS", "copy_pool"]

#: Threads that copy at once, this one included (two at most: more do not help a copy).
COPY_THREADS = min(2, os.cpu_count() or 1)

_pool: concurrent.futures.ThreadPoolExecutor | None = None


def copy_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The process-wide helper threads for big copies (``COPY_THREADS - 1``; created on
    first use, and again in a forked child)."""
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(
            max(COPY_THREADS - 1, 1), thread_name_prefix="sharedzarr-copy"
        )
    return _pool


def _reset_after_fork() -> None:
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_reset_after_fork)
