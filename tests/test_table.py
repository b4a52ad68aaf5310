"""The shared table core: ETS operations, processes, torn reads, crashes, growth."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time

import _workers as W
import numpy as np
import pytest

from sharedzarr._layout import HEADER_SIZE, MAGIC
from sharedzarr._table import Table, list_tables
from sharedzarr.errors import (
    AccessDeniedError,
    CorruptTableError,
    LockTimeoutError,
    NotFoundError,
    SharedZarrError,
    TableExistsError,
    TableNotFoundError,
)

CTX = mp.get_context("spawn")
TYPES = ["set", "ordered_set", "bag", "duplicate_bag"]
KEYS = [
    "s",
    "",
    0,
    -5,
    2**62,
    1.5,
    True,
    None,
    b"\x00bin",
    ("chunk", (0, 1)),
    ("nested", ("a", (1, 2.5, None)), b"x"),
]


@pytest.mark.parametrize("table_type", TYPES)
def test_round_trip_every_key_kind(table_type):
    with Table.create(table_type=table_type) as t:
        for i, k in enumerate(KEYS):
            t.insert(k, f"v{i}".encode())
        assert len(t) == len(KEYS)
        for i, k in enumerate(KEYS):
            assert t.lookup(k) == [f"v{i}".encode()]
            assert t.member(k)
        got = set(t.keys())
        assert got == set(KEYS)
        assert all(type(k) is tuple for k in got if isinstance(k, tuple))
        if table_type == "ordered_set":
            keys = t.keys()
            assert keys.index(0) < keys.index("s") < keys.index(("chunk", (0, 1)))
        t.delete_table()


def test_set_semantics(table):
    table.insert("k", b"1")
    table.insert("k", b"2")
    assert table.lookup("k") == [b"2"]
    assert table["k"] == b"2"
    assert len(table) == 1
    assert table.insert_new("k", b"3") is False
    assert table.insert_new("j", b"3") is True
    assert table.take("k") == [b"2"]
    assert table.take("k") == []
    assert table.lookup("k") == []
    with pytest.raises(NotFoundError) as ei:
        table["k"]
    assert isinstance(ei.value, KeyError) and ei.value.reason == "not_found"
    table.delete("missing")  # no error
    table.delete_object("j", b"other")
    assert table.member("j")
    table.delete_object("j", b"3")
    assert not table.member("j")


def test_bag_semantics():
    with Table.create(table_type="bag") as b:
        b.insert("k", b"1")
        b.insert("k", b"1")
        b.insert("k", b"2")
        assert sorted(b.lookup("k")) == [b"1", b"2"]
        assert len(b) == 2
        b.delete_object("k", b"1")
        assert b.lookup("k") == [b"2"]
        b.delete_table()
    with Table.create(table_type="duplicate_bag") as d:
        d.insert("k", b"1")
        d.insert("k", b"1")
        d.insert("k", b"2")
        assert sorted(d.lookup("k")) == [b"1", b"1", b"2"]
        assert len(d) == 3
        assert sorted(v for k, v in d.items()) == [b"1", b"1", b"2"]
        d.delete_object("k", b"1")  # every instance
        assert d.lookup("k") == [b"2"]
        with pytest.raises(TypeError, match="lookup"):
            d["k"]
        d.delete_table()


def test_values_bytes_like_and_sizes(table):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    table.insert("np", arr)
    assert np.frombuffer(table["np"], dtype=np.float32).tolist() == arr.ravel().tolist()
    table.insert("ba", bytearray(b"abc"))
    table.insert("mv", memoryview(b"xyz"))
    table.insert("empty", b"")
    assert table["empty"] == b""
    big = np.random.default_rng(0).integers(0, 255, 50 << 20, dtype=np.uint8)
    table.insert("big", big)
    v = table.get("big", copy=False)
    assert v.readonly and v.nbytes == big.nbytes
    assert np.array_equal(np.frombuffer(v, dtype=np.uint8), big)
    with pytest.raises(ValueError, match="contiguous"):
        table.insert("nc", arr[:, ::2])
    with pytest.raises(TypeError, match="encode"):
        table.insert("s", "text")
    with pytest.raises(TypeError, match="key"):
        table.insert({"a": 1}, b"")
    with pytest.raises(TypeError, match="key"):
        table.insert(2**70, b"")


def test_zero_copy_view_survives_overwrite_delete_clear(table):
    table.insert("k", b"a" * 1000)
    v = table.lookup("k", copy=False)[0]
    assert isinstance(v, memoryview) and v.readonly
    table.insert("k", b"b" * 1000)
    assert bytes(v) == b"a" * 1000
    w = table.get("k", copy=False)
    table.delete("k")
    table.clear()
    for i in range(3000):  # overwrite churn, reclamation, growth
        table.insert(i % 50, bytes([i % 251]) * 4000)
    assert bytes(v) == b"a" * 1000
    assert bytes(w) == b"b" * 1000


def test_names_and_errors():
    with pytest.raises(ValueError, match="invalid table name"):
        Table.create("bad/name")
    with pytest.raises(ValueError, match="invalid table name"):
        Table.create("x" * 65)
    with pytest.raises(ValueError, match="table_type"):
        Table.create(table_type="heap")
    with pytest.raises(ValueError, match="access"):
        Table.create(access="open")
    with pytest.raises(TableNotFoundError) as ei:
        Table.attach("no_such_table")
    assert isinstance(ei.value, FileNotFoundError) and ei.value.reason == "table_not_found"
    assert "sharedzarr ls" in str(ei.value)
    t = Table.create("dup_name")
    with pytest.raises(TableExistsError) as ei:
        Table.create("dup_name")
    assert isinstance(ei.value, FileExistsError)
    t.delete_table()
    with pytest.raises(TableNotFoundError):
        t.lookup("k")


def test_generated_names_are_unique_and_unnamed_tables():
    a, b = Table.create(), Table.create()
    assert a.name != b.name
    c = Table.create("same", named_table=False)
    d = Table.create("same", named_table=False)
    assert c.name != d.name and c.name.startswith("same.")
    for t in (a, b, c, d):
        t.delete_table()


def test_corrupt_header_raises_corrupt_error():
    fd = os.open("/dev/shm/sz.corrupt.hdr", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.write(fd, b"NOTOURS!" + bytes(HEADER_SIZE - 8))
        with pytest.raises(CorruptTableError, match="magic"):
            Table.attach("corrupt")
        os.ftruncate(fd, 10)
        with pytest.raises(CorruptTableError):
            Table.attach("corrupt")
    finally:
        os.close(fd)
        os.unlink("/dev/shm/sz.corrupt.hdr")


def test_pickle_by_name(table):
    table.insert("k", b"v")
    data = pickle.dumps(table)
    assert len(data) < 200
    u = pickle.loads(data)
    assert u.lookup("k") == [b"v"]
    u.close()


def test_close_is_idempotent_and_leaves_table(table):
    u = Table.attach(table.name)
    u.close()
    u.close()
    with pytest.raises(ValueError, match="closed"):
        u.lookup("k")
    table.insert("k", b"v")
    assert Table.attach(table.name).lookup("k") == [b"v"]


def test_spawned_process_reads_and_writes(table):
    table.insert("parent", b"p")
    with CTX.Pool(1) as pool:
        assert pool.apply(W.read_keys, (table.name, ["parent", "x"])) == [[b"p"], []]
        pool.apply(W.write_keys, (table.name, [("child", b"c"), (("chunk", (1, 2)), b"z")]))
    assert table.lookup("child") == [b"c"]
    assert table.lookup(("chunk", (1, 2))) == [b"z"]
    assert table.name in list_tables()


def test_growth_through_several_index_generations(table):
    n = 20000
    with table.writer():
        for i in range(n):
            table.insert(i, i.to_bytes(4, "little"))
    info = table.info()
    assert info["index_generation"] >= 6
    assert info["size"] == n
    with CTX.Pool(1) as pool:
        got = pool.apply(W.read_keys, (table.name, [0, 777, n - 1, n]))
    assert got == [
        [(0).to_bytes(4, "little")],
        [(777).to_bytes(4, "little")],
        [(n - 1).to_bytes(4, "little")],
        [],
    ]


def test_overwrites_keep_memory_within_1_5x_of_live(table):
    for rnd in range(10):
        with table.writer():
            for i in range(1000):
                table.insert(i, bytes([rnd]) * 4096)
    info = table.info()
    assert info["size"] == 1000
    live = 1000 * 4096
    assert info["memory"] <= 1.5 * live, info


def test_threads_serialise_on_the_writer_lock(table):
    table.insert("count", b"0")

    def work():
        for _ in range(200):
            with table.writer():
                table.insert("count", str(int(table["count"]) + 1).encode())

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert table["count"] == b"800"


def test_lock_timeout_names_holder(table):
    ready = CTX.Event()
    p = CTX.Process(target=W.hold_lock_forever, args=(table.name, ready))
    p.start()
    try:
        assert ready.wait(60)
        with pytest.raises(LockTimeoutError) as ei:
            with table.writer(timeout=0.2):
                pass
        assert ei.value.holder_pid == p.pid and str(p.pid) in str(ei.value)
        assert isinstance(ei.value, TimeoutError)
        # readers never wait on the writer
        assert table.lookup("missing") == []
    finally:
        p.kill()
        p.join()


def test_sigkill_while_holding_lock_next_writer_proceeds(table):
    for i in range(100):
        table.insert(i, b"old")
    ready = CTX.Event()
    p = CTX.Process(target=W.hold_lock_forever, args=(table.name, ready))
    p.start()
    assert ready.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    t0 = time.monotonic()
    table.insert(5, b"new")
    assert time.monotonic() - t0 < 5  # "about a second"; generous on a loaded machine
    assert table[5] == b"new"
    assert table["held"] == b"1"  # the killed write was complete: fully visible
    info = table.info()
    assert info["size"] == 101 and info["keys"] == 101


def _uniform_run(name: str, readers: int, reads: int, copy: bool) -> int:
    stop = CTX.Event()
    count = CTX.Value("i", 0)
    w = CTX.Process(target=W.torn_writer, args=(name, 8, 8192, stop, count))
    w.start()
    try:
        with CTX.Pool(readers) as pool:
            res = [pool.apply_async(W.torn_reader, (name, 8, reads, copy)) for _ in range(readers)]
            out = [r.get(timeout=600) for r in res]
    finally:
        stop.set()
        w.join(60)
    assert count.value > 0
    assert all(done >= reads for done, _ in out)
    return sum(bad for _, bad in out)


@pytest.mark.parametrize("copy", [True, False])
def test_no_torn_reads(table, copy):
    for k in range(8):
        table.insert(k, b"\0" * 8192)
    assert _uniform_run(table.name, 2, 20000, copy) == 0


def test_publishing_store_is_one_aligned_8_byte_store():
    from sharedzarr._segment import Segment

    seg = Segment.create("sz.wordtest.hdr", 4096, 0o600)
    stop = CTX.Event()
    w = CTX.Process(target=W.publish_toggle, args=(seg.name, stop))
    w.start()
    try:
        with CTX.Pool(1) as pool:
            bad = pool.apply(W.publish_watch, (seg.name, 2_000_000))
    finally:
        stop.set()
        w.join(60)
        seg.close()
        os.unlink("/dev/shm/sz.wordtest.hdr")
    assert bad == 0


def test_counter_exact_with_writer_killed_holding_lock(table):
    table.insert("count", b"0")
    ps = [
        CTX.Process(target=W.counter_increments, args=(table.name, 100, i == 0)) for i in range(3)
    ]
    for p in ps:
        p.start()
    for p in ps:
        p.join(300)
    assert ps[0].exitcode == -signal.SIGKILL
    assert [p.exitcode for p in ps[1:]] == [0, 0]
    # the killed one completed 50 increments (i = 0..49) before dying at i == 50,
    # whose increment was written under the lock before the kill
    assert int(table["count"]) == 200 + 51


@pytest.mark.parametrize(
    "point", ["append.written", "put.published", "grow.built", "grow.published", "arena.created"]
)
def test_crash_points_recover(table, point):
    env = dict(os.environ, SHAREDZARR_CRASH_AT=point, SHAREDZARR_CRASH_AFTER="1")
    code = (
        "import sys; sys.path.insert(0, 'tests'); import _workers as W; "
        f"W.crash_insert({table.name!r}, 500, None, None)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        timeout=120,
    )
    assert r.returncode == -signal.SIGKILL
    t0 = time.monotonic()
    table.insert("after", b"x")
    assert time.monotonic() - t0 < 5
    info = table.info()
    keys = [k for k in table.keys() if k != "after"]
    for k in keys:
        assert table[k] == bytes([k % 251]) * (100 + 40 * k)
    assert info["keys"] == len(keys) + 1 == info["size"]
    assert info["live_bytes"] == sum(100 + 40 * k for k in keys) + 1
    # nothing unreferenced left behind
    segs = [n for n in os.listdir("/dev/shm") if n.startswith(f"sz.{table.name}.")]
    assert len([n for n in segs if ".idx." in n]) == 1


def test_header_layout_golden_bytes(table):
    raw = open(f"/dev/shm/sz.{table.name}.hdr", "rb").read()
    assert raw[:8] == MAGIC
    version, hsize, ttype, access, named, persistent, mode = struct.unpack_from("<IIBBBBI", raw, 8)
    assert (version, hsize, ttype, access, named, persistent, mode) == (3, 4096, 0, 0, 1, 0, 0o600)
    (pid,) = struct.unpack_from("<Q", raw, 24)
    assert pid == os.getpid()
    assert os.stat(f"/dev/shm/sz.{table.name}.hdr").st_mode & 0o777 == 0o600


def test_attach_never_resizes(table):
    size = os.stat(f"/dev/shm/sz.{table.name}.hdr").st_size
    Table.attach(table.name).close()
    assert os.stat(f"/dev/shm/sz.{table.name}.hdr").st_size == size


def test_errors_are_builtin_subclasses():
    assert issubclass(AccessDeniedError, PermissionError)
    assert issubclass(LockTimeoutError, TimeoutError)
    assert issubclass(TableExistsError, FileExistsError)
    for cls in (
        AccessDeniedError,
        CorruptTableError,
        LockTimeoutError,
        NotFoundError,
        TableExistsError,
        TableNotFoundError,
    ):
        assert issubclass(cls, SharedZarrError)
    assert AccessDeniedError.reason == "access_denied"


def test_attach_waits_for_a_header_whose_size_is_not_set_yet():
    """Between a creator's shm_open and its ftruncate the header has 0 bytes: an attacher
    that comes then waits for the table instead of calling it corrupt."""
    import threading

    name = f"sizing-{os.getpid()}"
    path = f"/dev/shm/sz.{name}.hdr"
    open(path, "wb").close()  # the name, not yet its size
    made: list[Table] = []

    def creator() -> None:
        time.sleep(0.1)
        os.unlink(path)
        made.append(Table.create(name))

    th = threading.Thread(target=creator)
    th.start()
    try:
        t = Table.attach(name)
        t.close()
    finally:
        th.join(30)
        for t in made:
            t.delete_table()


def test_attach_to_an_unsized_header_that_goes_away_says_not_found():
    """An unsized header whose creator gave up (unlinked it, made nothing): the attacher's
    wait ends with TableNotFoundError, not a hang and not a corrupt-table error."""
    import threading

    from sharedzarr.errors import TableNotFoundError

    name = f"gone-{os.getpid()}"
    path = f"/dev/shm/sz.{name}.hdr"
    open(path, "wb").close()
    th = threading.Thread(target=lambda: (time.sleep(0.05), os.unlink(path)))
    th.start()
    try:
        with pytest.raises(TableNotFoundError, match="does not exist"):
            Table.attach(name)
    finally:
        th.join(30)
        if os.path.exists(path):
            os.unlink(path)


def test_insert_many_inserts_all_and_the_last_of_a_key_wins(table):
    table.insert("kept", b"old")
    n = table.insert_many([(i, b"v%d" % i) for i in range(1000)] + [("kept", b"new"), (3, b"x")])
    assert n == 1002
    assert len(table) == 1001
    assert table.get(999) == b"v999" and table.get(3) == b"x" and table.get("kept") == b"new"
    assert table.insert_many([]) == 0
    assert table.insert_many((k, b"g") for k in ("a", "b")) == 2  # any iterable
    # a key repeated within one published batch: one slot, the last value, counts right
    assert table.insert_many([("d", b"1"), ("d", b"22"), ("d", b"333")]) == 3
    assert table.get("d") == b"333" and len(table) == 1004
    info, keys = table.info(), table.keys()
    assert info["size"] == info["keys"] == len(keys) == 1004
    assert info["live_bytes"] == sum(len(table[k]) for k in keys)


def test_insert_many_is_all_or_none(table):
    table.insert_many((i, b"before") for i in range(10))
    writes = table.write_count
    objects = [(i, b"after") for i in range(5, 2000)]
    objects.insert(1500, (1500, 12345))  # not bytes-like: refused midway
    with pytest.raises(TypeError):
        table.insert_many(objects)
    assert len(table) == 10
    assert [table.get(i) for i in range(10)] == [b"before"] * 10
    assert table.get(1499) is None and table.get(11) is None
    with pytest.raises(TypeError):
        table.insert_many([(i, b"ok") for i in range(3)] + [({"a": 1}, b"bad key")])
    assert len(table) == 10 and table.get(0) == b"before"
    assert table.write_count != writes  # readers' cached views looked again


def test_insert_many_on_a_bag_keeps_bag_rules():
    t = Table.create(table_type="bag")
    try:
        assert t.insert_many([("k", b"a"), ("k", b"b"), ("k", b"a")]) == 3
        assert sorted(t.lookup("k")) == [b"a", b"b"]  # a bag stores a value once per key
    finally:
        t.delete_table()
