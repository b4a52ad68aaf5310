"""The ``sharedzarr`` command, run for real: ``python -m sharedzarr`` and the console script."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import uuid

import _lc_workers as W
import _workers
import pytest

import sharedzarr as sz
from sharedzarr import _layout as L
from sharedzarr import cli
from sharedzarr._table import Table
from sharedzarr.storage import shm

CTX = mp.get_context("spawn")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(os.path.dirname(sys.executable), "sharedzarr")


def _name(tag: str) -> str:
    return f"cli-{tag}-{uuid.uuid4().hex[:8]}"


def _segments(name: str) -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"sz.{name}."))


@pytest.fixture(params=["module", "script"])
def run(request):
    """Run the CLI in a subprocess; returns ``CompletedProcess`` (text)."""
    if request.param == "module":
        base = [sys.executable, "-m", "sharedzarr"]
    else:
        if not os.access(SCRIPT, os.X_OK):
            pytest.skip("console script not installed (`make install`)")
        base = [SCRIPT]

    def _run(*args: str, user: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, user=user
        )

    return _run


def _one_error_line(r: subprocess.CompletedProcess, *words: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("sharedzarr: error: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _killed_owner_table(name: str) -> None:
    """A table whose owner was SIGKILLed (segments left behind, nobody cleaned up)."""
    p = CTX.Process(target=_workers.create_and_exit, args=(name, None, 2, "sigkill"))
    p.start()
    p.join(120)
    assert p.exitcode == -9


# ----------------------------------------------------------------------------- ls


def test_ls_lists_tables_with_owner_objects_memory_and_array(run):
    arr_name, tab_name = _name("arr"), _name("tab")
    a = sz.create(shape=(100, 50), chunks=(10, 10), dtype="float32", table_name=arr_name)
    a[:10, :10] = 1
    t = Table.create(tab_name, table_type="bag", access="protected", persistent=True)
    t.insert("k", b"1")
    t.insert("k", b"2")
    try:
        r = run("ls")
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""
        lines = r.stdout.splitlines()
        assert lines[0].split() == [
            "NAME",
            "STATE",
            "TYPE",
            "ACCESS",
            "OWNER",
            "OBJECTS",
            "MEMORY",
            "ARRAY",
        ]
        arr_line = next(ln for ln in lines if ln.startswith(arr_name + " "))
        tab_line = next(ln for ln in lines if ln.startswith(tab_name + " "))
        me = f"{os.getpid()} (alive)"
        assert arr_line.split()[1:4] == ["alive", "set", "public"] and me in arr_line
        assert arr_line.split()[6] == "2"  # metadata + 1 chunk
        assert "KiB" in arr_line
        assert arr_line.endswith("(100, 50) chunks=(10, 10) float32")
        assert tab_line.split()[1:5] == ["alive", "bag", "protected", "persistent"]
        assert me in tab_line
        assert tab_line.split()[7] == "2" and tab_line.endswith(" -")

        r = run("ls", "--json")
        assert r.returncode == 0, r.stderr
        infos = {i["name"]: i for i in json.loads(r.stdout)}
        ia, it = infos[arr_name], infos[tab_name]
        assert ia["array"] == {"shape": [100, 50], "chunks": [10, 10], "dtype": "float32"}
        assert ia["owner"] == os.getpid() and ia["owner_alive"] is True
        assert ia["size"] == 2 and ia["memory"] == shm.table_info(arr_name).memory
        assert it["type"] == "bag" and it["access"] == "protected" and it["persistent"]
        assert it["array"] is None and it["size"] == 2
        assert set(ia) == {
            "name",
            "size",
            "memory",
            "type",
            "access",
            "owner",
            "owner_alive",
            "heir",
            "named_table",
            "persistent",
            "segments",
            "created",
            "array",
            "state",
            "heir_alive",
        }
        assert ia["state"] == "alive" and ia["heir_alive"] is False
    finally:
        a.delete()
        t.delete_table()


def test_killed_producer_inspect_rescue_then_gc(run, tmp_path):
    """ls/info show an orphan and keep it; export rescues its data; gc deletes it."""
    name = _name("orphan")
    p = CTX.Process(target=_workers.create_and_exit, args=(name, None, 2, "sigkill"))
    p.start()
    p.join(120)
    assert p.exitcode == -9
    segs = _segments(name)
    assert segs
    try:
        try:
            _inspect_and_rescue_orphan(run, tmp_path, name, p.pid, segs)
        except AssertionError:
            if not _segments(name):  # a concurrent test run's gc reaped it (never in CI)
                pytest.skip("another test run sharing /dev/shm reaped the orphan")
            raise
        r = run("gc", "--dry-run", name)
        assert r.stdout.splitlines() == [f"would remove {name}"]
        assert _segments(name) == segs
        r = run("gc", "--json", "cli-orphan-*")
        assert r.returncode == 0, r.stderr
        assert name in json.loads(r.stdout)["removed"]
        assert _segments(name) == []
        r = run("info", name)
        assert r.returncode == 1
        _one_error_line(r, name, "does not exist")
    finally:
        if _segments(name):
            shm.gc()


def _inspect_and_rescue_orphan(run, tmp_path, name: str, pid: int, segs: list[str]) -> None:
    r = run("ls", name)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(name + " ")]
    assert len(lines) == 1, (r.stdout, _segments(name))
    assert lines[0].split()[1] == "orphaned" and f"{pid} (dead)" in lines[0]
    r = run("ls", "--json", "cli-orphan-*")
    doc = next(d for d in json.loads(r.stdout) if d["name"] == name)
    assert doc["state"] == "orphaned" and doc["owner"] == pid
    assert doc["owner_alive"] is False
    r = run("info", name)
    assert r.returncode == 0, r.stderr
    fields = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in r.stdout.splitlines())}
    assert fields["state"].startswith("orphaned") and fields["owner"] == f"{pid} (dead)"
    assert "sharedzarr gc" in r.stdout
    r = run("info", "--json", name)
    assert json.loads(r.stdout)["state"] == "orphaned"
    assert _segments(name) == segs  # inspecting changed nothing

    dest = tmp_path / "rescued.zarr"
    r = run("export", name, str(dest), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["shape"] == [20]
    zarr = pytest.importorskip("zarr")
    rescued = zarr.open_array(str(dest), mode="r")[:]
    assert rescued.tolist() == list(range(10)) + list(range(1, 11))
    assert _segments(name) == segs


def test_ls_filters_by_name_and_glob(run):
    a, b = _name("lsfa"), _name("lsfb")
    ta, tb = Table.create(a), Table.create(b)
    try:
        r = run("ls", "--json", a)
        assert [d["name"] for d in json.loads(r.stdout)] == [a]
        r = run("ls", "--json", a[:-3] + "*", b)
        assert sorted(d["name"] for d in json.loads(r.stdout)) == sorted([a, b])
        r = run("ls", "cli-lsf?-*")
        assert a in r.stdout and b in r.stdout
        r = run("ls", "bad/name*")
        assert r.returncode == 2
        _one_error_line(r, "invalid table name pattern")
    finally:
        ta.delete_table()
        tb.delete_table()


def test_ls_shows_a_dead_owner_of_a_persistent_table(run):
    name = _name("lsdead")
    p = CTX.Process(target=W.create_array_exit, args=(name, True, "public"))
    p.start()
    p.join(60)
    try:
        r = run("ls")
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith(name + " "))
        assert f"{p.pid} (dead)" in line and "persistent" in line
    finally:
        shm.delete_table(name)


# ----------------------------------------------------------------------------- info


def test_info_human_and_json(run):
    name = _name("info")
    a = sz.create(shape=(7,), chunks=(5,), dtype="int16", table_name=name, access="protected")
    a[:] = 2
    try:
        r = run("info", name)
        assert r.returncode == 0, r.stderr
        fields = dict(ln.split(":", 1) for ln in r.stdout.splitlines())
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        assert fields["name"] == name and fields["type"] == "set"
        assert fields["access"] == "protected"
        assert fields["owner"] == f"{os.getpid()} (alive)"
        assert fields["heir"] == "none" and fields["persistent"] == "no"
        # header, index, arena, and the undo log of the small write above (all or nothing)
        assert fields["objects"] == "3" and fields["segments"] == "4"
        assert fields["shape"] == "(7,)" and fields["chunks"] == "(5,)"
        assert fields["dtype"] == "int16"
        assert str(shm.table_info(name).memory) in fields["memory"]

        r = run("info", name, "--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc.pop("state") == "alive" and doc.pop("heir_alive") is False
        assert doc == shm.table_info(name).to_dict()
    finally:
        a.delete()


def test_info_private_table_of_another_process(run):
    """An administrator sees a private table's header fields, not its contents."""
    name = _name("infopriv")
    a = sz.create(shape=(4,), chunks=(4,), dtype="uint8", table_name=name, access="private")
    try:
        r = run("info", name, "--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["access"] == "private" and doc["owner"] == os.getpid()
        assert doc["array"] is None
    finally:
        a.delete()


def test_info_errors(run):
    r = run("info", "cli-no-such-table")
    assert r.returncode == 1 and r.stdout == ""
    _one_error_line(r, "cli-no-such-table", "does not exist")
    r = run("info", "bad/name")
    assert r.returncode == 2
    _one_error_line(r, "invalid table name")
    r = run("info")
    assert r.returncode == 2
    _one_error_line(r, "name")


# ----------------------------------------------------------------------------- rm


def test_rm_removes_tables(run):
    names = [_name("rm1"), _name("rm2")]
    tables = [Table.create(n) for n in names]
    r = run("rm", *names)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    for n, t in zip(names, tables, strict=True):
        assert _segments(n) == []
        with pytest.raises(sz.TableNotFoundError):
            t.lookup("k")
        t.close()


def test_rm_verbose_and_missing_names(run):
    keep, gone = _name("rmkeep"), _name("rmgone")
    t = Table.create(keep)
    r = run("rm", "-v", keep, gone)
    assert r.returncode == 1
    assert r.stdout == f"removed {keep}\n"
    _one_error_line(r, gone, "no such table")
    assert _segments(keep) == []
    r = run("rm", "--force", gone)
    assert r.returncode == 0 and r.stderr == ""
    r = run("rm", gone)
    assert r.returncode == 1
    t.close()


def test_rm_globs_and_json(run):
    names = [_name("rmglob") for _ in range(3)]
    keep = _name("rmkeepglob")
    tables = [Table.create(n) for n in [*names, keep]]
    try:
        r = run("rm", "--json", "cli-rmglob-*")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert sorted(doc["removed"]) == sorted(names) and doc["errors"] == []
        assert all(_segments(n) == [] for n in names) and _segments(keep)
        r = run("rm", "--json", "cli-rmglob-*")
        assert r.returncode == 1
        assert json.loads(r.stdout) == {
            "removed": [],
            "errors": [{"name": "cli-rmglob-*", "error": ANY_STR}],
        }
        _one_error_line(r, "no table matches")
        r = run("rm", "-f", "cli-rmglob-*")
        assert r.returncode == 0 and r.stderr == ""
    finally:
        for t in tables:
            if _segments(t.name):
                t.delete_table()
            t.close()


def test_rm_an_orphan_removes_it(run):
    name = _name("rmorphan")
    _killed_owner_table(name)
    r = run("rm", "-v", name)
    if r.returncode == 1 and not _segments(name):  # a concurrent test run's gc (never in CI)
        pytest.skip("another test run sharing /dev/shm reaped the orphan")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"removed {name}\n"
    assert _segments(name) == []


class _AnyStr(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str)

    __hash__ = str.__hash__


ANY_STR = _AnyStr()


def test_rm_is_administrative(run):
    """`rm` deletes a private table of another live process (the segment mode allows it)."""
    name = _name("rmpriv")
    a = sz.create(shape=(4,), chunks=(4,), dtype="uint8", table_name=name, access="private")
    r = run("rm", name)
    assert r.returncode == 0, r.stderr
    assert _segments(name) == []
    with pytest.raises(sz.TableNotFoundError):
        a[:]
    a.close()


def test_rm_usage_errors(run):
    name = _name("rmusage")
    t = Table.create(name)
    try:
        r = run("rm")
        assert r.returncode == 2
        _one_error_line(r, "NAME")
        r = run("rm", name, "no/slash")  # nothing is removed on a usage error
        assert r.returncode == 2
        _one_error_line(r, "invalid table name")
        assert _segments(name)
    finally:
        t.delete_table()


def _cli_as_nobody(*argv: str) -> subprocess.CompletedProcess:
    if _nobody_can_exec():
        return subprocess.run(
            [sys.executable, "-m", "sharedzarr", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            user="nobody",
        )
    with CTX.Pool(1) as pool:  # the interpreter is not reachable by nobody: drop in a child
        code, out, err = pool.apply(W.cli_as_user, ("nobody", list(argv)))
    return subprocess.CompletedProcess(argv, code, out, err)


def _nobody_can_exec() -> bool:
    try:
        r = subprocess.run(
            [sys.executable, "-c", "import sharedzarr"],
            user="nobody",
            capture_output=True,
            timeout=60,
            cwd="/",
        )
    except OSError:
        return False
    return r.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as nobody")
def test_other_user_is_denied_by_mode():
    name = _name("rmmode")
    t = Table.create(name)
    try:
        r = _cli_as_nobody("rm", name)
        assert r.returncode == 1
        _one_error_line(r, name, "another user")
        r = _cli_as_nobody("info", name)
        assert r.returncode == 1
        _one_error_line(r, name, "denied")
        r = _cli_as_nobody("ls", "--json")
        assert r.returncode == 0
        assert name not in [i["name"] for i in json.loads(r.stdout)]
        r = _cli_as_nobody("gc")
        assert r.returncode == 0 and name not in r.stdout
        assert t.is_owner and _segments(name)
    finally:
        t.delete_table()


# ----------------------------------------------------------------------------- gc


def test_gc_dry_run_then_gc(run):
    orphan, persistent, live = _name("gcorphan"), _name("gcpersist"), _name("gclive")
    stray = f"sz.{_name('gcstray')}.a3"
    stray_undo = f"sz.{_name('gcstray')}.undo"  # an undo log whose table is gone
    _killed_owner_table(orphan)
    p = CTX.Process(target=W.create_array_exit, args=(persistent, True, "public"))
    p.start()
    p.join(60)
    t = Table.create(live)
    for n in (stray, stray_undo):
        os.close(os.open(f"/dev/shm/{n}", os.O_CREAT | os.O_RDWR, 0o600))
    try:
        r = run("gc", "--dry-run")
        assert r.returncode == 0, r.stderr
        out = r.stdout.splitlines()
        # (another test run sharing /dev/shm may reap the orphan first: then it is gone)
        assert f"would remove {orphan}" in out or not _segments(orphan)
        assert f"would remove {stray}" in out
        assert not any(persistent in ln or live in ln for ln in out)
        assert os.path.exists(f"/dev/shm/{stray}")  # nothing removed
        if f"would remove {orphan}" in out:
            assert _segments(orphan)

        r = run("gc", "-n", "--json")
        doc = json.loads(r.stdout)
        assert doc["dry_run"] is True and stray in doc["removed"]
        assert orphan in doc["removed"] or not _segments(orphan)

        had_orphan = bool(_segments(orphan))
        r = run("gc")
        assert r.returncode == 0, r.stderr
        out = r.stdout.splitlines()
        assert f"removed {orphan}" in out or not had_orphan
        assert f"removed {stray}" in out and f"removed {stray_undo}" in out
        assert _segments(orphan) == [] and not os.path.exists(f"/dev/shm/{stray}")
        assert not os.path.exists(f"/dev/shm/{stray_undo}")
        assert shm.table_exists(persistent) and t.is_owner and shm.table_exists(live)

        r = run("gc", "--json")
        doc = json.loads(r.stdout)
        assert doc["dry_run"] is False
        assert not {orphan, stray, persistent, live} & set(doc["removed"])
    finally:
        t.delete_table()
        shm.delete_table(persistent)
        for n in (stray, stray_undo):
            if os.path.exists(f"/dev/shm/{n}"):
                os.unlink(f"/dev/shm/{n}")


def test_gc_takes_names_and_globs(run):
    mine, other = _name("gcmine"), _name("gcother")
    _killed_owner_table(mine)
    _killed_owner_table(other)
    try:
        r = run("gc", "--json", "cli-gcmine-*")
        assert r.returncode == 0, r.stderr
        # (a concurrent test run's gc may reap it first; never in CI)
        assert json.loads(r.stdout)["removed"] in ([mine], [])
        assert _segments(mine) == [] and _segments(other)
    finally:
        run("gc", other)
    assert _segments(other) == []


def test_cli_messages_name_flags_and_defaults_match_the_api(run, tmp_path):
    import inspect

    name = _name("flags")
    a = sz.create(shape=(4,), chunks=(2,), dtype="int8", table_name=name)
    try:
        dest = str(tmp_path / "a.zarr")
        assert run("export", name, dest).returncode == 0
        r = run("export", name, dest)
        assert r.returncode == 1
        line = _one_error_line(r, "--overwrite")
        assert "overwrite=True" not in line
        r = run("import", dest, name)
        assert r.returncode == 1
        line = _one_error_line(r, "--overwrite")
        assert "overwrite=True" not in line
    finally:
        a.delete()
    for sub, func in (("export", sz.export), ("import", sz.load)):
        default = inspect.signature(func).parameters["concurrency"].default
        r = run(sub, "--help")
        assert f"default {default}," in " ".join(r.stdout.split()), r.stdout


def test_every_command_has_json_and_documents_exit_status(run):
    for sub in ("ls", "info", "rm", "gc", "export", "import"):
        r = run(sub, "--help")
        assert r.returncode == 0
        assert "--json" in r.stdout, sub
        assert "exit status:" in r.stdout and "130" in r.stdout, sub
    r = run("--help")
    assert "exit status:" in r.stdout


def test_gc_leaves_a_table_being_created_alone():
    """Segments whose header exists are a table's, even if it appeared after gc listed."""
    name = _name("gcrace")
    t = Table.create(name)
    segs = _segments(name)
    from sharedzarr.storage import shm as m

    # simulate gc having listed the headers before this table was created
    real = m.list_tables
    m.list_tables = lambda: [n for n in real() if n != name]
    try:
        removed = m.gc()
    finally:
        m.list_tables = real
    assert not any(name in r for r in removed)
    assert _segments(name) == segs
    t.delete_table()


# ----------------------------------------------------------------------------- parser


def test_usage_and_version(run):
    r = run()
    assert r.returncode == 2 and "usage:" in r.stderr
    for sub in ("ls", "info", "rm", "gc"):
        assert sub in r.stderr
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"sharedzarr {sz.__version__}"
    r = run("frobnicate")
    assert r.returncode == 2
    _one_error_line(r, "invalid choice", "frobnicate")
    r = run("ls", "--bogus")
    assert r.returncode == 2
    _one_error_line(r, "--bogus")
    r = run("rm", "--help")
    assert r.returncode == 0 and "--force" in r.stdout


def test_commands_registry_allows_new_subcommands(capsys):
    """export/import plug in through the registry without touching main()."""
    assert list(cli._commands)[:4] == ["ls", "info", "rm", "gc"]

    def configure(p: argparse.ArgumentParser) -> None:
        p.add_argument("what")

    @cli.command("echo-test", "print an argument", configure)
    def _echo(args: argparse.Namespace) -> int:
        print(args.what)
        return 3

    try:
        assert cli.main(["echo-test", "hello"]) == 3
        assert capsys.readouterr().out == "hello\n"
    finally:
        del cli._commands["echo-test"]
    with pytest.raises(SystemExit) as ei:
        cli.main(["echo-test", "x"])
    assert ei.value.code == 2


def test_main_in_process_exit_codes(capsys):
    assert cli.main(["info", "cli-absent-table"]) == 1
    assert capsys.readouterr().err.startswith("sharedzarr: error: table 'cli-absent-table'")
    assert cli.main(["rm", "-f", "cli-absent-table"]) == 0
    assert cli.main([]) == 2
    assert L.PREFIX == "sz."  # the CLI lists /dev/shm/sz.* segments


@pytest.mark.parametrize("table", ["t", "my.table", "a1", "idx", "x.idx.3", "a.b.a7"])
def test_segment_names_parse_back_to_their_table(table: str) -> None:
    """``gc`` finds stray segments by parsing their names: the inverse of segment_names,
    for names with dots and names that look like segment suffixes."""
    from sharedzarr._layout import segment_names, table_of_segment

    hdr, idx, arena = segment_names(table)
    assert table_of_segment(hdr) is None  # a header is the table itself
    for seg in (f"{idx}1", f"{idx}12", f"{arena}1", f"{arena}4096"):
        assert table_of_segment(seg) == table
    for other in ("psm_1234", "sz.", f"{arena}x", f"{idx}", "sz.t.b3", "sz.t.idx.x"):
        assert table_of_segment(other) is None


def test_ls_names_a_datetime_dtype_as_numpy_does(run):
    """``ls --json`` and ``info`` show numpy's dtype name, as ``table_info`` does."""
    name = f"cli-dt-{uuid.uuid4().hex[:8]}"
    a = sz.create(shape=(4,), chunks=(2,), dtype="datetime64[s]", table_name=name)
    try:
        r = run("ls", "--json", name)
        assert r.returncode == 0, r.stderr
        [row] = json.loads(r.stdout)
        assert row["array"]["dtype"] == "datetime64[s]"
        assert shm.table_info(name).array == row["array"]
    finally:
        a.delete()
