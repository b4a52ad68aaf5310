"""Fault tolerance: crash injection, resource limits, hostile and damaged state."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import resource
import signal
import subprocess
import sys
import time

import _small_shm
import _workers as W
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sharedzarr import _layout as L
from sharedzarr._table import Table, table_segments
from sharedzarr.errors import CorruptTableError, TableNotFoundError

CTX = mp.get_context("spawn")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRASH_TRIALS = int(os.environ.get("SHAREDZARR_CRASH_TRIALS", "50"))


def audit(t: Table, size=W.churn_size) -> None:
    """Every key reads whole; counters match; no unreferenced segment is left."""
    keys = t.keys()
    total = 0
    for k in keys:
        v = t[k]
        assert len(v) == size(k), (k, len(v))
        assert v.count(v[:1]) == len(v), f"mixture in {k!r}"
        total += len(v)
    info = t.info()
    assert info["size"] == len(keys) == info["keys"]
    assert info["live_bytes"] == total
    # references: arenas that hold a live record, plus the current arena
    import numpy as np

    t._load_index()
    arr = np.frombuffer(t._idx, dtype=np.uint64).reshape(-1, 2)
    refd = {int(r) >> L.OFFSET_BITS for r in arr[arr[:, 1] > 1, 1]}
    del arr
    cur = t._H[L.H_CUR_ARENA]
    pooled = {t._H[L.H_POOL + 2 * k] for k in range(L.POOL_SLOTS)} - {0}
    for n in table_segments(t.name):
        if ".idx." in n:
            assert n.endswith(f".idx.{t._H[L.H_GEN]}"), n
        elif n.endswith(".undo"):
            assert t._H[L.H_UNDO] == 0, "an atomic session's undo log is still open"
        elif not n.endswith(".hdr"):
            aid = int(n.rsplit(".a", 1)[1])
            assert aid in refd or aid == cur or aid in pooled, f"unreferenced segment {n}"
    for aid in pooled:  # a pooled arena exists, is retired (id 0) and holds nothing live
        assert aid not in refd and aid != cur
        seg = t._map_arena(aid)
        assert int.from_bytes(seg.mm[48:56], "little") == 0


# the crash workloads: small values (growth, deletes, compaction) and big ones (arenas
# retired and reused); each with its value-size function for the audit
WORKLOADS = {
    "churn": ("W.churn({name!r}, 6, 150)", W.churn_size),
    "big_churn": ("W.big_churn({name!r}, 6, 96)", W.big_churn_size),
    "atomic": ("W.atomic_churn({name!r}, 9, 40)", W.atomic_size),
}


def _run_churn(name: str, point: str, after: int, workload: str = "churn") -> int:
    env = dict(os.environ, SHAREDZARR_CRASH_AT=point, SHAREDZARR_CRASH_AFTER=str(after))
    call = WORKLOADS[workload][0].format(name=name)
    code = f"import sys; sys.path.insert(0, 'tests'); import _workers as W; {call}"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, timeout=300).returncode


def _count_points(name: str, workload: str = "churn") -> int:
    """Run the workload once with counting only (no kill) to learn how many points it passes."""
    env = dict(os.environ, SHAREDZARR_CRASH_AT="*", SHAREDZARR_CRASH_AFTER=str(10**9))
    call = WORKLOADS[workload][0].format(name=name)
    code = (
        "import sys; sys.path.insert(0, 'tests'); import _workers as W; "
        f"import sharedzarr._table as T; {call}; print(T._crash_count)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        timeout=300,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def crash_trials(trials: int, seed: int = 1, workload: str = "churn") -> dict:
    rng = random.Random(seed)
    size = WORKLOADS[workload][1]
    probe = Table.create()
    try:
        npoints = _count_points(probe.name, workload)
    finally:
        probe.delete_table()
    stats = {"trials": 0, "crashes": 0, "recoveries": 0, "max_wait": 0.0}
    for _ in range(trials):
        t = Table.create()
        try:
            rc = _run_churn(t.name, "*", rng.randrange(npoints), workload)
            stats["trials"] += 1
            if rc == -signal.SIGKILL:
                stats["crashes"] += 1
            dirty = bool(t._H[L.H_DIRTY])
            t0 = time.monotonic()
            t.insert("after", b"a" * 3)  # the next writer proceeds (and repairs)
            stats["max_wait"] = max(stats["max_wait"], time.monotonic() - t0)
            stats["recoveries"] += dirty
            t.delete("after")
            audit(t, size)
            if workload == "atomic":
                stats.setdefault("rounds", set()).add(W.check_atomic_rounds(t, 40))
        finally:
            t.delete_table()
    return stats


def test_crash_injection_at_random_points():
    s = crash_trials(CRASH_TRIALS)
    assert s["trials"] == CRASH_TRIALS
    assert s["crashes"] >= CRASH_TRIALS * 0.9
    assert s["recoveries"] >= 1
    assert s["max_wait"] < 5


def test_crash_injection_while_arenas_are_reused():
    trials = max(CRASH_TRIALS // 2, 1)
    s = crash_trials(trials, seed=3, workload="big_churn")
    assert s["trials"] == trials
    assert s["crashes"] >= trials * 0.9
    assert s["recoveries"] >= 1
    assert s["max_wait"] < 5


def test_crash_injection_in_atomic_sessions():
    """SIGKILL anywhere in atomic sessions (rewrites, deletes, index growth, a nested bulk
    insert, a rollback): the next writer leaves exactly one whole round, never a mix."""
    trials = max(CRASH_TRIALS // 2, 1)
    s = crash_trials(trials, seed=5, workload="atomic")
    assert s["trials"] == trials
    assert s["crashes"] >= trials * 0.9
    assert s["recoveries"] >= 1
    assert len(s["rounds"]) >= 3  # killed in different rounds
    assert s["max_wait"] < 5


@pytest.mark.stress
@pytest.mark.timeout(3600)
def test_crash_injection_1000_trials():
    s = crash_trials(int(os.environ.get("SHAREDZARR_STRESS_TRIALS", "1000")), seed=7)
    assert s["crashes"] >= s["trials"] * 0.9
    s = crash_trials(int(os.environ.get("SHAREDZARR_STRESS_TRIALS", "1000")) // 4, 8, "big_churn")
    assert s["crashes"] >= s["trials"] * 0.9
    s = crash_trials(int(os.environ.get("SHAREDZARR_STRESS_TRIALS", "1000")) // 4, 9, "atomic")
    assert s["crashes"] >= s["trials"] * 0.9


def test_reader_keeps_reading_while_writer_is_stopped_holding_lock():
    t = Table.create()
    try:
        t.insert("k", b"v")
        ready = CTX.Event()
        p = CTX.Process(target=W.hold_lock_forever, args=(t.name, ready))
        p.start()
        assert ready.wait(60)
        os.kill(p.pid, signal.SIGSTOP)
        try:
            with CTX.Pool(1) as pool:
                assert pool.apply(W.read_keys, (t.name, ["k", "held"])) == [[b"v"], [b"1"]]
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.join()
    finally:
        t.delete_table()


ENOSPC_SCRIPT = r"""
import errno, os, sys
sys.path.insert(0, {root!r})
from sharedzarr._table import Table
from sharedzarr.errors import OutOfSpaceError
t = Table.create("full")
i = 0
try:
    while True:
        t.insert(i, bytes([i % 251]) * 20000)
        i += 1
