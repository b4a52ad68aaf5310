"""dask (threaded, processes, distributed) and xarray over shared-memory arrays and stores."""

from __future__ import annotations

import logging
import os
import pickle
import secrets

import numpy as np
import pytest

import sharedzarr as sz
from sharedzarr.storage.shm import table_exists

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")


def _name(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(4)}"


@pytest.fixture
def shared(cleanup: list[str]) -> tuple[sz.Array, np.ndarray]:
    name = _name("dask")
    cleanup.append(name)
    data = np.random.default_rng(2).normal(size=(300, 200))
    a = sz.create(data.shape, (100, 50), "float64", table_name=name)
    a[:] = data
    return a, data


def test_pickled_array_is_a_small_handle(shared: tuple[sz.Array, np.ndarray]) -> None:
    a, _ = shared
    assert a.nbytes == 480_000
    assert len(pickle.dumps(a)) < 1024


def test_dask_token_changes_after_a_write(shared: tuple[sz.Array, np.ndarray]) -> None:
    from dask.base import tokenize

    a, data = shared
    t0 = tokenize(a)
    assert tokenize(a) == t0 == tokenize(pickle.loads(pickle.dumps(a)))
    x0 = da.from_array(a, chunks=a.chunks)
    a[0, 0] = 1e6
    assert tokenize(a) != t0
    x1 = da.from_array(a, chunks=a.chunks)
    assert x1.name != x0.name  # a new graph: dask cannot serve the old cached result
    assert float(x1.max().compute(scheduler="threads")) == 1e6


def test_dask_threaded_scheduler(shared: tuple[sz.Array, np.ndarray]) -> None:
    a, data = shared
    x = da.from_array(a, chunks=a.chunks)
    assert x.chunks == ((100,) * 3, (50,) * 4)
    np.testing.assert_allclose(x.mean(axis=0).compute(scheduler="threads"), data.mean(axis=0))


def test_dask_processes_scheduler(shared: tuple[sz.Array, np.ndarray], cleanup: list[str]) -> None:
    a, data = shared
    out = sz.create(a.shape, a.chunks, "float64", table_name=_name("procout"))
    cleanup.append(out.name)
    x = da.from_array(a, chunks=a.chunks)
    total = x.sum().compute(scheduler="processes", num_workers=2)
    np.testing.assert_allclose(total, data.sum())
    # the worker processes write the result back, chunk-aligned, by name
    da.store(2 * x + 1, out, lock=False, scheduler="processes", num_workers=2)
    np.testing.assert_allclose(out[:], 2 * data + 1)


def test_distributed_local_cluster(shared: tuple[sz.Array, np.ndarray], cleanup: list[str]) -> None:
    distributed = pytest.importorskip("distributed")
    import _eco_workers as W

    a, data = shared
    out = sz.create(a.shape, a.chunks, "float64", table_name=_name("distout"))
    out2 = sz.create(a.shape, a.chunks, "float64", table_name=_name("distout2"))
    cleanup += [out.name, out2.name]
    with (
        distributed.LocalCluster(
            processes=True,
            n_workers=2,
            threads_per_worker=1,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        workers = set(client.run(os.getpid).values())
        assert len(workers) == 2 and os.getpid() not in workers
        x = da.from_array(a, chunks=a.chunks)
        # a reduction computed by the workers, each attaching to the table by name
        np.testing.assert_allclose(x.sum(axis=1).compute(), data.sum(axis=1))
        idxs = a.list_chunks()
        sums = client.gather(client.map(W.chunk_sum, [a.name] * len(idxs), idxs))
        assert {pid for pid, _ in sums} <= workers
        np.testing.assert_allclose(sum(s for _, s in sums), data.sum())
        # results written back chunk-aligned from the workers
        da.store(x - x.mean(), out, lock=False)
        pids = client.gather(
            client.map(
                W.scale_chunk,
                [a.name] * len(idxs),
                [out2.name] * len(idxs),
                idxs,
                [3.0] * len(idxs),
            )
        )
        assert set(pids) <= workers
        # attaching does not make a worker the owner: the tables stay ours
        assert all(not owned for owned in client.run(W.owned_tables).values())
    np.testing.assert_allclose(out[:], data - data.mean())
    np.testing.assert_allclose(out2[:], 3 * data)
    assert table_exists(a.name)  # the workers' exit did not take the tables with them


# ----------------------------------------------------------------------------- xarray


def test_xarray_roundtrip_through_shared_memory_store(cleanup: list[str]) -> None:
    xr = pytest.importorskip("xarray")
    pytest.importorskip("zarr")
    from sharedzarr.zarr_store import SharedMemoryStore

    rng = np.random.default_rng(3)
    ds = xr.Dataset(
        {
            "temperature": (("time", "x"), rng.normal(size=(6, 4)), {"units": "K"}),
            "count": (("x",), np.arange(4, dtype="int32")),
        },
        coords={
            "time": np.arange(6, dtype="int64"),
            "x": ("x", [10.0, 20.0, 30.0, 40.0], {"long_name": "position"}),
        },
        attrs={"title": "shared", "version": 2},
    )
    store = SharedMemoryStore.create(_name("xr"))
    cleanup.append(store.table_name)
    ds.to_zarr(store, zarr_format=3, consolidated=False)
    back = xr.open_zarr(SharedMemoryStore(store.table_name), consolidated=False)
    assert back.attrs == {"title": "shared", "version": 2}
    assert back["temperature"].attrs == {"units": "K"}
    xr.testing.assert_identical(back.load(), ds)
    # appending along time from another handle is visible to a fresh open
    more = ds.isel(time=slice(0, 2)).assign_coords(time=[6, 7])
    more[["temperature"]].to_zarr(
        SharedMemoryStore(store.table_name), append_dim="time", consolidated=False
    )
    again = xr.open_zarr(SharedMemoryStore(store.table_name), consolidated=False)
    assert again.sizes["time"] == 8
    np.testing.assert_array_equal(again["time"].values, np.arange(8))
