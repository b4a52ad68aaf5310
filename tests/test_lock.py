"""The writer lock across real processes: hand-off, fairness, timeouts, fork, death."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
import uuid

import _lock_workers as W
import pytest

from sharedzarr._lock import WriterLock
from sharedzarr.errors import LockTimeoutError

CTX = mp.get_context("spawn")


@pytest.fixture
def lockfile(tmp_path):
    path = str(tmp_path / "lockfile")
    with open(path, "wb") as f:
        f.write(b"\0" * 4096)
    return path


def _lock(path: str) -> tuple[WriterLock, object]:
    m, words = W.hint_of(path)
    return WriterLock(path, lambda: 0, "t", hint_words=lambda: words), m


def test_waiter_gets_the_lock_when_the_holder_releases(lockfile):
    ready, release, started = CTX.Event(), CTX.Event(), CTX.Event()
    q_hold, q_wait = CTX.Queue(), CTX.Queue()
    a = CTX.Process(target=W.hold, args=(lockfile, ready, release, q_hold))
    a.start()
    assert ready.wait(30)
    b = CTX.Process(target=W.wait_for, args=(lockfile, started, q_wait, 30))
    b.start()
    assert started.wait(30)
    time.sleep(0.3)
    assert q_wait.empty()  # still blocked while A holds it
    release.set()
    released_at = q_hold.get(timeout=30)
    granted_at = q_wait.get(timeout=30)
    assert isinstance(granted_at, int) and granted_at >= released_at
    a.join(30)
    b.join(30)


@pytest.mark.parametrize(("spin_s", "sleeps"), [(60.0, False), (1e-3, True)])
def test_a_waiter_looks_on_before_it_sleeps(lockfile, spin_s, sleeps):
    """A waiter watches the release sequence for its look-on window instead of sleeping on
    the futex, so a release inside the window needs no wake-up (a process switch); past
    the window it sleeps.  The hold (0.2 s) is far inside the one window, far outside the
    other; what is counted is the waiter's futex sleeps, not time."""
    ready, release, started = CTX.Event(), CTX.Event(), CTX.Event()
    q_hold, q_wait = CTX.Queue(), CTX.Queue()
    a = CTX.Process(target=W.hold, args=(lockfile, ready, release, q_hold))
    a.start()
    assert ready.wait(30)
    b = CTX.Process(target=W.wait_counting_sleeps, args=(lockfile, spin_s, started, q_wait))
    b.start()
    assert started.wait(30)
    time.sleep(0.2)
    release.set()
    q_hold.get(timeout=30)
    n = q_wait.get(timeout=60)
    assert (n > 0) == sleeps, n
    a.join(30)
    b.join(30)


def test_timeout_names_the_problem_and_a_late_grant_is_given_back(lockfile):
    ready, release = CTX.Event(), CTX.Event()
    q = CTX.Queue()
    a = CTX.Process(target=W.hold, args=(lockfile, ready, release, q))
    a.start()
    assert ready.wait(30)
    lock, _m = _lock(lockfile)
    with pytest.raises(LockTimeoutError, match="timed out after 0.2s"):
        lock.acquire(0.2)
    release.set()  # our helper thread is still queued in flock: it must give the lock back
    q.get(timeout=30)
    a.join(30)
    other, _m2 = _lock(lockfile)  # another description of the same file: a real contender
    other.acquire(5)
    other.release()
    # and this handle still works
    lock.acquire(5)
    assert lock.depth == 1
    lock.release()
    lock.close()
    other.close()


def test_a_looping_writer_does_not_starve_another(lockfile):
    """A producer re-taking the lock every ~1 ms; every 2 s wait of another process succeeds."""
    ready = CTX.Event()
    q_churn, q_grab = CTX.Queue(), CTX.Queue()
    a = CTX.Process(target=W.churn, args=(lockfile, 6.0, ready, q_churn))
    a.start()
    assert ready.wait(30)
    b = CTX.Process(target=W.grab, args=(lockfile, 100, 2.0, q_grab))
    b.start()
    failed = q_grab.get(timeout=120)
    rounds = q_churn.get(timeout=120)
    a.join(30)
    b.join(30)
    assert failed == 0
    assert rounds > 100  # the producer kept going too


def test_threads_of_one_process_take_turns(lockfile):
    lock, _m = _lock(lockfile)
    state = {"n": 0}
    errors = []

    def work() -> None:
        try:
            for _ in range(50):
                lock.acquire(10)
                v = state["n"]
                time.sleep(0)  # another thread would run here if it could get in
                state["n"] = v + 1
                lock.release()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors and state["n"] == 200
    lock.close()


