"""Advanced (fancy) selections on a regular chunk grid: pure numpy, no I/O.

Basic indexing (ints, slices, ``...``) stays in :mod:`sharedzarr._chunking`.  This module
turns every other selection into one normal form, a :class:`PointSelection`:

- some dimensions (``pdims``) are addressed by coordinate arrays, one flat ``intp`` array per
  dimension, all of the same length ``N`` (the *points*), already wrapped and bounds-checked;
- the other dimensions (``sdims``) by a :class:`~sharedzarr._chunking.DimSelection` each (a
  slice, or an integer that drops the axis).

The data are moved through a *work* layout of shape ``(N, *counts of the sdims)``: point ``k``
of the selection is row ``k`` of the work array.  :func:`work_view` maps the numpy-shaped result
(or a value to write) onto that layout, a view whenever numpy's result puts the points' axes
in one block (every ``a[idx]``, ``a[idx, 2:30:3]``, ``a[..., idx]``, vindex and masks).

Three front ends build the normal form, each with the semantics of its model:

:func:`plan_numpy`
    numpy's advanced indexing: integer arrays/lists and boolean masks mixed with slices,
    ints and ``...``; the index arrays broadcast together; their axes replace the indexed
    dimensions when those are adjacent, else they come first (numpy's rule: an int next to
    an array counts as an array, so ``a[0, :, idx]`` puts the points first).
:func:`plan_orthogonal`
    zarr's ``oindex``: each 1-d integer or boolean array selects along its own axis.
:func:`plan_vectorized`
    zarr's ``vindex``: one integer (array) per dimension, broadcast together, or one boolean
    mask of the array's shape.

:func:`plan_chunks` then groups the points by chunk with one stable ``argsort``: the points of
one chunk are a contiguous run ``[k0, k1)`` of the sorted order, so each touched chunk is read
(or written) with one numpy gather (scatter) of its rows, whatever ``N`` is, and the runs are
put back in the caller's order with one more numpy operation.  Duplicate points stay in their
original order inside a run, so on writes the last duplicate wins, as numpy's assignment does.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from ._chunking import DimSelection, _dim_pieces

__all__ = [
    "ChunkPlan",
    "NewAxes",
    "ChunkRun",
    "PointSelection",
    "from_work",
    "is_advanced",
    "iter_chunk_runs",
    "plan_chunks",
    "plan_numpy",
    "plan_orthogonal",
    "plan_vectorized",
    "points_first",
    "split_advanced_newaxis",
    "split_fields",
    "split_newaxis",
    "work_view",
]

_INT_TYPES = (int, np.integer)


class PointSelection(NamedTuple):
    """A selection in normal form (see the module docstring).

    Attributes
    ----------
    pdims : tuple of int
        The dimensions addressed by coordinates, ascending.
    coords : tuple of numpy.ndarray
        One flat ``intp`` array per ``pdims`` entry, all of length ``npoints``, each in
        ``0 <= c < shape[d]``.
    bshape : tuple of int
        The shape the points take in the result (``prod(bshape) == npoints``).
    sdims : tuple of int
        The other dimensions, ascending.
    ssels : tuple of DimSelection
        One per ``sdims`` entry.
    order : tuple of int
        The result's axes before integer-dropped ones are removed, as work-axis numbers:
        ``0 .. len(bshape)-1`` are the points' axes, ``len(bshape) + j`` is ``sdims[j]``.
    result_shape : tuple of int
        The shape numpy (or zarr) returns.
    """

    pdims: tuple[int, ...]
    coords: tuple[np.ndarray, ...]
    bshape: tuple[int, ...]
    sdims: tuple[int, ...]
    ssels: tuple[DimSelection, ...]
    order: tuple[int, ...]
    result_shape: tuple[int, ...]

    @property
    def npoints(self) -> int:
        """The number of points (rows of the work layout)."""
        return len(self.coords[0]) if self.coords else 0

    @property
    def work_shape(self) -> tuple[int, ...]:
        """``(npoints, *counts of the sdims)``."""
        return (self.npoints, *(s.count for s in self.ssels))


def split_fields(key: Any, dtype: np.dtype) -> tuple[Any, str | list[str]] | None:
    """A key that names fields of a structured dtype (``a["x"]``, ``a[["x", "y"]]``,
    ``a["x", 2:5]``), as ``(the key without them, the field or fields)``; None when it names
    none.  Names are checked against ``dtype``: an ``IndexError`` names the fields there
    are, or says the dtype has none.
    """
    if type(key) is str or (type(key) is list and key and all(type(k) is str for k in key)):
        names, rest = key, ()
    elif type(key) is tuple and any(type(k) is str for k in key):
        found = [k for k in key if type(k) is str]
        names = found[0] if len(found) == 1 else found
        rest = tuple(k for k in key if type(k) is not str)
    else:
        return None
    if dtype.fields is None:
        raise IndexError(
            f"field {names!r} selected, but the array's dtype {dtype} has no fields; index "
            "with integers, slices, '...' or arrays"
        )
    for n in [names] if type(names) is str else names:
        if n not in dtype.fields:
            raise IndexError(f"no field {n!r}: the dtype's fields are {list(dtype.names or ())}")
    return (rest if rest else Ellipsis), names


def split_newaxis(
    key: Any, shape: Sequence[int]
) -> tuple[Any, tuple[int, ...], tuple[int, ...]] | None:
    """A basic-indexing ``key`` with ``None`` (``numpy.newaxis``) in it, as the key without
    them and the two result shapes: ``(key without None, shape with the new axes, shape
    without them)``; None when ``key`` holds no ``None``.

    The shapes come from numpy itself, indexing a view of ``shape`` that has no memory
    (zero strides), so every rule and every error (too many indices, out of bounds) is
    numpy's.  The new axes only add length-1 dimensions, in order, so a result of the
    key without them reshapes into the result with them.

    Parameters
    ----------
    key : object
        A ``__getitem__``/``__setitem__`` key of basic indexing.
    shape : sequence of int
        The indexed array's shape.

    Returns
    -------
    tuple or None
    """
    items = _items_with_none(key)
    if items is None:
        return None
    dummy = np.lib.stride_tricks.as_strided(
        np.zeros(1, np.uint8), shape=tuple(shape), strides=(0,) * len(shape)
    )
    stripped = tuple(k for k in items if k is not None)
    return stripped, dummy[items].shape, dummy[stripped].shape


class NewAxes:
    """Where the ``None`` items of an advanced-indexing key put their axes (see
    :func:`split_advanced_newaxis`): maps the result of the key without them to numpy's
    result of the key, and back.

    numpy puts the broadcast axes of the index arrays (and of the integers among them)
    where the first of them stands when they are adjacent in the key, else first; a
    ``None`` between two of them makes them not adjacent.  So each result axis is
    labelled by the key item it comes from, laid out by that rule with and without the
    ``None`` items, and the two layouts are matched up.
    """

    __slots__ = ("_with", "_without")

    def __init__(self, kinds: Sequence[str]) -> None:
        self._with = _axes_layout(kinds, True)
        self._without = _axes_layout(kinds, False)

    def _plan(self, ndim: int) -> tuple[list[int], tuple[int, ...]]:
        """For a result of the key without ``None`` of ``ndim`` axes: the permutation of
        its axes into numpy's order, and where the new axes go in the result."""
        b = ndim - len(self._without) + 1  # the broadcast axes (one label for them all)
        with_, without = _expand_block(self._with, b), _expand_block(self._without, b)
        at = {lbl: i for i, lbl in enumerate(without)}
        perm = [at[lbl] for lbl in with_ if lbl[0] != "N"]
        return perm, tuple(i for i, lbl in enumerate(with_) if lbl[0] == "N")

    def arrange(self, result: np.ndarray) -> np.ndarray:
        """numpy's result of the key, from the result of the key without ``None``."""
        perm, new = self._plan(result.ndim)
        return np.expand_dims(result.transpose(perm), new)

    def shape(self, result_shape: tuple[int, ...]) -> tuple[int, ...]:
        """numpy's result shape of the key, from the one of the key without ``None``."""
        perm, new = self._plan(len(result_shape))
        out = [result_shape[p] for p in perm]
        for i in new:
            out.insert(i, 1)
        return tuple(out)

    def unarrange(self, value: np.ndarray) -> np.ndarray:
        """A value of numpy's result shape of the key, laid out for the key without
        ``None`` (the inverse of :meth:`arrange`)."""
        perm, new = self._plan(value.ndim - sum(1 for lbl in self._with if lbl[0] == "N"))
        return np.squeeze(value, new).transpose(np.argsort(perm))


