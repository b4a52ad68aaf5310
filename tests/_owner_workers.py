"""Spawned workers for test_ownership_exit.py (importable by the spawned children)."""

from __future__ import annotations

import os
import time
from typing import Any

from sharedzarr._table import Table
from sharedzarr.errors import TableNotFoundError


def create_with_heir(name: str, heir: int, go: Any) -> None:
    """Create ``name`` with ``heir``, wait for ``go``, exit normally."""
    t = Table.create(name, heir=heir)
    t.insert("k", b"v")
    go.wait(60)


def create_and_give(name: str, attached: Any, to: Any, done: Any) -> None:
    """Create ``name``; once ``attached`` is set, give it to the pid in ``to``; exit."""
    t = Table.create(name)
    t.insert("k", b"v")
    attached.wait(60)
    t.give_away(to.value)
    done.set()


def attach_and_wait(name: str, attached: Any, until: Any, owns: Any) -> None:
    """Attach ``name`` once it exists (no write), signal ``attached``, wait for ``until``,
    store in ``owns`` whether this process owns the table, and exit normally."""
    deadline = time.monotonic() + 60
    while True:
        try:
            t = Table.attach(name)
            break
        except TableNotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    attached.set()
    until.wait(60)
    owns.value = int(t.is_owner)


def give_to_myself(name: str) -> int:
    """Create ``name``, give it to this very process, exit normally."""
    t = Table.create(name)
    t.insert("k", b"v")
    t.give_away(os.getpid())
    return os.getpid()
