"""`make stress`: the long reliability runs, summarised in one table.

Run as ``python tests/stress_report.py``; sizes come from the environment
(``SHAREDZARR_STRESS_TRIALS`` crash trials, default 1000; ``SHAREDZARR_STRESS_READS``
reads, default 1,000,000).  Exits non-zero when a mixture or a leak is found.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _workers as W  # noqa: E402
import test_faults as F  # noqa: E402

from sharedzarr._table import Table  # noqa: E402

CTX = mp.get_context("spawn")


def _ours() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("sz.")}


def torn_reads(total: int, readers: int = 4) -> tuple[int, int, float]:
    t = Table.create()
    try:
        for k in range(8):
            t.insert(k, b"\0" * 8192)
        stop = CTX.Event()
        count = CTX.Value("i", 0)
        w = CTX.Process(target=W.torn_writer, args=(t.name, 8, 8192, stop, count))
        w.start()
        try:
            with CTX.Pool(readers) as pool:
                res = pool.starmap(W.timed_reader, [(t.name, 8, total // readers)] * readers)
        finally:
            stop.set()
            w.join(60)
        done = sum(r[0] for r in res)
        bad = sum(r[1] for r in res)
        lat = sorted(x for r in res for x in r[2])
        p99 = lat[int(len(lat) * 0.99)] / 1000 if lat else float("nan")
        return done, bad, p99
    finally:
        t.delete_table()


def reuse_reads(rounds: int, readers: int = 2) -> tuple[int, int, int]:
    """Readers copy every value while a writer rewrites them all, so that arenas are
    retired and reused under the readers; return (values checked, bad values, reuses)."""
    from sharedzarr import _layout as L

    keys = 96  # 24 MiB of 256 KiB values: 4 MiB arenas, a pool of one or two
    t = Table.create()
    try:
        with t.writer():
            for k in range(keys):
                t.insert(k, b"\1" * W.reuse_size(k))
        start = t._H[L.H_REUSE]
        stop = CTX.Event()
        count = CTX.Value("i", 0)
        w = CTX.Process(target=W.reuse_writer, args=(t.name, keys, stop, count))
        w.start()
        try:
            with CTX.Pool(readers) as pool:
                modes = ["copy", "view"] * readers
                res = pool.starmap(
                    W.reuse_reader, [(t.name, keys, rounds, m) for m in modes[:readers]]
                )
        finally:
            stop.set()
            w.join(60)
        return sum(r[0] for r in res), sum(r[1] for r in res), t._H[L.H_REUSE] - start
    finally:
        t.delete_table()


def main() -> int:
    trials = int(os.environ.get("SHAREDZARR_STRESS_TRIALS", "1000"))
    reads = int(os.environ.get("SHAREDZARR_STRESS_READS", "1000000"))
    before = _ours()
    t0 = time.monotonic()
    crash = F.crash_trials(trials, seed=int(time.time()))
    done, bad, p99 = torn_reads(reads)
    rdone, rbad, reuses = reuse_reads(max(reads // 1000, 20))
    leaks = sorted(_ours() - before)
    rows = [
        ("crash trials run", f"{crash['trials']}"),
        ("crashes injected (SIGKILL mid-write)", f"{crash['crashes']}"),
        ("recoveries (dirty table repaired)", f"{crash['recoveries']}"),
        ("reads checked (4 readers, writer rewriting)", f"{done:,}"),
        ("mixtures found (must be 0)", f"{bad}"),
        ("p99 read latency under write load", f"{p99:.1f} us"),
        ("256 KiB values read while their arenas were reused", f"{rdone:,}"),
        ("arena reuses during those reads", f"{reuses:,}"),
        ("torn or missing values among them (must be 0)", f"{rbad}"),
        ("longest lock wait after a crash", f"{crash['max_wait'] * 1e3:.1f} ms"),
        ("leaks found (must be 0)", f"{len(leaks)}"),
    ]
    print()
    print(
        f"sharedzarr stress report ({platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.monotonic() - t0:.0f} s)"
    )
    print()
    print("| measure | value |")
    print("|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    if leaks:
        print("leaked:", leaks)
    return 1 if bad or rbad or leaks else 0


if __name__ == "__main__":
    sys.exit(main())