except OutOfSpaceError as e:
    assert isinstance(e, OSError) and e.errno == errno.ENOSPC, e
    assert "full" in str(e)
assert i > 5
assert all(t[k] == bytes([k % 251]) * 20000 for k in range(i))
t.delete(0); t.delete(1)
t.insert("small", b"x" * 100)
try:
    t.insert("big", b"x" * (4 << 20))
    raise SystemExit("expected OutOfSpaceError")
except OutOfSpaceError as e:
    msg = str(e)
    # what was needed, what is free, and how to enlarge a small /dev/shm
    assert "needed" in msg and "MiB" in msg, msg
    assert "free of 1.0 MiB" in msg, msg
    assert "--shm-size=" in msg and "remount" in msg, msg
    print("MESSAGE", msg)
assert t["small"] == b"x" * 100 and len(t) == i - 1
t.delete_table()
assert os.listdir("/dev/shm") == [], os.listdir("/dev/shm")
print("ENOSPC-OK", i)
"""


@_small_shm.needs
def test_full_dev_shm_is_a_typed_error_not_sigbus(tmp_path):
    _small_shm.run_ok(tmp_path, ENOSPC_SCRIPT.format(root=ROOT), "1m")  # -7 would be SIGBUS


TOO_BIG_SCRIPT = r"""
import os, sys
sys.path.insert(0, {root!r})
import numpy as np
import sharedzarr as sz
from sharedzarr import _layout as L
from sharedzarr.errors import OutOfSpaceError

