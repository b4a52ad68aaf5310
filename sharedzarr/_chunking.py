"""Selections on a regular chunk grid: pure numpy/Python, no OS calls.

A selection is normalised once into one :class:`DimSelection` per array dimension
(``start``, ``step``, ``count`` and whether an integer index dropped the axis).
:func:`iter_chunk_selections` then turns it into the chunks it touches, yielding for each
``(chunk index, selection inside the chunk, selection inside the output)``.  The work per
dimension is done once (a short list of ``(chunk, chunk slice, out slice)`` triples per axis) and
the chunks are the Cartesian product of those lists, so the per-chunk cost is building two tuples.

Negative steps are handled here, not by the caller: the output slice of a reversed dimension has a
negative step, so ``out[out_sel] = chunk[chunk_sel]`` places the elements in the requested order.

The output of a selection is laid out in "full" form, one axis per array dimension, with length 1
for integer-indexed axes; the caller reshapes to the numpy result shape (a view, no copy).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DimSelection",
    "chunk_grid_shape",
    "chunk_valid_shape",
    "covers_chunk",
    "iter_chunk_indices",
    "iter_chunk_selections",
    "normalize_chunks",
    "normalize_chunk_index",
    "normalize_index",
    "normalize_shape",
    "normalize_start_stop",
    "selection_shape",
    "single_chunk",
]


class DimSelection(NamedTuple):
    """The elements selected along one dimension: ``start + k * step`` for ``k < count``.

    Attributes
    ----------
    start : int
        The first selected element (in selection order).
    step : int
        The distance between selected elements; negative for a reversed slice, never 0.
    count : int
        How many elements are selected (0 for an empty slice).
    dropped : bool
        True when an integer index selected the element, so the axis is absent from the
        numpy-shaped result.
    """

    start: int
    step: int
    count: int  # type: ignore[assignment]  # a field named like tuple.count, on purpose
    dropped: bool = False


def _as_int(value: Any, what: str) -> int:
    """Return ``value`` as a Python int, refusing bools, floats and other non-integers."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be an integer, got {value!r} ({type(value).__name__})")
    return operator.index(value)


def normalize_shape(shape: Any, what: str = "shape") -> tuple[int, ...]:
    """Return ``shape`` as a tuple of non-negative ints.

    Parameters
    ----------
    shape : int or sequence of int
        An array shape; a single int is a 1-d shape.
    what : str
        The argument name used in error messages.

    Returns
    -------
    tuple of int

    Raises
    ------
    TypeError
        If an entry is not an integer.
    ValueError
        If an entry is negative.
    """
    if hasattr(shape, "__index__") and not isinstance(shape, bool):
        shape = (shape,)
    try:
        items = tuple(shape)
    except TypeError:
        raise TypeError(
            f"{what} must be a tuple of integers, got {shape!r} ({type(shape).__name__})"
        ) from None
    out = tuple(_as_int(s, f"{what}[{i}]") for i, s in enumerate(items))
    for i, s in enumerate(out):
        if s < 0:
            raise ValueError(f"{what}[{i}] must be >= 0, got {s}")
    return out


