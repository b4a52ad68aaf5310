"""``Table.insert_many`` in bulk: new keys written in runs and published together.

The result must be the table a loop of ``insert`` builds (values, counts, space), for new
and existing keys, repeated keys, keys and values of several lengths, big and empty
values; all or none on a refused object, on an enclosing atomic session that raises, and
on a full /dev/shm (a small tmpfs in a private mount namespace); and another process sees
the whole batch or none of it."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys

import _small_shm
import numpy as np
import pytest
from _crash import run_crashing
from test_recycle import _recounted_space

from sharedzarr import _layout as L
from sharedzarr._index import encode_key, encode_keys, key_hash, key_hashes
from sharedzarr._table import Table
from sharedzarr._table._bulk import BULK_MIN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _assert_counts_exact(t: Table) -> None:
    live, garbage, arenas = _recounted_space(t)
    H = t._H
    assert (H[L.H_LIVE_RECORD], H[L.H_GARBAGE]) == (live, garbage)
    for aid, (a_live, a_garbage) in arenas.items():
        w = t._arenas[aid].words
        assert (w[L.A_LIVE], w[L.A_GARBAGE]) == (a_live, a_garbage), aid
    info, keys = t.info(), t.keys()
    assert info["size"] == info["keys"] == len(keys)
    assert info["live_bytes"] == sum(len(t[k]) for k in keys)


def _mixed_objects(n: int) -> list[tuple[object, object]]:
    """New keys of three key types and several key and value lengths, with big, empty
    and numpy values."""
    objs: list[tuple[object, object]] = []
    for i in range(n):
        key: object = (i, "x" * (i % 3)) if i % 5 == 0 else (f"k{i}" if i % 2 else i)
        if i % 97 == 0:
            value: object = bytes([i % 251]) * (100 << 10)  # big: put one by one
        elif i % 89 == 0:
            value = b""
        elif i % 7 == 0:
            value = np.full(i % 13 + 1, i, dtype=np.int64)
        else:
            value = bytes([i % 251]) * (8 + i % 3 * 40)
        objs.append((key, value))
    return objs


def _as_bytes(v: object) -> bytes:
    return v.tobytes() if isinstance(v, np.ndarray) else bytes(v)  # type: ignore[call-overload]


def test_the_vectorised_key_passes_equal_the_scalar_ones():
    keys = [b"", b"\x00" * 9, b"a\x00", "é", "x" * 300, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1]
    keys += [True, None, 1.5, (1, "a"), [2, (b"b",)], np.int64(7), np.float32(0.5)]
    kbs = encode_keys(keys)
    assert kbs == [encode_key(k) for k in keys]
    assert key_hashes(kbs).tolist() == [key_hash(kb) for kb in kbs]
    for bad in ([1, 2**64], ["a", {"no": "dicts"}]):
        with pytest.raises(TypeError) as got:
            encode_keys(bad)
        with pytest.raises(TypeError) as want:
            encode_key(bad[1])
        assert str(got.value) == str(want.value)


def test_a_bulk_insert_builds_the_table_a_loop_of_inserts_builds(table):
    objs = _mixed_objects(3000)
    # existing keys (rewritten) and keys given twice (the last value wins)
    for key, value in objs[::10]:
        table.insert(key, b"old" + _as_bytes(value))
    objs += [(objs[5][0], b"again"), (objs[6][0], b"again"), (objs[5][0], b"last")]
    assert table.insert_many(objs) == len(objs)
    want: dict[object, bytes] = {}
    for key, value in objs:
        want[key] = _as_bytes(value)
    assert len(table) == len(want)
    for key, value in want.items():
        assert table.get(key) == value, key
    assert table.get(objs[5][0]) == b"last"
    _assert_counts_exact(table)
    # and a second batch into the table the first one built, of new keys and old ones
    more = [(("more", i), b"m" * (i % 50)) for i in range(BULK_MIN * 3)] + objs[:500]
    table.insert_many(more)
    assert table.get(("more", 7)) == b"m" * 7 and len(table) == len(want) + BULK_MIN * 3
    _assert_counts_exact(table)


def test_a_big_batch_with_a_key_given_twice_keeps_its_last_value(table):
    """A batch this big has its hashes checked for repeats on a helper thread."""
    from sharedzarr._table._bulk import _THREAD_SORT_MIN

    n = _THREAD_SORT_MIN + 100
    objs = [(("k", i), i.to_bytes(8, "little")) for i in range(n)]
    objs.append((("k", 17), b"last"))
    assert table.insert_many(objs) == n + 1
    assert len(table) == n
    assert table.get(("k", 17)) == b"last" and table.get(("k", n - 1)) == objs[-2][1]
    _assert_counts_exact(table)


def test_a_refused_object_leaves_the_table_and_its_space_as_they_were(table):
    table.insert_many((i, b"before") for i in range(BULK_MIN))
    used = table.info()["live_bytes"], _recounted_space(table)[0]
    objs = [(("new", i), b"v" * 64) for i in range(5000)]
    objs[4000] = (("new", 4000), "a str")  # refused: values are bytes-like
    with pytest.raises(TypeError, match="bytes-like"):
        table.insert_many(objs)
    objs[4000] = 17  # type: ignore[call-overload]  # not a (key, value) pair
    with pytest.raises(TypeError, match=r"\(key, value\) pairs"):
        table.insert_many(objs)
    assert len(table) == BULK_MIN and table.get(("new", 0)) is None
    assert (table.info()["live_bytes"], _recounted_space(table)[0]) == used
    _assert_counts_exact(table)


def test_a_failure_while_the_records_get_room_stops_the_index_build(table, monkeypatch):
    """The new index is planned on a helper thread while the records are allocated; if the
    allocation fails, the build gives up and leaves no segment, and nothing hangs."""
    from sharedzarr._table import _bulk

    table.insert_many((i, b"before") for i in range(BULK_MIN))
    before = sorted(f for f in os.listdir("/dev/shm") if f.startswith(f"sz.{table.name}."))
    started = []
    job_init = _bulk._IndexJob.__init__

    def spy(self, *args, **kwargs):
        started.append(True)
        job_init(self, *args, **kwargs)

    def no_room(*args, **kwargs):
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(_bulk._IndexJob, "__init__", spy)
    monkeypatch.setattr(_bulk.BulkMixin, "_place_group", no_room)
    with pytest.raises(OSError, match="injected"):
        table.insert_many((("new", i), b"v" * 64) for i in range(20000))  # a new index
    monkeypatch.undo()
    assert started  # the build had begun
    after = sorted(f for f in os.listdir("/dev/shm") if f.startswith(f"sz.{table.name}."))
    assert after == before  # the planned generation's segment is gone
    assert len(table) == BULK_MIN and table.get(("new", 0)) is None
    table.insert_many((("new", i), b"v" * 64) for i in range(20000))  # and it works after
    assert len(table) == BULK_MIN + 20000 and table.get(("new", 19999)) == b"v" * 64
    _assert_counts_exact(table)


def test_an_enclosing_atomic_session_that_raises_undoes_a_bulk_insert(table):
    table.insert_many((i, b"kept") for i in range(BULK_MIN))
    with pytest.raises(RuntimeError, match="boom"), table.writer(atomic=True):
        table.insert_many((i, b"changed") for i in range(BULK_MIN * 4))
        assert len(table) == BULK_MIN * 4
        raise RuntimeError("boom")
    assert len(table) == BULK_MIN
    assert all(table.get(i) == b"kept" for i in range(BULK_MIN))
    assert table.get(BULK_MIN) is None
    _assert_counts_exact(table)


def _watch(name: str, first: bytes, last: bytes, go: mp.Event, out: mp.Queue) -> None:
    t = Table.attach(name)
    seen = mixed = 0
    go.set()
    while True:
        late = t.get(last)  # the last key first: when it is there, the first must be too
        early = t.get(first)
        if late is not None:
            mixed += early is None
            seen += 1
            if seen > 50:
                break
        elif early is not None:
            seen += 1
    out.put(mixed)
    t.close()


def test_another_process_sees_a_bulk_insert_whole_or_not_at_all(table):
    n = 200_000
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_watch, args=(table.name, b"k0", b"k%d" % (n - 1), go, out))
    p.start()
    try:
        assert go.wait(60)
        table.insert_many((b"k%d" % i, b"v" * 32) for i in range(n))
        assert out.get(timeout=60) == 0
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()
    assert p.exitcode == 0


ENOSPC = """
import os, sys
sys.path.insert(0, {root!r})
from sharedzarr._table import Table
from sharedzarr.errors import OutOfSpaceError