def _axes_layout(kinds: Sequence[str], with_none: bool) -> list[tuple[str, int]]:
    """The result axes of a key of item ``kinds`` ('A' advanced, 'S' slice, 'N' None; the
    'N' items left out unless ``with_none``), each labelled by its item's kind and place
    in ``kinds``; the broadcast block is the one label ``("B", -1)``."""
    items = [(k, i) for i, k in enumerate(kinds) if with_none or k != "N"]
    adv = [p for p, (k, _i) in enumerate(items) if k == "A"]
    rest = [lbl for lbl in items if lbl[0] != "A"]
    if adv == list(range(adv[0], adv[-1] + 1)):  # adjacent: the block where the first is
        first = items[adv[0]][1]
        return [
            *[lbl for lbl in rest if lbl[1] < first],
            ("B", -1),
            *[lbl for lbl in rest if lbl[1] > first],
        ]
    return [("B", -1), *rest]


def _expand_block(layout: list[tuple[str, int]], b: int) -> list[tuple[str, int]]:
    """``layout`` with its broadcast block as ``b`` labels ``("B", 0)`` ... ``("B", b-1)``."""
    out: list[tuple[str, int]] = []
    for lbl in layout:
        out.extend([("B", j) for j in range(b)] if lbl[0] == "B" else [lbl])
    return out


