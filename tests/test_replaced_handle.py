"""A handle whose table was replaced (``create(..., overwrite=True)`` from another
process) says so on its next call, and how to reach the new table."""

from __future__ import annotations

import multiprocessing as mp
import uuid

import pytest

import sharedzarr as sz
from sharedzarr.errors import TableNotFoundError

CTX = mp.get_context("spawn")


def _replace(name: str) -> None:
    a = sz.create((4,), chunks=(4,), table_name=name, overwrite=True, persistent=True)
    a[:] = 2.0
    a.close()


def test_a_replaced_table_tells_the_old_handle_to_reopen(cleanup) -> None:
    name = f"repl-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    a = sz.create((4,), chunks=(4,), table_name=name, persistent=True)
    a[:] = 1.0
    old = sz.open(name)
    p = CTX.Process(target=_replace, args=(name,))
    p.start()
    p.join()
    assert p.exitcode == 0
    for op in (lambda: old[:], lambda: old.__setitem__(0, 5.0), lambda: a[:]):
        with pytest.raises(TableNotFoundError, match="replaced") as e:
            op()
        assert f"sharedzarr.open({name!r})" in str(e.value)
    with sz.open(name) as new:
        assert new[:].tolist() == [2.0] * 4
        new.delete()
