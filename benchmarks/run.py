"""Run every peer on the same data in one run: ``python -m benchmarks.run`` (``make bench``).

Usage::

    python -m benchmarks.run                 # full size, < 15 min on 2 cores
    python -m benchmarks.run --quick         # same arrays, fewer repetitions
    python -m benchmarks.run --size tiny --out DIR   # smoke run, well under a minute
    python -m benchmarks.run --only sharedzarr,shared_memory --workloads a,b

The size can also come from the environment: ``SZ_BENCH_SIZE=tiny make bench``; so can the
workloads (``SZ_BENCH_WORKLOADS=hijkl``). Workloads: (a)-(g) reads, chunk writes, memory,
tables and the copy probe; (h) batched chunk writes, the small-array rewrite and the memory after
many rewrites; (i) two writer processes; (j) the writer-lock hand-off; (k) append; (l) the data
loader. Prints the Markdown table and writes ``latest.md``, ``latest.json``, ``read_gbps.png``
and ``write_gbps.png`` into the output directory (default ``benchmarks/results``). Every
/dev/shm segment, LMDB environment and zarr directory the run creates is removed at the end,
also on error or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import loader as L
from benchmarks import peers as P
from benchmarks import writers as W
from benchmarks.config import BenchConfig, Dataset, get_config
from benchmarks.report import (
    LMDB_ONE_TXN,
    Results,
    copy_run_labels,
    machine_info,
    write_outputs,
)
from benchmarks.worker import LocalRunner, WorkerError, WorkerPool

__all__ = ["main", "run"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ALL_WORKLOADS = "abcdefghijkl"
_T0 = time.perf_counter()


def _log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _err(exc: BaseException) -> str:
    """One line describing ``exc`` for the table."""
    if isinstance(exc, NotImplementedError):
        return "n/a (not supported)"
    text = str(exc).strip().splitlines()
    last = text[-1] if text else type(exc).__name__
    if not isinstance(exc, WorkerError):
        last = f"{type(exc).__name__}: {last}"
    return "error: " + last.replace("|", "/")[:120]


class _Bench:
    """State of one run: configuration, data, workers and results."""

    def __init__(self, cfg: BenchConfig, results: Results, parts: set[str]) -> None:
        self.cfg, self.results, self.parts = cfg, results, parts
        rng = np.random.default_rng(cfg.seed)
        self.data_a = rng.random(cfg.a.shape)
        self.data_b = rng.random(cfg.b.shape)
        n, w = cfg.a.shape[0], cfg.window
        m = cfg.a.shape[1]
        self.wins_aligned = [
            (r, r + w, c, c + w)
            for r, c in zip(
                (w * rng.integers(0, n // w, cfg.n_windows)).tolist(),
                (w * rng.integers(0, m // w, cfg.n_windows)).tolist(),
                strict=True,
            )
        ]
        self.wins_unaligned = [
            (r, r + w, c, c + w)
            for r, c in zip(
                rng.integers(0, n - w + 1, cfg.n_windows).tolist(),
                rng.integers(0, m - w + 1, cfg.n_windows).tolist(),
                strict=True,
            )
        ]
        gi, gj = cfg.b.grid
        perm = rng.permutation(gi * gj)[: cfg.chunk_ops].tolist()
        self.order_b = [(k // gj, k % gj) for k in perm]
        self.lookup_idx = rng.integers(0, cfg.table_entries, cfg.lookups).tolist()
        self.insert_times: dict[str, list[float]] = {}  # (f) builds, see table_inserts
        self.pool: WorkerPool | None = None

    # ------------------------------------------------------------------------------ helpers
    def measure(
        self, key: str, label: str, proc: str, fn: Callable[[], list[float]]
    ) -> list[float] | None:
        """Run ``fn`` and record its values under ``key``; record the error instead if any."""
        if key[0] not in self.parts:
            return None
        try:
            values = fn()
        except Exception as exc:  # one failing peer must not stop the run
            self.results.note(key, label, proc, _err(exc))
            _log(f"  {key} {label}: {_err(exc)}")
            return None
        self.results.add(key, label, proc, values)
        return values

    def _runner(self, cross: bool, n: int = 0) -> Any:
        if not cross:
            return LocalRunner()
        assert self.pool is not None
        self.pool.ensure_alive()
        return self.pool.workers[n]

    # ------------------------------------------------------------------------- array peers
    def array_peers(self, classes: Sequence[type[P.Peer]]) -> None:
        """All array workloads (a)-(e) of ``classes``, the peers taking turns.

        Every peer of a dataset is created first; then each workload runs repetition by
        repetition, one repetition of every peer in turn (see :func:`_take_turns`), so that a
        change in the machine's speed during the run reaches every peer alike and the ratios
        of the medians stay put.
        """
        live = []
        for cls in classes:
            reason = cls.unavailable()
            if reason is None:
                live.append(cls)
                continue
            _log(f"{cls.label}: {reason}")
            proc = "other" if cls.cross_process else "same"
            for key in self._array_keys(cls):
                if key[0] in self.parts:
                    self.results.note(key, cls.label, proc, "n/a (not available)")
        if self.parts & {"a", "c", "d", "e", "h", "i"}:
            _take_turns([self._dataset(cls, self.cfg.a, self.data_a) for cls in live])
        if self.parts & {"b", "e", "h", "i"}:
            _take_turns([self._dataset(cls, self.cfg.b, self.data_b) for cls in live])
        if self.parts & {"h", "i"}:
            data_w = np.random.default_rng(self.cfg.seed + 2).random(self.cfg.w.shape)
            _take_turns([self._dataset(cls, self.cfg.w, data_w) for cls in live if cls in _W_PEERS])

    def _array_keys(self, cls: type[P.Peer]) -> list[str]:
        return [k for ds in "abw" for k in _dataset_keys(cls, ds)]

    def _dataset_keys(self, cls: type[P.Peer], k: str) -> list[str]:
        """The workload keys measured on dataset ``k`` for ``cls`` in this run."""
        return [key for key in _dataset_keys(cls, k) if key[0] in self.parts]

    def _steps(
        self, key: str, label: str, proc: str, one: Callable[[], list[float]]
    ) -> Iterator[str]:
        """Yield ``key`` before each of ``cfg.reps`` calls of ``one`` (one repetition's
        values); then record the values, or the error that stopped them."""
        if key[0] not in self.parts:
            return
        values: list[float] = []
        try:
            for _ in range(self.cfg.reps):
                yield key
                values.extend(one())
        except Exception as exc:  # one failing peer must not stop the run
            self.results.note(key, label, proc, _err(exc))
            _log(f"  {key} {label}: {_err(exc)}")
            return
        self.results.add(key, label, proc, values)

    def _dataset(self, cls: type[P.Peer], ds: Dataset, data: np.ndarray) -> Iterator[str]:
        """One peer's workloads on ``ds``, as steps for :func:`_take_turns`."""
        label = cls.label
        proc = "other" if cls.cross_process else "same"
        peer = cls(ds)
        attached: list[tuple[Any, str]] = []
        _log(f"{label}: dataset {ds.key} {ds.shape} in {ds.chunk_label()} chunks")
        try:
            peer.create()
            peer.write_whole(data)  # warm-up write: first touch of every page
            yield from self._dataset_body(cls, peer, data, proc, attached)
        except Exception as exc:  # the rest of this peer's rows get the error
            _log(f"  {label} failed: {_err(exc)}")
            for key in self._dataset_keys(cls, ds.key):
                if not any(
                    r.workload == key and r.peer.startswith(label) for r in self.results.rows
                ):
                    self.results.note(key, label, proc, _err(exc))
        finally:
            for r, rid in attached:
                with contextlib.suppress(Exception):
                    r.close(rid)
            peer.destroy()

    def _dataset_body(
        self, cls: type[P.Peer], peer: P.Peer, data: np.ndarray, proc: str, attached: list
    ) -> Iterator[str]:
        cfg, ds = self.cfg, peer.ds
        k, label = ds.key, cls.label
        runner = self._runner(cls.cross_process)
        rid = f"{label}/r0/{k}"  # a worker holds the readers of every peer at once
        if cls.uses_dev_shm and k != "w":
            self.measure(
                f"e.mem_{k}",
                label,
                proc,
                lambda: [P.dev_shm_bytes(peer.shm_paths()) / ds.nbytes],
            )
        gb = ds.nbytes / 1e9
        yield from self._steps(
            "h.write_w" if k == "w" else f"{k}.write",
            label,
            "same",
            lambda: [gb / t for t in _times(lambda: peer.write_whole(data), 1)],
        )
        if k == "w":
            if cls.cross_process and "i" in self.parts:
                runner.attach(rid, peer)
                attached.append((runner, rid))
                yield from self._two_writers(peer, rid, attached, label, proc)
            return
        # (d) first, while this worker holds nothing of this store (LMDB shares one env)
        if cls.cross_process and k == "a":
            yield from self._steps(
                "d.attach",
                label,
                proc,
                lambda: [
                    t * 1e6
                    for t in runner.call(
                        "attach",
                        None,
                        reader_cls=peer.reader_cls,
                        handle=peer.handle(),
                        reps=1,
                        warmup=cfg.warmup,
                    )
                ],
            )
        runner.attach(rid, peer)
        attached.append((runner, rid))
        yield from self._steps(
            f"{k}.read",
            label,
            proc,
            lambda: [
                gb / t for t in runner.call("whole_read", rid, ds=ds, reps=1, warmup=cfg.warmup)
            ],
        )
        if k == "a":
            nwin = cfg.n_windows_slow if cls.slow else cfg.n_windows
            for key, wins in (
                ("a.win_aligned", self.wins_aligned),
                ("a.win_unaligned", self.wins_unaligned),
            ):
                yield from self._steps(
                    key,
                    label,
                    proc,
                    lambda wins=wins: [
                        t * 1e6
                        for t in runner.call(
                            "windows", rid, wins=wins[:nwin], reps=1, warmup=cfg.warmup
                        )
                    ],
                )
            if cls.cross_process:
                yield from self._concurrent(peer, runner, rid, attached, label, proc)
        else:
            yield from self._chunks(peer, runner, rid, attached, label, proc)
        if cls.cross_process:
            yield from self._two_writers(peer, rid, attached, label, proc)
        if cls.uses_dev_shm:
            self.measure(
                f"e.mem_{k}_after",
                label,
                proc,
                lambda: [P.dev_shm_bytes(peer.shm_paths()) / ds.nbytes],
            )
        if cls.rewrite_mem and "h" in self.parts:
            yield from self._rewrite_memory(peer, data, label, proc)

    def _rewrite_memory(
        self, peer: P.Peer, data: np.ndarray, label: str, proc: str
    ) -> Iterator[str]:
        """(h) The store's /dev/shm bytes per data byte after ``cfg.rewrites`` full rewrites
        (``write_whole``), with no ``reclaim()`` call. One step: the rewrites take a while."""
        ds = peer.ds

        def rewrite() -> list[float]:
            for _ in range(self.cfg.rewrites):
                peer.write_whole(data)
            return [P.dev_shm_bytes(peer.shm_paths()) / ds.nbytes]

        yield f"h.mem_{ds.key}"
        self.measure(f"h.mem_{ds.key}", label, proc, rewrite)

    def _together(self, fname: str, rid: str, kwargs: list[dict[str, Any]]) -> list[Any]:
        """Run ``workloads.<fname>`` in both workers at once (they meet at the barrier)."""
        assert self.pool is not None
        workers = self.pool.workers
        for w, kw in zip(workers, kwargs, strict=True):
            w.send("call", fname, rid, {**kw, "use_barrier": True})
        try:
            return [w.result() for w in workers]
        except Exception:
            for w in workers:  # drain the other answer, then unbreak the barrier
                with contextlib.suppress(Exception):
                    w.result(timeout=130)
            self.pool.barrier.reset()
            raise

    def _two_writers(
        self, peer: P.Peer, rid: str, attached: list, label: str, proc: str
    ) -> Iterator[str]:
        """(i) One writer process, then two at once, overwriting disjoint chunks with
        ``write_chunk``: GB/s of each and the ratio of the two (one step per repetition)."""
        if "i" not in self.parts:
            return
        cfg, ds = self.cfg, peer.ds
        k = ds.key
        keys = [f"i.w1_{k}", f"i.w2_{k}", f"i.scale_{k}"]
        assert self.pool is not None
        w0, w1 = self.pool.workers
        try:
            for w in (w0, w1):
                if (w, rid) not in attached:
                    w.attach(rid, peer)
                    attached.append((w, rid))
        except Exception as exc:
            for key in keys:
                self.results.note(key, label, proc, _err(exc))
            return
        chunks = list(P._chunk_indices(ds))
        halves = [chunks[0::2], chunks[1::2]]
        secs = cfg.writer_seconds
        values: list[list[float]] = [[], [], []]
        try:
            for _ in range(cfg.reps):
                yield f"i.{k}"
                t0, t1, nb = w0.call("concurrent_write", rid, ds=ds, chunks=halves[0], seconds=secs)
                one = nb / 1e9 / (t1 - t0)
                spans = self._together(
                    "concurrent_write",
                    rid,
                    [{"ds": ds, "chunks": h, "seconds": secs} for h in halves],
                )
                total = sum(s[2] for s in spans)
                two = total / 1e9 / (max(s[1] for s in spans) - min(s[0] for s in spans))
                for v, x in zip(values, (one, two, two / one), strict=True):
                    v.append(x)
        except Exception as exc:
            for key in keys:
                self.results.note(key, label, proc, _err(exc))
            _log(f"  i.{k} {label}: {_err(exc)}")
            return
        for key, v in zip(keys, values, strict=True):
            self.results.add(key, label, proc, v)

    def _chunks(
        self, peer: P.Peer, runner: Any, rid: str, attached: list, label: str, proc: str
    ) -> Iterator[str]:
        cfg = self.cfg
        order = self.order_b[: cfg.chunk_ops_slow if peer.slow else cfg.chunk_ops]

        def per_op(fname: str, rid: str = rid, **kw: Any) -> Callable[[], list[float]]:
            return lambda: [
                t * 1e6
                for t in runner.call(fname, rid, order=order, reps=1, warmup=cfg.warmup, **kw)
            ]

        yield from self._steps("b.chunk_read", label, proc, per_op("chunk_reads"))
        if isinstance(peer, P.LmdbPeer):
            rid1 = f"{label}/r1"
            runner.attach(rid1, peer, handle=peer.handle("one_txn"))
            attached.append((runner, rid1))
            yield from self._steps("b.chunk_read", LMDB_ONE_TXN, proc, per_op("chunk_reads", rid1))
            yield from self._steps(
                "b.chunk_view", LMDB_ONE_TXN, proc, per_op("chunk_reads", rid1, view=True)
            )
            # its long read transaction would pin old pages during the writes below
            attached.remove((runner, rid1))
            runner.close(rid1)
        else:
            yield from self._steps("b.chunk_view", label, proc, per_op("chunk_reads", view=True))
        yield from self._steps("b.chunk_write", label, proc, per_op("chunk_writes", ds=peer.ds))
        yield from self._steps("h.batch", label, proc, per_op("chunk_write_session", ds=peer.ds))
        if isinstance(peer, P.LmdbPeer) or label.startswith("sharedzarr"):
            yield from self._steps(
                "h.call", label, proc, per_op("chunk_write_session", ds=peer.ds, one_call=True)
            )

    def _concurrent(
        self, peer: P.Peer, runner: Any, rid: str, attached: list, label: str, proc: str
    ) -> Iterator[str]:  # (c)
        cfg, ds = self.cfg, peer.ds
        n = cfg.concurrent_reads

        def one() -> list[float]:
            t0, t1 = runner.call("concurrent_read", rid, ds=ds, n=n)
            return [n * ds.nbytes / 1e9 / (t1 - t0)]

        yield from self._steps("c.read1", label, proc, one)
        if "c" not in self.parts:
            return
        assert self.pool is not None
        other = self.pool.workers[1]
        try:
            other.attach(rid, peer)
            attached.append((other, rid))
        except Exception as exc:
            self.results.note("c.read2", label, proc, _err(exc))
            return
        workers = [runner, other]

        def two() -> list[float]:
            for w in workers:
                w.send("call", "concurrent_read", rid, {"ds": ds, "n": n, "use_barrier": True})
            try:
                spans = [w.result() for w in workers]
            except Exception:
                for w in workers:  # drain the other answer, then unbreak the barrier
                    with contextlib.suppress(Exception):
                        w.result(timeout=130)
                assert self.pool is not None
                self.pool.barrier.reset()
                raise
            t0 = min(s[0] for s in spans)
            t1 = max(s[1] for s in spans)
            return [2 * n * ds.nbytes / 1e9 / (t1 - t0)]

        yield from self._steps("c.read2", label, proc, two)

    # ------------------------------------------------------------------------- copy probe
    def copy_probe(self) -> None:
        """Workload (g): how fast this machine copies the same bytes in shorter runs.

        A chunk gather hands ``memcpy`` one chunk row at a time (2 KiB for 256x256 float64
        chunks); a flat copy hands it one block. The gap between them is the price of any
        chunked layout here, whatever the store.
        """
        from benchmarks.workloads import copy_runs

        labels = copy_run_labels(self.cfg)
        _log(f"copy probe: runs of {[n for _, n in labels[1:]]} bytes")
        values = copy_runs(self.cfg.a.shape, [n for _, n in labels], self.cfg.reps, self.cfg.warmup)
        for (label, _n), v in zip(labels, values, strict=True):
            self.results.add("g.copy", label, "same", v)

    # ---------------------------------------------------------------------- (j) hand-off
    def handoff_peers(self) -> None:
        """(j) Writer-lock hand-off latency between the two workers, the peers taking turns."""
        live = []
        for cls in W.HANDOFF_PEERS:
            reason = cls.unavailable()
            if reason is None:
                live.append(cls)
                continue
            for key in ("j.p50", "j.p99"):
                self.results.note(key, cls.label, "other", "n/a (not available)")
        _take_turns([self._handoff(cls) for cls in live])

    def _handoff(self, cls: type[W.HandoffPeer]) -> Iterator[str]:
        cfg, label = self.cfg, cls.label
        peer = cls(cfg.handoffs)
        rid = f"{label}/j"
        attached: list[Any] = []
        keys = ["j.p50", "j.p99"]
        _log(f"{label}: {cfg.handoffs} writer-lock hand-offs per repetition")
        try:
            peer.create()
            assert self.pool is not None
            self.pool.ensure_alive()
            for w in self.pool.workers:
                w.attach(rid, peer)
                attached.append(w)
            values: list[list[float]] = [[], []]
            for rep in range(cfg.warmup + cfg.reps):
                if rep >= cfg.warmup:
                    yield "j"
                peer.reset()
                out = self._together(
                    "lock_handoff",
                    rid,
                    [
                        {"role": "A", "n": cfg.handoffs, "seed": rep},
                        {"role": "B", "n": cfg.handoffs},
                    ],
                )
                lat = np.asarray(out[1])
                if rep >= cfg.warmup:
                    values[0].append(float(np.percentile(lat, 50)))
                    values[1].append(float(np.percentile(lat, 99)))
            for key, v in zip(keys, values, strict=True):
                self.results.add(key, label, "other", v)
        except Exception as exc:
            _log(f"  j {label}: {_err(exc)}")
            for key in keys:
                self.results.note(key, label, "other", _err(exc))
        finally:
            for w in attached:
                with contextlib.suppress(Exception):
                    w.close(rid)
            peer.destroy()

    # ------------------------------------------------------------------------ (k) append
    def append_peers(self) -> None:
        """(k) Appending one frame to a growing array, in this process, the peers taking
        turns."""
        live = []
        for cls in W.APPEND_PEERS:
            reason = cls.unavailable()
            if reason is None:
                live.append(cls)
            else:
                self.results.note("k.append", cls.label, "same", "n/a (not available)")
        _take_turns([self._append(cls) for cls in live])

    def _append(self, cls: type[W.AppendPeer]) -> Iterator[str]:
        cfg, label = self.cfg, cls.label
        n = cfg.append_frames
        peer = cls(cfg.frame, n)
        frames = [np.random.default_rng(s).random(cfg.frame) for s in range(4)]

        def one() -> list[float]:
            peer.reset()
            t = _times(lambda: [peer.append(frames[i & 3]) for i in range(n)], 1)[0]
            return [t / n * 1e6]

        try:
            peer.create()
            for _ in range(cfg.warmup):
                one()
            yield from self._steps("k.append", label, "same", one)
        except Exception as exc:
            self.results.note("k.append", label, "same", _err(exc))
        finally:
            peer.destroy()

    # ----------------------------------------------------------------------- (l) loader
    def loader_peers(self) -> None:
        """(l) The data loader: both workers read random batches (then single rows) at once,
        the peers taking turns."""
        cfg = self.cfg
        _log(f"data loader: {cfg.loader.shape} float64, batches of {cfg.batch_rows} rows")
        data = L.loader_data(cfg.loader, cfg.seed + 3)
        live = []
        for cls in L.LOADER_PEERS:
            reason = cls.unavailable()
            if reason is None:
                live.append(cls)
                continue
            self.results.note("l.batch", cls.label, "other", "n/a (not available)")
        _take_turns([self._loader(cls, data) for cls in live])

    def _loader(self, cls: type[L.LoaderPeer], data: np.ndarray) -> Iterator[str]:
        cfg, ds = self.cfg, self.cfg.loader
        peer = cls(ds, cfg.seed + 3)
        rid = f"{cls.label}/l"
        attached: list[Any] = []
        label = cls.label
        try:
            assert self.pool is not None
            self.pool.ensure_alive()
            peer.create(data, self.pool)
            label = f"{cls.label}: {peer.batch_how}"
            for w in self.pool.workers:
                w.attach(rid, peer)
                attached.append(w)
            rep = iter(range(10**6))
            nb, nr = cfg.loader_batches, cfg.loader_rows

            def batches() -> list[float]:
                r = next(rep)
                spans = self._together(
                    "loader_batches",
                    rid,
                    [
                        {
                            "nrows": ds.shape[0],
                            "batch_rows": cfg.batch_rows,
                            "n": nb,
                            "seed": 1000 * r + w,
                        }
                        for w in range(2)
                    ],
                )
                return [2 * nb / (max(s[1] for s in spans) - min(s[0] for s in spans))]

            def rows() -> list[float]:
                r = next(rep)
                spans = self._together(
                    "loader_rows",
                    rid,
                    [{"nrows": ds.shape[0], "n": nr, "seed": 1000 * r + w} for w in range(2)],
                )
                return [statistics.mean((s[1] - s[0]) / nr * 1e6 for s in spans)]

            yield from self._steps("l.batch", label, "other", batches)
            if cls.row_how:
                yield from self._steps("l.row", f"{cls.label}: {cls.row_how}", "other", rows)
        except Exception as exc:
            _log(f"  l {label}: {_err(exc)}")
            if not any(r.workload == "l.batch" and r.peer == label for r in self.results.rows):
                self.results.note("l.batch", label, "other", _err(exc))
        finally:
            for w in attached:
                with contextlib.suppress(Exception):
                    w.close(rid)
            peer.destroy()

    # ------------------------------------------------------------------------- table peers
    def table_inserts(self, kinds: list[str]) -> None:
        """Workload (f)'s bulk insert, the peers taking turns: ``min(reps, 3)`` builds of
        every peer's table, one of each peer in turn (the order reversed every other round),
        each table deleted after its build, so the ratio of the medians sees the same
        machine (one build per peer swung the ratio 2.7-3.9x between runs).  The times are
        kept for :meth:`table_peer`, which records them."""
        n = self.cfg.table_entries
        for rep in range(min(self.cfg.reps, 3)):
            for kind in kinds if rep % 2 == 0 else kinds[::-1]:
                peer = P.TablePeer(kind)
                if peer.unavailable() is not None:
                    continue
                try:
                    t0 = time.perf_counter()
                    peer.build(n)
                    dt = time.perf_counter() - t0
                except Exception as exc:  # table_peer's own build reports it
                    _log(f"  f.insert {peer.label}: {_err(exc)}")
                    continue
                finally:
                    peer.destroy()
                self.insert_times.setdefault(kind, []).append(dt / n * 1e6)

    def table_peer(self, kind: str) -> None:
        """Workload (f) for one table peer."""
        cfg = self.cfg
        peer = P.TablePeer(kind)
        proc = "other" if peer.cross_process else "same"
        labels = [peer.label + suffix for _op, suffix in P.TablePeer.ops[kind]]
        reason = peer.unavailable()
        if reason is not None:
            _log(f"{peer.label}: {reason}")
            na = "n/a (not available)"
            self.results.note("f.insert", peer.label, "same", na)
            for lab in labels:
                self.results.note("f.lookup", lab, proc, na)
            self.results.note("f.mem", peer.label, "same", na)
            return
        _log(f"{peer.label}: table of {cfg.table_entries:,} entries")
        runner = self._runner(peer.cross_process)
        attached = False
        try:
            t_build: list[float] = []

            def build() -> list[float]:
                t0 = time.perf_counter()
                peer.build(cfg.table_entries)
                t_build.append(time.perf_counter() - t0)
                # the builds of table_inserts (peers taking turns), else this one
                return self.insert_times.get(kind) or [t_build[0] / cfg.table_entries * 1e6]

            if self.measure("f.insert", peer.label, "same", build) is None:
                for lab in labels:
                    self.results.note("f.lookup", lab, proc, "n/a (insert failed)")
                return
            if kind in ("sz", "lmdb"):
                self.measure(
                    "f.mem",
                    peer.label,
                    "same",
                    lambda: [P.dev_shm_bytes(peer.shm_paths()) / cfg.table_entries],
                )
            runner.attach("t0", peer)
            attached = True
            nk = cfg.lookups_slow if peer.slow else cfg.lookups
            keys = [P.table_key(i) for i in self.lookup_idx[:nk]]
            for (op, _suffix), lab in zip(P.TablePeer.ops[kind], labels, strict=True):
                self.measure(
                    "f.lookup",
                    lab,
                    proc,
                    lambda op=op: [
                        t * 1e6
                        for t in runner.call(
                            "lookups", "t0", op=op, keys=keys, reps=cfg.reps, warmup=cfg.warmup
                        )
                    ],
                )
        finally:
            if attached:
                with contextlib.suppress(Exception):
                    runner.close("t0")
            peer.destroy()


