"""Threads sharing one handle: while one thread replaces the index (growth, clear, a
reload after another process grew it) or drops mappings (reclaim), the others never see a
released view, a closed mapping or a stale index.  Real threads, with a short switch
interval so that they interleave inside the engine's calls, and a real second process."""

from __future__ import annotations

import collections
import random
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import sharedzarr as sz
from sharedzarr._table import Table

SECONDS = 4.0


@pytest.fixture
def interleaved() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


def _hammer(jobs: list[tuple[str, Callable[[], None]]]) -> tuple[dict[str, int], list[str]]:
    """Run each job in its own thread in a loop for SECONDS; count ops, collect errors."""
    stop = time.monotonic() + SECONDS
    ops: collections.Counter[str] = collections.Counter()
    errors: list[str] = []

    def loop(kind: str, fn: Callable[[], None]) -> None:
        while time.monotonic() < stop:
            try:
                fn()
                ops[kind] += 1
            except Exception:  # noqa: BLE001 - collected and reported by the test
                errors.append(traceback.format_exc())

    threads = [threading.Thread(target=loop, args=job) for job in jobs]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return dict(ops), errors


def test_threads_sharing_a_table_handle(cleanup, interleaved) -> None:
    name = f"thr-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    t = Table.create(name)

    def value(k: int) -> bytes:
        return str(k).encode() * 10

    def reader() -> None:
        k = random.randrange(5000)
        v = t.get(k)
        assert v is None or v == value(k), (k, v)
        w = t.get(k, copy=False)
        assert w is None or bytes(w) == value(k), (k, w)
        t.lookup(random.randrange(5000))

    def writer() -> None:  # grows the index again and again, and clears it
        for _ in range(200):
            k = random.randrange(5000)
            t.insert(k, value(k))
        if random.random() < 0.05:
            t.clear()

    def deleter() -> None:  # tombstones, compaction, retired arenas unmapped
        t.delete(random.randrange(5000))
        if random.random() < 0.01:
            t.reclaim()

    ops, errors = _hammer([("read", reader), ("read", reader), ("write", writer), ("del", deleter)])
    assert not errors, f"{len(errors)} errors, first:\n{errors[0]}"
    assert ops.get("read", 0) > 1000 and ops.get("write", 0) > 10, ops
    t.delete_table()


def test_threads_sharing_handles_while_another_process_rebuilds(cleanup, interleaved) -> None:
    name = f"thr-{uuid.uuid4().hex[:8]}"
    cleanup.extend([name, name + "-t"])
    a = sz.create((64, 256), chunks=(8, 64), dtype="int64", table_name=name)
    a[:] = 0
    t = Table.create(name + "-t")
    other = subprocess.Popen(  # grows and clears the index from outside: reloads here
        [
            sys.executable,
            "-c",
            "import random, time; from sharedzarr._table import Table\n"
            f"t = Table.attach({name + '-t'!r}); end = time.monotonic() + {SECONDS}\n"
            "while time.monotonic() < end:\n"
            "    for i in range(300): t.insert(random.randrange(100000), b'e' * 100)\n"
            "    if random.random() < 0.2: t.clear()\n",
        ]
    )

    def array_reader() -> None:
        x = np.asarray(a)
        assert (x == x[0, 0]).all(), "a whole-array read mixed two writes"
        a[np.array([1, 5, 9])]
        a.read_chunk((0, 0))

    def array_writer() -> None:
        a[...] = random.randrange(1000)

    def table_reader() -> None:
        for v in (t.get(random.randrange(100000)), t.get(random.randrange(100000), copy=False)):
            assert v is None or bytes(v) in (b"e" * 100, b"w" * 50)

    def table_writer() -> None:
        t.insert(random.randrange(100000), b"w" * 50)

    try:
        ops, errors = _hammer(
            [
                ("aread", array_reader),
                ("aread", array_reader),
                ("awrite", array_writer),
                ("tread", table_reader),
                ("tread", table_reader),
                ("twrite", table_writer),
            ]
        )
    finally:
        other.wait(timeout=60)
    assert other.returncode == 0
    assert not errors, f"{len(errors)} errors, first:\n{errors[0]}"
    assert min(ops.get(k, 0) for k in ("aread", "awrite", "tread", "twrite")) > 10, ops
    a.delete()
    t.delete_table()
