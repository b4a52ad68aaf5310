"""Arena reuse: a rewrite lands in the pages of retired arenas, and readers stay whole.

See ``sharedzarr._layout`` ("Reuse") for the protocol these tests check: copying readers
retry when the reuse epoch moves; zero-copy views pin their arena so it is never reused.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import _workers as W
import numpy as np
import pytest

import sharedzarr as sz
from sharedzarr import _layout as L
from sharedzarr._table import Table

CTX = mp.get_context("spawn")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = 96  # x 256 KiB: 24 MiB live, 4 MiB arenas, room for pooled arenas


def _fill(t: Table, r: int = 1, *, vary: bool = False) -> None:
    """Rewrite every key with byte ``r``; ``vary`` makes each round's values a different
    length, so no record's room can be recycled and whole arenas retire to the pool."""
    with t.writer():
        for k in range(KEYS):
            t.insert(k, bytes([r]) * (W.reuse_size(k) + (64 * r if vary else 0)))


def _pool(t: Table) -> list[int]:
    return [t._H[L.H_POOL + 2 * k] for k in range(L.POOL_SLOTS) if t._H[L.H_POOL + 2 * k]]


@pytest.fixture
def big():
    t = Table.create()
    _fill(t)
    yield t
    t.delete_table()


def test_rewrites_reuse_retired_arenas(big):
    t = big
    next_before = t._H[L.H_NEXT_ARENA]
    for r in range(2, 8):
        _fill(t, r, vary=True)
    reused = t._H[L.H_REUSE]
    created = t._H[L.H_NEXT_ARENA] - next_before
    assert reused >= 10, (reused, created)
    # most new arena ids came from reused segments, not fresh memory
    assert reused >= created // 2
    for k in range(KEYS):
        assert t[k] == bytes([7]) * (W.reuse_size(k) + 64 * 7)
    live = sum(W.reuse_size(k) + 64 * 7 for k in range(KEYS))
    info = t.info()
    # the pool is bounded: a quarter of the live data, on top of live + garbage
    assert info["memory"] <= 1.75 * live, info
    for aid in _pool(t):
        seg = t._arenas.get(aid) or t._map_arena(aid)
        assert seg.size and int.from_bytes(seg.mm[48:56], "little") == 0  # retired: id 0


def test_reclaim_frees_the_pool(big):
    for r in range(2, 5):
        _fill(big, r, vary=True)
    _fill(big, 5)  # the sizes audit expects
    assert _pool(big), "expected a pooled arena after rewrites"
    before = big.info()["memory"]
    big.reclaim()
    assert _pool(big) == []
    assert big.info()["memory"] < before
    from test_faults import audit

    audit(big, W.big_churn_size)


def test_zero_copy_view_pins_its_arena_across_rewrites(big):
    view = big.get(5, copy=False)
    before = bytes(view)
    aid = None
    for a, seg in big._arenas.items():
        if seg.mm is not None and int.from_bytes(seg.mm[56:64], "little") == L.NOREUSE_VIEW:
            aid = a
    assert aid is not None, "the view's arena must be marked no-reuse"
    for r in range(2, 10):
        _fill(big, r)
    assert big._H[L.H_REUSE] > 0
    assert bytes(view) == before  # never overwritten in place
    assert aid not in _pool(big)
    del view


def test_zero_copy_view_in_another_process_survives_reuse(big):
    ready, go = CTX.Event(), CTX.Event()
    same = CTX.Value("i", -1)
    p = CTX.Process(target=W.hold_view, args=(big.name, 7, ready, go, same))
    p.start()
    try:
        assert ready.wait(120)
        epoch = big._H[L.H_REUSE]
        for r in range(2, 10):
            _fill(big, r)
        assert big._H[L.H_REUSE] > epoch
    finally:
        go.set()
        p.join(120)
    assert p.exitcode == 0
    assert same.value == 1


