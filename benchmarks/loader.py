"""Workload (l), the data loader: reader processes take random batches of rows.

A machine-learning data loader keeps a dataset of rows (samples) and has 2 worker processes take
random batches of ``batch_rows`` rows. The peers:

- ``shared_memory array``: a numpy array on a ``multiprocessing.shared_memory`` block, read with
  ``arr[idx]`` (a batch) and ``arr[i].copy()`` (a row);
- ``sharedzarr shm``: ``a[idx]`` (numpy advanced indexing) when the array supports it, else
  ``np.stack([a[int(i)] for i in idx])``; the row label says which one ran; ``a[i]`` for a row;
- ``multiprocessing.Queue``: a producer process holds the rows and pickles random batches into a
  queue (what a data loader does without shared memory); the readers ``get`` them;
- ``LMDB (/dev/shm)``: one key per chunk of rows (the chunking of the sharedzarr array); a batch
  is one read transaction and one ``get`` per row (a slice of the chunk's buffer), a row is one
  transaction.

The queue is made by :class:`benchmarks.worker.WorkerPool` and handed to the workers when they
are spawned (a ``multiprocessing.Queue`` travels only by inheritance); :data:`WORKER_QUEUE`
holds it in a worker.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_mod
import shutil
import time
from typing import Any, ClassVar

import numpy as np

from benchmarks.config import Dataset
from benchmarks.peers import (
    SHM_DIR,
    Reader,
    _attach_untracked,
    _lmdb_close,
    _lmdb_open,
    _sz_remove_table,
    _unique,
    sharedzarr_unavailable,
)

__all__ = [
    "LOADER_PEERS",
    "LmdbLoaderPeer",
    "LoaderPeer",
    "PlainLoaderPeer",
    "QueueLoaderPeer",
    "SzLoaderPeer",
    "WORKER_QUEUE",
    "loader_data",
    "producer_main",
]

#: the batch queue of workload (l) in a worker process (set by the worker at start)
WORKER_QUEUE: Any = None


def loader_data(ds: Dataset, seed: int) -> np.ndarray:
    """The rows of workload (l): the same array in the parent and in the Queue producer."""
    return np.random.default_rng(seed).random(ds.shape)


class LoaderReader(Reader):
    """A reader of workload (l): :meth:`batch` and :meth:`row`."""

    def batch(self, idx: np.ndarray) -> np.ndarray:
        """Return rows ``idx`` as a new ``(len(idx), ncols)`` array."""
        raise NotImplementedError

    def row(self, i: int) -> np.ndarray:
        """Return a copy of row ``i``."""
        raise NotImplementedError


class LoaderPeer:
    """Creating side of a workload (l) peer.

    Parameters
    ----------
    ds : Dataset
        The rows (``ds.shape``) and their chunking (``ds.chunks``: whole rows).
    seed : int
        Seed of the data (:func:`loader_data`).
    """

    label: ClassVar[str] = "?"
    reader_cls: ClassVar[type[LoaderReader]] = LoaderReader
    #: the method of a batch read, shown in the row label of l.batch
    batch_how: str = ""
    #: the method of a row read, or "" when the peer has none
    row_how: ClassVar[str] = ""

    def __init__(self, ds: Dataset, seed: int) -> None:
        self.ds, self.seed = ds, seed

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the peer cannot run here, or None."""
        return None

    def create(self, data: np.ndarray, pool: Any) -> None:
        """Make the store and fill it with ``data`` (``pool``: the worker pool)."""
        raise NotImplementedError

    def handle(self) -> Any:
        """Picklable handle for ``reader_cls.attach``."""
        raise NotImplementedError

    def destroy(self) -> None:
        """Remove everything :meth:`create` made. Idempotent; never raises."""


# ----------------------------------------------------------------------------- shared_memory


class PlainLoaderReader(LoaderReader):
    """``arr[idx]`` and ``arr[i].copy()`` on a shared_memory block."""

    @classmethod
    def attach(cls, handle: tuple[str, Dataset]) -> PlainLoaderReader:
        """Attach the block by name."""
        name, ds = handle
        self = cls()
        self.shm = _attach_untracked(name)
        self.arr = np.ndarray(ds.shape, ds.dtype, buffer=self.shm.buf)
        return self

    def batch(self, idx: np.ndarray) -> np.ndarray:
        """``arr[idx]``."""
        return self.arr[idx]

    def row(self, i: int) -> np.ndarray:
        """``arr[i].copy()``."""
        return self.arr[i].copy()

    def close(self) -> None:
        """Unmap the block."""
        self.arr = None
        self.shm.close()


