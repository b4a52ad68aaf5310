"""Copying outside the writer lock: ``Table.reserve`` and ``write_chunk`` under contention.

See ``Reservation`` in ``sharedzarr._table._reserve`` for the protocol: the record is
allocated under the lock, its arena's file is locked while the value is copied in without
the writer lock, and the record is published under the lock.  Writers leave a locked
arena alone; the kernel drops the file lock of a writer that dies.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import _workers as W
import numpy as np
import pytest
from test_faults import audit

import sharedzarr as sz
from sharedzarr import _layout as L
from sharedzarr._table import Table
from sharedzarr._table._reserve import Reservation

CTX = mp.get_context("spawn")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIG = 256 << 10


def _size(t: Table):
    return lambda k: len(t[k])


def test_a_reserved_value_is_seen_only_once_published(table):
    t = table
    t.insert("k", b"o" * BIG)
    other = Table.attach(t.name, readonly=True)
    pk = t.prepare_key("k")
    with t.writer():
        room = t.reserve(pk, BIG)
    assert room is not None
    room.buffer[:] = b"n" * BIG  # without the lock
    assert other.get("k") == b"o" * BIG
    with t.writer():
        room.publish()
    assert other.get("k") == b"n" * BIG
    other.close()
    audit(t, _size(t))


def test_reserve_needs_a_session_and_no_atomic_one(table):
    pk = table.prepare_key("k")
    with pytest.raises(RuntimeError, match="writer lock"):
        table.reserve(pk, 10)
    with table.writer(atomic=True), pytest.raises(RuntimeError, match="atomic"):
        table.reserve(pk, 10)


def test_an_abandoned_reservation_leaves_the_old_value(table):
    t = table
    t.insert("k", b"o" * BIG)
    with t.writer():
        room = t.reserve(t.prepare_key("k"), BIG)
    room.buffer[:] = b"n" * BIG
    with t.writer():
        room.abandon()
    assert t["k"] == b"o" * BIG
    audit(t, _size(t))


def test_another_writer_does_not_compact_or_retire_a_reserved_arena(table):
    """Another process deletes every other record and compacts while this one copies: the
    arena holding the reserved record stays, and the value is published whole."""
    t = table
    keys = list(range(40))
    for k in keys:
        t.insert(k, bytes([k]) * BIG)
    with t.writer():
        room = t.reserve(t.prepare_key(0), BIG + 64)  # a new length: a fresh record
    aid = room.ref >> L.OFFSET_BITS
    assert t._reserved(aid)
    p = CTX.Process(target=W.delete_and_reclaim, args=(t.name, keys[1:]))
    p.start()
    p.join(120)
    assert p.exitcode == 0
    assert t._reserved(aid)
    room.buffer[:] = b"z" * (BIG + 64)
    with t.writer():
        room.publish()
    assert not t._reserved(aid)
    assert t[0] == b"z" * (BIG + 64)
    audit(t, _size(t))
    t.reclaim()
    audit(t, _size(t))


def test_a_writer_killed_while_copying_leaves_the_old_value_and_nothing_behind(table):
    t = table
    for k in range(20):
        t.insert(k, bytes([k + 1]) * BIG)
    code = (
        "import sys; sys.path.insert(0, 'tests'); import _workers as W; "
        f"W.reserve_and_stop({t.name!r}, 3, {BIG + 64})"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:  # wait until it stopped itself
            with open(f"/proc/{child.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    break
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert t[3] == bytes([4]) * BIG
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(60)
    assert t[3] == bytes([4]) * BIG
    for k in range(20):  # the other writer goes on; its records are garbage now
        t.insert(k, bytes([k + 2]) * (BIG + 128))
    t.reclaim()
    audit(t, _size(t))
    assert t[3] == bytes([5]) * (BIG + 128)


def _reserve_b_beside_a(t: Table) -> tuple[Reservation, Table]:
    """Key "a" stored, key "b" reserved (lock released), and a second handle of the table."""
    t.insert("a", b"a" * BIG)
    with t.writer():
        room = t.reserve(t.prepare_key("b"), BIG)
    assert room is not None
    return room, Table.attach(t.name)


def test_a_recovery_during_a_reservation_keeps_the_counts(table):
    t = table
    room, other = _reserve_b_beside_a(t)
    other._H[L.H_DIRTY] = 2**31  # as if a writer had died mid-operation
    other.insert("c", b"c" * 100)  # this session recovers first
    assert t._H[L.H_RECOVERIES] >= 1
    room.buffer[:] = b"b" * BIG
    with t.writer():
        room.publish()
    other.close()
    assert t["b"] == b"b" * BIG
    audit(t, _size(t))
    t.delete("a")
    t.delete("c")
    t.reclaim()
    audit(t, _size(t))


def test_a_clear_during_a_reservation_then_the_value_is_written_anew(table):
    t = table
    room, other = _reserve_b_beside_a(t)
    other.clear()
    other.close()
    room.buffer[:] = b"b" * BIG
    with t.writer():
        room.publish()
    assert t.keys() == ["b"] and t["b"] == b"b" * BIG
    audit(t, _size(t))


def _two_writers(target, name: str, rounds: int) -> int:
    """Run ``target(name, parity, rounds, out)`` in two spawned processes (parities 0 and
    1) at once; return how many copies they made outside the lock, together."""
    out = CTX.Queue()
    ws = [CTX.Process(target=target, args=(name, p, rounds, out)) for p in (0, 1)]
    for w in ws:
        w.start()
    reserved = dict(out.get(timeout=300) for _ in ws)
    for w in ws:
        w.join(60)
        assert w.exitcode == 0
    return sum(reserved.values())


def test_two_writer_processes_copy_big_chunks_outside_the_lock(cleanup):
    name = f"reserve-2w-{os.getpid()}"
    cleanup.append(name)
    a = sz.create(shape=(2048, 2048), chunks=(256, 256), dtype="f8", table_name=name)
    a[...] = -1.0
    assert _two_writers(W.big_chunk_writer, name, 20) > 0  # some copies ran outside the lock
    for c in np.ndindex(*a.cdata_shape):
        want = (sum(c) % 2) * 1000 + 19
        assert np.all(a.read_chunk(c) == want), c
    info = a.backend.table.info()
    assert info["keys"] == a.nchunks + 1  # the chunks and the metadata, nothing else
    assert info["live_bytes"] == a.nbytes + len(a.backend.read_metadata())
    a.close()


def test_two_writer_processes_copy_big_table_values_outside_the_lock(table):
    """Table.insert of a value of 512 KiB or more, while another writer waits, copies it
    outside the lock too; every value ends whole and the counts match."""
    t = table
    assert _two_writers(W.big_value_writer, t.name, 15) > 0  # some copies ran outside the lock
    for p in (0, 1):
        for k in range(8):
            assert t[(p, k)] == bytes([p * 100 + 14]) * (512 << 10), (p, k)
    assert len(t) == 16
    assert t.info()["live_bytes"] == 16 * (512 << 10)
    audit(t, _size(t))


def test_big_chunk_writers_and_a_resizing_process_leave_no_chunk_outside(cleanup):
    """Copies outside the lock meet resizes: a record reserved before a shrink is given up
    and written again under the lock, checked anew (IndexError when the chunk left the
    array), so no chunk is stored outside the shape and every stored chunk is whole."""
    name = f"reserve-resize-{os.getpid()}"
    cleanup.append(name)
    a = sz.create(shape=(2048, 2048), chunks=(256, 256), dtype="f8", table_name=name)
    a[...] = 0.0
    stop, out = CTX.Event(), CTX.Queue()
    ws = [CTX.Process(target=W.big_chunk_writer_until, args=(name, p, stop, out)) for p in (0, 1)]
    for w in ws:
        w.start()
    deadline = time.monotonic() + 4
    n = 0
    while time.monotonic() < deadline:
        a.resize((1024, 2048) if n % 2 else (2048, 1536))
        a.resize((2048, 2048))
        n += 1
    stop.set()
    writes = [out.get(timeout=120) for _ in ws]
    for w in ws:
        w.join(60)
        assert w.exitcode == 0
    assert min(writes) > 0 and n > 0
    grid = a.cdata_shape
    for idx in a.backend.list_chunks():
        assert all(i < g for i, g in zip(idx, grid, strict=True)), idx
        chunk = a.read_chunk(idx)
        assert np.all(chunk == chunk.flat[0]), idx
    a.close()


def test_a_child_forked_during_a_copy_does_not_keep_the_arena_reserved(table):
    """A process forked while this one copies outside the lock (another thread starting a
    fork-based pool, say) inherits the descriptor that holds the arena's file lock.  The
    child closes its copy at once: once this process publishes, no writer sees the arena
    reserved, however long the child lives."""
    t = table
    with t.writer():
        room = t.reserve(t.prepare_key("k"), BIG)
    aid = room.ref >> L.OFFSET_BITS
    r, w = os.pipe()
    up_r, up_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child (its fork hooks ran): say so, wait for the parent, leave
        try:
            os.close(w)
            os.write(up_w, b"1")
            os.read(r, 1)
        finally:
            os._exit(0)
    os.close(r)
    os.close(up_w)
    try:
        assert os.read(up_r, 1) == b"1"
        os.close(up_r)
        room.buffer[:] = b"v" * BIG
        with t.writer():
            room.publish()
        assert not t._reserved(aid)  # the child lives, and holds nothing
        assert t["k"] == b"v" * BIG
    finally:
        os.close(w)
        os.waitpid(pid, 0)
