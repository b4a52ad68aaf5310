"""Damage gives typed errors, never raw ones: an unparsable record (items, keys, in set
and bag tables) is a CorruptTableError, and a symbolic link planted at a table's header
name is a CorruptTableError naming the link (attach, open, delete_table, `sharedzarr rm`)."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import uuid

import pytest

import sharedzarr as sz
from sharedzarr import Table
from sharedzarr._index import encode_key
from sharedzarr.errors import CorruptTableError
from sharedzarr.storage import shm


@pytest.mark.parametrize("table_type", ["set", "bag"])
def test_an_unparsable_record_is_corrupt_not_struct_error(cleanup, table_type: str) -> None:
    name = f"rec-{uuid.uuid4().hex[:8]}"
    cleanup.append(name)
    t = Table.create(name, table_type=table_type)
    t.insert("k", b"v" * 100)
    t.insert("j", b"w" * 100)
    with open(f"/dev/shm/sz.{name}.a1", "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        pos = bytes(mm[: 1 << 20]).find(encode_key("k"))
        off = ((pos - 16) // 64) * 64  # the record's header
        mm[off + 8 : off + 16] = b"\xff" * 8  # key length and value count: nonsense
    for op in (lambda: t.items(), lambda: t.keys(), lambda: list(t)):
        with pytest.raises(CorruptTableError, match="damaged"):
            op()
    t.delete_table()


@pytest.fixture
def planted(cleanup: list[str]):
    name = f"lnk-{uuid.uuid4().hex[:8]}"
    link = f"/dev/shm/sz.{name}.hdr"
    os.symlink("/etc/hostname", link)
    yield name
    os.unlink(link)


def test_a_symlink_at_a_header_name_is_a_typed_error(planted: str) -> None:
    for op in (
        lambda: Table.attach(planted),
        lambda: sz.open(planted),
        lambda: shm.delete_table(planted),
    ):
        with pytest.raises(CorruptTableError, match="symbolic link"):
            op()
    r = subprocess.run(
        [sys.executable, "-m", "sharedzarr", "rm", planted], capture_output=True, text=True
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "symbolic link" in r.stderr
    assert os.path.islink(f"/dev/shm/sz.{planted}.hdr")  # followed nowhere, removed by no one
