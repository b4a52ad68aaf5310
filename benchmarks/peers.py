"""One adapter per peer, so every workload runs the same code against each of them.

A peer has two halves:

- the *creator* (:class:`Peer` subclasses) lives in the parent process: it allocates the store,
  writes the data, reports the ``/dev/shm`` bytes it uses and removes everything it created
  (:meth:`Peer.destroy` is idempotent and never raises);
- the *reader* (:class:`Reader` subclasses) attaches to the store from a picklable handle. For
  cross-process peers it runs in a spawned worker (:mod:`benchmarks.worker`); for in-process peers
  the creator hands out a reader over its own object (:meth:`Peer.local_reader`).

Every file or segment created here is named with the ``szbench`` prefix (sharedzarr tables:
``szbench_<what>_<pid>``, whose segments are ``/dev/shm/sz.szbench_...``), so a leak is easy to
spot and the smoke test can check that none is left behind.

Shared-memory attach without the resource tracker
-------------------------------------------------
On Python < 3.13, ``SharedMemory(name)`` in an attaching process registers the segment with the
resource tracker, which may unlink it when that process exits (CPython gh-82300). Our workers are
started with the spawn context and therefore *share* the parent's tracker, so unregistering after
attach would also drop the parent's registration (and make the parent's own ``unlink`` warn). We
therefore attach without registering at all (``track=False`` on 3.13+, a suppressed
``resource_tracker.register`` call before), which is exactly what ``track=False`` does.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pickle
import shutil
import sys
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np

from benchmarks.config import Dataset

__all__ = [
    "ARRAY_PEERS",
    "TABLE_PEERS",
    "LmdbPeer",
    "ManagerPeer",
    "Peer",
    "PlainShmPeer",
    "TiledShmPeer",
    "Reader",
    "SzMemoryPeer",
    "SzShmPeer",
    "TablePeer",
    "ZarrLocalPeer",
    "ZarrMemoryPeer",
    "dev_shm_bytes",
    "sharedzarr_unavailable",
]

SHM_DIR = "/dev/shm"
_counter = itertools.count()


def _unique(what: str) -> str:
    """Return a name unique to this process, e.g. ``szbench_plain_1234_0``."""
    return f"szbench_{what}_{os.getpid()}_{next(_counter)}"


def dev_shm_bytes(paths: list[str]) -> int:
    """Return the bytes of memory the files under ``paths`` occupy (``st_blocks * 512``).

    Parameters
    ----------
    paths : list of str
        Files or directories (walked recursively).

    Returns
    -------
    int
        Allocated bytes; tmpfs allocates whole pages, so this is what the data really costs.
    """
    total = 0
    for p in paths:
        if os.path.isdir(p):
            for root, _dirs, files in os.walk(p):
                for f in files:
                    with contextlib.suppress(OSError):
                        total += os.stat(os.path.join(root, f)).st_blocks * 512
        else:
            with contextlib.suppress(OSError):
                total += os.stat(p).st_blocks * 512
    return total


def _window_from_chunks(
    ds: Dataset, r0: int, r1: int, c0: int, c1: int, get_chunk: Callable[[tuple[int, int]], Any]
) -> np.ndarray:
    """Assemble the window ``[r0:r1, c0:c1]`` from whole chunks returned by ``get_chunk``."""
    out = np.empty((r1 - r0, c1 - c0), ds.dtype)
    ci, cj = ds.chunks
    for i in range(r0 // ci, (r1 - 1) // ci + 1):
        a0, a1 = max(r0, i * ci), min(r1, (i + 1) * ci)
        for j in range(c0 // cj, (c1 - 1) // cj + 1):
            b0, b1 = max(c0, j * cj), min(c1, (j + 1) * cj)
            chunk = get_chunk((i, j))
            out[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = chunk[
                a0 - i * ci : a1 - i * ci, b0 - j * cj : b1 - j * cj
            ]
    return out


def _chunk_indices(ds: Dataset) -> Iterator[tuple[int, int]]:
    """Yield every chunk index of ``ds`` in C order."""
    return itertools.product(range(ds.grid[0]), range(ds.grid[1]))


# --------------------------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------------------------


class Reader:
    """The reading (and chunk-writing) side of a peer.

    Subclasses implement :meth:`attach` and the operations they support; an unsupported
    operation raises :class:`NotImplementedError` and the workload reports it as n/a.
    """

    def read_whole(self, out: np.ndarray) -> None:
        """Read the whole array into the preallocated ``out``."""
        raise NotImplementedError

    def read_window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Return a new array holding ``[r0:r1, c0:c1]``."""
        raise NotImplementedError

    def read_chunk(self, idx: tuple[int, int]) -> np.ndarray:
        """Return a private copy of chunk ``idx``."""
        raise NotImplementedError

    def view_chunk(self, idx: tuple[int, int]) -> np.ndarray:
        """Return chunk ``idx`` without copying it (a view into the store)."""
        raise NotImplementedError

    def write_chunk(self, idx: tuple[int, int], data: np.ndarray) -> None:
        """Overwrite chunk ``idx`` with ``data``."""
        raise NotImplementedError

    def write_chunks(self, order: list[tuple[int, int]], payloads: list[np.ndarray]) -> None:
        """Overwrite the chunks of ``order`` (payload ``n % len(payloads)`` for the n-th) in one
        batch: one transaction or writer session where the peer has one (workload h)."""
        write = self.write_chunk
        m = len(payloads)
        for n, idx in enumerate(order):
            write(idx, payloads[n % m])

    def write_chunks_call(self, order: list[tuple[int, int]], payloads: list[np.ndarray]) -> None:
        """:meth:`write_chunks` in one call of the peer's API where it has one (the same
        batch otherwise)."""
        self.write_chunks(order, payloads)

    def lookup_fn(self, op: str) -> Callable[[Any], Any]:
        """Return the callable of table operation ``op`` (workload f)."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`attach` acquired (does not delete the store)."""


