"""``with a.atomic():`` and ``Table.writer(atomic=True)``: a block that raises is undone
whole (chunks, shape, attributes; keys, index growth, deletes), what it allocated is given
back, and other processes see the old state.  The full-/dev/shm case runs with a small
tmpfs in a private mount namespace."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import subprocess
import sys
import uuid

import _atomic_workers as AW
import _small_shm
import numpy as np
import pytest
from _crash import kill_while_running

import sharedzarr as sz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Boom(Exception):
    pass


def _shm_bytes(name: str) -> int:
    return sum(
        os.stat(f"/dev/shm/{f}").st_blocks * 512
        for f in os.listdir("/dev/shm")
        if f.startswith(f"sz.{name}.")
    )


def _in_other_process(name: str) -> str:
    code = (
        "import sys, json, numpy as np, sharedzarr as sz\n"
        f"a = sz.open({name!r})\n"
        "print(json.dumps([list(a.shape), float(np.asarray(a).sum()), dict(a.attrs)]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("storage", ["shm", "memory"])
def test_a_block_that_raises_is_undone_whole(cleanup, storage: str) -> None:
    name = f"atom-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    a = sz.create((64, 64), chunks=(8, 8), dtype="f8", table_name=name, storage=storage)
    a[...] = 1.0
    a.attrs["step"] = 1
    before = np.asarray(a).copy()
    chunks = sorted(a.list_chunks())
    seen = _in_other_process(name) if storage == "shm" else None
    used = _shm_bytes(name) if storage == "shm" else 0
    with pytest.raises(Boom):
        with a.atomic():
            a[:40] = 7.0  # rewrites chunks
            a.write_chunk((7, 7), np.full((8, 8), 9.0))
            a.delete_chunk((0, 0))
            a.attrs["step"] = 2
            a.append(np.full((8, 64), 5.0))  # new chunks and a new shape
            assert a.shape == (72, 64)
            raise Boom
    assert a.shape == (64, 64)
    np.testing.assert_array_equal(np.asarray(a), before)
    assert a.attrs["step"] == 1
    assert sorted(a.list_chunks()) == chunks
    if storage == "shm":
        assert _in_other_process(name) == seen
        assert _shm_bytes(name) <= used + (1 << 20)  # the block's new segments are gone
    with a.atomic():  # and a block that succeeds is kept
        a[0] = 3.0
        a.attrs["step"] = 4
    assert (a[0] == 3.0).all() and a.attrs["step"] == 4
    a.delete()


def test_a_table_session_that_raises_is_undone_whole(cleanup) -> None:
    name = f"atom-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    t = sz.Table.create(name)
    for i in range(50):
        t.insert(i, b"old%d" % i)
    with pytest.raises(Boom):
        with t.writer(atomic=True):
            for i in range(2000):  # new keys: the index grows (new generations) meanwhile
                t.insert(("new", i), b"x" * 100)
            for i in range(0, 50, 2):
                t.insert(i, b"changed")
            for i in range(1, 50, 2):
                t.delete(i)
            raise Boom
    assert len(t) == 50
    assert sorted(t.keys()) == list(range(50))
    assert all(t.lookup(i) == [b"old%d" % i] for i in range(50))
    u = sz.Table.attach(name)
    assert len(u) == 50 and u.lookup(3) == [b"old3"] and u.lookup(("new", 5)) == []
    u.close()
    t.delete_table()


ENOSPC = r"""
import sys
sys.path.insert(0, {root!r})
import numpy as np
import sharedzarr as sz
from sharedzarr.errors import OutOfSpaceError
a = sz.create((64, 256, 256), chunks=(1, 256, 256), dtype="f8", table_name="big")
a[:2] = 1.0
try:
    with a.atomic():
        for i in range(2, 64):  # 512 KiB a chunk: far more than the 4 MiB tmpfs holds
            a[i] = float(i)
    raise SystemExit("no OutOfSpaceError")
except OutOfSpaceError:
    pass
with sz.open("big") as b:
    assert (b[:2] == 1.0).all() and (b[2:] == 0).all(), "the failed block left data"
