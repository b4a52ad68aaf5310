"""Export a shared-memory array to any Zarr v3 store, and load one back.

:func:`export` copies an array to a directory or to any zarr-python store
(``FsspecStore`` for S3, GCS, Azure, HTTP...), :func:`load` copies any array
zarr-python can read into a new shared-memory array.  This is the way out when
the data outgrows one machine, and the way in for data that lives elsewhere.

How they stream
---------------
*Export copies the stored chunk bytes as they are.*  A sharedzarr array's
``zarr.json`` is a standard Zarr v3 document and its chunks are stored exactly
as Zarr v3 encodes them, so export writes each stored chunk's bytes to the
chunk key the document names (``c/i/j``), straight from a zero-copy view of
shared memory: nothing is decoded or re-encoded, nothing is copied in this
process.  At most ``concurrency`` writes are in flight (bounded memory; the
parallelism is what makes an object store fast).  Chunks never written are
not exported (they read as the fill value, as in any Zarr store).  The
``zarr.json`` is written last, so a reader never finds a half-exported array
under a complete-looking document.  ``compressor=`` re-encodes chunk by chunk
instead (e.g. raw in shared memory, zstd on S3).

*Load decodes with zarr-python.*  Any codec zarr-python can decode works
(sharding, transpose, blosc...).  The source is read one stored object (chunk,
or shard for sharded arrays) at a time, ``concurrency`` objects at a time,
and each is cut into sharedzarr chunks of the source's (inner) chunk shape.
When the store can list, only the objects that exist are read; chunks that
hold only the fill value are not stored.  If anything fails, the new table is
deleted.

Consistency
-----------
Export takes no lock by default: writers keep running, and a chunk written
during the export may or may not be in the copy (each chunk is whole: never
torn).  ``lock=True`` holds the table's writer lock for the whole export, for
a consistent snapshot (writers wait).  Without the lock, a changed write
counter at the end raises a ``RuntimeWarning``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import json
import math
import os
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ._chunking import chunk_grid_shape
from ._codecs import CodecPipeline, compressor_to_codecs
from .array import Array
from .array import create as _create
from .array import open as _open

__all__ = ["KEEP", "export", "load"]

KEEP = "keep"
"""``compressor=KEEP`` (the default of :func:`export`): keep the array's codecs."""


def _zarr() -> Any:
    try:
        import zarr
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "sharedzarr export/load need zarr-python 3: pip install 'sharedzarr[zarr]'"
        ) from e
    return zarr


def _as_store(target: Any, *, read_only: bool, storage_options: dict[str, Any] | None) -> Any:
    """A zarr store for a store object, a directory path, or a URL (``s3://...``)."""
    _zarr()
    from zarr.abc.store import Store
    from zarr.storage import FsspecStore, LocalStore

    if isinstance(target, Store):
        if storage_options:
            raise TypeError("storage_options only apply to a URL, not to a store object")
        if read_only and not target.read_only:
            try:
                return target.with_read_only(True)
            except NotImplementedError:
                return target
        return target
    if isinstance(target, (str, os.PathLike)):
        s = os.fspath(target)
        if "://" in s and not s.startswith("file://"):
            _require_fsspec(s)
            return FsspecStore.from_url(s, storage_options=storage_options, read_only=read_only)
        if storage_options:
            raise TypeError("storage_options only apply to a URL such as 's3://bucket/path'")
        return LocalStore(s.removeprefix("file://"), read_only=read_only)
    raise TypeError(
        f"expected a directory path, a URL or a zarr.abc.store.Store, got {type(target).__name__}"
    )


def _require_fsspec(url: str) -> None:
    """Raise an ImportError naming the extra to install when ``url`` needs a missing package."""
    scheme = url.split("://", 1)[0].lower()
    s3 = scheme in ("s3", "s3a")
    for module in ("fsspec", "s3fs") if s3 else ("fsspec",):
        try:
            importlib.import_module(module)
        except ImportError as e:
            also = "" if s3 else " plus the package of that filesystem (gcsfs, adlfs, ...)"
            raise ImportError(
                f"a {scheme}:// URL needs {module}, which is not installed: "
                f"pip install 'sharedzarr[s3]'{also}"
            ) from e


def _join(prefix: str, key: str) -> str:
    return f"{prefix}/{key}" if prefix else key


