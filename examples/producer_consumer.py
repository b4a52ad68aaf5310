"""Producer/consumer over one shared array: the main example (`make demo`).

The producer creates a float64 array in shared memory and fills it chunk by chunk;
two consumer processes, started with the spawn method and knowing only the table
name, attach and compute statistics of the rows they are given, reading the
chunks straight from shared memory (nothing is pickled but the name).
"""

from __future__ import annotations

import multiprocessing as mp
import time

import numpy as np

import sharedzarr as sz

NAME = "demo_producer_consumer"


def consume(name: str, rows: tuple[int, int]) -> tuple[int, float, float]:
    """Attach by name and summarise rows [r0, r1)."""
    with sz.open(name, mode="r") as a:
        block = a[rows[0] : rows[1]]
        return rows[0], float(block.mean()), float(block.max())


def main() -> None:
    """Produce, consume in two processes, report, clean up."""
    shape, chunks = (2000, 1000), (250, 250)
    a = sz.create(shape=shape, chunks=chunks, dtype="float64", table_name=NAME, overwrite=True)
    try:
        rng = np.random.default_rng(42)
        expected = np.empty(shape)
        t0 = time.perf_counter()
        for r in range(0, shape[0], chunks[0]):
            block = rng.random((chunks[0], shape[1])) + r
            a.set_slice(block, start=(r, 0), stop=(r + chunks[0], shape[1]))
            expected[r : r + chunks[0]] = block
        wrote = time.perf_counter() - t0
        print(
            f"producer: wrote {a.nbytes / 2**20:.1f} MiB in {a.nchunks_initialized} chunks "
            f"to table {a.name!r} in {wrote * 1e3:.0f} ms"
        )

        ctx = mp.get_context("spawn")
        halves = [(0, shape[0] // 2), (shape[0] // 2, shape[0])]
        with ctx.Pool(2) as pool:
            results = pool.starmap(consume, [(NAME, h) for h in halves])
        for (_r0, mean, mx), (h0, h1) in zip(results, halves, strict=True):
            assert np.isclose(mean, expected[h0:h1].mean()) and mx == expected[h0:h1].max()
            print(f"consumer: rows {h0}-{h1}: mean {mean:.3f}, max {mx:.3f} (read by name)")
        info = sz.storage.shm.table_info(NAME)
        print(
            f"table {info.name}: {info.size} objects, {info.memory / 2**20:.1f} MiB of "
            f"/dev/shm in {info.segments} segments, owner pid {info.owner}"
        )
    finally:
        a.delete()
    print("done: table deleted, /dev/shm clean")


if __name__ == "__main__":
    main()
