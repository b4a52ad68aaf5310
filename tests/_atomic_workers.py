"""Child-process bodies for tests/test_atomicity.py (importable by spawned processes)."""

from __future__ import annotations

import time

import numpy as np

import sharedzarr as sz


def rewrite_uniform(name: str, seconds: float, ready, out, how: str = "slice") -> None:
    """Rewrite the whole array with one value per write, back to back (``a[...] = k``, or
    ``write_chunks`` of every chunk when ``how`` is "chunks")."""
    a = sz.open(name)
    grid = [tuple(int(i) for i in idx) for idx in np.ndindex(*a.cdata_shape)]
    ready.set()
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        k += 1
        if how == "chunks":
            a.write_chunks((idx, k) for idx in grid)
        else:
            a[...] = k
    out.put(k)
    a.close()


def _read_for(name: str, seconds: float) -> tuple[int, int]:
    """Read the whole array again and again; return (reads, reads that mix two writes)."""
    a = sz.open(name)
    end = time.monotonic() + seconds
    reads = mixed = 0
    while time.monotonic() < end:
        v = a[...]
        reads += 1
        mixed += int(v.min() != v.max())
    a.close()
    return reads, mixed


def read_uniform(name: str, seconds: float, out) -> None:
    """Read the whole array again and again; count reads that mix two writes."""
    out.put(_read_for(name, seconds))


def read_counting_waits(name: str, seconds: float, out) -> None:
    """Read the whole array again and again, recording every wait for a writer's open
    operation and whether this reader had asked the writer to pause (its stamp in the
    header) before that wait began."""
    from sharedzarr import _layout as L
    from sharedzarr._table import _read

    waits: list[bool] = []
    wait = _read.ReadMixin._wait_operation

    def recorded(self, H, s):
        waits.append(H[L.H_READER_WAIT] != 0)
        return wait(self, H, s)

    _read.ReadMixin._wait_operation = recorded
    reads, mixed = _read_for(name, seconds)
    out.put((reads, mixed, len(waits), waits.count(False)))


def append_frames(name: str, frames: int, ready) -> None:
    """Append frames whose every value is the frame number + 1 (never the fill value 0)."""
    a = sz.open(name)
    ready.wait(30)
    shape = a.shape[1:]
    for i in range(frames):
        a.append(np.full((1, *shape), i + 1, dtype=a.dtype))
    a.close()


def poll_newest(name: str, frames: int, out) -> None:
    """A consumer that never calls refresh(): read the newest frame as the array grows."""
    a = sz.open(name)
    seen = bad = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        n = len(a)
        if n:
            frame = a[n - 1]
            seen += 1
            if not (frame == n).all():
                bad += 1
        if n >= frames:
            break
    out.put((seen, bad, len(a)))
    a.close()


def resize_to(name: str, shape: tuple[int, ...], attrs: dict) -> None:
    """Resize the array and change its attributes from another process."""
    a = sz.open(name)
    a.resize(shape)
    a.attrs.update(attrs)
    a.close()


def stop_mid_operation(name: str, ready) -> None:
    """Open a write operation and stop (SIGSTOP) inside it, as a writer in a debugger."""
    import os
    import signal

    a = sz.open(name)
    with a.backend.table.writer():
        ready.set()
        os.kill(os.getpid(), signal.SIGSTOP)


def read_counting_clock(name: str, reads: int, out) -> None:
    """Read the whole array ``reads`` times; report, per read, how many times the wait for
    an open operation looked at its clock (a fake one: a quarter second a look)."""
    from sharedzarr._table import _read

    looks = [0]
    now = [0.0]

    def clock() -> float:
        looks[0] += 1
        now[0] += 0.25
        return now[0]

    _read._clock = clock
    a = sz.open(name)
    per_read = []
    for _ in range(reads):
        looks[0] = 0
        v = a[...]
        assert (v == 1.0).all()
        per_read.append(looks[0])
    out.put(per_read)
    a.close()


def atomic_rewrites(name: str, ready) -> None:
    """Rewrite the whole array in ``with a.atomic():`` blocks, one value per block (also in
    ``attrs["v"]``, and in a chunk written last), until killed.  ``ready`` is set once the
    first block is done: every kill then comes after at least one block, however slow the
    machine (a start-up slowed by other work would otherwise be killed before its first)."""
    a = sz.open(name)
    k = int(a.attrs.get("v", 0))
    while True:
        k += 1
        with a.atomic():
            a[...] = k
            a.attrs["v"] = k
            a.write_chunk((0, 0), np.full(a.chunks, k, dtype=a.dtype))
        if not ready.is_set():
            ready.set()