def split_advanced_newaxis(key: Any, shape: Sequence[int]) -> tuple[Any, NewAxes] | None:
    """An advanced-indexing ``key`` with ``None`` (``numpy.newaxis``) in it, as the key
    without them and the :class:`NewAxes` that turns that key's result into numpy's
    result of ``key``; None when ``key`` holds no ``None``, or an item numpy would refuse
    (the planner then raises numpy's error).

    Parameters
    ----------
    key : object
        A key with index arrays (or lists, or masks), maybe ``None`` items.
    shape : sequence of int
        What ``...`` stands for is counted from it.

    Returns
    -------
    (key without None, NewAxes) or None
    """
    items = _items_with_none(key)
    if items is None:
        return None
    kinds: list[str] = []
    consumed = 0
    for k in items:
        if k is None:
            kinds.append("N")
        elif k is Ellipsis:
            kinds.append("E")
        elif type(k) is slice:
            kinds.append("S")
            consumed += 1
        elif isinstance(k, (bool, np.bool_)):
            return None  # a scalar boolean: the planner's error
        else:
            arr = k if isinstance(k, np.ndarray) else np.asarray(k)
            kinds.append("A")
            consumed += arr.ndim if arr.dtype.kind == "b" else 1
    if kinds.count("E") > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")  # (numpy's)
    if "A" not in kinds:
        return None
    fill = ["S"] * max(len(shape) - consumed, 0)  # what ... (or the end) stands for
    if "E" in kinds:
        at = kinds.index("E")
        kinds[at : at + 1] = fill
    else:
        kinds.extend(fill)
    return tuple(k for k in items if k is not None), NewAxes(kinds)


def _items_with_none(key: Any) -> tuple[Any, ...] | None:
    """``key`` as a tuple of items when one of them is ``None``, else None."""
    items = key if type(key) is tuple else (key,)
    return items if any(k is None for k in items) else None


