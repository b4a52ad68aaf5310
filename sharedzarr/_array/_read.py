"""Slice reads: ``get_slice``, ``a[...]`` and ``np.asarray(a)``.

The selection is normalised once (:mod:`sharedzarr._chunking`), then each touched chunk is
copied straight from the backend's zero-copy view into the output with one numpy slice
assignment: no per-element Python work and no intermediate copy.  Compressed chunks are
decoded first.  A multi-chunk read is a snapshot (``Backend.snapshot``): it is repeated until
no write operation overlapped it.  Big reads copy on two threads.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .._chunking import (
    DimSelection,
    iter_chunk_selections,
    normalize_index,
    normalize_start_stop,
    selection_shape,
)
from .._indexing import (
    is_advanced,
    plan_numpy,
    split_advanced_newaxis,
    split_fields,
    split_newaxis,
)
from .._threads import COPY_THREADS as _COPY_THREADS
from .._threads import copy_pool as _copy_pool
from ..storage.base import OP_OPEN as _OP_OPEN
from ..storage.base import Backend
from ._base import _PARALLEL_BYTES
from ._gather import GatherMixin

__all__ = ["ReadMixin"]


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


class ReadMixin(GatherMixin):
    """Slice reads of :class:`~sharedzarr.Array`."""

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

        epoch = self._epoch
        start = epoch()
        if start & _OP_OPEN:  # a writer is mid-operation: the snapshot protocol waits for
            self._consistent(copy_all)  # it, and asks it to let this read in first
            return
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
        and ``...``; with basic indexing, ``None`` (``numpy.newaxis``) adds an axis of
        length 1, and a structured array's field names (``a["x"]``, ``a[["x", "y"]]``,
        ``a["x", 2:5]``) select fields, as in numpy.  See also
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
        if (
            tk is str
            or (tk is tuple and str in map(type, key))
            or (tk is list and key and type(key[0]) is str)
        ):  # a["x"], a[["x", "y"]], a["x", 2:5]: the records, then numpy's field view
            fields = split_fields(key, self._dtype)
            if fields is not None:
                got = self[fields[0]][fields[1]]  # a record (np.void) gives a scalar
                return np.ascontiguousarray(got) if type(got) is np.ndarray else got
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
            split = split_advanced_newaxis(key, self._shape)
            if split is not None:  # a[idx, None]: gather without the new axes, then lay
                stripped, axes = split  # the result out as numpy does
                return np.ascontiguousarray(axes.arrange(self._gather(plan_numpy, stripped)))
            return self._gather(plan_numpy, key)
        try:
            sels, scalar = normalize_index(key, self._shape)
        except (IndexError, ValueError):
            newaxis = split_newaxis(key, self._shape)
            if newaxis is not None:  # a[None], a[..., None]: read without, add the axes
                stripped, with_axes, _ = newaxis
                return np.reshape(self[stripped], with_axes)
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
        if start & _OP_OPEN:
            return None  # mid-operation: the general path waits for it (a snapshot)
        chunk = views((i // c0, 0) if tail == (0,) else (i // c0, *tail))
        if chunk is None:
            return np.full(self._shape[1:], self._fill, self._dtype)
        if type(chunk) is not np.ndarray:
            return None
        row = chunk[i % c0][trim].copy() if trim else chunk[i % c0].copy()
        return row if epoch() == start else None

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
