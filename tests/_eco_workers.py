"""Functions dask / distributed workers run in their own processes (must be importable)."""

from __future__ import annotations

import os

import numpy as np

import sharedzarr as sz


def chunk_sum(name: str, idx: tuple[int, ...]) -> tuple[int, float]:
    """Attach to array ``name`` by name; return (this pid, the sum of chunk ``idx``)."""
    with sz.open(name, mode="r") as a:
        return os.getpid(), float(a.read_chunk(idx, copy=False).sum())


def scale_chunk(src: str, dst: str, idx: tuple[int, ...], factor: float) -> int:
    """Write ``factor * src[chunk idx]`` into the same chunk of ``dst``; return this pid."""
    with sz.open(src, mode="r") as a, sz.open(dst) as b:
        b.write_chunk(idx, np.asarray(a.read_chunk(idx)) * factor)
    return os.getpid()


def owned_tables() -> list[str]:
    """Names of the tables this worker process owns (it should own none)."""
    from sharedzarr._table import _OWNED

    return list(_OWNED)
