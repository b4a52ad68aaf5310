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
