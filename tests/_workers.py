"""Functions run in spawned child processes by the tests (must be importable)."""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

import sharedzarr as sz
from sharedzarr._table import Table


def read_keys(name: str, keys: list) -> list:
    """Attach and return lookup(k) for each key."""
    with Table.attach(name) as t:
        return [t.lookup(k) for k in keys]


def write_keys(name: str, items: list) -> None:
    """Attach and insert each (key, value)."""
    with Table.attach(name) as t:
        for k, v in items:
            t.insert(k, v)


def hold_lock_forever(name: str, ready) -> None:
    """Take the writer lock, signal, then wait to be killed."""
    t = Table.attach(name)
    with t.writer():
        t.insert("held", b"1")
        ready.set()
        time.sleep(600)


def torn_writer(name: str, keys: int, size: int, stop, count) -> None:
    """Rewrite every key with a uniform value (the version byte repeated) until stopped."""
    t = Table.attach(name)
    v = 0
    while not stop.is_set():
        v = (v + 1) % 251
        val = bytes([v]) * size
        for k in range(keys):
            t.insert(k, val)
        count.value += 1
    t.close()


def torn_reader(name: str, keys: int, reads: int, copy: bool) -> tuple[int, int]:
    """Read keys repeatedly; return (reads done, mixtures seen)."""
    t = Table.attach(name)
    bad = 0
    done = 0
    while done < reads:
        for k in range(keys):
            v = t.get(k, copy=copy)
            if v is None:
                bad += 1
                continue
            b = bytes(v) if not copy else v
            if b.count(b[:1]) != len(b):
                bad += 1
            done += 1
    t.close()
    return done, bad


def counter_increments(name: str, n: int, die_holding: bool) -> None:
    """Increment the 'count' value n times under the writer lock; optionally die holding it."""
    t = Table.attach(name)
    for i in range(n):
        with t.writer():
            c = int(t["count"])
            t.insert("count", str(c + 1).encode())
            if die_holding and i == n // 2:
                os.kill(os.getpid(), signal.SIGKILL)


def crash_insert(name: str, keys: int, point: str, after: int) -> None:
    """Insert keys with a crash point armed (run in a fresh interpreter via env)."""
    t = Table.attach(name)
    for k in range(keys):
        t.insert(k, bytes([k % 251]) * (100 + 40 * k))


def publish_toggle(shm_name: str, stop) -> None:
    """Flip one aligned word between two bit patterns with the table's publishing store."""
    from sharedzarr._segment import Segment

    seg = Segment.attach(shm_name)
    q = seg.buf.cast("Q")
    a, b = 0x0101010101010101, 0xFEFEFEFEFEFEFEFE
    while not stop.is_set():
        for _ in range(10000):
            q[8] = a
            q[8] = b
    q.release()
    seg.close()


def publish_watch(shm_name: str, reads: int) -> int:
    """Load the word ``reads`` times; return how many loads were neither pattern."""
    from sharedzarr._segment import Segment

    seg = Segment.attach(shm_name, readonly=True)
    q = seg.buf.cast("Q")
    ok = (0x0101010101010101, 0xFEFEFEFEFEFEFEFE, 0)
    bad = 0
    for _ in range(reads):
        if q[8] not in ok:
            bad += 1
    q.release()
    seg.close()
    return bad


def create_and_exit(name: str, heir: int | None, chunks: int, how: str) -> None:
    """Create a table (array when chunks>0), write, then exit the way `how` says."""
    if chunks:
        a = sz.create(shape=(10 * chunks,), chunks=(10,), dtype="int64", table_name=name, heir=heir)
        for i in range(chunks):
            a[i * 10 : (i + 1) * 10] = np.arange(10) + i
    else:
        t = Table.create(name, heir=heir)
        t.insert("k", b"v")
    if how == "raise":
        raise RuntimeError("owner fails on purpose")
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    if how == "exit":
        sys.exit(0)


