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
    outside the lock too (into its lease); every value ends whole and the counts match."""
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


# --------------------------------------------------------------------------- leases


def _published_record_bytes(t: Table) -> int:
    """Bytes of the records the index references (what H_LIVE_RECORD counts when no record
    is reserved)."""
    t._load_index()
    arr = np.frombuffer(t._idx, dtype=np.uint64).reshape(-1, 2)
    refs = arr[arr[:, 1] > 1, 1].tolist()
    del arr
    total = 0
    for ref in refs:
        seg, off = t._record_at(ref)
        total += t._record_info(seg, off)[0]
    return total


def test_a_lease_is_published_under_the_next_key_and_renewed(table):
    """publish(pk, renew=True) reserves the record of a next value of the same length in
    the same locked section; that record is then published under another key of the same
    layout, its head written anew, and a key of another layout is refused."""
    t = table
    with t.writer():
        room = t.reserve(t.prepare_key("k1"), BIG)
    room.buffer[:] = b"1" * BIG
    with t.writer():
        lease = room.publish(renew=True)
    assert lease is not None and lease.usable and t._lease is lease
    assert not room.usable  # published: its hold went on to the lease
    assert t._reserved(lease.ref >> L.OFFSET_BITS)
    assert not lease.fits(b"x" * 200)  # a longer key needs a longer head
    with t.writer(), pytest.raises(ValueError, match="fits"):
        lease.publish((b"x" * 200, 1))
    pk2 = t.prepare_key("k2")
    assert lease.fits(pk2[0])
    lease.buffer[:] = b"2" * BIG  # without the lock
    assert "k2" not in t
    with t.writer():
        assert lease.publish(pk2) is None
    assert t["k1"] == b"1" * BIG and t["k2"] == b"2" * BIG
    assert t._H[L.H_LIVE_RECORD] == _published_record_bytes(t)
    audit(t, _size(t))


def _contended(monkeypatch, reap: bool = False) -> None:
    """Make every writer session see another writer waiting (as two writer processes
    taking turns do), so this process reserves and leases; unless ``reap``, leases are
    not given back for being idle (a slow machine could make one look idle)."""
    from sharedzarr import _lock
    from sharedzarr._table import _reserve

    monkeypatch.setattr(_lock.WriterLock, "contended", lambda self: True)
    if not reap:
        monkeypatch.setattr(_reserve, "LEASE_IDLE_NS", 10**15)


def _big_array(cleanup, tag: str) -> sz.Array:
    name = f"lease-{tag}-{os.getpid()}"
    cleanup.append(name)
    a = sz.create(shape=(1024, 1024), chunks=(256, 256), dtype="f8", table_name=name)
    a[...] = -1.0
    return a


def _close_and_check(a: sz.Array) -> None:
    """Close ``a`` (which gives its lease back), open the array again and check it
    (:func:`_accounted`)."""
    name = a.backend.table.name
    a.close()
    a = sz.open(name)
    try:
        _accounted(a)
    finally:
        a.close()


def _accounted(a: sz.Array) -> None:
    """Every chunk whole, and the table counts no record that is not published."""
    for c in np.ndindex(*a.cdata_shape):
        chunk = a.read_chunk(c)
        assert np.all(chunk == chunk.flat[0]), c
    t = Table.attach(a.backend.table.name)
    try:
        assert t._H[L.H_LIVE_RECORD] == _published_record_bytes(t)
        assert t.info()["live_bytes"] == a.nbytes + len(a.backend.read_metadata())
    finally:
        t.close()


def test_write_chunk_under_contention_takes_the_lock_once_per_chunk(cleanup, monkeypatch):
    """While another writer waits, each big chunk's publish leases the room of the next:
    that one is filled before the lock is taken, so a write is one locked section."""
    a = _big_array(cleanup, "once")
    _contended(monkeypatch)
    backend = a.backend
    sections = [0]
    orig = type(backend.table)._begin_write

    def counting(self, *args, **kwargs):
        outer = orig(self, *args, **kwargs)
        sections[0] += outer
        return outer

    monkeypatch.setattr(type(backend.table), "_begin_write", counting)
    a.write_chunk((0, 0), np.full(a.chunks, 1.0))  # reserve, copy, publish + lease
    assert backend.table._lease is not None
    sections[0] = 0
    for n, c in enumerate(np.ndindex(*a.cdata_shape)):
        a.write_chunk(c, np.full(a.chunks, float(n + 2)))
    assert sections[0] == a.nchunks  # one locked section per chunk
    for n, c in enumerate(np.ndindex(*a.cdata_shape)):
        assert np.all(a.read_chunk(c) == n + 2)
    lease = backend.table._lease
    assert lease is not None and lease.usable
    assert backend.table.take_lease(1) is None  # another length: given back
    assert not lease.usable and backend.table._lease is None
    a.write_chunk((1, 1), np.full(a.chunks, 0.5))  # copied under the lock, and a lease taken
    lease = backend.table._lease
    assert lease is not None and lease.usable
    a.close()  # gives the lease back
    assert not lease.usable
    a = sz.open(backend.table.name)
    _accounted(a)
    a.close()


def test_a_leased_chunk_whose_index_left_the_array_is_refused(cleanup, monkeypatch):
    """Another handle shrinks the array between two writes: the chunk filled into the
    lease is checked under the lock, refused with IndexError, and the room given back."""
    a = _big_array(cleanup, "shrink")
    _contended(monkeypatch)
    a.write_chunk((3, 3), np.full(a.chunks, 1.0))
    assert a.backend.table._lease is not None
    other = sz.open(a.backend.table.name)
    other.resize((512, 1024))
    other.close()
    with pytest.raises(IndexError):
        a.write_chunk((3, 3), np.full(a.chunks, 2.0))
    assert a.shape == (512, 1024)
    assert all(i < 2 for i, _j in a.backend.list_chunks())
    a.write_chunk((1, 3), np.full(a.chunks, 3.0))
    assert np.all(a.read_chunk((1, 3)) == 3.0)
    _close_and_check(a)


def test_a_forked_child_does_not_use_its_parents_lease(cleanup, monkeypatch):
    """A child forked while this handle holds a lease writes without it (it is the
    parent's room); the parent's lease still serves the parent's next chunk."""
    a = _big_array(cleanup, "fork")
    _contended(monkeypatch)
    a.write_chunk((0, 0), np.full(a.chunks, 1.0))
    lease = a.backend.table._lease
    assert lease is not None
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            assert not lease.usable
            a.write_chunk((1, 1), np.full(a.chunks, 7.0))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert np.all(a.read_chunk((1, 1)) == 7.0)
    assert lease.usable
    a.write_chunk((2, 2), np.full(a.chunks, 8.0))
    assert a.backend.table._lease is not lease  # used, and renewed
    assert np.all(a.read_chunk((2, 2)) == 8.0)
    _close_and_check(a)


def test_a_writer_killed_holding_a_lease_leaves_nothing_behind(cleanup):
    """A writer process holding a lease is killed (SIGKILL): the lease is garbage, the
    arena is not reserved any more, and the next writer's counts are right."""
    a = _big_array(cleanup, "kill")
    name = a.backend.table.name
    code = (
        f"import sys; sys.path.insert(0, 'tests'); import _workers as W; W.lease_and_stop({name!r})"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:  # wait until it stopped itself, a lease held
            with open(f"/proc/{child.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    break
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(60)
    assert np.all(a.read_chunk((0, 0)) == 5.0)
    for c in np.ndindex(*a.cdata_shape):
        a.write_chunk(c, np.full(a.chunks, 9.0))
    a.backend.table.reclaim()
    assert not any(a.backend.table._reserved(aid) for aid in a.backend.table._arena_ids())
    assert np.all(a[...] == 9.0)
    a.close()
    a = sz.open(name)
    t = a.backend.table
    with t.writer():
        t._set_counts(*t._recover())  # what the next writer after a crash does
    _accounted(a)
    a.close()


def test_a_lease_that_cannot_be_reserved_does_not_fail_the_write(cleanup, monkeypatch):
    """The lease is an optimisation: when its record cannot be had (no room left), the
    chunk that asked for it is stored all the same, and no lease is held."""
    from sharedzarr._table import _reserve
    from sharedzarr.errors import OutOfSpaceError

    a = _big_array(cleanup, "nolease")
    _contended(monkeypatch)
    a.write_chunk((0, 0), np.full(a.chunks, 1.0))  # a lease
    orig = _reserve.reserve_record

    def full(t, kb, h, nbytes, hold=None):
        if hold is not None:
            hold.release()
        raise OutOfSpaceError("no room for the lease (test)")

    monkeypatch.setattr(_reserve, "reserve_record", full)
    a.write_chunk((0, 1), np.full(a.chunks, 2.0))  # uses the lease, cannot renew it
    assert a.backend.table._lease is None
    a.write_chunk((0, 2), np.full(a.chunks, 3.0))  # under the lock, cannot lease
    assert a.backend.table._lease is None
    monkeypatch.setattr(_reserve, "reserve_record", orig)
    assert [a.read_chunk((0, j))[0, 0] for j in range(3)] == [1.0, 2.0, 3.0]
    _close_and_check(a)


def test_a_leased_write_that_times_out_keeps_its_room_for_the_next(cleanup, monkeypatch):
    """The writer lock cannot be had in time (another process holds it): the chunk
    filled into the lease is not stored, the room stays this handle's lease, and the
    next write uses it, after the holder died and its session was repaired."""
    from sharedzarr.errors import LockTimeoutError

    a = _big_array(cleanup, "timeout")
    name = a.backend.table.name
    _contended(monkeypatch)
    a.write_chunk((0, 0), np.full(a.chunks, 1.0))
    lease = a.backend.table._lease
    assert lease is not None
    ready = CTX.Event()
    holder = CTX.Process(target=W.hold_lock_forever, args=(name, ready))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(LockTimeoutError):
            a.write_chunk((0, 1), np.full(a.chunks, 2.0), timeout=0.2)
        assert a.backend.table._lease is lease and lease.usable
        assert np.all(a.read_chunk((0, 1)) == -1.0)
    finally:
        holder.kill()
        holder.join(60)
    a.write_chunk((0, 1), np.full(a.chunks, 3.0))  # (the dead holder's session repaired)
    assert a.backend.table._lease is not lease  # used, and renewed
    assert np.all(a.read_chunk((0, 1)) == 3.0)
    t = Table.attach(name)
    t.delete("held")  # (the holder's own key)
    t.close()
    _close_and_check(a)


def test_an_idle_lease_is_given_back(cleanup, monkeypatch):
    """A writer that stops writing does not keep its lease: the process's poll thread
    gives it back once it was unused for LEASE_IDLE_NS, so the record is garbage again
    and the arena can be compacted; the next write goes on without one."""
    from sharedzarr._table import _reserve

    a = _big_array(cleanup, "idle")
    _contended(monkeypatch, reap=True)
    a.write_chunk((0, 0), np.full(a.chunks, 1.0))
    t = a.backend.table
    lease = t._lease
    assert lease is not None and t._reserved(lease.ref >> L.OFFSET_BITS)
    deadline = time.monotonic() + 30
    while t._lease is not None or lease.usable:
        assert time.monotonic() < deadline, "the idle lease was not given back"
        time.sleep(_reserve.LEASE_IDLE_NS / 1e9)
    assert not t._reserved(lease.ref >> L.OFFSET_BITS)
    assert t._H[L.H_LIVE_RECORD] == _published_record_bytes(t)
    a.write_chunk((0, 1), np.full(a.chunks, 2.0))  # leases again
    assert t._lease is not None and t._lease is not lease
    _close_and_check(a)


def _count_sections(monkeypatch, t: Table) -> list[int]:
    """Count the outermost writer sessions ``t``'s class opens from now on."""
    sections = [0]
    orig = type(t)._begin_write

    def counting(self, *args, **kwargs):
        outer = orig(self, *args, **kwargs)
        sections[0] += outer
        return outer

    monkeypatch.setattr(type(t), "_begin_write", counting)
    return sections


def test_table_insert_of_big_values_takes_the_lock_once_each(table, monkeypatch):
    """While another writer waits, Table.insert of a big value leases the record of the
    next one, which the next insert fills before it takes the lock: one locked section per
    value, new keys and replaced ones alike; a key of another layout does not use the
    lease, and closing the handle gives it back."""
    from sharedzarr._table._write import RESERVE_MIN

    t = table
    _contended(monkeypatch)
    sections = _count_sections(monkeypatch, t)
    t.insert("k0", b"0" * RESERVE_MIN)  # under the lock, and the next record leased
    assert t._lease is not None and sections[0] == 1
    for r in range(3):
        for k in range(4):
            t.insert(f"k{k}", bytes([65 + r]) * RESERVE_MIN)
    assert sections[0] == 13  # one locked section per insert
    assert [t[f"k{k}"] for k in range(4)] == [b"C" * RESERVE_MIN] * 4
    lease = t._lease
    assert lease is not None and lease.usable
    t.insert(("a much longer key",) * 4, b"x" * RESERVE_MIN)  # another layout: not leased
    assert sections[0] == 14 and t._lease is lease and lease.usable
    t.insert("small", b"s" * 100)  # small: the lease stays for the next big value
    assert t._lease is lease
    assert t._H[L.H_LIVE_RECORD] == _published_record_bytes(t)  # (a lease: not yet)
    name = t.name
    t.close()  # gives the lease back
    assert not lease.usable
    t = Table.attach(name)
    assert t._H[L.H_LIVE_RECORD] == _published_record_bytes(t)
    assert t["k3"] == b"C" * RESERVE_MIN and len(t) == 6
    audit(t, _size(t))
    t.delete_table()


def test_a_leased_insert_that_times_out_keeps_its_room_for_the_next(table, monkeypatch):
    """Table.insert of a big value that cannot get the lock in time stores nothing and
    keeps its filled lease, which the next insert uses once the holder is gone."""
    from sharedzarr._table._write import RESERVE_MIN
    from sharedzarr.errors import LockTimeoutError

    t = table
    _contended(monkeypatch)
    t.insert("a", b"1" * RESERVE_MIN)
    lease = t._lease
    assert lease is not None
    ready = CTX.Event()
    holder = CTX.Process(target=W.hold_lock_forever, args=(t.name, ready))
    holder.start()
    try:
        assert ready.wait(60)
        monkeypatch.setattr("sharedzarr._table._write.DEFAULT_TIMEOUT", 0.2)
        with pytest.raises(LockTimeoutError):
            t.insert("b", b"2" * RESERVE_MIN)
        assert t._lease is lease and lease.usable and "b" not in t
    finally:
        holder.kill()
        holder.join(60)
    monkeypatch.undo()
    _contended(monkeypatch)
    t.insert("b", b"3" * RESERVE_MIN)  # (the dead holder's session repaired first)
    assert t._lease is not lease and not lease.usable  # used, and renewed
    assert t["a"] == b"1" * RESERVE_MIN and t["b"] == b"3" * RESERVE_MIN
    t.delete("held")
    name = t.name
    t.close()
    t = Table.attach(name)
    assert t._H[L.H_LIVE_RECORD] == _published_record_bytes(t)
    audit(t, _size(t))
    t.delete_table()
