"""Recycling: a rewrite of a value of the same length lands in the room of the old record.

See "Recycling" in ``sharedzarr._table._arenas`` for the protocol these tests check: the
reuse epoch moves before a room is recycled, a grace period passes, and a room in an arena
a zero-copy view pins is never recycled.  Torn reads under recycling are checked by the
reuse tests too (their writers rewrite values of the same length).
"""

from __future__ import annotations

import glob
import multiprocessing as mp
import time

import _workers as W
import numpy as np
import pytest

import sharedzarr as sz
from sharedzarr import _layout as L
from sharedzarr._table import Table

CTX = mp.get_context("spawn")


def _shm_bytes(name: str) -> int:
    import os

    return sum(os.stat(p).st_blocks * 512 for p in glob.glob(f"/dev/shm/sz.{name}.*"))


def test_same_length_rewrites_take_no_new_memory(table):
    t = table
    value = 128 << 10
    for r in range(1, 4):
        for k in range(64):
            t.insert(k, bytes([r]) * value)
    arenas, before = t._H[L.H_NEXT_ARENA], _shm_bytes(t.name)
    for r in range(4, 40):
        for k in range(64):
            t.insert(k, bytes([r]) * value)
    assert t._H[L.H_NEXT_ARENA] == arenas  # no new data segment
    assert _shm_bytes(t.name) <= before + 4 * value  # 288 MiB written meanwhile
    assert _shm_bytes(t.name) <= 1.25 * 64 * value
    for k in range(64):
        assert t[k] == bytes([39]) * value


def test_array_rewrites_keep_memory_near_the_data(cleanup):
    name = f"recycle-mem-{int(time.monotonic_ns())}"
    cleanup.append(name)
    a = sz.create(shape=(1024, 1024), chunks=(128, 128), dtype="f8", table_name=name)
    for i in range(60):
        a[...] = float(i)
    assert _shm_bytes(name) <= 1.2 * a.nbytes, _shm_bytes(name) / a.nbytes
    assert np.all(a[...] == 59.0)
    a.close()


@pytest.mark.parametrize("mib", [8, 32])  # a chunk in an arena, a chunk with its own segment
def test_a_chunk_rewritten_now_and_then_needs_one_room_more_not_two(cleanup, mib):
    """Each write of a chunk is copy-on-write: one more room.  The room the previous
    version left starts its grace period when its session ends, so the next write, a
    moment later, reuses it: an array of one chunk stays at twice its data, not three
    times (it was 3x while the epoch was bumped only at the next take)."""
    name = f"recycle-one-{mib}-{int(time.monotonic_ns())}"
    cleanup.append(name)
    n = (mib << 20) // 8
    a = sz.create(shape=(n,), chunks=(n,), dtype="f8", table_name=name)
    a[...] = 2.0
    for i in range(8):
        a[:3] = i
        time.sleep(2 * L.RECYCLE_GRACE_NS / 1e9)  # writes a moment apart
    assert _shm_bytes(name) <= 2.05 * a.nbytes, _shm_bytes(name) / a.nbytes
    assert a[:4].tolist() == [7.0, 7.0, 7.0, 2.0]
    a.close()


def test_a_pinned_view_is_never_recycled(table):
    t = table
    for k in range(16):
        t.insert(k, bytes([1]) * 65536)
    view = t.get(3, copy=False)
    for r in range(2, 30):
        for k in range(16):
            t.insert(k, bytes([r]) * 65536)
        time.sleep(L.REUSE_GRACE_NS / 1e9)
    assert bytes(view) == bytes([1]) * 65536
    assert t[3] == bytes([29]) * 65536
    del view


def test_a_recycled_room_gets_a_new_value_token(table):
    """The same reference after recycling is not the same record: tokens differ."""
    t = table
    t.insert("k", b"a" * 4096)
    pk = t.prepare_key("k")
    first = t.value_token(pk)
    assert first is not None
    for i in range(40):
        time.sleep(2 * L.REUSE_GRACE_NS / 1e9)
        t.insert("k", bytes([98 + i % 20]) * 4096)
        token = t.value_token(pk)
        assert token is not None
        if token[0] == first[0]:
            break
    else:
        pytest.fail("the first record's room was never recycled")
    assert token != first