def churn(name: str, rounds: int, keys: int) -> None:
    """Inserts, overwrites, deletes, index growth and reclamation: the crash-injection workload.

    Key k holds bytes([round]) * size(k), so any value read later is checkable.
    """
    t = Table.attach(name)
    for r in range(1, rounds + 1):
        for k in range(keys):
            t.insert(k, bytes([r]) * (1000 + 37 * k))
        for k in range(0, keys, 7):
            t.delete(k)
        for k in range(keys, keys + 40 * r):  # growth
            t.insert(("g", k), bytes([r]) * 64)
    t.close()


def churn_size(k) -> int:
    """The value size of churn key k."""
    return 64 if isinstance(k, tuple) else 1000 + 37 * k


ATOMIC_G, ATOMIC_B = 30, 200  # per round: growth keys, bulk-inserted keys


def atomic_churn(name: str, rounds: int, keys: int) -> None:
    """The crash-injection workload of atomic sessions: round r is one atomic session that
    rewrites keys 0..keys-1 with bytes([r]), replaces the previous round's ("g", r-1, i)
    keys with ("g", r, i) (index growth and deletes), bulk-inserts ("b", r, i) keys every
    4th round (a nested atomic session), and raises before its end every 5th round (a
    rollback).  Whatever kills it, the table holds exactly one whole round after the next
    writer's repair (:func:`check_atomic_rounds`)."""
    t = Table.attach(name)
    kept = 0  # the last round that was not undone
    for r in range(1, rounds + 1):
        try:
            with t.writer(atomic=True):
                for k in range(keys):
                    t.insert(k, bytes([r]) * atomic_size(k))
                for i in range(ATOMIC_G):
                    if kept:
                        t.delete(("g", kept, i))
                    t.insert(("g", r, i), bytes([r]) * 64)
                if r % 4 == 0:
                    t.insert_many((("b", r, i), bytes([r]) * 32) for i in range(ATOMIC_B))
                if r % 5 == 0:
                    raise ValueError("undo this round")
            kept = r
        except ValueError:
            pass
    t.close()


def atomic_size(k) -> int:
    """The value size of atomic_churn key k."""
    if isinstance(k, tuple):
        return 64 if k[0] == "g" else 32
    return 500 + 53 * k


def check_atomic_rounds(t: Table, keys: int) -> int:
    """Assert that ``t`` holds one whole round of :func:`atomic_churn`; return it (0: none)."""
    got = {k: t[k] for k in t.keys()}
    first = got.get(0)
    r = first[0] if first else 0
    for k in range(keys):
        assert got.get(k) == (bytes([r]) * atomic_size(k) if r else None), (k, r)
    g = sorted(k for k in got if isinstance(k, tuple) and k[0] == "g")
    # a round that raised (r % 5 == 0) is undone: the g keys are of the last one kept
    assert all(k[1] == g[0][1] for k in g) and len(g) in (0, ATOMIC_G), g[:3]
    assert (g[0][1] if g else 0) == r
    bs: dict[int, int] = {}
    for k in got:
        if isinstance(k, tuple) and k[0] == "b":
            bs[k[1]] = bs.get(k[1], 0) + 1
    want = {q: ATOMIC_B for q in range(4, r + 1, 4) if q % 5}
    assert bs == want, (bs, r)
    return r


def read_all_million(name: str, n: int) -> int:
    """Read every key i < n (value: i repeated as 8-byte words); return how many matched."""
    t = Table.attach(name)
    ok = 0
    for i in range(n):
        v = t.get(i, copy=False)
        if v is not None and v[:8] == i.to_bytes(8, "little") and len(v) == 1024:
            ok += 1
    t.close()
    return ok


def timed_reader(name: str, keys: int, reads: int) -> tuple[int, int, list[int]]:
    """Read uniform values; return (reads, mixtures, sorted latency sample in ns)."""
    t = Table.attach(name)
    bad = done = 0
    lat = []
    clock = time.perf_counter_ns
    while done < reads:
        for k in range(keys):
            t0 = clock()
            v = t.get(k, copy=False)
            dt = clock() - t0
            if done % 10 == 0:
                lat.append(dt)
            if v is None or v.tobytes().count(v[:1].tobytes()) != len(v):
                bad += 1
            done += 1
    t.close()
    lat.sort()
    return done, bad, lat


