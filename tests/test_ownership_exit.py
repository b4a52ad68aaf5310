"""A table goes with its owner's normal exit however the ownership arrived: created,
inherited by an heir that was already attached, given to an attached process, or given
by a process to itself.  Real spawned processes, none of which writes after it owns."""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import time

import _owner_workers as W

from sharedzarr._table import Table
from sharedzarr.storage.shm import table_exists

CTX = mp.get_context("spawn")


def _name() -> str:
    return f"own-{secrets.token_hex(4)}"


def _segments(name: str) -> list[str]:
    return [f for f in os.listdir("/dev/shm") if f.startswith(f"sz.{name}.")]


def _gone(name: str) -> bool:
    """True once the table's segments are gone.  Looks at /dev/shm only: a probe such as
    ``table_exists`` would itself reap an orphan and hide a table left behind."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not _segments(name):
            return True
        time.sleep(0.05)
    return False


def _attached(name: str) -> tuple[mp.process.BaseProcess, object, object, object]:
    attached, until, owns = CTX.Event(), CTX.Event(), CTX.Value("i", -1)
    p = CTX.Process(target=W.attach_and_wait, args=(name, attached, until, owns))
    p.start()
    return p, attached, until, owns


def test_an_attached_heir_that_inherits_deletes_the_table_at_its_exit(cleanup) -> None:
    name = _name()
    cleanup.append(name)
    heir, attached, until, owns = _attached(name)
    go = CTX.Event()
    owner = CTX.Process(target=W.create_with_heir, args=(name, heir.pid, go))
    owner.start()
    assert attached.wait(60)
    go.set()
    owner.join()  # a normal exit: the live heir owns the table now
    assert owner.exitcode == 0 and table_exists(name)
    t = Table.attach(name)
    assert t.owner_pid == heir.pid
    t.close()
    until.set()
    heir.join(60)
    assert heir.exitcode == 0 and owns.value == 1
    assert _gone(name)  # the heir exited normally, without a write as the owner


def test_an_attached_process_given_the_table_deletes_it_at_its_exit(cleanup) -> None:
    name = _name()
    cleanup.append(name)
    other, attached, until, owns = _attached(name)
    done, to = CTX.Event(), CTX.Value("q", other.pid)
    owner = CTX.Process(target=W.create_and_give, args=(name, attached, to, done))
    owner.start()
    assert done.wait(60)
    owner.join()
    assert owner.exitcode == 0 and _segments(name)  # left to the new owner
    until.set()
    other.join(60)
    assert other.exitcode == 0 and owns.value == 1
    assert _gone(name)


def test_a_table_given_to_its_own_process_goes_at_exit(cleanup) -> None:
    name = _name()
    cleanup.append(name)
    p = CTX.Process(target=W.give_to_myself, args=(name,))
    p.start()
    p.join()
    assert p.exitcode == 0
    assert _gone(name)