def is_advanced(key: Any) -> bool:
    """Return True if ``key`` needs advanced indexing (an array, list or bool anywhere).

    Parameters
    ----------
    key : object
        A ``__getitem__`` key.

    Returns
    -------
    bool
    """
    items = key if type(key) is tuple else (key,)
    for k in items:
        tk = type(k)
        if tk is int or tk is slice or k is Ellipsis:
            continue
        if isinstance(k, (bool, np.bool_, list)):
            return True
        if isinstance(k, np.ndarray):
            if k.ndim or k.dtype.kind == "b":
                return True
            continue
        if isinstance(k, np.integer) or k is None:
            continue
        if hasattr(k, "__array__") or hasattr(k, "__len__"):  # array-likes, tuples
            return True
    return False


# -- normalising one index --------------------------------------------------------------------


def _as_index_array(k: Any, axis: int | None) -> np.ndarray:
    """An integer or boolean index array; numpy's IndexError for anything else."""
    arr = k if isinstance(k, np.ndarray) else np.asarray(k)
    kind = arr.dtype.kind
    if kind in "iub":
        return arr
    if arr.size == 0 and kind in "fO":  # numpy accepts an empty list as an integer index
        return arr.astype(np.intp)
    raise IndexError(
        "arrays used as indices must be of integer (or boolean) type"
        + ("" if axis is None else f" (axis {axis} got dtype {arr.dtype})")
    )


def _wrap(arr: np.ndarray, axis: int, n: int) -> np.ndarray:
    """``arr`` as ``intp`` with negative entries counted from the end; numpy's bounds error."""
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) >= n:  # before intp wraps it
        raise IndexError(f"index {int(arr.max())} is out of bounds for axis {axis} with size {n}")
    out = arr.astype(np.intp, copy=False)
    if out.size:
        lo, hi = int(out.min()), int(out.max())
        if lo < -n or hi >= n:
            bad = hi if hi >= n else lo
            raise IndexError(f"index {bad} is out of bounds for axis {axis} with size {n}")
        if lo < 0:
            out = np.where(out < 0, out + n, out)
    return out


def _int_scalar(k: Any) -> int | None:
    """``k`` as an int when it is an integer scalar (not a bool), else None."""
    if isinstance(k, (bool, np.bool_)):
        return None
    if isinstance(k, _INT_TYPES) or (
        isinstance(k, np.ndarray) and k.ndim == 0 and k.dtype.kind in "iu"
    ):
        return operator.index(k)
    return None


def _slice_sel(k: slice, n: int) -> DimSelection:
    start, stop, step = k.indices(n)  # ValueError for a zero step, as numpy
    count = len(range(start, stop, step))
    return DimSelection(start if count else 0, step, count)


def _int_sel(i: int, axis: int, n: int) -> DimSelection:
    if not -n <= i < n:
        raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
    return DimSelection(i % n, 1, 1, dropped=True)


def _expand(items: tuple[Any, ...], shape: tuple[int, ...], ndim_of: Any) -> list[Any]:
    """Replace ``...`` by full slices; numpy's errors for too many indices."""
    n_ell = sum(1 for k in items if k is Ellipsis)
    if n_ell > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = sum(ndim_of(k) for k in items if k is not Ellipsis)
    ndim = len(shape)
    if used > ndim:
        raise IndexError(
            f"too many indices for array: array is {ndim}-dimensional, but {used} were indexed"
        )
    out = []
    for k in items:
        if k is Ellipsis:
            out.extend([slice(None)] * (ndim - used))
        else:
            out.append(k)
    if not n_ell:
        out.extend([slice(None)] * (ndim - used))
    return out


def _check_mask(mask: np.ndarray, first_axis: int, shape: tuple[int, ...]) -> None:
    for j, m in enumerate(mask.shape):
        n = shape[first_axis + j]
        if m != n:
            raise IndexError(
                f"boolean index did not match indexed array along axis {first_axis + j}; "
                f"size of axis is {n} but size of corresponding boolean axis is {m}"
            )


