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
    "chunk_writes",
    "concurrent_read",
    "copy_runs",
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