def _progress_bar(enabled: bool, total: int, desc: str) -> Any:
    """A tqdm bar on stderr, or None."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError as e:
        raise ImportError(
            "progress=True needs tqdm: pip install tqdm (or 'sharedzarr[cli]')"
        ) from e
    return tqdm(total=total, desc=desc, unit="chunk", file=sys.stderr, leave=False)


def _sync(coro: Any) -> Any:
    from zarr.core.sync import sync

    return sync(coro)


# ----------------------------------------------------------------------------- export


def export(
    source: Array | str,
    dest: Any,
    *,
    path: str = "",
    overwrite: bool = False,
    compressor: Any = KEEP,
    storage_options: dict[str, Any] | None = None,
    lock: bool = False,
    concurrency: int = 16,
    progress: bool = False,
) -> Any:
    """Write a shared-memory array as a standard Zarr v3 array to a directory or store.

    Parameters
    ----------
    source : Array or str
        A :class:`sharedzarr.Array` or the name of one (opened read-only).
    dest : str, os.PathLike or zarr.abc.store.Store
        A directory (created if needed), a URL such as ``"s3://bucket/prices.zarr"``
        (through fsspec; pass credentials in ``storage_options``), or any zarr store.
    path : str
        Where in ``dest`` to put the array (``""``: the root).
    overwrite : bool
        Replace whatever is under ``path`` (everything, for the root of a store).
    compressor : "keep", None, str or dict
        ``"keep"`` copies the stored chunk bytes as they are; anything
        :func:`sharedzarr.create` accepts as ``compressor`` re-encodes each chunk
        (``None``: raw).
    storage_options : dict, optional
        fsspec options for a URL ``dest`` (e.g. ``{"endpoint_url": ..., "key": ...}``).
    lock : bool
        Hold the table's writer lock for the whole export: a consistent snapshot.
    concurrency : int
        Chunk writes in flight at a time (memory stays bounded by this many chunks).
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    zarr.Array
        The exported array, opened read-only with zarr-python.

    Raises
    ------
    FileExistsError
        When ``dest`` already holds a node at ``path`` and ``overwrite`` is false.
    sharedzarr.errors.TableNotFoundError
        When no array has the name ``source``.

    Warns
    -----
    RuntimeWarning
        When the array was written during an export without ``lock``.

    Examples
    --------
    >>> sz.export("prices", "/data/prices.zarr")                       # doctest: +SKIP
    >>> sz.export("prices", "s3://bucket/prices.zarr", compressor="zstd",
    ...           storage_options={"endpoint_url": "http://127.0.0.1:9000"})  # doctest: +SKIP
    """
    zarr = _zarr()
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    store = _as_store(dest, read_only=False, storage_options=storage_options)
    prefix = path.strip("/")
    arr = _open(source, mode="r") if isinstance(source, str) else source
    try:
        if not isinstance(arr, Array):
            raise TypeError(f"source must be a sharedzarr.Array or a name, got {arr!r}")
        backend = arr.backend
        if lock:
            # writers wait: a lock without a write session, which read-only handles may hold
            table = getattr(backend, "table", None)
            ctx = table.writers_held() if table is not None else backend.writer()
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            arr.refresh()
            count0 = backend.write_count()
            _sync(_export_async(arr, store, prefix, overwrite, compressor, concurrency, progress))
            changed = backend.write_count() != count0
        if changed and not lock:
            warnings.warn(
                f"array {arr.name!r} was written during the export, so the copy may mix old "
                "and new chunks (each chunk is whole); pass lock=True for a consistent snapshot",
                RuntimeWarning,
                stacklevel=2,
            )
    finally:
        if isinstance(source, str):
            arr.close()
    return zarr.open_array(store=store, path=prefix, mode="r")


async def _export_async(
    arr: Array,
    store: Any,
    prefix: str,
    overwrite: bool,
    compressor: Any,
    concurrency: int,
    progress: bool,
) -> None:
    from zarr.core.buffer import default_buffer_prototype

    buffer = default_buffer_prototype().buffer
    meta = arr.metadata
    if compressor == KEEP:
        recode = None
        doc = meta.to_json()
    else:
        codecs = tuple(compressor_to_codecs(compressor, meta.dtype))
        new_meta = meta.evolve(codecs=codecs)
        recode = (CodecPipeline(meta.codecs), CodecPipeline(codecs))
        doc = new_meta.to_json()
    zarr_json = _join(prefix, "zarr.json")
    if await store.exists(zarr_json) or (
        prefix and store.supports_listing and not await store.is_empty(prefix)
    ):
        if not overwrite:
            where = f"path {prefix!r}" if prefix else "its root"
            raise FileExistsError(
                f"{store} already holds a Zarr node at {where}; pass overwrite=True to "
                "replace it, or choose another path"
            )
        await store.delete_dir(prefix)
    backend = arr.backend
    chunks = sorted(backend.list_chunks())
    bar = _progress_bar(progress, len(chunks), f"export {arr.name}")

    async def put(idx: tuple[int, ...]) -> None:
        # a pinned zero-copy view: a store may keep it (MemoryStore does), so its memory is
        # never reused under it
        data = backend.read_chunk(idx, copy=False)
        if data is None:  # deleted meanwhile: it reads as the fill value anyway
            return
        if recode is not None:
            dec, enc = recode
            data = enc.encode(dec.decode(data))
        await store.set(_join(prefix, meta.chunk_key(idx)), buffer.from_bytes(data))

    try:
        it = iter(chunks)
        while batch := list(itertools.islice(it, concurrency)):
            await asyncio.gather(*(put(tuple(i)) for i in batch))
            if bar is not None:
                bar.update(len(batch))
        await store.set(zarr_json, buffer.from_bytes(doc))
    finally:
        if bar is not None:
            bar.close()


# ----------------------------------------------------------------------------- load


def _storage_grid(zsrc: Any) -> tuple[tuple[int, ...], Callable[[tuple[int, ...]], str]]:
    """The shape of the source's stored objects (chunks or shards) and their key function."""
    meta = zsrc.metadata
    if getattr(meta, "zarr_format", 3) == 2:
        shape = tuple(meta.chunks)
    else:
        shape = tuple(meta.chunk_grid.chunk_shape)
    return shape, meta.encode_chunk_key


