"""The ``sharedzarr`` command: list, inspect, remove and garbage-collect shared-memory tables.

``sharedzarr ls`` is to tables what ``ls /dev/shm`` is to segments, the way
``ipcs``/``ipcrm`` are for System V IPC: one line per table with its type,
access level, owner (and whether that process still runs), size and, when the
table holds an array, the array's shape, chunks and dtype.

Every subcommand is an entry in :data:`_commands`; a new one (``export``,
``import``) registers itself with the :func:`command` decorator and needs no
change anywhere else::

    def _export_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("name")

    @command("export", "copy a table's array to a Zarr v3 directory", _export_args)
    def _export(args: argparse.Namespace) -> int:
        ...
        return 0

``ls`` and ``info`` never change anything: they attach read-only, which does not
apply the owner-death rules, and show a table whose owner was killed (no live heir,
not persistent) with the state ``orphaned``.  ``export`` can still copy such a
table; ``gc`` deletes it.  ``ls``, ``gc`` and ``rm`` take names and globs, and every
command takes ``--json``.

Errors print one line, ``sharedzarr: error: ...``, to stderr, in the CLI's words
(``--overwrite``, not ``overwrite=True``).  Exit status: see :data:`EXIT_STATUS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import fnmatch
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from .. import __version__
from ..errors import AccessDeniedError, SharedZarrError, TableNotFoundError
from ..storage.shm import array_summary
from ._messages import cli_message

__all__ = ["EXIT_STATUS", "Command", "build_parser", "cli_message", "command", "main"]

PROG = "sharedzarr"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_STATUS = f"""exit status:
  {EXIT_OK}    success
  {EXIT_ERROR}    an error: no such table, access denied, the destination exists, a failed
       export or import, or another sharedzarr error (one line on stderr)
  {EXIT_USAGE}    a usage error: unknown command or option, invalid table name
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)"""
"""The exit statuses, as ``sharedzarr --help`` prints them."""


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand of ``sharedzarr``.

    Attributes
    ----------
    name : str
        The subcommand (``sharedzarr NAME ...``).
    help : str
        One line for ``sharedzarr --help``.
    configure : callable
        Adds the subcommand's arguments to its :class:`argparse.ArgumentParser`.
    run : callable
        Runs it with the parsed arguments; returns the exit status.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_commands: dict[str, Command] = {}


def command(
    name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register a subcommand: decorate its ``run(args) -> exit status`` function.

    Parameters
    ----------
    name : str
        The subcommand name.
    help : str
        One-line description.
    configure : callable
        ``configure(parser)`` adds the subcommand's arguments.

    Returns
    -------
    callable
        The decorator; it returns the function unchanged.
    """

    def decorate(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        _commands[name] = Command(name, help, configure, run)
        return run

    return decorate


class CLIError(Exception):
    """An error to report on one line and exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (plus where to find help), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


# ----------------------------------------------------------------------------- formatting


def _human_bytes(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _shape(dims: Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def _time(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _table(rows: list[list[str]], right: set[int], out: TextIO) -> None:
    """Print rows as aligned columns (columns in ``right`` right-aligned, the last one ragged)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    last = len(widths) - 1
    for r in rows:
        cells = []
        for i, cell in enumerate(r):
            if i == last:
                cells.append(cell)
            elif i in right:
                cells.append(cell.rjust(widths[i]))
            else:
                cells.append(cell.ljust(widths[i]))
        print("  ".join(cells).rstrip(), file=out)


def _valid_name(name: str) -> str:
    """Return ``name`` or raise a usage :class:`CLIError` for an invalid table name."""
    from .._table import validate_name

    try:
        return validate_name(name)
    except ValueError as e:
        raise CLIError(str(e), EXIT_USAGE) from None


def _json(obj: Any, out: TextIO) -> None:
    json.dump(obj, out, indent=2, sort_keys=True)
    out.write("\n")


# ----------------------------------------------------------------------------- inspection

_GLOB_CHARS = frozenset("*?[")


def _is_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARS for c in pattern)


def _check_patterns(patterns: Sequence[str]) -> list[str]:
    """Validate names and globs (a glob's literal characters must be valid in a name)."""
    for p in patterns:
        if _is_glob(p):
            literal = "".join(c for c in p if c not in "*?[]!^")
            if literal and not all(c.isalnum() or c in "_.-" for c in literal):
                raise CLIError(
                    f"invalid table name pattern {p!r}: names use letters, digits, '_', '.' "
                    "and '-'; patterns add '*', '?' and '[...]'",
                    EXIT_USAGE,
                )
        else:
            _valid_name(p)
    return list(patterns)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _state(t: Any) -> tuple[str, bool]:
    """``(state, heir_alive)`` of an attached table, read without changing anything.

    ``alive``: the owner runs, or its heir does (the heir becomes the owner on the next
    ``open``). ``orphaned``: owner and heir are dead and the table is not persistent
    (``sharedzarr gc`` deletes it; ``sharedzarr export`` can still copy it first).
    ``persistent``: owner and heir are dead, and the table is kept until it is removed.
    """
    from .._table._ownership import _owner_state

    who = _owner_state(t._H, t._hdr.fd)
    if who == "alive":
        return "alive", False
    if who == "heir":
        return "alive", True
    return ("persistent" if t.persistent else "orphaned"), False


