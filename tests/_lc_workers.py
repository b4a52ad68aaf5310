"""Child-process functions for the lifecycle and access tests (must be importable by spawn)."""

from __future__ import annotations

import os
import pwd
import signal
import time
from typing import Any

import numpy as np

import sharedzarr as sz
from sharedzarr._table import Table
from sharedzarr.storage import shm


def to_queue(q: Any, fn: Any, *args: Any) -> None:
    """Run ``fn(*args)`` and put ``("ok", result)`` or ``("error", repr)`` on ``q``."""
    try:
        q.put(("ok", fn(*args)))
    except BaseException as e:  # noqa: BLE001 - reported to the test
        q.put(("error", repr(e)))
        raise


def sleeper(seconds: float = 600.0) -> None:
    """Just be a live process (an heir, or an unrelated pid)."""
    time.sleep(seconds)


def _exc(fn: Any) -> str:
    """Run ``fn``; return ``"ok"`` or the name of the exception class it raised."""
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 - the test inspects the class
        return type(e).__name__
    return "ok"


def create_wait_exit(
    name: str, heir: int | None, persistent: bool, ready: Any, go: Any, how: str
) -> None:
    """Create a table, signal ``ready``, wait for ``go``, then exit the way ``how`` says."""
    t = Table.create(name, heir=heir, persistent=persistent)
    t.insert("k", b"v")
    ready.set()
    go.wait(120)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)


def create_array_exit(name: str, persistent: bool, access: str) -> None:
    """Create a small array table with two chunks written, then return normally."""
    a = sz.create(
        shape=(20,),
        chunks=(10,),
        dtype="int64",
        table_name=name,
        persistent=persistent,
        access=access,
    )
    a[:] = np.arange(20)


def take_over(name: str, got: Any, go: Any) -> dict[str, Any]:
    """Wait until ``got`` (the parent gave us the table), attach, write, report, exit."""
    got.wait(120)
    t = Table.attach(name)
    out = {"is_owner": t.is_owner, "owner_pid": t.owner_pid}
    out["write"] = _exc(lambda: t.insert("from_child", b"c"))
    go.wait(120)
    return out


def take_over_array(name: str, go: Any) -> dict[str, Any]:
    """Once ``go``: open an array given to us, write one chunk, report; exiting deletes it."""
    go.wait(120)
    a = sz.open(name)
    out = {"is_owner": a.table.is_owner}
    out["write"] = _exc(lambda: a.write_chunk((1,), np.full(10, 7)))
    return out


def second_process_view(name: str) -> dict[str, Any]:
    """Everything another process can and cannot do with a table holding an array."""
    out: dict[str, Any] = {"exists": shm.table_exists(name)}
    out["attach"] = _exc(lambda: Table.attach(name).close())
    out["open"] = _exc(lambda: sz.open(name).close())
    out["get_state"] = _exc(lambda: shm.get_state(name))
    try:
        info = shm.table_info(name)
        out["info_owner"] = info.owner
        out["info_array"] = info.array
    except BaseException as e:  # noqa: BLE001
        out["info_owner"] = type(e).__name__
    if out["attach"] != "ok":
        return out
    a = sz.open(name)
    t = a.table
    out["values"] = a[:].tolist()
    view = a.read_chunk((0,), copy=False)
    out["view_values"] = view.tolist()
    out["view_writeable"] = bool(view.flags.writeable)
    out["make_view_writeable"] = _exc(lambda: setattr(view.flags, "writeable", True))
    raw = t.get(("chunk", (0,)), copy=False)
    out["raw_readonly"] = raw.readonly
    out["arenas_readonly"] = all(s.readonly for s in t._arenas.values()) and bool(t._arenas)
    arena = next(iter(t._arenas.values()))
    mapped = np.frombuffer(arena.buf, dtype=np.uint8)
    out["mapping_writeable"] = bool(mapped.flags.writeable) or _mapped_writable(arena)
    out["make_mapping_writeable"] = _exc(lambda: setattr(mapped.flags, "writeable", True))
    out["set_slice"] = _exc(lambda: a.__setitem__(slice(0, 10), 5))
    out["write_chunk"] = _exc(lambda: a.write_chunk((0,), np.zeros(10, dtype="int64")))
    out["delete_chunk"] = _exc(lambda: a.delete_chunk((1,)))
    out["table_insert"] = _exc(lambda: t.insert("x", b"y"))
    if t.access != "public":  # a public table may be deleted by anyone
        out["table_delete"] = _exc(lambda: t.delete_table())
    out["attrs"] = _exc(lambda: a.attrs.__setitem__("k", 1))
    out["values_after"] = a[:].tolist()
    a.close()
    return out


