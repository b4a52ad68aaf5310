"""Chunked N-d arrays on a storage backend: the Zarr v3 layout of ExZarr's ETS backend.

An :class:`Array` is a thin handle: a :class:`~sharedzarr.storage.base.Backend` (a shared-memory
table for ``storage="shm"``) plus the parsed ``zarr.json`` and the per-array constants derived
from it (chunk dtype, chunk grid, codec pipeline, fill chunk).  Chunks are stored whole, C-order,
little-endian, edge chunks padded with the fill value; chunks never written read as the fill
value and are not stored.

This module is the facade: the :class:`Array` class with its properties and lifecycle, and
:func:`create` and :func:`open`.  What an array does lives in :mod:`sharedzarr._array`, one
concern per module: state and metadata coherence (``_base``), advanced-index reads
(``_gather``), slice reads (``_read``), slice writes and transactions (``_write``), chunk-level
I/O (``_chunks``), resize, append and attributes (``_shape``).
"""

from __future__ import annotations

import json
import math
import sys
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from . import storage as _storage
from ._array._attributes import Attributes
from ._array._shape import ShapeMixin
from ._dtypes import dtype_name, encode_fill_value
from ._metadata import ArrayMetadata
from .storage.base import MODES, Backend

__all__ = ["Array", "Attributes", "create", "open"]

_ARRAY_TABLE_TYPES = ("set", "ordered_set")


class Array(ShapeMixin):
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
            If this process may not delete it, or this handle was opened with ``mode='r'``.
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