def _inspect(name: str) -> dict[str, Any]:
    """Everything about table ``name`` as a JSON-ready dict, without changing the table.

    The table is attached read-only, which never applies the owner-death rules, so a
    table whose owner was killed is reported (state ``orphaned``), not deleted.

    Raises
    ------
    TableNotFoundError
        When there is no such table.
    AccessDeniedError
        When the segment mode hides the table from this user.
    """
    from .._table import Table

    try:
        t = Table.attach(name, readonly=True, trusted_uid="any")  # inspection only
    except AccessDeniedError:  # private to another process: header fields only
        t = Table._attach_for_admin(name)
    try:
        i = t.info()
        doc = {k: i[k] for k in _INFO_KEYS}
        doc["array"] = array_summary(t) if t.access != "private" or t.is_owner else None
        doc["state"], doc["heir_alive"] = _state(t)
    finally:
        t.close()
    return doc


# the fields of Table.info() that ls/info report (as sharedzarr.storage.shm.TableInfo)
_INFO_KEYS = (
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
)


def _inspect_all(patterns: Sequence[str]) -> list[dict[str, Any]]:
    """:func:`_inspect` of every table whose name matches (tables that vanish are skipped)."""
    from .._table import list_tables

    out = []
    for name in list_tables():
        if not _matches(name, patterns):
            continue
        try:
            out.append(_inspect(name))
        except (SharedZarrError, OSError, ValueError):  # vanished, corrupt or not ours
            continue
    return out


def _owner_text(doc: dict[str, Any]) -> str:
    text = f"{doc['owner']} ({'alive' if doc['owner_alive'] else 'dead'})"
    if not doc["owner_alive"] and doc["heir"]:
        text += f", heir {doc['heir']} ({'alive' if doc['heir_alive'] else 'dead'})"
    return text


def _array_of(doc: dict[str, Any]) -> str:
    a = doc["array"]
    if not a:
        return "-"
    return f"{_shape(a['shape'])} chunks={_shape(a['chunks'])} {a['dtype']}"


# ----------------------------------------------------------------------------- commands


def _patterns_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "patterns",
        nargs="*",
        metavar="NAME",
        help=f"table names or globs (quote them: 'prices-*'); default: {what}",
    )


def _json_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout")


def _ls_args(p: argparse.ArgumentParser) -> None:
    _patterns_arg(p, "every table")
    _json_arg(p, "a list of table infos")


@command(
    "ls",
    "list tables: state, type, access, owner, objects, memory, array (changes nothing)",
    _ls_args,
)
def _ls(args: argparse.Namespace) -> int:
    docs = _inspect_all(_check_patterns(args.patterns))
    if args.json:
        _json(docs, sys.stdout)
        return EXIT_OK
    rows = [["NAME", "STATE", "TYPE", "ACCESS", "OWNER", "OBJECTS", "MEMORY", "ARRAY"]]
    for d in docs:
        rows.append(
            [
                d["name"],
                d["state"],
                d["type"],
                d["access"] + (" persistent" if d["persistent"] else ""),
                _owner_text(d),
                str(d["size"]),
                _human_bytes(d["memory"]),
                _array_of(d),
            ]
        )
    _table(rows, {5, 6}, sys.stdout)
    return EXIT_OK


def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="table name")
    _json_arg(p, "the table info")


@command("info", "show everything about one table (changes nothing)", _info_args)
def _info(args: argparse.Namespace) -> int:
    d = _inspect(_valid_name(args.name))
    if args.json:
        _json(d, sys.stdout)
        return EXIT_OK
    a = d["array"]
    rows = [
        ["name:", d["name"]],
        ["state:", d["state"] + _STATE_HINT.get(d["state"], "").format(name=d["name"])],
        ["type:", d["type"]],
        ["access:", d["access"]],
        ["owner:", f"{d['owner']} ({'alive' if d['owner_alive'] else 'dead'})"],
        [
            "heir:",
            f"{d['heir']} ({'alive' if d['heir_alive'] else 'dead'})" if d["heir"] else "none",
        ],
        ["persistent:", "yes" if d["persistent"] else "no"],
        ["named_table:", "yes" if d["named_table"] else "no"],
        ["objects:", str(d["size"])],
        ["memory:", f"{_human_bytes(d['memory'])} ({d['memory']} bytes)"],
        ["segments:", str(d["segments"])],
        ["created:", _time(d["created"])],
    ]
    if a:
        rows += [
            ["shape:", _shape(a["shape"])],
            ["chunks:", _shape(a["chunks"])],
            ["dtype:", str(a["dtype"])],
        ]
    _table(rows, set(), sys.stdout)
    return EXIT_OK


