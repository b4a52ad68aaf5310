"""Chunked N-d arrays on a storage backend: the Zarr v3 layout of ExZarr's ETS backend.

An :class:`Array` is a thin handle: a :class:`~sharedzarr.storage.base.Backend` (a shared-memory
table for ``storage="shm"``) plus the parsed ``zarr.json`` and the per-array constants derived
from it (chunk dtype, chunk grid, codec pipeline, fill chunk).  Chunks are stored whole, C-order,
little-endian, edge chunks padded with the fill value; chunks never written read as the fill
value and are not stored.

Read path
    ``get_slice``/``__getitem__`` normalise the selection once (:mod:`sharedzarr._chunking`),
    then for each touched chunk copy straight from the backend's zero-copy view
    (``read_chunk(copy=False)``) into the output with one numpy slice assignment; there is no
    per-element Python work and no intermediate copy.  Compressed chunks are decoded first.
    Advanced keys (index arrays, masks, ``oindex``, ``vindex``) are planned by
    :mod:`sharedzarr._indexing`: one numpy gather (or scatter, on writes) per touched chunk.

Write path
    The data is validated (dtype castable without losing information, shape broadcastable) before
    anything is written.  The writes run under the backend's writer lock: whole chunks are
    written directly; partial chunks are read-modify-write, so two processes writing different
    parts of one chunk never lose each other's update.  Under the lock the handle also
    re-reads ``zarr.json`` (one small lookup) so a write always uses the current shape even if
    another handle resized the array.

Metadata freshness
    Reads use the metadata cached at open time, so they cost no metadata lookups.  A handle
    notices another handle's ``resize`` or ``attrs`` change on its next write, when a read's
    bounds check fails (it re-reads and retries once), or on :meth:`Array.refresh`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import math
import operator
import os
import sys
import types
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from . import storage as _storage
from ._chunking import (
    DimSelection,
    chunk_grid_shape,
    chunk_valid_shape,
    covers_chunk,
    iter_chunk_indices,
    iter_chunk_selections,
    normalize_chunk_index,
    normalize_index,
    normalize_shape,
    normalize_start_stop,
    selection_shape,
)
from ._codecs import CodecPipeline
from ._indexing import (
    ChunkPlan,
    PointSelection,
    from_work,
    is_advanced,
    iter_chunk_runs,
    plan_chunks,
    plan_numpy,
    plan_orthogonal,
    plan_vectorized,
    points_first,
    work_view,
)
from ._metadata import ArrayMetadata, dtype_name, encode_fill_value, with_shape_json
from .errors import AccessDeniedError, CorruptTableError
from .storage.base import MODES, Backend

__all__ = ["Array", "Attributes", "create", "open"]

_PARALLEL_BYTES = 16 << 20  # reads at least this big copy on two threads
_COPY_THREADS = min(2, os.cpu_count() or 1)
DEFAULT_WRITE_TIMEOUT = 60.0  # seconds a write waits for the writer lock (Array.write_timeout)
# write_chunk copies a whole chunk at least this big without the writer lock when another
# writer waits for it (Backend.reserve_chunk); smaller copies cost less than the extra turn
_RESERVE_MIN = 256 << 10
_INNER_CHUNKS_MAX = 1 << 16  # write_chunk's cache of checked chunk indices (per handle)
_READ_RETRIES = 1000  # a retry needs a writer to reuse memory during one chunk's copy
# multi-chunk reads keep a cached view per chunk (see Array._copy_pieces) up to this many
# chunks; a bigger array would cycle through the backend's cache faster than it helps
_CACHED_VIEWS_MAX_CHUNKS = 1 << 15
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _copy_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The process-wide helper thread for big copies (created on first use, fork-safe)."""
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(
            _COPY_THREADS - 1, thread_name_prefix="sharedzarr-copy"
        )
    return _pool


def _reset_pool_after_fork() -> None:
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_reset_pool_after_fork)

# For each destination dtype kind, the source kinds that convert without losing information
# ("same kind" in numpy's terms; integer narrowing is range-checked).
_SOURCE_KINDS = {"b": "b", "i": "biu", "u": "biu", "f": "biuf", "c": "biufc"}
_SOURCE_KINDS.update({"M": "M", "m": "m", "S": "S", "U": "U", "V": "V"})  # no parsing mid-write

_ARRAY_TABLE_TYPES = ("set", "ordered_set")


def _is_fill_value(part: np.ndarray, fill: Any) -> bool:
    """True when every element of ``part`` is ``fill`` (NaN matches NaN)."""
    try:
        return bool(np.array_equal(part, np.broadcast_to(fill, part.shape), equal_nan=True))
    except TypeError:  # no NaN for this dtype (ints, strings, structured)
        return bool((part == fill).all())


def _byte_view(arr: np.ndarray) -> memoryview:
    """Return a 1-d unsigned-byte memoryview of a C-contiguous array (no copy)."""
    flat: Any = arr.reshape(-1).view(np.uint8)  # numpy arrays export the buffer protocol
    return memoryview(flat)