def _take_turns(peers: list[Iterator[str]]) -> None:
    """Run the peers' steps workload by workload, one repetition of each peer in turn.

    Each peer is a generator (:meth:`_Bench._dataset`) that yields the key of the workload
    whose next repetition it is about to run, and runs it when resumed. Starting them all runs
    every peer's set-up before any timing. Then, for the earliest workload any peer waits for,
    every peer waiting for it runs one repetition, in turn (the order reversed every pass), until
    none waits for it. Neighbouring repetitions of different peers are seconds apart at most, so
    they see the machine at the same speed.
    """
    order = {key: n for n, key in enumerate(_STEP_ORDER)}
    waiting: dict[int, str] = {}

    def advance(n: int) -> None:
        try:
            waiting[n] = next(peers[n])
        except StopIteration:
            waiting.pop(n, None)

    for n in range(len(peers)):
        advance(n)
    forward = True
    while waiting:
        key = min(waiting.values(), key=lambda k: order.get(k, len(order)))
        turn = [n for n in sorted(waiting) if waiting[n] == key]
        for n in turn if forward else turn[::-1]:
            advance(n)
        forward = not forward


# The order in which the workloads of a dataset run (each peer's steps come in this order).
_STEP_ORDER = [
    "a.write",
    "d.attach",
    "a.read",
    "a.win_aligned",
    "a.win_unaligned",
    "c.read1",
    "c.read2",
    "i.a",
    "h.mem_a",
    "b.write",
    "b.read",
    "b.chunk_read",
    "b.chunk_view",
    "b.chunk_write",
    "h.batch",
    "h.call",
    "i.b",
    "h.mem_b",
    "h.write_w",
    "i.w",
    "j",
    "k.append",
    "l.batch",
    "l.row",
]