def test_read_only_handle_pins_through_a_writable_header_mapping(big):
    ro = Table.attach(big.name, readonly=True)
    try:
        v = ro.get(3, copy=False)
        assert isinstance(v, memoryview) and v.readonly
        (seg,) = [s for s in ro._arenas.values() if s.words[7] == L.NOREUSE_VIEW]
        assert seg.readonly and seg.words_writable  # data read-only, header words writable
        with pytest.raises(TypeError):
            seg.buf[100] = 1
        before = bytes(v)
        for r in range(2, 8):
            _fill(big, r)
        assert bytes(v) == before
        assert ro.get(3) == bytes([7]) * W.reuse_size(3)
    finally:
        ro.close()


@pytest.mark.parametrize("mode", ["copy", "view", "items", "member"])
def test_readers_never_see_torn_or_missing_values_while_arenas_are_reused(big, mode):
    stop = CTX.Event()
    count = CTX.Value("i", 0)
    w = CTX.Process(target=W.reuse_writer, args=(big.name, KEYS, stop, count))
    epoch = big._H[L.H_REUSE]
    w.start()
    try:
        with CTX.Pool(2) as pool:
            rounds = 6 if mode == "items" else 25
            rs = [
                pool.apply_async(W.reuse_reader, (big.name, KEYS, rounds, mode)) for _ in range(2)
            ]
            results = [r.get(600) for r in rs]
    finally:
        stop.set()
        w.join(120)
    assert w.exitcode == 0
    assert count.value >= 2
    assert big._H[L.H_REUSE] > epoch, "the writer never reused an arena: the test tests nothing"
    for done, bad in results:
        assert done > 0
        assert bad == 0


@contextlib.contextmanager
def _array_rewritten(cleanup: list[str], tag: str) -> Iterator[tuple[sz.Array, Any]]:
    """A 2048x2048 array (256x256 chunks) that another process rewrites, one value per
    round, while the block runs: yields (the array, the rounds counter).  Afterwards the
    writer must have exited cleanly and reused an arena."""
    name = f"reuse-{tag}-{os.getpid()}"
    cleanup.append(name)
    a = sz.create(shape=(2048, 2048), chunks=(256, 256), dtype="f8", table_name=name)
    a[...] = 0.0
    epoch = a.backend.table._H[L.H_REUSE]
    stop = CTX.Event()
    count = CTX.Value("i", 0)
    w = CTX.Process(target=W.array_rewriter, args=(name, stop, count))
    w.start()
    try:
        yield a, count
    finally:
        stop.set()
        w.join(120)
    assert w.exitcode == 0
    assert a.backend.table._H[L.H_REUSE] > epoch, "no arena was reused: the test tests nothing"


def test_array_reads_stay_whole_while_a_writer_reuses_arenas(cleanup):
    with _array_rewritten(cleanup, "arr") as (a, count):
        with CTX.Pool(1) as pool:
            done, bad = pool.apply(W.array_reader, (a.name, 15))
    assert count.value >= 2
    assert done > 0 and bad == 0
    v = a[...]
    assert v.min() == v.max() > 0  # the writer's last round, whole


def test_cached_chunk_reads_stay_whole_while_a_writer_rewrites_and_reuses(cleanup):
    """read_chunk's cached copying reader (one load of the write count before and after the
    copy) against a writer that rewrites every chunk, round after round, into reused arenas:
    no mixture, and the copies follow the writer."""
    out = CTX.Queue()
    with _array_rewritten(cleanup, "cached") as (a, count):
        r = CTX.Process(target=W.cached_chunk_reader, args=(a.name, 6, count, out))
        r.start()
        done, bad, values = out.get(timeout=300)
        r.join(60)
    assert r.exitcode == 0
    assert done > 0 and bad == 0
    assert values >= 3  # the cached copies followed the rewrites