def free():
    st = os.statvfs("/dev/shm")
    return st.f_bavail * st.f_frsize

a = sz.create((64, 256, 256), chunks=(1, 256, 256), dtype="f8", table_name="big")  # 32 MiB
a[:2] = 1.0
before = free()
for write in (
    lambda: a.__setitem__(Ellipsis, 2.0),  # a scalar, broadcast
    lambda: a.set_slice(np.full((62, 256, 256), 3.0, "f4"), (2, 0, 0), (64, 256, 256)),
    lambda: a.append(np.ones((16, 256, 256))),
):
    try:
        write()
        raise SystemExit("no OutOfSpaceError")
    except OutOfSpaceError as e:
        msg = str(e)
        assert "does not fit" in msg and "nothing was stored" in msg, msg
        assert "needed" in msg and "MiB free" in msg and "--shm-size" in msg, msg
    # refused before anything was stored: /dev/shm as before, the array as before
    assert free() == before, (free(), before)
    assert sorted(a.list_chunks()) == [(0, 0, 0), (1, 0, 0)], a.list_chunks()
    assert a.shape == (64, 256, 256) and (a[:2] == 1.0).all() and (a[2:] == 0).all()
    assert a.table._H[L.H_DIRTY] == 0  # nothing to repair: the next writer does not recount
a[:4] = 4.0  # a write that fits still succeeds
assert (a[:4] == 4.0).all() and (a[4:] == 0).all()
a.delete()
print("ENOSPC-OK", msg)
"""


@_small_shm.needs
def test_a_write_that_cannot_fit_is_refused_before_it_stores_anything(tmp_path):
    """Without it the write would fill /dev/shm (failing every other user of it) and stop
    part-way with half its chunks stored."""
    _small_shm.run_ok(tmp_path, TOO_BIG_SCRIPT.format(root=ROOT), "4m")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _cycles(n: int) -> None:
    base = (_fds(), _maps(), len(os.listdir("/dev/shm")))
    rss0 = None
    for i in range(n):
        t = Table.create(f"cyc{i % 7}")
        t.insert("k", b"v" * 100)
        u = Table.attach(t.name)
        assert u.lookup("k") == [b"v" * 100]
        u.close()
        t.delete_table()
        if i == n // 10:
            rss0 = _rss()
    assert _fds() <= base[0] + 2
    assert _maps() <= base[1] + 8
    assert len(os.listdir("/dev/shm")) <= base[2]
    assert _rss() < rss0 + (32 << 20)


def test_create_attach_read_close_cycles_stay_bounded():
    _cycles(2000)


@pytest.mark.stress
@pytest.mark.timeout(3600)
def test_100k_cycles_stay_bounded():
    _cycles(100_000)


NOFILE_SCRIPT = r"""
import resource, sys
sys.path.insert(0, {root!r})
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
from sharedzarr._table import Table
t = Table.create()
n = {n}
with t.writer():
    for i in range(n):
        t.insert(("chunk", (i,)), i.to_bytes(8, "little") * 64)
u = Table.attach(t.name)
for i in range(n):
    assert u.get(("chunk", (i,)), copy=False)[:8] == i.to_bytes(8, "little")
