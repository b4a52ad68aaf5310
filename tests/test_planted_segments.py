"""Another user's files planted among a table's segment names are never mapped, adopted,
reused or unlinked, and do not stop the table: a real second user (setuid in a spawned
child) plants them, the table works around them."""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets
from collections.abc import Iterator

import _trust_workers as W
import pytest

CTX = mp.get_context("spawn")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as nobody")

SIZE = 8192


def _planted(name: str) -> list[str]:
    return [f"sz.{name}.a{i}" for i in range(1, 25)] + [f"sz.{name}.idx.{g}" for g in range(1, 13)]


def _intact(names: list[str], uid: int) -> list[str]:
    """The planted files that are not as planted (gone, another owner, other bytes)."""
    bad = []
    for n in names:
        p = f"/dev/shm/{n}"
        try:
            st = os.stat(p, follow_symlinks=False)
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            bad.append(n)
            continue
        if st.st_uid != uid or data != b"\xab" * SIZE:
            bad.append(n)
    return bad


@pytest.fixture
def planted_cleanup() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for n in names:
        try:
            os.unlink(f"/dev/shm/{n}")
        except FileNotFoundError:
            pass


def test_a_table_never_adopts_or_removes_another_users_files(planted_cleanup) -> None:
    name = f"plant-{secrets.token_hex(4)}"
    names = _planted(name)
    planted_cleanup.extend(names)
    with CTX.Pool(1) as pool:  # another user plants the table's next names first
        uid = pool.apply(W.plant_files_as, ("nobody", names, SIZE))
    assert uid != 0
    # root's table works around them: never maps, adopts, reuses, renames or unlinks them
    assert W.table_workload(name) == "ok"
    assert _intact(names, uid) == []
    assert sorted(f for f in os.listdir("/dev/shm") if f.startswith(f"sz.{name}.")) == sorted(names)


def test_planted_next_names_do_not_stop_another_users_table(planted_cleanup) -> None:
    name = f"plant-{secrets.token_hex(4)}"
    names = _planted(name)
    planted_cleanup.extend(names)
    uid = W.plant_files_as(None, names, SIZE)  # root plants; nobody can't remove them
    with CTX.Pool(1) as pool:
        out = pool.apply(W.table_workload, (name, "nobody"))
    assert out == "ok"
    assert _intact(names, uid) == []