class Peer:
    """The creating side of an array peer.

    Parameters
    ----------
    ds : Dataset
        The array to hold.
    """

    #: label in the results table
    label: ClassVar[str] = "?"
    #: True when reads are timed in another process (a spawned worker)
    cross_process: ClassVar[bool] = False
    #: True for peers that need fewer iterations to stay within the time budget
    slow: ClassVar[bool] = False
    #: the reader class (cross-process peers: instantiated in the worker by ``attach``)
    reader_cls: ClassVar[type[Reader]] = Reader
    #: True when the peer keeps its data in /dev/shm (workload e)
    uses_dev_shm: ClassVar[bool] = False
    #: True when workload (e) also measures the memory after ``cfg.rewrites`` full rewrites
    rewrite_mem: ClassVar[bool] = False

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    @classmethod
    def unavailable(cls) -> str | None:
        """Return why the peer cannot run here, or None if it can."""
        return None

    def create(self) -> None:
        """Allocate the (empty) store."""
        raise NotImplementedError

    def write_whole(self, data: np.ndarray) -> None:
        """Write the whole array from ``data`` (timed: workload a, write)."""
        raise NotImplementedError

    def handle(self) -> Any:
        """Return a picklable handle from which ``reader_cls.attach`` attaches."""
        raise NotImplementedError

    def local_reader(self) -> Reader:
        """Return a reader over this process's own object (in-process peers)."""
        return self.reader_cls.attach(self.handle())  # type: ignore[attr-defined]

    def shm_paths(self) -> list[str]:
        """Return the /dev/shm files or directories holding the data."""
        return []

    def destroy(self) -> None:
        """Delete everything :meth:`create` made. Idempotent; never raises."""


# --------------------------------------------------------------------------------------------
# np.copyto: the limit
# --------------------------------------------------------------------------------------------


class CopytoReader(Reader):
    """Reads a numpy array of this process: the physical limit (one memory copy)."""

    def __init__(self, buf: np.ndarray, ds: Dataset) -> None:
        self.buf, self.ds = buf, ds

    @classmethod
    def attach(cls, handle: tuple[np.ndarray, Dataset]) -> CopytoReader:
        """Wrap the creator's buffer (in-process only)."""
        return cls(*handle)

    def read_whole(self, out: np.ndarray) -> None:
        """``np.copyto(out, buf)``."""
        np.copyto(out, self.buf)

    def read_window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Copy of a slice."""
        return self.buf[r0:r1, c0:c1].copy()

    def read_chunk(self, idx: tuple[int, int]) -> np.ndarray:
        """Copy of the chunk's slice."""
        return self.buf[self.ds.chunk_slices(idx)].copy()

    def view_chunk(self, idx: tuple[int, int]) -> np.ndarray:
        """The chunk's slice, no copy."""
        return self.buf[self.ds.chunk_slices(idx)]

    def write_chunk(self, idx: tuple[int, int], data: np.ndarray) -> None:
        """Assign the chunk's slice."""
        self.buf[self.ds.chunk_slices(idx)] = data


class CopytoPeer(Peer):
    """``np.copyto`` of the same bytes in one process: the limit."""

    label = "np.copyto (limit)"
    reader_cls = CopytoReader

    def create(self) -> None:
        """Allocate and touch the destination buffer."""
        self.buf = np.zeros(self.ds.shape, self.ds.dtype)

    def write_whole(self, data: np.ndarray) -> None:
        """``np.copyto(buf, data)``."""
        np.copyto(self.buf, data)

    def handle(self) -> tuple[np.ndarray, Dataset]:
        """The buffer itself (in-process)."""
        return (self.buf, self.ds)

    def destroy(self) -> None:
        """Drop the buffer."""
        self.buf = None  # type: ignore[assignment]


# --------------------------------------------------------------------------------------------
# multiprocessing.shared_memory: one flat numpy array, no chunks
# --------------------------------------------------------------------------------------------


def _attach_untracked(name: str) -> Any:
    """Attach a ``SharedMemory`` segment without registering it with the resource tracker."""
    from multiprocessing import resource_tracker, shared_memory

    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)  # type: ignore[call-arg]
    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        return shared_memory.SharedMemory(name)
    finally:
        resource_tracker.register = register  # type: ignore[assignment]