@pytest.mark.parametrize("point", ["arena.retired", "arena.reused"])
def test_crash_in_reuse_recovers(point):
    t = Table.create()
    try:
        env = dict(os.environ, SHAREDZARR_CRASH_AT=point, SHAREDZARR_CRASH_AFTER="2")
        code = (
            "import sys; sys.path.insert(0, 'tests'); import _workers as W; "
            f"W.big_churn({t.name!r}, 8, {KEYS}, vary=True)"
        )
        r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, timeout=300)
        assert r.returncode == -signal.SIGKILL
        t0 = time.monotonic()
        t.insert("after", b"x")
        assert time.monotonic() - t0 < 5
        t.delete("after")
        from test_faults import audit

        audit(t, lambda k: W.churned_size(t[k], k))
        # and it keeps working: more rewrites reuse arenas again
        W.big_churn(t.name, 5, KEYS, vary=True)
        audit(t, lambda k: W.churned_size(t[k], k))
    finally:
        t.delete_table()


def test_reused_arena_contents_are_the_new_values_only():
    """Records in a reused arena are read back exactly (no stale bytes leak into values)."""
    t = Table.create()
    try:
        rng = np.random.default_rng(0)
        for r in range(8):
            with t.writer():
                for k in range(60):
                    n = int(rng.integers(100_000, 400_000))
                    t.insert(k, bytes([r + 1]) * n)
                    t.insert(("len", k), n.to_bytes(8, "little"))
        assert t._H[L.H_REUSE] > 0
        for k in range(60):
            n = int.from_bytes(t[("len", k)], "little")
            assert t[k] == bytes([8]) * n
    finally:
        t.delete_table()


def _filler(byte: int, fail: bool = False):
    def fill(buf: memoryview) -> None:
        if fail:
            raise RuntimeError("fill failed")
        buf[:] = bytes([byte]) * len(buf)

    return fill


@pytest.mark.parametrize("threaded", [False, True])
def test_insert_filled_many_publishes_each_value_after_its_fill(threaded):
    from concurrent.futures import ThreadPoolExecutor

    t = Table.create()
    ex = ThreadPoolExecutor(1)
    try:
        submit = ex.submit if threaded else None
        sizes = [100, 300_000, 5 << 20, 64]  # includes a value with a segment of its own
        items = [(t.prepare_key(k), n, _filler(k + 1)) for k, n in enumerate(sizes)]
        assert t.insert_filled_many(items, submit) == 4
        for k, n in enumerate(sizes):
            assert t[k] == bytes([k + 1]) * n
        # a failing fill (on this thread, then on the other): the values before it are
        # published, it and those after are not
        items = [(t.prepare_key(k), 1000, _filler(50 + k, fail=(k == 2))) for k in range(5)]
        with pytest.raises(RuntimeError, match="fill failed"):
            t.insert_filled_many(items, submit)
        assert t[0] == bytes([50]) * 1000 and t[1] == bytes([51]) * 1000
        assert t[2] == bytes([3]) * sizes[2]  # unchanged
        assert 4 not in t
        items = [(t.prepare_key(k), 1000, _filler(60 + k, fail=(k == 1))) for k in range(5)]
        with pytest.raises(RuntimeError, match="fill failed"):
            t.insert_filled_many(items, submit)
        assert t[0] == bytes([60]) * 1000 and t[1] == bytes([51]) * 1000
        assert 4 not in t
        from test_faults import audit

        audit(t, lambda k: {0: 1000, 1: 1000, 2: sizes[2], 3: sizes[3]}[k])
        bag = Table.create(table_type="bag")
        try:
            with pytest.raises(TypeError, match="set table"):
                bag.insert_filled_many([])
        finally:
            bag.delete_table()
    finally:
        ex.shutdown()
        t.delete_table()


