"""Array functions run in spawned worker processes (importable by the children)."""

from __future__ import annotations

import numpy as np

import sharedzarr as sz


def read_block(a: sz.Array, i: int) -> float:
    """Sum chunk-row i of an array received by pickle."""
    r = a.chunks[0]
    return float(a[i * r : (i + 1) * r].sum())


def write_block(a: sz.Array, i: int) -> None:
    """Write chunk-row i (value i + 1) of an array received by pickle."""
    r = a.chunks[0]
    a[i * r : (i + 1) * r] = i + 1


def partial_writes(name: str, col: int, n: int) -> None:
    """Write column `col` of every row of one chunk, one element at a time, n rounds."""
    a = sz.open(name)
    for rnd in range(n):
        for row in range(a.shape[0]):
            a[row, col] = rnd + 1
    a.close()


def pickled_size(a: sz.Array) -> int:
    """How big the array's pickle is in the worker."""
    import pickle

    return len(pickle.dumps(a))


def zero_copy_writeable(name: str) -> bool:
    """Whether a zero-copy chunk view obtained in this process is writeable."""
    a = sz.open(name)
    v = a.read_chunk((0,) * a.ndim, copy=False)
    w = bool(v.flags.writeable)
    del v
    a.close()
    return w


def checksum(name: str) -> float:
    """Open by name and return the sum of the whole array."""
    with sz.open(name, mode="r") as a:
        return float(np.asarray(a).sum())


def rewrite_chunks(name: str, chunks: list, data, barrier) -> None:
    """Rewrite ``chunks`` of the array with ``data`` in one atomic block, starting together
    with the other worker, then exit.  The records the block replaced are garbage that no
    handle keeps a room in (an atomic block recycles nothing: a rollback may restore them)."""
    a = sz.open(name)
    barrier.wait(60)
    with a.atomic():
        for idx in chunks:
            a.write_chunk(
                idx, data[idx[0] * 256 : idx[0] * 256 + 256, idx[1] * 256 : idx[1] * 256 + 256]
            )
    a.close()