_STATE_HINT = {
    "orphaned": " (its owner died; `sharedzarr export {name} DEST` copies it, "
    "`sharedzarr gc` deletes it)",
    "persistent": " (no live owner; kept until `sharedzarr rm {name}`)",
}


def _rm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "names", nargs="+", metavar="NAME", help="table names or globs (quote them: 'tmp-*')"
    )
    p.add_argument(
        "-f", "--force", action="store_true", help="ignore names and globs that match no table"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print each removed table")
    _json_arg(p, "what was removed and what failed")


def _remove(name: str) -> None:
    """Delete table ``name`` whatever its state (an orphan is reaped, a live table deleted)."""
    from .._table import probe
    from ..storage import shm

    state = probe(name, reap=False)
    if state == "orphan":
        if probe(name, reap=True) in ("reaped", "deleted", "missing"):
            return
    shm.delete_table(name)


@command("rm", "delete tables (whatever their owner or access level)", _rm_args)
def _rm(args: argparse.Namespace) -> int:
    from .._table import list_tables

    _check_patterns(args.names)  # all-or-nothing on usage errors: check every name first
    existing = list_tables()
    targets: list[str] = []
    errors: list[dict[str, str]] = []
    for pattern in args.names:
        found = [n for n in existing if fnmatch.fnmatchcase(n, pattern)]
        if not _is_glob(pattern):
            found = [pattern]
        elif not found and not args.force:
            errors.append(
                {"name": pattern, "error": f"no table matches {pattern!r} (`sharedzarr ls`)"}
            )
        targets += [n for n in found if n not in targets]
    removed: list[str] = []
    for name in targets:
        try:
            _remove(name)
        except TableNotFoundError:
            if not args.force:
                errors.append(
                    {
                        "name": name,
                        "error": f"cannot remove {name!r}: no such table "
                        "(`sharedzarr ls` lists tables)",
                    }
                )
        except SharedZarrError as e:
            errors.append({"name": name, "error": f"cannot remove {name!r}: {cli_message(e)}"})
        else:
            removed.append(name)
            if args.verbose and not args.json:
                print(f"removed {name}")
    for failure in errors:
        _error(failure["error"])
    if args.json:
        _json({"removed": removed, "errors": errors}, sys.stdout)
    return EXIT_ERROR if errors else EXIT_OK


def _gc_args(p: argparse.ArgumentParser) -> None:
    _patterns_arg(p, "every table and stray segment")
    p.add_argument("-n", "--dry-run", action="store_true", help="only print what would be removed")
    _json_arg(p, "what was (or would be) removed")


def _gc_matching(patterns: Sequence[str], dry_run: bool) -> list[str]:
    """Reap orphaned tables (and stray segments) whose table name matches ``patterns``
    (see :func:`sharedzarr._table.collect_garbage`)."""
    from .._table import collect_garbage

    return collect_garbage(lambda name: _matches(name, patterns), dry_run=dry_run)


@command("gc", "delete orphaned tables and stray segments", _gc_args)
def _gc(args: argparse.Namespace) -> int:
    removed = _gc_matching(_check_patterns(args.patterns), args.dry_run)
    if args.json:
        _json({"dry_run": args.dry_run, "removed": removed}, sys.stdout)
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    for n in removed:
        print(f"{verb} {n}")
    return EXIT_OK


# export/import: their arguments and runners are in ._transfer (the copying is the
# library's, sharedzarr._export)
from ._transfer import (  # noqa: E402
    EXPORT_HELP,
    IMPORT_HELP,
    cli_export,
    cli_import,
    configure_export,
    configure_import,
)

command("export", EXPORT_HELP, configure_export)(cli_export)
command("import", IMPORT_HELP, configure_import)(cli_import)


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per registered command.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = _Parser(
        prog=PROG,
        description="Inspect and manage sharedzarr tables in shared memory (/dev/shm). "
        "`ls` and `info` change nothing; `gc` deletes orphaned tables.",
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in _commands.values():
        p = sub.add_parser(
            cmd.name,
            help=cmd.help,
            description=cmd.help,
            epilog=EXIT_STATUS,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sharedzarr`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name.

    Returns
    -------
    int
        The exit status (:data:`EXIT_STATUS`): 0 on success, 1 when a table was not
        found, access was denied or another error occurred, 2 for a usage error,
        130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(run(args))
    except CLIError as e:
        _error(str(e))
        return e.code
    except (TableNotFoundError, AccessDeniedError, SharedZarrError) as e:
        _error(cli_message(e))
        return EXIT_ERROR
    except BrokenPipeError:  # `sharedzarr ls | head`: the reader left; exit quietly
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