def test_another_handle_sees_every_resize_while_metadata_rooms_are_recycled(cleanup):
    name = f"recycle-meta-{int(time.monotonic_ns())}"
    cleanup.append(name)
    a = sz.create(shape=(10, 4), chunks=(4, 4), dtype="i4", table_name=name)
    b = sz.open(name)
    for n in range(11, 99):
        a.resize((n, 4))
        assert b.shape == (n, 4)
        time.sleep(L.REUSE_GRACE_NS / 2e9)
    b.close()
    a.close()


def test_a_long_copy_finishes_under_a_writer_that_recycles_all_the_time(table):
    """Every epoch bump makes a copying reader start over; a copy longer than the time
    between bumps finishes by taking the writer lock for one attempt."""
    t = table
    t.insert("big", b"z" * (48 << 20))
    for k in range(8):
        t.insert(k, b"\0" * 65536)
    stop, count, started = CTX.Event(), CTX.Value("i", 0), CTX.Event()
    w = CTX.Process(target=W.same_size_rewriter, args=(t.name, 8, 65536, stop, count))
    w.start()
    try:
        while count.value < 2:
            time.sleep(0.01)
        epoch = t._H[L.H_REUSE]
        started.set()
        out = CTX.Queue()
        r = CTX.Process(target=W.big_value_reader, args=(t.name, "big", 20, started, out))
        r.start()
        n, bad = out.get(timeout=300)
        r.join(60)
        assert t._H[L.H_REUSE] > epoch + 20  # the writer did recycle meanwhile
    finally:
        stop.set()
        w.join(60)
    assert w.exitcode == 0
    assert (n, bad) == (20, 0)


def test_with_shape_json_is_what_to_json_writes():
    """append and resize patch the shape into the stored document; the bytes must be those
    a full encode gives (attributes may hold "shape" keys of their own)."""
    import random

    from sharedzarr._metadata import with_shape_json

    rng = random.Random(0)
    for nd in range(5):
        shape = tuple(rng.randrange(50) for _ in range(nd))
        a = sz.create(
            shape=shape,
            chunks=tuple(max(1, n) for n in shape) or None,
            dtype="f8",
            storage="memory",
            attributes={"shape": [1, 2], "nested": {"shape": [3]}},
        )
        meta, raw = a._meta, a._meta.to_json()
        for _ in range(20):
            new = tuple(rng.randrange(10**6) for _ in range(nd))
            assert with_shape_json(raw, shape, new) == meta.evolve(shape=new).to_json()
        assert with_shape_json(b'{"shape": [1]}', (1,), (2,)) is None  # another layout


def test_write_chunk_checks_the_shape_another_handle_changed(cleanup):
    """write_chunk skips its metadata probe when nothing ran since its own last write, and
    caches the indices of inner chunks; another handle's resize must still be seen."""
    name = f"recycle-quiet-{int(time.monotonic_ns())}"
    cleanup.append(name)
    a = sz.create(shape=(64, 64), chunks=(16, 16), dtype="f8", table_name=name)
    b = sz.open(name)
    chunk = np.ones((16, 16))
    a.write_chunk((3, 3), chunk)
    a.write_chunk((3, 3), chunk)  # the quiet path and the cached index, both armed
    b.resize((32, 32))
    with pytest.raises(IndexError):
        a.write_chunk((3, 3), chunk)
    a.write_chunk((1, 1), chunk)
    a.write_chunk((1, 1), chunk)
    b.resize((16, 16))
    with a.backend.writer(), pytest.raises(IndexError):  # inside a session of its own too
        a.write_chunk((1, 1), chunk)
    assert a.shape == b.shape == (16, 16)
    b.close()
    a.close()


def test_append_after_append_sees_another_handles_resize(cleanup):
    name = f"recycle-append-{int(time.monotonic_ns())}"
    cleanup.append(name)
    a = sz.create(shape=(0, 4), chunks=(2, 4), dtype="i4", table_name=name)
    b = sz.open(name)
    for i in range(5):
        a.append(np.full((1, 4), i, dtype="i4"))
    b.resize((2, 4))
    assert a.append(np.full((1, 4), 9, dtype="i4")) == (3, 4)
    assert np.array_equal(b[:, 0], [0, 1, 9])
    b.close()
    a.close()


