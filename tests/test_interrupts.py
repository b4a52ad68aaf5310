"""A writer session that an interrupt stops (Ctrl-C, a signal handler's ``sys.exit``) ends.

Python runs signal handlers between any two bytecodes, and a handler that raises can stop
a session anywhere: the operation is closed and the lock let go wherever the exception
comes from.  Injected exceptions at the places that used to leave the lock held.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import uuid

import _workers as Wk
import pytest

import sharedzarr as sz
from sharedzarr import _layout as L
from sharedzarr import _lock
from sharedzarr._threads import signals_deferred

CTX = mp.get_context("spawn")


def _name(tag: str) -> str:
    return f"int-{tag}-{uuid.uuid4().hex[:8]}"


def _session_closed(a: sz.Array) -> bool:
    """No writer lock held by this thread, and the table's operation closed (even)."""
    t = a._live().table
    return t._lock.depth == 0 and t._H[L.H_OPSEQ] % 2 == 0 and t._H[L.H_HOLDER] == 0


def _interrupt_once(monkeypatch, obj, attr, exc=KeyboardInterrupt, when=lambda: True):
    """Make ``obj.attr`` raise ``exc`` on its first call for which ``when()`` holds."""
    orig = getattr(obj, attr)
    fired = []

    def wrapped(*args, **kwargs):
        if not fired and when():
            fired.append(1)
            raise exc()
        return orig(*args, **kwargs)

    monkeypatch.setattr(obj, attr, wrapped)
    return fired


def test_an_interrupt_in_the_reclaim_at_a_session_end_lets_the_lock_go(monkeypatch):
    a = sz.zeros((64, 64), dtype="int64", chunks=(8, 64), table_name=_name("end"))
    try:
        t = a._live().table
        _interrupt_once(monkeypatch, t, "_maybe_reclaim")
        with pytest.raises(KeyboardInterrupt):
            a[...] = 5  # the write is done; its session's end is interrupted
        assert _session_closed(a)
        assert t._H[L.H_DIRTY]  # left for the next writer to repair
        monkeypatch.undo()
        a[...] = 6
        assert not t._H[L.H_DIRTY]
        assert (a[...] == 6).all()
    finally:
        a.delete()


@pytest.mark.parametrize("depth", [1, 2], ids=["outermost", "nested"])
def test_an_interrupt_at_the_start_of_a_session_end_still_ends_it(monkeypatch, depth):
    # (a handler can raise at the first bytecode of ``__exit__``: nothing of it ran)
    a = sz.zeros((64, 64), dtype="int64", chunks=(8, 64), table_name=_name("exit"))
    try:
        t = a._live().table
        fired = _interrupt_once(monkeypatch, t, "_end_write", when=lambda: t._lock.depth == depth)
        with pytest.raises(KeyboardInterrupt):
            a[...] = 5  # a multi-chunk write: the engine's session nests in the array's
        assert fired
        assert _session_closed(a)
        assert (a[...] == 5).all()
        monkeypatch.undo()
        a[...] = 6
        assert (a[...] == 6).all() and _session_closed(a)
    finally:
        a.delete()


def test_an_interrupted_atomic_block_is_undone(monkeypatch):
    a = sz.zeros((64, 64), dtype="int64", chunks=(8, 64), table_name=_name("atomic"))
    try:
        a[...] = 1
        with pytest.raises(KeyboardInterrupt), a.atomic():
            a[:32] = 2
            raise KeyboardInterrupt
        assert (a[...] == 1).all() and _session_closed(a)
    finally:
        a.delete()


def test_signals_deferred_holds_back_sigint_and_raises_it_after():
    before = signal.getsignal(signal.SIGINT)
    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            signal.raise_signal(signal.SIGINT)
            done.append(1)  # not interrupted
    assert done == [1]
    assert signal.getsignal(signal.SIGINT) is before


def test_an_interrupt_right_after_the_lock_is_taken_lets_it_go(monkeypatch, table):
    class RaisesOnce(dict):
        fired = False

        def __setitem__(self, key, value):  # the lock's last steps, after the flock
            if not RaisesOnce.fired:
                RaisesOnce.fired = True
                raise KeyboardInterrupt
            super().__setitem__(key, value)

    monkeypatch.setattr(_lock, "_HELD_BY", RaisesOnce(_lock._HELD_BY))
    with pytest.raises(KeyboardInterrupt):
        table.insert(b"k", b"v")
    assert RaisesOnce.fired
    p = CTX.Process(target=Wk.write_keys, args=(table.name, [(b"x", b"y")]))
    p.start()
    p.join(30)
    stuck = p.is_alive()
    if stuck:
        p.kill()
        p.join()
    assert not stuck, "another process waited for a lock nobody holds"
    assert p.exitcode == 0
    assert table.lookup(b"x") == [b"y"]
    assert table.lookup(b"k") == []
