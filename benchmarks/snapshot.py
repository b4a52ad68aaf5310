"""(m) A whole-array reader under a writer that never stops: ``python -m benchmarks.snapshot``.

A spawned writer process rewrites a sharedzarr array back to back (``a[...] = v``, one
write operation each, no pause); a spawned reader process reads the whole array
(``a[...]``) over and over and checks every read is one write's value (a snapshot). The
reader's times are compared with its times on a quiet array, as ratios: the target is a
p99 under the writer of at most 10x the quiet median. Readers with a writable mapping
(``mode="r+"``) ask the writer to pause before its next operation when they must wait for
it; read-only ones (``mode="r"``) cannot, and fall back to one read under the writer lock
after two failed attempts. A third reader reads into one buffer it allocated beforehand
(``get_slice(out=buf)``): ``a[...]`` allocates a fresh 32 MiB result each time, and faulting
in its pages is most of what varies from read to read on a busy machine. Also reported:
how many writes the writer completed meanwhile (what the reader's turns cost it). Writes
``snapshot.md`` and ``snapshot.json`` next to the other results.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET = 10.0
#: (label, open mode, read into a buffer the reader allocated once)
READERS = (
    ('mode="r+"', "r+", False),
    ('mode="r"', "r", False),
    ('mode="r+", get_slice(out=buf)', "r+", True),
)


def _writer(name: str, stop: Any, count: Any) -> None:
    import sharedzarr as sz

    a = sz.open(name)
    v = 0.0
    while not stop.is_set():
        v = v % 250 + 1
        a[...] = v
        count.value += 1
    a.close()


def _reader(name: str, mode: str, into: bool, n: int, q: Any) -> None:
    import sharedzarr as sz

    a = sz.open(name, mode=mode)
    buf = np.zeros(a.shape, a.dtype) if into else None  # its pages touched once, here
    times, mixed = [], 0
    for _ in range(n):
        t = time.perf_counter()
        x = a.get_slice(out=buf) if into else a[...]
        times.append(time.perf_counter() - t)
        mixed += int(x.min() != x.max())
    a.close()
    q.put((times, mixed))


def measure(shape: tuple[int, int], chunks: tuple[int, int], reads: int) -> list[dict[str, Any]]:
    """Run the workload for both reader modes; return one result dict per mode."""
    import sharedzarr as sz

    ctx = mp.get_context("spawn")
    name = f"bench-m-{os.getpid()}"
    a = sz.create(shape, chunks=chunks, dtype="float64", table_name=name)
    out = []
    try:
        a[...] = 1.0
        for label, mode, into in READERS:
            q = ctx.Queue()
            p = ctx.Process(target=_reader, args=(name, mode, into, reads, q))
            p.start()
            quiet, _ = q.get()
            p.join()
            stop, count = ctx.Event(), ctx.Value("q", 0)
            w = ctx.Process(target=_writer, args=(name, stop, count))
            w.start()
            while count.value < 3:
                time.sleep(0.01)
            c0, t0 = count.value, time.perf_counter()
            p = ctx.Process(target=_reader, args=(name, mode, into, reads, q))
            p.start()
            busy, mixed = q.get()
            p.join()
            writes, elapsed = count.value - c0, time.perf_counter() - t0
            stop.set()
            w.join()
            qm = float(np.median(quiet))
            p99 = float(np.percentile(busy, 99))
            out.append(
                {
                    "reader": label,
                    "quiet_median_ms": qm * 1e3,
                    "busy_median_ms": float(np.median(busy)) * 1e3,
                    "busy_p99_ms": p99 * 1e3,
                    "busy_max_ms": max(busy) * 1e3,
                    "p99_over_quiet": p99 / qm,
                    "mixed_reads": mixed,
                    "writes_per_s": writes / elapsed,
                    "verdict": "PASS" if p99 / qm <= TARGET else "FAIL",
                }
            )
    finally:
        a.delete()
    return out


def render(rows: list[dict[str, Any]], shape: tuple[int, int], chunks: tuple[int, int]) -> str:
    """The Markdown table of :func:`measure`'s rows."""
    mib = shape[0] * shape[1] * 8 / 2**20
    lines = [
        "# (m) whole-array reader under a back-to-back writer",
        "",
        f"float64 {shape[0]}x{shape[1]} ({mib:.0f} MiB), chunks {chunks}; reader and writer are "
        "spawned processes. Target: p99 under the writer <= 10x the quiet median.",
        "",
        "| reader | quiet median ms | busy median ms | busy p99 ms | p99 / quiet | mixed reads "
        "| writer's writes/s meanwhile | result |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['reader']} | {r['quiet_median_ms']:.2f} | {r['busy_median_ms']:.1f} | "
            f"{r['busy_p99_ms']:.1f} | {r['p99_over_quiet']:.1f}x | {r['mixed_reads']} | "
            f"{r['writes_per_s']:.0f} | **{r['verdict']}** |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run (m) and write ``snapshot.md``/``snapshot.json``; return the exit status."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.snapshot", description=__doc__)
    ap.add_argument("--reads", type=int, default=100, help="timed reads per phase")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="output directory")
    args = ap.parse_args(argv)
    shape, chunks = (2048, 2048), (256, 2048)
    rows = measure(shape, chunks, args.reads)
    md = render(rows, shape, chunks)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "snapshot.md").write_text(md)
    (args.out / "snapshot.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
