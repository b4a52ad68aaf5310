"""numpy- and zarr-style constructors: ``zeros``, ``ones``, ``empty``, ``full``, ``array`` and
their ``*_like`` forms.

Each is :func:`sharedzarr.create` with the fill value (or the data) filled in, and takes every
option of ``create`` as a keyword (``table_name=``, ``storage=``, ``compressor=``,
``permissions=``, ...).  ``chunks`` defaults to ``"auto"`` everywhere (see
:func:`sharedzarr._metadata.auto_chunks`).

``zeros``/``ones``/``full``/``empty`` write nothing: chunks never written read as the fill
value, so a terabyte of zeros costs one ``zarr.json``.  ``array`` writes the data's chunks.

``sharedzarr.array`` is the function :func:`array`, as in numpy and zarr; the module
``sharedzarr/array.py`` stays importable (``from sharedzarr.array import Array``) because
Python finds an imported submodule in ``sys.modules``, not as the package's attribute (the
package rebinds the attribute to the function after importing the module).  Only
``import sharedzarr.array as m`` gives the function, as it reads the attribute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .array import Array, create

__all__ = [
    "array",
    "empty",
    "empty_like",
    "full",
    "full_like",
    "ones",
    "ones_like",
    "zeros",
    "zeros_like",
]

Shape = Sequence[int] | int


def _scalar(kind: str, dtype: Any) -> Any:
    """numpy's zero or one of ``dtype`` as a 0-d scalar (np.zeros/np.ones semantics)."""
    dt = np.dtype(dtype)
    return (np.zeros if kind == "zeros" else np.ones)((), dt)[()]


def zeros(shape: Shape, dtype: Any = "float64", *, chunks: Any = "auto", **kwargs: Any) -> Array:
    """Create an array of zeros (numpy's :func:`numpy.zeros`, zarr's ``zarr.zeros``).

    Nothing is written: zero is the fill value, which chunks never written read as.

    Parameters
    ----------
    shape : int or sequence of int
    dtype : dtype-like
        Any dtype :func:`sharedzarr.create` takes; default float64.
    chunks : sequence of int, int or "auto"
        Default ``"auto"``.
    **kwargs
        Any other option of :func:`sharedzarr.create` (``table_name``, ``storage``,
        ``compressor``, ``permissions``, ...).

    Returns
    -------
    Array

    Examples
    --------
    >>> a = sz.zeros((1000, 64), "float32", table_name="batch")  # doctest: +SKIP
    """
    return create(shape, chunks, dtype, fill_value=_scalar("zeros", dtype), **kwargs)


def ones(shape: Shape, dtype: Any = "float64", *, chunks: Any = "auto", **kwargs: Any) -> Array:
    """Create an array of ones (numpy's :func:`numpy.ones`); nothing is written.

    Parameters
    ----------
    shape : int or sequence of int
    dtype : dtype-like
        Default float64.  "One" is numpy's: ``np.ones((), dtype)`` (``True``, ``b"1"``,
        one time unit after the epoch, ...).
    chunks : sequence of int, int or "auto"
    **kwargs
        Any other option of :func:`sharedzarr.create`.

    Returns
    -------
    Array
    """
    return create(shape, chunks, dtype, fill_value=_scalar("ones", dtype), **kwargs)


def empty(shape: Shape, dtype: Any = "float64", *, chunks: Any = "auto", **kwargs: Any) -> Array:
    """Create an array without choosing its values (numpy's :func:`numpy.empty`).

    Its elements read as zarr-python's default fill value for the dtype (zero; NaT for
    datetimes and timedeltas) until written; nothing is written.

    Parameters
    ----------
    shape : int or sequence of int
    dtype : dtype-like
        Default float64.
    chunks : sequence of int, int or "auto"
    **kwargs
        Any other option of :func:`sharedzarr.create`.

    Returns
    -------
    Array
    """
    return create(shape, chunks, dtype, fill_value=None, **kwargs)


def full(
    shape: Shape,
    fill_value: Any,
    dtype: Any = None,
    *,
    chunks: Any = "auto",
    **kwargs: Any,
) -> Array:
    """Create an array filled with ``fill_value`` (numpy's :func:`numpy.full`).

    Nothing is written: ``fill_value`` becomes the array's fill value.

    Parameters
    ----------
    shape : int or sequence of int
    fill_value : scalar
    dtype : dtype-like, optional
        Default: numpy's dtype of ``fill_value`` (``np.array(fill_value).dtype``).  When
        given, ``fill_value`` is converted to it as numpy does (``2.7`` -> ``2`` for int).
    chunks : sequence of int, int or "auto"
    **kwargs
        Any other option of :func:`sharedzarr.create`.

    Returns
    -------
    Array
    """
    if dtype is None:
        dtype = np.asarray(fill_value).dtype
    else:
        try:  # numpy's conversion (2.7 -> 2 for an int dtype); create() reports failures
            fill_value = np.array(fill_value, dtype=dtype)[()]
        except (TypeError, ValueError, OverflowError):
            pass
    return create(shape, chunks, dtype, fill_value=fill_value, **kwargs)


