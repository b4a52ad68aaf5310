"""The timed loops, identical for every peer and every process.

Each function takes a :class:`benchmarks.peers.Reader` (already attached) and returns seconds:
one number per timed repetition, after ``warmup`` untimed repetitions. Per-operation functions
(windows, chunks, lookups) return the mean time of one operation within each repetition. The
garbage collector is disabled while timing, as :mod:`timeit` does.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.config import Dataset
from benchmarks.peers import Reader

__all__ = [
    "attach",
    "chunk_reads",
    "chunk_write_session",
    "chunk_writes",
    "concurrent_read",
    "concurrent_write",
    "copy_runs",
    "loader_batches",
    "loader_rows",
    "lock_handoff",
    "lookups",
    "time_reps",
    "whole_read",
    "windows",
]

Window = tuple[int, int, int, int]
ChunkIdx = tuple[int, int]


def time_reps(fn: Callable[[], object], reps: int, warmup: int) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then ``reps`` times timed.

    Parameters
    ----------
    fn : callable
        The operation; called without arguments.
    reps : int
        Timed repetitions.
    warmup : int
        Untimed repetitions before them.

    Returns
    -------
    list of float
        Seconds per repetition.
    """
    for _ in range(warmup):
        fn()
    times = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def _prefaulted(ds: Dataset) -> np.ndarray:
    """A destination array whose pages are already mapped, so no read pays the page faults."""
    out = np.empty(ds.shape, ds.dtype)
    out.fill(0)
    return out


def whole_read(reader: Reader, ds: Dataset, reps: int, warmup: int) -> list[float]:
    """Time reading the whole array into a preallocated array.

    Parameters
    ----------
    reader : Reader
        Attached reader.
    ds : Dataset
        The array's description.
    reps, warmup : int
        See :func:`time_reps`.

    Returns
    -------
    list of float
        Seconds per whole-array read.
    """
    out = _prefaulted(ds)
    return time_reps(lambda: reader.read_whole(out), reps, warmup)


def windows(reader: Reader, wins: Sequence[Window], reps: int, warmup: int) -> list[float]:
    """Time reading each window ``(r0, r1, c0, c1)`` of ``wins`` into a new array.

    Parameters
    ----------
    reader : Reader
        Attached reader.
    wins : sequence of tuple
        Windows as ``(r0, r1, c0, c1)``.
    reps, warmup : int
        See :func:`time_reps`.

    Returns
    -------
    list of float
        Mean seconds per window, one per repetition.
    """
    read = reader.read_window

    def run() -> None:
        for r0, r1, c0, c1 in wins:
            read(r0, r1, c0, c1)

    return [t / len(wins) for t in time_reps(run, reps, warmup)]


def chunk_reads(
    reader: Reader, order: Sequence[ChunkIdx], reps: int, warmup: int, view: bool = False
) -> list[float]:
    """Time reading the chunks in ``order`` one by one.

    Parameters
    ----------
    reader : Reader
        Attached reader.
    order : sequence of tuple
        Chunk indices to read, in this order.
    reps, warmup : int
        See :func:`time_reps`.
    view : bool
        Time the zero-copy read (:meth:`Reader.view_chunk`) instead of the copying one.

    Returns
    -------
    list of float
        Mean seconds per chunk read, one per repetition.
    """
    read = reader.view_chunk if view else reader.read_chunk

    def run() -> None:
        for idx in order:
            read(idx)

    return [t / len(order) for t in time_reps(run, reps, warmup)]


def chunk_writes(
    reader: Reader, order: Sequence[ChunkIdx], ds: Dataset, reps: int, warmup: int
) -> list[float]:
    """Time overwriting the chunks in ``order`` one by one with random data.

    Parameters
    ----------
    reader : Reader
        Attached reader.
    order : sequence of tuple
        Chunk indices to write, in this order.
    ds : Dataset
        The array's description (chunk shape and dtype).
    reps, warmup : int
        See :func:`time_reps`.

    Returns
    -------
    list of float
        Mean seconds per chunk write, one per repetition.
    """
    rng = np.random.default_rng(1)
    payloads = [rng.random(ds.chunks).astype(ds.dtype) for _ in range(16)]
    write = reader.write_chunk

    def run() -> None:
        for n, idx in enumerate(order):
            write(idx, payloads[n & 15])

    return [t / len(order) for t in time_reps(run, reps, warmup)]