class PlainShmReader(CopytoReader):
    """A numpy array over a ``multiprocessing.shared_memory`` segment attached by name."""

    @classmethod
    def attach(cls, handle: tuple[str, Dataset]) -> PlainShmReader:  # type: ignore[override]
        """Attach the segment by name and wrap it in an ndarray."""
        name, ds = handle
        shm = _attach_untracked(name)
        self = cls(np.ndarray(ds.shape, ds.dtype, buffer=shm.buf), ds)
        self.shm = shm
        return self

    def close(self) -> None:
        """Drop the array and unmap the segment."""
        self.buf = None  # type: ignore[assignment]
        self.shm.close()


class PlainShmPeer(Peer):
    """A flat numpy array in ``multiprocessing.shared_memory``, read from another process."""

    label = "shared_memory array"
    cross_process = True
    reader_cls = PlainShmReader
    uses_dev_shm = True
    rewrite_mem = True
    _shm: Any = None

    def create(self) -> None:
        """Create the segment."""
        from multiprocessing import shared_memory

        self.name = _unique("plain")
        self._shm = shared_memory.SharedMemory(self.name, create=True, size=self.ds.nbytes)
        self.buf = np.ndarray(self.ds.shape, self.ds.dtype, buffer=self._shm.buf)

    def write_whole(self, data: np.ndarray) -> None:
        """``np.copyto`` into the segment."""
        np.copyto(self.buf, data)

    def handle(self) -> tuple[str, Dataset]:
        """The segment name."""
        return (self.name, self.ds)

    def shm_paths(self) -> list[str]:
        """``/dev/shm/<name>``."""
        return [os.path.join(SHM_DIR, self.name)]

    def destroy(self) -> None:
        """Unmap and unlink the segment."""
        if self._shm is None:
            return
        self.buf = None  # type: ignore[assignment]
        with contextlib.suppress(Exception):
            self._shm.close()
        with contextlib.suppress(Exception):
            self._shm.unlink()
        self._shm = None


# --------------------------------------------------------------------------------------------
# the same segment, chunk-major: the limit of any chunked layout
# --------------------------------------------------------------------------------------------


