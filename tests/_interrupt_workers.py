"""Child-process bodies for tests/test_interrupts.py (importable by spawned processes)."""

from __future__ import annotations

import signal
import sys
import time

import numpy as np

import sharedzarr as sz

# what a signal handler of each kind does: Ctrl-C's handler, and a SIGTERM-style sys.exit
_HANDLERS = {
    "KeyboardInterrupt": signal.default_int_handler,
    "SystemExit": lambda signum, frame: sys.exit(3),
}


def write_interrupted(name: str, how: str, kind: str, wanted: int, out, leave) -> None:
    """Write the array with one value per write while a one-shot timer, armed at a random
    moment of each write, runs a handler that raises ``kind``; after each interrupted write,
    check the array holds one write whole and this process holds no writer lock.

    Reports (interrupted writes, writes that left a mix, checks that found the lock held,
    writes that finished before their timer), then waits for ``leave`` (the parent writes
    meanwhile: the lock must be free while this process lives)."""
    a = sz.open(name)
    lock = a._live().table._lock
    rng = np.random.default_rng()
    signal.signal(signal.SIGALRM, _HANDLERS[kind])
    exc = KeyboardInterrupt if kind == "KeyboardInterrupt" else SystemExit
    t0 = time.perf_counter()
    a[...] = 0
    took = time.perf_counter() - t0  # (how long one write takes here: when to interrupt)
    box = (slice(3, a.shape[0] - 5), slice(7, a.shape[1] - 2))  # partial chunks on the edges
    rows = np.arange(0, a.shape[0], 3)
    hit = mixed = stuck = whole = k = 0
    deadline = time.monotonic() + 60
    while hit < wanted and time.monotonic() < deadline:
        k += 1
        where = {"whole": (Ellipsis,), "box": box, "rows": (rows,)}[how]
        try:
            signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.02, 1.0) * took)
            a[where] = k
            signal.setitimer(signal.ITIMER_REAL, 0)
            whole += 1
        except exc:
            hit += 1
        stuck += int(lock.depth != 0)
        v = a[where]
        mixed += int(v.min() != v.max())
    out.put((hit, mixed, stuck, whole))
    leave.wait(60)
    a.close()