#: the peers of dataset W (the small array of workloads h and i)
_W_PEERS = [P.CopytoPeer, P.PlainShmPeer, P.TiledShmPeer, P.SzShmPeer, P.SzMemoryPeer, P.LmdbPeer]


def _dataset_keys(cls: type[P.Peer], k: str) -> list[str]:
    """Every workload key a peer of class ``cls`` measures on dataset ``k``."""
    if k == "w":
        if cls not in _W_PEERS:
            return []
        keys = ["h.write_w"]
    elif k == "a":
        keys = ["a.write", "a.read", "a.win_aligned", "a.win_unaligned"]
        if cls.cross_process:
            keys += ["c.read1", "c.read2", "d.attach"]
    else:
        keys = ["b.write", "b.read", "b.chunk_read", "b.chunk_view", "b.chunk_write", "h.batch"]
        if cls is P.LmdbPeer or cls.label.startswith("sharedzarr"):
            keys.append("h.call")
    if cls.cross_process:
        keys += [f"i.w1_{k}", f"i.w2_{k}", f"i.scale_{k}"]
    if cls.uses_dev_shm and k != "w":
        keys += [f"e.mem_{k}", f"e.mem_{k}_after"]
    if cls.rewrite_mem and k != "w":
        keys.append(f"h.mem_{k}")
    return keys


