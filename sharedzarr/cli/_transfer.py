"""``sharedzarr export`` and ``sharedzarr import``: their arguments and runners, and
:func:`add_cli_parsers` to embed both in another argparse program.

The copying itself, and how it streams, is :mod:`sharedzarr._export`'s; this module turns
command-line arguments into its calls and its results into lines or JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .._export import KEEP, export, load
from ..errors import SharedZarrError
from ._messages import cli_message

__all__ = [
    "EXPORT_HELP",
    "IMPORT_HELP",
    "add_cli_parsers",
    "cli_export",
    "cli_import",
    "configure_export",
    "configure_import",
]


def _parse_options(pairs: Sequence[str] | None) -> dict[str, Any] | None:
    """``["key=value", ...]`` -> dict; values are JSON when they parse (true, 3, "x")."""
    if not pairs:
        return None
    out: dict[str, Any] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ValueError(f"storage option {p!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _parse_compressor(value: str | None, default: Any) -> Any:
    if value is None:
        return default
    if value.lower() in ("none", "raw"):
        return None
    if value.startswith("{"):
        return json.loads(value)
    return value


def _show_progress(args: argparse.Namespace) -> bool:
    if getattr(args, "no_progress", False) or not sys.stderr.isatty():
        return False
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def _fail(exc: BaseException) -> int:
    print(f"sharedzarr: error: {cli_message(exc)}", file=sys.stderr)
    return 1


def _print_json(doc: dict[str, Any]) -> None:
    json.dump(doc, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def cli_export(args: argparse.Namespace) -> int:
    """``sharedzarr export NAME DEST``: export a shared-memory array to a directory or URL.

    Parameters
    ----------
    args : argparse.Namespace
        As parsed by the parser :func:`add_cli_parsers` adds.

    Returns
    -------
    int
        The exit status (0 on success, 1 on an error, reported on stderr).
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            z = export(
                args.name,
                args.dest,
                path=args.path,
                overwrite=args.overwrite,
                compressor=_parse_compressor(args.compressor, KEEP),
                storage_options=_parse_options(args.storage_option),
                lock=args.lock,
                concurrency=args.concurrency,
                progress=_show_progress(args),
            )
        for w in caught:
            print(f"sharedzarr: warning: {w.message}", file=sys.stderr)
    except (SharedZarrError, OSError, ValueError, TypeError, ImportError) as e:
        return _fail(e)
    if args.json:
        _print_json(
            {
                "name": args.name,
                "dest": args.dest,
                "path": args.path,
                "shape": list(z.shape),
                "chunks": list(z.chunks),
                "dtype": str(z.dtype),
            }
        )
        return 0
    shape = "x".join(map(str, z.shape)) or "scalar"
    print(f"exported {args.name!r} ({shape} {z.dtype}, chunks {z.chunks}) to {args.dest}")
    return 0


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`KeyboardInterrupt` while the block runs (main thread only),
    so cleanup that runs on Ctrl-C also runs when the command is terminated."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"terminated by signal {signum}")

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def cli_import(args: argparse.Namespace) -> int:
    """``sharedzarr import SRC NAME``: load a Zarr array into a new shared-memory array.

    The table is created persistent, so it outlives this command; ``sharedzarr rm
    NAME`` deletes it.

    Parameters
    ----------
    args : argparse.Namespace
        As parsed by the parser :func:`add_cli_parsers` adds.

    Returns
    -------
    int
        The exit status (0 on success, 1 on an error, reported on stderr).
    """
    try:
        with _terminate_as_interrupt():  # SIGTERM, like Ctrl-C, removes the partial table
            a = load(
                args.src,
                args.name,
                path=args.path,
                compressor=_parse_compressor(args.compressor, None),
                overwrite=args.overwrite,
                storage_options=_parse_options(args.storage_option),
                concurrency=args.concurrency,
                progress=_show_progress(args),
                persistent=True,
                access=args.access,
            )
    except (SharedZarrError, OSError, ValueError, TypeError, ImportError) as e:
        return _fail(e)
    try:
        if args.json:
            _print_json(
                {
                    "name": a.name,
                    "src": args.src,
                    "path": args.path,
                    "shape": list(a.shape),
                    "chunks": list(a.chunks),
                    "dtype": str(a.dtype),
                    "chunks_stored": a.nchunks_initialized,
                    "persistent": True,
                }
            )
            return 0
        shape = "x".join(map(str, a.shape)) or "scalar"
        print(
            f"imported {args.src} into {a.name!r} ({shape} {a.dtype}, chunks {a.chunks}, "
            f"{a.nchunks_initialized} chunks stored); it persists until `sharedzarr rm {a.name}`"
        )
    finally:
        a.close()
    return 0