def array(data: Any, dtype: Any = None, *, chunks: Any = "auto", **kwargs: Any) -> Array:
    """Create an array holding a copy of ``data`` (numpy's :func:`numpy.array`, zarr's
    ``zarr.array``).

    Parameters
    ----------
    data : array_like
        Anything :func:`numpy.asarray` takes: a numpy array, nested lists, a scalar (a 0-d
        array), a :class:`sharedzarr.Array` or a ``zarr.Array``.
    dtype : dtype-like, optional
        Default the data's dtype.
    chunks : sequence of int, int or "auto"
        Default ``"auto"``; for an ``auto`` copy of an array that has ``chunks`` (a
        sharedzarr or zarr array) pass ``chunks=data.chunks`` to keep them.
    **kwargs
        Any other option of :func:`sharedzarr.create` (``fill_value`` defaults to 0).

    Returns
    -------
    Array

    Raises
    ------
    TypeError
        For data whose dtype is not supported (object arrays, variable-length strings).

    Examples
    --------
    >>> a = sz.array(np.arange(12).reshape(3, 4), table_name="grid")  # doctest: +SKIP
    >>> a[1]                                                         # doctest: +SKIP
    array([4, 5, 6, 7])
    """
    arr = np.asarray(data) if dtype is None else np.asarray(data, dtype=dtype)
    out = create(arr.shape, chunks, arr.dtype, **kwargs)
    try:
        out.set_slice(arr)
    except BaseException:
        try:
            out.delete()
        except Exception:  # noqa: BLE001 - the original error matters more
            out.close()
        raise
    return out


def _like(a: Any, kwargs: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """The shape, dtype and create options of an array like ``a``, overridden by ``kwargs``."""
    shape = kwargs.pop("shape", None)
    dtype = kwargs.pop("dtype", None)
    if shape is None or dtype is None:
        src = a if hasattr(a, "shape") and hasattr(a, "dtype") else np.asarray(a)
        shape = src.shape if shape is None else shape
        dtype = src.dtype if dtype is None else dtype
    if "chunks" not in kwargs:
        chunks = getattr(a, "chunks", None)
        ndim = 1 if isinstance(shape, int) else len(tuple(shape))
        if (
            isinstance(chunks, tuple)
            and all(isinstance(c, int) for c in chunks)
            and len(chunks) == ndim
        ):
            kwargs["chunks"] = chunks
    if isinstance(a, Array):
        codecs = a.compressor
        if codecs and codecs[0]["name"] != "sharding_indexed":  # create() makes no shards
            kwargs.setdefault("compressor", codecs)
        if a.dimension_names is not None:
            kwargs.setdefault("dimension_names", a.dimension_names)
    return shape, dtype, kwargs


def zeros_like(a: Any, **kwargs: Any) -> Array:
    """Create an array of zeros shaped like ``a`` (numpy's :func:`numpy.zeros_like`).

    Parameters
    ----------
    a : array_like
        A numpy array, :class:`sharedzarr.Array`, ``zarr.Array`` or anything
        :func:`numpy.asarray` takes.  Its shape and dtype are used, and its chunk shape when
        it has one (a sharedzarr or zarr array); a :class:`sharedzarr.Array` also passes on
        its compressor and dimension names.
    **kwargs
        ``shape``, ``dtype``, ``chunks`` or any other option of :func:`sharedzarr.create`,
        overriding what ``a`` gives.

    Returns
    -------
    Array
    """
    shape, dtype, kw = _like(a, kwargs)
    return zeros(shape, dtype, **kw)


def ones_like(a: Any, **kwargs: Any) -> Array:
    """Create an array of ones shaped like ``a`` (numpy's :func:`numpy.ones_like`).

    Parameters
    ----------
    a : array_like
        See :func:`zeros_like`.
    **kwargs
        See :func:`zeros_like`.

    Returns
    -------
    Array
    """
    shape, dtype, kw = _like(a, kwargs)
    return ones(shape, dtype, **kw)


def empty_like(a: Any, **kwargs: Any) -> Array:
    """Create an array shaped like ``a`` without choosing its values (see :func:`empty`).

    Parameters
    ----------
    a : array_like
        See :func:`zeros_like`.
    **kwargs
        See :func:`zeros_like`.

    Returns
    -------
    Array
    """
    shape, dtype, kw = _like(a, kwargs)
    return empty(shape, dtype, **kw)


def full_like(a: Any, fill_value: Any, **kwargs: Any) -> Array:
    """Create an array shaped like ``a`` filled with ``fill_value`` (:func:`numpy.full_like`).

    Parameters
    ----------
    a : array_like
        See :func:`zeros_like`.
    fill_value : scalar
        Converted to ``a``'s dtype (or ``dtype=``'s) as numpy does.
    **kwargs
        See :func:`zeros_like`.

    Returns
    -------
    Array
    """
    shape, dtype, kw = _like(a, kwargs)
    return full(shape, fill_value, dtype, **kw)
