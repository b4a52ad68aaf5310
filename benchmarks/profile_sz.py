"""Profile sharedzarr's hot paths with pyinstrument, the way the benchmark exercises them.

Usage::

    python -m benchmarks.profile_sz                       # every workload, full-size arrays
    python -m benchmarks.profile_sz --workloads read,chunk_read --seconds 3
    python -m benchmarks.profile_sz --size tiny --out /tmp/prof

The creating process writes the array (as in ``make bench``); read workloads are profiled in a
spawned process that opens the array by name, exactly like the benchmark's reader. For each
workload it prints the functions with the most *self* time and the most *inclusive* time
(``file:function``, % of the profiled time) and writes pyinstrument's call tree to
``<out>/profile_<workload>.txt``.

Workloads: ``read`` (``get_slice(out=)``, 512 KiB chunks), ``read_small`` (the same, 8 KiB
chunks), ``windows`` / ``unaligned`` (``a[r0:r1, c0:c1]``), ``chunk_read`` / ``chunk_view``
(``read_chunk``, 8 KiB), ``chunk_write`` (``write_chunk``, 8 KiB), ``write`` (``set_slice``,
512 KiB chunks, profiled in the creating process), ``lookup`` / ``get`` (``Table``, workload f).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import peers as P
from benchmarks.config import BenchConfig, Dataset, get_config

__all__ = ["WORKLOADS", "hot_spots", "main", "profile_call"]

WORKLOADS = [
    "read",
    "read_small",
    "windows",
    "unaligned",
    "chunk_read",
    "chunk_view",
    "chunk_write",
    "write",
    "lookup",
    "get",
]
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "profiles"


def _frame_name(frame: Any) -> str:
    path = frame.file_path or "?"
    marker = f"{os.sep}sharedzarr{os.sep}"
    if marker in path:
        path = "sharedzarr/" + path.split(marker, 1)[1]
    elif "site-packages" in path:
        path = path.split("site-packages" + os.sep, 1)[1]
    else:
        path = os.path.basename(path)
    return f"{path}:{frame.function}"


def hot_spots(root: Any, top: int = 15) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Aggregate a pyinstrument frame tree by ``file:function``.

    Parameters
    ----------
    root : pyinstrument.frame.Frame
        ``Profiler.last_session.root_frame()``.
    top : int
        How many entries to return per list.

    Returns
    -------
    self_pct, incl_pct : list of (str, float)
        Functions by self time and by inclusive time (each function counted once per stack,
        so recursion does not double-count), as percentages of the root's time.
    """
    total = root.time or 1.0
    self_t: dict[str, float] = defaultdict(float)
    incl_t: dict[str, float] = defaultdict(float)

    def walk(frame: Any, on_stack: frozenset[str]) -> None:
        if frame.is_synthetic:
            return
        name = _frame_name(frame)
        children = [c for c in frame.children if not c.is_synthetic]
        self_t[name] += frame.time - sum(c.time for c in children)
        if name not in on_stack:
            incl_t[name] += frame.time
        for c in children:
            walk(c, on_stack | {name})

    walk(root, frozenset())

    def pct(d: dict[str, float]) -> list[tuple[str, float]]:
        return sorted(((k, 100 * v / total) for k, v in d.items()), key=lambda kv: -kv[1])[:top]

    return pct(self_t), pct(incl_t)


def profile_call(fn: Callable[[], object], seconds: float) -> tuple[str, str, int, float]:
    """Call ``fn`` repeatedly for about ``seconds`` under pyinstrument.

    Parameters
    ----------
    fn : callable
        One operation (or a batch of them).
    seconds : float
        Profiling duration.

    Returns
    -------
    tuple
        (summary text, pyinstrument call tree, calls made, seconds per call unprofiled).
    """
    from pyinstrument import Profiler

    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min(seconds / 4, 1.0):
        fn()
        n += 1
    per_call = (time.perf_counter() - t0) / n
    prof = Profiler(interval=0.0001, async_mode="disabled")
    prof.start()
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        calls += 1
    prof.stop()
    session = prof.last_session
    self_pct, incl_pct = hot_spots(session.root_frame())
    lines = [f"{calls} calls profiled; {per_call * 1e6:,.1f} µs per call without the profiler"]
    lines.append("  self time:")
    lines += [f"    {p:5.1f}%  {name}" for name, p in self_pct]
    lines.append("  inclusive time:")
    lines += [f"    {p:5.1f}%  {name}" for name, p in incl_pct]
    tree = prof.output_text(unicode=True, color=False, show_all=False)
    return "\n".join(lines), tree, calls, per_call