def reuse_size(k: int) -> int:
    """Value size of key k in the reuse workloads (256 KiB give or take)."""
    return (256 << 10) + 4096 * (k % 5)


def big_churn_size(k) -> int:
    """The value size of big_churn key k."""
    return reuse_size(k)


def churned_size(value: bytes, k: int) -> int:
    """The length a ``big_churn(..., vary=True)`` value of key k must have (its round is its
    byte)."""
    return reuse_size(k) + 64 * value[0]


def big_churn(name: str, rounds: int, keys: int, vary: bool = False) -> None:
    """Rewrite every key each round with bytes([round]) * reuse_size(k).

    The same lengths each round: old records' rooms are recycled.  ``vary`` adds 64 * round
    bytes, so no room fits a later record: whole arenas become garbage and are retired and
    reused (the pool's crash workload; :func:`churned_size` tells a value's length).
    """
    t = Table.attach(name)
    for r in range(1, rounds + 1):
        for k in range(keys):
            t.insert(k, bytes([r]) * (reuse_size(k) + (64 * r if vary else 0)))
        if r % 3 == 0:
            t.delete(r % keys)
    t.close()


def reuse_writer(name: str, keys: int, stop, count) -> None:
    """Rewrite every key with a uniform value (round byte) until stopped; count rounds."""
    t = Table.attach(name)
    r = 0
    while not stop.is_set():
        r = r % 250 + 1
        with t.writer():
            for k in range(keys):
                t.insert(k, bytes([r]) * reuse_size(k))
        count.value += 1
    t.close()


def reuse_reader(name: str, keys: int, rounds: int, mode: str) -> tuple[int, int]:
    """Read every key ``rounds`` times (``mode``: copy / view / member / items); return
    (values checked, bad values: missing, wrong size or a mixture of rounds)."""
    t = Table.attach(name)
    bad = done = 0
    for _ in range(rounds):
        if mode == "items":
            vals = dict(t.items())
            got = [vals.get(k) for k in range(keys)]
        elif mode == "member":
            got = [b"x" * reuse_size(k) if t.member(k) else None for k in range(keys)]
        else:
            got = [t.get(k, copy=(mode == "copy")) for k in range(keys)]
        for k, v in enumerate(got):
            done += 1
            if v is None or len(v) != reuse_size(k):
                bad += 1
                continue
            b = bytes(v)
            if b.count(b[:1]) != len(b):
                bad += 1
    t.close()
    return done, bad


def hold_view(name: str, key: int, ready, go, same) -> None:
    """Take a zero-copy view of ``key``, signal, wait while the parent rewrites, and
    set ``same`` to 1 when the view still holds exactly the bytes it had (else 0)."""
    t = Table.attach(name)
    v = t.get(key, copy=False)
    before = bytes(v)
    ready.set()
    go.wait(120)
    same.value = int(bytes(v) == before and before.count(before[:1]) == len(before))
    del v
    t.close()


def array_rewriter(name: str, stop, count) -> None:
    """Write the whole array with one value per round until stopped."""
    a = sz.open(name)
    r = 0.0
    while not stop.is_set():
        r = r % 250 + 1
        a[...] = r
        count.value += 1
    a.close()