@pytest.mark.parametrize("how", ["clear", "delete_and_reclaim"])
def test_rooms_in_arenas_another_handle_unlinked_are_not_used(table, how):
    """A handle keeps the rooms it freed; another writer may unlink their arenas meanwhile
    (a clear, a compaction).  The rooms must be dropped, not written: a record published in
    an unlinked arena would be lost to every other process."""
    t = table
    size = 64 << 10
    for r in range(1, 4):
        for k in range(16):
            t.insert(k, bytes([r]) * size)
    assert t._recycler is not None and t._recycler.count
    u = Table.attach(t.name)
    if how == "clear":
        u.clear()
    else:
        for k in range(16):
            u.delete(k)
        u.reclaim()
    u.close()
    time.sleep(4 * L.RECYCLE_GRACE_NS / 1e9)
    for r in range(4, 7):
        for k in range(16):
            t.insert(k, bytes([r]) * size)
    v = Table.attach(t.name, readonly=True)
    try:
        for k in range(16):
            assert v[k] == bytes([6]) * size
    finally:
        v.close()


def test_writers_recycling_and_compacting_at_once_keep_every_value_whole(table):
    """Two writer processes rewrite the same keys (recycling rooms, making garbage, deleting,
    compacting) while a reader checks every value: no mixture, and afterwards every key
    reads whole from a new handle and nothing is left unreferenced."""
    from test_faults import audit

    t = table
    keys = 24
    for k in range(keys):
        t.insert(k, b"\1" * W.reuse_size(k))
    stop = CTX.Event()
    counts = [CTX.Value("i", 0) for _ in range(2)]
    out = CTX.Queue()
    procs = [
        CTX.Process(target=W.mixed_writer, args=(t.name, seed, keys, stop, counts[seed]))
        for seed in range(2)
    ]
    procs.append(CTX.Process(target=W.uniform_reader, args=(t.name, keys, stop, out)))
    for p in procs:
        p.start()
    time.sleep(4)
    stop.set()
    reads, bad = out.get(timeout=120)
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert bad == 0 and reads > 100
    assert all(c.value > 100 for c in counts)
    fresh = Table.attach(t.name, readonly=True)
    try:
        for k in fresh.keys():
            v = fresh[k]
            assert v.count(v[:1]) == len(v)
    finally:
        fresh.close()
    audit(t, lambda k: len(t[k]))


def test_a_big_values_own_segment_is_recycled_and_a_view_still_pins_it(table):
    """A value over a quarter of an arena gets a segment of its own; rewriting it with a
    value of the same length takes that segment's room instead of a new segment, unless a
    zero-copy view holds it."""
    t = table
    size = 2 << 20  # over a quarter of the smallest arena
    t.insert("big", b"\1" * size)
    for r in range(2, 5):
        t.insert("big", bytes([r]) * size)
        time.sleep(2 * L.RECYCLE_GRACE_NS / 1e9)
    segments = t._H[L.H_NEXT_ARENA]
    for r in range(5, 25):
        t.insert("big", bytes([r]) * size)
        time.sleep(2 * L.RECYCLE_GRACE_NS / 1e9)
    assert t._H[L.H_NEXT_ARENA] == segments  # no new segment for 20 rewrites
    assert t["big"] == bytes([24]) * size
    view = t.get("big", copy=False)
    for r in range(25, 30):
        t.insert("big", bytes([r]) * size)
        time.sleep(2 * L.RECYCLE_GRACE_NS / 1e9)
    assert bytes(view) == bytes([24]) * size  # never written under the view
    assert t["big"] == bytes([29]) * size
    del view
    t.reclaim()
    assert _shm_bytes(t.name) < 3 * size