u.close()
t.delete_table()
print("NOFILE-OK")
"""


@pytest.mark.parametrize(
    "n", [20_000, pytest.param(100_000, marks=[pytest.mark.stress, pytest.mark.timeout(3600)])]
)
def test_many_chunks_with_rlimit_nofile_256(tmp_path, n):
    script = tmp_path / "nofile.py"
    script.write_text(NOFILE_SCRIPT.format(root=ROOT, n=n))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and "NOFILE-OK" in r.stdout, r.stderr


def _write_raw(name: str, data: bytes) -> None:
    fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5000), st.booleans())
def test_fuzz_attach_on_random_header(data, with_magic):
    if with_magic:
        data = L.MAGIC + data
    _write_raw("sz.fuzzhdr.hdr", data)
    try:
        try:
            t = Table.attach("fuzzhdr")
        except (CorruptTableError, TableNotFoundError):
            return
        try:  # whatever attached must fail cleanly on use
            t.lookup("k")
            list(t.keys())
        except (CorruptTableError, TableNotFoundError):
            pass
        finally:
            t.close()
    finally:
        for n in table_segments("fuzzhdr"):
            os.unlink(f"/dev/shm/{n}")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3000), st.integers(0, 200))
def test_fuzz_attach_on_random_index(data, truncate):
    t = Table.create("fuzzidx")
    try:
        t.insert("a", b"1")
        gen = t._H[L.H_GEN]
        path = f"/dev/shm/sz.fuzzidx.idx.{gen}"
        raw = open(path, "rb").read()
        mixed = (raw[:truncate] + data)[: len(raw) + 100]
        _write_raw(f"sz.fuzzidx.idx.{gen}", mixed)
        u = Table.attach("fuzzidx")
        try:
            for k in ("a", "b", 1, ("chunk", (0,))):
                try:
                    u.lookup(k)
                except (CorruptTableError, TableNotFoundError):
                    pass
            try:
                u.keys()
            except (CorruptTableError, TableNotFoundError):
                pass
        finally:
            u.close()
    finally:
        t.delete_table()


def test_foreign_segment_with_our_prefix():
    _write_raw("sz.foreign.hdr", b"hello, not a table")
    try:
        with pytest.raises(CorruptTableError):
            Table.attach("foreign")
    finally:
        os.unlink("/dev/shm/sz.foreign.hdr")


def test_segments_removed_from_outside():
    t = Table.create()
    t.insert("k", b"v" * 100)
    u = Table.attach(t.name)
    view = u.get("k", copy=False)
    for n in table_segments(t.name):
        os.unlink(f"/dev/shm/{n}")
    assert bytes(view) == b"v" * 100  # mapped views stay
    with pytest.raises(TableNotFoundError):  # a writer makes no segment after it
        t.insert("big", b"x" * (64 << 20))  # (its own arena, past the session's check)
    with pytest.raises(TableNotFoundError):
        for i in range(100):  # and its writes notice within a bounded number of sessions
            u.insert(("j", i), b"x")
    with pytest.raises(TableNotFoundError):
        Table.attach(t.name)
    with pytest.raises(TableNotFoundError):
        for _ in range(300):  # reads notice within a bounded number of calls
            u.lookup("k")
    u.close()
    t.close()


def test_view_outlives_delete_close_and_owner_exit(tmp_path):
    script = tmp_path / "outlive.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "from sharedzarr._table import Table\n"
        "t = Table.create()\n"
        "t.insert('k', b'z' * 5000)\n"
        "v = t.get('k', copy=False)\n"
        "u = Table.attach(t.name)\n"
        "w = u.lookup('k', copy=False)[0]\n"
        "t.delete_table()\n"
        "u.close()\n"
        "assert bytes(v) == b'z' * 5000 and bytes(w) == b'z' * 5000\n"
        "print('VIEW-OK')\n"
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "VIEW-OK" in r.stdout
    assert "BufferError" not in r.stderr and r.stderr.strip() == "", r.stderr


def test_rlimit_resource_module_available():
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 0