@pytest.mark.parametrize("fail_at", [0, 6, 13, 19, None])
def test_insert_filled_many_shared_fills_publish_the_values_before_a_failure(fail_at):
    """Two threads share the fills of a long write (more values than are kept in flight):
    whichever thread runs the failing fill, the values before it are published, in order,
    and nothing after it; a failure of the items iterator itself publishes what it gave."""
    from concurrent.futures import ThreadPoolExecutor

    t = Table.create()
    ex = ThreadPoolExecutor(1)
    try:
        n = 20
        t.insert_filled_many([(t.prepare_key(k), 70_000, _filler(1)) for k in range(n)])

        def items():
            for k in range(n):
                if fail_at is None and k == 11:
                    raise KeyError("items failed")
                yield t.prepare_key(k), 70_000, _filler(2, fail=(k == fail_at))

        with pytest.raises((RuntimeError, KeyError), match="fill failed|items failed"):
            t.insert_filled_many(items(), ex.submit)
        first = 11 if fail_at is None else fail_at
        for k in range(n):
            assert t[k] == bytes([2 if k < first else 1]) * 70_000, k
        from test_faults import audit

        audit(t, lambda k: 70_000)
        # the next write that fits succeeds, and the helper thread was let go
        assert t.insert_filled_many([(t.prepare_key(0), 10, _filler(3))], ex.submit) == 1
        assert t[0] == bytes([3]) * 10
    finally:
        ex.shutdown()
        t.delete_table()


@pytest.mark.parametrize("fail_at", [0, 5, 31, 32, 40, 69, None])
def test_insert_filled_many_publishes_batches_in_order_up_to_a_failure(fail_at):
    """On one thread, small values are published in batches (one write-count bump per
    batch): a failure anywhere (first in a batch, last, in the items iterator) publishes
    the values before it, in order, and nothing after it; cached readers see them."""
    t = Table.create()
    try:
        n = 70
        keys = [t.prepare_key(k) for k in range(n)]
        hint = 8 << 20  # batches of 32: their bytes stay under the batch share of this
        assert t.insert_filled_many([(keys[k], 1000, _filler(1)) for k in range(n)]) == n
        read = t.view_reader(t.prepare_key, bytes)
        assert all(read(k) == bytes([1]) * 1000 for k in range(n))  # cached now

        def items():
            for k in range(n):
                if fail_at is None and k == 45:
                    raise KeyError("items failed")
                yield keys[k], 1000, _filler(2, fail=(k == fail_at))

        with pytest.raises((RuntimeError, KeyError), match="fill failed|items failed"):
            t.insert_filled_many(items(), expected_bytes=hint)
        first = 45 if fail_at is None else fail_at
        for k in range(n):
            want = bytes([2 if k < first else 1]) * 1000
            assert t[k] == want and read(k) == want, k
        from test_faults import audit

        audit(t, lambda k: 1000)
    finally:
        t.delete_table()


def test_insert_filled_many_fills_a_value_in_parts_on_both_threads():
    """A fill with ``parts`` is queued part by part (the two threads fill one big value
    together); the value is published once every part is done, and a failed part keeps
    it and the values after it unpublished."""
    from concurrent.futures import ThreadPoolExecutor

    class Parts:
        def __init__(self, byte: int, fail: bool = False) -> None:
            self.ran: set[int] = set()

            def part(k: int):
                def fill(buf: memoryview) -> None:
                    self.ran.add(k)
                    if fail and k == 1:
                        raise RuntimeError("part failed")
                    half = len(buf) // 2
                    buf[k * half : len(buf) if k else half] = bytes([byte]) * (
                        len(buf) - half if k else half
                    )

                return fill

            self.parts = (part(0), part(1))

        def __call__(self, buf: memoryview) -> None:  # the serial path
            for p in self.parts:
                p(buf)

    t = Table.create()
    ex = ThreadPoolExecutor(1)
    try:
        fills = [Parts(k + 1) for k in range(6)]
        items = [(t.prepare_key(k), 600_000, f) for k, f in enumerate(fills)]
        assert t.insert_filled_many(items, ex.submit) == 6
        for k, f in enumerate(fills):
            assert f.ran == {0, 1} and t[k] == bytes([k + 1]) * 600_000
        fills = [Parts(9, fail=(k == 3)) for k in range(6)]
        items = [(t.prepare_key(k), 600_000, f) for k, f in enumerate(fills)]
        with pytest.raises(RuntimeError, match="part failed"):
            t.insert_filled_many(items, ex.submit)
        for k in range(6):
            assert t[k] == bytes([9 if k < 3 else k + 1]) * 600_000, k
        from test_faults import audit

        audit(t, lambda k: 600_000)
    finally:
        ex.shutdown()
        t.delete_table()