def _payloads(ds: Dataset, n: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.random(ds.chunks).astype(ds.dtype) for _ in range(n)]


def chunk_write_session(
    reader: Reader,
    order: Sequence[ChunkIdx],
    ds: Dataset,
    reps: int,
    warmup: int,
    one_call: bool = False,
) -> list[float]:
    """Time overwriting the chunks in ``order`` in one batch (:meth:`Reader.write_chunks`: one
    writer session or transaction; ``one_call``: :meth:`Reader.write_chunks_call`).

    Parameters
    ----------
    reader : Reader
        Attached reader.
    order : sequence of tuple
        Chunk indices to write, in this order.
    ds : Dataset
        The array's description.
    reps, warmup : int
        See :func:`time_reps`.
    one_call : bool
        Write them with one call where the peer has one.

    Returns
    -------
    list of float
        Mean seconds per chunk, one per repetition.
    """
    payloads = _payloads(ds)
    order = list(order)
    write = reader.write_chunks_call if one_call else reader.write_chunks
    return [t / len(order) for t in time_reps(lambda: write(order, payloads), reps, warmup)]


def concurrent_write(
    reader: Reader, ds: Dataset, chunks: Sequence[ChunkIdx], seconds: float, barrier: Any = None
) -> tuple[float, float, int]:
    """Overwrite ``chunks`` one by one (``write_chunk``), round and round, for ``seconds``,
    starting together with the other writers.

    The run is timed, not sized: a fast peer writes long enough that the few hundred µs by
    which two processes leave a barrier apart do not count, a slow one still finishes.

    Parameters
    ----------
    reader : Reader
        Attached reader.
    ds : Dataset
        The array's description.
    chunks : sequence of tuple
        This writer's chunks (disjoint from the other writers').
    seconds : float
        How long to write (the last chunk started before the end is finished).
    barrier : multiprocessing.Barrier, optional
        Shared by all writers of the measurement; None for a single writer.

    Returns
    -------
    tuple
        ``time.perf_counter()`` at start and end, and the bytes written.
    """
    payloads = _payloads(ds, 4)
    write = reader.write_chunk
    clock = time.perf_counter
    for n, idx in enumerate(chunks[:4]):  # warm-up
        write(idx, payloads[n & 3])
    if barrier is not None:
        barrier.wait(timeout=120)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    count = 0
    try:
        t0 = clock()
        end = t0 + seconds
        t1 = t0
        while t1 < end:
            for n, idx in enumerate(chunks):
                write(idx, payloads[n & 3])
                count += 1
                t1 = clock()
                if t1 >= end:
                    break
    finally:
        if gc_was_enabled:
            gc.enable()
    return (t0, t1, count * ds.chunk_nbytes)


def _wait_for(stamps: np.ndarray, slot: int, value: int, deadline: float, pause: float) -> None:
    """Wait until ``stamps[slot] >= value`` (``pause`` seconds between looks; 0 spins)."""
    while stamps[slot] < value:
        if pause:
            time.sleep(pause)
        if time.monotonic() > deadline:
            raise TimeoutError(f"lock hand-off: the other writer stopped (slot {slot} < {value})")