class Array:
    """A chunked N-d array whose chunks live in a storage backend.

    Create one with :func:`sharedzarr.create` and reach it from anywhere with
    :func:`sharedzarr.open`; do not call the constructor directly.

    Parameters
    ----------
    backend : Backend
        The open storage handle.
    metadata : ArrayMetadata
        The parsed ``zarr.json``.
    metadata_bytes : bytes, optional
        The raw ``zarr.json`` the metadata came from (to detect changes cheaply).

    Notes
    -----
    Pickling an array pickles its name, storage id and mode: it arrives in a
    ``multiprocessing`` worker attached to the same shared memory, with no data copied.
    ``memory`` arrays pickle by name too, which only resolves inside the same process.
    """

    _backend: Backend | None = None
    _closed: bool = True

    def __init__(
        self, backend: Backend, metadata: ArrayMetadata, metadata_bytes: bytes | None = None
    ) -> None:
        self._backend = backend
        self._reader = backend.chunk_reader()  # borrowed views; see Backend.reuse_epoch
        # multi-chunk reads are snapshots: the epoch moves when a write operation or a
        # reuse overlaps a read, and snapshot() repeats a read until none did
        self._epoch = backend.snapshot_epoch
        self._snapshot = backend.snapshot
        self._op_seq = backend.op_seq  # metadata coherence: see _sync
        self._meta_seq = self._op_seq()
        self._quiet = (-1, -1)  # see _quiet_after
        self._meta_token: Any = None
        self._write_timeout: float | None = DEFAULT_WRITE_TIMEOUT
        self._attrs: Attributes | None = None
        self._set_metadata(metadata, metadata_bytes)
        self._closed = False

    # -- metadata ---------------------------------------------------------------------------

    def _set_metadata(self, meta: ArrayMetadata, raw: bytes | None = None) -> None:
        """Install metadata and precompute the per-array constants the hot paths use."""
        self._meta = meta
        self._meta_raw = raw if raw is not None else meta.to_json()
        self._shape = meta.shape
        self._chunks = meta.chunks
        self._dtype = meta.dtype
        little = meta.endian == "little"
        self._chunk_dtype = (
            meta.dtype.newbyteorder("<" if little else ">")
            if meta.dtype.itemsize > 1
            else meta.dtype
        )
        self._pipeline = CodecPipeline(meta.codecs)
        self._raw = self._pipeline.raw
        self._grid = chunk_grid_shape(meta.shape, meta.chunks)
        self._chunk_size = math.prod(meta.chunks)
        self._chunk_nbytes = self._chunk_size * meta.dtype.itemsize
        self._fill = self._chunk_dtype.type(meta.fill_value)
        self._fill_chunk_cache: np.ndarray | None = None
        # read_chunk fast path: raw chunks already in the array's dtype (the readers validate
        # indices against this grid, which changes only with the metadata)
        self._fast_chunks = self._raw and self._chunk_dtype == self._dtype
        self._window_2d = self._raw and len(meta.shape) == 2  # see _window2d
        self._cached_views = self._raw and math.prod(self._grid) <= _CACHED_VIEWS_MAX_CHUNKS
        self._chunk_views: dict[bool | None, Any] = {}  # copy -> cached_chunk_reader
        # write_chunk: indices of chunks that lie whole inside the array (as given -> checked)
        self._inner_chunks: dict[tuple[Any, ...], tuple[int, ...]] = {}
        # a[i] and a[idx] of arrays whose chunks span whole rows: see _row and _take
        self._takes: _RowPlan | None = (
            _row_plan(meta) if self._fast_chunks and self._cached_views else None
        )
        self._rows: _RowPlan | None = self._takes if len(meta.shape) > 1 else None
        self._span_plan: Any = None  # a[idx] as one gather: see _take_spans
        self._spans_ok = True
        self._span_stride = 0
        self._span_uses = 0
        self._span_skip = 0
        self._span_range: Any = None  # (arena ids, range, offsets): see _plan_spans
        self._drop_hot_readers()  # read_chunk's, installed on first use

    def _fill_chunk(self) -> np.ndarray:
        """A read-only chunk full of the fill value (chunk dtype), built on first use."""
        fc = self._fill_chunk_cache
        if fc is None:
            fc = np.full(self._chunks, self._fill, dtype=self._chunk_dtype)
            fc.flags.writeable = False
            self._fill_chunk_cache = fc
        return fc

    def _load_metadata(self) -> tuple[ArrayMetadata, bytes]:
        raw = self._live().read_metadata()
        if raw is None:
            raise CorruptTableError(
                f"array {self.name!r}: its zarr.json ('metadata' key) is gone; the storage no "
                "longer holds an array"
            )
        raw = bytes(raw)
        if raw == self._meta_raw:
            return self._meta, raw
        return ArrayMetadata.from_json(raw), raw

    def refresh(self) -> bool:
        """Re-read ``zarr.json`` so this handle sees another handle's resize or attrs change.

        Returns
        -------
        bool
            True if the metadata had changed.
        """
        meta, raw = self._load_metadata()
        if raw == self._meta_raw:
            return False
        self._set_metadata(meta, raw)
        return True

    # -- plumbing ---------------------------------------------------------------------------

    def _live(self) -> Backend:
        backend = self._backend
        if backend is None or self._closed:
            raise ValueError(f"array {self._name_or_unknown()!r} is closed")
        return backend

    def _writable(self) -> Backend:
        backend = self._live()
        if backend.readonly:
            raise AccessDeniedError(
                f"array {backend.name!r} was opened read-only (mode='r'); "
                f"open it with sharedzarr.open({backend.name!r}, mode='r+') to write"
            )
        return backend

    def _name_or_unknown(self) -> str:
        backend = self._backend
        return getattr(backend, "name", "?") if backend is not None else "?"

    def _decode(self, raw: Any, idx: tuple[int, ...]) -> np.ndarray:
        """Stored bytes -> ndarray of the chunk shape (chunk dtype); read-only if ``raw`` is."""
        if not self._raw:
            raw = self._pipeline.decode(raw)
        if len(raw) != self._chunk_nbytes:
            size = memoryview(raw).nbytes
            if size != self._chunk_nbytes:
                raise CorruptTableError(
                    f"array {self.name!r}: chunk {idx} holds {size} bytes after decoding, "
                    f"expected {self._chunk_nbytes} ({self._chunks} x {self._dtype})"
                )
        # frombuffer, not ndarray(buffer=...): numpy then keeps the memoryview (and so the
        # mapping's export) as the base; with ndarray(buffer=) the base is the bare mmap,
        # which a later close would unmap under the array
        return np.frombuffer(raw, self._chunk_dtype).reshape(self._chunks)

    def _check_data(self, data: Any) -> np.ndarray:
        """Return ``data`` as an ndarray whose values convert to the array dtype without loss.

        The conversion itself happens when the values are copied into chunks.
        """
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"cannot convert data to an array: {exc}") from None
        src, dst = arr.dtype, self._dtype
        if src == dst:
            return arr
        if src.kind not in _SOURCE_KINDS[dst.kind]:
            raise TypeError(
                f"cannot write data of dtype {src} into a {dst} array without losing "
                f"information; convert it explicitly first (e.g. data.astype({str(dst)!r}))"
            )
        if dst.kind in "iu" and src.kind in "iu" and arr.size and not np.can_cast(src, dst):
            info = np.iinfo(dst)
            lo, hi = int(arr.min()), int(arr.max())
            if lo < info.min or hi > info.max:
                raise ValueError(
                    f"data values range from {lo} to {hi}, which does not fit {dst} "
                    f"({info.min} to {info.max})"
                )
        elif dst.kind == "f" and arr.size and src.kind in "fiu":
            if src.kind == "f" and np.can_cast(src, dst):
                pass  # a wider float: every value fits
            elif src.kind == "f":  # narrower floats: overflow would store inf
                big = np.finfo(dst).max
                with np.errstate(invalid="ignore"):
                    over = np.abs(arr[np.isfinite(arr)]) > big
                if over.any():
                    raise ValueError(
                        f"data holds values beyond {dst}'s range (+-{big:.4g}); they would be "
                        f"stored as inf. Scale them, or create the array with a wider dtype"
                    )
            elif src.itemsize * 8 > np.finfo(dst).nmant + 1:  # ints the mantissa may not hold
                back = arr.astype(dst).astype(src)  # (numpy calls int64 -> float64 "safe")
                if (back != arr).any():
                    bad = arr.reshape(-1)[(back != arr).reshape(-1)][0]
                    raise ValueError(
                        f"the integer {int(bad)} is not exactly representable in {dst}; it "
                        f"would be rounded. Convert explicitly (data.astype({str(dst)!r})) "
                        "if rounding is what you want"
                    )
        return arr

    @staticmethod
    def _broadcast(
        arr: np.ndarray, sels: Sequence[DimSelection], result_shape: tuple[int, ...]
    ) -> np.ndarray:
        """Broadcast data to the selection and add the integer-indexed axes back (views)."""
        try:
            value = np.broadcast_to(arr, result_shape)
        except ValueError:
            raise ValueError(
                f"data of shape {arr.shape} does not fit a selection of shape {result_shape}"
            ) from None
        if any(s.dropped for s in sels):
            value = value[tuple(None if s.dropped else slice(None) for s in sels)]
        return value

    def _refreshed(self) -> bool:
        """After a failed bounds check: re-read the metadata; True if it had changed."""
        return self._backend is not None and not self._closed and self.refresh()

    # -- reading ----------------------------------------------------------------------------

    def _box(self, key: Any) -> tuple[list[int], list[int]] | None:
        """``(starts, stops)`` when ``key`` is one step-1 slice per dimension, else None."""
        if type(key) is slice:
            key = (key,)
        elif type(key) is not tuple:
            return None
        shape = self._shape
        if len(key) != len(shape) or not shape:
            return None
        starts, stops = [], []
        for k, n in zip(key, shape, strict=True):
            if type(k) is not slice or (k.step is not None and k.step != 1):
                return None
            try:
                b, e, _ = k.indices(n)
            except TypeError:
                return None  # non-integer bounds: the general path explains
            starts.append(b)
            stops.append(max(b, e))
        return starts, stops

    def _read_into(self, sels: Sequence[DimSelection], out: np.ndarray) -> None:
        self._read_pieces(iter_chunk_selections(sels, self._chunks), out)

    def _read_pieces(self, pieces: Any, out: np.ndarray) -> None:
        """Copy ``(chunk index, chunk selection, out selection)`` pieces into ``out``.

        The chunks are borrowed views (no lock, no pin): if the backend's reuse epoch moved
        while they were copied, a writer may have reused memory under them, and the pieces
        are copied again one by one, each checked.
        """
        backend = self._live()
        plist = pieces if type(pieces) is list else list(pieces)

        def copy_all() -> None:
            if (
                self._raw
                and out.nbytes >= _PARALLEL_BYTES
                and _COPY_THREADS > 1
                and len(plist) >= 2 * _COPY_THREADS
            ):
                # numpy releases the GIL while it copies: a second thread takes half the
                # chunks (a block-by-block gather is slower than one flat copy; two cores
                # close the gap)
                half = len(plist) // 2
                fut = _copy_pool().submit(self._copy_pieces, backend, plist[half:], out)
                try:
                    self._copy_pieces(backend, plist[:half], out)
                finally:
                    fut.result()
            else:
                self._copy_pieces(backend, plist, out)

        if self._op_seq() & 1:  # a writer is mid-operation: the snapshot protocol waits for
            self._consistent(copy_all)  # it, and asks it to let this read in first
            return
        epoch = self._epoch
        start = epoch()
        copy_all()
        if epoch() != start:  # a write overlapped: copy them all again, as one snapshot
            self._consistent(copy_all)

    def _window2d(self, k0: Any, k1: Any) -> np.ndarray | None:
        """``a[r0:r1, c0:c1]`` of a 2-D uncompressed array: its pieces computed in one
        function (the random-window read: each step of the general path costs microseconds)
        and copied by :meth:`_read_pieces`; None to use the general path."""
        if type(k0) is not slice or type(k1) is not slice:
            return None
        if (k0.step is not None and k0.step != 1) or (k1.step is not None and k1.step != 1):
            return None
        n0, n1 = self._shape
        try:
            r0, r1, _ = k0.indices(n0)
            c0, c1, _ = k1.indices(n1)
        except TypeError:
            return None  # non-integer bounds: the general path explains
        if r1 <= r0 or c1 <= c0 or (r1 - r0) * (c1 - c0) * self._dtype.itemsize >= _PARALLEL_BYTES:
            return None
        out = np.empty((r1 - r0, c1 - c0), dtype=self._dtype)
        ch0, ch1 = self._chunks
        pieces = []
        i, b0 = r0 // ch0, (r0 // ch0) * ch0
        while b0 < r1:
            a0 = r0 if r0 > b0 else b0
            a1 = r1 if r1 < b0 + ch0 else b0 + ch0
            j, b1 = c0 // ch1, (c0 // ch1) * ch1
            while b1 < c1:
                d0 = c0 if c0 > b1 else b1
                d1 = c1 if c1 < b1 + ch1 else b1 + ch1
                pieces.append(
                    (
                        (i, j),
                        (slice(a0 - b0, a1 - b0), slice(d0 - b1, d1 - b1)),
                        (slice(a0 - r0, a1 - r0), slice(d0 - c0, d1 - c0)),
                    )
                )
                j += 1
                b1 += ch1
            i += 1
            b0 += ch0
        self._read_pieces(pieces, out)
        return out

    def _consistent(self, read: Any) -> Any:
        """Run ``read()`` until no write operation or memory reuse overlapped it: a snapshot.

        The protocol (waiting for an open operation, retries, asking writers to pause) is
        the table's: :meth:`sharedzarr._table.Table.snapshot`.
        """
        return self._snapshot(read)

    def _copy_pieces(
        self,
        backend: Backend,
        pieces: Any,
        out: np.ndarray,
    ) -> None:
        """Copy ``(chunk index, chunk selection, out selection)`` pieces into ``out``."""
        read = self._reader
        fill = self._fill
        if self._raw:  # the hot path: view the stored bytes, copy the selection into out
            ndarray, shape, dtype, nbytes = (
                np.ndarray,
                self._chunks,
                self._chunk_dtype,
                self._chunk_nbytes,
            )
            # borrowed numpy views, cached and revalidated per call: a repeated read needs
            # no probe and touches no record header or index page (the caller checks the
            # reuse epoch after the copies)
            views = None
            if self._cached_views:
                views = self._chunk_views.get(None) or self._chunk_view_reader(None)
            for idx, csel, osel in pieces:
                if views is not None:
                    chunk = views(idx)
                    if chunk is None:
                        out[osel] = fill
                    elif type(chunk) is ndarray:
                        out[osel] = chunk[csel]
                    else:
                        out[osel] = self._decode(chunk, idx)[csel]
                    continue
                raw = read(idx)
                if raw is None:
                    out[osel] = fill
                elif len(raw) == nbytes:
                    out[osel] = ndarray(shape, dtype, raw)[csel]
                else:
                    out[osel] = self._decode(raw, idx)[csel]
            return
        decode = self._decode
        for idx, csel, osel in pieces:
            raw = read(idx)
            if raw is None:
                out[osel] = fill
            else:
                out[osel] = decode(raw, idx)[csel]

    def get_slice(
        self,
        start: Sequence[int] | None = None,
        stop: Sequence[int] | None = None,
        *,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Read the region ``start <= index < stop`` (ExZarr's ``get_slice``).

        Parameters
        ----------
        start : sequence of int, optional
            The region's first index in each dimension; default the origin.
        stop : sequence of int, optional
            The region's exclusive end; default the array's shape.
        out : numpy.ndarray, optional
            A preallocated, writeable array of the region's shape to fill in place (chunks are
            copied straight into it, no intermediate copy).  Its dtype must accept the array's
            dtype under numpy's ``same_kind`` casting.

        Returns
        -------
        numpy.ndarray
            ``out`` if given, else a new array.

        Raises
        ------
        ValueError
            If the bounds are out of range, ``start > stop`` or the rank is wrong, or ``out``
            has the wrong shape.
        TypeError
            For non-integer bounds or an ``out`` of an incompatible dtype.

        Examples
        --------
        >>> a.get_slice(start=(0, 0), stop=(100, 100))  # doctest: +SKIP
        """
        self._sync()
        try:
            sels = normalize_start_stop(start, stop, self._shape)
        except (IndexError, ValueError):
            if not self._refreshed():
                raise
            sels = normalize_start_stop(start, stop, self._shape)
        full, _ = selection_shape(sels)
        if out is None:
            out = np.empty(full, dtype=self._dtype)
        else:
            if not isinstance(out, np.ndarray):
                raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
            if out.shape != full:
                raise ValueError(f"out has shape {out.shape} but the region has shape {full}")
            if not out.flags.writeable:
                raise ValueError("out is read-only; pass a writeable array")
            if not np.can_cast(self._dtype, out.dtype, "same_kind"):
                raise TypeError(
                    f"out has dtype {out.dtype}, which cannot hold {self._dtype} values "
                    "(same_kind casting); use an out array of dtype "
                    f"{self._dtype}"
                )
        self._read_into(sels, out)
        return out

    def __getitem__(self, key: Any) -> Any:
        """Read with numpy indexing: basic (ints, slices of any step, ``...``) and advanced.

        Advanced keys follow numpy: integer arrays or lists on any axes (broadcast
        together), boolean masks over some axes or the whole array, mixed with ints, slices
        and ``...``.  ``None`` (``numpy.newaxis``) is not supported.  See also
        :attr:`oindex` and :attr:`vindex` (zarr's orthogonal and point selections).

        Parameters
        ----------
        key : int, slice, Ellipsis, array_like of int or bool, or tuple of those

        Returns
        -------
        numpy.ndarray or numpy scalar
            A new array (never a view of shared memory).

        Raises
        ------
        IndexError
            As numpy: an index out of bounds (naming the axis and its size), too many
            indices, a mask of the wrong shape, index arrays that do not broadcast.

        Examples
        --------
        >>> a[[3, 0, 59]], a[idx, 2:30:3], a[..., [1, 2]], a[a_mask]  # doctest: +SKIP
        """
        if self._op_seq() != self._meta_seq:  # another handle may have resized (_sync)
            self._sync()
        tk = type(key)
        if tk is int or tk is np.int64:
            if self._rows:  # a[i]: one row of a row-chunked array (i from numpy too)
                row = self._row(key if tk is int else int(key))
                if row is not None:
                    return row
        elif (tk is np.ndarray or tk is list) and self._takes:
            got = self._take(key)  # a[idx]: the data loader's batch of rows
            if got is not None:
                return got
        elif (
            tk is tuple
            and self._takes
            and key
            and type(key[0]) in (np.ndarray, list)
            and not is_advanced(key[1:])
            and not any(k is None for k in key[1:])
        ):
            # a[idx, 2:30:3]: an index array on axis 0 puts its axis first whatever
            # follows, so this is a[idx][:, 2:30:3] (numpy's errors included)
            got = self._take(key[0])
            if got is not None:
                return np.ascontiguousarray(got[(slice(None), *key[1:])])
        if type(key) is tuple and len(key) == 2 and self._window_2d:
            out = self._window2d(key[0], key[1])  # the common a[r0:r1, c0:c1]
            if out is not None:
                return out
        if type(key) is not tuple or not key or type(key[0]) is not slice:
            point = self._point(key)
            if point is not None:
                return point
        box = self._box(key)
        if box is not None:  # plain step-1 slices: the common window read, fewer steps
            starts, stops = box
            out = np.empty([e - b for b, e in zip(starts, stops, strict=True)], dtype=self._dtype)
            if out.size:
                self._read_pieces(_box_pieces(starts, stops, self._chunks), out)
            return out
        if is_advanced(key):
            return self._gather(plan_numpy, key)
        try:
            sels, scalar = normalize_index(key, self._shape)
        except (IndexError, ValueError):
            if not self._refreshed():
                raise
            sels, scalar = normalize_index(key, self._shape)
        full, result = selection_shape(sels)
        out = np.empty(full, dtype=self._dtype)
        self._read_into(sels, out)
        out = out.reshape(result)
        return out[()] if scalar else out

    def _row(self, i: int) -> np.ndarray | None:
        """``a[i]`` when the chunks span whole rows (see :func:`_row_plan`): one cached
        borrowed chunk view, one copy of its row, one reuse-epoch check; None to take the
        general path (out of bounds, a stored value that is not a whole raw chunk, a
        reused arena)."""
        n = self._shape[0]
        if i < 0:
            i += n
        if not 0 <= i < n or self._closed:
            return None
        assert self._rows is not None  # the caller checked
        c0, tail, trim = self._rows
        views = self._chunk_views.get(None) or self._chunk_view_reader(None)
        epoch = self._epoch
        start = epoch()
        chunk = views((i // c0, 0) if tail == (0,) else (i // c0, *tail))
        if chunk is None:
            return np.full(self._shape[1:], self._fill, self._dtype)
        if type(chunk) is not np.ndarray:
            return None
        row = chunk[i % c0][trim].copy() if trim else chunk[i % c0].copy()
        return row if epoch() == start else None

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

    def _point(self, key: Any) -> Any:
        """Fast path for ``a[i, j, ...]`` with one plain int per dimension; else None."""
        if type(key) is int:
            key = (key,)
        elif type(key) is not tuple:
            return None
        shape = self._shape
        if len(key) != len(shape) or not shape:
            return None
        idx = []
        off = []
        for k, n, c in zip(key, shape, self._chunks, strict=True):
            if type(k) is not int:
                return None
            if k < 0:
                k += n
            if not 0 <= k < n:
                return None  # the general path raises the IndexError
            idx.append(k // c)
            off.append(k % c)
        chunk_idx = tuple(idx)
        where = tuple(off)
        self._live()

        def read() -> Any:
            raw = self._reader(chunk_idx)
            if raw is None:
                return self._dtype.type(self._fill)
            return self._dtype.type(self._decode(raw, chunk_idx)[where])

        return self._consistent(read)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """Return the whole array as a new numpy array (``np.asarray(a)``).

        Parameters
        ----------
        dtype : dtype-like, optional
        copy : bool or None
            ``False`` raises ValueError: reading always makes a copy.

        Returns
        -------
        numpy.ndarray
        """
        self._sync()
        if copy is False:
            raise ValueError(
                "a sharedzarr.Array cannot be converted without a copy; use "
                "read_chunk(idx, copy=False) for zero-copy views of single chunks"
            )
        arr = self.get_slice()
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
        return arr

    # -- advanced indexing ------------------------------------------------------------------

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

    def _scatter(self, planner: Callable[[Any, tuple[int, ...]], Any], key: Any, data: Any) -> None:
        """Write an advanced selection: read-modify-write of each touched chunk, under the
        writer lock, everything validated before the first chunk is written."""
        backend = self._writable()
        arr = self._check_data(data)
        with backend.writer(self.write_timeout):
            if self._sync_locked():  # another handle changed the array: check again
                self._check_data(arr)
            sel = planner(key, self._shape)
            if sel is None:  # an orthogonal key without arrays: basic indexing
                sels, _ = normalize_index(key, self._shape)
                _, result = selection_shape(sels)
                self._write_locked(sels, self._broadcast(arr, sels, result))
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
            if plan.perm is not None:
                work = work[plan.perm]  # the sorted order: each chunk's values are one run
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
                stored = self._reader(idx)  # borrowed: stable while we hold the writer lock
                if stored is None:
                    chunk = self._fill_chunk().copy()
                else:
                    chunk = np.array(self._decode(stored, idx))
                points_first(sel, chunk)[csel] = work[wsel]  # duplicates: the last one wins
                backend.write_chunk(idx, self._pipeline.encode(_byte_view(chunk)))

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

    # -- writing ----------------------------------------------------------------------------

    def _write_locked(self, sels: Sequence[DimSelection], value: np.ndarray) -> None:
        """Write ``value`` (full-form selection shape) into the chunks; writer lock held."""
        backend = self._live()
        shape, chunks, cdtype = self._shape, self._chunks, self._chunk_dtype
        raw_codec = self._raw
        encode = self._pipeline.encode
        nbytes = self._chunk_nbytes
        rest = []

        def whole_chunks() -> Iterator[tuple[tuple[int, ...], int, Any]]:
            # whole raw chunks are gathered straight into their new records: one copy
            for idx, csel, osel in iter_chunk_selections(sels, chunks):
                part = value[osel]
                valid = chunk_valid_shape(idx, shape, chunks)
                if raw_codec and valid == chunks and covers_chunk(csel, valid):

                    def fill(buf: memoryview, part: np.ndarray = part) -> None:
                        np.copyto(np.ndarray(chunks, cdtype, buf), part, casting="unsafe")

                    yield idx, nbytes, fill
                else:
                    rest.append((idx, csel, part, valid))

        # big writes copy on two threads (numpy releases the GIL while it copies)
        parallel = value.nbytes >= _PARALLEL_BYTES and _COPY_THREADS > 1
        backend.write_chunks_filled(
            whole_chunks(),
            _copy_pool().submit if parallel else None,
            expected_bytes=value.nbytes if raw_codec else 0,
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

    @property
    def write_timeout(self) -> float | None:
        """Seconds a write waits for the writer lock before ``LockTimeoutError`` (None: forever).

        Used by ``a[...] = v`` and every write without its own ``timeout=``; 60 by default.
        """
        return self._write_timeout

    @write_timeout.setter
    def write_timeout(self, seconds: float | None) -> None:
        if seconds is not None and not seconds >= 0:
            raise ValueError(
                f"write_timeout must be a number of seconds >= 0 or None, not {seconds!r}"
            )
        self._write_timeout = seconds

    def _wait(self, timeout: float | None) -> float | None:
        """A write's lock timeout: its own ``timeout=``, else :attr:`write_timeout`."""
        return self._write_timeout if timeout is None else timeout

    def _sync(self) -> None:
        """Adopt another handle's resize, append or attrs change: one word load when none.

        Every write operation moves the table's operation sequence (see
        :meth:`sharedzarr._table.Table.op_seq`); when it moved since this handle last
        looked, the handle reads ``zarr.json`` again, as a snapshot.
        """
        if self._op_seq() != self._meta_seq and not self._closed:
            seq = self._op_seq()
            token = self._live().metadata_token()
            if token is not None and token == self._meta_token:
                self._meta_seq = seq  # another write, not of the metadata: nothing to adopt
            else:
                self._resync()

    def _resync(self) -> None:
        """Read ``zarr.json`` again.  No snapshot is needed: it is one record, read whole,
        and writers publish a new shape only after the data it covers (see
        :meth:`_resize_locked`, :meth:`append`).  The sequence and token are loaded before
        the record, so a change after them is noticed by the next :meth:`_sync`."""
        backend = self._live()
        seq = backend.op_seq()
        token = backend.metadata_token()
        raw = backend.read_metadata()
        if raw is not None and raw != self._meta_raw:
            self._set_metadata(ArrayMetadata.from_json(raw), raw)
        self._meta_seq = seq
        self._meta_token = token

    def _synced(self) -> ArrayMetadata:
        """The current metadata (after :meth:`_sync`)."""
        self._sync()
        return self._meta

    def _sync_locked(self) -> bool:
        """Under the writer lock: adopt metadata another handle wrote; True if it changed.

        Two word loads when nothing was written since this handle's last write session
        (:meth:`_quiet_after`); one probe when the metadata record is the one this handle
        read last (its token, see :meth:`_sync`); otherwise the record is read and
        compared."""
        quiet = self._quiet
        if self._op_seq() == quiet[0] and self._live().write_token() == quiet[1]:
            return False
        token = self._live().metadata_token()
        if token is not None and token == self._meta_token:
            return False
        meta, raw = self._load_metadata()
        self._meta_token = token
        if raw == self._meta_raw:
            return False
        self._set_metadata(meta, raw)
        return True

    def _quiet_after(self, seq: int) -> None:
        """After a write that ran at operation sequence ``seq`` and left this handle's
        metadata the stored one: remember the sequence the next write will see if nothing
        else runs, and the write counter, so that :meth:`_sync_locked` knows then, from two
        words, that nothing changed.  If the write's session was the outermost one and
        nothing ran since it closed, that is the next session's sequence; if an enclosing
        session of this thread is still open, it is the same sequence (only this thread can
        write meanwhile, and any metadata write moves the write counter).  Only for
        backends whose sequence counts sessions."""
        backend = self._live()
        if not backend.op_seq_counts_sessions:
            return
        after = self._op_seq()
        if after == seq + 1:
            self._quiet = (after + 1, backend.write_token())
        elif after == seq and seq & 1:
            self._quiet = (seq, backend.write_token())

    @contextlib.contextmanager
    def atomic(self, timeout: float | None = None) -> Iterator[Array]:
        """Group writes into one transaction: all of them, or none if the block raises.

        Holds the writer lock for the block.  Readers that take a snapshot (``a[...]``,
        ``get_slice``) see all of the block's writes or none; if the block raises (any
        exception, :class:`~sharedzarr.errors.OutOfSpaceError` included), every chunk, the
        shape and the attributes are restored as they were, and what the block's writes
        allocated is given back.  A single write outside a block keeps the chunks it
        stored when it fails midway (see the README's limitations): it does not keep the
        old chunks for an undo, so a rewrite can reuse their memory at once.

        The undo keeps the old version of everything the block replaces until it ends: a
        block that rewrites the whole array needs memory for two copies, and runs slower
        than the same writes outside a block (no memory is reused within it).

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
        backend = self._writable()
        with backend.writer(self._wait(timeout), atomic=True):
            self._sync_locked()
            try:
                yield self
            except BaseException:
                self._meta_token = None  # undone: the next call reads the metadata again
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
        backend = self._writable()
        arr = self._check_data(data)
        with backend.writer(self._wait(timeout)):
            if self._sync_locked():  # another handle changed the array: check again
                self._check_data(arr)
            if stop is None and arr.ndim == len(self._shape):
                lo = normalize_start_stop(start, None, self._shape)
                stop = tuple(s.start + n for s, n in zip(lo, arr.shape, strict=True))
            sels = normalize_start_stop(start, stop, self._shape)
            full, _ = selection_shape(sels)
            value = self._broadcast(arr, sels, full)
            self._write_locked(sels, value)

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
        if is_advanced(key):
            self._scatter(plan_numpy, key, data)
            return
        backend = self._writable()
        arr = self._check_data(data)
        with backend.writer(self.write_timeout):
            if self._sync_locked():  # another handle changed the array: check again
                self._check_data(arr)
            sels, _ = normalize_index(key, self._shape)
            _, result = selection_shape(sels)
            value = self._broadcast(arr, sels, result)
            self._write_locked(sels, value)

    # -- chunks -----------------------------------------------------------------------------

    def read_chunk(self, idx: Sequence[int] | int, copy: bool = True) -> np.ndarray:
        """Return one whole chunk (edge chunks include their fill-value padding).

        Parameters
        ----------
        idx : sequence of int
            The chunk's position in the chunk grid.
        copy : bool
            False returns a read-only view of the stored bytes (shared memory for ``shm``),
            with no copy.  Only possible for uncompressed arrays.

        Returns
        -------
        numpy.ndarray
            Of shape :attr:`chunks`.  A never-written chunk reads as the fill value.

        Raises
        ------
        IndexError
            If ``idx`` is outside the chunk grid.
        ValueError
            For ``copy=False`` on a compressed array.
        """
        # the hot paths (per-chunk readers), once installed: one call into the backend's
        # cached numpy view of the chunk, revalidated by one load, then copied and checked
        # (or viewed: the view's segment is pinned)
        if copy is True:
            return self._read_hot(idx)
        if copy is False:
            return self._view_hot(idx)
        return self._read_chunk(idx, copy)

    def _read_chunk(self, idx: Any, copy: Any) -> np.ndarray:
        """:meth:`read_chunk` off the hot paths (and before they are installed): other
        index types, encoded chunks; the hot readers' fallback."""
        backend = self._live()
        if self._fast_chunks and "_read_hot" not in self.__dict__:
            self._install_hot_readers()
            if copy is True or copy is False:
                return self.read_chunk(idx, copy)  # through the readers just installed
        idx = normalize_chunk_index(idx, self._grid)
        if not copy and not self._raw:
            names = [c.name for c in self._pipeline.codecs]
            raise ValueError(
                f"read_chunk(copy=False) needs an uncompressed array, but {self.name!r} stores "
                f"its chunks encoded with {names}: there is no array in memory to view. Use "
                "copy=True, or create the array with compressor=None for zero-copy reads"
            )
        stored = backend.read_chunk(idx, copy=copy)  # bytes when copying: read consistently
        if stored is None:
            return (
                self._fill_chunk() if not copy else np.full(self._chunks, self._fill, self._dtype)
            )
        arr = self._decode(stored, idx)
        if copy:
            return np.array(arr, dtype=self._dtype)
        if arr.flags.writeable:
            arr.flags.writeable = False
        return arr

    # read_chunk's paths until _install_hot_readers replaces them
    def _read_hot(self, idx: Any) -> np.ndarray:
        return self._read_chunk(idx, True)

    def _view_hot(self, idx: Any) -> np.ndarray:
        return self._read_chunk(idx, False)

    def _install_hot_readers(self) -> None:
        """Make :meth:`read_chunk` one call into a cached reader (raw chunks in the array's
        dtype): copies for ``copy=True``, views of pinned segments for ``copy=False``.
        An absent chunk reads as a copy (or view) of the fill chunk.  They hand the rest
        (indices that are not hashable, values that are not a whole raw chunk) back to
        :meth:`_read_chunk`, holding the array weakly (no reference cycle keeps a dropped
        array mapped)."""
        method = weakref.WeakMethod(self._read_chunk)
        name = self.name

        def fallback(copy: bool) -> Callable[[Any], np.ndarray]:
            def read(idx: Any) -> np.ndarray:
                general = method()
                if general is None:
                    raise ValueError(f"array {name!r} is closed")
                return general(idx, copy)

            return read

        # instance attributes over the methods: read_chunk's hot path is one call
        self._read_hot = self._chunk_view_reader(True, fallback(True))  # type: ignore[method-assign]
        self._view_hot = self._chunk_view_reader(False, fallback(False))  # type: ignore[method-assign]

    def _drop_hot_readers(self) -> None:
        self.__dict__.pop("_read_hot", None)
        self.__dict__.pop("_view_hot", None)

    def _chunk_view_reader(self, copy: bool | None, fallback: Any = None) -> Any:
        """The backend's cached reader of whole chunks (see ``read_chunk``): copies made
        from borrowed numpy views (``copy=True``), pinned numpy views (False), or the
        borrowed views themselves (None: copy from them, then check the reuse epoch; a
        stored value that is not a whole raw chunk comes back as its bytes)."""
        # the stored dtype (read_chunk's fast path runs only where it is the array's dtype)
        shape, dtype, nbytes = self._chunks, self._chunk_dtype, self._chunk_nbytes

        def wrap(buf: Any) -> np.ndarray | None:
            # frombuffer keeps the memoryview as the base (see _decode)
            return np.frombuffer(buf, dtype).reshape(shape) if len(buf) == nbytes else None

        def wrap_any(buf: Any) -> Any:
            # a whole raw chunk as an array; anything else as its bytes, to decode
            return np.frombuffer(buf, dtype).reshape(shape) if len(buf) == nbytes else buf

        backend = self._live()
        grid = self._grid

        def normalize(idx: Any) -> tuple[int, ...]:
            return normalize_chunk_index(idx, grid)

        if copy is None:
            reader = backend.cached_chunk_reader(wrap_any, normalize=normalize)
        else:
            # an absent chunk reads as the fill chunk, cached too: no second probe
            kw = {"normalize": normalize, "fallback": fallback, "missing": self._fill_chunk()}
            if copy:
                reader = backend.cached_chunk_reader(wrap, take=np.ndarray.copy, **kw)
            else:  # views of the pinned cached view (or fill chunk): its flags stay ours
                reader = backend.cached_chunk_reader(wrap, pin=True, take=np.ndarray.view, **kw)
        self._chunk_views[copy] = reader
        return reader

    def write_chunk(
        self, idx: Sequence[int] | int, data: Any, *, timeout: float | None = None
    ) -> None:
        """Replace one whole chunk.

        Parameters
        ----------
        idx : sequence of int
            The chunk's position in the chunk grid.
        data : array_like or scalar
            The chunk's values: shape :attr:`chunks`, or for an edge chunk also just its
            in-bounds part; anything broadcastable to one of those.  Values in an edge chunk's
            padding are replaced by the fill value.
        timeout : float or None, optional
            Seconds to wait for the writer lock; default :attr:`write_timeout`.

        Raises
        ------
        IndexError
            If ``idx`` is outside the chunk grid.
        ValueError, TypeError, sharedzarr.errors.AccessDeniedError
            As for :meth:`set_slice`.
        """
        backend = self._writable()
        arr = self._check_data(data)
        with backend.writer(self._wait(timeout)):
            seq = self._op_seq()
            if self._sync_locked():  # another handle changed the array: check again
                self._check_data(arr)
            room = self._write_chunk_locked(backend, idx, arr)
        if room is None:
            self._quiet_after(seq)
        else:  # another writer waits: copy without the lock, publish under it
            self._write_reserved(backend, room, idx, arr, timeout)

    def _write_reserved(
        self, backend: Backend, room: Any, idx: Any, arr: np.ndarray, timeout: float | None
    ) -> None:
        """Fill a reserved chunk record without the writer lock and publish it under it
        (see ``Backend.reserve_chunk``); if the array's metadata changed meanwhile, the
        record is given up and the chunk written again under the lock, checked anew."""
        try:
            room.buffer[:] = _byte_view(arr)
        except BaseException:
            with backend.writer(None):
                room.abandon()
            raise
        with backend.writer(self._wait(timeout)):
            if self._sync_locked():
                room.abandon()
                self._check_data(arr)
                self._write_chunk_locked(backend, idx, arr, reserve=False)
            else:
                room.publish()

    def _write_chunk_locked(
        self, backend: Backend, idx: Any, arr: np.ndarray, reserve: bool = True
    ) -> Any:
        """:meth:`write_chunk` under the writer lock, the metadata checked.  Returns the
        reserved room of a big whole chunk when another writer waits (see
        :meth:`_write_reserved`), else None once the chunk is written."""
        # chunks known to lie whole inside the array: their index needs no checks
        inner = self._inner_chunks.get(idx) if type(idx) is tuple else None
        if inner is None:
            idx = normalize_chunk_index(idx, self._grid)
            ends = zip(idx, self._chunks, self._shape, strict=True)
            if all((i + 1) * c <= n for i, c, n in ends):
                if len(self._inner_chunks) < _INNER_CHUNKS_MAX:
                    self._inner_chunks[idx] = idx
                inner = idx
        else:
            idx = inner
        if (
            inner is not None
            and self._raw
            and type(arr) is np.ndarray
            and arr.shape == self._chunks
            and arr.dtype == self._chunk_dtype
            and arr.flags.c_contiguous
        ):  # a whole raw chunk as it will be stored: its bytes go in as they are
            if reserve and arr.nbytes >= _RESERVE_MIN:
                room = backend.reserve_chunk(idx, arr.nbytes)
                if room is not None:
                    return room
            backend.write_chunk(idx, _byte_view(arr))
            return None
        valid = chunk_valid_shape(idx, self._shape, self._chunks)
        target = valid if arr.shape == valid else self._chunks
        try:
            value = np.broadcast_to(arr, target)
        except ValueError:
            raise ValueError(
                f"chunk data of shape {arr.shape} does not fit chunk {idx} of shape "
                f"{self._chunks} (in-bounds part {valid})"
            ) from None
        if valid == self._chunks:
            chunk = np.ascontiguousarray(value, dtype=self._chunk_dtype)
        else:
            chunk = self._fill_chunk().copy()
            region = tuple(slice(0, v) for v in valid)
            chunk[region] = value[region]
        buf = _byte_view(chunk)
        backend.write_chunk(idx, buf if self._raw else self._pipeline.encode(buf))
        return None

    def delete_chunk(self, idx: Sequence[int] | int) -> None:
        """Delete one chunk, so it reads as the fill value.  Absent chunks are fine.

        Parameters
        ----------
        idx : sequence of int

        Raises
        ------
        IndexError
            If ``idx`` is outside the chunk grid.
        sharedzarr.errors.AccessDeniedError
            On a read-only handle.
        """
        backend = self._writable()
        idx = normalize_chunk_index(idx, self._grid)
        backend.delete_chunk(idx)

    def list_chunks(self) -> list[tuple[int, ...]]:
        """Return the indices of the stored (initialized) chunks, sorted.

        Returns
        -------
        list of tuple of int
        """
        return sorted(tuple(i) for i in self._live().list_chunks())

    def iter_chunks(
        self, *, initialized_only: bool = False
    ) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        """Iterate over chunks in C order of their index.

        Parameters
        ----------
        initialized_only : bool
            Only the stored chunks; by default every chunk of the grid (unwritten ones read as
            the fill value).

        Yields
        ------
        index : tuple of int
            The chunk's grid position; its first element is at ``index * chunks``.
        data : numpy.ndarray
            A copy of the chunk's in-bounds part (edge chunks are trimmed).
        """
        indices = self.list_chunks() if initialized_only else iter_chunk_indices(self._grid)
        for idx in indices:
            chunk = self.read_chunk(idx)
            valid = chunk_valid_shape(idx, self._shape, self._chunks)
            if valid != self._chunks:
                chunk = chunk[tuple(slice(0, v) for v in valid)]
            yield idx, chunk

    # -- shape changes ----------------------------------------------------------------------

    def resize(self, new_shape: Sequence[int] | int, *, timeout: float | None = None) -> None:
        """Change the shape; chunks that fall outside are deleted.

        Growing exposes fill values.  Shrinking deletes chunks outside the new grid and resets
        the cut-off part of the new edge chunks to the fill value, so growing again later shows
        fill values, not old data.

        Parameters
        ----------
        new_shape : sequence of int
            Same rank as the array.
        timeout : float or None, optional
            Seconds to wait for the writer lock; default :attr:`write_timeout`.

        Raises
        ------
        ValueError, TypeError
            For a bad shape.
        sharedzarr.errors.AccessDeniedError
            On a read-only handle.
        """
        backend = self._writable()
        shape = normalize_shape(new_shape, "new_shape")
        with backend.writer(self._wait(timeout)):
            self._sync_locked()
            if len(shape) != len(self._shape):
                raise ValueError(
                    f"new_shape {shape} has {len(shape)} dimension(s) but the array has "
                    f"{len(self._shape)}; resize cannot change the rank"
                )
            self._resize_locked(shape)

    def _resize_locked(self, shape: tuple[int, ...]) -> None:
        """Resize with the writer lock held, so that stopping anywhere leaves a right array.

        The order is what makes it so: (1) the part the new shape exposes is reset to the
        fill value while it is still outside the published shape (an earlier write killed
        half-way may have left data there); (2) the new shape is published, in one
        metadata write; (3) what lies beyond it is deleted or reset.  Killed before (2),
        the old array is intact; after it, the new one is right and (3)'s leftovers lie
        beyond the shape, where the next growth's step (1) finds them.  Readers see the
        whole operation or none of it either way (:meth:`Backend.snapshot`).
        """
        backend = self._live()
        old_shape, chunks = self._shape, self._chunks
        if shape == old_shape:
            return
        grid = chunk_grid_shape(shape, chunks)
        stored = backend.list_chunks()
        if any(n > o for n, o in zip(shape, old_shape, strict=True)):
            for idx in stored:  # (1): clean what the new shape exposes
                if any(i >= g for i, g in zip(idx, grid, strict=True)):
                    continue  # stays beyond the new shape too
                self._reset_beyond(tuple(idx), old_shape, delete=True)
        meta = self._meta.evolve(shape=shape)  # (2)
        raw = with_shape_json(self._meta_raw, old_shape, shape) or meta.to_json()
        backend.write_metadata(raw)
        self._set_metadata(meta, raw)
        if any(n < o for n, o in zip(shape, old_shape, strict=True)):
            for idx in stored:  # (3): drop what the shape no longer covers
                if any(i >= g for i, g in zip(idx, grid, strict=True)):
                    backend.delete_chunk(idx)
                else:
                    self._reset_beyond(tuple(idx), shape, delete=False)

    def _reset_beyond(self, idx: tuple[int, ...], shape: tuple[int, ...], delete: bool) -> None:
        """Reset the part of stored chunk ``idx`` that lies outside ``shape`` to the fill
        value (with ``delete``, delete the chunk if all of it does); writer lock held."""
        chunks = self._chunks
        valid = chunk_valid_shape(idx, shape, chunks)
        if any(v <= 0 for v in valid):
            if delete:
                self._live().delete_chunk(idx)
            return
        cut = [d for d in range(len(shape)) if valid[d] < chunks[d]]
        if not cut:
            return
        stored = self._reader(idx)  # borrowed: stable under the writer lock
        if stored is None:
            return
        chunk = np.array(self._decode(stored, idx))
        tails = [(slice(None),) * d + (slice(valid[d], None),) for d in cut]
        if all(_is_fill_value(chunk[t], self._fill) for t in tails):
            return  # already the fill value: no write
        for t in tails:
            chunk[t] = self._fill
        buf = _byte_view(chunk)
        self._live().write_chunk(idx, buf if self._raw else self._pipeline.encode(buf))

    def append(self, data: Any, axis: int = 0, *, timeout: float | None = None) -> tuple[int, ...]:
        """Grow the array along ``axis`` and write ``data`` into the new part.

        Parameters
        ----------
        data : array_like
            Same rank as the array, matching its shape on every other axis.
        axis : int
            The axis to grow (negative counts from the end).
        timeout : float or None, optional
            Seconds to wait for the writer lock; default :attr:`write_timeout`.

        Returns
        -------
        tuple of int
            The new shape.

        Raises
        ------
        ValueError, TypeError
            For data of the wrong rank, shape or dtype; the array is unchanged.
        """
        backend = self._writable()
        arr = self._check_data(data)
        with backend.writer(self._wait(timeout)):
            seq = self._op_seq()
            if self._sync_locked():  # another handle changed the array: check again
                self._check_data(arr)
            new_shape = self._append_locked(backend, arr, axis)
        self._quiet_after(seq)  # (the metadata this handle holds is the one it wrote)
        return new_shape

    def _append_locked(self, backend: Backend, arr: np.ndarray, axis: int) -> tuple[int, ...]:
        """:meth:`append` under the writer lock, the metadata checked."""
        ndim = len(self._shape)
        if ndim == 0:
            raise ValueError("cannot append to a rank-0 array")
        try:
            ax = operator.index(axis)
        except TypeError:
            raise TypeError(f"axis must be an integer, got {axis!r}") from None
        if not -ndim <= ax < ndim:
            raise ValueError(f"axis {axis} is out of range for a {ndim}-d array")
        ax %= ndim
        if arr.ndim != ndim:
            raise ValueError(
                f"data has {arr.ndim} dimension(s) but the array has {ndim}; "
                "append needs data of the same rank"
            )
        for d in range(ndim):
            if d != ax and arr.shape[d] != self._shape[d]:
                raise ValueError(
                    f"data of shape {arr.shape} does not match the array's shape "
                    f"{self._shape} on axis {d} (append along axis {ax})"
                )
        old = self._shape
        new_shape = tuple(s + (arr.shape[d] if d == ax else 0) for d, s in enumerate(old))
        sels = tuple(DimSelection(old[d] if d == ax else 0, 1, arr.shape[d]) for d in range(ndim))
        # the data goes in first, beyond the published shape, and the shape is published
        # last: stopped anywhere (an error, OutOfSpaceError, SIGKILL), the array is the
        # old one.  The data covers all of the exposed part, so nothing there needs a
        # reset (compare _resize_locked).
        old_meta, old_raw = self._meta, self._meta_raw
        meta = old_meta.evolve(shape=new_shape)
        # this handle writes within the new shape
        self._set_metadata(meta, with_shape_json(old_raw, old, new_shape))
        try:
            self._write_locked(sels, arr)
        except BaseException:
            self._set_metadata(old_meta, old_raw)
            self._drop_appended(old, new_shape, ax)
            raise
        backend.write_metadata(self._meta_raw)
        return new_shape

    def _drop_appended(self, old: tuple[int, ...], new: tuple[int, ...], ax: int) -> None:
        """After a failed append: delete the chunks it stored wholly beyond the old shape, so
        the space they took is free again (best effort; a partly written edge chunk keeps
        its tail, beyond the shape, until the next growth resets it)."""
        old_grid = chunk_grid_shape(old, self._chunks)
        new_grid = chunk_grid_shape(new, self._chunks)
        backend = self._live()
        ranges = [range(old_grid[d] if d == ax else 0, g) for d, g in enumerate(new_grid)]
        try:
            for idx in itertools.product(*ranges):
                backend.delete_chunk(idx)
            table = getattr(backend, "table", None)
            if table is not None:
                table.reclaim()  # compact: the space the deleted chunks took is free again
        except Exception:  # noqa: BLE001 - the append's own error is the one to report
            pass

    # -- attributes and info ----------------------------------------------------------------

    def _update_attributes(self, change: Callable[[dict[str, Any]], None]) -> None:
        backend = self._writable()
        with backend.writer(self.write_timeout):
            self._sync_locked()
            attrs = json.loads(json.dumps(self._meta.attributes))
            change(attrs)
            for k in attrs:
                if not isinstance(k, str):
                    raise TypeError(f"attribute names must be str, got {k!r}")
            try:
                json.dumps(attrs, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"attribute values must be JSON-serializable (dict, list, str, int, finite "
                    f"float, bool, None): {exc}"
                ) from None
            meta = self._meta.evolve(attributes=json.loads(json.dumps(attrs)))
            raw = meta.to_json()
            backend.write_metadata(raw)
            self._set_metadata(meta, raw)

    @property
    def attrs(self) -> Attributes:
        """User attributes, a dict persisted in ``zarr.json`` on every change."""
        if self._attrs is None:
            self._attrs = Attributes(self)
        return self._attrs

    @property
    def info(self) -> dict[str, Any]:
        """A summary: name, storage, shape, chunks, dtype, codecs, counts and sizes."""
        backend = self._live()
        stored = 0
        initialized = 0
        for idx in backend.list_chunks():
            data = self._reader(idx)  # only its length is used
            if data is not None:
                initialized += 1
                stored += memoryview(data).nbytes
        return {
            "type": "sharedzarr.Array",
            "name": self.name,
            "storage": self.storage,
            "mode": self.mode,
            "shape": self._shape,
            "chunks": self._chunks,
            "dtype": dtype_name(self._dtype),
            "fill_value": encode_fill_value(self._meta.fill_value, self._dtype),
            "codecs": self._pipeline.to_list(),
            "nchunks": self.nchunks,
            "nchunks_initialized": initialized,
            "nbytes": self.nbytes,
            "nbytes_stored": stored + len(self._meta_raw),
            "dimension_names": self._meta.dimension_names,
            "attributes": json.loads(json.dumps(self._meta.attributes)),
        }

    # -- properties -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The storage (table) name: what :func:`sharedzarr.open` takes."""
        return self._name_or_unknown()

    @property
    def storage(self) -> str:
        """The storage backend id (``"shm"``, ``"memory"``)."""
        return type(self._backend).id if self._backend is not None else "?"

    @property
    def mode(self) -> str:
        """``"r"`` for a read-only handle, else ``"r+"``."""
        return "r" if self.readonly else "r+"

    @property
    def readonly(self) -> bool:
        """True if this handle cannot write."""
        return bool(getattr(self._backend, "readonly", False))

    @property
    def backend(self) -> Backend:
        """The storage backend handle."""
        return self._live()

    @property
    def table(self) -> Any:
        """The underlying :class:`sharedzarr.Table` (``shm`` storage), else None."""
        return getattr(self._live(), "table", None)

    @property
    def metadata(self) -> ArrayMetadata:
        """The parsed ``zarr.json``, as of the last completed write operation."""
        return self._synced()

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape, as of the last completed write operation (in any process)."""
        self._sync()
        return self._shape

    @property
    def chunks(self) -> tuple[int, ...]:
        """The chunk shape."""
        return self._chunks

    @property
    def dtype(self) -> np.dtype:
        """The element dtype (native byte order)."""
        return self._dtype

    @property
    def fill_value(self) -> Any:
        """The value unwritten elements read as (a numpy scalar)."""
        return self._meta.fill_value

    @property
    def compressor(self) -> list[dict[str, Any]]:
        """The codecs after ``bytes`` as ``zarr.json`` entries (empty: uncompressed)."""
        return self._pipeline.to_list()

    @property
    def dimension_names(self) -> tuple[str | None, ...] | None:
        """The dimension names, or None."""
        return self._meta.dimension_names

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return len(self._shape)

    @property
    def size(self) -> int:
        """The number of elements."""
        return math.prod(self._shape)

    @property
    def nbytes(self) -> int:
        """The size of the array's data when read into memory, in bytes."""
        return self.size * self._dtype.itemsize

    @property
    def nchunks(self) -> int:
        """The number of chunks in the grid."""
        return math.prod(self._grid)

    @property
    def cdata_shape(self) -> tuple[int, ...]:
        """The number of chunks along each dimension."""
        return self._grid

    @property
    def nchunks_initialized(self) -> int:
        """The number of stored chunks."""
        return len(self._live().list_chunks())

    def __len__(self) -> int:
        self._sync()
        if not self._shape:
            raise TypeError("len() of unsized object (a rank-0 array)")
        return self._shape[0]

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close this handle (idempotent).  The storage stays; other handles are unaffected."""
        if self._closed:
            return
        self._closed = True
        self._drop_hot_readers()
        backend = self._backend
        if backend is not None:
            backend.close()

    def delete(self) -> None:
        """Delete the array's storage (the whole table) and close this handle.

        Raises
        ------
        sharedzarr.errors.AccessDeniedError
            If this process may not delete it.
        """
        backend = self._live()
        backend.delete()
        self._closed = True
        self._drop_hot_readers()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def __enter__(self) -> Array:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_open_by_name, (self.name, self.storage, self.mode))

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        """A token that changes whenever the array's storage is written."""
        return ("sharedzarr.Array", self.storage, self.name, self._live().write_count())

    def give_away(self, pid: int, *args: Any, **kwargs: Any) -> Any:
        """Hand the table to process ``pid`` (ETS: ``ets:give_away/3``).

        Parameters
        ----------
        pid : int
        *args, **kwargs
            Passed to :meth:`sharedzarr.Table.give_away`.

        Returns
        -------
        Any
            What the table returns.

        Raises
        ------
        TypeError
            If the storage is not table-backed (e.g. ``memory``).
        """
        return self._require_table("give_away").give_away(pid, *args, **kwargs)

    def set_heir(self, pid: int | None, *args: Any, **kwargs: Any) -> Any:
        """Set the process that inherits the table when the owner exits (ETS ``heir``).

        Parameters
        ----------
        pid : int or None
        *args, **kwargs
            Passed to :meth:`sharedzarr.Table.set_heir`.

        Returns
        -------
        Any
            What the table returns.

        Raises
        ------
        TypeError
            If the storage is not table-backed (e.g. ``memory``).
        """
        return self._require_table("set_heir").set_heir(pid, *args, **kwargs)

    def _require_table(self, what: str) -> Any:
        table = getattr(self._live(), "table", None)
        if table is None:
            raise TypeError(
                f"{what}() needs a table-backed array (storage='shm'); array {self.name!r} "
                f"uses storage {self.storage!r}"
            )
        return table

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return (
            f"<sharedzarr.Array {self._name_or_unknown()!r} shape={self._shape} "
            f"chunks={self._chunks} dtype={self._dtype} storage={self.storage!r}"
            f"{' mode=r' if self.readonly else ''}{state}>"
        )


_RowPlan = tuple[int, tuple[int, ...], Any]


def _row_plan(meta: ArrayMetadata) -> _RowPlan | None:
    """For :meth:`Array._row`: ``(rows per chunk, chunk index after the first axis, trim)``
    when one chunk spans whole rows (one chunk along every axis after the first), else
    None.  ``trim`` cuts an edge chunk's padding off a row (or is None)."""
    shape, chunks = meta.shape, meta.chunks
    if not shape or any(c < n for c, n in zip(chunks[1:], shape[1:], strict=True)):
        return None
    trim = None if chunks[1:] == shape[1:] else tuple(slice(0, n) for n in shape[1:])
    return chunks[0], (0,) * (len(shape) - 1), trim


class _OIndex:
    """``Array.oindex``: orthogonal selections (zarr's semantics)."""

    __slots__ = ("_array",)

    def __init__(self, array: Array) -> None:
        self._array = array

    def __getitem__(self, key: Any) -> Any:
        return self._array._gather(plan_orthogonal, key)

    def __setitem__(self, key: Any, data: Any) -> None:
        self._array._scatter(plan_orthogonal, key, data)


class _VIndex:
    """``Array.vindex``: vectorised (point) selections (zarr's semantics)."""

    __slots__ = ("_array",)

    def __init__(self, array: Array) -> None:
        self._array = array

    def __getitem__(self, key: Any) -> Any:
        return self._array._gather(plan_vectorized, key)

    def __setitem__(self, key: Any, data: Any) -> None:
        self._array._scatter(plan_vectorized, key, data)


def _box_pieces(
    starts: Sequence[int], stops: Sequence[int], chunks: Sequence[int]
) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...], tuple[slice, ...]]]:
    """The chunk pieces of the box ``starts <= index < stops`` (non-empty, step 1)."""
    dims = []
    for b, e, c in zip(starts, stops, chunks, strict=True):
        parts = []
        ci = b // c
        while True:
            base = ci * c
            cs = b if b > base else base
            ce = e if e < base + c else base + c
            parts.append((ci, slice(cs - base, ce - base), slice(cs - b, ce - b)))
            if ce >= e:
                break
            ci += 1
        dims.append(parts)
    for combo in itertools.product(*dims):
        yield tuple(zip(*combo, strict=True))


