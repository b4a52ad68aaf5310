"""Write operations are atomic for readers in other processes, and every handle is current.

Real spawned processes: a writer rewrites the whole array with one value per write while
readers check every read is uniform; consumers that never call ``refresh()`` follow an
appending producer and never see a frame before its data; a resize and an attrs change
made in another process are seen by this handle on its next call.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import uuid

import _atomic_workers as W
import numpy as np
import pytest

import sharedzarr as sz
from sharedzarr import _layout as L

CTX = mp.get_context("spawn")


def _name(tag: str) -> str:
    return f"at-{tag}-{uuid.uuid4().hex[:8]}"


def _under_writer(
    name: str, reader, readers: int, seconds: float, how: str = "slice"
) -> tuple[int, list]:
    """Run ``readers`` processes of ``reader(name, seconds, out)`` while another process
    rewrites the array back to back (for 3 s); return (its writes, the readers' results)."""
    ready = CTX.Event()
    q_w, q_r = CTX.Queue(), CTX.Queue()
    w = CTX.Process(target=W.rewrite_uniform, args=(name, 3.0, ready, q_w, how))
    w.start()
    assert ready.wait(60)
    rs = [CTX.Process(target=reader, args=(name, seconds, q_r)) for _ in range(readers)]
    for r in rs:
        r.start()
    results = [q_r.get(timeout=120) for _ in rs]
    writes = q_w.get(timeout=120)
    for p in (w, *rs):
        p.join(60)
    return writes, results


@pytest.mark.parametrize(
    "shape, chunks",
    [
        ((256, 256), (16, 256)),
        ((256, 256), (64, 64)),
        ((2048, 1536), (256, 256)),  # 24 MiB: the writer fills on two threads
        ((2048, 1024), (256, 1024)),  # 16 MiB in 2 MiB chunks: both threads fill each one
    ],
    ids=["row-chunks", "tiles", "two-copy-threads", "chunks-in-halves"],
)
def test_whole_array_reads_never_mix_two_writes(shape, chunks):
    a = sz.zeros(shape, dtype="int64", chunks=chunks, table_name=_name("mix"))
    try:
        writes, results = _under_writer(a.name, W.read_uniform, 2, 2.5)
        assert writes > 10
        assert all(reads > 0 for reads, _ in results)  # readers finish under a busy writer
        assert [mixed for _, mixed in results] == [0, 0]
    finally:
        a.delete()


def test_whole_array_reads_never_mix_two_write_chunks_calls():
    """``write_chunks`` of every chunk (published in batches) is one operation too."""
    a = sz.zeros((256, 256), dtype="int64", chunks=(32, 32), table_name=_name("wcs"))
    try:
        writes, results = _under_writer(a.name, W.read_uniform, 2, 2.5, how="chunks")
        assert writes > 10
        assert all(reads > 0 for reads, _ in results)
        assert [mixed for _, mixed in results] == [0, 0]
    finally:
        a.delete()


def test_a_reader_waits_for_a_writer_only_after_asking_it_to_pause():
    """Under a writer whose operations follow each other with microseconds between them, a
    reader that waited for the gap without asking would wait up to its limit (1 s) for
    almost every read: every wait must come after the reader's pause request."""
    a = sz.zeros((1024, 1024), dtype="float64", chunks=(128, 1024), table_name=_name("ask"))
    try:
        writes, [(reads, mixed, waits, unasked)] = _under_writer(
            a.name, W.read_counting_waits, 1, 2.0
        )
        assert writes > 10
        assert reads > 0 and mixed == 0
        assert waits > 0  # the reader did meet open operations
        assert unasked == 0, f"{unasked} of {waits} waits began without a pause request"
    finally:
        a.delete()


def test_a_writer_stopped_mid_operation_is_waited_for_once_per_handle():
    """A writer stopped inside an operation (a debugger, SIGSTOP) is waited for up to
    OP_WAIT_S by a reader's first read; its later reads take the values as they stand at
    once instead of waiting again each time."""
    import os
    import signal

    a = sz.zeros((256, 256), dtype="float64", chunks=(64, 256), table_name=_name("stop"))
    a[...] = 1.0
    ready = CTX.Event()
    w = CTX.Process(target=W.stop_mid_operation, args=(a.name, ready))
    w.start()
    try:
        assert ready.wait(60)
        q = CTX.Queue()
        r = CTX.Process(target=W.read_counting_clock, args=(a.name, 4, q))
        r.start()
        per_read = q.get(timeout=120)
        r.join(60)
        assert per_read[0] > 2  # the first read waited (the fake clock ran out)
        assert per_read[1:] == [0, 0, 0]  # and no read waited again
    finally:
        os.kill(w.pid, signal.SIGKILL)
        w.join(60)
        a.delete()


def test_appending_consumers_never_see_a_frame_before_its_data():
    frames = 200
    a = sz.zeros((0, 64, 64), dtype="float32", chunks=(1, 64, 64), table_name=_name("app"))
    try:
        ready = CTX.Event()
        q = CTX.Queue()
        consumers = [CTX.Process(target=W.poll_newest, args=(a.name, frames, q)) for _ in range(2)]
        for c in consumers:
            c.start()
        producer = CTX.Process(target=W.append_frames, args=(a.name, frames, ready))
        producer.start()
        ready.set()
        results = [q.get(timeout=180) for _ in consumers]
        producer.join(60)
        for c in consumers:
            c.join(60)
        for seen, bad, final_len in results:
            assert final_len == frames  # followed every append without refresh()
            assert seen > 0 and bad == 0
        assert a.shape == (frames, 64, 64)  # this handle too, without refresh()
    finally:
        a.delete()


def test_resize_and_attrs_from_another_process_are_seen_without_refresh():
    a = sz.zeros((10, 4), dtype="int32", chunks=(5, 4), table_name=_name("rs"))
    try:
        a[:] = 7
        assert a.shape == (10, 4) and len(a) == 10
        p = CTX.Process(target=W.resize_to, args=(a.name, (20, 4), {"note": "grown"}))
        p.start()
        p.join(60)
        assert p.exitcode == 0
        assert a.shape == (20, 4) and len(a) == 20
        assert a.attrs["note"] == "grown"
        got = a[...]
        assert got.shape == (20, 4)
        np.testing.assert_array_equal(got[:10], 7)
        np.testing.assert_array_equal(got[10:], 0)
        a[15] = 3  # a write on the new shape, through this handle
        assert (a[15] == 3).all()
    finally:
        a.delete()


def test_delete_chunk_uses_the_shape_another_process_set():
    """delete_chunk, the first call of a handle after another process grew the array, may
    delete a chunk of the new part; and one beyond a shrink is refused, not deleted."""
    a = sz.zeros((10, 4), dtype="int32", chunks=(5, 4), table_name=_name("dc"))
    b = sz.open(a.name)
    try:
        grow = CTX.Process(target=W.resize_to, args=(a.name, (20, 4), {}))
        grow.start()
        grow.join(60)
        assert grow.exitcode == 0
        a[15:20] = 5  # chunk (3, 0), written through the handle that saw the resize
        b.delete_chunk((3, 0))  # b still holds the 10-row shape in its cache
        assert (3, 0) not in a.list_chunks()
        np.testing.assert_array_equal(a[15:20], 0)
        shrink = CTX.Process(target=W.resize_to, args=(a.name, (5, 4), {}))
        shrink.start()
        shrink.join(60)
        assert shrink.exitcode == 0
        with pytest.raises(IndexError):
            a.delete_chunk((1, 0))
    finally:
        b.close()
        a.delete()


def _run(target, *args) -> None:
    p = CTX.Process(target=target, args=args)
    p.start()
    p.join(60)
    assert p.exitcode == 0


def test_write_chunk_notices_a_resize_made_between_two_of_its_writes():
    """write_chunk skips its metadata checks while its handle wrote last (the table's
    operation sequence and write counter say so); a resize in another process in between
    is noticed: a chunk now outside the array is refused, one inside is written."""
    a = sz.zeros((20, 4), dtype="int32", chunks=(5, 4), table_name=_name("wq"))
    try:
        block = np.full((5, 4), 3, dtype="int32")
        for _ in range(3):  # the first write checks and remembers; the next ones skip
            a.write_chunk((3, 0), block)
            a.write_chunk((1, 0), block)
        _run(W.resize_to, a.name, (10, 4), {"note": "shrunk"})
        with pytest.raises(IndexError):
            a.write_chunk((3, 0), block)
        assert a.shape == (10, 4) and a.attrs["note"] == "shrunk"
        assert (3, 0) not in a.list_chunks()
        a.write_chunk((1, 0), block + 1)
        np.testing.assert_array_equal(a[5:10], 4)
        _run(W.resize_to, a.name, (20, 4), {})
        a.write_chunk((3, 0), block + 2)  # inside again
        np.testing.assert_array_equal(a[15:20], 5)
        np.testing.assert_array_equal(a[10:15], 0)
    finally:
        a.delete()


def test_write_chunk_while_only_this_handle_writes_reads_no_metadata(monkeypatch):
    a = sz.zeros((64, 64), dtype="float64", chunks=(8, 8), table_name=_name("wm"))
    try:
        backend = a.backend
        a.write_chunk((0, 0), np.ones((8, 8)))
        reads = []
        for what in ("read_metadata", "metadata_token"):
            method = getattr(backend, what)
            monkeypatch.setattr(backend, what, lambda m=method, w=what: reads.append(w) or m())
        for i in range(8):
            for j in range(8):
                a.write_chunk((i, j), np.full((8, 8), i * 8 + j, dtype="float64"))
        first = len(reads)  # the chunks' first writes check them (not (0, 0))
        for i in range(8):
            for j in range(8):
                a.write_chunk((i, j), np.full((8, 8), -(i * 8 + j), dtype="float64"))
        assert len(reads) == first  # no metadata lookups while nothing else wrote
        with a.table.writer():  # writes of one session: no lookups either
            for i in range(8):
                a.write_chunk((i, i), np.full((8, 8), 0.5))
            assert len(reads) == first
            a.attrs["inside"] = 1  # a metadata write in the session: looked at again
            a.write_chunk((0, 0), np.full((8, 8), 0.25))
        assert len(reads) > first and a.attrs["inside"] == 1
        first = len(reads)
        a.write_chunk((0, 2), np.full((8, 8), 0.75))
        assert a[0, 16] == 0.75 and a[0, 0] == 0.25 and a[9, 9] == 0.5
        b = sz.open(a.name)
        b.write_chunk((7, 7), np.zeros((8, 8)))  # another handle writes: looked at again
        b.close()
        a.write_chunk((0, 1), np.full((8, 8), 5.0))
        assert len(reads) > first
        got = a[...]
        assert got[0, 8] == 5.0 and got[63, 63] == 0.0 and got[8, 0] == -8.0
    finally:
        a.delete()


def test_insert_if_unchanged_writes_only_when_nothing_else_wrote():
    from sharedzarr import Table

    t = Table.create(_name("iu"))
    other = Table.attach(t.name)
    try:
        pk = t.prepare_key("k")
        first = t.insert_if_unchanged(pk, memoryview(b"one"), (-1, -1))
        assert first is None and t.get("k") is None  # a stale pair: nothing written
        with t.writer():
            t.insert("k", b"zero")
        since = (t.op_seq() + 1, t.write_token())  # what the next session opens at
        got = t.insert_if_unchanged(pk, memoryview(b"one"), since)
        assert got is not None and t.get("k") == b"one"
        got = t.insert_if_unchanged(pk, memoryview(b"two"), got)
        assert got is not None and t.get("k") == b"two"
        other.insert("x", b"1")  # another handle wrote
        assert t.insert_if_unchanged(pk, memoryview(b"three"), got) is None
        assert t.get("k") == b"two"
        with t.writer():  # a stale pair in a session of this thread: nothing written
            assert t.insert_if_unchanged(pk, memoryview(b"four"), got) is None
        assert t.get("k") == b"two"
        with t.writer():  # a current pair: written in the session, which keeps its pair
            inside = (t.op_seq(), t.write_token())
            got = t.insert_if_unchanged(pk, memoryview(b"five"), inside)
            assert got == (inside[0], t.write_token()) and t.get("k") == b"five"
            got = t.insert_if_unchanged(pk, memoryview(b"six"), got)
            assert got is not None and t.get("k") == b"six"
        assert t.insert_if_unchanged(pk, memoryview(b"seven"), got) is None  # closed since
    finally:
        other.close()
        t.delete_table()


def test_a_value_pin_holds_until_its_record_changes():
    """value_pin / value_pinned: a few word loads tell whether a key still has the record
    it had (the array's metadata check while two handles take turns writing)."""
    from sharedzarr import Table

    t = Table.create(_name("pin"))
    other = Table.attach(t.name)
    try:
        pk = t.prepare_key("meta")
        assert t.value_pin(pk) is None  # absent
        t.insert("meta", b"v1")
        pin = t.value_pin(pk)
        assert pin is not None and t.value_pinned(pin)
        other.insert("x", b"other keys do not move it")
        assert t.value_pinned(pin)
        other.insert("meta", b"v1")  # the same bytes, a new record
        assert not t.value_pinned(pin)
        pin = t.value_pin(pk)
        other.delete("meta")
        assert not t.value_pinned(pin)
        other.insert("meta", b"v2")  # back, possibly in the same slot
        assert not t.value_pinned(pin)
        pin = t.value_pin(pk)
        for i in range(2000):  # the index grows: a new generation
            other.insert(i, bytes(1024))
        assert not t.value_pinned(pin)
        pin = t.value_pin(pk)
        assert t.value_pinned(pin)
        for i in range(2000):
            other.delete(i)
        moves = t._H[L.H_RECLAIM]
        other.reclaim()  # 2 MiB of garbage beside it: the live records move
        assert t._H[L.H_RECLAIM] != moves and not t.value_pinned(pin)
        big = bytes(8192)  # a recyclable record: a rewrite may land at the same reference
        other.insert("big", big)
        bpk = t.prepare_key("big")
        same_ref = 0
        for _ in range(5):
            bpin = t.value_pin(bpk)
            for _ in range(3):  # the third rewrite may take the pinned record's room back
                time.sleep(2e-3)  # (past the grace period)
                other.insert("big", big)
            now = t.value_pin(bpk)
            same_ref += now is not None and now[3:] == bpin[3:]
            assert not t.value_pinned(bpin)
        assert same_ref  # the same slot and reference: only the reuse epoch tells
    finally:
        other.close()
        t.delete_table()