def lock_handoff(
    reader: Any, role: str, n: int, seed: int = 0, barrier: Any = None
) -> list[float] | None:
    """One side of ``n`` writer-lock hand-offs between two processes (workload j).

    Writer A takes the lock, waits until B is about to ask for it, keeps it 0.2–2 ms more (B
    is then blocked in the lock), stamps ``perf_counter_ns()`` and leaves the ``with``. B stamps
    ``perf_counter_ns()`` as the first thing it does holding the lock, and leaves. The next
    round starts when A has seen B leave.

    Parameters
    ----------
    reader : benchmarks.writers.HandoffReader
        The lock and the stamp block (zeroed by the parent before each repetition).
    role : str
        ``"A"`` (holds, then releases) or ``"B"`` (waits for the lock).
    n : int
        Hand-offs.
    seed : int
        Seed of A's random hold times.
    barrier : multiprocessing.Barrier, optional
        Shared with the other writer: both start together.

    Returns
    -------
    list of float or None
        B: the ``n`` hand-off latencies in µs (acquire stamp minus release stamp); A: None.
    """
    from benchmarks.writers import STAMP_SLOTS

    s, hold = reader.stamps, reader.hold
    a_holds, b_ready, b_done = 0, 1, 2
    rel, acq = STAMP_SLOTS, STAMP_SLOTS + n
    holds = np.random.default_rng(seed).uniform(0.2e-3, 2e-3, n).tolist()
    if barrier is not None:
        barrier.wait(timeout=120)
    deadline = time.monotonic() + 60 + n * 0.05
    if role == "A":
        for i in range(n):
            with hold():
                s[a_holds] = i + 1
                _wait_for(s, b_ready, i + 1, deadline, 0)
                time.sleep(holds[i])
                s[rel + i] = time.perf_counter_ns()
            _wait_for(s, b_done, i + 1, deadline, 20e-6)
        return None
    for i in range(n):
        _wait_for(s, a_holds, i + 1, deadline, 0)
        s[b_ready] = i + 1
        with hold():
            t = time.perf_counter_ns()
        s[acq + i] = t
        s[b_done] = i + 1
    return ((s[acq : acq + n] - s[rel : rel + n]) / 1e3).tolist()


def loader_batches(
    reader: Any, nrows: int, batch_rows: int, n: int, seed: int, barrier: Any = None
) -> tuple[float, float]:
    """Read ``n`` random batches of ``batch_rows`` rows (workload l), starting together with
    the other reader.

    Parameters
    ----------
    reader : benchmarks.loader.LoaderReader
        Attached reader.
    nrows : int
        Rows in the array.
    batch_rows : int
        Rows per batch (drawn with replacement, in random order).
    n : int
        Batches.
    seed : int
        Seed of the batches (differs per reader and repetition).
    barrier : multiprocessing.Barrier, optional
        Shared with the other reader.

    Returns
    -------
    tuple of float
        ``time.perf_counter()`` at start and end.
    """
    rng = np.random.default_rng(seed)
    batches = [rng.integers(0, nrows, batch_rows) for _ in range(n)]
    batch = reader.batch
    for idx in batches[:2]:  # warm-up
        batch(idx)
    if barrier is not None:
        barrier.wait(timeout=120)
    t0 = time.perf_counter()
    for idx in batches:
        batch(idx)
    return (t0, time.perf_counter())


def loader_rows(
    reader: Any, nrows: int, n: int, seed: int, barrier: Any = None
) -> tuple[float, float]:
    """Read ``n`` random single rows (workload l), starting together with the other reader.

    Parameters
    ----------
    reader : benchmarks.loader.LoaderReader
        Attached reader.
    nrows : int
        Rows in the array.
    n : int
        Rows to read.
    seed : int
        Seed of the row numbers.
    barrier : multiprocessing.Barrier, optional
        Shared with the other reader.

    Returns
    -------
    tuple of float
        ``time.perf_counter()`` at start and end.
    """
    rows = np.random.default_rng(seed).integers(0, nrows, n).tolist()
    row = reader.row
    for i in rows[:4]:  # warm-up
        row(i)
    if barrier is not None:
        barrier.wait(timeout=120)
    t0 = time.perf_counter()
    for i in rows:
        row(i)
    return (t0, time.perf_counter())


