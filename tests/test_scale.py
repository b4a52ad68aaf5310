"""Scale: a table with 1,000,000 entries of 1 KiB read from a sibling process."""

from __future__ import annotations

import multiprocessing as mp
import os

import _workers as W
import pytest

from sharedzarr._table import Table

CTX = mp.get_context("spawn")


def _fill_and_read(n: int) -> None:
    t = Table.create()
    try:
        with t.writer():
            for i in range(n):
                t.insert(i, i.to_bytes(8, "little") * 128)
        assert len(t) == n
        with CTX.Pool(1) as pool:
            assert pool.apply(W.read_all_million, (t.name, n)) == n
        info = t.info()
        assert info["memory"] < 1.5 * n * 1024 + (64 << 20)
        maps = sum(1 for _ in open("/proc/self/maps"))
        assert maps < 10_000
    finally:
        t.delete_table()


def test_100k_entries_sibling_reads_all():
    _fill_and_read(100_000)


@pytest.mark.stress
@pytest.mark.timeout(3600)
def test_million_entries_sibling_reads_all():
    _fill_and_read(int(os.environ.get("SHAREDZARR_MILLION", "1000000")))