def _times(fn: Callable[[], object], reps: int) -> list[float]:
    """Time ``fn`` ``reps`` times (the caller did the warm-up)."""
    from benchmarks.workloads import time_reps

    return time_reps(fn, reps, 0)


def _leftovers() -> list[str]:
    """Paths in /dev/shm that this process's run created and did not remove."""
    pid = os.getpid()
    pats = [f"szbench_*_{pid}_*", f"sz.szbench_*_{pid}_*", f"sem.sz.szbench_*_{pid}_*"]
    return sorted({p for pat in pats for p in glob.glob(os.path.join(P.SHM_DIR, pat))})


def _remove_leftovers() -> list[str]:
    """Remove what :func:`_leftovers` finds; return what was removed."""
    found = _leftovers()
    for p in found:
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(p)
    return found


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so that ``finally`` blocks clean up."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _matches(label: str, only: Sequence[str] | None) -> bool:
    return not only or any(o.lower() in label.lower() for o in only)


def run(
    cfg: BenchConfig, out_dir: Path, only: Sequence[str] | None = None, parts: str = ALL_WORKLOADS
) -> Results:
    """Run the benchmark and write the report.

    Parameters
    ----------
    cfg : BenchConfig
        Sizes and repetitions.
    out_dir : Path
        Where ``latest.md``, ``latest.json``, ``read_gbps.png`` and ``write_gbps.png`` go.
    only : sequence of str, optional
        Run only the peers whose label contains one of these (case-insensitive).
    parts : str
        Workload letters to run, e.g. ``"ab"``.

    Returns
    -------
    Results
    """
    t0 = time.perf_counter()
    results = Results(cfg)
    bench = _Bench(cfg, results, set(parts))
    with _sigterm_as_exit():
        try:
            if any(c.cross_process and _matches(c.label, only) for c in P.ARRAY_PEERS) or (
                set(parts) & set("fjl")
            ):
                bench.pool = WorkerPool(2, batch_rows=cfg.batch_rows)
            if set(parts) & set("abcdehi"):
                bench.array_peers([c for c in P.ARRAY_PEERS if _matches(c.label, only)])
            if "f" in parts:
                kinds = [k for k in P.TABLE_PEERS if _matches(P.TablePeer.labels[k], only)]
                bench.table_inserts(kinds)
                for kind in kinds:
                    bench.table_peer(kind)
            if "g" in parts:
                bench.copy_probe()
            if "j" in parts:
                bench.handoff_peers()
            if "k" in parts:
                bench.append_peers()
            if "l" in parts:
                bench.loader_peers()
        finally:
            if bench.pool is not None:
                bench.pool.stop()
            removed = _remove_leftovers()
            if removed:
                _log(f"removed leftovers: {removed}")
    results.elapsed = time.perf_counter() - t0
    machine = machine_info()
    md = write_outputs(results, machine, out_dir)
    print(md)
    _log(f"done in {results.elapsed:.0f} s; wrote {out_dir}/latest.md and the plots")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    ap.add_argument(
        "--size",
        choices=["full", "quick", "tiny"],
        default=os.environ.get("SZ_BENCH_SIZE", "full"),
        help="full (default; env SZ_BENCH_SIZE), quick, or tiny (smoke run)",
    )
    ap.add_argument("--quick", action="store_true", help="same as --size quick")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="output directory")
    ap.add_argument("--only", help="comma-separated substrings of peer labels to run")
    ap.add_argument(
        "--workloads",
        default=os.environ.get("SZ_BENCH_WORKLOADS", ALL_WORKLOADS),
        help=f"workload letters to run, e.g. 'ab' (default {ALL_WORKLOADS}; "
        "env SZ_BENCH_WORKLOADS)",
    )
    ap.add_argument("--list-peers", action="store_true", help="print the peer labels and exit")
    args = ap.parse_args(argv)
    if args.list_peers:
        for cls in P.ARRAY_PEERS:
            print(cls.label)
        for kind in P.TABLE_PEERS:
            print(P.TablePeer.labels[kind])
        for group in (W.HANDOFF_PEERS, W.APPEND_PEERS, L.LOADER_PEERS):
            for c in group:
                print(c.label)
        return 0
    cfg = get_config("quick" if args.quick else args.size)
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    parts = "".join(c for c in args.workloads.lower() if c in ALL_WORKLOADS)
    run(cfg, args.out, only, parts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