def attach(
    _reader: Reader | None, reader_cls: Any, handle: Any, reps: int, warmup: int
) -> list[float]:
    """Time attaching to a store by name (closing is not timed).

    Parameters
    ----------
    _reader : Reader or None
        Unused (every workload takes the attached reader first).
    reader_cls : type
        A :class:`Reader` subclass with an ``attach(handle)`` class method.
    handle : object
        Its handle.
    reps, warmup : int
        See :func:`time_reps`.

    Returns
    -------
    list of float
        Seconds per attach.
    """
    times = []
    for n in range(warmup + reps):
        t0 = time.perf_counter()
        r = reader_cls.attach(handle)
        dt = time.perf_counter() - t0
        r.close()
        if n >= warmup:
            times.append(dt)
    return times


def concurrent_read(
    reader: Reader, ds: Dataset, n: int, barrier: Any = None
) -> tuple[float, float]:
    """Read the whole array ``n`` times, starting together with the other readers.

    Parameters
    ----------
    reader : Reader
        Attached reader.
    ds : Dataset
        The array's description.
    n : int
        Whole-array reads.
    barrier : multiprocessing.Barrier, optional
        Shared by all readers of the measurement; None for a single reader.

    Returns
    -------
    tuple of float
        ``time.perf_counter()`` at start and end (CLOCK_MONOTONIC, comparable across
        processes on Linux).
    """
    out = _prefaulted(ds)
    reader.read_whole(out)  # warm-up
    if barrier is not None:
        barrier.wait(timeout=120)
    t0 = time.perf_counter()
    for _ in range(n):
        reader.read_whole(out)
    return (t0, time.perf_counter())


def lookups(reader: Reader, op: str, keys: Sequence[Any], reps: int, warmup: int) -> list[float]:
    """Time looking up each key of ``keys`` with operation ``op`` of the reader.

    Parameters
    ----------
    reader : Reader
        Attached table reader.
    op : str
        Name passed to :meth:`Reader.lookup_fn`.
    keys : sequence
        Present keys, in random order.
    reps, warmup : int
        See :func:`time_reps`.

    Returns
    -------
    list of float
        Mean seconds per lookup, one per repetition.
    """
    fn = reader.lookup_fn(op)

    def run() -> None:
        for k in keys:
            fn(k)

    return [t / len(keys) for t in time_reps(run, reps, warmup)]


def copy_runs(
    shape: tuple[int, int], runs: Sequence[int], reps: int, warmup: int
) -> list[list[float]]:
    """Time copying a float64 array of ``shape`` as one copy and in runs of ``runs`` bytes.

    The runs go into a destination whose rows are padded by 64 bytes, so numpy calls
    ``memcpy`` once per run, as it does when it gathers the rows of chunks; a run length of 0
    means one ``np.copyto`` of the whole array. The variants take turns, repetition by
    repetition.

    Parameters
    ----------
    shape : tuple of int
        Array shape (float64).
    runs : sequence of int
        Run lengths in bytes (each divides a row; 0 for one copy).
    reps, warmup : int
        See :func:`time_reps`.

    Returns
    -------
    list of list of float
        GB/s per repetition, one list per entry of ``runs``.
    """
    src = np.random.default_rng(0).random(shape)
    dst = np.ones(2 * src.size)  # room for the padded layouts (runs of >= 64 B), pages touched
    copies: list[Callable[[], object]] = []
    for n in runs:
        if n == 0:
            d = dst[: src.size].reshape(shape)
            copies.append(lambda d=d: np.copyto(d, src))
            continue
        k = n // 8
        rows = src.size // k
        d = dst[: rows * (k + 8)].reshape(rows, k + 8)[:, :k]
        s = src.reshape(rows, k)
        copies.append(lambda d=d, s=s: np.copyto(d, s))
    out: list[list[float]] = [[] for _ in runs]
    for rep in range(warmup + reps):
        for m, fn in enumerate(copies):
            t = time_reps(fn, 1, 0)[0]
            if rep >= warmup:
                out[m].append(src.nbytes / 1e9 / t)
    return out