class TiledShmReader(Reader):
    """Chunks stored back to back in one ``shared_memory`` segment (chunk-major order).

    No lookup, no key, no header: only the per-chunk copy that every chunked store (Zarr,
    sharedzarr, LMDB) must do, and one Python loop step per chunk.
    """

    def __init__(self, tiles: np.ndarray, ds: Dataset) -> None:
        self.tiles, self.ds = tiles, ds

    @classmethod
    def attach(cls, handle: tuple[str, Dataset]) -> TiledShmReader:
        """Attach the segment by name and view it as ``(grid rows, grid cols, chunk)``."""
        name, ds = handle
        shm = _attach_untracked(name)
        self = cls(np.ndarray(ds.grid + ds.chunks, ds.dtype, buffer=shm.buf), ds)
        self.shm = shm
        return self

    def read_whole(self, out: np.ndarray) -> None:
        """Gather every chunk into its block of ``out`` (C order of chunks)."""
        ci, cj = self.ds.chunks
        tiles = self.tiles
        for i, j in _chunk_indices(self.ds):
            out[i * ci : (i + 1) * ci, j * cj : (j + 1) * cj] = tiles[i, j]

    def read_window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Assemble the window from the chunks it overlaps."""
        tiles = self.tiles
        return _window_from_chunks(self.ds, r0, r1, c0, c1, lambda ij: tiles[ij])

    def read_chunk(self, idx: tuple[int, int]) -> np.ndarray:
        """Copy of one tile."""
        return self.tiles[idx].copy()

    def view_chunk(self, idx: tuple[int, int]) -> np.ndarray:
        """One tile, no copy."""
        return self.tiles[idx]

    def write_chunk(self, idx: tuple[int, int], data: np.ndarray) -> None:
        """Overwrite one tile in place."""
        self.tiles[idx] = data

    def close(self) -> None:
        """Drop the view and unmap the segment."""
        self.tiles = None  # type: ignore[assignment]
        self.shm.close()


class TiledShmPeer(PlainShmPeer):
    """The plain segment holding chunks back to back: the ceiling of a chunked layout."""

    label = "shared_memory tiles (chunked limit)"
    reader_cls = TiledShmReader  # type: ignore[assignment]

    def create(self) -> None:
        """Create the segment, viewed as tiles."""
        from multiprocessing import shared_memory

        self.name = _unique("tiles")
        self._shm = shared_memory.SharedMemory(self.name, create=True, size=self.ds.nbytes)
        self.buf = np.ndarray(self.ds.grid + self.ds.chunks, self.ds.dtype, buffer=self._shm.buf)

    def write_whole(self, data: np.ndarray) -> None:
        """Scatter ``data`` into the tiles."""
        ci, cj = self.ds.chunks
        for i, j in _chunk_indices(self.ds):
            self.buf[i, j] = data[i * ci : (i + 1) * ci, j * cj : (j + 1) * cj]


# --------------------------------------------------------------------------------------------
# sharedzarr
# --------------------------------------------------------------------------------------------


def sharedzarr_unavailable() -> str | None:
    """Return why ``sharedzarr`` arrays cannot be benchmarked, or None if they can."""
    try:
        import sharedzarr as sz

        sz.create, sz.open  # noqa: B018 - AttributeError while the package is incomplete
    except (ImportError, AttributeError) as exc:
        return f"not available ({type(exc).__name__}: {exc})"
    return None


def _sz_remove_table(name: str) -> None:
    """Delete sharedzarr table ``name`` and unlink any of its segments that remain."""
    with contextlib.suppress(Exception):
        import sharedzarr as sz

        sz.storage.shm.delete_table(name)
    for path in glob.glob(os.path.join(SHM_DIR, f"sz.{name}.*")) + glob.glob(
        os.path.join(SHM_DIR, f"sem.sz.{name}.*")
    ):
        with contextlib.suppress(OSError):
            os.unlink(path)


class SzReader(Reader):
    """A sharedzarr array opened by name (``sz.open``)."""

    def __init__(self, arr: Any, ds: Dataset, owned: bool) -> None:
        self.arr, self.ds, self.owned = arr, ds, owned

    @classmethod
    def attach(cls, handle: tuple[str, Dataset]) -> SzReader:
        """``sz.open(name)``."""
        import sharedzarr as sz

        name, ds = handle
        return cls(sz.open(name), ds, owned=True)

    def read_whole(self, out: np.ndarray) -> None:
        """``get_slice(out=out)``."""
        self.arr.get_slice(out=out)

    def read_window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """``arr[r0:r1, c0:c1]``."""
        return self.arr[r0:r1, c0:c1]

    def read_chunk(self, idx: tuple[int, int]) -> np.ndarray:
        """``read_chunk(idx)`` (a copy)."""
        return self.arr.read_chunk(idx)

    def view_chunk(self, idx: tuple[int, int]) -> np.ndarray:
        """``read_chunk(idx, copy=False)`` (a read-only view into shared memory)."""
        return self.arr.read_chunk(idx, copy=False)

    def write_chunk(self, idx: tuple[int, int], data: np.ndarray) -> None:
        """``write_chunk(idx, data)``."""
        self.arr.write_chunk(idx, data)

    def write_chunks(self, order: list[tuple[int, int]], payloads: list[np.ndarray]) -> None:
        """``write_chunk`` per chunk inside one writer session (``with backend.writer():``,
        which is ``a.table.writer()`` for ``shm``): the closest the API has to one call that
        writes many chunks."""
        write = self.arr.write_chunk
        m = len(payloads)
        with self.arr.backend.writer():
            for n, idx in enumerate(order):
                write(idx, payloads[n % m])

    def write_chunks_call(self, order: list[tuple[int, int]], payloads: list[np.ndarray]) -> None:
        """``a.write_chunks(...)``: one call, one write operation."""
        m = len(payloads)
        self.arr.write_chunks((idx, payloads[n % m]) for n, idx in enumerate(order))

    def close(self) -> None:
        """``close()`` the handle if this reader opened it."""
        if self.owned:
            self.arr.close()


class SzShmPeer(Peer):
    """sharedzarr with ``storage="shm"``, read from another process."""

    label = "sharedzarr shm"
    cross_process = True
    reader_cls = SzReader
    uses_dev_shm = True
    rewrite_mem = True
    storage: ClassVar[str] = "shm"
    arr: Any = None
    name: str | None = None

    @classmethod
    def unavailable(cls) -> str | None:
        """Unavailable until ``sharedzarr.create`` exists."""
        return sharedzarr_unavailable()

    def create(self) -> None:
        """``sz.create(..., storage=...)``."""
        import sharedzarr as sz

        self.name = _unique(self.ds.key)
        self.arr = sz.create(
            shape=self.ds.shape,
            chunks=self.ds.chunks,
            dtype=self.ds.dtype,
            storage=self.storage,
            table_name=self.name,
        )

    def write_whole(self, data: np.ndarray) -> None:
        """``set_slice(data, start=(0, 0), stop=shape)``."""
        self.arr.set_slice(data, start=(0, 0), stop=self.ds.shape)

    def handle(self) -> tuple[str, Dataset]:
        """The table name."""
        assert self.name is not None
        return (self.name, self.ds)

    def local_reader(self) -> Reader:
        """A reader over the creating handle."""
        return SzReader(self.arr, self.ds, owned=False)

    def shm_paths(self) -> list[str]:
        """The table's segments, ``/dev/shm/sz.<table>.*``."""
        return glob.glob(os.path.join(SHM_DIR, f"sz.{self.name}.*"))

    def destroy(self) -> None:
        """Close the array and delete the table."""
        if self.arr is not None:
            with contextlib.suppress(Exception):
                self.arr.close()
            self.arr = None
        if self.name is not None and self.storage == "shm":
            _sz_remove_table(self.name)


