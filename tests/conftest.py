"""Shared fixtures: every test must leave /dev/shm as it found it."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

SHM = "/dev/shm"


def _ours() -> set[str]:
    try:
        names = os.listdir(SHM)
    except FileNotFoundError:
        return set()
    ignore = os.environ.get("SHAREDZARR_LEAK_IGNORE")  # for concurrent runs on a dev box
    return {
        n
        for n in names
        if (n.startswith("sz.") or n.startswith("sem.sz."))
        and not (ignore and n.startswith(ignore))
    }


def _table_of(entry: str) -> str:
    rest = entry[3:]
    for suffix in (".hdr",):
        if rest.endswith(suffix):
            return rest[: -len(suffix)]
    head, _, tail = rest.rpartition(".")
    if tail.isdigit() and head.endswith(".idx"):
        return head[:-4]
    return head


def _ancestors(pid: int) -> set[int]:
    out = set()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def _foreign(entry: str) -> bool:
    """True for an entry of a table owned by a live process outside this test run.

    Lets several test runs share a development machine; in CI nothing is foreign.
    """
    if not entry.startswith("sz."):
        return False
    try:
        with open(os.path.join(SHM, f"sz.{_table_of(entry)}.hdr"), "rb") as f:
            raw = f.read(32)
        owner = int.from_bytes(raw[24:32], "little")
    except (OSError, ValueError):
        return False
    if owner <= 0 or not os.path.exists(f"/proc/{owner}"):
        return False
    return os.getpid() not in _ancestors(owner)


@pytest.fixture
def cleanup():
    """Table names appended here are deleted after the test (by this process, their owner)."""
    from sharedzarr.storage.shm import delete_table, table_exists

    names: list[str] = []
    yield names
    for n in names:
        if table_exists(n):
            delete_table(n)


@pytest.fixture(autouse=True)
def no_shm_leaks():
    """Fail a test that leaves a segment or semaphore of ours in /dev/shm."""
    before = _ours()
    yield
    # children may still be exiting (atexit cleanup); give them a moment
    deadline = time.monotonic() + 5.0
    leaked = _ours() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = _ours() - before
    leaked = {n for n in leaked if not _foreign(n)}
    if leaked:
        for n in leaked:  # clean up so one leak does not fail every later test
            try:
                os.unlink(os.path.join(SHM, n))
            except OSError:
                pass
        pytest.fail(f"test leaked shared-memory entries: {sorted(leaked)}")


@pytest.fixture
def table():
    """A new table of its own, deleted after the test (unless the test closed it)."""
    from sharedzarr._table import Table

    t = Table.create()
    yield t
    if not t._closed:
        t.delete_table()