class PlainLoaderPeer(LoaderPeer):
    """A numpy array on a ``multiprocessing.shared_memory`` block."""

    label = "shared_memory array"
    reader_cls = PlainLoaderReader
    batch_how = "arr[idx]"
    row_how = "arr[i].copy()"
    _shm: Any = None

    def create(self, data: np.ndarray, pool: Any) -> None:
        """Create the block and copy the rows in."""
        from multiprocessing import shared_memory

        self.name = _unique("lplain")
        self._shm = shared_memory.SharedMemory(self.name, create=True, size=self.ds.nbytes)
        np.copyto(np.ndarray(self.ds.shape, self.ds.dtype, buffer=self._shm.buf), data)

    def handle(self) -> tuple[str, Dataset]:
        """The block's name."""
        return (self.name, self.ds)

    def destroy(self) -> None:
        """Unmap and unlink the block."""
        if self._shm is not None:
            with contextlib.suppress(Exception):
                self._shm.close()
            with contextlib.suppress(Exception):
                self._shm.unlink()
            self._shm = None


# -------------------------------------------------------------------------------- sharedzarr


def _fancy_works(arr: Any, data: np.ndarray) -> bool:
    """True if ``arr[idx]`` with an index array returns numpy's answer."""
    idx = np.array([3, 0, min(5, data.shape[0] - 1)])
    try:
        return bool(np.array_equal(np.asarray(arr[idx]), data[idx]))
    except Exception:
        return False


class SzLoaderReader(LoaderReader):
    """``a[idx]`` (or the per-row fallback) and ``a[i]`` on a sharedzarr array."""

    @classmethod
    def attach(cls, handle: tuple[str, bool]) -> SzLoaderReader:
        """``sz.open(name)``."""
        import sharedzarr as sz

        name, fancy = handle
        self = cls()
        self.arr = sz.open(name)
        self.fancy = fancy
        return self

    def batch(self, idx: np.ndarray) -> np.ndarray:
        """``a[idx]``, or ``np.stack([a[int(i)] for i in idx])`` without advanced indexing."""
        a = self.arr
        if self.fancy:
            return a[idx]
        return np.stack([a[int(i)] for i in idx])

    def row(self, i: int) -> np.ndarray:
        """``a[i]``."""
        return self.arr[i]

    def close(self) -> None:
        """Close the handle."""
        self.arr.close()


class SzLoaderPeer(LoaderPeer):
    """A sharedzarr array (``storage="shm"``) chunked in whole rows."""

    label = "sharedzarr shm"
    reader_cls = SzLoaderReader
    row_how = "a[i]"
    arr: Any = None
    name: str | None = None
    fancy = False

    @classmethod
    def unavailable(cls) -> str | None:
        """Unavailable until ``sharedzarr.create`` exists."""
        return sharedzarr_unavailable()

    def create(self, data: np.ndarray, pool: Any) -> None:
        """``sz.create`` and ``set_slice``; find out whether ``a[idx]`` works."""
        import sharedzarr as sz

        self.name = _unique("l")
        self.arr = sz.create(
            shape=self.ds.shape, chunks=self.ds.chunks, dtype=self.ds.dtype, table_name=self.name
        )
        self.arr.set_slice(data, start=(0, 0), stop=self.ds.shape)
        self.fancy = _fancy_works(self.arr, data)
        self.batch_how = "a[idx]" if self.fancy else "np.stack([a[int(i)] for i in idx]) fallback"

    def handle(self) -> tuple[str, bool]:
        """The table name, and whether to use ``a[idx]``."""
        assert self.name is not None
        return (self.name, self.fancy)

    def destroy(self) -> None:
        """Close and delete the table."""
        if self.arr is not None:
            with contextlib.suppress(Exception):
                self.arr.close()
            self.arr = None
        if self.name is not None:
            _sz_remove_table(self.name)
            self.name = None


# ------------------------------------------------------------------------------------ LMDB


class LmdbLoaderReader(LoaderReader):
    """Rows out of LMDB values that each hold one chunk of rows."""

    @classmethod
    def attach(cls, handle: tuple[str, int, Dataset]) -> LmdbLoaderReader:
        """``lmdb.open(path)``."""
        path, map_size, ds = handle
        self = cls()
        self.env = _lmdb_open(path, map_size)
        self.ds = ds
        self.ncols = ds.shape[1]
        self.rows_per_chunk = ds.chunks[0]
        self.row_nbytes = ds.shape[1] * ds.itemsize
        return self

    def batch(self, idx: np.ndarray) -> np.ndarray:
        """One read transaction; one ``get`` of the row's chunk and one row copy per row."""
        out = np.empty((len(idx), self.ncols), self.ds.dtype)
        rpc, rb, dt, nc = self.rows_per_chunk, self.row_nbytes, self.ds.dtype, self.ncols
        with self.env.begin(buffers=True) as txn:
            get = txn.get
            for n, i in enumerate(idx.tolist()):
                c, r = divmod(i, rpc)
                out[n] = np.frombuffer(get(b"%d" % c), dt, count=nc, offset=r * rb)
        return out

    def row(self, i: int) -> np.ndarray:
        """One read transaction, one ``get``, a copy of the row."""
        c, r = divmod(i, self.rows_per_chunk)
        with self.env.begin(buffers=True) as txn:
            return np.frombuffer(
                txn.get(b"%d" % c), self.ds.dtype, count=self.ncols, offset=r * self.row_nbytes
            ).copy()

    def close(self) -> None:
        """Close the environment."""
        _lmdb_close(self.env)


