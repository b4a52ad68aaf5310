"""A table is deleted by its identity, never by its name alone; a stale writer or a slow
prober cannot damage the table that takes the name next; liveness holds across PID
namespaces; a forked child does not keep its dead parent's table alive.

Real processes throughout: the races are put exactly in place with the engine's pause
points (``SHAREDZARR_PAUSE_AT``: the process stops itself there until SIGCONT).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sharedzarr import _proc
from sharedzarr._table import Table, probe
from sharedzarr.errors import TableExistsError
from sharedzarr.storage.shm import table_exists


def _name() -> str:
    return f"idn-{secrets.token_hex(4)}"


def _segments(name: str) -> list[str]:
    return sorted(f for f in os.listdir("/dev/shm") if f.startswith(f"sz.{name}."))


def _spawn(code: str, pause_at: str | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("SHAREDZARR_PAUSE_AT", None)
    if pause_at:
        env["SHAREDZARR_PAUSE_AT"] = pause_at
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_stopped(p: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert p.poll() is None, p.communicate()
        with open(f"/proc/{p.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.01)
    raise AssertionError("the process never reached its pause point")


def _orphan(name: str) -> None:
    """Create table ``name`` in a process that is then SIGKILLed: an orphan."""
    p = _spawn(
        f"""
        import sys, time
        from sharedzarr._table import Table
        t = Table.create({name!r})
        t.insert("old", b"x")
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGKILL)
    p.wait()


def _prober(name: str) -> subprocess.Popen[str]:
    """A process that probes ``name`` and stops right after deciding to reap it."""
    p = _spawn(
        f"""
        from sharedzarr._table import probe
        print(probe({name!r}), flush=True)
        """,
        pause_at="reap.decided",
    )
    _wait_stopped(p)
    return p


def test_a_slow_prober_does_not_delete_the_table_that_took_the_name(cleanup) -> None:
    name = _name()
    cleanup.append(name)
    _orphan(name)
    prober = _prober(name)  # decided: the owner is dead, delete
    # meanwhile the orphan is reaped and a new table takes the name
    t = Table.create(name)
    t.insert("new", b"y")
    os.kill(prober.pid, signal.SIGCONT)
    out, err = prober.communicate(timeout=60)
    assert prober.returncode == 0, err
    assert table_exists(name)
    assert t.lookup("new") == [b"y"]
    other = Table.attach(name)
    assert other.lookup("new") == [b"y"]
    other.close()
    t.delete_table()


def test_a_slow_prober_checks_its_decision_again_under_the_lock(cleanup) -> None:
    name = _name()
    cleanup.append(name)
    _orphan(name)
    prober = _prober(name)  # decided: the owner is dead, delete
    # meanwhile the table gets a live owner (an heir's promotion the prober's read missed)
    me = _proc.current()
    fd = os.open(f"/dev/shm/sz.{name}.hdr", os.O_RDWR)
    try:
        os.pwrite(fd, me[1].to_bytes(8, "little"), 32)
        os.pwrite(fd, me[0].to_bytes(8, "little"), 24)
    finally:
        os.close(fd)
    os.kill(prober.pid, signal.SIGCONT)
    out, err = prober.communicate(timeout=60)
    assert prober.returncode == 0, err
    assert out.strip() == "alive"
    t = Table.attach(name)
    assert t.is_owner and t.lookup("old") == [b"x"]
    t.delete_table()