def test_rewrites_of_big_chunks_keep_few_records_in_flight(cleanup):
    """A 32 MiB array in 4 MiB chunks: a rewrite has at most one chunk in flight (both
    threads fill it), so 30 rewrites leave /dev/shm at 1.25x the data; with five chunks
    in flight it was 2.1x."""
    name = f"reuse-big-chunks-{os.getpid()}"
    cleanup.append(name)
    a = sz.create(shape=(2048, 2048), chunks=(256, 2048), dtype="f8", table_name=name)
    v = np.random.default_rng(0).random(a.shape)
    for _ in range(30):
        a[...] = v
    used = sum(
        os.stat(f"/dev/shm/{f}").st_blocks * 512
        for f in os.listdir("/dev/shm")
        if f.startswith(f"sz.{name}.")
    )
    assert used <= 1.3 * v.nbytes, used / v.nbytes
    np.testing.assert_array_equal(a[...], v)
    a.delete()


def test_a_rewrite_gives_back_the_pages_of_garbage_no_handle_reuses(cleanup):
    """Two worker processes rewrite chunks and exit: the records they replaced are garbage
    that no handle will reuse (rooms of exited writers; here, deterministically, records
    replaced in an atomic block), 25% of the data, below the compaction threshold.  The
    next whole-array rewrites give their pages back: /dev/shm ends about where it ends for
    an array that only this process ever rewrote (without it: 1.35x against 1.08x)."""
    import _array_workers as AW

    name, control = f"reuse-foreign-{os.getpid()}", f"reuse-control-{os.getpid()}"
    cleanup.extend([name, control])
    v = np.random.default_rng(1).random((2048, 4096))
    a = sz.create(shape=v.shape, chunks=(256, 256), dtype="f8", table_name=name)
    c = sz.create(shape=v.shape, chunks=(256, 256), dtype="f8", table_name=control)
    a[...] = v
    chunks = [(i, j) for i in range(8) for j in range(16)]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    ps = [
        ctx.Process(target=AW.rewrite_chunks, args=(name, part, v, barrier))
        for part in (chunks[0:32:2], chunks[1:32:2])
    ]
    for p in ps:
        p.start()
    for p in ps:
        p.join(120)
        assert p.exitcode == 0

    def used(table: str) -> float:
        files = [f for f in os.listdir("/dev/shm") if f.startswith(f"sz.{table}.")]
        return sum(os.stat(f"/dev/shm/{f}").st_blocks * 512 for f in files) / v.nbytes

    before = used(name)
    for x in (a, c, c):
        x[...] = v
    for _ in range(10):
        a[...] = v
        c[...] = v
    assert before > used(control) + 0.15, (before, used(control))  # the workers' garbage
    # (the rooms a rewrite keeps in flight vary with timing by a few percent)
    assert used(name) <= used(control) + 0.05, (before, used(name), used(control))
    np.testing.assert_array_equal(a[...], v)  # no live chunk lost a page
    info = a.table.info()
    assert info["keys"] == len(chunks) + 1 and info["live_bytes"] >= v.nbytes, info
    a.delete()
    c.delete()


def _arena_inodes(name: str) -> set[int]:
    prefix = f"sz.{name}.a"
    return {os.stat(f"/dev/shm/{f}").st_ino for f in os.listdir("/dev/shm") if f.startswith(prefix)}


def test_a_bulk_write_sizes_arenas_for_its_data_so_the_next_rewrite_reuses_them(cleanup):
    """A 64 MiB array written in one go gets arenas of one size from the first chunk on
    (growing from the smallest size, the first rewrite found most retired arenas the wrong
    size and allocated fresh memory for them): the first rewrite reuses all but one."""
    name = f"reuse-hint-{os.getpid()}"
    a = sz.create(shape=(2048, 4096), chunks=(256, 256), dtype="f8", table_name=name)
    try:
        a[:] = 1.0
        sizes = {os.stat(f"/dev/shm/sz.{name}.a{aid}").st_size for aid in range(2, 9)}
        assert sizes == {8 << 20}, sizes  # 64 MiB of data: 8 MiB arenas from the start
        before = _arena_inodes(name)
        a[:] = 2.0  # a rewrite: the pages of retired arenas, renamed (same inode)
        fresh = _arena_inodes(name) - before
        assert len(fresh) <= 1, f"{len(fresh)} fresh arenas in the first rewrite"
        np.testing.assert_array_equal(a[:], 2.0)
        assert a.table._size_hint == 0  # the hint lasts one bulk write only
    finally:
        a.delete()


