"""A handle opened read-only never writes: ``Table.attach(readonly=True)`` and
``sz.open(mode="r")`` (and its ``.table``) raise AccessDeniedError on every write, in
the owner's process as in another, and the table is unchanged."""

from __future__ import annotations

import multiprocessing as mp
import uuid

import pytest

import sharedzarr as sz
from sharedzarr import Table
from sharedzarr.errors import AccessDeniedError

CTX = mp.get_context("spawn")

WRITES = {
    "insert": lambda t: t.insert("k", b"x"),
    "delete": lambda t: t.delete("k"),
    "clear": lambda t: t.clear(),
    "writer": lambda t: t.writer().__enter__(),
    "give_away": lambda t: t.give_away(__import__("os").getpid()),
    "set_heir": lambda t: t.set_heir(None),
    "persist": lambda t: t.persist(),
}


def _try_writes(name: str) -> dict[str, str]:
    out = {}
    for what, op in WRITES.items():
        t = Table.attach(name, readonly=True)
        try:
            op(t)
            out[what] = "wrote"
        except AccessDeniedError as e:
            owner_only = what in ("give_away", "set_heir", "persist") and "only the owner" in str(e)
            out[what] = "denied" if "read-only" in str(e) or owner_only else f"denied: {e}"
        finally:
            t.close()
    a = sz.open(name, mode="r")
    for what, op in (
        ("array", lambda: a.__setitem__(0, 1.0)),
        ("table", lambda: a.table.insert("z", b"1")),
    ):
        try:
            op()
            out[what] = "wrote"
        except AccessDeniedError:
            out[what] = "denied"
    a.close()
    return out


@pytest.mark.parametrize("where", ["owner", "other process"])
def test_read_only_handles_never_write(cleanup, where: str) -> None:
    name = f"ro-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    a = sz.create((4,), chunks=(4,), dtype="f8", table_name=name)
    a[:] = 2.0
    a.table.insert("k", b"v")
    if where == "owner":
        out = _try_writes(name)
    else:
        with CTX.Pool(1) as pool:
            out = pool.apply(_try_writes, (name,))
    assert set(out.values()) == {"denied"}, out
    assert a[:].tolist() == [2.0] * 4 and a.table.get("k") == b"v" and "z" not in a.table
    a.close()
