"""Table lifecycle and access with real processes: owner, heir, persistence, access levels,
segment modes, pid reuse, fork, and the seed's management functions (issue 4)."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import uuid

import _lc_workers as W
import _workers
import numpy as np
import pytest

import sharedzarr as sz
from sharedzarr import _layout as L
from sharedzarr import _proc
from sharedzarr._table import Table
from sharedzarr._table._ownership import forget_owned
from sharedzarr.errors import AccessDeniedError, TableNotFoundError
from sharedzarr.storage import shm

CTX = mp.get_context("spawn")
FORK = mp.get_context("fork")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _name(tag: str) -> str:
    return f"lc-{tag}-{uuid.uuid4().hex[:8]}"


def _segments(name: str) -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"sz.{name}."))


def _run_child(target, *args, ctx=CTX) -> int:
    p = ctx.Process(target=target, args=args)
    p.start()
    p.join(120)
    assert p.exitcode is not None, "child hung"
    return p.exitcode


def _set_header_word(name: str, word: int, value: int) -> None:
    """Write one header word directly, as another (buggy or dead) process could."""
    fd = os.open(f"/dev/shm/sz.{name}.hdr", os.O_RDWR)
    try:
        os.pwrite(fd, struct.pack("<Q", value), word * 8)
    finally:
        os.close(fd)


def _header_word(name: str, word: int) -> int:
    with open(f"/dev/shm/sz.{name}.hdr", "rb") as f:
        f.seek(word * 8)
        return struct.unpack("<Q", f.read(8))[0]


class Child:
    """A spawned process running ``fn(*args)``; its return value comes back by a queue.

    Unlike a Pool worker it may receive Events, and it exits normally when ``fn``
    returns (a Pool's ``__exit__`` terminates its workers with SIGTERM).
    """

    def __init__(self, fn, *args) -> None:
        self.q = CTX.Queue()
        self.p = CTX.Process(target=W.to_queue, args=(self.q, fn, *args))
        self.p.start()
        self.pid = self.p.pid
        deadline = time.monotonic() + 30
        while _proc.ident_of(self.pid) is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def result(self, timeout: float = 120):
        kind, value = self.q.get(timeout=timeout)
        self.p.join(60)
        assert kind == "ok", value
        return value

    def stop(self) -> None:
        if self.p.is_alive():
            self.p.kill()
        self.p.join()


@pytest.fixture
def sleeper():
    """A live process unrelated to any table (an heir, a receiver, a pid to reuse)."""
    p = CTX.Process(target=W.sleeper)
    p.start()
    # wait until it is a running process with a start time
    deadline = time.monotonic() + 30
    while _proc.ident_of(p.pid) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    yield p
    if p.is_alive():
        p.kill()
    p.join()


# ----------------------------------------------------------------------------- owner exits


@pytest.mark.parametrize("how", ["return", "exit", "raise"])
@pytest.mark.parametrize("chunks", [0, 2])
def test_owner_exit_deletes_table_at_once(how, chunks):
    name = _name("exit")
    code = _run_child(_workers.create_and_exit, name, None, chunks, how)
    assert code == (1 if how == "raise" else 0)
    assert _segments(name) == []  # deleted by the owner itself, no probe needed
    assert not shm.table_exists(name)
    with pytest.raises(TableNotFoundError):
        Table.attach(name)


@pytest.mark.parametrize("how", ["end", "raise", "ctrl-c"])
def test_script_owner_exit_deletes_table(how):
    """A plain Python program (not multiprocessing): normal end, uncaught error, Ctrl-C."""
    name = _name("script")
    body = {
        "end": "",
        "raise": "raise RuntimeError('boom')",
        "ctrl-c": "print('ready', flush=True); time.sleep(60)",
    }[how]
    code = textwrap.dedent(
        f"""
        import time, sharedzarr as sz
        a = sz.create(shape=(20,), chunks=(10,), dtype='int64', table_name={name!r})
        a[:] = 1
        {body}
        """
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    if how == "ctrl-c":
        assert p.stdout.readline().strip() == "ready"
        assert _segments(name)
        p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    # an uncaught KeyboardInterrupt ends Python with -SIGINT (3.12+) or 1
    assert p.returncode in ({"end": (0,), "raise": (1,)}.get(how, (1, -signal.SIGINT))), err
    assert _segments(name) == []
    assert not shm.table_exists(name)


@pytest.mark.parametrize("sig", ["sigterm", "sigkill"])
def test_owner_killed_table_gone_after_next_table_exists(sig):
    name = _name("killed")
    code = _run_child(_workers.create_and_exit, name, None, 2, sig)
    assert code == -(signal.SIGTERM if sig == "sigterm" else signal.SIGKILL)
    assert _segments(name)  # nobody cleaned up yet
    assert shm.table_exists(name) is False
    assert _segments(name) == []


@pytest.mark.parametrize("probe", ["attach", "open", "create", "ls", "gc"])
def test_killed_owner_table_is_reaped_by_every_entry_point(probe):
    name = _name("reap")
    assert _run_child(_workers.create_and_exit, name, None, 2, "sigkill") == -signal.SIGKILL
    assert _segments(name)
    if probe == "attach":
        with pytest.raises(TableNotFoundError):
            Table.attach(name)
    elif probe == "open":
        with pytest.raises(TableNotFoundError):
            sz.open(name)
    elif probe == "create":  # the name is free again
        Table.create(name).delete_table()
    elif probe == "ls":
        assert name not in [i.name for i in shm.list_infos()]
    else:
        assert name in shm.gc()
    assert _segments(name) == []


def test_attached_process_exit_leaves_table_alone():
    name = _name("visitor")
    with Table.create(name) as t:
        with CTX.Pool(1) as pool:
            assert pool.apply(W.attach_write_exit, (name,)) is False
        time.sleep(0.1)
        assert t.is_owner and t["visitor"] == b"v"
        assert shm.table_exists(name)
        t.delete_table()


# ----------------------------------------------------------------------------- heir


def test_seed_heir_case_test_process_inherits_array():
    """The seed: a process creates an array with heir=<us>, writes 2 chunks, exits."""
    name = _name("heir")
    assert _run_child(_workers.create_and_exit, name, os.getpid(), 2, "return") == 0
    assert shm.table_exists(name)
    state = shm.get_state(name)
    assert len(state.chunks) == 2
    assert np.frombuffer(state.chunks[(1,)], dtype="<i8").tolist() == list(range(1, 11))
    assert json.loads(state.metadata)["shape"] == [20]
    info = shm.table_info(name)
    assert info.owner == os.getpid() and info.owner_alive and info.heir is None
    a = sz.open(name)
    assert a.table.is_owner
    assert a[:].tolist() == list(range(10)) + list(range(1, 11))
    a.delete()
    assert not shm.table_exists(name) and _segments(name) == []


def test_heir_inherits_when_owner_is_killed():
    name = _name("heirkill")
    assert _run_child(_workers.create_and_exit, name, os.getpid(), 2, "sigkill") == -9
    assert shm.table_exists(name)  # the probe hands it to us, the live heir
    assert shm.table_info(name).owner == os.getpid()
    with Table.attach(name) as t:
        assert t.is_owner and t.heir_pid is None
    shm.delete_table(name)


@pytest.mark.parametrize("how", ["return", "sigkill"])
def test_heir_dead_before_owner_table_deleted(sleeper, how):
    name = _name("deadheir")
    ready, go = CTX.Event(), CTX.Event()
    owner = CTX.Process(target=W.create_wait_exit, args=(name, sleeper.pid, False, ready, go, how))
    owner.start()
    try:
        assert ready.wait(60)
        assert shm.table_info(name).heir == sleeper.pid
        sleeper.kill()
        sleeper.join()
        go.set()
        owner.join(60)
    finally:
        if owner.is_alive():
            owner.kill()
            owner.join()
    if how == "return":
        assert _segments(name) == []  # the owner saw its heir dead and deleted it
    assert not shm.table_exists(name)
    assert _segments(name) == []


def test_heir_reused_pid_is_not_the_heir(sleeper):
    """An heir whose pid now belongs to another process (wrong start time) is dead."""
    name = _name("heirpid")
    ready, go = CTX.Event(), CTX.Event()
    owner = CTX.Process(target=W.create_wait_exit, args=(name, sleeper.pid, False, ready, go, ""))
    owner.start()
    assert ready.wait(60)
    _set_header_word(name, L.H_HEIR_START, _header_word(name, L.H_HEIR_START) + 1)
    go.set()
    owner.join(60)
    assert owner.exitcode == 0
    assert _segments(name) == []


# ----------------------------------------------------------------------------- persistent


def test_persistent_outlives_owner_until_delete_table():
    name = _name("persist")
    assert _run_child(W.create_array_exit, name, True, "public") == 0
    assert len(_segments(name)) >= 3
    assert shm.table_exists(name)
    info = shm.table_info(name)
    assert info.persistent and not info.owner_alive
    assert name not in shm.gc(dry_run=True)
    assert name not in shm.gc()
    with sz.open(name) as a:
        assert a[:].tolist() == list(range(20))
        a[0] = 100  # public: anyone may write even with the owner gone
    assert shm.get_state(name).chunks[(0,)][:8] == (100).to_bytes(8, "little")
    shm.delete_table(name)
    assert not shm.table_exists(name) and _segments(name) == []


# ----------------------------------------------------------------------------- give_away / set_heir


def _wait_gone(name: str, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while _segments(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _segments(name)


def test_table_give_away_and_heir_round_trip():
    """We give the table away keeping ourselves as heir; the receiver exits; we get it back."""
    name = _name("give")
    t = Table.create(name, access="protected")
    t.insert("k", b"v")
    t.set_heir(os.getpid())
    got, go = CTX.Event(), CTX.Event()
    child = Child(W.take_over, name, got, go)
    try:
        t.give_away(child.pid)
        assert not t.is_owner and t.owner_pid == child.pid
        with pytest.raises(AccessDeniedError, match="owner"):
            t.insert("k", b"mine")
        with pytest.raises(AccessDeniedError):
            t.give_away(os.getpid())
        with pytest.raises(AccessDeniedError):
            t.set_heir(None)
        with pytest.raises(AccessDeniedError):
            t.delete_table()
        got.set()
        go.set()
        assert child.result() == {"is_owner": True, "owner_pid": child.pid, "write": "ok"}
    finally:
        child.stop()
    # the receiver exited normally; we are its heir: the table is ours again
    assert t.is_owner and t.heir_pid is None
    assert t.lookup("from_child") == [b"c"]
    t.insert("k", b"back")
    t.delete_table()
    assert _segments(name) == []


def test_table_give_away_without_heir_receiver_exit_deletes():
    name = _name("give2")
    t = Table.create(name)
    t.insert("k", b"v")
    got, go = CTX.Event(), CTX.Event()
    child = Child(W.take_over, name, got, go)
    try:
        t.give_away(child.pid)
        got.set()
        go.set()
        assert child.result()["is_owner"]
    finally:
        child.stop()
    assert _wait_gone(name) == []
    with pytest.raises(TableNotFoundError):
        t.lookup("k")
    t.close()


def test_array_give_away_and_set_heir(sleeper):
    name = _name("agive")
    a = sz.create(shape=(20,), chunks=(10,), dtype="int64", table_name=name, access="protected")
    a[:] = 3
    a.set_heir(sleeper.pid)
    assert shm.table_info(name).heir == sleeper.pid
    a.set_heir(None)
    assert shm.table_info(name).heir is None
    with pytest.raises(ValueError, match="running"):
        a.set_heir(2**22 + 12345)  # no such process (above pid_max)
    with pytest.raises(ValueError):
        a.give_away(-1)
    go = CTX.Event()
    child = Child(W.take_over_array, name, go)
    try:
        a.give_away(child.pid)
        assert shm.table_info(name).owner == child.pid
        with pytest.raises(AccessDeniedError):
            a[0] = 1
        with pytest.raises(AccessDeniedError):
            a.set_heir(os.getpid())
        assert a[:].tolist() == [3] * 20  # reading is still fine
        go.set()
        assert child.result() == {"is_owner": True, "write": "ok"}
    finally:
        child.stop()
    # the receiver exited without an heir: the table is gone
    assert _wait_gone(name) == []
    with pytest.raises(TableNotFoundError):
        a[:]
    a.close()


# ----------------------------------------------------------------------------- access levels


def _view_from_second_process(name: str) -> dict:
    with CTX.Pool(1) as pool:
        return pool.apply(W.second_process_view, (name,))


def test_public_second_process_reads_and_writes():
    name = _name("pub")
    with sz.create(shape=(20,), chunks=(10,), dtype="int64", table_name=name) as a:
        a[:] = np.arange(20)
        out = _view_from_second_process(name)
        assert out["attach"] == out["open"] == "ok"
        for op in ("set_slice", "write_chunk", "delete_chunk", "table_insert", "attrs"):
            assert out[op] == "ok", (op, out[op])
        assert out["values_after"] == [0] * 20  # chunk 0 zeroed, chunk 1 deleted (fill)
        a.refresh()
        assert a[:].tolist() == [0] * 20 and a.attrs["k"] == 1
        assert a.table.member("x")
        a.delete()


def test_protected_second_process_reads_but_cannot_write():
    name = _name("prot")
    with sz.create(
        shape=(20,), chunks=(10,), dtype="int64", table_name=name, access="protected"
    ) as a:
        a[:] = np.arange(20)
        out = _view_from_second_process(name)
        assert out["exists"] and out["attach"] == out["open"] == "ok"
        assert out["get_state"] == "ok"
        assert out["info_owner"] == os.getpid()
        assert out["values"] == list(range(20))
        for op in (
            "set_slice",
            "write_chunk",
            "delete_chunk",
            "table_insert",
            "table_delete",
            "attrs",
        ):
            assert out[op] == "AccessDeniedError", (op, out[op])
        assert out["view_values"] == list(range(10))
        assert out["view_writeable"] is False
        assert out["make_view_writeable"] == "ValueError"
        assert out["raw_readonly"] is True
        assert out["arenas_readonly"] is True  # the segments are mapped read-only
        assert out["mapping_writeable"] is False
        assert out["make_mapping_writeable"] == "ValueError"
        assert out["values_after"] == list(range(20))
        assert a[:].tolist() == list(range(20))
        a[0] = 9  # the owner still writes
        assert not a.table.member("x")
        a.delete()


def test_private_second_process_is_denied():
    name = _name("priv")
    with sz.create(
        shape=(20,), chunks=(10,), dtype="int64", table_name=name, access="private"
    ) as a:
        a[:] = 1
        out = _view_from_second_process(name)
        assert out["exists"] is True
        assert out["attach"] == out["open"] == out["get_state"] == "AccessDeniedError"
        # table_info is an administrative read: owner yes, the private contents no
        assert out["info_owner"] == os.getpid() and out["info_array"] is None
        with Table.attach(name) as again:  # the owner itself may attach again
            assert again.is_owner
        a.delete()


def test_private_table_is_the_owners_after_give_away():
    name = _name("privgive")
    t = Table.create(name, access="private")
    t.insert(("chunk", (0,)), b"x")
    got, go = CTX.Event(), CTX.Event()
    child = Child(W.take_over, name, got, go)
    try:
        t.give_away(child.pid)
        assert t.lookup(("chunk", (0,))) == [b"x"]  # our open handle still reads
        with pytest.raises(AccessDeniedError, match="private"):
            Table.attach(name)  # but attaching anew is the owner's right only
        got.set()
        go.set()
        assert child.result()["write"] == "ok"  # the new owner attaches and writes
    finally:
        child.stop()
    assert _wait_gone(name) == []
    t.close()


# ----------------------------------------------------------------------------- segment mode


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to setuid to nobody")


def _as_nobody(name: str) -> dict:
    with CTX.Pool(1) as pool:
        return pool.apply(W.as_user, ("nobody", name))


@needs_root
def test_other_user_denied_by_default_mode():
    name = _name("mode600")
    with sz.create(shape=(20,), chunks=(10,), dtype="int64", table_name=name) as a:
        a[:] = 1
        out = _as_nobody(name)
        assert out["uid"] != 0
        assert out["exists"] is True
        for op in (
            "attach",
            "attach_ro",
            "open",
            "open_r",
            "get_state",
            "table_info",
            "clear_table",
            "delete_table",
        ):
            assert out[op] == "AccessDeniedError", (op, out[op])
        assert out["gc"] == "ok"
        assert out["create_same_name"] == "TableExistsError"
        assert a[:].tolist() == [1] * 20  # untouched
        assert a.table.is_owner
        a.delete()


def _array_with_mode(name: str, mode: int) -> sz.Array:
    """An array on a table with segment mode ``mode`` (``sz.create`` has no ``mode``)."""
    from sharedzarr._metadata import ArrayMetadata

    backend = shm.SharedMemoryBackend.create(name, mode=mode)
    meta = ArrayMetadata.create((20,), (10,), "int64")
    raw = meta.to_json()
    backend.write_metadata(raw)
    return sz.Array(backend, meta, raw)


@needs_root
def test_other_user_reads_with_mode_644_but_cannot_write():
    name = _name("mode644")
    with _array_with_mode(name, 0o644) as a:
        a[:] = 4
        assert os.stat(f"/dev/shm/sz.{name}.hdr").st_mode & 0o777 == 0o644
        out = _as_nobody(name)
        assert out["exists"] is True
        # root made it: without naming root as trusted, nobody attaches nothing
        assert out["untrusted"].startswith("AccessDeniedError"), out["untrusted"]
        assert "trusted_uid=0" in out["untrusted"], out["untrusted"]
        assert out["open_untrusted"] == "AccessDeniedError"
        assert out["get_state"] == "AccessDeniedError"  # it returns the data
        for op in ("attach", "attach_ro", "open", "open_r", "table_info"):
            assert out[op] == "ok", (op, out[op])
        assert out["values"] == [4] * 20
        assert out["view"] == [4] * 10
        for op in ("insert", "set_slice", "clear_table", "delete_table", "handle_delete"):
            assert out[op] == "AccessDeniedError", (op, out[op])
        assert out["gc"] == "ok"
        assert a[:].tolist() == [4] * 20
        a.delete()


# ----------------------------------------------------------------------------- pid reuse


def test_owner_pid_reused_by_unrelated_process_is_orphaned(sleeper):
    name = _name("pidreuse")
    t = Table.create(name)
    t.insert("k", b"v")
    t.close()
    forget_owned(name)  # this process lets go of the table (and its lifetime lock)
    start = _proc.start_time(sleeper.pid)
    # the owner's pid now belongs to a live, unrelated process that started later
    _set_header_word(name, L.H_OWNER_PID, sleeper.pid)
    _set_header_word(name, L.H_OWNER_START, start + 1)
    assert _proc.alive(sleeper.pid, start) and not _proc.alive(sleeper.pid, start + 1)
    assert shm.table_exists(name) is False
    assert _segments(name) == []
    assert sleeper.is_alive()


def test_owner_pid_with_right_start_time_is_alive(sleeper):
    name = _name("pidok")
    t = Table.create(name)
    t.close()
    _set_header_word(name, L.H_OWNER_PID, sleeper.pid)
    _set_header_word(name, L.H_OWNER_START, _proc.start_time(sleeper.pid))
    info = shm.table_info(name)
    assert info.owner == sleeper.pid and info.owner_alive
    assert shm.table_exists(name)
    shm.delete_table(name)


# ----------------------------------------------------------------------------- fork


def test_forked_child_reads_and_leaves_lock_table_and_ownership_alone():
    name = _name("fork")
    t = Table.create(name)
    data = {"a": b"1", ("chunk", (0,)): b"x" * 5000}
    for k, v in data.items():
        t.insert(k, v)
    segs = _segments(name)
    with t.writer():
        assert _run_child(W.fork_child_reads, t, data, ctx=FORK) == 0
        # we still hold the writer lock: another process cannot write
        with CTX.Pool(1) as pool:
            assert pool.apply(W.try_write, (name, 0.3)) == "LockTimeoutError"
        t.insert("b", b"2")
    assert t.is_owner and shm.table_exists(name) and _segments(name) == segs
    # a forked child writes with a lock description of its own, then exits
    assert _run_child(W.fork_child_writes, t, ctx=FORK) == 0
    assert t["from_fork"] == b"f" and t.is_owner
    with CTX.Pool(1) as pool:
        assert pool.apply(W.try_write, (name, 5.0)) == "ok"
    t.insert("c", b"3")
    t.delete_table()


def _in_forked_child(fn) -> None:
    """Run ``fn()`` in a child forked with ``os.fork`` (it inherits every handle) and check
    that it returned (the child exits 0, or 3 if ``fn`` raised)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            fn()
        except BaseException:
            code = 3
        finally:
            os._exit(code)  # noqa: B012
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_plain_os_fork_child_exit_leaves_table():
    name = _name("osfork")
    t = Table.create(name)
    t.insert("k", b"v")

    def child() -> None:
        assert t["k"] == b"v" and not t.is_owner
        t.close()

    _in_forked_child(child)
    assert t["k"] == b"v" and t.is_owner
    t.delete_table()


@pytest.mark.parametrize("storage_table", ["array", "table"])
def test_forked_children_and_their_parent_never_reuse_the_same_room(storage_table):
    """A handle keeps the rooms of the records it replaced, to reuse them; a child forked
    with the handle must not inherit that list, or it and its parent (or two children)
    would write different chunks into one room, and one chunk would be lost."""
    name = _name("forkrooms")
    if storage_table == "table":
        t = Table.create(name)
        for k in range(8):
            t.insert(k, bytes([k]) * 8192)
        for k in range(8):  # rewritten: the old records' rooms are this handle's to reuse
            t.insert(k, bytes([k + 10]) * 8192)
        time.sleep(0.01)  # past the grace period: the rooms are ready
        for k in (0, 1):  # two children, one after the other, then the parent
            _in_forked_child(lambda k=k: t.insert(k, bytes([k + 20]) * 8192))
        t.insert(2, bytes([22]) * 8192)
        expected = {0: 20, 1: 21, 2: 22, **{k: k + 10 for k in range(3, 8)}}
        assert {k: t[k][0] for k in range(8)} == expected
        assert all(len(set(t[k])) == 1 for k in range(8))
        t.delete_table()
        return
    a = sz.zeros((8, 1024), chunks=(1, 1024), dtype="float64", table_name=name)
    a[...] = 1.0
    a[...] = 2.0  # every chunk replaced: the old records' rooms are this handle's to reuse
    time.sleep(0.01)  # past the grace period: the rooms are ready
    _in_forked_child(lambda: a.__setitem__(0, 10.0))  # two children, then the parent
    _in_forked_child(lambda: a.__setitem__(1, 11.0))
    a[2] = 12.0
    assert a[:, 0].tolist() == [10.0, 11.0, 12.0] + [2.0] * 5
    assert (a[...] == a[:, :1]).all()  # every row whole
    a.delete()


def test_forked_child_of_an_owner_cleans_up_its_own_table():
    """A fork child inherits "cleanup registered" state; its own tables must still go."""
    mine = Table.create(_name("forkparent"))  # this process registered its exit cleanup
    name = _name("forkown")
    try:
        assert _run_child(W.fork_child_creates, name, ctx=FORK) == 0
        assert _segments(name) == []
    finally:
        mine.delete_table()
        if _segments(name):
            shm.delete_table(name)


# ----------------------------------------------------------------------------- management


def test_delete_table_invalidates_handles_in_other_processes():
    name = _name("delhandles")
    a = sz.create(shape=(20,), chunks=(10,), dtype="int64", table_name=name)
    a[:] = 5
    ready, go = CTX.Event(), CTX.Event()
    child = Child(W.hold_then_read, name, ready, go)
    try:
        assert ready.wait(60)
        shm.delete_table(name)
        assert _segments(name) == []
        go.set()
        out = child.result()
    finally:
        child.stop()
    assert out[:7] == ["TableNotFoundError"] * 7
    assert out[7] == "view-ok"  # a zero-copy view taken before stays readable
    with pytest.raises(TableNotFoundError):
        a[:]
    with pytest.raises(TableNotFoundError):
        a.table.insert("k", b"v")
    a.close()


def test_delete_table_twice_raises():
    name = _name("deltwice")
    t = Table.create(name)
    shm.delete_table(name)
    with pytest.raises(TableNotFoundError) as ei:
        shm.delete_table(name)
    assert isinstance(ei.value, FileNotFoundError) and "sharedzarr ls" in str(ei.value)
    with pytest.raises(TableNotFoundError):
        t.delete_table()
    t.close()
    for fn in (shm.get_state, shm.table_info, shm.clear_table):
        with pytest.raises(TableNotFoundError):
            fn(name)
    assert shm.table_exists(name) is False
    with pytest.raises(ValueError, match="invalid table name"):
        shm.delete_table("no/slash")


def test_delete_table_is_administrative_on_other_owners_tables():
    """delete_table works on a protected/private table of another live process."""
    name = _name("admin")
    ready, go = CTX.Event(), CTX.Event()
    owner = CTX.Process(target=W.create_wait_exit, args=(name, None, False, ready, go, ""))
    owner.start()
    try:
        assert ready.wait(60)
        shm.delete_table(name)
        assert _segments(name) == []
    finally:
        go.set()
        owner.join(60)
    assert owner.exitcode == 0  # its exit cleanup finds nothing and does not fail


def test_clear_table_keeps_the_table():
    name = _name("clear")
    a = sz.create(shape=(20,), chunks=(10,), dtype="int64", table_name=name)
    a[:] = 1
    assert len(shm.get_state(name).chunks) == 2
    shm.clear_table(name)
    assert shm.table_exists(name)
    state = shm.get_state(name)
    assert state.chunks == {} and state.metadata is None
    assert shm.table_info(name).size == 0 and shm.table_info(name).array is None
    assert a.table.is_owner
    a.table.insert(("chunk", (0,)), b"z")
    assert shm.get_state(name).chunks == {(0,): b"z"}
    a.delete()
    assert _segments(name) == []


def test_table_info_fields(sleeper):
    name = _name("info")
    t0 = time.time()
    t = Table.create(
        name, table_type="ordered_set", access="protected", heir=sleeper.pid, persistent=True
    )
    t.insert("a", b"x" * 100)
    t.insert("b", b"y")
    info = shm.table_info(name)
    assert dataclasses.is_dataclass(info)
    assert info.name == name
    assert info.size == 2
    assert info.type == "ordered_set" and info.access == "protected"
    assert info.owner == os.getpid() and info.owner_alive is True
    assert info.heir == sleeper.pid
    assert info.named_table is True and info.persistent is True
    assert info.segments == len(_segments(name)) == 3  # header, index, one arena
    assert info.memory == sum(os.stat(f"/dev/shm/{n}").st_blocks * 512 for n in _segments(name))
    assert info.memory >= 4096
    assert t0 - 1 <= info.created <= time.time() + 1
    assert info.array is None
    d = info.to_dict()
    assert json.loads(json.dumps(d)) == d
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.size = 3  # type: ignore[misc]
    t.delete_table()
    u = Table.create(_name("unnamed"), named_table=False)
    assert shm.table_info(u.name).named_table is False
    u.delete_table()
    with sz.create(shape=(30, 4), chunks=(10, 4), dtype="float32", table_name=name) as a:
        a[:] = 1
        info = shm.table_info(name)
        assert info.array == {"shape": [30, 4], "chunks": [10, 4], "dtype": "float32"}
        assert info.size == 4  # 3 chunks + metadata
        a.delete()


def test_table_exists_and_get_state_basics():
    name = _name("basics")
    assert shm.table_exists(name) is False
    with pytest.raises(TableNotFoundError):
        shm.get_state(name)
    a = sz.create(shape=(5,), chunks=(5,), dtype="uint8", table_name=name)
    assert shm.table_exists(name) is True
    assert shm.get_state(name).chunks == {}
    a[:] = 7
    assert shm.get_state(name).chunks == {(0,): b"\x07" * 5}
    a.delete()