def test_a_stream_reset_to_empty_refills_kept_arenas_not_fresh_memory(cleanup):
    """An array of frames emptied (``resize`` to 0) and appended to again, as a stream
    reset between runs: the emptied arenas are kept in the pool up to ``POOL_KEEP`` in
    all (the live data, nearly none now, would allow no pool), so the refill reuses their
    pages; ``reclaim()`` gives them back."""
    from sharedzarr._table._arenas import POOL_KEEP

    name = f"reuse-stream-{os.getpid()}"
    cleanup.append(name)
    frame = np.ones((1, 160, 120))  # 150 KiB: about 26 frames per 4 MiB arena
    a = sz.create(shape=(0, 160, 120), chunks=frame.shape, table_name=name)
    for _ in range(60):
        a.append(frame)
    t = a.table
    a.resize((0, 160, 120))
    assert len(_pool(t)) == L.POOL_SLOTS
    assert t.info()["memory"] <= POOL_KEEP + L.MIN_ARENA + (1 << 20), t.info()
    before = _arena_inodes(name)
    for _ in range(60):
        a.append(2 * frame)
    fresh = _arena_inodes(name) - before
    assert len(fresh) <= 1, f"{len(fresh)} fresh arenas after the reset"
    np.testing.assert_array_equal(a[:], 2.0)
    a.resize((0, 160, 120))
    t.reclaim()
    assert _pool(t) == [] and t.info()["memory"] <= L.MIN_ARENA, t.info()
    a.delete()


def test_reclaim_gives_back_the_pages_of_garbage_too_little_to_compact(cleanup):
    """Rewrites leave the rooms of the last records replaced as garbage (a handful of
    chunks: 11% of a small array of 128 KiB chunks), less than compaction copies for;
    ``reclaim()`` gives their pages back, and later writes still reuse the rooms."""
    name = f"reuse-pages-{os.getpid()}"
    cleanup.append(name)
    a = sz.create(shape=(1024, 1024), chunks=(128, 128), dtype="f8", table_name=name)
    for v in range(20):
        a[...] = float(v)
    t = a.table
    garbage = t.info()["garbage_bytes"]
    assert garbage >= 2 * 128 * 128 * 8, t.info()  # rooms of at least two chunks
    freed = t.reclaim()
    assert freed >= garbage - 128 * 128 * 8, (freed, garbage)
    assert t.info()["memory"] <= a.nbytes * 1.02, t.info()  # (the index, heads, arena tails)
    np.testing.assert_array_equal(a[...], 19.0)
    inodes = _arena_inodes(name)
    for v in range(3):
        a[...] = 100.0 + v
    assert _arena_inodes(name) == inodes  # the same arenas: their rooms were reused
    np.testing.assert_array_equal(a[...], 102.0)
    a.delete()


def test_insert_filled_many_size_hint_ends_with_the_call():
    t = Table.create()
    try:
        items = [(t.prepare_key(0), 1000, _filler(1, fail=True))]
        with pytest.raises(RuntimeError, match="fill failed"):
            t.insert_filled_many(items, expected_bytes=1 << 30)
        assert t._size_hint == 0
        # a hint of 1 GiB sizes new arenas for 1 GiB of data (64 MiB, sparse)
        items = [(t.prepare_key(k), 1 << 20, _filler(2)) for k in range(8)]
        t.insert_filled_many(items, expected_bytes=1 << 30)
        assert t._size_hint == 0
        assert t[7] == bytes([2]) * (1 << 20)
        sizes = [s.size for s in t._arenas.values()]
        assert max(sizes) == L.MAX_ARENA, sizes
    finally:
        t.delete_table()


