"""Names are not bound to users: a table another user created (a planted ``prices``) is
not opened unless its user is named with ``trusted_uid``.  A real second user (setuid in
a spawned child)."""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets

import _trust_workers as W
import pytest

import sharedzarr as sz
from sharedzarr.storage import shm

CTX = mp.get_context("spawn")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as nobody")


def test_a_planted_table_of_another_user_is_refused_unless_trusted() -> None:
    name = f"trust-{secrets.token_hex(4)}"
    with CTX.Pool(1) as pool:
        uid = pool.apply(W.plant_as, ("nobody", name))
    try:
        with pytest.raises(sz.errors.AccessDeniedError, match=f"trusted_uid={uid}"):
            sz.open(name)
        with pytest.raises(sz.errors.AccessDeniedError, match="not bound to users"):
            sz.Table.attach(name, readonly=True)
        with sz.open(name, mode="r", trusted_uid=uid) as a:  # the caller opts in
            assert a[:].tolist() == [666] * 8
        assert shm.table_info(name).name == name  # inspection needs no trust
    finally:
        sz.Table.attach(name, trusted_uid=uid).delete_table()
