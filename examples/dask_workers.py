"""dask.distributed workers reading one shared array by name (a LocalCluster of processes).

The client creates a float64 array in shared memory.  ``da.from_array`` wraps it;
each task ships the array as a name (a few dozen bytes), and each worker process
attaches to the same shared memory and reads its chunks there: the data itself is
never pickled or sent.  The workers then write a result array back, chunk-aligned,
with no lock.
"""

from __future__ import annotations

import logging
import os
import pickle
import time

import dask.array as da
import numpy as np
from distributed import Client, LocalCluster

import sharedzarr as sz

SRC, DST = "demo_dask_src", "demo_dask_anomaly"


def main() -> None:
    """Create, compute on two worker processes, check, clean up."""
    shape, chunks = (4000, 2000), (500, 500)
    a = sz.create(shape, chunks, "float64", table_name=SRC, overwrite=True)
    out = sz.create(shape, chunks, "float64", table_name=DST, overwrite=True)
    try:
        data = np.random.default_rng(0).normal(10.0, 2.0, size=shape)
        a[:] = data
        print(
            f"client: {a.nbytes / 2**20:.0f} MiB in table {a.name!r}; a pickled handle is "
            f"{len(pickle.dumps(a))} bytes"
        )
        with (
            LocalCluster(
                processes=True,
                n_workers=2,
                threads_per_worker=2,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster) as client,
        ):
            x = da.from_array(a, chunks=a.chunks)
            t0 = time.perf_counter()
            mean, std = da.compute(x.mean(), x.std())
            took = time.perf_counter() - t0
            assert np.isclose(mean, data.mean()) and np.isclose(std, data.std())
            print(
                f"workers {sorted(client.run(os.getpid).values())}: "
                f"mean {mean:.4f}, std {std:.4f} over {x.npartitions} chunks "
                f"in {took * 1e3:.0f} ms"
            )
            da.store((x - mean) / std, out, lock=False)  # each worker writes whole chunks
        assert np.allclose(out[:], (data - mean) / std)
        print(
            f"workers wrote the standardised array into table {out.name!r} "
            f"({out.nchunks_initialized} chunks), values checked"
        )
    finally:
        a.delete()
        out.delete()
    print("done: tables deleted, /dev/shm clean")


if __name__ == "__main__":
    main()
