"""Shape and attribute changes: ``resize``, ``append`` and ``attrs``.

Each publishes the new ``zarr.json`` last, after the data it covers: a reader never sees a
shape whose data is not there yet, and a change stopped anywhere (an error,
``OutOfSpaceError``, SIGKILL) leaves the old array.
"""

from __future__ import annotations

import itertools
import json
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._chunking import DimSelection, chunk_grid_shape, chunk_valid_shape, normalize_shape
from .._metadata import _check_json, with_shape_json
from ..storage.base import Backend
from ._attributes import Attributes
from ._base import _byte_view, _is_fill_value
from ._chunks import ChunkMixin

__all__ = ["ShapeMixin"]


class ShapeMixin(ChunkMixin):
    """Resize, append and attributes of :class:`~sharedzarr.Array`."""

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
        op = self._write_op(timeout)
        shape = normalize_shape(new_shape, "new_shape")
        with op:
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
        op = self._write_op(timeout, data)
        with op:
            new_shape = self._append_locked(op.backend, op.data, axis)
        self._quiet_after(op.seq)  # (the metadata this handle holds is the one it wrote)
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
            self._write_locked(sels, arr, None)  # (an append is atomic as it is)
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

    def _update_attributes(self, change: Callable[[dict[str, Any]], None]) -> None:
        with self._write_op() as op:
            attrs = json.loads(json.dumps(self._meta.attributes))
            change(attrs)
            for k in attrs:
                if not isinstance(k, str):
                    raise TypeError(f"attribute names must be str, got {k!r}")
            _check_json(attrs, "attribute values")
            meta = self._meta.evolve(attributes=json.loads(json.dumps(attrs)))
            raw = meta.to_json()
            op.backend.write_metadata(raw)
            self._set_metadata(meta, raw)

    @property
    def attrs(self) -> Attributes:
        """User attributes, a dict persisted in ``zarr.json`` on every change."""
        if self._attrs is None:
            self._attrs = Attributes(self)
        return self._attrs