def array_reader(name: str, rounds: int) -> tuple[int, int]:
    """Read the whole array (two-thread path), windows and single chunks; every chunk must
    hold one value.  Return (chunks checked, chunks with a mixture)."""
    a = sz.open(name, mode="r")
    cs = a.chunks
    bad = done = 0
    rng = np.random.default_rng(os.getpid())
    for _ in range(rounds):
        whole = a[...]
        for i in range(0, a.shape[0], cs[0]):
            for j in range(0, a.shape[1], cs[1]):
                blk = whole[i : i + cs[0], j : j + cs[1]]
                done += 1
                bad += int(blk.min() != blk.max())
        i, j = (int(x) for x in rng.integers(0, a.shape[0] // cs[0], 2))
        w = a[i * cs[0] : (i + 1) * cs[0], j * cs[1] : (j + 1) * cs[1]]
        c = a.read_chunk((i, j))
        done += 2
        bad += int(w.min() != w.max()) + int(c.min() != c.max())
    a.close()
    return done, bad


def cached_chunk_reader(name: str, rewrites: int, count, out) -> None:
    """Copy every chunk with ``read_chunk`` (the cached reader: no zero-copy views, which
    would pin the arenas) over and over until the writer finished ``rewrites`` more rounds;
    every chunk must hold one value, and the values must follow the writer.
    Put (chunks checked, chunks with a mixture, distinct values seen) on ``out``."""
    a = sz.open(name, mode="r")
    grid = [
        (i, j) for i in range(a.shape[0] // a.chunks[0]) for j in range(a.shape[1] // a.chunks[1])
    ]
    bad = done = 0
    seen = set()
    start = count.value
    while count.value < start + rewrites or done < 10 * len(grid):
        for idx in grid:
            c = a.read_chunk(idx)
            done += 1
            bad += int(c.min() != c.max())
            seen.add(float(c[0, 0]))
    a.close()
    out.put((done, bad, len(seen)))


def numpy_views_outlive_close(name: str) -> list:
    """Take numpy views of chunks (both read paths), close and delete the array, then read
    the views: they must still hold the data (a dangling view would segfault here)."""
    a = sz.create(shape=(64, 64), chunks=(32, 32), dtype="f8", table_name=name)
    a[...] = 5.0
    fast = a.read_chunk((0, 0), copy=False)
    a2 = sz.open(name, mode="r")
    other = a2.read_chunk((1, 1), copy=False)
    a2.close()
    a.delete()
    import gc

    gc.collect()
    return [float(fast.sum()), float(other.sum())]


def same_size_rewriter(name: str, keys: int, size: int, stop, count) -> None:
    """Rewrite keys 0..keys-1 with ``size`` bytes each, one insert per session, round after
    round until stopped: every old record's room is recycled (the reuse epoch moves often)."""
    t = Table.attach(name)
    r = 0
    while not stop.is_set():
        r = r % 250 + 1
        for k in range(keys):
            t.insert(k, bytes([r]) * size)
        count.value += 1
    t.close()


def big_value_reader(name: str, key: object, n: int, started, out) -> None:
    """Copy key's (long) value ``n`` times; put (reads, reads that were not uniform)."""
    t = Table.attach(name, readonly=True)
    started.wait(60)
    bad = 0
    for _ in range(n):
        v = t.get(key)
        bad += v.count(v[:1]) != len(v)
    t.close()
    out.put((n, bad))


def reserve_and_stop(name: str, key: object, nbytes: int) -> None:
    """Reserve the record of key's new value, then stop (SIGSTOP) before copying: the
    parent kills this process there (a writer killed while it copies outside the lock)."""
    t = Table.attach(name)
    pk = t.prepare_key(key)
    with t.writer():
        room = t.reserve(pk, nbytes)
    assert room is not None
    room.buffer[:8] = b"partial!"
    os.kill(os.getpid(), signal.SIGSTOP)


def delete_and_reclaim(name: str, keys: list) -> None:
    """Delete ``keys`` and compact (another writer, while the parent holds a reservation)."""
    t = Table.attach(name)
    for k in keys:
        t.delete(k)
    t.reclaim()
    t.close()


def big_chunk_writer(name: str, parity: int, rounds: int, out) -> None:
    """Write this writer's half of the chunks (by parity), ``rounds`` times, each chunk one
    value per round (parity * 1000 + round); report how many copies ran outside the lock
    (into a record reserved while the other writer waited, or leased ahead)."""
    a = sz.open(name)
    backend = a.backend
    reserved = [0]
    orig = backend.reserve_chunk

    def counting(idx, nbytes):
        room = orig(idx, nbytes)
        reserved[0] += room is not None
        return room

    backend.reserve_chunk = counting
    leased = backend.leased_room

    def counting_leases(nbytes):  # a room reserved ahead: copied outside the lock too
        room = leased(nbytes)
        reserved[0] += room is not None
        return room

    backend.leased_room = counting_leases
    chunks = [c for c in np.ndindex(*a.cdata_shape) if sum(c) % 2 == parity]
    for r in range(rounds):
        for c in chunks:
            a.write_chunk(c, np.full(a.chunks, parity * 1000 + r, dtype=a.dtype))
    out.put((parity, reserved[0]))
    a.close()


def big_value_writer(name: str, parity: int, rounds: int, out) -> None:
    """Table.insert this writer's keys (``(parity, k)``), ``rounds`` times, each value 512
    KiB of one byte (parity * 100 + round); report how many copies ran outside the lock
    (into the record leased ahead while the other writer waited)."""
    from sharedzarr._table import _write

    t = Table.attach(name)
    reserved = [0]
    orig = _write.lease_for

    def counting(table, nbytes):
        room = orig(table, nbytes)
        reserved[0] += room is not None
        return room

    _write.lease_for = counting
    for r in range(rounds):
        for k in range(8):
            t.insert((parity, k), bytes([parity * 100 + r]) * (512 << 10))
    out.put((parity, reserved[0]))
    t.close()


def mixed_writer(name: str, seed: int, keys: int, stop, count) -> None:
    """Rewrite random keys with uniform values until stopped: mostly the same length (rooms
    recycled), sometimes another length or a delete (garbage for compaction), and now and
    then a reclaim(); count the writes."""
    import random

    rng = random.Random(seed)
    t = Table.attach(name)
    n = 0
    while not stop.is_set():
        k = rng.randrange(keys)
        roll = rng.random()
        if roll < 0.05:
            t.delete(k)
        elif roll < 0.06:
            t.reclaim()
        else:
            size = reuse_size(k) + (4096 if roll < 0.2 else 0)
            t.insert(k, bytes([rng.randrange(1, 250)]) * size)
        n += 1
    count.value = n
    t.close()


def uniform_reader(name: str, keys: int, stop, out) -> None:
    """Read random keys (copies and views) until stopped; put (reads, bad reads)."""
    import random

    rng = random.Random(0)
    t = Table.attach(name, readonly=True)
    reads = bad = 0
    while not stop.is_set():
        k = rng.randrange(keys)
        v = t.get(k, copy=bool(reads & 1))
        if v is not None:
            b = bytes(v)
            bad += b.count(b[:1]) != len(b)
        reads += 1
    t.close()
    out.put((reads, bad))


def big_chunk_writer_until(name: str, parity: int, stop, out) -> None:
    """Write this writer's half of the chunks (by parity) until stopped, skipping chunks
    a concurrent resize left outside the array; put the number of writes."""
    a = sz.open(name)
    n = 0
    while not stop.is_set():
        for c in [c for c in np.ndindex(*a.cdata_shape) if sum(c) % 2 == parity]:
            try:
                a.write_chunk(c, np.full(a.chunks, n % 250, dtype=a.dtype))
            except IndexError:
                pass  # the array shrank meanwhile
            n += 1
    out.put(n)
    a.close()


def lease_and_stop(name: str) -> None:
    """Write a big chunk as if another writer waited (so a lease is taken), fill the
    lease partly, then stop (SIGSTOP): the parent kills this process holding it."""
    from sharedzarr import _lock

    _lock.WriterLock.contended = lambda self: True  # type: ignore[method-assign]
    a = sz.open(name)
    a.write_chunk((0, 0), np.full(a.chunks, 5.0))
    lease = a.backend.table._lease
    assert lease is not None and lease.usable
    lease.buffer[:8] = b"partial!"
    os.kill(os.getpid(), signal.SIGSTOP)
