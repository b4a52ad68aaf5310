"""Peers of the write workloads that are not about a whole array: (j) and (k).

(j) lock hand-off
    Two worker processes share one writer lock: a sharedzarr :class:`~sharedzarr.Table`'s
    ``with t.writer():``; beside it LMDB's write transaction (``env.begin(write=True)``, a
    process-shared robust mutex) and a blocking ``fcntl.flock`` on a file in /dev/shm (the
    kernel wakes the waiter: what a lock that never polls costs here). Writer A holds the lock;
    writer B blocks in it; A stamps ``time.perf_counter_ns()`` into a shared-memory block just
    before it leaves the ``with``, and B stamps its first statement inside. The difference is
    the hand-off latency (the clock is CLOCK_MONOTONIC, the same in every process). See
    :func:`benchmarks.workloads.lock_handoff`.
(k) append
    Appending one frame to a growing array, in this process: sharedzarr ``a.append(frame)``;
    a preallocated ``shared_memory`` block that receives the frame with ``np.copyto`` (the cost
    of the copy alone); LMDB, one write transaction per frame under a new key; and the floor
    of a store that takes new memory for each frame, as a growing array does: the frame
    copied into pages of a /dev/shm file that this append allocates (``posix_fallocate``,
    then ``MADV_POPULATE_WRITE``, the fastest of the ways measured here: the kernel allocates
    and zeroes the pages, and maps them in).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import mmap
import os
import shutil
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

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
    "APPEND_PEERS",
    "HANDOFF_PEERS",
    "HandoffPeer",
    "HandoffReader",
    "STAMP_SLOTS",
]

#: int64 words of the stamp block before the time stamps (the protocol's counters)
STAMP_SLOTS = 8


# -------------------------------------------------------------------------- (j) lock hand-off


class HandoffReader(Reader):
    """A writer lock and the stamp block, attached in a worker.

    Attributes
    ----------
    hold : callable
        Returns a context manager that holds the writer lock.
    stamps : numpy.ndarray
        int64 words in shared memory: :data:`STAMP_SLOTS` counters, then ``n`` release stamps,
        then ``n`` acquire stamps.
    """

    hold: Callable[[], Any]
    stamps: np.ndarray

    @classmethod
    def attach(cls, handle: tuple[str, Any, str, int]) -> HandoffReader:
        """Open the lock's owner (a Table, an LMDB environment) and the stamp block."""
        kind, arg, stamps_name, n = handle
        self = cls()
        self.kind = kind
        if kind == "sz":
            import sharedzarr as sz

            self.obj = sz.Table.attach(arg)
            self.hold = self.obj.writer
        elif kind == "flock":
            fd = self.obj = os.open(arg, os.O_RDWR)
            self.hold = lambda: _Flock(fd)
        else:
            path, map_size = arg
            self.obj = _lmdb_open(path, map_size)
            env = self.obj
            self.hold = lambda: env.begin(write=True)
        self.shm = _attach_untracked(stamps_name)
        self.stamps = np.ndarray((STAMP_SLOTS + 2 * n,), np.int64, buffer=self.shm.buf)
        return self

    def close(self) -> None:
        """Detach."""
        self.stamps = None  # type: ignore[assignment]
        self.shm.close()
        if self.kind == "sz":
            self.obj.close()
        elif self.kind == "flock":
            os.close(self.obj)
        else:
            _lmdb_close(self.obj)


class _Flock:
    """``with _Flock(fd):`` holds ``fcntl.flock(fd, LOCK_EX)`` (blocking)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


class HandoffPeer:
    """Creating side of a (j) peer: the lock's owner and the stamp block.

    Parameters
    ----------
    n : int
        Hand-offs per repetition (the size of the stamp block).
    """

    label: ClassVar[str] = "?"
    kind: ClassVar[str] = "?"
    reader_cls = HandoffReader
    _stamps: Any = None

    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the peer cannot run here, or None."""
        return None

    def create(self) -> None:
        """Make the lock's owner and the stamp block."""
        from multiprocessing import shared_memory

        self.stamps_name = _unique("stamps")
        self._stamps = shared_memory.SharedMemory(
            self.stamps_name, create=True, size=8 * (STAMP_SLOTS + 2 * self.n)
        )
        self.stamps = np.ndarray((STAMP_SLOTS + 2 * self.n,), np.int64, buffer=self._stamps.buf)
        self._create()

    def _create(self) -> None:
        raise NotImplementedError

    def _arg(self) -> Any:
        raise NotImplementedError

    def reset(self) -> None:
        """Zero the stamp block before a repetition."""
        self.stamps[:] = 0

    def handle(self) -> tuple[str, Any, str, int]:
        """Picklable handle for :meth:`HandoffReader.attach`."""
        return (self.kind, self._arg(), self.stamps_name, self.n)

    def latencies_us(self) -> np.ndarray:
        """The hand-off latencies of the last repetition, in µs."""
        s, n = self.stamps, self.n
        rel = s[STAMP_SLOTS : STAMP_SLOTS + n]
        acq = s[STAMP_SLOTS + n : STAMP_SLOTS + 2 * n]
        return (acq - rel).astype(np.float64) / 1e3

    def destroy(self) -> None:
        """Remove the stamp block and the lock's owner. Idempotent; never raises."""
        if self._stamps is not None:
            self.stamps = None  # type: ignore[assignment]
            with contextlib.suppress(Exception):
                self._stamps.close()
            with contextlib.suppress(Exception):
                self._stamps.unlink()
            self._stamps = None
        self._destroy()

    def _destroy(self) -> None:
        pass