class SzMemoryPeer(SzShmPeer):
    """sharedzarr with ``storage="memory"`` (an in-process dict)."""

    label = "sharedzarr memory"
    cross_process = False
    uses_dev_shm = False
    rewrite_mem = False
    storage = "memory"

    def shm_paths(self) -> list[str]:
        """None: the data is in the process heap."""
        return []


# --------------------------------------------------------------------------------------------
# zarr-python 3
# --------------------------------------------------------------------------------------------


def _zarr_out(out: np.ndarray) -> Any:
    """Wrap ``out`` as the ``NDBuffer`` that ``zarr.Array.get_basic_selection(out=)`` takes."""
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype().nd_buffer.from_numpy_array(out)


class ZarrReader(Reader):
    """A zarr-python 3 array, uncompressed."""

    def __init__(self, z: Any, ds: Dataset) -> None:
        self.z, self.ds = z, ds

    @classmethod
    def attach(cls, handle: tuple[Any, Dataset]) -> ZarrReader:
        """Open the array: ``handle[0]`` is a LocalStore path or (in-process) the array."""
        target, ds = handle
        if isinstance(target, str):
            import zarr
            from zarr.storage import LocalStore

            return cls(zarr.open_array(LocalStore(target)), ds)
        return cls(target, ds)

    def read_whole(self, out: np.ndarray) -> None:
        """``get_basic_selection(..., out=out)``."""
        self.z.get_basic_selection(Ellipsis, out=_zarr_out(out))

    def read_window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """``z[r0:r1, c0:c1]``."""
        return self.z[r0:r1, c0:c1]

    def read_chunk(self, idx: tuple[int, int]) -> np.ndarray:
        """``z[chunk slices]`` (zarr has no chunk-level read API; this reads one chunk)."""
        return self.z[self.ds.chunk_slices(idx)]

    def write_chunk(self, idx: tuple[int, int], data: np.ndarray) -> None:
        """``z[chunk slices] = data``."""
        self.z[self.ds.chunk_slices(idx)] = data


class ZarrMemoryPeer(Peer):
    """zarr-python 3 ``MemoryStore``, in-process, uncompressed."""

    label = "zarr MemoryStore"
    slow = True
    reader_cls = ZarrReader

    def _store(self) -> Any:
        from zarr.storage import MemoryStore

        return MemoryStore()

    def create(self) -> None:
        """``zarr.create_array(..., compressors=None)``."""
        import zarr

        self.z = zarr.create_array(
            store=self._store(),
            shape=self.ds.shape,
            chunks=self.ds.chunks,
            dtype=self.ds.dtype,
            compressors=None,
            fill_value=0.0,
        )

    def write_whole(self, data: np.ndarray) -> None:
        """``z[...] = data``."""
        self.z[...] = data

    def handle(self) -> tuple[Any, Dataset]:
        """The array itself (in-process)."""
        return (self.z, self.ds)

    def destroy(self) -> None:
        """Drop the array."""
        self.z = None


class ZarrLocalPeer(ZarrMemoryPeer):
    """zarr-python 3 ``LocalStore`` on /dev/shm, read from another process, uncompressed."""

    label = "zarr LocalStore (/dev/shm)"
    cross_process = True
    uses_dev_shm = True
    path: str | None = None

    def _store(self) -> Any:
        from zarr.storage import LocalStore

        self.path = os.path.join(SHM_DIR, _unique("zarr"))
        return LocalStore(self.path)

    def handle(self) -> tuple[Any, Dataset]:
        """The directory path."""
        return (self.path, self.ds)

    def local_reader(self) -> Reader:
        """A reader over the creating handle."""
        return ZarrReader(self.z, self.ds)

    def shm_paths(self) -> list[str]:
        """The store directory."""
        return [self.path] if self.path else []

    def destroy(self) -> None:
        """Remove the store directory."""
        self.z = None
        if self.path:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


# --------------------------------------------------------------------------------------------
# LMDB
# --------------------------------------------------------------------------------------------


_LMDB_ENVS: dict[str, list[Any]] = {}


def _lmdb_open(path: str, map_size: int) -> Any:
    """Open the LMDB environment at ``path`` the same way in every process.

    LMDB at its best on tmpfs: ``writemap=True`` (writes go straight into the shared map, no
    ``pwrite`` of dirty pages), ``map_async=True``, ``sync=False``/``metasync=False`` (shared
    memory is not durable either), ``readahead=False`` as recommended for a RAM-resident
    database.
    LMDB allows one open environment per path and process, so readers of one process share it
    (reference counted; :func:`_lmdb_close` closes it with the last reader).
    """
    import lmdb

    entry = _LMDB_ENVS.get(path)
    if entry is None:
        env = lmdb.open(
            path,
            map_size=map_size,
            subdir=True,
            writemap=True,
            map_async=True,
            sync=False,
            metasync=False,
            readahead=False,
            max_readers=64,
            lock=True,
        )
        entry = _LMDB_ENVS[path] = [env, 0]
    entry[1] += 1
    return entry[0]