def _reader_child(conn: Any, name: str, ds: Dataset, workload: str, seconds: float) -> None:
    """Spawned process: open ``name`` and profile ``workload``; send the texts back."""
    try:
        import sharedzarr as sz

        rng = np.random.default_rng(7)
        if workload in ("lookup", "get"):
            t = sz.Table.attach(name)
            n = ds.shape[0]
            keys = [P.table_key(int(i)) for i in rng.integers(0, n, 2000)]
            if workload == "lookup":

                def fn() -> None:
                    for k in keys:
                        t.lookup(k)
            else:

                def fn() -> None:
                    for k in keys:
                        t.get(k, copy=False)

        else:
            a = sz.open(name)
            if workload in ("read", "read_small"):
                out = np.zeros(ds.shape, ds.dtype)

                def fn() -> None:
                    a.get_slice(out=out)

            elif workload in ("windows", "unaligned"):
                w, (nr, nc) = ds.chunks[0], ds.shape
                if workload == "windows":
                    rs = w * rng.integers(0, nr // w, 200)
                    cs = w * rng.integers(0, nc // w, 200)
                else:
                    rs = rng.integers(0, nr - w + 1, 200)
                    cs = rng.integers(0, nc - w + 1, 200)
                wins = [(int(r), int(c)) for r, c in zip(rs, cs, strict=True)]

                def fn() -> None:
                    for r, c in wins:
                        a[r : r + w, c : c + w]

            else:
                gi, gj = ds.grid
                order = [(int(k) // gj, int(k) % gj) for k in rng.permutation(gi * gj)]
                payload = rng.random(ds.chunks)
                if workload == "chunk_read":

                    def fn() -> None:
                        for idx in order:
                            a.read_chunk(idx)

                elif workload == "chunk_view":

                    def fn() -> None:
                        for idx in order:
                            a.read_chunk(idx, copy=False)

                else:

                    def fn() -> None:
                        for idx in order:
                            a.write_chunk(idx, payload)

        conn.send(("ok", profile_call(fn, seconds)))
    except BaseException as exc:  # report, do not hang the parent
        import traceback

        conn.send(("error", f"{exc!r}\n{traceback.format_exc()}"))


def _run_in_child(name: str, ds: Dataset, workload: str, seconds: float) -> tuple:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_reader_child, args=(child, name, ds, workload, seconds))
    proc.start()
    child.close()
    try:
        if not parent.poll(seconds * 4 + 120):
            raise RuntimeError(f"profiling {workload} timed out")
        status, payload = parent.recv()
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.terminate()
    if status != "ok":
        raise RuntimeError(payload)
    return payload


def _profile_one(cfg: BenchConfig, workload: str, seconds: float, entries: int) -> tuple:
    import sharedzarr as sz

    if workload in ("lookup", "get"):
        peer = P.TablePeer("sz")
        try:
            peer.build(entries)
            assert peer.name is not None
            return _run_in_child(peer.name, Dataset("f", (entries, 1), (1, 1)), workload, seconds)
        finally:
            peer.destroy()
    ds = cfg.a if workload in ("read", "windows", "unaligned", "write") else cfg.b
    data = np.random.default_rng(1).random(ds.shape)
    arr = None
    name = P._unique("prof")
    try:
        arr = sz.create(shape=ds.shape, chunks=ds.chunks, dtype=ds.dtype, table_name=name)
        arr.set_slice(data, start=(0, 0), stop=ds.shape)
        if workload == "write":
            return profile_call(lambda: arr.set_slice(data, start=(0, 0), stop=ds.shape), seconds)
        return _run_in_child(name, ds, workload, seconds)
    finally:
        if arr is not None:
            arr.close()
        P._sz_remove_table(name)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status (1 if a workload failed).
    """
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_sz")
    ap.add_argument("--size", choices=["full", "quick", "tiny"], default="full")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--seconds", type=float, default=4.0, help="profiling time per workload")
    ap.add_argument("--entries", type=int, default=200_000, help="table entries for lookup/get")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    cfg = get_config(args.size)
    args.out.mkdir(parents=True, exist_ok=True)
    status = 0
    for wl in [w.strip() for w in args.workloads.split(",") if w.strip()]:
        if wl not in WORKLOADS:
            ap.error(f"unknown workload {wl!r}; choose from {WORKLOADS}")
        try:
            summary, tree, _calls, _per = _profile_one(cfg, wl, args.seconds, args.entries)
        except Exception as exc:
            print(f"## {wl}: failed: {exc}", flush=True)
            status = 1
            continue
        print(f"## {wl}\n{summary}\n", flush=True)
        (args.out / f"profile_{wl}.txt").write_text(f"{summary}\n\n{tree}")
    return status


if __name__ == "__main__":
    sys.exit(main())