def as_user(user: str, name: str) -> dict[str, Any]:
    """Drop to ``user`` (we start as root), then try everything on table ``name``."""
    pw = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    out: dict[str, Any] = {"uid": os.getuid()}

    out["exists"] = shm.table_exists(name)
    owner = os.stat(f"/dev/shm/sz.{name}.hdr").st_uid
    # another user's table: refused unless its user is named (names are not bound to users)
    try:
        Table.attach(name, readonly=True)
        out["untrusted"] = "ok"
    except Exception as e:  # noqa: BLE001
        out["untrusted"] = f"{type(e).__name__}: {e}"
    out["open_untrusted"] = _exc(lambda: sz.open(name, mode="r").close())
    out["attach"] = _exc(lambda: Table.attach(name, trusted_uid=owner).close())
    out["attach_ro"] = _exc(lambda: Table.attach(name, readonly=True, trusted_uid=owner).close())
    out["open"] = _exc(lambda: sz.open(name, trusted_uid=owner).close())
    out["open_r"] = _exc(lambda: sz.open(name, mode="r", trusted_uid=owner).close())
    out["get_state"] = _exc(lambda: shm.get_state(name))
    out["table_info"] = _exc(lambda: shm.table_info(name))
    out["clear_table"] = _exc(lambda: shm.clear_table(name))
    out["delete_table"] = _exc(lambda: shm.delete_table(name))
    out["gc"] = _exc(lambda: shm.gc(dry_run=False))
    out["create_same_name"] = _exc(lambda: Table.create(name))
    if out["attach"] == "ok":
        t = Table.attach(name, trusted_uid=owner)
        out["insert"] = _exc(lambda: t.insert("x", b"y"))
        a = sz.open(name, trusted_uid=owner)
        out["values"] = a[:].tolist()
        # may not mark the data segment (no write permission): a zero-copy read is a copy
        out["view"] = a.read_chunk((0,), copy=False).tolist()
        out["set_slice"] = _exc(lambda: a.__setitem__(slice(0, 10), 1))
        out["handle_delete"] = _exc(lambda: t.delete_table())
        a.close()
        t.close()
    return out


def _mapped_writable(seg: Any) -> bool:
    """Whether the kernel maps the segment writable here (``/proc/self/maps`` permissions)."""
    import ctypes

    addr = ctypes.addressof(seg.mm)
    with open("/proc/self/maps") as f:
        for line in f:
            rng, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in rng.split("-"))
            if lo <= addr < hi:
                return "w" in perms
    raise AssertionError("the segment is not mapped")


def hold_then_read(name: str, ready: Any, go: Any) -> list[str]:
    """Attach (table and array), signal, wait until the table is deleted, then try again."""
    t = Table.attach(name)
    a = sz.open(name)
    view = t.get(("chunk", (0,)), copy=False)
    before = bytes(view)
    ready.set()
    go.wait(120)
    out = [
        _exc(lambda: t.lookup(("chunk", (0,)))),
        _exc(lambda: t.insert("k", b"v")),
        _exc(lambda: len(t)),
        _exc(lambda: t.keys()),
        _exc(lambda: a[:]),
        _exc(lambda: a.__setitem__(0, 1)),
        _exc(lambda: Table.attach(name)),
        "view-ok" if bytes(view) == before else "view-changed",
    ]
    del view
    return out


def fork_child_reads(t: Table, expect: dict) -> None:
    """In a forked child: read through the inherited handle and a fresh one, then exit."""
    assert not t.is_owner
    for k, v in expect.items():
        assert t.lookup(k) == [v], k
    with Table.attach(t.name) as u:
        for k, v in expect.items():
            assert u.get(k) == v
    t.close()  # closing the inherited handle must not touch the parent's lock or table


def fork_child_writes(t: Table) -> None:
    """In a forked child: write through the inherited handle (its own lock description)."""
    with t.writer(timeout=30):
        t.insert("from_fork", b"f")


def fork_child_creates(name: str) -> None:
    """In a forked child of an owner: create a table of its own and exit normally."""
    t = Table.create(name)
    t.insert("k", b"v")


def try_write(name: str, timeout: float) -> str:
    """Attach and try to take the writer lock within ``timeout``."""
    with Table.attach(name) as t:

        def w() -> None:
            with t.writer(timeout=timeout):
                t.insert("third", b"3")

        return _exc(w)


def attach_write_exit(name: str) -> bool:
    """Attach to someone else's table, write, exit normally; return whether we owned it."""
    t = Table.attach(name)
    t.insert("visitor", b"v")
    a_owner = t.is_owner
    return a_owner


def cli_as_user(user: str, argv: list[str]) -> tuple[int, str, str]:
    """Drop to ``user``, run ``sharedzarr argv`` in this process; return (status, out, err).

    (A fresh ``sharedzarr`` process as ``nobody`` cannot run here when the
    interpreter lives under a directory only root may enter, e.g. /root/.pyenv.)
    """
    import contextlib
    import io

    from sharedzarr import cli

    pw = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()
