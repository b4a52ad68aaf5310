"""A write of several chunks that is small next to the array (at most 1/16 of the stored data,
or at most 1 MiB) is all or nothing by itself, outside ``atomic()``: an exception part-way,
a full /dev/shm or a SIGKILL anywhere leaves the old values, and the space it took is
given back.  A bigger write keeps the chunks it stored, each whole, and says so."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import uuid

import _atomic_workers as AW
import _small_shm
import numpy as np
import pytest
from _crash import kill_while_running, run_crashing

import sharedzarr as sz
from sharedzarr._table._write import PART_WAY_NOTE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Boom(Exception):
    pass


def _name() -> str:
    return f"small-{uuid.uuid4().hex[:8]}"


def _fail_at_batch(monkeypatch, a: sz.Array, k: int) -> list[int]:
    """Make the engine raise Boom when it is about to publish its k-th batch of chunks."""
    t = a._live().table
    publish = t._publish_filled
    seen = [0]

    def failing(recs):
        seen[0] += 1
        if seen[0] == k:
            raise Boom
        return publish(recs)

    monkeypatch.setattr(t, "_publish_filled", failing)
    return seen


@pytest.mark.parametrize("how", ["slice", "write_chunks", "advanced"])
def test_a_small_write_that_fails_part_way_is_undone(monkeypatch, cleanup, how: str) -> None:
    name = _name()
    cleanup.append(name)
    a = sz.create((256, 256), chunks=(32, 32), dtype="f8", table_name=name)
    a[...] = 1.0
    used = a.table.info()["memory"]
    seen = _fail_at_batch(monkeypatch, a, 3)
    with pytest.raises(Boom) as got:
        if how == "slice":
            a[:96, :96] = 7.0  # 9 chunks
        elif how == "write_chunks":
            a.write_chunks({(i, j): 7.0 for i in range(3) for j in range(3)})
        else:
            a[[1, 40, 90, 130, 170, 250], :70] = 7.0  # 6 x 3 chunks
    assert seen[0] == 3  # it did publish two batches before the error
    assert not getattr(got.value, "__notes__", None)  # undone: nothing to say
    assert (np.asarray(a) == 1.0).all()
    with sz.open(name) as b:
        assert (np.asarray(b) == 1.0).all()
    monkeypatch.undo()
    a[:96, :96] = 7.0  # the next write goes in; the failed one's space was given back
    assert (a[:96, :96] == 7.0).all() and (a[96:] == 1.0).all()
    assert a.table.info()["memory"] <= used + (1 << 20)


def test_a_small_field_write_that_fails_part_way_is_undone(monkeypatch, cleanup) -> None:
    name = _name()
    cleanup.append(name)
    dt = np.dtype([("x", "f8"), ("y", "i4")])
    a = sz.create((128, 128), chunks=(32, 32), dtype=dt, table_name=name)
    a["y"] = 1
    before = np.asarray(a).copy()
    _fail_at_batch(monkeypatch, a, 3)
    with pytest.raises(Boom):
        a["x"] = 7.0  # 16 chunks, read-modify-written
    assert (np.asarray(a) == before).all()


def test_a_big_write_that_fails_part_way_keeps_whole_chunks_and_says_so(
    monkeypatch, cleanup
) -> None:
    name = _name()
    cleanup.append(name)
    a = sz.create((1024, 1024), chunks=(128, 128), dtype="f8", table_name=name)
    a[...] = 1.0  # 8 MiB: a whole rewrite is more than 1/16 of it and more than 1 MiB
    _fail_at_batch(monkeypatch, a, 5)
    with pytest.raises(Boom) as got:
        a[...] = 2.0
    assert PART_WAY_NOTE in got.value.__notes__
    v = np.asarray(a)
    assert 2.0 in v and 1.0 in v
    for i in range(8):
        for j in range(8):
            c = v[i * 128 : (i + 1) * 128, j * 128 : (j + 1) * 128]
            assert c.min() == c.max()  # each chunk whole
    monkeypatch.undo()
    with pytest.raises(Boom):
        with a.atomic():  # atomic() still makes the big one all or nothing
            a[...] = 3.0
            raise Boom
    assert (np.asarray(a) == v).all()


def _write_in_child(name: str, after: int | None) -> subprocess.CompletedProcess[str]:
    code = (
        "import sharedzarr as sz, sharedzarr._table as T\n"
        f"a = sz.open({name!r})\n"
        "base = T._crash_count\n"
        "a[:, :192] = 2.0\n"  # 48 chunks, in many batches
        "print(T._crash_count - base)\n"
    )
    return run_crashing(code, after)


def test_a_small_write_killed_anywhere_is_undone_by_the_next_writer(cleanup) -> None:
    """SIGKILL at every crash point the write passes: the next writer rolls it back (or it
    had committed), and every process sees the old values or the new ones, never a mix."""
    name = _name()
    cleanup.append(name)
    a = sz.create((256, 256), chunks=(32, 32), dtype="f8", table_name=name)
    a[...] = 1.0
    r = _write_in_child(name, None)
    assert r.returncode == 0, r.stderr
    points = int(r.stdout.split()[-1])
    assert points >= 10  # a batch's stores and publishes, the commit ...
    seen = set()
    for k in range(points):
        a[...] = 1.0
        r = _write_in_child(name, k)
        assert r.returncode in (-signal.SIGKILL, 0), (k, r.stderr)
        with a.table.writer():
            pass  # the next writer repairs after the dead one
        v = np.asarray(a)[:, :192]
        assert v.min() == v.max(), (k, np.unique(v))
        seen.add(float(v[0, 0]))
        assert (a[:, 192:] == 1.0).all()
        with sz.open(name) as b:
            assert (np.asarray(b) == np.asarray(a)).all()
    assert seen == {1.0, 2.0}  # killed before the commit, and after it


def test_small_writes_killed_at_random_moments_are_seen_whole(cleanup) -> None:
    """Back-to-back ``a[...] = k`` on a 512 KiB array (64 chunks, no ``atomic()``), SIGKILLed
    from outside at random moments: after each kill the array holds one write's value."""
    name = _name()
    cleanup.append(name)
    a = sz.create((256, 256), chunks=(32, 32), dtype="f8", table_name=name)
    a[...] = 0.0
    ctx = mp.get_context("spawn")
    rng = random.Random(5)
    values = set()
    for _ in range(8):
        kill_while_running(
            ctx, AW.rewrite_uniform, lambda ready: (name, 60.0, ready, ctx.Queue()), rng, 0.2
        )
        a.attrs["after"] = 1  # the next writer: rolls the dead write back
        v = np.asarray(a)
        assert v.min() == v.max(), np.unique(v)
        values.add(float(v[0, 0]))
    assert len(values) >= 4  # killed after different numbers of writes