@pytest.mark.parametrize("use_mp", [False, True], ids=["os.fork", "multiprocessing-fork"])
def test_a_forked_child_does_not_keep_a_dead_holders_lock(lockfile, use_mp):
    ready = CTX.Event()
    p = CTX.Process(target=W.hold_then_fork_and_die, args=(lockfile, use_mp, ready))
    p.start()
    assert ready.wait(30)
    with open(lockfile + ".child") as f:
        child = int(f.read())
    try:
        lock, _m = _lock(lockfile)
        with pytest.raises(LockTimeoutError):
            lock.acquire(0.2)  # the parent holds it
        os.kill(p.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30  # not join(): the grandchild holds its sentinel
        while p.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.path.exists(f"/proc/{child}")  # the forked child lives on
        lock.acquire(5)  # and does not hold the dead parent's lock
        lock.release()
        lock.close()
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
            try:  # reap it if it became ours (it is our grandchild: init reaps it)
                os.waitpid(child, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.01)


def test_array_writes_take_a_timeout():
    import uuid

    import numpy as np

    import sharedzarr as sz

    a = sz.zeros((8, 4), dtype="int32", chunks=(4, 4), table_name=f"lk-{uuid.uuid4().hex[:8]}")
    try:
        ready, release = CTX.Event(), CTX.Event()
        p = CTX.Process(target=W.hold_array_lock, args=(a.name, ready, release))
        p.start()
        assert ready.wait(60)
        try:
            with pytest.raises(LockTimeoutError, match="writer lock"):
                a.write_chunk((0, 0), np.ones((4, 4), "int32"), timeout=0.2)
            with pytest.raises(LockTimeoutError):
                a.set_slice(1, timeout=0.1)
            with pytest.raises(LockTimeoutError):
                a.append(np.ones((1, 4), "int32"), timeout=0.1)
            with pytest.raises(LockTimeoutError):
                a.resize((4, 4), timeout=0.1)
            a.write_timeout = 0.1
            with pytest.raises(LockTimeoutError):
                a[...] = 2
            with pytest.raises(ValueError, match="write_timeout"):
                a.write_timeout = -1
            assert a.shape == (8, 4)
            np.testing.assert_array_equal(a[...], 0)  # nothing was written
        finally:
            release.set()
            p.join(60)
        a.write_timeout = 5
        a[...] = 3
        np.testing.assert_array_equal(a[...], 3)
    finally:
        a.delete()


def test_a_read_only_handle_can_still_ask_writers_to_take_turns(cleanup) -> None:
    """A ``mode="r"`` handle's hints (the lock's want word, the reader-wait stamp) go
    through a writable mapping of the header kept for them: they reach the writer."""
    import sharedzarr as sz
    from sharedzarr import _layout as L

    name = f"hint-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    a = sz.create((64, 64), chunks=(32, 64), table_name=name)
    r = sz.open(name, mode="r")
    t = r.table
    W = t._hint_words()
    assert W is not None and not W.readonly
    assert t._lock_hint() is not None  # the lock is fair for this handle too
    W[L.H_READER_WAIT] = 12345
    assert a.table._H[L.H_READER_WAIT] == 12345  # the writer's mapping sees it
    W[L.H_READER_WAIT] = 0
    with pytest.raises(sz.errors.AccessDeniedError):
        r[0] = 1.0  # still a read-only handle for the data
    r.close()
    assert t._hint_H is None
    a.close()


def test_a_second_handle_in_the_same_thread_is_refused_not_left_waiting():
    """Two handles of one table in one thread: a session of the second inside a session of
    the first would wait on itself until its timeout; it is refused at once instead, and
    another thread still simply waits its turn."""
    import threading

    from sharedzarr._table import Table

    a = Table.create()
    b = Table.attach(a.name)
    try:
        t0 = time.monotonic()
        with a.writer(), pytest.raises(RuntimeError, match="another handle"):
            b.insert("k", b"v")
        assert time.monotonic() - t0 < 5
        b.insert("k", b"v")  # outside the session: fine
        done = threading.Event()

        def other_thread() -> None:
            b.insert("j", b"w")
            done.set()

        with a.writer():
            th = threading.Thread(target=other_thread)
            th.start()
            assert not done.wait(0.2)  # waits for the session, as it should
        th.join(30)
        assert done.is_set() and b["j"] == b"w"
    finally:
        b.close()
        a.delete_table()
