"""Child-process bodies for tests/test_lock.py (importable by spawned processes)."""

from __future__ import annotations

import mmap
import os
import signal
import time

from sharedzarr._lock import WriterLock


def hint_of(path: str):
    """The four hint words (want, grants, release sequence, last) on ``path`` (a scratch file)."""
    fd = os.open(path, os.O_RDWR)
    try:
        m = mmap.mmap(fd, 32)
    finally:
        os.close(fd)
    return m, memoryview(m).cast("Q")[:4]


def hold(path: str, ready, release, out) -> None:
    """Take the lock, say so, hold it until ``release`` is set, record when released."""
    m, words = hint_of(path)
    lock = WriterLock(path, lambda: 0, "t", hint_words=lambda: words)
    lock.acquire(5)
    ready.set()
    release.wait(30)
    out.put(time.perf_counter_ns())
    lock.release()


def wait_for(path: str, started, out, timeout: float) -> None:
    """Block on the lock; report when it was granted (or the error)."""
    m, words = hint_of(path)
    lock = WriterLock(path, lambda: 0, "t", hint_words=lambda: words)
    started.set()
    try:
        lock.acquire(timeout)
    except Exception as e:  # reported to the test
        out.put(repr(e))
        return
    out.put(time.perf_counter_ns())
    lock.release()


def churn(path: str, seconds: float, ready, out) -> None:
    """A producer: take and release the lock back to back, holding it ~1 ms each time."""
    m, words = hint_of(path)
    lock = WriterLock(path, lambda: 0, "t", hint_words=lambda: words)
    ready.set()
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        lock.acquire(10)
        t = time.perf_counter() + 1e-3
        while time.perf_counter() < t:
            pass
        lock.release()
        n += 1
    out.put(n)


def grab(path: str, tries: int, timeout: float, out) -> None:
    """Take the lock ``tries`` times with ``timeout`` each; report how many timed out."""
    m, words = hint_of(path)
    lock = WriterLock(path, lambda: 0, "t", hint_words=lambda: words)
    failed = 0
    for _ in range(tries):
        try:
            lock.acquire(timeout)
        except TimeoutError:
            failed += 1
            continue
        time.sleep(1e-3)
        lock.release()
        time.sleep(5e-3)
    out.put(failed)


def hold_then_fork_and_die(path: str, use_mp: bool, ready) -> None:
    """Take the lock, fork a long-lived child, then wait to be SIGKILLed by the test."""
    lock = WriterLock(path, lambda: 0, "t")
    lock.acquire(5)
    if use_mp:
        import multiprocessing as mp

        p = mp.get_context("fork").Process(target=time.sleep, args=(60,), daemon=False)
        p.start()
        child = p.pid
    else:
        child = os.fork()
        if child == 0:  # pragma: no cover - the child only sleeps
            try:
                time.sleep(60)
            finally:
                os._exit(0)
    with open(path + ".child", "w") as f:
        f.write(str(child))
    ready.set()
    signal.pause()


def hold_array_lock(name: str, ready, release) -> None:
    """Hold an array's writer lock (one open write operation) until ``release`` is set."""
    import sharedzarr as sz

    a = sz.open(name)
    with a.backend.writer():
        ready.set()
        release.wait(60)
    a.close()


def wait_counting_sleeps(path: str, spin_s: float, started, out) -> None:
    """Block on the lock with a look-on window of ``spin_s`` seconds; report how many times
    the wait slept on the futex (FUTEX_WAIT calls) before the grant."""
    import sharedzarr._lock as LK

    LK.YIELD_SPIN_S = spin_s
    real = LK._futex()
    sleeps = [0]

    def counting(nr, addr, op, *rest):
        if op == LK._FUTEX_WAIT:
            sleeps[0] += 1
        return real(nr, addr, op, *rest)

    LK._futex_fn = counting
    m, words = hint_of(path)
    lock = WriterLock(path, lambda: 0, "t", hint_words=lambda: words)
    started.set()
    lock.acquire(60)
    out.put(sleeps[0])
    lock.release()