def _recounted_space(t: Table) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """What a recount from the index finds: live record bytes, garbage bytes, and each
    arena's (live, garbage) bytes, for comparison with the counts the writes kept."""
    t._load_index()
    arr = np.frombuffer(t._idx, dtype=np.uint64).reshape(-1, 2)
    refs = [int(r) for r in arr[arr[:, 1] > 1, 1]]
    del arr
    per: dict[int, int] = {}
    for ref in refs:
        seg, off = t._record_at(ref)
        total, _lens = t._record_info(seg, off)
        per[ref >> L.OFFSET_BITS] = per.get(ref >> L.OFFSET_BITS, 0) + total
    arenas = {}
    for aid in t._arena_ids():
        w = t._map_arena(aid).words if aid not in t._arenas else t._arenas[aid].words
        if not w[L.A_ID]:
            continue  # retired (kept in the pool for reuse): no records
        live = per.get(aid, 0)
        arenas[aid] = (live, w[L.A_USED] - L.ARENA_HEADER - live)
    return sum(per.values()), sum(g for _l, g in arenas.values()), arenas


def test_rewrites_keep_the_space_counts_exact(table):
    """A rewrite whose new record takes a room of the replaced record's arena (a swap)
    counts nothing: the counts a recount would find stay the ones stored, through swaps,
    rooms of other lengths and fresh records."""
    t = table
    for r in range(40):
        for k in range(48):
            # same lengths (swaps), from round 10 on a third of the keys change length
            size = 8192 if r < 10 or k % 3 else 8192 + 64 * ((r + k) % 4)
            t.insert(k, bytes([r]) * size)
        if r % 4 == 0:
            time.sleep(2e-3)  # rooms pass their grace period: the next writes recycle them
        live, garbage, arenas = _recounted_space(t)
        H = t._H
        assert (H[L.H_LIVE_RECORD], H[L.H_GARBAGE]) == (live, garbage), r
        for aid, (a_live, a_garbage) in arenas.items():
            w = t._arenas[aid].words
            assert (w[L.A_LIVE], w[L.A_GARBAGE]) == (a_live, a_garbage), (r, aid)
    for k in range(48):
        assert t[k] == bytes([39]) * len(t[k])


def test_atomic_sessions_reuse_the_rooms_the_previous_one_left(table):
    """A committed atomic session's replaced records are recycled by the next one (no fresh
    arenas: back-to-back atomic rewrites keep two versions); the first session that is not
    atomic lets those rooms go, and the counts stay exact throughout."""
    t = table
    keys, size = 64, 256 << 10
    for k in range(keys):
        t.insert(k, bytes(size))
    data = keys * size
    for r in range(1, 4):  # settle: the first atomic rewrites need fresh rooms
        with t.writer(atomic=True):
            for k in range(keys):
                t.insert(k, bytes([r]) * size)
        time.sleep(2 * L.RECYCLE_GRACE_NS / 1e9)
    arenas, used = t._H[L.H_NEXT_ARENA], t.info()["memory"]
    for r in range(4, 20):
        with t.writer(atomic=True):
            for k in range(keys):
                t.insert(k, bytes([r]) * size)
        time.sleep(2 * L.RECYCLE_GRACE_NS / 1e9)
        live, garbage, _ = _recounted_space(t)
        assert (t._H[L.H_LIVE_RECORD], t._H[L.H_GARBAGE]) == (live, garbage), r
    assert t._H[L.H_NEXT_ARENA] == arenas  # no new segment for 16 atomic rewrites
    assert t.info()["memory"] <= max(used, 2 * data) + (1 << 20)
    assert all(t[k] == bytes([19]) * size for k in range(keys))
    for r in range(20, 30):  # not atomic: reuses as it goes, and lets the extra copy go
        for k in range(keys):
            t.insert(k, bytes([r]) * size)
        time.sleep(2 * L.RECYCLE_GRACE_NS / 1e9)
        live, garbage, _ = _recounted_space(t)
        assert (t._H[L.H_LIVE_RECORD], t._H[L.H_GARBAGE]) == (live, garbage), r
    assert t._H[L.H_GARBAGE] < data // 4  # compacted: the extra copy is gone
    assert t.info()["memory"] < 1.1 * data + (9 << 20)  # (+ the pool of retired arenas)
    assert all(t[k] == bytes([29]) * size for k in range(keys))