def _broadcast(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    try:
        return np.broadcast_arrays(*arrays)
    except ValueError:
        shapes = " ".join(str(a.shape) for a in arrays)
        raise IndexError(
            f"shape mismatch: indexing arrays could not be broadcast together with shapes {shapes}"
        ) from None


def _finish(
    pdims: list[int],
    arrays: list[np.ndarray],
    sdims: list[int],
    ssels: list[DimSelection],
    order: list[int],
    bshape: tuple[int, ...],
) -> PointSelection:
    nb = len(bshape)
    coords = tuple(
        a if a.ndim == 1 and a.dtype == np.intp else np.asarray(a, np.intp).reshape(-1)
        for a in arrays
    )
    full = [*bshape, *(s.count for s in ssels)]
    dropped = {nb + j for j, s in enumerate(ssels) if s.dropped}
    result = tuple(full[a] for a in order if a not in dropped)
    return PointSelection(
        tuple(pdims), coords, bshape, tuple(sdims), tuple(ssels), tuple(order), result
    )


# -- the three front ends -----------------------------------------------------------------------


def plan_numpy(key: Any, shape: tuple[int, ...]) -> PointSelection:
    """Normalise a numpy advanced index (see the module docstring).

    Parameters
    ----------
    key : object
        The ``__getitem__`` key; it holds at least one array, list or boolean.
    shape : tuple of int
        The array shape.

    Returns
    -------
    PointSelection

    Raises
    ------
    IndexError
        As numpy: out of bounds (naming the axis and its size), too many indices, a mask of
        the wrong shape, arrays that do not broadcast, non-integer arrays; ``None`` (the
        caller takes it out first: :func:`split_advanced_newaxis`).
    ValueError
        For a slice step of zero.
    """
    items = key if type(key) is tuple else (key,)
    conv: list[Any] = []
    for k in items:
        if k is None:
            raise IndexError(
                "None (numpy.newaxis) is not supported here; index first, then add the "
                "axis to the numpy result"
            )
        if k is Ellipsis or type(k) is slice or _int_scalar(k) is not None:
            conv.append(k)
        elif isinstance(k, (bool, np.bool_)) or (
            isinstance(k, np.ndarray) and k.ndim == 0 and k.dtype.kind == "b"
        ):
            raise IndexError(
                "a scalar boolean index is not supported; use a boolean mask array instead"
            )
        else:
            conv.append(_as_index_array(k, None))

    def ndim_of(k: Any) -> int:
        return k.ndim if isinstance(k, np.ndarray) and k.dtype.kind == "b" else 1

    expanded = _expand(tuple(conv), shape, ndim_of)
    # dims in order: ("s", axis, DimSelection) or ("p", axis, index array)
    adv_axes: list[int] = []
    adv_arrays: list[np.ndarray] = []
    sdims: list[int] = []
    ssels: list[DimSelection] = []
    axis = 0
    for k in expanded:
        if type(k) is slice:
            sdims.append(axis)
            ssels.append(_slice_sel(k, shape[axis]))
            axis += 1
        elif isinstance(k, np.ndarray) and k.dtype.kind == "b":
            _check_mask(k, axis, shape)
            for j, nz in enumerate(np.nonzero(k)):
                adv_axes.append(axis + j)
                adv_arrays.append(nz)
            axis += k.ndim
        elif isinstance(k, np.ndarray) and k.ndim:
            adv_axes.append(axis)
            adv_arrays.append(_wrap(k, axis, shape[axis]))
            axis += 1
        else:  # an integer: an advanced index when arrays are present (numpy's rule)
            i = _int_scalar(k)
            assert i is not None
            _int_sel(i, axis, shape[axis])
            adv_axes.append(axis)
            adv_arrays.append(np.asarray(i % shape[axis], dtype=np.intp))
            axis += 1
    arrays = adv_arrays if len(adv_arrays) == 1 else _broadcast(adv_arrays)
    bshape = arrays[0].shape
    nb = len(bshape)
    s_axes = [nb + j for j in range(len(sdims))]
    adjacent = adv_axes == list(range(adv_axes[0], adv_axes[-1] + 1))
    if adjacent:
        before = sum(1 for d in sdims if d < adv_axes[0])
        order = s_axes[:before] + list(range(nb)) + s_axes[before:]
    else:
        order = list(range(nb)) + s_axes
    return _finish(adv_axes, list(arrays), sdims, ssels, order, bshape)


def plan_orthogonal(key: Any, shape: tuple[int, ...]) -> PointSelection | None:
    """Normalise a zarr orthogonal selection (``a.oindex[key]``).

    Each dimension takes an int, a slice, a 1-d integer array (list) or a 1-d boolean mask;
    ``...`` fills the rest with full slices.  The arrays select independently along their
    own axes; ints drop their axis.

    Parameters
    ----------
    key : object
    shape : tuple of int

    Returns
    -------
    PointSelection or None
        None when the key holds no array: it is then a basic index with the same meaning.

    Raises
    ------
    IndexError
        For an out-of-bounds index, a multi-dimensional array, a mask of the wrong length or
        an unsupported item.
    """
    items = key if type(key) is tuple else (key,)
    expanded = _expand(items, shape, lambda k: 1)
    pdims: list[int] = []
    parrays: list[np.ndarray] = []
    sdims: list[int] = []
    ssels: list[DimSelection] = []
    for axis, (k, n) in enumerate(zip(expanded, shape, strict=True)):
        if type(k) is slice:
            sdims.append(axis)
            ssels.append(_slice_sel(k, n))
            continue
        i = _int_scalar(k)
        if i is not None:
            sdims.append(axis)
            ssels.append(_int_sel(i, axis, n))
            continue
        if k is None or isinstance(k, (bool, np.bool_, dict, str)):
            raise IndexError(
                "unsupported selection item for orthogonal indexing; expected integer, slice, "
                f"integer array or Boolean array, got {type(k)!r}"
            )
        arr = _as_index_array(k, axis)
        if arr.ndim != 1:
            kind = "Boolean" if arr.dtype.kind == "b" else "integer"
            raise IndexError(
                f"{kind} arrays in an orthogonal selection must be 1-dimensional only "
                f"(axis {axis} got shape {arr.shape})"
            )
        if arr.dtype.kind == "b":
            _check_mask(arr, axis, shape)
            arr = np.flatnonzero(arr)
        else:
            arr = _wrap(arr, axis, n)
        pdims.append(axis)
        parrays.append(arr)
    if not pdims:  # slices and ints only: numpy's basic indexing means the same
        return None
    bshape = tuple(len(a) for a in parrays)
    mesh = np.meshgrid(*parrays, indexing="ij", copy=False) if len(parrays) > 1 else parrays
    order = []
    p = s = 0
    nb = len(bshape)
    for axis in range(len(shape)):
        if p < len(pdims) and pdims[p] == axis:
            order.append(p)
            p += 1
        else:
            order.append(nb + s)
            s += 1
    return _finish(pdims, list(mesh), sdims, ssels, order, bshape)


def plan_vectorized(key: Any, shape: tuple[int, ...]) -> PointSelection:
    """Normalise a zarr vectorised selection (``a.vindex[key]``).

    Either one integer or integer array per dimension, broadcast together (ints count as
    arrays of one element, as in zarr), or one boolean mask of the array's shape.

    Parameters
    ----------
    key : object
    shape : tuple of int

    Returns
    -------
    PointSelection

    Raises
    ------
    IndexError
        For any other selection, an out-of-bounds index or arrays that do not broadcast.
    """
    items = key if type(key) is tuple else (key,)
    arrs: list[np.ndarray] = []
    for axis, k in enumerate(items):
        i = _int_scalar(k)
        if i is not None:
            arrs.append(np.asarray([i]))
        elif isinstance(k, (list, np.ndarray)) or hasattr(k, "__array__"):
            arrs.append(_as_index_array(k, axis))
        else:
            arrs = []
            break
    if len(arrs) == 1 and arrs[0].dtype.kind == "b" and arrs[0].shape == shape:
        coords = list(np.nonzero(arrs[0]))
        n = len(coords[0]) if coords else 0
        return _finish(list(range(len(shape))), coords, [], [], [0], (n,))
    if len(arrs) != len(shape) or not shape or any(a.dtype.kind == "b" for a in arrs):
        raise IndexError(
            "unsupported selection for vectorized indexing (vindex): give one integer array "
            f"per dimension ({len(shape)}), broadcastable together, or one Boolean mask of the "
            f"array's shape {shape}; got {key!r}"
        )
    wrapped = [_wrap(a, axis, n) for axis, (a, n) in enumerate(zip(arrs, shape, strict=True))]
    arrays = _broadcast(wrapped)
    bshape = arrays[0].shape
    return _finish(list(range(len(shape))), list(arrays), [], [], list(range(len(bshape))), bshape)


# -- the result <-> work layout -----------------------------------------------------------------


def work_view(sel: PointSelection, result: np.ndarray) -> tuple[np.ndarray, bool]:
    """Map a result-shaped array onto the work layout ``(npoints, *sdim counts)``.

    Parameters
    ----------
    sel : PointSelection
    result : numpy.ndarray
        Of shape ``sel.result_shape``.

    Returns
    -------
    work : numpy.ndarray
        Of shape ``sel.work_shape``.
    is_view : bool
        True when ``work`` is a view of ``result`` (writing ``work`` fills ``result``); False
        when the points' axes are interleaved with slice axes (several ``oindex`` arrays), in
        which case ``work`` is a copy and :func:`from_work` puts it back.
    """
    nb = len(sel.bshape)
    if sel.order == tuple(range(len(sel.order))):  # points first, no axis moved
        return result.reshape(sel.work_shape), True
    full = [*sel.bshape, *(s.count for s in sel.ssels)]
    expanded = result.reshape([full[a] for a in sel.order])
    inverse = [0] * len(sel.order)  # work axis -> its position in the result
    for pos, axis in enumerate(sel.order):
        inverse[axis] = pos
    moved = expanded.transpose(inverse)
    is_view = inverse[:nb] == list(range(inverse[0], inverse[0] + nb)) if nb else True
    return moved.reshape(sel.work_shape), is_view


def from_work(sel: PointSelection, work: np.ndarray) -> np.ndarray:
    """The result-shaped array of a work-layout array (inverse of :func:`work_view`).

    Parameters
    ----------
    sel : PointSelection
    work : numpy.ndarray
        Of shape ``sel.work_shape``.

    Returns
    -------
    numpy.ndarray
        Of shape ``sel.result_shape`` (a view of ``work`` when the axes need no reordering).
    """
    full = work.reshape([*sel.bshape, *(s.count for s in sel.ssels)])
    if list(sel.order) != sorted(sel.order):
        full = full.transpose(sel.order)
    return full.reshape(sel.result_shape)


# -- grouping by chunk ----------------------------------------------------------------------------


class ChunkRun(NamedTuple):
    """The points of one chunk-column of ``pdims``: a contiguous run of the sorted order.

    Attributes
    ----------
    pidx : tuple of int
        The chunk coordinates along ``pdims``.
    k0, k1 : int
        The run ``[k0, k1)`` of the sorted points.
    """

    pidx: tuple[int, ...]
    k0: int
    k1: int


class ChunkPlan(NamedTuple):
    """How a :class:`PointSelection` meets the chunk grid (see :func:`plan_chunks`).

    Attributes
    ----------
    runs : list of ChunkRun
        In ascending chunk order.
    offsets : tuple of numpy.ndarray
        Per ``pdims`` entry, the sorted points' positions inside their chunk (a run's
        points are ``offsets[j][k0:k1]``).
    perm : numpy.ndarray or None
        ``sorted position -> original point``: ``work[perm] = sorted_work`` restores the
        caller's order; None when the points were already in chunk order.
    spieces : list of list of (int, slice, slice)
        Per ``sdims`` entry, ``(chunk, slice in chunk, slice in work)`` triples.
    """

    runs: list[ChunkRun]
    offsets: tuple[np.ndarray, ...]
    perm: np.ndarray | None
    spieces: list[list[tuple[int, slice, slice]]]


def plan_chunks(sel: PointSelection, chunks: Sequence[int]) -> ChunkPlan:
    """Group the points by chunk (one stable sort) and split the slices by chunk.

    Parameters
    ----------
    sel : PointSelection
    chunks : sequence of int
        The chunk shape.

    Returns
    -------
    ChunkPlan
    """
    spieces = [_dim_pieces(s, chunks[d]) for d, s in zip(sel.sdims, sel.ssels, strict=True)]
    n = sel.npoints
    if n == 0:
        return ChunkPlan([], (), None, spieces)
    cids = []
    offs = []
    for d, c in zip(sel.pdims, sel.coords, strict=True):
        q, r = np.divmod(c, chunks[d])
        cids.append(q)
        offs.append(r)
    if len(cids) == 1:
        key = cids[0]
        dims: tuple[int, ...] = ()
    else:  # one number per chunk of the pdims (C order of their chunk grid)
        dims = tuple(int(q.max()) + 1 for q in cids)
        key = np.ravel_multi_index(tuple(cids), dims)
    perm = None
    if n > 1 and not (key[1:] >= key[:-1]).all():
        perm = key.argsort(kind="stable")  # stable: duplicates keep their order
        key = key[perm]
        offs = [o[perm] for o in offs]
    bounds = [0, *[b + 1 for b in (key[1:] != key[:-1]).nonzero()[0].tolist()], n]
    heads = key[bounds[:-1]]
    if dims:
        pidx = list(zip(*(h.tolist() for h in np.unravel_index(heads, dims)), strict=True))
    else:
        pidx = [(h,) for h in heads.tolist()]
    runs = [
        ChunkRun(p, k0, k1) for p, (k0, k1) in zip(pidx, itertools.pairwise(bounds), strict=True)
    ]
    return ChunkPlan(runs, tuple(offs), perm, spieces)


def iter_chunk_runs(
    sel: PointSelection, plan: ChunkPlan
) -> Iterator[tuple[tuple[int, ...], tuple[Any, ...], tuple[Any, ...]]]:
    """Yield ``(chunk index, chunk selection, work selection)`` for every touched chunk.

    The chunk selection indexes a chunk transposed so that ``pdims`` come first (see
    :func:`points_first`); it gives ``(run length, *slice counts)`` elements, which go to the
    work selection of the *sorted* work layout.

    Parameters
    ----------
    sel : PointSelection
    plan : ChunkPlan

    Yields
    ------
    tuple
    """
    ndim = len(sel.pdims) + len(sel.sdims)
    combos = list(itertools.product(*plan.spieces))
    for run in plan.runs:
        k0, k1 = run.k0, run.k1
        rsl = slice(k0, k1)
        offsets = tuple(o[k0:k1] for o in plan.offsets)
        for combo in combos:
            idx = [0] * ndim
            for d, i in zip(sel.pdims, run.pidx, strict=True):
                idx[d] = i
            for d, piece in zip(sel.sdims, combo, strict=True):
                idx[d] = piece[0]
            yield (
                tuple(idx),
                (*offsets, *(p[1] for p in combo)),
                (rsl, *(p[2] for p in combo)),
            )


def points_first(sel: PointSelection, chunk: np.ndarray) -> np.ndarray:
    """A view of ``chunk`` with the ``pdims`` axes first, then the ``sdims`` (no copy).

    Parameters
    ----------
    sel : PointSelection
    chunk : numpy.ndarray

    Returns
    -------
    numpy.ndarray
    """
    axes = (*sel.pdims, *sel.sdims)
    if axes == tuple(range(chunk.ndim)):
        return chunk
    return chunk.transpose(axes)