def normalize_chunks(chunks: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Return ``chunks`` as a tuple of positive ints matching the rank of ``shape``.

    Parameters
    ----------
    chunks : int or sequence of int
        The chunk shape.  A single int applies to every dimension.
    shape : tuple of int
        The (normalised) array shape.

    Returns
    -------
    tuple of int

    Raises
    ------
    TypeError
        If an entry is not an integer.
    ValueError
        If the rank differs from ``shape`` or a chunk size is < 1.
    """
    if hasattr(chunks, "__index__") and not isinstance(chunks, bool):
        chunks = (chunks,) * len(shape)
    try:
        items = tuple(chunks)
    except TypeError:
        raise TypeError(
            f"chunks must be a tuple of integers, got {chunks!r} ({type(chunks).__name__})"
        ) from None
    out = tuple(_as_int(c, f"chunks[{i}]") for i, c in enumerate(items))
    if len(out) != len(shape):
        raise ValueError(
            f"chunks {out} has {len(out)} dimension(s) but shape {shape} has {len(shape)}; "
            "give one chunk size per dimension"
        )
    for i, c in enumerate(out):
        if c < 1:
            raise ValueError(
                f"chunks[{i}] must be >= 1, got {c} (a zero-length dimension still needs a "
                "chunk size of at least 1)"
            )
    return out


def chunk_grid_shape(shape: Sequence[int], chunks: Sequence[int]) -> tuple[int, ...]:
    """Return the number of chunks along each dimension (0 along a zero-length dimension).

    Parameters
    ----------
    shape, chunks : sequence of int
        The array shape and chunk shape.

    Returns
    -------
    tuple of int
    """
    return tuple(-(-s // c) for s, c in zip(shape, chunks, strict=True))


def chunk_valid_shape(
    idx: Sequence[int], shape: Sequence[int], chunks: Sequence[int]
) -> tuple[int, ...]:
    """Return the in-bounds part of chunk ``idx`` (smaller than ``chunks`` for edge chunks).

    Parameters
    ----------
    idx : sequence of int
        The chunk index.
    shape, chunks : sequence of int
        The array shape and chunk shape.

    Returns
    -------
    tuple of int
    """
    return tuple(max(0, min(c, s - i * c)) for i, s, c in zip(idx, shape, chunks, strict=True))


def iter_chunk_indices(grid: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Yield every chunk index of a grid in C order.

    Parameters
    ----------
    grid : sequence of int
        The number of chunks per dimension (:func:`chunk_grid_shape`).

    Yields
    ------
    tuple of int
    """
    return itertools.product(*(range(g) for g in grid))


def normalize_chunk_index(idx: Any, grid: Sequence[int]) -> tuple[int, ...]:
    """Validate a chunk index against the chunk grid.

    Parameters
    ----------
    idx : int or sequence of int
        The chunk index; a single int is accepted for 1-d arrays.
    grid : sequence of int
        The number of chunks per dimension.

    Returns
    -------
    tuple of int

    Raises
    ------
    TypeError
        If an entry is not an integer.
    IndexError
        If the rank is wrong or an entry is outside the grid.
    """
    if hasattr(idx, "__index__") and not isinstance(idx, bool):
        idx = (idx,)
    try:
        items = tuple(idx)
    except TypeError:
        raise TypeError(
            f"chunk index must be a tuple of integers, got {idx!r} ({type(idx).__name__})"
        ) from None
    out = tuple(_as_int(i, f"chunk index[{d}]") for d, i in enumerate(items))
    if len(out) != len(grid):
        raise IndexError(
            f"chunk index {out} has {len(out)} dimension(s) but the array has {len(grid)}"
        )
    for d, (i, g) in enumerate(zip(out, grid, strict=True)):
        if not 0 <= i < g:
            raise IndexError(
                f"chunk index {out} is outside the chunk grid {tuple(grid)} in dimension {d} "
                f"(valid: 0 <= index < {g})"
            )
    return out


def normalize_start_stop(start: Any, stop: Any, shape: tuple[int, ...]) -> tuple[DimSelection, ...]:
    """Normalise ExZarr-style ``start``/``stop`` bounds (stop exclusive) into selections.

    Parameters
    ----------
    start, stop : sequence of int or None
        The corner of the region and its exclusive end.  ``None`` means the origin and the
        array shape respectively.  Negative values are not allowed (use numpy indexing,
        ``a[-3:]``, for counting from the end).
    shape : tuple of int
        The array shape.

    Returns
    -------
    tuple of DimSelection

    Raises
    ------
    TypeError
        If an entry is not an integer.
    ValueError
        If the rank is wrong, a bound is outside ``0..shape`` or ``start > stop``.
    """
    ndim = len(shape)
    lo = (0,) * ndim if start is None else _bounds(start, "start", ndim)
    hi = shape if stop is None else _bounds(stop, "stop", ndim)
    for d in range(ndim):
        if not 0 <= lo[d] <= shape[d]:
            raise ValueError(
                f"start {lo} is out of bounds for shape {shape} in dimension {d} "
                f"(valid: 0 <= start <= {shape[d]})"
            )
        if not 0 <= hi[d] <= shape[d]:
            raise ValueError(
                f"stop {hi} is out of bounds for shape {shape} in dimension {d} "
                f"(valid: 0 <= stop <= {shape[d]}; stop is exclusive)"
            )
        if lo[d] > hi[d]:
            raise ValueError(f"start {lo} is greater than stop {hi} in dimension {d}")
    return tuple(DimSelection(lo[d], 1, hi[d] - lo[d]) for d in range(ndim))


def _bounds(value: Any, what: str, ndim: int) -> tuple[int, ...]:
    if type(value) is tuple and len(value) == ndim and all(type(v) is int for v in value):
        return value  # fast path: already a tuple of plain ints
    if hasattr(value, "__index__") and not isinstance(value, bool):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(
            f"{what} must be a tuple of integers, got {value!r} ({type(value).__name__})"
        ) from None
    out = tuple(_as_int(v, f"{what}[{i}]") for i, v in enumerate(items))
    if len(out) != ndim:
        raise ValueError(
            f"{what} {out} has {len(out)} dimension(s) but the array has {ndim}; "
            f"give one {what} per dimension"
        )
    return out


def normalize_index(key: Any, shape: tuple[int, ...]) -> tuple[tuple[DimSelection, ...], bool]:
    """Normalise a numpy basic index into one selection per dimension.

    Supports integers (negative counts from the end), slices with any step (including
    negative), ``Ellipsis`` and tuples of those.  Advanced indexing (integer or boolean arrays,
    ``None``/``np.newaxis``) is refused here: an ``Array`` takes those keys before it
    normalises, so the error for anything else lists every index an ``Array`` accepts.

    Parameters
    ----------
    key : int, slice, Ellipsis or tuple of those
        The index, as received by ``__getitem__``.
    shape : tuple of int
        The array shape.

    Returns
    -------
    selections : tuple of DimSelection
        One per dimension.
    scalar : bool
        True when numpy would return a scalar rather than an array (every dimension
        integer-indexed and no ``Ellipsis`` in the key).

    Raises
    ------
    IndexError
        For too many indices, an integer out of range, more than one ``Ellipsis`` or an
        unsupported index type.
    ValueError
        For a slice step of zero.
    """
    items = key if isinstance(key, tuple) else (key,)
    n_ellipsis = sum(1 for k in items if k is Ellipsis)
    if n_ellipsis > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    ndim = len(shape)
    n_real = len(items) - n_ellipsis
    if n_real > ndim:
        raise IndexError(
            f"too many indices for array: array is {ndim}-dimensional, but {n_real} were indexed"
        )
    if n_ellipsis:
        pos = next(i for i, k in enumerate(items) if k is Ellipsis)
        items = items[:pos] + (slice(None),) * (ndim - n_real) + items[pos + 1 :]
    else:
        items = items + (slice(None),) * (ndim - n_real)
    sels = []
    for d, (k, n) in enumerate(zip(items, shape, strict=True)):
        if isinstance(k, slice):
            start, stop, step = k.indices(n)  # raises ValueError for step 0
            count = len(range(start, stop, step))
            sels.append(DimSelection(start if count else 0, step, count))
        else:
            i = _int_index(k)
            if i is None:
                raise IndexError(
                    f"unsupported index {k!r} ({type(k).__name__}) for axis {d}: only "
                    "integers, slices, '...', None, and integer or boolean arrays (or lists) "
                    "are valid indices, as in numpy"
                )
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis {d} with size {n}")
            sels.append(DimSelection(i % n, 1, 1, dropped=True))
    return tuple(sels), n_ellipsis == 0 and all(s.dropped for s in sels)


def _int_index(k: Any) -> int | None:
    """Return ``k`` as an int if it is an integer index (not a bool or an array), else None."""
    if isinstance(k, (bool, np.bool_)) or (isinstance(k, np.ndarray) and k.ndim):
        return None
    if isinstance(k, np.ndarray) and k.dtype.kind not in "iu":
        return None
    try:
        return operator.index(k)
    except TypeError:
        return None


def selection_shape(sels: Sequence[DimSelection]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return the full and the numpy-shaped output shape of a selection.

    Parameters
    ----------
    sels : sequence of DimSelection

    Returns
    -------
    full : tuple of int
        One entry per array dimension (1 for integer-indexed ones).
    result : tuple of int
        The shape numpy would return (integer-indexed dimensions removed).
    """
    full = tuple(s.count for s in sels)
    result = tuple(s.count for s in sels if not s.dropped)
    return full, result


def _dim_pieces(sel: DimSelection, chunk: int) -> list[tuple[int, slice, slice]]:
    """Return ``(chunk number, slice in chunk, slice in output)`` for one dimension."""
    start, step, n, _ = sel
    if n == 0:
        return []
    if step == 1:  # the common case, without the general arithmetic
        first, last = start // chunk, (start + n - 1) // chunk
        if first == last:
            base = first * chunk
            return [(first, slice(start - base, start - base + n, 1), slice(0, n))]
        pieces = []
        for c in range(first, last + 1):
            base = c * chunk
            lo = max(start, base)
            hi = min(start + n, base + chunk)
            pieces.append((c, slice(lo - base, hi - base, 1), slice(lo - start, hi - start)))
        return pieces
    if step > 0:
        lo, astep = sel.start, step
    else:  # walk ascending from the last selected element; output runs backwards
        lo, astep = sel.start + (n - 1) * step, -step
    hi = lo + (n - 1) * astep  # last element, inclusive
    pieces = []
    for c in range(lo // chunk, hi // chunk + 1):
        base = c * chunk
        # j: position in the ascending walk; elements lo + j*astep inside [base, base+chunk)
        j0 = max(0, -(-(base - lo) // astep))
        j1 = min(n, -(-(base + chunk - lo) // astep))
        if j0 >= j1:
            continue
        first = lo + j0 * astep - base
        last = lo + (j1 - 1) * astep - base
        csl = slice(first, last + 1, astep)
        if step > 0:
            osl = slice(j0, j1)
        else:
            o_start = n - 1 - j0
            o_stop = n - 1 - j1
            osl = slice(o_start, o_stop if o_stop >= 0 else None, -1)
        pieces.append((c, csl, osl))
    return pieces


def iter_chunk_selections(
    sels: Sequence[DimSelection], chunks: Sequence[int]
) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...], tuple[slice, ...]]]:
    """Yield the chunks a selection touches, in C order of chunk index.

    Parameters
    ----------
    sels : sequence of DimSelection
        The normalised selection, one per dimension.
    chunks : sequence of int
        The chunk shape.

    Yields
    ------
    chunk_index : tuple of int
        The chunk's position in the grid.
    chunk_selection : tuple of slice
        Which elements of the (full, padded) chunk are selected.
    out_selection : tuple of slice
        Where they go in the full-form output (one axis per dimension).
    """
    per_dim = [_dim_pieces(s, c) for s, c in zip(sels, chunks, strict=True)]
    if all(len(p) == 1 for p in per_dim):  # one chunk (or rank 0): skip the product
        yield (
            tuple(p[0][0] for p in per_dim),
            tuple(p[0][1] for p in per_dim),
            tuple(p[0][2] for p in per_dim),
        )
        return
    for combo in itertools.product(*per_dim):
        idx, csel, osel = zip(*combo)  # noqa: B905 - every combo has exactly 3-tuples
        yield idx, csel, osel


def iter_chunk_pieces(
    sels: Sequence[DimSelection], chunks: Sequence[int], shape: Sequence[int]
) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...], tuple[slice, ...], bool]]:
    """:func:`iter_chunk_selections`, each chunk with whether the selection covers it
    whole (an in-bounds chunk of full size, every element selected): a write of such a
    chunk replaces it, with nothing to merge.  Decided once per dimension, not per chunk.

    Parameters
    ----------
    sels : sequence of DimSelection
        The normalised selection, one per dimension.
    chunks, shape : sequence of int
        The chunk shape and the array shape.

    Yields
    ------
    chunk_index, chunk_selection, out_selection
        As :func:`iter_chunk_selections`.
    whole : bool
        Whether ``chunk_selection`` is the whole chunk and the chunk is in bounds.
    """
    per_dim = []
    for sel, c, n in zip(sels, chunks, shape, strict=True):
        per_dim.append(
            [
                (
                    i,
                    csl,
                    osl,
                    (i + 1) * c <= n
                    and csl.start == 0
                    and csl.stop >= c
                    and (csl.step == 1 or c == 1),
                )
                for i, csl, osl in _dim_pieces(sel, c)
            ]
        )
    if not per_dim:  # rank 0: the one chunk, whole
        yield (), (), (), True
        return
    for combo in itertools.product(*per_dim):
        idx, csel, osel, whole = zip(*combo)  # noqa: B905 - every combo has exactly 4-tuples
        yield idx, csel, osel, all(whole)


def single_chunk(
    sels: Sequence[DimSelection], chunks: Sequence[int], shape: Sequence[int]
) -> tuple[int, ...] | None:
    """The index of the chunk when ``sels`` select exactly one whole in-bounds chunk, in
    order (step 1), else None: a write of it replaces the chunk, with nothing to merge.

    Parameters
    ----------
    sels : sequence of DimSelection
        A normalised selection (:func:`normalize_index`, :func:`normalize_start_stop`).
    chunks, shape : sequence of int
        The chunk shape and the array shape.

    Returns
    -------
    tuple of int or None
    """
    idx = []
    for s, c, n in zip(sels, chunks, shape, strict=True):
        start = s.start
        if s.step != 1 or s.count != c or start % c or start + c > n:
            return None
        idx.append(start // c)
    return tuple(idx)


def covers_chunk(csel: Sequence[slice], valid: Sequence[int]) -> bool:
    """Return True if ``csel`` selects every in-bounds element of a chunk.

    Parameters
    ----------
    csel : sequence of slice
        A chunk selection from :func:`iter_chunk_selections` (normalised slices).
    valid : sequence of int
        The chunk's in-bounds shape (:func:`chunk_valid_shape`).

    Returns
    -------
    bool
    """
    for s, v in zip(csel, valid, strict=True):
        if s.start != 0 or s.stop < v or (s.step != 1 and v > 1):
            return False
    return True
