"""A damaged index (no empty slot, though the header counts room) is a CorruptTableError,
never an insert spinning forever under the writer lock.  The writer runs in a real
subprocess with a timeout, so a hang fails the test instead of stalling it.  And the
vectorised index build places keys exactly as inserting them one by one does."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

from sharedzarr import Table
from sharedzarr import _layout as L
from sharedzarr._index import build_slots, place_slots, plan_slots

CHILD = """
import sys
from sharedzarr import Table
from sharedzarr.errors import CorruptTableError
t = Table.attach(sys.argv[1])
try:
    t.insert("a brand new key", b"x")
except CorruptTableError as e:
    print("CORRUPT", e)
"""


def test_an_index_without_empty_slots_is_corrupt_not_a_hang(cleanup) -> None:
    name = f"idx-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    t = Table.create(name, persistent=True)
    t.insert("k", b"v")
    gen = t._idx_gen
    path = f"/dev/shm/sz.{name}.idx.{gen}"
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        slots = np.frombuffer(mm, np.uint64, offset=L.INDEX_HEADER).reshape(-1, 2)
        empty = slots[:, 0] == 0
        slots[empty, 0] = 0xDEAD  # every empty slot now looks used (a tombstone)
        slots[empty, 1] = L.TOMBSTONE
        del slots, empty
    r = subprocess.run(
        [sys.executable, "-c", CHILD, name], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("CORRUPT") and "no empty slot" in r.stdout, r.stdout
    assert t.get("k") == b"v"  # reads still work
    t.delete_table()
    assert not [f for f in os.listdir("/dev/shm") if f.startswith(f"sz.{name}.")]


def test_a_key_deleted_and_inserted_again_takes_back_its_tombstone() -> None:
    """Churn of the same keys (a cache, chunks dropped by a shrink and written again) uses
    no new slots: no tombstones pile up on the probe paths, no index rebuild."""
    t = Table.create()
    try:
        for k in range(20):
            t.insert(k, b"v")
        used, gen = t._H[L.H_USED_SLOTS], t._H[L.H_GEN]
        for rep in range(500):
            t.delete(rep % 20)
            assert t.get(rep % 20) is None
            t.insert(rep % 20, b"w%d" % rep)
            t.insert_many([(rep % 20, b"x"), ((rep + 1) % 20, b"y%d" % rep)])
        assert t._H[L.H_USED_SLOTS] == used and t._H[L.H_GEN] == gen
        assert len(t) == 20 and t.get(499 % 20) == b"x" and t.get(0) == b"y499"
        t.delete("absent")
        t.insert("new", b"n")  # a new key still fills an empty slot, counted
        assert t._H[L.H_USED_SLOTS] == used + 1 and t.get("new") == b"n"
    finally:
        t.delete_table()


def _insert_one_by_one(rows: np.ndarray, cap: int) -> np.ndarray:
    """Linear probing, one row after another in order of home slot (stable): the table
    build_slots must equal."""
    out = np.zeros((cap, 2), dtype=np.uint64)
    order = np.argsort(rows[:, 0] & np.uint64(cap - 1), kind="stable")
    for h, ref in rows[order].tolist():
        j = h & (cap - 1)
        while out[j, 0]:
            j = (j + 1) & (cap - 1)
        out[j] = (h, ref)
    return out


@pytest.mark.parametrize("n, cap, seed", [(0, 64, 0), (1, 64, 1), (40, 64, 2), (500, 1024, 3)])
def test_the_vectorised_index_build_equals_inserting_one_by_one(n: int, cap: int, seed: int):
    """Plan and place (a bulk insert runs them apart, the references coming in between)
    build the table that inserting the rows one by one in order of home slot builds,
    clusters wrapping past the end included."""
    rng = np.random.default_rng(seed)
    rows = np.empty((n, 2), dtype=np.uint64)
    rows[:, 0] = rng.integers(1, 2**63, n, dtype=np.uint64)
    rows[n // 2 :, 0] |= np.uint64(cap - 1)  # half of them homed at the last slot: a wrap
    rows[:, 1] = np.arange(n, dtype=np.uint64) + 2
    want = _insert_one_by_one(rows, cap)
    np.testing.assert_array_equal(build_slots(rows, cap), want)
    plan = plan_slots(rows[:, 0].copy(), cap)  # from the hashes alone
    out = np.zeros((cap, 2), dtype=np.uint64)
    place_slots(rows, plan, out)
    np.testing.assert_array_equal(out, want)