def _lmdb_close(env: Any) -> None:
    """Release a reference taken by :func:`_lmdb_open`; close the environment with the last."""
    for path, entry in list(_LMDB_ENVS.items()):
        if entry[0] is env:
            entry[1] -= 1
            if entry[1] <= 0:
                del _LMDB_ENVS[path]
                env.close()
            return
    env.close()


def _lmdb_key(idx: tuple[int, int]) -> bytes:
    return b"%d.%d" % idx


class LmdbReader(Reader):
    """An LMDB environment holding one key per chunk.

    ``variant="one_txn"`` keeps one read transaction open for all per-chunk reads (a snapshot:
    it would not see later writes); the default begins a transaction per read, which is what a
    reader that must see the latest value does, and what ``sharedzarr`` ``read_chunk`` offers.
    """

    def __init__(self, env: Any, ds: Dataset, variant: str | None) -> None:
        self.env, self.ds, self.variant = env, ds, variant
        self.txn: Any = None

    @classmethod
    def attach(cls, handle: tuple[str, int, Dataset, str | None]) -> LmdbReader:
        """``lmdb.open(path)``."""
        path, map_size, ds, variant = handle
        return cls(_lmdb_open(path, map_size), ds, variant)

    def _frombuf(self, buf: Any) -> np.ndarray:
        return np.frombuffer(buf, self.ds.dtype).reshape(self.ds.chunks)

    def read_whole(self, out: np.ndarray) -> None:
        """One read transaction; copy each chunk into ``out``."""
        with self.env.begin(buffers=True) as txn:
            for idx in _chunk_indices(self.ds):
                out[self.ds.chunk_slices(idx)] = self._frombuf(txn.get(_lmdb_key(idx)))

    def read_window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """One read transaction; assemble the window from the chunks it touches."""
        with self.env.begin(buffers=True) as txn:
            return _window_from_chunks(
                self.ds, r0, r1, c0, c1, lambda idx: self._frombuf(txn.get(_lmdb_key(idx)))
            )

    def _persistent_txn(self) -> Any:
        if self.txn is None:
            self.txn = self.env.begin(buffers=True)
        return self.txn

    def read_chunk(self, idx: tuple[int, int]) -> np.ndarray:
        """``txn.get`` and copy (a transaction per read unless ``variant="one_txn"``)."""
        if self.variant == "one_txn":
            return self._frombuf(self._persistent_txn().get(_lmdb_key(idx))).copy()
        with self.env.begin(buffers=True) as txn:
            return self._frombuf(txn.get(_lmdb_key(idx))).copy()

    def view_chunk(self, idx: tuple[int, int]) -> np.ndarray:
        """A view into the map, valid while the (persistent) read transaction lives."""
        return self._frombuf(self._persistent_txn().get(_lmdb_key(idx)))

    def write_chunk(self, idx: tuple[int, int], data: np.ndarray) -> None:
        """One write transaction per chunk."""
        if self.txn is not None:  # a live read txn would pin the old pages
            self.txn.abort()
            self.txn = None
        with self.env.begin(write=True) as txn:
            txn.put(_lmdb_key(idx), np.ascontiguousarray(data).data)

    def write_chunks(self, order: list[tuple[int, int]], payloads: list[np.ndarray]) -> None:
        """One write transaction for all the chunks."""
        if self.txn is not None:
            self.txn.abort()
            self.txn = None
        m = len(payloads)
        bufs = [np.ascontiguousarray(p).data for p in payloads]
        with self.env.begin(write=True) as txn:
            put = txn.put
            for n, idx in enumerate(order):
                put(_lmdb_key(idx), bufs[n % m])

    def lookup_fn(self, op: str) -> Callable[[Any], Any]:
        """``get_txn``: a transaction per lookup; ``get_one_txn``: one transaction for all."""
        env = self.env
        if op == "get_one_txn":
            return self._persistent_txn().get

        def get(key: bytes) -> Any:
            with env.begin(buffers=True) as txn:
                return txn.get(key)

        return get

    def close(self) -> None:
        """Abort the read transaction and close the environment."""
        if self.txn is not None:
            self.txn.abort()
            self.txn = None
        _lmdb_close(self.env)