def _is_fill(block: np.ndarray, fill: Any) -> bool:
    """True when every element of ``block`` is the fill value (NaN matches NaN)."""
    if block.size == 0:
        return True
    nan_fill = block.dtype.kind in "fc" and bool(np.isnan(fill))
    first = block.flat[0]
    if not (np.isnan(first) if nan_fill else first == fill):
        return False  # the common case for data chunks: no full pass
    if nan_fill:
        if block.dtype.kind == "f":
            return bool(np.isnan(block).all())
        return bool(np.array_equal(block, np.broadcast_to(fill, block.shape), equal_nan=True))
    return bool((block == fill).all())


def load(
    src: Any,
    table_name: str | None = None,
    *,
    path: str = "",
    compressor: Any = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    concurrency: int = 8,
    progress: bool = False,
    **table_options: Any,
) -> Array:
    """Copy a Zarr array from a directory or store into a new shared-memory array.

    Parameters
    ----------
    src : str, os.PathLike or zarr.abc.store.Store
        A directory, a URL such as ``"s3://bucket/prices.zarr"``, or any zarr store.
        Any array zarr-python reads works: Zarr v3 (any codec, sharding included)
        or v2.
    table_name : str, optional
        The new array's name (what other processes open); default a generated one.
    path : str
        The array's path inside ``src`` (``""``: the root).
    compressor : None, str or dict
        How the shared-memory copy stores its chunks (as for :func:`sharedzarr.create`);
        the default ``None`` stores them raw, which readers view without copying.
    overwrite : bool
        Replace an existing table of that name.
    storage_options : dict, optional
        fsspec options for a URL ``src``.
    concurrency : int
        Stored objects (chunks or shards) read at a time.
    progress : bool
        Show a tqdm progress bar on stderr.
    **table_options
        ``access``, ``heir``, ``persistent``, ``named_table``, ``table_type``: as for
        :func:`sharedzarr.create`.

    Returns
    -------
    Array
        The new array, owned by this process (deleted when it exits unless
        ``persistent=True`` or an ``heir`` takes it over).

    Raises
    ------
    FileNotFoundError
        When ``src`` holds no array at ``path`` (zarr's ``ArrayNotFoundError``).
    TypeError
        For a data type sharedzarr does not store (variable-length strings, objects).
    sharedzarr.errors.TableExistsError
        When the name is taken and ``overwrite`` is false.

    Examples
    --------
    >>> a = sz.load("/data/prices.zarr", "prices")                     # doctest: +SKIP
    """
    zarr = _zarr()
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    store = _as_store(src, read_only=True, storage_options=storage_options)
    prefix = path.strip("/")
    zsrc = zarr.open_array(store=store, path=prefix, mode="r")
    where = f"the array at {prefix!r}" if prefix else "the root array"
    dtype = np.dtype(zsrc.dtype)
    if dtype.kind in "OT":  # numpy's object or StringDType: zarr's variable-length strings
        what = "variable-length strings" if dtype.kind == "T" else "Python objects"
        raise TypeError(
            f"cannot load {where} of {store}: it holds {what} ({zsrc.dtype}), and "
            "sharedzarr stores fixed-size elements; copy it with a fixed-length dtype "
            "instead, e.g. sz.array(np.asarray(z[...], dtype='U32'), table_name=...)"
        )
    dtype = dtype.newbyteorder("=")  # sharedzarr stores little-endian
    dims = getattr(zsrc.metadata, "dimension_names", None)
    fill = zsrc.fill_value
    # a persistent copy becomes persistent only once complete: a load killed half-way
    # leaves an orphan (owner dead, not persistent) that `ls` shows and `gc` removes
    persist = bool(table_options.pop("persistent", False))
    try:
        arr = _create(
            zsrc.shape,
            zsrc.chunks,
            dtype,
            fill_value=0 if fill is None else fill,
            compressor=compressor,
            attributes=json.loads(json.dumps(dict(zsrc.attrs))),
            dimension_names=dims,
            table_name=table_name,
            overwrite=overwrite,
            **table_options,
        )
    except (TypeError, ValueError) as e:
        raise type(e)(f"cannot load {where} of {store}: {e}") from e
    try:
        _load_chunks(zsrc, store, prefix, arr, concurrency, progress)
    except BaseException:
        try:
            arr.delete()
        except Exception:  # noqa: BLE001 - the original error matters more
            arr.close()
        raise
    if persist and arr.table is not None:
        arr.table.persist()
    return arr


