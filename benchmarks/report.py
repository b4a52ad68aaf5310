"""Results, the Markdown report, the target checks and the plot."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.config import BenchConfig

__all__ = [
    "Check",
    "Results",
    "Row",
    "Workload",
    "machine_info",
    "plot_read_gbps",
    "plot_write_gbps",
    "workloads",
]

COPYTO = "np.copyto (limit)"
PLAIN = "shared_memory array"
TILED = "shared_memory tiles (chunked limit)"
SZ = "sharedzarr shm"
SZ_MEM = "sharedzarr memory"
ZARR_MEM = "zarr MemoryStore"
ZARR_LOCAL = "zarr LocalStore (/dev/shm)"
LMDB = "LMDB (/dev/shm)"
LMDB_ONE_TXN = "LMDB (/dev/shm), one txn"
MANAGER = "Manager().dict()"
SZ_TABLE_LOOKUP = "sharedzarr Table.lookup(key)"
SZ_TABLE_GET = "sharedzarr Table.get(key, copy=False)"
LMDB_GET = "LMDB (/dev/shm) txn.get, txn per get"
SZ_TABLE = "sharedzarr Table"
SZ_LOCK = "sharedzarr Table.writer()"
LMDB_LOCK = "LMDB (/dev/shm) write txn"
SZ_APPEND = "sharedzarr shm a.append(frame)"
PLAIN_APPEND = "shared_memory array np.copyto(buf[n], frame)"
FRESH_APPEND = "fresh /dev/shm pages: fallocate + copy (floor)"
QUEUE = "multiprocessing.Queue"
PLAIN_BATCH = "shared_memory array: arr[idx]"
PLAIN_ROW = "shared_memory array: arr[i].copy()"


@dataclass(frozen=True)
class Workload:
    """One measured quantity.

    Parameters
    ----------
    key : str
        Identifier, e.g. ``"a.read"``.
    title : str
        Text of the table's first column.
    unit : str
        Unit of the values.
    higher_is_better : bool
        True for throughputs, False for times and memory.
    ref : str or None
        Peer label the ratio column divides by.
    """

    key: str
    title: str
    unit: str
    higher_is_better: bool
    ref: str | None


def workloads(cfg: BenchConfig) -> list[Workload]:
    """Return the workloads of a run, in table order.

    Parameters
    ----------
    cfg : BenchConfig
        The run's configuration (sizes go into the titles).

    Returns
    -------
    list of Workload
    """
    a, b, w = cfg.a, cfg.b, cfg.window
    ca, cb, cw = a.chunk_label(), b.chunk_label(), cfg.w.chunk_label()
    sa = f"{a.shape[0]}x{a.shape[1]}"
    sb = f"{b.shape[0]}x{b.shape[1]}"
    sw = f"{cfg.w.shape[0]}x{cfg.w.shape[1]}"
    n = f"{cfg.table_entries:,}"
    ld = cfg.loader
    lrow = f"{ld.shape[1] * ld.itemsize / 1024:g} KiB"
    lsize = f"{ld.shape[0]}x{ld.shape[1]} float64 ({ld.nbytes / 1e6:.0f} MB, rows of {lrow})"
    frame = "x".join(str(x) for x in cfg.frame)
    fkib = f"{math.prod(cfg.frame) * 8 / 1024:g} KiB"
    two = []
    for k, ds in (("a", a), ("b", b), ("w", cfg.w)):
        c = ds.chunk_label()
        two += [
            Workload(
                f"i.w1_{k}", f"(i) 1 writer process, write_chunk, {c} chunks", "GB/s", True, PLAIN
            ),
            Workload(
                f"i.w2_{k}",
                f"(i) 2 writer processes, disjoint {c} chunks, aggregate",
                "GB/s",
                True,
                PLAIN,
            ),
            Workload(f"i.scale_{k}", f"(i) 2 writers / 1 writer, {c} chunks", "x", True, PLAIN),
        ]
    return [
        Workload("a.write", f"(a) whole-array write, {sa}, {ca} chunks", "GB/s", True, COPYTO),
        Workload("a.read", f"(a) whole-array read, {sa}, {ca} chunks", "GB/s", True, PLAIN),
        Workload("a.win_aligned", f"(a) random {w}x{w} window, chunk-aligned", "µs", False, PLAIN),
        Workload("a.win_unaligned", f"(a) random {w}x{w} window, unaligned", "µs", False, PLAIN),
        Workload("b.write", f"(b) whole-array write, {sb}, {cb} chunks", "GB/s", True, COPYTO),
        Workload("b.read", f"(b) whole-array read, {sb}, {cb} chunks", "GB/s", True, PLAIN),
        Workload("b.chunk_read", f"(b) per-chunk read (copy), {cb}", "µs", False, LMDB),
        Workload(
            "b.chunk_view", f"(b) per-chunk read, zero-copy view, {cb}", "µs", False, LMDB_ONE_TXN
        ),
        Workload("b.chunk_write", f"(b) per-chunk write, {cb}", "µs", False, LMDB),
        Workload("c.read1", f"(c) 1 reader process, whole {sa} reads", "GB/s", True, PLAIN),
        Workload("c.read2", "(c) 2 reader processes, aggregate", "GB/s", True, PLAIN),
        Workload("d.attach", "(d) attach by name", "µs", False, PLAIN),
        Workload("e.mem_a", f"(e) /dev/shm bytes per data byte, {ca} chunks", "B/B", False, PLAIN),
        Workload(
            "e.mem_a_after", f"(e) same, {ca}, after the write workloads", "B/B", False, PLAIN
        ),
        Workload("e.mem_b", f"(e) /dev/shm bytes per data byte, {cb} chunks", "B/B", False, PLAIN),
        Workload(
            "e.mem_b_after", f"(e) same, {cb}, after the write workloads", "B/B", False, PLAIN
        ),
        Workload("f.insert", f"(f) bulk insert, {n} entries (per entry)", "µs", False, LMDB),
        Workload("f.lookup", f"(f) lookup, random present key, {n} entries", "µs", False, LMDB_GET),
        Workload("f.mem", "(f) /dev/shm bytes per entry (8 B key, 64 B value)", "B", False, LMDB),
        Workload(
            "g.copy",
            f"(g) copying {sa} float64 in one process, by the length of the copied runs",
            "GB/s",
            True,
            COPY_ONE,
        ),
        Workload(
            "h.batch",
            f"(h) {cfg.chunk_ops} chunk writes in one writer session / one txn, {cb} (per chunk)",
            "µs",
            False,
            LMDB,
        ),
        Workload(
            "h.call",
            f"(h) {cfg.chunk_ops} chunk writes in one call (write_chunks) / one txn, {cb} "
            "(per chunk)",
            "µs",
            False,
            LMDB,
        ),
        Workload("h.write_w", f"(h) whole-array write, {sw}, {cw} chunks", "GB/s", True, PLAIN),
        Workload(
            "h.mem_a",
            f"(h) /dev/shm bytes per data byte after {cfg.rewrites} full rewrites, {ca} chunks",
            "B/B",
            False,
            PLAIN,
        ),
        Workload(
            "h.mem_b",
            f"(h) /dev/shm bytes per data byte after {cfg.rewrites} full rewrites, {cb} chunks",
            "B/B",
            False,
            PLAIN,
        ),
        *two,
        Workload(
            "j.p50", "(j) writer-lock hand-off, release → waiter runs, p50", "µs", False, LMDB_LOCK
        ),
        Workload(
            "j.p99", "(j) writer-lock hand-off, release → waiter runs, p99", "µs", False, LMDB_LOCK
        ),
        Workload(
            "k.append", f"(k) append one {frame} float64 frame ({fkib})", "µs", False, PLAIN_APPEND
        ),
        Workload(
            "l.batch",
            f"(l) 2 reader processes, random batches of {cfg.batch_rows} rows of {lsize},"
            " aggregate",
            "batches/s",
            True,
            PLAIN_BATCH,
        ),
        Workload(
            "l.row",
            "(l) 2 reader processes, one random row at a time (per row)",
            "µs",
            False,
            PLAIN_ROW,
        ),
    ]


COPY_ONE = "one copy (np.copyto)"


def copy_run_labels(cfg: BenchConfig) -> list[tuple[str, int]]:
    """``(peer label, run length in bytes)`` of workload (g), the one-copy reference first.

    The runs are as long as a row of the whole array, of a dataset A chunk and of a dataset B
    chunk: the contiguous pieces that a flat copy and a chunk gather hand to ``memcpy``.
    """
    a, b = cfg.a, cfg.b
    row = a.shape[1] * a.itemsize
    runs = [(row, "array rows"), (a.chunks[1] * a.itemsize, f"rows of a {a.chunk_label()} chunk")]
    runs.append((b.chunks[1] * b.itemsize, f"rows of a {b.chunk_label()} chunk"))
    out = [(COPY_ONE, 0)]
    for n, what in runs:
        size = f"{n // 1024} KiB" if n >= 1024 else f"{n} B"
        out.append((f"runs of {size} ({what})", n))
    return out


@dataclass
class Row:
    """One peer's measurement of one workload.

    Parameters
    ----------
    workload : str
        Workload key.
    peer : str
        Peer label.
    proc : str
        ``"other"`` when timed in another process, ``"same"`` otherwise.
    values : list of float
        One value per repetition, in the workload's unit (empty when ``note`` says why).
    note : str
        ``"n/a (...)"`` or ``"error: ..."`` when there are no values.
    """

    workload: str
    peer: str
    proc: str
    values: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float | None:
        """Median of the values, or None."""
        return statistics.median(self.values) if self.values else None


@dataclass
class Check:
    """One target of section 2 of the issue, checked against this run.

    Parameters
    ----------
    target : str
        What is required, in words.
    ratio : float or None
        The measured ratio (None when a side is missing).
    bound : float
        The required bound on ``ratio``.
    at_least : bool
        True if ``ratio >= bound`` passes, False if ``ratio <= bound`` passes.
    detail : str
        The two numbers the ratio comes from.
    ceiling : float or None
        The same ratio for ``np.copyto`` (one in-process memory copy): the best any peer can
        reach on this machine. A target beyond it cannot be met here by any implementation.
    tiled : float or None
        The same ratio for the chunk-major ``shared_memory`` segment (tiles back to back, no
        lookup): the best any *chunked* store can reach here.
    """

    target: str
    ratio: float | None
    bound: float
    at_least: bool
    detail: str
    ceiling: float | None = None
    tiled: float | None = None

    @property
    def verdict(self) -> str:
        """``"PASS"``, ``"FAIL"`` or ``"n/a"``."""
        if self.ratio is None:
            return "n/a"
        ok = self.ratio >= self.bound if self.at_least else self.ratio <= self.bound
        return "PASS" if ok else "FAIL"


def _size(n: int) -> str:
    """``n`` bytes as e.g. ``"2 MiB"`` or ``"32 KiB"``."""
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 1024:g} KiB"


def _fmt(x: float | None) -> str:
    """Three significant digits, without scientific notation for ordinary magnitudes."""
    if x is None:
        return "–"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) >= 0.001 else f"{x:.2e}"


class Results:
    """All rows of a run, and their rendering.

    Parameters
    ----------
    cfg : BenchConfig
        The run's configuration.
    """

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.workloads = {w.key: w for w in workloads(cfg)}
        self.rows: list[Row] = []
        self.elapsed: float | None = None
        self.notes: list[str] = list(cfg.notes)

    def add(self, workload: str, peer: str, proc: str, values: list[float]) -> Row:
        """Record a measurement (``values`` in the workload's unit).

        A later round's values join the row's earlier ones; a row that holds a note (the
        measurement failed in an earlier round) keeps its note.
        """
        row = self.get(workload, peer)
        if row is None:
            row = Row(workload, peer, proc, list(values))
            self.rows.append(row)
        elif not row.note:
            row.values.extend(values)
        return row

    def note(self, workload: str, peer: str, proc: str, note: str) -> Row:
        """Record a measurement that could not be made, and why.

        The note replaces any values of earlier rounds: a failure is never hidden by a median.
        """
        row = self.get(workload, peer)
        if row is None:
            row = Row(workload, peer, proc, [], note)
            self.rows.append(row)
        elif not row.note:
            row.values.clear()
            row.note = note
        return row

    def get(self, workload: str, peer: str) -> Row | None:
        """The row of ``peer`` in ``workload``, or None."""
        for r in self.rows:
            if r.workload == workload and r.peer == peer:
                return r
        return None

    def median(self, workload: str, peer: str) -> float | None:
        """Median of a row, or None if absent or without values."""
        r = self.get(workload, peer)
        return r.median if r else None

    def ratio(self, workload: str, peer: str, ref: str | None = None) -> float | None:
        """``median(peer) / median(ref)`` within ``workload`` (ref defaults to the workload's)."""
        ref = ref or self.workloads[workload].ref
        num, den = self.median(workload, peer), self.median(workload, ref) if ref else None
        if num is None or not den:
            return None
        return num / den

    # ---------------------------------------------------------------------------------- table
    def markdown_table(self) -> str:
        """The results as one Markdown table, grouped by workload."""
        lines = [
            "| Workload | Peer | Reader | Median | Spread (min–max) | Unit | Ratio vs ref |",
            "|---|---|---|---:|---:|---|---:|",
        ]
        for key, w in self.workloads.items():
            rows = [r for r in self.rows if r.workload == key]
            for n, r in enumerate(rows):
                title = w.title if n == 0 else ""
                if r.values:
                    med = _fmt(r.median)
                    spread = (
                        f"{_fmt(min(r.values))}–{_fmt(max(r.values))}" if len(r.values) > 1 else "–"
                    )
                    ratio = self.ratio(key, r.peer)
                    rtxt = "" if ratio is None else f"{ratio:.2f}x"
                    if r.peer == w.ref:
                        rtxt = "1.00x (ref)"
                else:
                    med, spread, rtxt = r.note, "", ""
                lines.append(
                    f"| {title} | {r.peer} | {r.proc} | {med} | {spread} | {w.unit} | {rtxt} |"
                )
        return "\n".join(lines)

    def legend(self) -> str:
        """What the ratio column divides by, per workload."""
        out = []
        for w in self.workloads.values():
            if w.ref and any(r.workload == w.key for r in self.rows):
                better = "higher" if w.higher_is_better else "lower"
                out.append(f"- {w.title}: ratio = peer / {w.ref} ({better} is better)")
        return "\n".join(out)

    # -------------------------------------------------------------------------------- targets
    def checks(self) -> list[Check]:
        """The targets of section 2 of the issue, measured in this run."""
        cfg = self.cfg
        ca, cb = cfg.a.chunk_label(), cfg.b.chunk_label()
        out: list[Check] = []

        def ratio_check(
            target: str, wl: str, peer: str, ref: str, bound: float, at_least: bool
        ) -> None:
            unit = self.workloads[wl].unit
            p, r = self.median(wl, peer), self.median(wl, ref)
            detail = f"{peer} {_fmt(p)} {unit} / {ref} {_fmt(r)} {unit} ({wl})"
            ceiling = self.ratio(wl, COPYTO, ref) if ref != COPYTO else None
            tiled = self.ratio(wl, TILED, ref)
            out.append(
                Check(target, self.ratio(wl, peer, ref), bound, at_least, detail, ceiling, tiled)
            )

        ratio_check(
            f"whole-array read from another process ≥ 0.8x shared_memory array ({ca} chunks)",
            "a.read",
            SZ,
            PLAIN,
            0.8,
            True,
        )
        ratio_check(
            f"get_slice(out=...) ≥ 0.8x np.copyto ({ca} chunks)", "a.read", SZ, COPYTO, 0.8, True
        )
        ratio_check(
            "random windows, chunk-aligned: time ≤ 1.2x shared_memory array",
            "a.win_aligned",
            SZ,
            PLAIN,
            1.2,
            False,
        )
        ratio_check(
            "random windows, unaligned: time ≤ 1.5x shared_memory array",
            "a.win_unaligned",
            SZ,
            PLAIN,
            1.5,
            False,
        )
        ratio_check(
            f"per-chunk read ({cb}): time ≤ 0.5x LMDB (txn per read)",
            "b.chunk_read",
            SZ,
            LMDB,
            0.5,
            False,
        )
        ratio_check(
            f"per-chunk read ({cb}): time ≤ 0.5x LMDB (one long read txn)",
            "b.chunk_read",
            SZ,
            LMDB_ONE_TXN,
            0.5,
            False,
        )
        v = self.median("b.chunk_view", SZ)
        out.append(
            Check(
                "read_chunk(copy=False): a few µs (≤ 5 µs)",
                None if v is None else v / 5.0,
                1.0,
                False,
                f"{SZ} {_fmt(v)} µs / 5 µs (b.chunk_view)",
            )
        )
        ratio_check(
            f"whole-array write ≥ 0.5x np.copyto bandwidth ({ca} chunks)",
            "a.write",
            SZ,
            COPYTO,
            0.5,
            True,
        )
        ratio_check(
            "2 readers: aggregate ≥ 0.9x shared_memory array with 2 readers",
            "c.read2",
            SZ,
            PLAIN,
            0.9,
            True,
        )
        for wl, bound, c, when in (
            ("e.mem_a", 1.02, ca, "after one write"),
            ("e.mem_b", 1.25, cb, "after one write"),
            ("e.mem_a_after", 1.02, ca, "after the write workloads"),
            ("e.mem_b_after", 1.25, cb, "after the write workloads"),
        ):
            m = self.median(wl, SZ)
            out.append(
                Check(
                    f"memory overhead ≤ {round((bound - 1) * 100)}% with {c} chunks ({when})",
                    m,
                    bound,
                    False,
                    f"{SZ} {_fmt(m)} bytes of /dev/shm per data byte ({wl})",
                )
            )
        for wl, c in (("a.read", ca), ("b.read", cb)):
            for ref, bound in ((ZARR_LOCAL, 10.0), (ZARR_MEM, 3.0), (MANAGER, 50.0)):
                ratio_check(
                    f"whole-array read ≥ {bound:g}x {ref} ({c} chunks)", wl, SZ, ref, bound, True
                )
        return out

    def label_like(self, workload: str, prefix: str) -> str:
        """The first peer label of ``workload`` that starts with ``prefix`` (else ``prefix``)."""
        for r in self.rows:
            if r.workload == workload and r.peer.startswith(prefix):
                return r.peer
        return prefix

    def write_checks(self) -> list[Check]:
        """The write targets (workloads b, f, h, i, j, k), measured in this run."""
        cfg = self.cfg
        ca, cb, cw = cfg.a.chunk_label(), cfg.b.chunk_label(), cfg.w.chunk_label()
        out: list[Check] = []

        def ratio(target: str, wl: str, peer: str, ref: str, bound: float, at_least: bool) -> None:
            unit = self.workloads[wl].unit
            p, r = self.median(wl, peer), self.median(wl, ref)
            detail = f"{peer} {_fmt(p)} {unit} / {ref} {_fmt(r)} {unit} ({wl})"
            ceiling = self.ratio(wl, COPYTO, ref) if ref not in (COPYTO, PLAIN) else None
            tiled = self.ratio(wl, TILED, ref)
            out.append(
                Check(target, self.ratio(wl, peer, ref), bound, at_least, detail, ceiling, tiled)
            )

        def value(
            target: str,
            wl: str,
            peer: str,
            bound: float,
            at_least: bool,
            limit: bool = False,
            floor: str | None = None,
        ) -> None:
            v = self.median(wl, peer)
            unit = self.workloads[wl].unit
            detail = f"{peer} {_fmt(v)} {unit} ({wl})"
            tiled = None
            if limit:  # the lock-free peers' own value: what this machine allowed in the run
                tiled = self.median(wl, TILED)
                detail += f"; {PLAIN} {_fmt(self.median(wl, PLAIN))} {unit}"
            if floor is not None:  # the cheapest store that does what the target needs
                tiled = self.median(wl, floor)
                detail += f"; {floor} {_fmt(tiled)} {unit}"
            out.append(Check(target, v, bound, at_least, detail, None, tiled))

        ratio(
            f"write_chunk, one {cb} chunk: time ≤ 3x LMDB (one txn per put)",
            "b.chunk_write",
            SZ,
            LMDB,
            3.0,
            False,
        )
        ratio(
            f"{cfg.chunk_ops} {cb} chunk writes in one writer session: time ≤ 1.5x LMDB (one txn)",
            "h.batch",
            SZ,
            LMDB,
            1.5,
            False,
        )
        ratio(
            f"{cfg.chunk_ops} {cb} chunk writes in one call: time ≤ 1.5x LMDB (one txn)",
            "h.call",
            SZ,
            LMDB,
            1.5,
            False,
        )
        ratio(
            f"whole-array rewrite ({ca} chunks) ≥ 0.8x np.copyto into shared_memory",
            "a.write",
            SZ,
            PLAIN,
            0.8,
            True,
        )
        ratio(
            f"whole-array rewrite, {_size(cfg.w.nbytes)} in {cw} chunks ≥ 0.5x np.copyto"
            " into shared_memory",
            "h.write_w",
            SZ,
            PLAIN,
            0.5,
            True,
        )
        ratio(f"whole-array rewrite ({cb} chunks) ≥ 1x LMDB", "b.write", SZ, LMDB, 1.0, True)
        value(f"2 writers / 1 writer ≥ 1.5x ({ca} chunks)", "i.scale_a", SZ, 1.5, True, True)
        value(f"2 writers / 1 writer ≥ 1.2x ({cb} chunks)", "i.scale_b", SZ, 1.2, True, True)
        for k, c in (("a", ca), ("b", cb), ("w", cw)):
            value(
                f"2 writers / 1 writer never < 1.0x ({c} chunks)",
                f"i.scale_{k}",
                SZ,
                1.0,
                True,
                True,
            )
        value("writer-lock hand-off p99 ≤ 100 µs", "j.p99", SZ_LOCK, 100.0, False)
        frame = f"{math.prod(cfg.frame) * 8 / 1024:g} KiB"
        value(
            f"append one {frame} frame ≤ 100 µs",
            "k.append",
            SZ_APPEND,
            100.0,
            False,
            floor=FRESH_APPEND,
        )
        ratio(
            f"Table bulk insert, {cfg.table_entries:,} entries in one insert_many: time per"
            " entry ≤ 3x LMDB (one txn)",
            "f.insert",
            SZ_TABLE,
            LMDB,
            3.0,
            False,
        )
        for wl, c in (("h.mem_a", ca), ("h.mem_b", cb)):
            value(
                f"/dev/shm bytes ≤ 1.05x live data after {cfg.rewrites} rewrites ({c} chunks)",
                wl,
                SZ,
                1.05,
                False,
            )
        return out

    def loader_checks(self) -> list[Check]:
        """The data-loader targets (workload l), measured in this run."""
        out: list[Check] = []
        sz_batch = self.label_like("l.batch", SZ)
        queue = self.label_like("l.batch", QUEUE)
        sz_row = self.label_like("l.row", SZ)
        for target, wl, peer, ref, bound, at_least in (
            (
                "a[idx], random batches ≥ 0.5x shared_memory arr[idx]",
                "l.batch",
                sz_batch,
                PLAIN_BATCH,
                0.5,
                True,
            ),
            ("a[idx], random batches ≥ 3x the Queue", "l.batch", sz_batch, queue, 3.0, True),
            (
                "a[i], one row: time ≤ 3x shared_memory arr[i].copy()",
                "l.row",
                sz_row,
                PLAIN_ROW,
                3.0,
                False,
            ),
        ):
            unit = self.workloads[wl].unit
            p, r = self.median(wl, peer), self.median(wl, ref)
            detail = f"{peer} {_fmt(p)} {unit} / {ref} {_fmt(r)} {unit} ({wl})"
            out.append(Check(target, self.ratio(wl, peer, ref), bound, at_least, detail))
        return out

    @staticmethod
    def _simple_checks_markdown(title: str, checks: list[Check]) -> str:
        lines = [
            f"| {title} | Measured | Required | Result | limit | From |",
            "|---|---:|---:|---|---:|---|",
        ]
        for c in checks:
            r = "–" if c.ratio is None else f"{c.ratio:.4g}"
            req = f"{'≥' if c.at_least else '≤'} {c.bound:g}"
            tiled = "–"
            if c.tiled is not None:
                beyond = c.tiled < c.bound if c.at_least else c.tiled > c.bound
                tiled = f"{c.tiled:.3g}" + (" (target beyond the limit)" if beyond else "")
            lines.append(f"| {c.target} | {r} | {req} | **{c.verdict}** | {tiled} | {c.detail} |")
        return "\n".join(lines)

    def checks_markdown(self) -> str:
        """The read target checks as a Markdown table."""
        lines = [
            "| Read target | Measured ratio | Required | Result | np.copyto's ratio"
            " (ceiling) | chunked limit's ratio | From |",
            "|---|---:|---:|---|---:|---:|---|",
        ]

        def limit(x: float | None, c: Check) -> str:
            if x is None:
                return "–"
            beyond = x < c.bound if c.at_least else x > c.bound
            return f"{x:.3g}x" + (" (target beyond the limit)" if beyond else "")

        for c in self.checks():
            r = "–" if c.ratio is None else f"{c.ratio:.4g}x"
            req = f"{'≥' if c.at_least else '≤'} {c.bound:g}x"
            lines.append(
                f"| {c.target} | {r} | {req} | **{c.verdict}** | {limit(c.ceiling, c)} "
                f"| {limit(c.tiled, c)} | {c.detail} |"
            )
        return "\n".join(lines)

    # --------------------------------------------------------------------------------- output
    def to_json(self, machine: dict[str, str]) -> dict[str, Any]:
        """Everything, as JSON-serialisable data."""
        return {
            "machine": machine,
            "size": self.cfg.name,
            "elapsed_s": self.elapsed,
            "workloads": {
                k: {"title": w.title, "unit": w.unit, "ref": w.ref}
                for k, w in self.workloads.items()
            },
            "rows": [
                {
                    "workload": r.workload,
                    "peer": r.peer,
                    "proc": r.proc,
                    "values": r.values,
                    "median": r.median,
                    "note": r.note,
                }
                for r in self.rows
            ],
            "checks": [
                {
                    "group": group,
                    "target": c.target,
                    "ratio": c.ratio,
                    "bound": c.bound,
                    "at_least": c.at_least,
                    "verdict": c.verdict,
                    "ceiling": c.ceiling,
                    "chunked_limit": c.tiled,
                    "detail": c.detail,
                }
                for group, checks in (
                    ("read", self.checks()),
                    ("write", self.write_checks()),
                    ("loader", self.loader_checks()),
                )
                for c in checks
            ],
        }

    def markdown(self, machine: dict[str, str]) -> str:
        """The whole report: machine, configuration, table, legend, targets."""
        cfg = self.cfg
        m = "\n".join(f"- {k}: {v}" for k, v in machine.items())
        notes = "".join(f"\n- **{n}**" for n in self.notes)
        elapsed = f"{self.elapsed:.0f} s" if self.elapsed is not None else "?"
        return f"""# sharedzarr benchmarks (`make bench`)

## Machine
{m}

## Run
- size: `{cfg.name}`; medians of {cfg.reps} timed repetitions, each after {cfg.warmup}
  warm-up; spread is min–max over the repetitions; wall time of the whole run: {elapsed}
- The array peers take turns: all of a dataset's stores exist at once, and every workload runs
  one repetition of every peer, then the next repetition in the reverse order, and so on. A
  change of the machine's speed during the run (a shared VM) then reaches every peer alike.
- GB/s are 10^9 bytes per second of array data; µs are per operation (per window, chunk,
  lookup, attach, or inserted entry).
- "Reader: other" means the timed loop ran in a separate (spawned) process that attached to
  the store by name; process start-up is never timed.
- Random windows: {cfg.n_windows} per repetition ({cfg.n_windows_slow} for zarr and the Manager
  dict); per-chunk operations: {cfg.chunk_ops} per repetition ({cfg.chunk_ops_slow} for the slow
  peers), in a random order; (c) reads the whole array {cfg.concurrent_reads} times per reader
  per repetition.
- LMDB at its best on /dev/shm: `writemap=True, map_async=True, sync=False, metasync=False`,
  values read with `buffers=True`; "txn per get/read" begins a read transaction per operation
  (a reader that sees the latest value, like `read_chunk`), "one txn" reuses one read
  transaction (a snapshot). Its bulk insert (f) is one transaction with `putmulti(append=True)`
  of keys in order.
- (f) bulk insert: {min(cfg.reps, 3)} builds of every table peer's table, the peers taking
  turns (the order reversed every other round), each table deleted after its build.
- Manager dict, zarr: chunks stored uncompressed; the Manager dict holds `bytes` per chunk.
- (h) "one writer session" is `write_chunk` per chunk inside `with a.table.writer():`; "one
  call" is one `a.write_chunks(...)` of all of them; LMDB puts them in one transaction.
  The memory after {cfg.rewrites} rewrites calls `write_whole` (`set_slice` of the whole array)
  that many times and never `reclaim()`.
- (i) Two spawned worker processes overwrite disjoint chunks (every other chunk) with
  `write_chunk`, one per call, starting together at a barrier; first one writer alone, then
  both; each writes for {cfg.writer_seconds:g} s per repetition. Aggregate GB/s = all bytes
  / (last end - first start).
- (j) Writer A holds the lock, B blocks in it; A stamps `time.perf_counter_ns()` into shared
  memory just before it leaves `with`, B as the first thing it does holding the lock;
  {cfg.handoffs} hand-offs per repetition, A holding 0.2–2 ms (random) after B asked.
- (k) Appending {cfg.append_frames} frames per repetition to an array that starts empty
  (sharedzarr: shape `(0, h, w)`, one frame per chunk; resized back to 0 between repetitions).
- (l) The data loader: the 2 workers read at once (barrier), {cfg.loader_batches} random
  batches of {cfg.batch_rows} rows each per repetition (rows drawn with replacement), then
  {cfg.loader_rows} single rows each. The Queue peer's producer process pickles random batches
  into a `multiprocessing.Queue` (maxsize 8) that both workers take from; LMDB holds one key
  per chunk of {cfg.loader.chunks[0]} rows (the sharedzarr array's chunks).
- The machine is shared: other work may run during the measurement; the peers taking turns
  keeps the ratios fair, not the absolute numbers.{notes}

## Results
{self.markdown_table()}

Ratio references:
{self.legend()}

## Read targets
The ceiling column is the same ratio measured for `np.copyto` in this process (one memory
copy, no lookup at all): where even it misses the target, no implementation can meet it on
this machine.  The chunked limit's column is the same ratio for "{TILED}": the chunks stored
back to back in one segment and read with one numpy copy per chunk (no lookup, no key, no
header), read from another process like the others; where it misses the target, no chunked
store can meet it here.

{self.checks_markdown()}

## Write targets
"Measured" is a ratio of medians (time or throughput, as the target says), or for the
two-writer, hand-off, append and memory targets the value itself (x, µs, B/B). The limit
column is the same measure for the store that does only what the target needs: for the array
targets the chunk-major shared_memory segment ("{TILED}"), where there is one; for the
two-writer targets that segment's own 2-writers / 1-writer ratio (no lock at all), and "From"
gives the flat shared_memory array's: when they are near 1.0x, the second writer had no free
core in this run (the machine is shared), and no store could scale here; for the append
target, a frame copied into /dev/shm pages allocated for it ("{FRESH_APPEND}"), the cost
of new memory here: the floor of an array that grows (this workload empties the array
between repetitions, and sharedzarr reuses part of the emptied memory, so its append can
come in under it). Where the limit misses the target, no store of that kind can meet it on
this machine.

{self._simple_checks_markdown("Write target", self.write_checks())}

## Data-loader targets
{self._loader_note()}

{self._simple_checks_markdown("Data-loader target", self.loader_checks())}
"""

    def _loader_note(self) -> str:
        sz = self.label_like("l.batch", SZ)
        how = sz.split(": ", 1)[1] if ": " in sz else "?"
        return (
            f"sharedzarr's batch read in this run: `{how}`. Ratios are of aggregate batches/s"
            " (higher is better) for batches, of µs per row for single rows."
        )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    """Describe the machine and the software versions.

    Returns
    -------
    dict of str to str
        CPU model, core counts, memory, OS, Python and package versions, date.
    """
    try:
        usable = str(len(os.sched_getaffinity(0)))
    except AttributeError:
        usable = "?"
    return {
        "CPU": _cpu_model(),
        "cores": f"{os.cpu_count()} logical, {usable} usable by this process",
        "memory": _mem_total(),
        "OS": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "Python": platform.python_version(),
        "versions": ", ".join(
            f"{d} {_version(d)}" for d in ("numpy", "zarr", "lmdb", "matplotlib", "sharedzarr")
        ),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def plot_read_gbps(results: Results, path: Path) -> None:
    """Write a bar chart of whole-array read GB/s by peer and chunk size.

    Parameters
    ----------
    results : Results
        The run's results (workloads ``a.read`` and ``b.read``).
    path : Path
        The PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results.cfg
    series = [
        ("a.read", f"{cfg.a.chunk_label()} chunks"),
        ("b.read", f"{cfg.b.chunk_label()} chunks"),
    ]
    peers: list[str] = []
    for r in results.rows:
        if r.workload in ("a.read", "b.read") and r.peer not in peers:
            peers.append(r.peer)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    width = 0.38
    for n, (wl, label) in enumerate(series):
        xs, ys = [], []
        for i, p in enumerate(peers):
            v = results.median(wl, p)
            if v:
                xs.append(i + (n - 0.5) * width)
                ys.append(v)
        bars = ax.bar(xs, ys, width, label=label)
        for b, v in zip(bars, ys, strict=True):
            ax.annotate(
                _fmt(v), (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=7
            )
    ax.set_yscale("log")
    ax.set_xticks(range(len(peers)))
    ax.set_xticklabels(peers, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("whole-array read, GB/s (log scale)")
    ax.set_title(
        f"Read throughput by peer and chunk size ({cfg.name} run; "
        f"{cfg.a.nbytes / 2**20:g} MiB and {cfg.b.nbytes / 2**20:g} MiB float64)"
    )
    ax.legend()
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def plot_write_gbps(results: Results, path: Path) -> None:
    """Write a bar chart of whole-array write GB/s by peer and chunk size, and of the
    aggregate GB/s of two writer processes.

    Parameters
    ----------
    results : Results
        The run's results (workloads ``a.write``, ``h.write_w``, ``b.write``, ``i.w2_*``).
    path : Path
        The PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results.cfg
    panels = [
        (
            "whole-array write (one process)",
            [
                ("a.write", f"{cfg.a.chunk_label()} chunks ({_size(cfg.a.nbytes)})"),
                ("h.write_w", f"{cfg.w.chunk_label()} chunks ({_size(cfg.w.nbytes)})"),
                ("b.write", f"{cfg.b.chunk_label()} chunks ({_size(cfg.b.nbytes)})"),
            ],
        ),
        (
            "2 writer processes, disjoint chunks, aggregate",
            [
                ("i.w2_a", f"{cfg.a.chunk_label()} chunks"),
                ("i.w2_w", f"{cfg.w.chunk_label()} chunks"),
                ("i.w2_b", f"{cfg.b.chunk_label()} chunks"),
            ],
        ),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    for ax, (title, series) in zip(axes, panels, strict=True):
        peers: list[str] = []
        for r in results.rows:
            if r.workload in {wl for wl, _ in series} and r.peer not in peers and r.values:
                peers.append(r.peer)
        peers.sort(key=lambda p: _PEER_ORDER.index(p) if p in _PEER_ORDER else len(_PEER_ORDER))
        width = 0.8 / len(series)
        for n, (wl, label) in enumerate(series):
            xs, ys = [], []
            for i, p in enumerate(peers):
                v = results.median(wl, p)
                if v:
                    xs.append(i + (n - (len(series) - 1) / 2) * width)
                    ys.append(v)
            bars = ax.bar(xs, ys, width, label=label)
            for b, v in zip(bars, ys, strict=True):
                ax.annotate(
                    _fmt(v),
                    (b.get_x() + b.get_width() / 2, v),
                    ha="center",
                    va="bottom",
                    fontsize=6,
                )
        ax.set_yscale("log")
        ax.set_xticks(range(len(peers)))
        ax.set_xticklabels(peers, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("GB/s (log scale)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)
    fig.suptitle(f"Write throughput by peer and chunk size ({cfg.name} run)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


_PEER_ORDER = [COPYTO, PLAIN, TILED, SZ, SZ_MEM, ZARR_MEM, ZARR_LOCAL, LMDB, MANAGER]


def write_outputs(results: Results, machine: dict[str, str], out_dir: Path) -> str:
    """Write ``latest.md``, ``latest.json``, ``read_gbps.png`` and ``write_gbps.png`` into
    ``out_dir``.

    Parameters
    ----------
    results : Results
        The run's results.
    machine : dict
        From :func:`machine_info`.
    out_dir : Path
        Directory (created if missing).

    Returns
    -------
    str
        The Markdown report.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    md = results.markdown(machine)
    _atomic_write(out_dir / "latest.md", lambda p: p.write_text(md))
    _atomic_write(
        out_dir / "latest.json",
        lambda p: p.write_text(json.dumps(results.to_json(machine), indent=1)),
    )
    _atomic_write(out_dir / "read_gbps.png", lambda p: plot_read_gbps(results, p))
    _atomic_write(out_dir / "write_gbps.png", lambda p: plot_write_gbps(results, p))
    return md


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
