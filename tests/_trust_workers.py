"""Spawned workers for test_trust.py: act as another user."""

from __future__ import annotations

import os
import pwd

import sharedzarr as sz


def plant_as(user: str, name: str) -> int:
    """As ``user``, create array ``name`` readable and writable by all (0o666), holding
    forged data, persistent so it outlives this process; return the user's uid."""
    pw = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    a = sz.create(
        (8,), chunks=(8,), dtype="int64", table_name=name, permissions=0o666, persistent=True
    )
    a[:] = 666
    a.close()
    return pw.pw_uid


def _become(user: str) -> int:
    pw = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    return pw.pw_uid


def plant_files_as(user: str | None, names: list[str], size: int) -> int:
    """As ``user`` (None: as is), create each ``/dev/shm/<name>``, mode 0o666, holding
    ``size`` bytes of 0xAB; return the uid that owns them."""
    uid = _become(user) if user else os.geteuid()
    for n in names:
        fd = os.open(f"/dev/shm/{n}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
        try:
            os.fchmod(fd, 0o666)
            os.write(fd, b"\xab" * size)
        finally:
            os.close(fd)
    return uid


def table_workload(name: str, user: str | None = None) -> str:
    """As ``user`` (None: as is), create table ``name`` and work it hard: grow its index,
    fill several data segments, overwrite (compaction, reuse), clear, refill; check every
    value; delete it.  Returns "ok" or the error's type and message."""
    from sharedzarr._table import Table

    if user:
        _become(user)
    try:
        t = Table.create(name)
        try:
            for rnd in range(3):
                with t.writer():
                    for i in range(1500):
                        t.insert(i, bytes([rnd]) * 4096)
                for i in range(0, 1500, 97):
                    assert t.lookup(i) == [bytes([rnd]) * 4096], (rnd, i)
            t.reclaim()
            t.clear()
            for i in range(300):
                t.insert(("k", i), b"z" * 100_000)
            assert all(t.lookup(("k", i)) == [b"z" * 100_000] for i in range(300))
            assert len(t) == 300
        finally:
            t.delete_table()
    except Exception as e:  # noqa: BLE001 - reported to the test
        return f"{type(e).__name__}: {e}"
    return "ok"
