"""Arrays across real processes: pickling into pools, open by name, concurrent partial writes."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import _array_workers as AW
import numpy as np
import pytest

import sharedzarr as sz

CTX = mp.get_context("spawn")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def arr():
    a = sz.create(shape=(400, 300), chunks=(100, 100), dtype="float64", table_name="mp_arr")
    yield a
    a.delete()


def test_pool_workers_receive_by_pickle_and_read_write_disjoint_chunks(arr):
    data = np.arange(400 * 300, dtype="float64").reshape(400, 300)
    arr[...] = data
    assert len(pickle.dumps(arr)) < 1024
    with CTX.Pool(2) as pool:
        sums = pool.starmap(AW.read_block, [(arr, i) for i in range(4)])
        assert sums == [float(data[i * 100 : (i + 1) * 100].sum()) for i in range(4)]
        assert max(pool.map(AW.pickled_size, [arr, arr])) < 1024
        pool.starmap(AW.write_block, [(arr, i) for i in range(4)])
    for i in range(4):
        assert (arr[i * 100 : (i + 1) * 100] == i + 1).all()


def test_process_pool_executor(arr):
    arr[...] = 1.0
    with ProcessPoolExecutor(2, mp_context=CTX) as ex:
        assert list(ex.map(AW.read_block, [arr] * 4, range(4))) == [30000.0] * 4


def test_reader_started_with_python_c_opens_by_name(arr):
    arr[...] = 2.0
    code = (
        "import sharedzarr as sz, numpy as np; a = sz.open('mp_arr'); "
        "print(float(np.asarray(a).sum()), a.shape, a.dtype)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "240000.0"


def test_two_processes_partial_writes_same_chunk_lose_nothing():
    a = sz.create(shape=(20, 4), chunks=(20, 4), dtype="int32", table_name="mp_partial")
    try:
        ps = [CTX.Process(target=AW.partial_writes, args=("mp_partial", c, 5)) for c in (0, 1)]
        for p in ps:
            p.start()
        for p in ps:
            p.join(300)
        assert [p.exitcode for p in ps] == [0, 0]
        got = a[...]
        assert (got[:, 0] == 5).all() and (got[:, 1] == 5).all() and (got[:, 2:] == 0).all()
    finally:
        a.delete()


def test_protected_views_not_writeable_in_other_process():
    a = sz.create(
        shape=(10,), chunks=(10,), dtype="int64", table_name="mp_prot", access="protected"
    )
    try:
        a[...] = 7
        with CTX.Pool(1) as pool:
            assert pool.apply(AW.zero_copy_writeable, ("mp_prot",)) is False
            assert pool.apply(AW.checksum, ("mp_prot",)) == 70.0
    finally:
        a.delete()


def test_big_reads_use_two_copy_threads_and_match():
    from sharedzarr._array._base import _PARALLEL_BYTES

    data = np.random.default_rng(3).random((3000, 1500))  # 36 MB: above the threshold
    a = sz.create(shape=data.shape, chunks=(256, 256), dtype="float64", table_name="mp_big")
    try:
        a[...] = data
        assert data.nbytes >= _PARALLEL_BYTES
        out = np.empty_like(data)
        assert a.get_slice(out=out) is out
        assert np.array_equal(out, data)
        assert np.array_equal(a[7:2999, 3:1400], data[7:2999, 3:1400])
        with CTX.Pool(1) as pool:
            assert pool.apply(AW.checksum, ("mp_big",)) == pytest.approx(float(data.sum()))
    finally:
        a.delete()