class SzHandoffPeer(HandoffPeer):
    """The writer lock of a sharedzarr Table: ``with t.writer():``."""

    label = "sharedzarr Table.writer()"
    kind = "sz"
    name: str | None = None
    table: Any = None

    @classmethod
    def unavailable(cls) -> str | None:
        """Unavailable until ``sharedzarr`` imports."""
        return sharedzarr_unavailable()

    def _create(self) -> None:
        import sharedzarr as sz

        self.name = _unique("lock")
        self.table = sz.Table.create(self.name)

    def _arg(self) -> Any:
        return self.name

    def _destroy(self) -> None:
        if self.table is not None:
            with contextlib.suppress(Exception):
                self.table.close()
            self.table = None
        if self.name is not None:
            _sz_remove_table(self.name)
            self.name = None


class LmdbHandoffPeer(HandoffPeer):
    """LMDB's writer mutex: ``with env.begin(write=True):``."""

    label = "LMDB (/dev/shm) write txn"
    kind = "lmdb"
    path: str | None = None
    env: Any = None

    def _create(self) -> None:
        self.path = os.path.join(SHM_DIR, _unique("lmdbj"))
        self.map_size = 16 << 20
        self.env = _lmdb_open(self.path, self.map_size)

    def _arg(self) -> Any:
        return (self.path, self.map_size)

    def _destroy(self) -> None:
        if self.env is not None:
            with contextlib.suppress(Exception):
                _lmdb_close(self.env)
            self.env = None
        if self.path:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


class FlockHandoffPeer(HandoffPeer):
    """A blocking ``fcntl.flock`` on a file in /dev/shm: the kernel wakes the waiter."""

    label = "fcntl.flock (blocking)"
    kind = "flock"
    path: str | None = None

    def _create(self) -> None:
        self.path = os.path.join(SHM_DIR, _unique("flock"))
        with open(self.path, "wb"):
            pass

    def _arg(self) -> Any:
        return self.path

    def _destroy(self) -> None:
        if self.path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None


#: (j) peers, in table order
HANDOFF_PEERS: list[type[HandoffPeer]] = [SzHandoffPeer, LmdbHandoffPeer, FlockHandoffPeer]


# --------------------------------------------------------------------------------- (k) append