assert sorted(a.list_chunks()) == [(0, 0, 0), (1, 0, 0)], a.list_chunks()
a[2] = 2.0  # the space the failed block took is back: a write that fits succeeds
a[3] = 3.0
assert (a[3] == 3.0).all()
print("ENOSPC-OK")
"""


@_small_shm.needs
def test_a_block_refused_for_space_is_undone_and_gives_the_space_back(tmp_path) -> None:
    _small_shm.run_ok(tmp_path, ENOSPC.format(root=ROOT), "4m")  # -7 would be SIGBUS


def test_a_block_killed_at_any_moment_is_undone_by_the_next_writer(cleanup) -> None:
    """SIGKILL at random moments of back-to-back ``atomic()`` blocks (a whole-array rewrite,
    an attribute, a chunk): after each kill the next writer rolls the dead block back, and
    every process sees one whole block, the values matching the attribute."""
    name = f"atom-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    a = sz.create((256, 256), chunks=(32, 32), dtype="f8", table_name=name)
    a[...] = 0.0
    a.attrs["v"] = 0
    ctx = mp.get_context("spawn")
    rng = random.Random(11)
    kept = []
    for trial in range(12):
        kill_while_running(ctx, AW.atomic_rewrites, lambda ready: (name, ready), rng)
        with a.atomic():  # the next writer: rolls the dead block back
            pass
        v = np.asarray(a)
        k = a.attrs["v"]
        assert v.min() == v.max() == v[0, 0] == k, (
            f"trial {trial}: after the rollback the array holds {v.min()}..{v.max()} "
            f"(chunk (0, 0): {v[0, 0]}), attrs['v'] is {k}"
        )
        kept.append(k)
        other = json_line(_in_other_process(name))[1]
        assert other == float(k) * 256 * 256, f"trial {trial}: another process sums {other}"
    # each worker finished a block before it could be killed: the value moved every time
    assert len(set(kept)) == len(kept), kept
    a.delete()


def json_line(text: str) -> list:
    import json

    return json.loads(text)


def test_an_error_part_way_through_a_session_says_what_stays(cleanup) -> None:
    """An error out of a session that is not atomic, after it stored something, carries a
    note that says what stays and how to get all or nothing; none when nothing was stored,
    and none when the session is undone."""
    name = f"atom-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    t = sz.Table.create(name)
    with pytest.raises(Boom) as got:
        with t.writer():
            t.insert(1, b"a")
            raise Boom
    assert [n for n in got.value.__notes__ if "stopped part-way" in n and "atomic" in n]
    assert t.get(1) == b"a"
    with pytest.raises(Boom) as got:
        with t.writer():
            raise Boom
    assert not getattr(got.value, "__notes__", None)
    with pytest.raises(Boom) as got:
        with t.writer(atomic=True):
            t.insert(2, b"b")
            raise Boom
    assert not getattr(got.value, "__notes__", None) and t.get(2) is None
    t.delete_table()


ENOSPC_MIDWAY = r"""
import sys
sys.path.insert(0, {root!r})
import numpy as np
import sharedzarr as sz
from sharedzarr.errors import OutOfSpaceError
a = sz.create((64, 256, 256), chunks=(1, 256, 256), dtype="f8", table_name="big")
a[:2] = 1.0
try:  # might fit (so it is tried), and /dev/shm fills part-way
    a[2:12] = 2.0
    raise SystemExit("no OutOfSpaceError")
except OutOfSpaceError as e:
    notes = getattr(e, "__notes__", [])
    assert any("stopped part-way" in n for n in notes), notes
    print("NOTE", notes[0])
v = np.asarray(a)
assert (v[:2] == 1.0).all()
rows = [float(v[i].max()) for i in range(2, 12)]
assert set(rows) <= {{0.0, 2.0}} and all(v[i].min() == v[i].max() for i in range(2, 12)), rows
assert 2.0 in rows, rows  # part of it stayed: what the note says
a.delete()
print("ENOSPC-OK")
"""


@_small_shm.needs
def test_a_write_that_fills_dev_shm_part_way_says_what_stays(tmp_path) -> None:
    _small_shm.run_ok(tmp_path, ENOSPC_MIDWAY.format(root=ROOT), "6m")


def test_an_undo_log_removed_from_outside_is_made_again(cleanup) -> None:
    """The undo segment unlinked behind the table's back (``rm``): the next atomic session
    makes a new one and still rolls back; deleting the table removes it."""
    name = f"atom-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    t = sz.Table.create(name)
    with t.writer(atomic=True):
        t.insert(1, b"a")
    path = f"/dev/shm/sz.{name}.undo"
    assert os.path.exists(path)
    os.unlink(path)
    with pytest.raises(Boom):
        with t.writer(atomic=True):
            t.insert(1, b"b")
            t.insert(2, b"c")
            raise Boom
    assert t.get(1) == b"a" and t.get(2) is None and os.path.exists(path)
    t.delete_table()
    assert not os.path.exists(path)
