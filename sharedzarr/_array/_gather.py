"""Advanced reads: integer arrays, masks, ``oindex`` and ``vindex`` (zarr's semantics).

:mod:`sharedzarr._indexing` plans a selection into one numpy gather per touched chunk; this
module runs the plan against the backend's cached chunk views, as a snapshot.  ``a[idx]``
along the first axis of an array whose chunks span whole rows takes a faster path: one
gather over the arena memory itself (:meth:`GatherMixin._take_spans`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .._indexing import (
    ChunkPlan,
    PointSelection,
    from_work,
    iter_chunk_runs,
    plan_chunks,
    points_first,
    work_view,
)
from ..storage.base import OP_OPEN as _OP_OPEN
from ..storage.base import Backend
from ._base import ArrayBase

__all__ = ["GatherMixin"]


class GatherMixin(ArrayBase):
    """Advanced-index reads of :class:`~sharedzarr.Array`."""

    def _take(self, key: np.ndarray | list[Any]) -> np.ndarray | None:
        """``a[idx]`` for a 1-d integer ``idx`` when the chunks span whole rows: the rows
        sorted once, then one ``take`` per touched chunk from its cached borrowed view and
        one more to restore the caller's order.  None to take the general path (negative
        or out-of-bounds indices, a stored value that is not a whole raw chunk, a reused
        arena, a closed handle)."""
        idx = key if type(key) is np.ndarray else np.asarray(key)
        if idx.ndim != 1 or idx.dtype.kind not in "iu" or not idx.size or self._closed:
            return None
        assert self._takes is not None  # the caller checked
        c0, tail, trim = self._takes
        if trim is None and self._spans_ok:
            got = self._take_spans(idx)
            if got is not None:
                return got
        order = idx.argsort()
        srt = idx[order]
        if srt[0] < 0 or srt[-1] >= self._shape[0]:
            return None
        m = len(idx)
        rows = srt % c0  # the row inside its chunk
        if self._grid[0] <= m:  # where each chunk's run starts: one binary search for all
            edges = srt.searchsorted(self._row_edges()).tolist()
            runs = [
                ((ci, *tail), k0, k1)
                for ci, (k0, k1) in enumerate(itertools.pairwise(edges))
                if k1 > k0
            ]
        else:  # more chunks than rows: where the chunk number changes
            qa = srt // c0
            bounds = [0, *[b + 1 for b in (qa[1:] != qa[:-1]).nonzero()[0].tolist()], m]
            q = qa.tolist()
            runs = [((q[k0], *tail), k0, k1) for k0, k1 in itertools.pairwise(bounds)]
        rl = rows.tolist() if len(runs) * 2 > m else rows  # many single-row runs: ints
        views = self._chunk_views.get(None) or self._chunk_view_reader(None)
        buf = np.empty((m, *self._chunks[1:]), self._dtype)
        ndarray = np.ndarray
        epoch = self._epoch
        start = epoch()
        if start & _OP_OPEN:
            return None  # mid-operation: the general path waits for it (a snapshot)
        for cidx, k0, k1 in runs:
            chunk = views(cidx)
            if type(chunk) is ndarray:
                if k1 - k0 == 1:  # one row of this chunk (many chunks, few rows each)
                    buf[k0] = chunk[rl[k0]]
                else:  # mode "clip": the rows are in range; "raise" would buffer ``out``
                    chunk.take(rows[k0:k1], 0, buf[k0:k1], "clip")
            elif chunk is None:
                buf[k0:k1] = self._fill
            else:
                return None
        if epoch() != start:
            return None
        if trim is not None:
            buf = buf[(slice(None), *trim)]
        return buf.take(order.argsort(), 0)

    def _take_spans(self, idx: np.ndarray) -> np.ndarray | None:
        """``a[idx]`` as one numpy gather over the shared mappings themselves.

        Every row of a raw row-chunked array starts at a fixed distance into its chunk's
        value, and values start 64-byte aligned in an arena; so an arena seen as
        overlapping rows, one every ``u`` bytes (a strided view, no copy), holds every row
        at index ``(value offset + row in chunk * row bytes) / u``.  A batch is then one
        fancy index per arena instead of one step per chunk.  The plan (where each chunk
        is) is valid while the backend's write token stays (no slot changed), and the copy
        is checked against the reuse epoch like every borrowed read.  None: the caller's
        general path (the plan is unavailable, or a writer changed chunks meanwhile).
        """
        backend = self._live()
        token = backend.write_token()
        plan = self._span_plan
        if plan is None or plan[0] != token:
            # a plan costs a probe per chunk row: under writes that change chunks between
            # batches, step aside (the per-chunk path needs no plan) and look again later
            if self._span_skip:
                self._span_skip -= 1
                return None
            if plan is not None and self._span_uses < 8:
                self._span_skip = 256
            self._span_uses = 0
            plan = self._plan_spans(backend)
            if plan is None:
                return None
        self._span_uses += 1
        token, unit_of, aid_of, views, single = plan
        n, c0 = self._shape[0], self._chunks[0]
        if idx.min() < 0:
            idx = np.where(idx < 0, idx + n, idx)
        if idx.min() < 0 or idx.max() >= n:
            return None  # the general path raises numpy's IndexError
        ci = idx // c0
        unit = unit_of[ci] + (idx - ci * c0) * self._span_stride
        epoch = self._epoch
        start = epoch()
        if start & _OP_OPEN:
            return None  # mid-operation: the general path waits for it (a snapshot)
        if single is not None:
            out = single[unit]
        else:  # one gather per arena: sorted by arena, cut where the arena changes
            out = np.empty((len(idx), self._chunk_nbytes // c0), np.uint8)
            aids = aid_of[ci]
            order = aids.argsort(kind="stable")
            sa, su = aids[order], unit[order]
            cuts = [0, *(np.flatnonzero(sa[1:] != sa[:-1]) + 1).tolist(), len(sa)]
            for k0, k1 in itertools.pairwise(cuts):
                view = views.get(int(sa[k0]))
                if view is None:  # absent chunks read as the fill value
                    fill = np.full(self._chunks[1:], self._fill, self._dtype)
                    out[order[k0:k1]] = fill.reshape(-1).view(np.uint8)
                else:
                    out[order[k0:k1]] = view[su[k0:k1]]
        if epoch() != start or backend.write_token() != token:
            self._span_plan = None
            return None
        rows: np.ndarray = out.view(self._dtype).reshape((len(idx), *self._chunks[1:]))
        return rows

    def _plan_spans(self, backend: Backend) -> Any:
        """Where every chunk's rows are (see :meth:`_take_spans`), or None (then not tried
        again until the metadata changes)."""
        assert self._takes is not None
        c0, tail, _trim = self._takes
        grid0 = self._grid[0]
        row_nbytes = self._chunk_nbytes // c0
        u = math.gcd(64, row_nbytes)
        got = backend.chunk_spans([(i, *tail) for i in range(grid0)]) if grid0 <= 65536 else None
        if got is None or row_nbytes == 0:
            self._spans_ok = False
            return None
        token, spans, buffers = got
        unit_of = np.zeros(grid0, np.intp)
        aid_of = np.zeros(grid0, np.intp)
        for i, span in enumerate(spans):
            if span is None:
                continue
            aid, pos, vlen = span
            if vlen != self._chunk_nbytes or pos % u:
                self._spans_ok = False  # not whole raw chunks: no plan for this array
                return None
            unit_of[i], aid_of[i] = pos // u, aid
        views: dict[int, np.ndarray] = {}
        for aid, buf in buffers.items():
            flat = np.frombuffer(buf, np.uint8)
            count = (len(flat) - row_nbytes) // u + 1
            if count <= 0:
                self._spans_ok = False
                return None
            views[aid] = np.lib.stride_tricks.as_strided(
                flat, shape=(count, row_nbytes), strides=(u, 1), writeable=False
            )
        present = set(aid_of[[s is not None for s in spans]].tolist())
        single = views[present.pop()] if len(present) == 1 and None not in spans else None
        if single is None and len(views) > 1 and None not in spans:
            # several arenas: map them once more, back to back, for one gather over all
            aids = tuple(sorted(views))
            kept = self._span_range
            if kept is None or kept[0] != aids:
                got = backend.buffers_in_one_range(aids)
                kept = self._span_range = None if got is None else (aids, *got)
            if kept is not None:
                _ids, rng, offsets = kept
                flat = np.asarray(rng)
                for aid, off in offsets.items():
                    unit_of[aid_of == aid] += off // u
                count = (len(flat) - row_nbytes) // u + 1
                single = np.lib.stride_tricks.as_strided(
                    flat, shape=(count, row_nbytes), strides=(u, 1), writeable=False
                )
        self._span_stride = row_nbytes // u
        plan = (token, unit_of, aid_of, views, single)
        self._span_plan = plan
        return plan

    def _row_edges(self) -> np.ndarray:
        """``[0, c0, 2*c0, ..., n]``: the first row of each chunk along axis 0, and the end."""
        edges = self.__dict__.get("_edges")
        if edges is None or edges[-1] != self._shape[0]:
            c0, n = self._chunks[0], self._shape[0]
            edges = np.array([*range(0, n, c0), n], dtype=np.intp)
            self._edges = edges
        return edges

    if TYPE_CHECKING:  # ReadMixin's, above: an orthogonal key without arrays reads there

        def __getitem__(self, key: Any) -> Any: ...

    def _plan(self, planner: Callable[[Any, tuple[int, ...]], Any], key: Any) -> Any:
        """``planner(key, shape)``, retried once with fresh metadata if it fails."""
        try:
            return planner(key, self._shape)
        except (IndexError, ValueError):
            if not self._refreshed():
                raise
            return planner(key, self._shape)

    def _gather(self, planner: Callable[[Any, tuple[int, ...]], Any], key: Any) -> Any:
        """Read an advanced selection (see :mod:`sharedzarr._indexing`)."""
        sel = self._plan(planner, key)
        if sel is None:  # an orthogonal key without arrays: basic indexing
            return self[key]
        self._live()
        dtype = self._dtype
        res = np.empty(sel.result_shape, dtype)
        if not res.size:
            return res
        work, is_view = work_view(sel, res)
        is_view = is_view and work.base is res  # (numpy's views name their owner as base)
        if not is_view:
            work = np.empty(sel.work_shape, dtype)
        plan = plan_chunks(sel, self._chunks)
        dst = work if plan.perm is None else np.empty(sel.work_shape, dtype)
        self._consistent(lambda: self._gather_runs(sel, plan, dst))
        if plan.perm is not None:
            work[plan.perm] = dst  # back to the caller's order: one scatter
        if not is_view:
            res[...] = from_work(sel, work)
        return res

    def _gather_runs(self, sel: PointSelection, plan: ChunkPlan, dst: np.ndarray) -> None:
        """Copy each touched chunk's points into ``dst`` (sorted work layout), one numpy
        gather per chunk, from borrowed views: the caller checks the reuse epoch."""
        fill = self._fill
        if self._cached_views:
            views = self._chunk_views.get(None) or self._chunk_view_reader(None)
        else:
            views = self._reader
        ndarray, decode = np.ndarray, self._decode
        if not sel.sdims:
            # points on every axis (vindex, a whole-array mask, a[rows, cols]): their flat
            # positions inside the chunk, one take per chunk
            flat = np.ravel_multi_index(plan.offsets, self._chunks)
            for run in plan.runs:
                k0, k1 = run.k0, run.k1
                chunk = views(run.pidx)
                if chunk is None:
                    dst[k0:k1] = fill
                    continue
                if type(chunk) is not ndarray:
                    chunk = decode(chunk, run.pidx)
                dst[k0:k1] = chunk.reshape(-1).take(flat[k0:k1], 0, None, "clip")
            return
        if (
            sel.pdims == (0,)
            and self._chunk_dtype == self._dtype
            and not any(s.dropped for s in sel.ssels)
        ):
            # rows (a[idx], a[idx, 2:30]): per chunk, one take of the run's rows, trimmed
            # to the slices afterwards (whole short rows beat numpy's mixed fancy indexing)
            offsets = plan.offsets[0]
            combos = [
                (
                    tuple(p[0] for p in combo),
                    (slice(None), *(p[1] for p in combo)),
                    tuple(p[2] for p in combo),
                )
                for combo in itertools.product(*plan.spieces)
            ]
            # per combination: 0 whole rows, 1 take then slice, 2 slice then index (narrow)
            row_size = math.prod(self._chunks[1:])
            how = []
            for _, cs, _ in combos:
                n = math.prod(
                    len(range(*c.indices(m))) for c, m in zip(cs[1:], self._chunks[1:], strict=True)
                )
                how.append(0 if n == row_size else 1 if 4 * n >= row_size else 2)
            for run in plan.runs:
                k0, k1 = run.k0, run.k1
                rows = offsets[k0:k1]
                ci = run.pidx[0]
                for (tail, csl, osl), h in zip(combos, how, strict=True):
                    chunk = views((ci, *tail))
                    if chunk is None:
                        dst[(slice(k0, k1), *osl)] = fill
                        continue
                    if type(chunk) is not ndarray:
                        chunk = decode(chunk, (ci, *tail))
                    if h == 2:
                        got = chunk[csl][rows]
                    else:
                        got = chunk.take(rows, 0, None, "clip")  # in range by construction
                        if h:
                            got = got[csl]
                    dst[(slice(k0, k1), *osl)] = got
            return
        for idx, csel, wsel in iter_chunk_runs(sel, plan):
            chunk = views(idx)
            if chunk is None:
                dst[wsel] = fill
                continue
            if type(chunk) is not ndarray:
                chunk = decode(chunk, idx)
            dst[wsel] = points_first(sel, chunk)[csel]