class Attributes(MutableMapping[str, Any]):
    """The array's user attributes; every change is written to ``zarr.json`` at once.

    Parameters
    ----------
    array : Array

    Notes
    -----
    Values are JSON values.  Reading returns a copy: mutate a nested value and assign it back
    (``a.attrs["x"] = x``) to persist it.  ``update`` writes once for all keys.
    """

    def __init__(self, array: Array) -> None:
        self._array = array

    def __getitem__(self, key: str) -> Any:
        value = self._array._synced().attributes[key]
        return json.loads(json.dumps(value)) if isinstance(value, (dict, list)) else value

    def __setitem__(self, key: str, value: Any) -> None:
        self._array._update_attributes(lambda a: a.__setitem__(key, value))

    def __delitem__(self, key: str) -> None:
        if key not in self._array._synced().attributes:
            raise KeyError(key)
        self._array._update_attributes(lambda a: a.pop(key, None))

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._array._synced().attributes))

    def __len__(self) -> int:
        return len(self._array._synced().attributes)

    def __contains__(self, key: object) -> bool:
        return key in self._array._synced().attributes

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Set several attributes with one metadata write.

        Parameters
        ----------
        other : mapping or iterable of pairs, optional
        **kwargs
        """
        items = dict(other, **kwargs)
        self._array._update_attributes(lambda a: a.update(items))

    def put(self, attributes: Mapping[str, Any]) -> None:
        """Replace all attributes with ``attributes`` (one metadata write).

        Parameters
        ----------
        attributes : mapping
        """
        items = dict(attributes)

        def change(a: dict[str, Any]) -> None:
            a.clear()
            a.update(items)

        self._array._update_attributes(change)

    def asdict(self) -> dict[str, Any]:
        """Return a deep copy of the attributes as a plain dict.

        Returns
        -------
        dict
        """
        copy: dict[str, Any] = json.loads(json.dumps(self._array._synced().attributes))
        return copy

    def refresh(self) -> None:
        """Re-read ``zarr.json`` to see attributes another handle wrote."""
        self._array.refresh()

    def __repr__(self) -> str:
        return f"Attributes({self._array._synced().attributes!r})"


def _check_table_type(table_type: Any) -> None:
    if table_type in ("bag", "duplicate_bag"):
        raise ValueError(
            f"table_type={table_type!r} cannot hold an array: an array needs exactly one value "
            "per key (one chunk per chunk index), which 'set' and 'ordered_set' tables give. "
            "Use table_type='set', or sharedzarr.Table for bag tables of your own keys"
        )
    if table_type not in _ARRAY_TABLE_TYPES:
        raise ValueError(
            f"unknown table_type {table_type!r}; arrays use 'set' (default) or 'ordered_set'"
        )


def create(
    shape: Sequence[int] | int,
    chunks: Sequence[int] | int | str | None = "auto",
    dtype: Any = "float64",
    *,
    storage: str | type[Backend] = "shm",
    fill_value: Any = 0,
    compressor: Any = None,
    attributes: Mapping[str, Any] | None = None,
    dimension_names: Sequence[str | None] | None = None,
    table_name: str | None = None,
    named_table: bool = True,
    table_type: str = "set",
    access: str = "public",
    heir: int | None = None,
    persistent: bool = False,
    overwrite: bool = False,
    permissions: int | None = None,
    mode: int | None = None,
) -> Array:
    """Create an array (ExZarr's ``ExZarr.create``) and write its ``zarr.json``.

    Parameters
    ----------
    shape : sequence of int
        The array's shape; zero-length dimensions and rank 0 (``()``) are allowed.
    chunks : sequence of int, int or "auto"
        The chunk shape, one size >= 1 per dimension (an int applies to all dimensions).
        ``"auto"`` (the default) picks chunks of about 2-16 MiB made of whole rows, split
        along axis 0 first (see :func:`sharedzarr._metadata.auto_chunks` for the rule).
    dtype : dtype-like
        bool, int8..int64, uint8..uint64, float16/32/64, complex64/128, datetime64 and
        timedelta64 of any unit, ``S<n>`` (fixed-length bytes), ``U<n>`` (fixed-length str),
        ``V<n>`` (raw bytes), or a structured dtype of packed fields of these.  Object and
        variable-length string dtypes raise ``TypeError``.
    storage : str or Backend subclass
        A registered storage id: ``"shm"`` (shared-memory table) or ``"memory"``.
    fill_value : scalar
        What never-written elements read as.
    compressor : None, str or dict
        None (raw chunks, zero-copy readable), ``"zlib"``/``"gzip"``, ``"zstd"``, ``"blosc"``,
        ``"lz4"`` or a ``{"name": ..., "configuration": {...}}`` Zarr v3 codec dict.
    attributes : dict, optional
        JSON user attributes.
    dimension_names : sequence of str or None, optional
        One name per dimension.
    table_name : str, optional
        The name other processes open the array by; default a generated one.
    named_table, table_type, access, heir, persistent
        Table options (see :class:`sharedzarr.Table`).  ``table_type`` must be ``"set"`` or
        ``"ordered_set"``: arrays need one value per key.
    overwrite : bool
        Replace an existing table of that name.
    permissions : int, optional
        Permission bits of the shared-memory segments (shm storage; default ``0o600``:
        this user only).  ``0o640``/``0o660`` share with the group.
    mode : int, optional
        Deprecated spelling of ``permissions`` (``mode`` means ``"r"``/``"r+"`` in
        :func:`open`); it still works and warns with a ``DeprecationWarning``.

    Returns
    -------
    Array

    Raises
    ------
    sharedzarr.errors.TableExistsError
        If the name is taken and ``overwrite`` is false.
    ValueError, TypeError
        For any invalid argument (nothing is created).

    Examples
    --------
    >>> import sharedzarr as sz
    >>> a = sz.create((1000, 1000), (100, 100), table_name="my_array_data")  # doctest: +SKIP
    """
    if mode is not None:
        if permissions is not None:
            raise TypeError(
                "create() got both permissions= and its deprecated spelling mode=; "
                "pass permissions= only"
            )
        warnings.warn(
            "create(mode=...) is deprecated: 'mode' means 'r'/'r+' in sharedzarr.open; "
            f"pass the permission bits as permissions={mode!r} instead",
            DeprecationWarning,
            stacklevel=_caller_stacklevel(),
        )
        permissions = mode
    backend_cls = _storage.resolve(storage)
    _check_table_type(table_type)
    if table_name is not None and not isinstance(table_name, str):
        raise TypeError(f"table_name must be a str or None, got {table_name!r}")
    meta = ArrayMetadata.create(
        shape,
        chunks,
        dtype,
        fill_value=fill_value,
        compressor=compressor,
        attributes=attributes,
        dimension_names=dimension_names,
    )
    for codec in meta.codecs:
        codec.check_available()  # a missing numcodecs fails here, before a table exists
    raw = meta.to_json()
    extra = {} if permissions is None else {"mode": permissions}
    backend = backend_cls.create(
        table_name,
        overwrite=overwrite,
        named_table=named_table,
        table_type=table_type,
        access=access,
        heir=heir,
        persistent=persistent,
        **extra,
    )
    try:
        backend.write_metadata(raw)
    except BaseException:
        try:
            backend.delete()
        except Exception:  # noqa: BLE001 - the original error matters more
            backend.close()
        raise
    return Array(backend, meta, raw)


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside sharedzarr."""
    level = 1
    frame: types.FrameType | None = sys._getframe(1)
    package = __name__.rpartition(".")[0] + "."
    while frame is not None and frame.f_globals.get("__name__", "").startswith(package):
        frame = frame.f_back
        level += 1
    return level


def _use_chunk_key_encoding(backend: Backend, meta: ArrayMetadata) -> None:
    """Point the backend at the chunk keys of ``meta``'s chunk key encoding.

    The default encoding with ``/`` (``c/0/0``) is the backend's own chunk keys
    (``("chunk", (0, 0))``); any other (``c.0.0``, ``0.0``, ``0/0``) is stored by
    zarr-python as plain string keys, which the backend then reads and writes.
    """
    cke = meta.chunk_key_encoding
    if cke["name"] == "default" and (cke["configuration"]["separator"] == "/" or not meta.shape):
        return  # c/i/j, or "c" for rank 0 whatever the separator: the store maps it
    use = getattr(backend, "use_chunk_keys", None)
    if use is None:
        raise ValueError(
            f"the {type(backend).id!r} storage keeps chunks under the default chunk key "
            f"encoding only, and this array uses {cke!r}"
        )
    use(meta.chunk_key, meta.parse_chunk_key)


def open(  # noqa: A001 - the public name, as in ExZarr and zarr-python
    table_name: str,
    *,
    storage: str | type[Backend] = "shm",
    mode: str = "r+",
    trusted_uid: int | str | None = None,
) -> Array:
    """Open an existing array by its table name, from any process.

    Arrays that zarr-python wrote at the root of a
    :class:`~sharedzarr.zarr_store.SharedMemoryStore` open too, with any chunk key encoding
    (``default`` or ``v2``, separator ``/`` or ``.``).  The handle is a context manager:
    ``with sharedzarr.open(name) as a: ...`` closes it at the end of the block.

    Parameters
    ----------
    table_name : str
    storage : str or Backend subclass
        The storage id the array was created with.
    mode : {"r+", "r"}
        ``"r"`` gives a read-only handle whose writes raise
        :class:`~sharedzarr.errors.AccessDeniedError`.
    trusted_uid : int or "any", optional
        Open an array that another user created only if it is this user's (see
        :meth:`sharedzarr.Table.attach`); by default only your own arrays open.

    Returns
    -------
    Array

    Raises
    ------
    sharedzarr.errors.TableNotFoundError
        If no table has that name.
    sharedzarr.errors.AccessDeniedError
        For an array of another user not named by ``trusted_uid``, or whose permissions
        deny you.
    ValueError
        For an unknown mode, or a table that holds no array (no ``"metadata"`` key).
    """
    if mode not in MODES:
        raise ValueError(
            f"mode must be one of {list(MODES)} ('r+' read-write, 'r' read-only), got {mode!r}"
        )
    if not isinstance(table_name, str):
        raise TypeError(f"table_name must be a str, got {table_name!r}")
    backend_cls = _storage.resolve(storage)
    extra = {} if trusted_uid is None else {"trusted_uid": trusted_uid}
    backend = backend_cls.open(table_name, mode=mode, **extra)
    try:
        raw = backend.read_metadata()
        if raw is None:
            table = getattr(backend, "table", None)
            if table is not None and table.get(".zarray", copy=False) is not None:
                raise ValueError(
                    f"table {table_name!r} holds a Zarr format 2 array (.zarray), and "
                    "sharedzarr.open reads Zarr v3 arrays; read it with zarr.open_array(store="
                    f"SharedMemoryStore({table_name!r})), or copy it into a v3 array with "
                    "sharedzarr.array(that_array, chunks=that_array.chunks)"
                )
            raise ValueError(
                f"table {table_name!r} holds no array (it has no 'metadata' key with a "
                "zarr.json document); open it with sharedzarr.Table.attach"
                f"({table_name!r}) instead"
            )
        raw = bytes(raw)
        meta = ArrayMetadata.from_json(raw)
        _use_chunk_key_encoding(backend, meta)
    except BaseException:
        backend.close()
        raise
    return Array(backend, meta, raw)


def _open_by_name(name: str, storage: str, mode: str) -> Array:
    """Unpickle an :class:`Array`: reopen it by name."""
    return open(name, storage=storage, mode=mode)