class AppendPeer:
    """Creating side of a (k) peer: a growing array of frames, in this process.

    Parameters
    ----------
    frame : tuple of int
        Shape of one float64 frame, ``(1, h, w)``.
    capacity : int
        Most frames appended between two :meth:`reset` calls.
    """

    label: ClassVar[str] = "?"

    def __init__(self, frame: tuple[int, ...], capacity: int) -> None:
        self.frame, self.capacity = frame, capacity
        self.frame_nbytes = int(np.prod(frame)) * 8

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the peer cannot run here, or None."""
        return None

    def create(self) -> None:
        """Make the empty store."""
        raise NotImplementedError

    def append(self, frame: np.ndarray) -> None:
        """Append one frame (timed)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Back to zero frames (not timed)."""
        raise NotImplementedError

    def destroy(self) -> None:
        """Remove the store. Idempotent; never raises."""


class SzAppendPeer(AppendPeer):
    """``a.append(frame)`` on a sharedzarr array of shape ``(0, h, w)``, one frame per chunk."""

    label = "sharedzarr shm a.append(frame)"
    arr: Any = None
    name: str | None = None

    @classmethod
    def unavailable(cls) -> str | None:
        """Unavailable until ``sharedzarr.create`` exists."""
        return sharedzarr_unavailable()

    def create(self) -> None:
        """``sz.create(shape=(0, h, w), chunks=(1, h, w))``."""
        import sharedzarr as sz

        self.name = _unique("k")
        self.arr = sz.create(
            shape=(0,) + self.frame[1:], chunks=self.frame, dtype="float64", table_name=self.name
        )

    def append(self, frame: np.ndarray) -> None:
        """``a.append(frame)``."""
        self.arr.append(frame)

    def reset(self) -> None:
        """``a.resize((0, h, w))``."""
        self.arr.resize((0,) + self.frame[1:])

    def destroy(self) -> None:
        """Close and delete the table."""
        if self.arr is not None:
            with contextlib.suppress(Exception):
                self.arr.close()
            self.arr = None
        if self.name is not None:
            _sz_remove_table(self.name)
            self.name = None


class PlainAppendPeer(AppendPeer):
    """``np.copyto`` of the frame into the next slot of a preallocated shared_memory block."""

    label = "shared_memory array np.copyto(buf[n], frame)"
    _shm: Any = None

    def create(self) -> None:
        """Create the block for ``capacity`` frames and touch its pages."""
        from multiprocessing import shared_memory

        self.name = _unique("kplain")
        self._shm = shared_memory.SharedMemory(
            self.name, create=True, size=self.capacity * self.frame_nbytes
        )
        self.buf = np.ndarray((self.capacity,) + self.frame[1:], np.float64, buffer=self._shm.buf)
        self.buf.fill(0)
        self.n = 0

    def append(self, frame: np.ndarray) -> None:
        """Copy into slot ``n``; ``n += 1``."""
        np.copyto(self.buf[self.n : self.n + 1], frame)
        self.n += 1

    def reset(self) -> None:
        """``n = 0``."""
        self.n = 0

    def destroy(self) -> None:
        """Unmap and unlink the block."""
        if self._shm is not None:
            self.buf = None  # type: ignore[assignment]
            with contextlib.suppress(Exception):
                self._shm.close()
            with contextlib.suppress(Exception):
                self._shm.unlink()
            self._shm = None


class LmdbAppendPeer(AppendPeer):
    """One LMDB write transaction per frame, under the next key (``append=True``)."""

    label = "LMDB (/dev/shm) txn.put(next key, frame)"
    path: str | None = None
    env: Any = None

    def create(self) -> None:
        """Open a new environment."""
        self.path = os.path.join(SHM_DIR, _unique("lmdbk"))
        self.map_size = 3 * self.capacity * self.frame_nbytes + (64 << 20)
        self.env = _lmdb_open(self.path, self.map_size)
        self.n = 0

    def append(self, frame: np.ndarray) -> None:
        """``txn.put(n.to_bytes(8, "big"), frame, append=True)``."""
        with self.env.begin(write=True) as txn:
            txn.put(self.n.to_bytes(8, "big"), frame.data, append=True)
        self.n += 1

    def reset(self) -> None:
        """Empty the database."""
        with self.env.begin(write=True) as txn:
            txn.drop(self.env.open_db(txn=txn), delete=False)
        self.n = 0

    def destroy(self) -> None:
        """Close and remove the environment."""
        if self.env is not None:
            with contextlib.suppress(Exception):
                _lmdb_close(self.env)
            self.env = None
        if self.path:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


_MADV_POPULATE_WRITE = 23  # Linux 5.14+


class FreshPagesAppendPeer(AppendPeer):
    """The frame copied into pages of a /dev/shm file that each append allocates: what new
    memory costs (the floor of an append that grows its store, in this process)."""

    label = "fresh /dev/shm pages: fallocate + copy (floor)"
    path: str | None = None
    _mm: Any = None

    def create(self) -> None:
        """A sparse file for ``capacity`` frames, mapped."""
        self.path = os.path.join(SHM_DIR, _unique("kfresh"))
        self.size = self.capacity * self.frame_nbytes
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.ftruncate(self.fd, self.size)
        self._mm = mmap.mmap(self.fd, self.size)
        self._anchor: Any = ctypes.c_char.from_buffer(self._mm)  # (released before close)
        self._base = ctypes.addressof(self._anchor)
        libc = ctypes.CDLL(None, use_errno=True)
        self._madvise = libc.madvise
        self._madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.n = 0

    def append(self, frame: np.ndarray) -> None:
        """Allocate the next frame's pages, map them in, copy the frame there."""
        nb = self.frame_nbytes
        off = self.n * nb
        os.posix_fallocate(self.fd, off, nb)
        self._madvise(self._base + off, nb, _MADV_POPULATE_WRITE)  # (ignored if unknown)
        dst = np.frombuffer(self._mm, np.float64, nb // 8, off)
        np.copyto(dst, frame.reshape(-1))
        del dst
        self.n += 1

    def reset(self) -> None:
        """Give every page back (truncate to 0, then grow the file again, sparse)."""
        os.ftruncate(self.fd, 0)
        os.ftruncate(self.fd, self.size)
        self.n = 0

    def destroy(self) -> None:
        """Unmap, close and remove the file."""
        if self._mm is not None:
            self._anchor = None
            with contextlib.suppress(Exception):
                self._mm.close()
            with contextlib.suppress(Exception):
                os.close(self.fd)
            self._mm = None
        if self.path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None


#: (k) peers, in table order
APPEND_PEERS: list[type[AppendPeer]] = [
    PlainAppendPeer,
    FreshPagesAppendPeer,
    SzAppendPeer,
    LmdbAppendPeer,
]
