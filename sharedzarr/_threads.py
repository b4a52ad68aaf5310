"""The process's helper threads (big copies, periodic checks), rebuilt in a forked child.

numpy releases the GIL while it copies, so a big read or write runs part of its copies on
a second thread.  :func:`poll` runs small periodic checks on a third one, only while some
are registered (a writer's lease given back once idle).  The threads belong to one
process: a forked child has none of its parent's threads, so the fork hook here drops the
inherited ones and the child starts its own on first use.  :func:`signals_deferred` holds
back the Python handlers of SIGINT and SIGTERM for a block.  One of the modules that touch
the OS (threads, the CPU count, fork, signal handlers).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = [
    "COPY_THREADS",
    "DEFERRED_SIGNALS",
    "POLL_PERIOD",
    "copy_pool",
    "poll",
    "signals_deferred",
]

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


#: Seconds between two rounds of :func:`poll`'s checks.
POLL_PERIOD = 0.02

_polls: dict[object, Callable[[], bool]] = {}
_poll_cv = threading.Condition()
_poller: threading.Thread | None = None


def poll(key: object, check: Callable[[], bool]) -> None:
    """Call ``check()`` on the process's poll thread every :data:`POLL_PERIOD` seconds
    until it returns False or raises (registered again under the same ``key``, the new
    check replaces the old).  The thread runs only while some check is registered."""
    global _poller
    with _poll_cv:
        _polls[key] = check
        if _poller is None:
            _poller = threading.Thread(target=_poll_loop, name="sharedzarr-poll", daemon=True)
            _poller.start()
        _poll_cv.notify()


def _poll_loop() -> None:
    while True:
        with _poll_cv:
            while not _polls:
                _poll_cv.wait()
        time.sleep(POLL_PERIOD)
        with _poll_cv:
            checks = list(_polls.items())
        for key, check in checks:
            try:
                keep = check()
            except BaseException:
                keep = False
            if not keep:
                with _poll_cv:
                    if _polls.get(key) is check:
                        del _polls[key]


def _reset_after_fork() -> None:
    global _pool, _poller, _poll_cv
    _pool = None
    _poller = None
    _poll_cv = threading.Condition()
    _polls.clear()


os.register_at_fork(after_in_child=_reset_after_fork)


#: The signals whose Python handlers :func:`signals_deferred` holds back: Ctrl-C, and the
#: polite stop that worker pools and schedulers send (a handler often calls ``sys.exit``).
DEFERRED_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Run the block without the Python handlers of :data:`DEFERRED_SIGNALS`; a signal that
    arrives meanwhile is raised again, for its own handler, when the block ends.

    Python runs signal handlers on the main thread only, between bytecodes; so a handler
    that raises (``KeyboardInterrupt``, a ``sys.exit``) can stop the block anywhere.  On
    another thread no handler runs and the block runs as is.  Installing a handler costs a
    system call (about 3 us each way): this is for rare paths, not for every write.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    saved: dict[int, Any] = {}
    try:
        for signum in DEFERRED_SIGNALS:
            if callable(signal.getsignal(signum)):  # (SIG_DFL, SIG_IGN: nothing to hold)
                saved[signum] = signal.signal(signum, hold)
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)
