"""Slice writes: ``set_slice``, ``a[...] = v``, advanced-index writes and ``atomic()``.

The data is validated (dtype castable without losing information, shape broadcastable) before
anything is written.  The writes run in one writer session, which readers see whole
(invariant I6 of :mod:`sharedzarr._table._read`): whole chunks are written directly; partial
chunks are read-modify-write, so two processes writing different parts of one chunk never
lose each other's update.  Under the lock the handle adopts another handle's metadata first
(:meth:`ArrayBase._sync_locked`), so a write always uses the current shape.

Interrupted writes
------------------
A write of more than a few chunks publishes them in several batches; readers see the
operation whole while it runs, but an exception that stops it midway would leave its
batches published.  The common such exception is asynchronous: ``KeyboardInterrupt``
(Ctrl-C) or a ``SystemExit`` a SIGTERM handler raises, between any two bytecodes.  Every
write here (and ``write_chunks``, in :mod:`._chunks`) stores values already in memory
(checked and converted before the lock), so it can be run again: when one of those two
stops it, :func:`_finish` has the storage repair what the interrupt left half done
(``Backend.repair_session``: the recount the next writer would make), runs the same write
again, whole, with the signals held back
(:func:`sharedzarr._threads.signals_deferred`), and then lets the exception go on.  As
with numpy's own assignment, an interrupted write ends complete.  The try costs nothing
on the path that is not interrupted.  A handler that is still pending when the write
returns runs in :func:`_run_pending_handlers`, inside the operation, so its exception
meets the session's end like any other (the end itself is written to survive one: see
"Interrupts" in :mod:`sharedzarr._table._session`).

Small writes are atomic
-----------------------
Other exceptions (``OutOfSpaceError`` midway, ``MemoryError``) and SIGKILL can stop a write
of several chunks between two batches.  A write that stores little next to the array (at
most 1/16 of its stored data, or at most 1 MiB: ``UNDO_SMALL_SHARE``, ``UNDO_SMALL_MIN``
of :mod:`sharedzarr._table._session`) is made all or nothing: under the lock and before its
first change, it asks its operation to become atomic (:meth:`WriteOp.undo_if_small`, the
engine's ``undo_if_small``), as if it ran in ``atomic()`` (see "Rollback" there: an
exception undoes it, and after SIGKILL the next writer does).  Its undo keeps the chunks it
replaces until it ends, which is why a bigger write does not: a whole rewrite would need
memory for two copies.  A bigger write stopped midway keeps the batches it stored (each
chunk whole) and its exception says so; ``atomic()`` makes it all or nothing too.  A write
of one chunk is one store: atomic as it is.  An interrupt that the write finished (see
above) does not undo it: its operation is told (``WriteOp.finished``) and commits.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self

import numpy as np

from .._chunking import (
    DimSelection,
    chunk_valid_shape,
    covers_chunk,
    iter_chunk_pieces,
    normalize_index,
    normalize_start_stop,
    selection_shape,
    single_chunk,
)
from .._indexing import (
    PointSelection,
    is_advanced,
    iter_chunk_runs,
    plan_chunks,
    plan_numpy,
    plan_orthogonal,
    plan_vectorized,
    points_first,
    split_advanced_newaxis,
    split_fields,
    split_newaxis,
    work_view,
)
from .._threads import COPY_THREADS as _COPY_THREADS
from .._threads import copy_pool as _copy_pool
from .._threads import signals_deferred
from ._base import _PARALLEL_BYTES, WriteOp, _byte_view
from ._read import ReadMixin

__all__ = ["WriteMixin"]

#: A whole chunk this big, in a write that copies on two threads, is copied by both at once
#: (the engine queues each half, see ``Table.insert_filled_many``): fewer records in flight.
_SPLIT_BYTES = 1 << 20

#: The exceptions a signal handler raises that an interrupted write finishes before it lets
#: go on (see "Interrupted writes" above).
_INTERRUPTS = (KeyboardInterrupt, SystemExit)


def _run_pending_handlers() -> None:
    """Nothing, as a Python call: Python runs the handlers of signals that arrived meanwhile at
    a function's first bytecode.  Called at the end of a write, it makes a handler that
    raises do so inside the write's operation, so the operation's end runs as after any
    exception, rather than at the first bytecode of that end (see "Interrupted writes")."""


def _finish(backend: Any, store: Callable[[], None], op: WriteOp | None) -> None:
    """Run ``store`` again, whole, with signal handlers held back: the write it stands for
    was interrupted (see "Interrupted writes" above).  The storage first repairs what the
    interrupt left half done (``Backend.repair_session``).  A signal that slips in before
    the handlers are held back (a second Ctrl-C) makes it try again, a few times; one held
    back meanwhile is raised when the write is whole, and goes on.  ``op`` (the write's
    operation) is told, so that a small write made atomic keeps what it finished."""
    for attempt in range(3):
        done = False
        try:
            with signals_deferred():
                backend.repair_session()
                store()
                done = True
                if op is not None:
                    op.finished = True
            return
        except _INTERRUPTS:
            if done or attempt == 2:
                raise


class _Halves:
    """``fill(buffer)`` of a whole chunk from ``part``, in two ``parts`` that each copy one
    half of the chunk along axis ``axis`` (two threads may run them at once)."""

    __slots__ = ("parts",)

    def __init__(
        self, chunks: tuple[int, ...], dtype: np.dtype[Any], part: np.ndarray, axis: int
    ) -> None:
        mid = chunks[axis] // 2
        lead = (slice(None),) * axis
        self.parts = tuple(
            self._half(chunks, dtype, part, (*lead, half))
            for half in (slice(0, mid), slice(mid, None))
        )

    @staticmethod
    def _half(
        chunks: tuple[int, ...], dtype: np.dtype[Any], part: np.ndarray, sel: tuple[slice, ...]
    ) -> Any:
        src = part[sel]

        def fill(buf: memoryview) -> None:
            np.copyto(np.ndarray(chunks, dtype, buf)[sel], src, casting="unsafe")

        return fill

    def __call__(self, buf: memoryview) -> None:
        for fill in self.parts:
            fill(buf)


class WriteMixin(ReadMixin):
    """Slice writes and transactions of :class:`~sharedzarr.Array`."""

    @property
    def oindex(self) -> _OIndex:
        """Orthogonal indexing, as ``zarr.Array.oindex``: ``a.oindex[[0, 2], 1:3]``.

        Each dimension takes an int, a slice, a 1-d integer array (list) or a 1-d boolean
        mask; each array selects along its own axis.  Reads and writes.
        """
        return _OIndex(self)

    @property
    def vindex(self) -> _VIndex:
        """Vectorised (point) indexing, as ``zarr.Array.vindex``: ``a.vindex[rows, cols]``.

        One integer array per dimension, broadcast together (the result has their shape),
        or one boolean mask of the array's shape.  Reads and writes.
        """
        return _VIndex(self)

    def _scatter(self, planner: Callable[[Any, tuple[int, ...]], Any], key: Any, data: Any) -> None:
        """Write an advanced selection: read-modify-write of each touched chunk, under the
        writer lock, everything validated before the first chunk is written."""
        with self._write_op(None, data) as op:
            backend, arr = op.backend, op.data
            sel = planner(key, self._shape)
            if sel is None:  # an orthogonal key without arrays: basic indexing
                sels, _ = normalize_index(key, self._shape)
                _, result = selection_shape(sels)
                self._write_locked(sels, self._broadcast(arr, sels, result), op)
                return
            try:
                value = np.broadcast_to(arr, sel.result_shape)
            except ValueError:
                raise ValueError(
                    f"shape mismatch: value array of shape {arr.shape} could not be broadcast "
                    f"to indexing result of shape {sel.result_shape}"
                ) from None
            if not value.size:
                return
            work, _ = work_view(sel, value)
            plan = plan_chunks(sel, self._chunks)
            touched = len(plan.runs) * math.prod(len(p) for p in plan.spieces)
            if touched > 1:  # (one chunk is one store: atomic as it is)
                op.undo_if_small(touched * self._chunk_nbytes)
            if plan.perm is not None:
                work = work[plan.perm]  # the sorted order: each chunk's values are one run

            def store() -> None:
                if self._raw:  # each new chunk is built in its new record: one copy, no temp
                    nbytes = self._chunk_nbytes
                    backend.write_chunks_filled(
                        (
                            (idx, nbytes, self._merge_fill(sel, idx, csel, work[wsel]))
                            for idx, csel, wsel in iter_chunk_runs(sel, plan)
                        ),
                        None,
                    )
                    return
                for idx, csel, wsel in iter_chunk_runs(sel, plan):
                    stored = self._reader(idx)  # borrowed: stable under the writer lock
                    if stored is None:
                        chunk = self._fill_chunk().copy()
                    else:
                        chunk = np.array(self._decode(stored, idx))
                    points_first(sel, chunk)[csel] = work[wsel]  # repeated: the last one wins
                    backend.write_chunk(idx, self._pipeline.encode(_byte_view(chunk)))

            try:
                store()
            except _INTERRUPTS:  # finished first (see "Interrupted writes" above)
                _finish(backend, store, op)
                raise
            _run_pending_handlers()

    def _merge_fill(
        self, sel: PointSelection, idx: tuple[int, ...], csel: Any, part: np.ndarray
    ) -> Callable[[memoryview], None]:
        """A ``fill(buffer)`` for ``write_chunks_filled``: the stored chunk ``idx`` (or the
        fill value) with ``part`` scattered over ``csel``, built in the new record."""

        def fill(buf: memoryview) -> None:
            chunk = np.ndarray(self._chunks, self._chunk_dtype, buf)
            # borrowed: stable under the writer lock, and still the published record (the
            # new one replaces it only after this fill returns)
            stored = self._reader(idx)
            chunk[...] = self._fill if stored is None else self._decode(stored, idx)
            points_first(sel, chunk)[csel] = part  # repeated points: the last one wins

        return fill

    def _write_locked(
        self, sels: Sequence[DimSelection], value: np.ndarray, op: WriteOp | None
    ) -> None:
        """Write ``value`` (full-form selection shape) into the chunks; writer lock held.

        A write of several chunks that is small next to the array is made all or nothing
        (``op``: the operation the write opened, None for an append; see "Small writes are
        atomic" above).
        Interrupted by Ctrl-C, the write is finished before the exception goes on (see
        "Interrupted writes" above).
        """
        try:
            self._store_locked(sels, value, op)
        except _INTERRUPTS:
            _finish(self._live(), lambda: self._store_locked(sels, value, None), op)
            raise
        _run_pending_handlers()  # (one that arrived while the write's temporaries were freed)

    def _store_locked(
        self, sels: Sequence[DimSelection], value: np.ndarray, op: WriteOp | None
    ) -> None:
        """:meth:`_write_locked` once (the write may be run again if it is interrupted)."""
        backend = self._live()
        shape, chunks, cdtype = self._shape, self._chunks, self._chunk_dtype
        raw_codec = self._raw
        if (
            raw_codec
            and type(value) is np.ndarray
            and value.shape == chunks
            and value.dtype == cdtype
            and value.flags.c_contiguous
        ):  # one whole chunk, already as it is stored (an append of one frame, a[box] = c)
            one = single_chunk(sels, chunks, shape)
            if one is not None:
                backend.write_chunk(one, _byte_view(value))
                return
        if op is not None:
            touched = 1
            for s, c in zip(sels, chunks, strict=True):
                if s.count < 1:
                    touched = 0
                    break
                if s.count > 1:
                    last = s.start + s.step * (s.count - 1)
                    touched *= abs(last // c - s.start // c) + 1
            if touched > 1:  # (one chunk is one store: atomic as it is)
                op.undo_if_small(touched * self._chunk_nbytes)
        encode = self._pipeline.encode
        nbytes = self._chunk_nbytes
        # big writes copy on two threads (numpy releases the GIL while it copies), and
        # both threads fill a big chunk together (fewer records in flight, less memory)
        parallel = value.nbytes >= _PARALLEL_BYTES and _COPY_THREADS > 1
        split = None
        if parallel and nbytes >= _SPLIT_BYTES:
            split = next((d for d, n in enumerate(chunks) if n >= 2), None)
        rest = []

        def whole_chunks() -> Iterator[tuple[tuple[int, ...], int, Any]]:
            # whole raw chunks are gathered straight into their new records: one copy
            for idx, csel, osel, whole in iter_chunk_pieces(sels, chunks, shape):
                part = value[osel]
                if raw_codec and whole:
                    if split is not None:
                        yield idx, nbytes, _Halves(chunks, cdtype, part, split)
                        continue

                    def fill(buf: memoryview, part: np.ndarray = part) -> None:
                        np.copyto(np.ndarray(chunks, cdtype, buf), part, casting="unsafe")

                    yield idx, nbytes, fill
                else:
                    rest.append((idx, csel, part, chunk_valid_shape(idx, shape, chunks)))

        backend.write_chunks_filled(
            whole_chunks(),
            _copy_pool().submit if parallel else None,
            expected_bytes=value.size * cdtype.itemsize if raw_codec else 0,
        )
        for idx, csel, part, valid in rest:
            if covers_chunk(csel, valid):
                if valid == chunks:
                    chunk = np.ascontiguousarray(part, dtype=cdtype)
                else:
                    chunk = self._fill_chunk().copy()
                    chunk[csel] = part
            else:
                stored = self._reader(idx)  # borrowed: stable while we hold the writer lock
                if stored is None:
                    chunk = self._fill_chunk().copy()
                else:
                    chunk = np.array(self._decode(stored, idx))
                chunk[csel] = part
            buf = _byte_view(chunk)
            backend.write_chunk(idx, buf if raw_codec else encode(buf))

    @contextlib.contextmanager
    def atomic(self, timeout: float | None = None) -> Iterator[Self]:
        """Group writes into one transaction: all of them, or none if the block raises.

        Holds the writer lock for the block.  Readers that take a snapshot (``a[...]``,
        ``get_slice``) see all of the block's writes or none; if the block raises (any
        exception, :class:`~sharedzarr.errors.OutOfSpaceError` included), every chunk, the
        shape and the attributes are restored as they were, and what the block's writes
        allocated is given back.  If the process is killed inside the block (SIGKILL, a
        crash), the next writer of the array, in any process, restores them first.  A
        single write outside a block is all or nothing by itself when it stores at most
        1/16 of the array's data (or at most 1 MiB).  A bigger one keeps the chunks it
        stored when it fails midway (see the README's limitations): it does not keep the
        old chunks for an undo, so a rewrite can reuse their memory at once.  (Ctrl-C is
        not such a failure: a write it stops is finished first.)

        The undo keeps the old version of everything the block replaces until it ends: a
        block that rewrites the whole array needs memory for two copies.  The next block
        reuses the old copy's memory, so back-to-back blocks keep two copies and run at
        about the speed of the same writes outside a block; the first write outside a
        block lets the extra copy go.

        Parameters
        ----------
        timeout : float or None, optional
            Seconds to wait for the writer lock; default :attr:`write_timeout`.

        Yields
        ------
        Array
            This array.

        Examples
        --------
        >>> with a.atomic():  # doctest: +SKIP
        ...     a[0] = 1
        ...     a.attrs["step"] = 3
        """
        with self._write_op(timeout, atomic=True):
            try:
                yield self
            except BaseException:
                self._meta_token = None  # undone: the next call reads the metadata again
                self._meta_pin = None
                raise

    def set_slice(
        self,
        data: Any,
        start: Sequence[int] | None = None,
        stop: Sequence[int] | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        """Write ``data`` into the region ``start <= index < stop`` (ExZarr's ``set_slice``).

        Parameters
        ----------
        data : array_like or scalar
            Values broadcastable to the region's shape; a scalar fills the region.  Its dtype
            must convert to the array's without losing information (no float -> int, complex
            -> float or number -> bool; integers must fit).
        start : sequence of int, optional
            Default the origin.
        stop : sequence of int, optional
            Exclusive end.  Default ``start + data.shape`` when ``data`` has the array's rank,
            else the array's shape.
        timeout : float or None, optional
            Seconds to wait for the writer lock; default :attr:`write_timeout`.

        Raises
        ------
        ValueError
            For out-of-range bounds, ``start > stop``, a wrong rank or shape, or integer values
            that do not fit.
        TypeError
            For a dtype that cannot be converted without loss.
        sharedzarr.errors.AccessDeniedError
            On a read-only handle or a protected table of another process.

        Notes
        -----
        Everything is validated before the first chunk is written; on error the array is
        unchanged.  Partial chunks are read-modify-written under the writer lock.
        """
        with self._write_op(timeout, data) as op:
            arr = op.data
            if stop is None and arr.ndim == len(self._shape):
                lo = normalize_start_stop(start, None, self._shape)
                stop = tuple(s.start + n for s, n in zip(lo, arr.shape, strict=True))
            sels = normalize_start_stop(start, stop, self._shape)
            full, _ = selection_shape(sels)
            value = self._broadcast(arr, sels, full)
            self._write_locked(sels, value, op)

    def __setitem__(self, key: Any, data: Any) -> None:
        """Write with numpy indexing (as :meth:`__getitem__`); scalars and arrays that
        broadcast to the selection's shape are accepted.

        With repeated indices the last value written wins, as numpy's assignment does.

        Parameters
        ----------
        key : int, slice, Ellipsis, array_like of int or bool, or tuple of those
        data : array_like or scalar

        Raises
        ------
        IndexError, ValueError, TypeError, sharedzarr.errors.AccessDeniedError
            As for :meth:`set_slice`; the array is unchanged on error.
        """
        tk = type(key)
        fields = (
            split_fields(key, self._dtype)
            if tk is str
            or (tk is tuple and str in map(type, key))
            or (tk is list and key and type(key[0]) is str)
            else None
        )
        if fields is not None:  # a["x"] = v: the records change under the lock, field by field
            rest, names = fields
            with self._write_op() as op:
                records = np.array(self[rest])
                op.undo_if_small(records.nbytes)  # (the write below nests in this operation)
                try:
                    records[names] = data
                except (ValueError, TypeError) as exc:
                    raise type(exc)(f"cannot write field {names!r}: {exc}") from None
                self[rest] = records
            return
        if is_advanced(key):
            split = split_advanced_newaxis(key, self._shape)
            if split is not None:  # a[idx, None] = v: v laid out for the key without them
                key, axes = split
                want = axes.shape(plan_numpy(key, self._shape).result_shape)
                value = np.asarray(data)
                try:
                    data = axes.unarrange(np.broadcast_to(value, want))
                except ValueError:
                    raise ValueError(
                        f"shape mismatch: value array of shape {value.shape} could not be "
                        f"broadcast to indexing result of shape {want}"
                    ) from None
            self._scatter(plan_numpy, key, data)
            return
        with self._write_op(None, data) as op:
            arr = op.data
            box = self._box(key) if arr.ndim == len(self._shape) and arr.size else None
            if box is not None and all(
                e - b == n for b, e, n in zip(box[0], box[1], arr.shape, strict=True)
            ):  # a box of step-1 slices, data of its shape: no normalising, no broadcast
                starts, stops = box
                box_sels = [DimSelection(b, 1, e - b) for b, e in zip(starts, stops, strict=True)]
                self._write_locked(box_sels, arr, op)
                return
            try:
                sels, _ = normalize_index(key, self._shape)
            except IndexError:
                newaxis = split_newaxis(key, self._shape)
                if newaxis is None:
                    raise
                key, with_axes, without = newaxis  # a[None] = v: v fits with the new axes
                try:
                    arr = np.broadcast_to(arr, with_axes).reshape(without)
                except ValueError:
                    raise ValueError(
                        f"could not broadcast data of shape {arr.shape} to the selection's "
                        f"shape {with_axes}"
                    ) from None
                sels, _ = normalize_index(key, self._shape)
            _, result = selection_shape(sels)
            value = self._broadcast(arr, sels, result)
            self._write_locked(sels, value, op)


class _OIndex:
    """``Array.oindex``: orthogonal selections (zarr's semantics)."""

    __slots__ = ("_array",)

    def __init__(self, array: WriteMixin) -> None:
        self._array = array

    def __getitem__(self, key: Any) -> Any:
        return self._array._gather(plan_orthogonal, key)

    def __setitem__(self, key: Any, data: Any) -> None:
        self._array._scatter(plan_orthogonal, key, data)


class _VIndex:
    """``Array.vindex``: vectorised (point) selections (zarr's semantics)."""

    __slots__ = ("_array",)

    def __init__(self, array: WriteMixin) -> None:
        self._array = array

    def __getitem__(self, key: Any) -> Any:
        return self._array._gather(plan_vectorized, key)

    def __setitem__(self, key: Any, data: Any) -> None:
        self._array._scatter(plan_vectorized, key, data)