class LmdbLoaderPeer(LoaderPeer):
    """LMDB on /dev/shm at its best (see :func:`benchmarks.peers._lmdb_open`), one key per
    chunk of rows."""

    label = "LMDB (/dev/shm)"
    reader_cls = LmdbLoaderReader
    batch_how = "one key per chunk of rows, one txn per batch"
    row_how = "one key per chunk of rows, one txn per row"
    path: str | None = None
    env: Any = None

    def create(self, data: np.ndarray, pool: Any) -> None:
        """One write transaction, one ``put`` per chunk of rows."""
        self.path = os.path.join(SHM_DIR, _unique("llmdb"))
        self.map_size = 2 * self.ds.nbytes + (64 << 20)
        self.env = _lmdb_open(self.path, self.map_size)
        rpc = self.ds.chunks[0]
        with self.env.begin(write=True) as txn:
            for c in range(self.ds.shape[0] // rpc):
                txn.put(b"%d" % c, np.ascontiguousarray(data[c * rpc : (c + 1) * rpc]).data)

    def handle(self) -> tuple[str, int, Dataset]:
        """The environment's path."""
        assert self.path is not None
        return (self.path, self.map_size, self.ds)

    def destroy(self) -> None:
        """Close and remove the environment."""
        if self.env is not None:
            with contextlib.suppress(Exception):
                _lmdb_close(self.env)
            self.env = None
        if self.path:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


# ------------------------------------------------------------------------ multiprocessing.Queue


def producer_main(q: Any, stop: Any, ds: Dataset, seed: int, batch_rows: int) -> None:
    """The Queue peer's producer: put random batches of rows into ``q`` until ``stop`` is set.

    Parameters
    ----------
    q : multiprocessing.Queue
        The workers' batch queue (bounded: ``put`` blocks while it is full).
    stop : multiprocessing.Event
        Set by the parent to end the producer.
    ds : Dataset
        The rows.
    seed : int
        Seed of the data (:func:`loader_data`) and of the batches.
    batch_rows : int
        Rows per batch.
    """
    data = loader_data(ds, seed)
    rng = np.random.default_rng(seed + 7)
    n = ds.shape[0]
    while not stop.is_set():
        batch = data[rng.integers(0, n, batch_rows)]
        while not stop.is_set():
            try:
                q.put(batch, timeout=0.05)
                break
            except queue_mod.Full:
                continue


class QueueLoaderReader(LoaderReader):
    """``q.get()`` of batches pickled by the producer process."""

    @classmethod
    def attach(cls, handle: None) -> QueueLoaderReader:
        """Take this worker's queue (inherited at spawn)."""
        if WORKER_QUEUE is None:
            raise RuntimeError("this process has no batch queue (not a benchmark worker)")
        self = cls()
        self.q = WORKER_QUEUE
        return self

    def batch(self, idx: np.ndarray) -> np.ndarray:
        """``q.get()`` (the producer chose the rows)."""
        return self.q.get(timeout=60)


class QueueLoaderPeer(LoaderPeer):
    """A producer process pickling batches through a ``multiprocessing.Queue``."""

    label = "multiprocessing.Queue"
    reader_cls = QueueLoaderReader
    batch_how = "a producer process pickles random batches into a Queue"
    proc: Any = None

    def create(self, data: np.ndarray, pool: Any) -> None:
        """Start the producer on the pool's queue (it makes its own copy of the rows)."""
        self.q = pool.queue
        self.stop = pool.ctx.Event()
        self.proc = pool.ctx.Process(
            target=producer_main,
            args=(self.q, self.stop, self.ds, self.seed, pool.batch_rows),
            daemon=True,
            name="szbench-producer",
        )
        self.proc.start()
        self.q.get(timeout=120)  # wait until it produces (it has made its copy of the data)

    def handle(self) -> None:
        """Nothing: the workers already hold the queue."""
        return None

    def destroy(self) -> None:
        """Stop the producer; drain the queue so that it can exit and leaves nothing behind."""
        if self.proc is None:
            return
        self.stop.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(queue_mod.Empty):
                while True:
                    self.q.get(timeout=0.05)
            if not self.proc.is_alive():
                break
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(5)
        with contextlib.suppress(queue_mod.Empty, OSError, ValueError):
            while True:
                self.q.get(timeout=0.1)
        self.proc = None


#: workload (l) peers, in table order
LOADER_PEERS: list[type[LoaderPeer]] = [
    PlainLoaderPeer,
    SzLoaderPeer,
    QueueLoaderPeer,
    LmdbLoaderPeer,
]