class LmdbPeer(Peer):
    """LMDB on /dev/shm, one key per chunk, read from another process."""

    label = "LMDB (/dev/shm)"
    cross_process = True
    reader_cls = LmdbReader
    uses_dev_shm = True
    rewrite_mem = True
    path: str | None = None
    env: Any = None

    def create(self) -> None:
        """Open a new environment in /dev/shm."""
        self.path = os.path.join(SHM_DIR, _unique("lmdb"))
        # LMDB is copy-on-write: rewriting everything needs up to twice the data; tmpfs is sparse.
        self.map_size = 4 * self.ds.nbytes + (64 << 20)
        self.env = _lmdb_open(self.path, self.map_size)

    def write_whole(self, data: np.ndarray) -> None:
        """One write transaction, one ``put`` per chunk."""
        with self.env.begin(write=True) as txn:
            for idx in _chunk_indices(self.ds):
                txn.put(_lmdb_key(idx), np.ascontiguousarray(data[self.ds.chunk_slices(idx)]).data)

    def handle(self, variant: str | None = None) -> tuple[str, int, Dataset, str | None]:
        """The environment path (and the reader variant)."""
        assert self.path is not None
        return (self.path, self.map_size, self.ds, variant)

    def shm_paths(self) -> list[str]:
        """The environment directory (data.mdb and lock.mdb)."""
        return [self.path] if self.path else []

    def destroy(self) -> None:
        """Close and remove the environment."""
        if self.env is not None:
            with contextlib.suppress(Exception):
                _lmdb_close(self.env)
            self.env = None
        if self.path:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


# --------------------------------------------------------------------------------------------
# multiprocessing.Manager().dict(): the message-passing baseline
# --------------------------------------------------------------------------------------------


