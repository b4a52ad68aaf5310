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

Errors print one line, ``sharedzarr: error: ...``, to stderr.  Exit status:
0 success, 1 a table not found / access denied / any other sharedzarr error,
2 a usage error (unknown option, invalid table name).

Inspecting a table applies the owner-death rules, as any ``open`` does: a
table whose owner was killed and that has no live heir and is not persistent
is deleted by ``ls``/``info`` and no longer listed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from . import __version__
from .errors import AccessDeniedError, SharedZarrError, TableNotFoundError

__all__ = ["Command", "build_parser", "command", "main"]

PROG = "sharedzarr"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


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


def _owner(info: Any) -> str:
    return f"{info.owner} ({'alive' if info.owner_alive else 'dead'})"


def _array_text(info: Any) -> str:
    a = info.array
    if not a:
        return "-"
    return f"{_shape(a['shape'])} chunks={_shape(a['chunks'])} {a['dtype']}"


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
    from ._table import validate_name

    try:
        return validate_name(name)
    except ValueError as e:
        raise CLIError(str(e), EXIT_USAGE) from None


def _json(obj: Any, out: TextIO) -> None:
    json.dump(obj, out, indent=2, sort_keys=True)
    out.write("\n")


# ----------------------------------------------------------------------------- commands


def _ls_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list of table infos")


@command("ls", "list tables: type, access, owner, objects, memory, array shape", _ls_args)
def _ls(args: argparse.Namespace) -> int:
    from .storage import shm

    infos = sorted(shm.list_infos(), key=lambda i: i.name)
    if args.json:
        _json([i.to_dict() for i in infos], sys.stdout)
        return EXIT_OK
    rows = [["NAME", "TYPE", "ACCESS", "OWNER", "OBJECTS", "MEMORY", "ARRAY"]]
    for i in infos:
        rows.append(
            [
                i.name,
                i.type,
                i.access + (" persistent" if i.persistent else ""),
                _owner(i),
                str(i.size),
                _human_bytes(i.memory),
                _array_text(i),
            ]
        )
    _table(rows, {4, 5}, sys.stdout)
    return EXIT_OK


def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="table name")
    p.add_argument("--json", action="store_true", help="print the table info as a JSON object")


@command("info", "show everything about one table", _info_args)
def _info(args: argparse.Namespace) -> int:
    from .storage import shm

    info = shm.table_info(_valid_name(args.name))
    if args.json:
        _json(info.to_dict(), sys.stdout)
        return EXIT_OK
    a = info.array
    rows = [
        ["name:", info.name],
        ["type:", info.type],
        ["access:", info.access],
        ["owner:", _owner(info)],
        ["heir:", str(info.heir) if info.heir else "none"],
        ["persistent:", "yes" if info.persistent else "no"],
        ["named_table:", "yes" if info.named_table else "no"],
        ["objects:", str(info.size)],
        ["memory:", f"{_human_bytes(info.memory)} ({info.memory} bytes)"],
        ["segments:", str(info.segments)],
        ["created:", _time(info.created)],
    ]
    if a:
        rows += [
            ["shape:", _shape(a["shape"])],
            ["chunks:", _shape(a["chunks"])],
            ["dtype:", str(a["dtype"])],
        ]
    _table(rows, set(), sys.stdout)
    return EXIT_OK


def _rm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="NAME", help="table names")
    p.add_argument("-f", "--force", action="store_true", help="ignore tables that do not exist")
    p.add_argument("-v", "--verbose", action="store_true", help="print each removed table")


@command("rm", "delete tables (whatever their owner or access level)", _rm_args)
def _rm(args: argparse.Namespace) -> int:
    from .storage import shm

    for name in args.names:  # all-or-nothing on usage errors: check every name first
        _valid_name(name)
    status = EXIT_OK
    for name in args.names:
        try:
            shm.delete_table(name)
        except TableNotFoundError:
            if args.force:
                continue
            _error(f"cannot remove {name!r}: no such table (`sharedzarr ls` lists tables)")
            status = EXIT_ERROR
        except SharedZarrError as e:
            _error(f"cannot remove {name!r}: {e}")
            status = EXIT_ERROR
        else:
            if args.verbose:
                print(f"removed {name}")
    return status


def _gc_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--dry-run", action="store_true", help="only print what would be removed")
    p.add_argument("--json", action="store_true", help="print a JSON list of what was removed")


@command("gc", "delete orphaned tables and stray segments", _gc_args)
def _gc(args: argparse.Namespace) -> int:
    from .storage import shm

    removed = shm.gc(dry_run=args.dry_run)
    if args.json:
        _json({"dry_run": args.dry_run, "removed": removed}, sys.stdout)
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    for n in removed:
        print(f"{verb} {n}")
    return EXIT_OK


# export/import live beside the code that streams chunks (sharedzarr._export)
from ._export import (  # noqa: E402
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
        description="Inspect and manage sharedzarr tables in shared memory (/dev/shm).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in _commands.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
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
        0 on success, 1 when a table was not found, access was denied or another
        sharedzarr error occurred, 2 for a usage error.
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
        _error(str(e))
        return EXIT_ERROR
    except BrokenPipeError:  # `sharedzarr ls | head`: the reader left; exit quietly
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