def test_a_stopped_writer_cannot_damage_the_next_table_of_its_name(cleanup) -> None:
    name = _name()
    cleanup.append(name)
    t = Table.create(name)
    t.insert("a", b"1")
    # a public writer in a long bulk insert, stopped (SIGSTOP) while it holds the lock,
    # just before the index grows: its next steps create idx.<gen+1> and unlink idx.<gen>
    writer = _spawn(
        f"""
        from sharedzarr._table import Table
        from sharedzarr.errors import TableNotFoundError
        t = Table.attach({name!r})
        try:
            with t.writer():
                for i in range(1000):
                    t.insert(i, b"v")
        except TableNotFoundError:
            print("stopped: deleted", flush=True)
        """,
        pause_at="grow.start",
    )
    _wait_stopped(writer)
    t.delete_table()  # cannot get the lock (2 s): marks it deleted, removes its data
    assert not table_exists(name)
    with pytest.raises(TableExistsError, match=rf"pid {writer.pid}.*still inside") as e:
        Table.create(name)
    assert e.value.writer_pid == writer.pid
    os.kill(writer.pid, signal.SIGCONT)
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert out.strip() == "stopped: deleted"
    # the writer left: the name is free, and the new table is whole
    t2 = Table.create(name)
    t2.insert("b", b"2")
    other = Table.attach(name)
    assert other.lookup("b") == [b"2"] and len(other) == 1
    other.close()
    t2.delete_table()
    assert _segments(name) == []


def test_a_reaper_never_deletes_a_table_a_live_writer_is_inside(cleanup) -> None:
    name = _name()
    cleanup.append(name)
    _orphan(name)
    writer = _spawn(
        f"""
        from sharedzarr._table import Table
        t = Table._attach_for_admin({name!r})
        t._remap(readonly=False)
        with t.writer():
            for i in range(1000):
                t.insert(i, b"v")
        print("done", flush=True)
        """,
        pause_at="grow.start",
    )
    _wait_stopped(writer)
    assert probe(name) == "alive"  # the owner is dead, but a writer is inside: not now
    assert _segments(name)
    os.kill(writer.pid, signal.SIGCONT)
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert probe(name) == "reaped"
    assert _segments(name) == []


def _can_unshare_pid() -> bool:
    if os.geteuid() != 0:
        return False
    try:
        r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "true"])
    except FileNotFoundError:
        return False
    return r.returncode == 0


@pytest.mark.skipif(not _can_unshare_pid(), reason="needs root and unshare --pid")
def test_an_owner_in_another_pid_namespace_is_alive(cleanup) -> None:
    name = _name()
    cleanup.append(name)
    code = textwrap.dedent(
        f"""
        import os, time
        from sharedzarr._table import Table
        t = Table.create({name!r})
        t.insert("k", b"v")
        print("ready", os.getpid(), flush=True)
        time.sleep(60)
        """
    )
    p = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child=SIGKILL",
            sys.executable,
            "-c",
            code,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None
        line = p.stdout.readline().split()
        assert line[0] == "ready" and int(line[1]) != p.pid  # its own pid namespace
        # from here its pid names nothing, or another process: it lives all the same
        assert probe(name) == "alive"
        assert table_exists(name)
        t = Table.attach(name)
        assert t.lookup("k") == [b"v"]
        t.close()
        assert _segments(name)
    finally:
        p.send_signal(signal.SIGKILL)  # unshare's child dies with it (pid 1 of its namespace)
        p.wait()
    deadline = time.monotonic() + 10
    while probe(name) == "alive" and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel releases the lifetime lock as the process is reaped
    assert not table_exists(name)
    assert _segments(name) == []


@pytest.mark.parametrize("how", ["os.fork", "multiprocessing"])
def test_a_forked_child_does_not_keep_its_dead_parents_table(cleanup, how: str) -> None:
    name = _name()
    cleanup.append(name)
    fork = (
        "pid = os.fork()\nif pid == 0:\n    time.sleep(60)\n    os._exit(0)"
        if how == "os.fork"
        else "p = mp.get_context('fork').Process(target=time.sleep, args=(60,))\np.start()\n"
        "pid = p.pid"
    )
    p = _spawn(
        f"""
import os, time
import multiprocessing as mp
from sharedzarr._table import Table
t = Table.create({name!r})
{fork}
print("ready", pid, flush=True)
time.sleep(60)
"""
    )
    assert p.stdout is not None
    line = p.stdout.readline().split()
    assert line and line[0] == "ready", p.communicate()
    child = int(line[1])
    try:
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert _proc.start_time(child) is not None  # the child lives on
        assert probe(name) == "reaped"
    finally:
        os.kill(child, signal.SIGKILL)
    assert _segments(name) == []