EXPORT_HELP = "write an array as a standard Zarr v3 array to a directory or URL"
IMPORT_HELP = "load a Zarr array (directory or URL) into a new shared-memory array"


def _default(func: Callable[..., Any], parameter: str) -> Any:
    """The default of ``func``'s ``parameter``: the CLI's defaults are the Python API's."""
    return inspect.signature(func).parameters[parameter].default


def _common_arguments(p: argparse.ArgumentParser, func: Callable[..., Any]) -> None:
    p.add_argument(
        "--path", default="", help="the array's path inside the Zarr store (default: root)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace what is already at the destination"
    )
    p.add_argument(
        "-o",
        "--storage-option",
        action="append",
        metavar="KEY=VALUE",
        help="fsspec option for a URL (repeatable; JSON values), e.g. -o anon=true",
    )
    concurrency = _default(func, "concurrency")
    p.add_argument(
        "--concurrency",
        type=int,
        default=concurrency,
        help=f"chunks in flight at a time (default {concurrency}, as sharedzarr.{func.__name__})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def configure_export(p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``sharedzarr export NAME DEST`` to parser ``p``.

    Parameters
    ----------
    p : argparse.ArgumentParser
    """
    p.add_argument("name", help="the array's table name")
    p.add_argument("dest", help="a directory or an fsspec URL (s3://, gs://, ...)")
    _common_arguments(p, export)
    p.add_argument(
        "--compressor",
        default=None,
        help="re-encode chunks: none, zlib, gzip, zstd, blosc, lz4 or a JSON codec "
        "(default: keep the stored bytes)",
    )
    p.add_argument(
        "--lock", action="store_true", help="hold the writer lock: a consistent snapshot"
    )


def configure_import(p: argparse.ArgumentParser) -> None:
    """Add the arguments of ``sharedzarr import SRC NAME`` to parser ``p``.

    Parameters
    ----------
    p : argparse.ArgumentParser
    """
    p.add_argument("src", help="a directory or an fsspec URL (s3://, gs://, ...)")
    p.add_argument("name", help="the new array's table name")
    _common_arguments(p, load)
    p.add_argument(
        "--compressor",
        default=None,
        help="how the shared-memory copy stores chunks (default: none, zero-copy reads)",
    )
    p.add_argument(
        "--access",
        default="public",
        choices=("public", "protected", "private"),
        help="who may write the new table (default public)",
    )


def add_cli_parsers(subparsers: Any) -> None:
    """Add the ``export`` and ``import`` subcommands to an argparse subparsers object.

    Each parser sets ``func`` (:func:`cli_export` / :func:`cli_import`), which takes
    the parsed namespace and returns the exit status.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers()`` returned.
    """
    p = subparsers.add_parser(
        "export",
        help=EXPORT_HELP,
        description="Write the shared-memory array NAME as a standard Zarr v3 array to DEST "
        "(a directory, or a URL such as s3://bucket/name.zarr), chunk by chunk.",
    )
    configure_export(p)
    p.set_defaults(func=cli_export)
    p = subparsers.add_parser(
        "import",
        help=IMPORT_HELP,
        description="Copy the Zarr array at SRC into a new persistent shared-memory array "
        "NAME, chunk by chunk (`sharedzarr rm NAME` deletes it).",
    )
    configure_import(p)
    p.set_defaults(func=cli_import)