def used():
    return sum(os.stat("/dev/shm/" + f).st_blocks * 512 for f in os.listdir("/dev/shm"))


t = Table.create("bulkfull")
t.insert_many((i, b"x" * 200) for i in range(1000))
before = len(t), t.info()["live_bytes"], used()
try:  # ~20 MB: refused before anything is stored
    t.insert_many((("big", i), b"y" * 900) for i in range(20000))
except OutOfSpaceError as e:
    assert "nothing was stored" in str(e), str(e)
else:
    raise SystemExit("no OutOfSpaceError")
assert (len(t), t.info()["live_bytes"], used()) == before
# records that fit, but not with the index that holds them: fails midway, undone
st = os.statvfs("/dev/shm")
n = (st.f_bavail * st.f_frsize - (300 << 10)) // 1024
try:
    t.insert_many((("fill", i), b"f" * 900) for i in range(n))
except OutOfSpaceError:
    pass
else:
    raise SystemExit("no OutOfSpaceError midway")
assert (len(t), t.info()["live_bytes"]) == before[:2] and t.get(("fill", 0)) is None
assert used() <= before[2] + (64 << 10), (used(), before)  # the space is given back
assert t.get(999) == b"x" * 200
t.insert_many((("small", i), b"z" * 900) for i in range(1000))  # what fits still goes in
assert t.get(("small", 999)) == b"z" * 900
t.delete_table()
print("ENOSPC-OK")
"""


@_small_shm.needs
def test_a_bulk_insert_refused_for_space_changes_nothing(tmp_path) -> None:
    _small_shm.run_ok(tmp_path, ENOSPC.format(root=ROOT), "8m")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def _bulk_in_child(name: str, after: int | None) -> subprocess.CompletedProcess[str]:
    code = (
        "import sharedzarr._table as T\n"
        f"t = T.Table.attach({name!r})\n"
        "t.insert_many((('new', i), bytes([i % 251]) * 40) for i in range(3000))\n"
        "print(T._crash_count)\n"
    )
    return run_crashing(code, after)


def test_a_writer_killed_anywhere_in_a_bulk_insert_leaves_all_of_it_or_none(table):
    """SIGKILL at every crash point a bulk insert passes: after the next writer's repair
    the batch is there whole or not at all, the counts are exact, nothing leaks."""
    table.insert_many((i, b"old") for i in range(1000))
    r = _bulk_in_child(table.name, None)
    assert r.returncode == 0, r.stderr
    points = int(r.stdout.split()[-1])
    assert points >= 5  # appended, built, published, stored, counted ...
    table.clear()
    seen = set()
    for k in range(points):
        table.insert_many((i, b"old") for i in range(1000))
        r = _bulk_in_child(table.name, k)
        # (the index is built on a helper thread: the points' order may vary, and a
        # count the two threads raced on may end the run before the k-th point)
        assert r.returncode in (-signal.SIGKILL, 0), (k, r.stderr)
        with table.writer():
            pass  # the next writer repairs after the dead one
        present = [table.get(("new", i)) for i in range(3000)]
        whole = all(v == bytes([i % 251]) * 40 for i, v in enumerate(present))
        assert whole or all(v is None for v in present), k
        seen.add(whole)
        assert len(table) == 1000 + 3000 * whole
        assert all(table.get(i) == b"old" for i in range(1000))
        _assert_counts_exact(table)
        table.clear()
    assert seen == {False, True}  # killed before the publish, and after it