def _existing_blocks(
    store: Any, prefix: str, grid: tuple[int, ...], key_of: Callable[[tuple[int, ...]], str]
) -> list[tuple[int, ...]]:
    """The storage-grid positions of the source that hold an object (all, if unknown)."""
    every = list(itertools.product(*(range(n) for n in grid)))
    if not store.supports_listing or not every:
        return every

    async def keys() -> set[str]:
        head = _join(prefix, "")
        return {k[len(head) :] async for k in store.list_prefix(head)}

    try:
        present = _sync(keys())
    except (NotImplementedError, OSError):  # listing not allowed: read everything
        return every
    return [b for b in every if key_of(b) in present]


def _load_chunks(
    zsrc: Any, store: Any, prefix: str, arr: Array, concurrency: int, progress: bool
) -> None:
    shape = tuple(zsrc.shape)
    block_shape, key_of = _storage_grid(zsrc)
    grid = chunk_grid_shape(shape, block_shape)
    blocks = _existing_blocks(store, prefix, grid, key_of)
    chunks = arr.chunks
    fill = arr.fill_value
    bar = _progress_bar(progress, len(blocks), f"import {arr.name}")

    def region(b: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(
            slice(i * n, min((i + 1) * n, s)) for i, n, s in zip(b, block_shape, shape, strict=True)
        )

    def read(b: tuple[int, ...]) -> np.ndarray:
        return np.asarray(zsrc[region(b)])

    def write(b: tuple[int, ...], data: np.ndarray) -> None:
        origin = [r.start for r in region(b)]
        inner = [math.ceil(d / c) if c else 0 for d, c in zip(data.shape, chunks, strict=True)]
        for sub in itertools.product(*(range(n) for n in inner)):
            sel = tuple(slice(j * c, (j + 1) * c) for j, c in zip(sub, chunks, strict=True))
            piece = data[sel] if sel else data
            if _is_fill(piece, fill):
                continue
            idx = tuple(o // c + j for o, c, j in zip(origin, chunks, sub, strict=True))
            arr.write_chunk(idx, piece)

    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            pending: deque[tuple[tuple[int, ...], Future[np.ndarray]]] = deque()
            it: Iterator[tuple[int, ...]] = iter(blocks)
            for b in itertools.islice(it, concurrency):
                pending.append((b, pool.submit(read, b)))
            while pending:
                b, fut = pending.popleft()
                data = fut.result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(read, nxt)))
                write(b, data)
                del data
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