def _deleted_maps(name: str) -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if f"/dev/shm/sz.{name}." in line and "(deleted)" in line)


def test_cached_chunk_views_follow_rewrites_and_release_dead_segments(cleanup):
    name = f"reuse-cache-{os.getpid()}"
    cleanup.append(name)
    a = sz.create(shape=(1024, 1024), chunks=(256, 256), dtype="f8", table_name=name)
    a[...] = 1.0
    r = sz.open(name, mode="r")
    held = r.read_chunk((0, 0), copy=False)  # pinned: must never change
    for v in (2.0, 3.0, 4.0):
        a[...] = v
        for i in range(4):
            for j in range(4):
                c = r.read_chunk((i, j))
                view = r.read_chunk((i, j), copy=False)
                assert c.min() == c.max() == v and view.min() == view.max() == v
                assert c.flags.writeable and not view.flags.writeable
                c[0, 0] = -1  # a copy: the next read is unaffected
                assert r.read_chunk((i, j))[0, 0] == v
    assert held.min() == held.max() == 1.0
    assert r.read_chunk((0, 0), copy=False) is not r.read_chunk((0, 0), copy=False)
    a.write_chunk((1, 1), 9.0)
    assert r.read_chunk((1, 1)).max() == 9.0 == r.read_chunk((1, 1), copy=False).min()
    a.delete_chunk((1, 2))
    assert r.read_chunk((1, 2)).max() == 0.0  # the fill value once deleted
    # after a reclaim, one more read drops the cached views into unlinked segments
    del held
    a.backend.table.reclaim()
    r.read_chunk((3, 3))
    r.read_chunk((0, 1), copy=False)
    import gc

    gc.collect()
    assert _deleted_maps(name) <= 2, _deleted_maps(name)
    r.close()


def test_cached_chunk_reads_skip_the_index_until_the_write_counter_moves(cleanup):
    """A cached read loads the key's slot only when something was written since (every
    slot change bumps the counter right after the store): idle tables cost no index page."""
    name = f"reuse-wc-{os.getpid()}"
    cleanup.append(name)
    a = sz.create(shape=(64, 64), chunks=(32, 32), dtype="f8", table_name=name)
    a[...] = 1.0
    r = sz.open(name, mode="r")
    t = r.backend.table
    for _ in range(2):  # the first read validates the index, the second caches a view
        for copy in (True, False):
            assert r.read_chunk((0, 0), copy=copy).max() == 1.0

    class NoIndex:
        def __getitem__(self, i: int) -> int:
            raise AssertionError("the index was read")

    real, t._idx = t._idx, NoIndex()
    try:
        for _ in range(5):
            assert r.read_chunk((0, 0)).max() == 1.0
            assert r.read_chunk((0, 0), copy=False).max() == 1.0
        a.write_chunk((1, 1), 5.0)  # another chunk: the counter moves, the slot is checked
        with pytest.raises(AssertionError, match="the index was read"):
            r.read_chunk((0, 0))
    finally:
        t._idx = real
    assert r.read_chunk((0, 0)).max() == 1.0 and r.read_chunk((1, 1)).max() == 5.0
    a.write_chunk((0, 0), 2.0)
    assert r.read_chunk((0, 0)).max() == 2.0 == r.read_chunk((0, 0), copy=False).min()
    a.delete_chunk((0, 0))
    assert r.read_chunk((0, 0)).max() == 0.0
    r.close()