ENOSPC = r"""
import os, sys
sys.path.insert(0, {root!r})
import numpy as np
import sharedzarr as sz
from sharedzarr.errors import OutOfSpaceError
a = sz.create((64, 64, 64), chunks=(1, 64, 64), dtype="f8", table_name="big")
a[...] = 1.0  # 2 MiB in 32 KiB chunks
a[:2] = 1.0  # (a small write: its undo log is made now, not in the write below)
with open("/dev/shm/hog", "wb") as hog:  # /dev/shm full but for 160 KiB
    try:
        while True:
            hog.write(b"x" * (64 << 10))
            hog.flush()
    except OSError:
        pass
os.truncate("/dev/shm/hog", os.path.getsize("/dev/shm/hog") - (160 << 10))
try:  # 16 chunks, 512 KiB: a quarter of the array, under 1 MiB: small
    a[:16] = 2.0
    raise SystemExit("no OutOfSpaceError")
except OutOfSpaceError as e:
    assert not getattr(e, "__notes__", None), e.__notes__
v = np.asarray(a)
assert (v == 1.0).all(), np.unique(v)
a[:2] = 3.0  # the space the failed write took is back: a write that fits goes in
assert (a[:2] == 3.0).all() and (a[2:] == 1.0).all()
os.unlink("/dev/shm/hog")
a.delete()
print("ENOSPC-OK")
"""


@_small_shm.needs
def test_a_small_write_that_fills_dev_shm_is_undone(tmp_path) -> None:
    _small_shm.run_ok(tmp_path, ENOSPC.format(root=ROOT), "16m")


def test_small_writes_between_big_rewrites_keep_memory_down(cleanup) -> None:
    """A small write's undo keeps only its own replaced chunks: whole rewrites around it
    still reuse their memory (no growth beyond the 1.05x of plain rewrites, with slack)."""
    name = _name()
    cleanup.append(name)
    a = sz.create((1024, 1024), chunks=(32, 32), dtype="f8", table_name=name)
    data = np.random.default_rng(0).random((1024, 1024))
    for i in range(30):
        a[...] = data
        a[:64, :64] = float(i)  # 4 chunks: made atomic
    on_disk = sum(
        os.stat(f"/dev/shm/{f}").st_blocks * 512
        for f in os.listdir("/dev/shm")
        if f.startswith(f"sz.{name}.")
    )
    assert on_disk <= 1.10 * data.nbytes


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
