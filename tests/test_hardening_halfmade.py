"""A table whose creator was killed before it wrote the header's magic does not block its
name: ``table_exists`` is False, ``create(overwrite=True)`` (and a plain create) replace
it, and ``gc`` reaps it; while its creator lives (holding the creation lock), nothing
touches it.  The creator is a real process SIGKILLed at the engine's crash point."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
import uuid

import sharedzarr as sz
from sharedzarr.storage import shm

CHILD = "import sys, sharedzarr as sz; sz.create((4,), chunks=(4,), table_name=sys.argv[1])"


def _half_made(name: str) -> None:
    env = dict(os.environ, SHAREDZARR_CRASH_AT="create.header", SHAREDZARR_CRASH_AFTER="0")
    r = subprocess.run([sys.executable, "-c", CHILD, name], env=env, timeout=60)
    assert r.returncode == -9
    assert os.path.exists(f"/dev/shm/sz.{name}.hdr")
    time.sleep(2.1)  # older than the grace a live creator gets to take its lock


def _segments(name: str) -> list[str]:
    return [f for f in os.listdir("/dev/shm") if f.startswith(f"sz.{name}.")]


def test_overwrite_replaces_a_half_made_table(cleanup) -> None:
    name = f"half-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    _half_made(name)
    assert shm.table_exists(name) is False
    a = sz.create((3,), chunks=(3,), table_name=name, overwrite=True)
    a[:] = 1.0
    assert sz.open(name)[:].tolist() == [1.0] * 3
    a.delete()


def test_gc_reaps_a_half_made_table_only_once_its_creator_is_gone(cleanup) -> None:
    name = f"half-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    _half_made(name)
    fd = os.open(f"/dev/shm/sz.{name}.hdr", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a live creator holds it
        assert name not in shm.gc()
        assert _segments(name)
    finally:
        os.close(fd)
    assert name in shm.gc()
    assert not _segments(name)