def test_cached_reads_see_a_slot_a_killed_writer_stored_but_never_counted(cleanup):
    """A writer SIGKILLed between a slot's store and the write count's bump: a cached reader
    trusts the unchanged count until the next writer's repair, which moves it, and then
    reads what a fresh reader reads (even when that writer writes nothing)."""
    name = f"reuse-kill-{os.getpid()}"
    cleanup.append(name)
    a = sz.create(shape=(64, 64), chunks=(32, 32), dtype="f8", table_name=name, persistent=True)
    a[...] = 1.0
    r = sz.open(name, mode="r")
    for _ in range(2):
        assert r.read_chunk((0, 0)).max() == 1.0
    env = dict(os.environ, SHAREDZARR_CRASH_AT="put.stored", SHAREDZARR_CRASH_AFTER="0")
    code = f"import sharedzarr as sz; sz.open({name!r}, mode='r+').write_chunk((0, 0), 2.0)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert r.read_chunk((0, 0)).max() in (1.0, 2.0)  # old or new, never torn
    with a.backend.writer():  # the repair, and no write
        pass
    fresh = sz.open(name, mode="r")
    assert fresh.read_chunk((0, 0)).max() == 2.0
    assert r.read_chunk((0, 0)).max() == 2.0 == r.read_chunk((0, 0), copy=False).min()
    assert r[:32, :32].min() == 2.0
    fresh.close()
    r.close()


def test_cached_reads_notice_a_deleted_table_at_once(cleanup):
    """Deleting a table moves the write count: the next cached read raises (it does not wait
    for the periodic check of the segment's link count)."""
    name = f"reuse-del-{os.getpid()}"
    cleanup.append(name)
    a = sz.create(shape=(64, 64), chunks=(32, 32), dtype="f8", table_name=name)
    a[...] = 1.0
    r = sz.open(name, mode="r")
    for _ in range(3):
        assert r.read_chunk((0, 0)).max() == 1.0
    a.delete()
    with pytest.raises(sz.TableNotFoundError):
        r.read_chunk((0, 0))
    r.close()


def test_cached_reads_notice_segments_removed_behind_the_tables_back(cleanup):
    """``rm -f /dev/shm/sz.<name>.*`` sets no deleted flag: a cached reader notices by
    asking the OS every few thousand reads, and then raises."""
    name = f"reuse-rm-{os.getpid()}"
    cleanup.append(name)
    a = sz.create(shape=(64, 64), chunks=(32, 32), dtype="f8", table_name=name)
    a[...] = 1.0
    r = sz.open(name, mode="r")
    assert r.read_chunk((0, 0)).max() == 1.0
    for n in os.listdir("/dev/shm"):
        if n.startswith(f"sz.{name}."):
            os.unlink(f"/dev/shm/{n}")
    with pytest.raises(sz.TableNotFoundError):
        for _ in range(10_000):
            assert r.read_chunk((0, 0)).max() == 1.0  # the data stays mapped meanwhile
    r.close()
    a.close()


def test_cached_absent_chunks_appear_once_written(cleanup):
    """Absent chunks are remembered as absent by a reader's cache until the write counter
    moves: every read path then sees a chunk another handle wrote."""
    name = f"reuse-absent-{os.getpid()}"
    cleanup.append(name)
    a = sz.create(shape=(64, 64), chunks=(16, 16), dtype="f8", table_name=name, fill_value=-1)
    a[:16, :16] = 1.0
    r = sz.open(name, mode="r")
    for _ in range(3):  # absent chunks read through every cached path
        assert (r[:, :] == -1).sum() == 64 * 64 - 16 * 16
        assert r.get_slice()[20, 20] == -1 and r[17:40, 17:40].max() == -1
        assert r.read_chunk((2, 2)).max() == -1 == r.read_chunk((2, 2), copy=False).min()
    a[32:48, 32:48] = 7.0  # chunk (2, 2), written by another handle
    assert r[40, 40] == 7.0 and r[30:50, 30:50].max() == 7.0
    assert r.get_slice()[32:48, 32:48].min() == 7.0
    assert r.read_chunk((2, 2)).min() == 7.0 == r.read_chunk((2, 2), copy=False).max()
    a.delete_chunk((0, 0))  # and gone again
    assert r[:16, :16].max() == -1 and r.get_slice()[0, 0] == -1
    r.close()


def test_numpy_views_outlive_close_and_delete():
    name = f"npview-{os.getpid()}"
    with CTX.Pool(1) as pool:  # a dangling view would kill the process, not the test run
        assert pool.apply(W.numpy_views_outlive_close, (name,)) == [5.0 * 1024] * 2