class ManagerReader(Reader):
    """A ``Manager().dict()`` proxy holding one ``bytes`` value per chunk."""

    def __init__(self, d: Any, ds: Dataset) -> None:
        self.d, self.ds = d, ds

    @classmethod
    def attach(cls, handle: tuple[bytes, Dataset]) -> ManagerReader:
        """Unpickle the proxy (connects to the manager) and make a first call."""
        blob, ds = handle
        d = pickle.loads(blob)
        len(d)
        return cls(d, ds)

    def _chunk(self, idx: tuple[int, int]) -> np.ndarray:
        return np.frombuffer(self.d[idx], self.ds.dtype).reshape(self.ds.chunks)

    def read_whole(self, out: np.ndarray) -> None:
        """One ``d[key]`` per chunk, copied into ``out``."""
        for idx in _chunk_indices(self.ds):
            out[self.ds.chunk_slices(idx)] = self._chunk(idx)

    def read_window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Assemble the window from the chunks it touches."""
        return _window_from_chunks(self.ds, r0, r1, c0, c1, self._chunk)

    def read_chunk(self, idx: tuple[int, int]) -> np.ndarray:
        """``d[key]`` (the bytes arrive as a private copy)."""
        return self._chunk(idx)

    def write_chunk(self, idx: tuple[int, int], data: np.ndarray) -> None:
        """``d[key] = data.tobytes()``."""
        self.d[idx] = data.tobytes()

    def lookup_fn(self, op: str) -> Callable[[Any], Any]:
        """``d[key]``."""
        return self.d.__getitem__


class ManagerPeer(Peer):
    """``multiprocessing.Manager().dict()`` holding the chunks as bytes."""

    label = "Manager().dict()"
    cross_process = True
    slow = True
    reader_cls = ManagerReader
    manager: Any = None

    def create(self) -> None:
        """Start a manager (spawn context) and make a dict."""
        import multiprocessing

        self.manager = multiprocessing.get_context("spawn").Manager()
        self.d = self.manager.dict()

    def write_whole(self, data: np.ndarray) -> None:
        """One ``d[key] = bytes`` per chunk."""
        for idx in _chunk_indices(self.ds):
            self.d[idx] = data[self.ds.chunk_slices(idx)].tobytes()

    def handle(self) -> tuple[bytes, Dataset]:
        """The pickled proxy (the worker inherits the authkey through spawn)."""
        return (pickle.dumps(self.d), self.ds)

    def destroy(self) -> None:
        """Shut the manager down."""
        if self.manager is not None:
            self.d = None
            with contextlib.suppress(Exception):
                self.manager.shutdown()
            self.manager = None


# --------------------------------------------------------------------------------------------
# Workload (f): a table of many small entries
# --------------------------------------------------------------------------------------------


def table_key(i: int) -> bytes:
    """Key number ``i`` of workload (f): 8 big-endian bytes."""
    return i.to_bytes(8, "big")


def table_value(i: int) -> bytes:
    """Value number ``i`` of workload (f): 64 bytes."""
    return i.to_bytes(8, "little") * 8


class TableReader(Reader):
    """Lookups in a table peer; ``lookup_fn`` returns the callable to time."""

    def __init__(self, obj: Any, ops: dict[str, Callable[[Any], Any]], closer: Any = None) -> None:
        self.obj, self.ops, self.closer = obj, ops, closer

    @classmethod
    def attach(cls, handle: tuple[str, Any]) -> Reader:
        """Attach according to ``handle[0]`` (``"sz"``, ``"lmdb"``, ``"manager"``, ``"dict"``)."""
        kind, arg = handle
        if kind == "sz":
            import sharedzarr as sz

            t = sz.Table.attach(arg)
            return cls(
                t, {"lookup": t.lookup, "get": lambda k: t.get(k, copy=False)}, closer=t.close
            )
        if kind == "lmdb":
            path, map_size = arg
            return LmdbReader(_lmdb_open(path, map_size), Dataset("f", (1, 1), (1, 1)), None)
        if kind == "manager":
            d = pickle.loads(arg)
            len(d)
            return cls(d, {"getitem": d.__getitem__})
        if kind == "dict":
            return cls(arg, {"getitem": arg.__getitem__})
        raise ValueError(kind)

    def lookup_fn(self, op: str) -> Callable[[Any], Any]:
        """The callable for ``op``."""
        return self.ops[op]

    def close(self) -> None:
        """Detach."""
        if self.closer is not None:
            self.closer()


class TablePeer:
    """Creating side of a table peer for workload (f).

    Parameters
    ----------
    kind : str
        ``"sz"`` (sharedzarr Table), ``"lmdb"``, ``"manager"`` or ``"dict"`` (in-process).
    """

    labels: ClassVar[dict[str, str]] = {
        "sz": "sharedzarr Table",
        "lmdb": "LMDB (/dev/shm)",
        "manager": "Manager().dict()",
        "dict": "dict (in-process)",
    }
    #: (op, label suffix) pairs timed for each kind
    ops: ClassVar[dict[str, list[tuple[str, str]]]] = {
        "sz": [("lookup", ".lookup(key)"), ("get", ".get(key, copy=False)")],
        "lmdb": [("get_txn", " txn.get, txn per get"), ("get_one_txn", " txn.get, one txn")],
        "manager": [("getitem", " d[key]")],
        "dict": [("getitem", " d[key]")],
    }
    reader_cls = TableReader

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.label = self.labels[kind]
        self.cross_process = kind != "dict"
        self.slow = kind == "manager"
        self.name: str | None = None
        self.path: str | None = None
        self.obj: Any = None
        self.manager: Any = None

    def local_reader(self) -> Reader:
        """A reader in this process."""
        return TableReader.attach(self.handle())

    def unavailable(self) -> str | None:
        """Why the peer cannot run here, or None."""
        if self.kind != "sz":
            return None
        try:
            import sharedzarr as sz

            sz.Table.create, sz.Table.attach  # noqa: B018
        except (ImportError, AttributeError) as exc:
            return f"not available ({type(exc).__name__}: {exc})"
        return None

    def build(self, n: int) -> None:
        """Create the table and insert ``n`` entries (timed by the caller)."""
        if self.kind == "sz":
            import sharedzarr as sz

            self.name = _unique("f")
            t = self.obj = sz.Table.create(self.name)
            # one atomic writer session, as LMDB's putmulti is one transaction
            t.insert_many((table_key(i), table_value(i)) for i in range(n))
        elif self.kind == "lmdb":
            self.path = os.path.join(SHM_DIR, _unique("lmdbf"))
            self.map_size = 512 * n + (64 << 20)
            self.obj = _lmdb_open(self.path, self.map_size)
            with self.obj.begin(write=True) as txn, txn.cursor() as cur:
                cur.putmulti(((table_key(i), table_value(i)) for i in range(n)), append=True)
        elif self.kind == "manager":
            import multiprocessing

            self.manager = multiprocessing.get_context("spawn").Manager()
            d = self.obj = self.manager.dict()
            step = 20_000
            for s in range(0, n, step):  # batched: 1,000,000 single proxy calls take a minute
                d.update({table_key(i): table_value(i) for i in range(s, min(n, s + step))})
        else:
            self.obj = {table_key(i): table_value(i) for i in range(n)}

    def handle(self) -> tuple[str, Any]:
        """Picklable handle for :meth:`TableReader.attach`."""
        if self.kind == "sz":
            return ("sz", self.name)
        if self.kind == "lmdb":
            return ("lmdb", (self.path, self.map_size))
        if self.kind == "manager":
            return ("manager", pickle.dumps(self.obj))
        return ("dict", self.obj)

    def shm_paths(self) -> list[str]:
        """Files in /dev/shm holding the table."""
        if self.kind == "sz":
            return glob.glob(os.path.join(SHM_DIR, f"sz.{self.name}.*"))
        if self.kind == "lmdb" and self.path:
            return [self.path]
        return []

    def destroy(self) -> None:
        """Delete the table. Idempotent; never raises."""
        if self.kind == "sz" and self.name:
            if self.obj is not None:
                with contextlib.suppress(Exception):
                    self.obj.close()
            _sz_remove_table(self.name)
            self.name = None
        elif self.kind == "lmdb" and self.path:
            with contextlib.suppress(Exception):
                _lmdb_close(self.obj)
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        elif self.kind == "manager" and self.manager is not None:
            self.obj = None
            with contextlib.suppress(Exception):
                self.manager.shutdown()
            self.manager = None
        self.obj = None


#: array peers, in table order
ARRAY_PEERS: list[type[Peer]] = [
    CopytoPeer,
    PlainShmPeer,
    TiledShmPeer,
    SzShmPeer,
    SzMemoryPeer,
    ZarrMemoryPeer,
    ZarrLocalPeer,
    LmdbPeer,
    ManagerPeer,
]

#: table peers of workload (f), in table order
TABLE_PEERS: list[str] = ["dict", "sz", "lmdb", "manager"]
