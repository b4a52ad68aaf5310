"""The single-writer lock of a table: robust against writers that die, fair, and fast to hand over.

The lock is an exclusive ``flock`` on a descriptor of the table's header segment.  The
kernel releases a ``flock`` when its holder's last descriptor closes, which includes death
by SIGKILL, so a crashed writer blocks the next one for no longer than it takes the kernel
to reap it (LMDB's robust-mutex problem does not arise).  Crash *consistency* is the
table's job: a writer marks the header dirty while it works and the next writer repairs.

Descriptors and fork
    ``flock`` locks belong to an open file description, so:

    * threads of one process share the description, and a :class:`threading.RLock`
      serialises them first (the lock is reentrant per thread);
    * a forked child must not keep the parent's description: if the parent died holding
      the lock, a child that still had the description open would keep the lock held for
      as long as it lives.  Given a *path*, the lock opens its own description (one per
      process, ``O_CLOEXEC``) and an at-fork hook closes the child's inherited copy.
      Closing is not unlocking: the parent's hold is untouched while it lives.

Waiting (the hand-off)
    ``flock`` has no timed wait.  An uncontended acquire is one non-blocking ``flock``.  A
    contended one watches, then waits on a futex: the third hint word (below) is a
    *release sequence* that every release bumps, after its ``LOCK_UN``, waking the
    processes that sleep on it when one announced itself.  A waiter loads the sequence,
    tries the ``flock``, and on failure first looks at the sequence: busy for ``SPIN_S``,
    then calling ``sched_yield`` between looks (its CPU goes to any other runnable task),
    until ``YIELD_SPIN_S`` after it began to wait.  A release in that window hands over in
    microseconds; a sleeping waiter's wake-up is a process switch, 50-150 µs on a VM.  The
    price is CPU: a waiter for a lock held long burns up to ``YIELD_SPIN_S`` per acquire.
    Then it sleeps with ``FUTEX_WAIT`` while the sequence still holds that value (the
    kernel checks it atomically, so a release between the try and the sleep is never
    missed), at most ``ANNOUNCE_S`` at a time: a holder killed by SIGKILL bumps nothing,
    and its waiter finds the lock free at its next try. Without hint words (or a futex), a
    waiter blocks in ``flock(LOCK_EX)`` on a helper thread while the caller waits on an
    event with its timeout; a waiter that times out marks its wait cancelled, and if its
    helper thread is granted the lock later, it gives it straight back (under the
    in-process lock, so it never releases a hold another thread of this process has taken
    since).

Fairness (the hint words)
    The kernel wakes every waiter on release, but a writer that releases and re-acquires
    in a loop is already running and usually wins again: another process could wait
    forever.  So four header words, given to this module and written by no other:

    * ``want``: the pid of a process blocked waiting (a hint; waiters store it, and store
      it again every millisecond while they wait, so a waiter that was overwritten or
      cleared announces itself again);
    * ``grants``: how many times the lock was granted (stored only by the holder);
    * ``seq``: the release sequence of the hand-off (stored only by a releaser);
    * ``last``: the pid of the process that released last (stored only by a releaser; a
      holder that sees another pid there expects to be waited for, see :meth:`contended`).

    An acquirer that sees another process's pid in ``want`` first waits (yielding its CPU),
    up to :data:`YIELD_NS`, for ``grants`` to move: the waiter, which sees the release,
    gets in first.  A grant clears ``want`` when it names the new holder.  So with two writers
    they alternate; with more, each announced waiter is next at the following hand-off.
    A stale ``want`` (its waiter died or gave up) costs at most one :data:`YIELD_NS`
    wait, after which the acquirer clears it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable

from . import _proc
from .errors import LockTimeoutError

__all__ = [
    "ReservationHold",
    "WriterLock",
    "YIELD_NS",
    "hold_lifetime",
    "lifetime_held",
    "release_lifetime",
    "reservation_held",
]

#: How long an acquirer lets an announced waiter go first before it clears the hint.
YIELD_NS = 2_000_000
#: How often a waiting process announces itself again in the ``want`` word.
ANNOUNCE_S = 1e-3
#: How long a waiting process watches the release sequence before it sleeps on it: busy
#: for ``SPIN_S``, then yielding its CPU between looks up to ``YIELD_SPIN_S`` after it
#: began to wait (see "Waiting" above).
SPIN_S = 100e-6
YIELD_SPIN_S = 5e-3
WANT = 0
GRANTS = 1
SEQ = 2
LAST = 3
_SYS_FUTEX = 202  # x86-64 (the only platform tables run on, see _platform)
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1  # shared (not FUTEX_PRIVATE): the word is in shared memory
_futex_fn: Callable[..., int] | None = None


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _futex() -> Callable[..., int]:
    """libc's ``syscall``, for ``futex(2)`` (Python has no binding of its own)."""
    global _futex_fn
    if _futex_fn is None:
        fn = ctypes.CDLL(None, use_errno=True).syscall
        fn.restype = ctypes.c_long
        _futex_fn = fn
    return _futex_fn


def _seq_address(hint: memoryview) -> int:
    """The address of the release-sequence word of a hint view (its low 32 bits)."""
    word = ctypes.c_uint64.from_buffer(hint, SEQ * 8)
    try:
        return ctypes.addressof(word)
    finally:
        del word  # releases the buffer export at once


def _wake(hint: memoryview, me: int) -> None:
    """Bump the release sequence and wake the processes sleeping on it (after LOCK_UN)."""
    if len(hint) > LAST and hint[LAST] != me:
        hint[LAST] = me
    hint[SEQ] += 1
    if hint[WANT]:  # someone announced a wait: wake it (no syscall otherwise)
        _futex()(
            _SYS_FUTEX, ctypes.c_void_p(_seq_address(hint)), _FUTEX_WAKE, 1 << 30, None, None, 0
        )


_LOCKS: weakref.WeakSet[WriterLock] = weakref.WeakSet()
# the thread of this process that holds the flock of a file (device, inode), through
# whichever WriterLock: another lock of the same file in the same thread would wait on
# itself forever (two handles of one table, sessions nested), so it is refused at once
_HELD_BY: dict[tuple[int, int], int] = {}


def _after_fork_in_child() -> None:
    _HELD_BY.clear()
    for lock in list(_LOCKS):
        lock.reset_after_fork()
    for hold in list(_HOLDS):  # (closing the child's copy leaves the parent's hold alone)
        hold.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _deadline(timeout: float | None, start: float | None) -> float | None:
    """When a wait for the lock that began at ``start`` (None: now) must end."""
    if timeout is None:
        return None
    return (time.monotonic() if start is None else start) + max(timeout, 0.0)


class _Wait:
    """One blocking ``flock`` on a helper thread; the outcome is decided once."""

    __slots__ = ("mu", "done", "outcome", "error")

    def __init__(self) -> None:
        self.mu = threading.Lock()
        self.done = threading.Event()
        self.outcome = ""  # "" waiting, "granted", "cancelled", "error"
        self.error: BaseException | None = None


class WriterLock:
    """A reentrant, cross-process, cross-thread writer lock with fair, sleep-free hand-off.

    Parameters
    ----------
    fd_source : str or callable
        The path of the file to ``flock`` (the lock then owns its descriptor: it opens
        one per process and closes a forked child's copy), or a callable returning a
        descriptor that the caller owns.
    holder : callable
        Returns the pid recorded as the current holder, for timeout messages.
    name : str
        The table name, for messages.
    hint_words : callable, optional
        Returns a writable two-word ``'Q'`` memoryview ``[want, grants]`` in shared
        memory (see the module docstring), or None.  Without it the lock is not fair.
    """

    _fd = -1
    _fd_pid = 0
    _file_id: tuple[int, int] | None = None  # (device, inode) of the locked file
    _held_hint: memoryview | None = None  # the hint view of the current hold

    def __init__(
        self,
        fd_source: str | Callable[[], int],
        holder: Callable[[], int],
        name: str,
        hint_words: Callable[[], memoryview | None] | None = None,
    ) -> None:
        self._path = fd_source if isinstance(fd_source, str) else None
        self._fd_getter = None if isinstance(fd_source, str) else fd_source
        self._holder = holder
        self._name = name
        self._hint_words = hint_words
        self._rlock = threading.RLock()
        self._depth = 0
        _LOCKS.add(self)

    @property
    def depth(self) -> int:
        """How many times the calling thread holds the lock (0 when it does not)."""
        return self._depth if self._owned() else 0

    def outermost(self) -> bool:
        """Whether the calling thread, which holds the lock, holds it once (its next
        :meth:`release` releases the OS lock)."""
        return self._depth == 1

    def _owned(self) -> bool:
        return bool(self._rlock._is_owned())  # type: ignore[attr-defined]

    def fileno(self) -> int:
        """The descriptor the lock is taken on (opened on first use in this process)."""
        if self._fd_getter is not None:
            return self._fd_getter()
        if self._fd < 0 or self._fd_pid != _proc.pid():
            assert self._path is not None
            self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            self._fd_pid = _proc.pid()
        return self._fd

    def close(self) -> None:
        """Close the lock's own descriptor (never while held); idempotent."""
        if self._fd >= 0 and self._fd_pid == os.getpid() and not self._depth:
            fd, self._fd = self._fd, -1
            try:
                os.close(fd)
            except OSError:
                pass

    def contended(self) -> bool:
        """While held: True when another process waits for the lock, or held it last (two
        writers taking turns: the other one is about to wait)."""
        hint = self._held_hint
        if hint is None:
            return False
        me = _proc.pid()
        want = hint[WANT]
        if want and want != me:
            return True
        last = hint[LAST] if len(hint) > LAST else 0
        return bool(last) and last != me

    def acquire_nested(self) -> bool:
        """Take one more level when the calling thread holds the lock already; else do
        nothing and return False (the caller then calls :meth:`acquire`)."""
        if self._depth and self._owned():
            self._rlock.acquire()
            self._depth += 1
            return True
        return False

    def acquire(self, timeout: float | None) -> bool:
        """Acquire the lock; return True when this call took the OS lock (depth 0 -> 1).

        Raises
        ------
        LockTimeoutError
            When ``timeout`` seconds pass first; names the holder's pid.
        """
        rlock = self._rlock
        start = None  # when the wait began, if there was one
        if not rlock.acquire(False):  # another thread of this process has it: wait
            start = time.monotonic()
            if timeout is None:
                rlock.acquire()
            elif not rlock.acquire(timeout=max(timeout, 0.0)):
                raise self._timeout(timeout, in_process=True)
        if self._depth > 0:
            self._depth += 1
            return False
        taken = -1
        try:
            fd = self._fd
            if fd < 0 or self._fd_pid != _proc.pid():
                fd = self.fileno()
            fid = self._file_id
            if fid is None:
                st = os.fstat(fd)
                fid = self._file_id = (st.st_dev, st.st_ino)
            tid = threading.get_ident()
            if _HELD_BY.get(fid) == tid:
                raise RuntimeError(
                    f"this thread already holds the writer lock of table {self._name!r} "
                    "through another handle, so waiting here would never end: write through "
                    "that handle, or leave its writer session first"
                )
            hint = self._hint_words() if self._hint_words is not None else None
            me = _proc.pid()
            deadline = None  # computed when there is something to wait for
            if hint is not None:
                want = hint[WANT]
                if want and want != me:
                    deadline = _deadline(timeout, start)
                    self._let_waiter_in(hint, want, deadline)
            taken = fd  # (from here on an exception unlocks it; unlocking a lock this
            # description does not hold does nothing)
            if not self._try(fd):
                if deadline is None:
                    deadline = _deadline(timeout, start)
                if hint is not None and len(hint) > SEQ:
                    self._sleep_until_free(fd, hint, me, deadline, timeout)
                else:
                    self._block(fd, hint, me, deadline, timeout)
            if hint is not None:  # we hold the lock: the only writer of `grants` now
                hint[GRANTS] += 1
                if hint[WANT] == me:
                    hint[WANT] = 0
            self._held_hint = hint  # the release bumps its sequence
            _HELD_BY[fid] = tid
            self._depth = 1
        except BaseException:
            if taken >= 0:  # (a signal handler that raised after the lock was taken)
                if self._file_id is not None:
                    _HELD_BY.pop(self._file_id, None)
                with contextlib.suppress(OSError, ValueError):
                    fcntl.flock(taken, fcntl.LOCK_UN)
            self._rlock.release()
            raise
        return True

    @staticmethod
    def _try(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR):
                raise
            return False

    @staticmethod
    def _let_waiter_in(hint: memoryview, want: int, deadline: float | None) -> None:
        """Give the announced waiter ``want`` the next grant (bounded; see the docstring)."""
        g = hint[GRANTS]
        end = time.monotonic_ns() + YIELD_NS
        if deadline is not None:
            end = min(end, int(deadline * 1e9))
        while hint[GRANTS] == g and hint[WANT] == want:
            if time.monotonic_ns() >= end:
                if hint[WANT] == want:
                    hint[WANT] = 0  # stale: its waiter died or gave up (a live one re-announces)
                return
            os.sched_yield()  # (a waiter looks on, see SPIN_S: it takes the grant in µs)

    def _sleep_until_free(
        self, fd: int, hint: memoryview, me: int, deadline: float | None, timeout: float | None
    ) -> None:
        """Wait for the lock on the release sequence's futex (the hand-off, see above)."""
        addr = ctypes.c_void_p(_seq_address(hint))
        ts = _Timespec()
        futex = _futex()
        clock = time.perf_counter
        yield_until = clock() + YIELD_SPIN_S
        while True:
            seq = hint[SEQ] & 0xFFFFFFFF  # loaded before the try: a release after it wakes us
            if hint[WANT] != me:
                hint[WANT] = me  # announce (again): releasers wake us and let us in first
            if self._try(fd):
                return
            step = ANNOUNCE_S
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    if hint[WANT] == me:
                        hint[WANT] = 0
                    raise self._timeout(timeout or 0.0)
                step = min(step, left)
            # a short hold ends while we look: watch the sequence first (a sleeping waiter
            # costs a wake-up, tens of µs on a VM), then sleep on it
            now = clock()
            end = now + min(SPIN_S, step)
            while hint[SEQ] & 0xFFFFFFFF == seq and clock() < end:
                pass
            end = min(yield_until, now + step)
            while hint[SEQ] & 0xFFFFFFFF == seq and clock() < end:
                os.sched_yield()
            if hint[SEQ] & 0xFFFFFFFF != seq or clock() < yield_until:
                continue  # (announce again, and look on)
            ts.tv_sec, ts.tv_nsec = int(step), int((step % 1) * 1e9)
            futex(_SYS_FUTEX, addr, _FUTEX_WAIT, seq, ctypes.byref(ts), None, 0)

    def _block(
        self,
        fd: int,
        hint: memoryview | None,
        me: int,
        deadline: float | None,
        timeout: float | None,
    ) -> None:
        """Wait for the lock in a blocking ``flock`` on a helper thread (the hand-off)."""
        if deadline is None and hint is None:  # nothing to time out or announce: block here
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    return
                except InterruptedError:
                    continue
        w = _Wait()
        threading.Thread(
            target=self._flock_blocking, args=(fd, w), name="sharedzarr-lock-wait", daemon=True
        ).start()
        while True:
            if hint is not None and hint[WANT] != me:
                hint[WANT] = me  # announce (again): releasers let us in first
            step = ANNOUNCE_S
            if deadline is not None:
                step = min(step, max(deadline - time.monotonic(), 0.0))
            if w.done.wait(step):
                break
            if deadline is not None and time.monotonic() >= deadline:
                with w.mu:
                    if not w.outcome:
                        w.outcome = "cancelled"
                if w.outcome == "cancelled":
                    if hint is not None and hint[WANT] == me:
                        hint[WANT] = 0
                    raise self._timeout(timeout or 0.0)
                break  # granted at the last moment
        if w.outcome == "error":
            assert w.error is not None
            raise w.error

    def _flock_blocking(self, fd: int, w: _Wait) -> None:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                break
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                with w.mu:
                    if not w.outcome:
                        w.outcome, w.error = "error", e
                w.done.set()
                return
        with w.mu:
            if not w.outcome:
                w.outcome = "granted"
                w.done.set()
                return
        # the waiter gave up before the grant: hand the lock straight back, unless a
        # thread of this process holds it by now (the description is shared)
        with self._rlock:
            if self._depth == 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                except (OSError, ValueError):
                    pass

    def release(self) -> bool:
        """Release one level; return True when the OS lock was released."""
        self._depth -= 1
        released = False
        try:
            if self._depth == 0:
                if self._file_id is not None:
                    _HELD_BY.pop(self._file_id, None)
                fd = self._fd
                if fd < 0 or self._fd_pid != _proc.pid():
                    fd = self.fileno()
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                except (OSError, ValueError):
                    pass  # descriptor already closed: the kernel dropped the lock
                released = True
                hint, self._held_hint = self._held_hint, None
                if hint is not None and len(hint) > SEQ:
                    _wake(hint, _proc.pid())
        finally:
            self._rlock.release()
        return released

    def reset_after_fork(self) -> None:
        """In a forked child: hold nothing, and close the inherited description (if ours).

        Closing the child's copy does not unlock the parent's hold; it only stops the
        child from keeping the lock held after the parent dies.
        """
        self._rlock = threading.RLock()
        self._depth = 0
        self._held_hint = None
        if self._fd >= 0 and self._path is not None:
            fd, self._fd = self._fd, -1
            try:
                os.close(fd)
            except OSError:
                pass

    def _timeout(self, timeout: float, in_process: bool = False) -> LockTimeoutError:
        pid: int | None = self._holder() or None
        who = f"process {pid}" if pid else "another process"
        if in_process:
            who = f"another thread of this process ({os.getpid()})"
            pid = os.getpid()
        return LockTimeoutError(
            f"timed out after {timeout:g}s waiting for the writer lock of table "
            f"{self._name!r}, held by {who}; retry, raise `timeout`, or stop that writer",
            holder_pid=pid,
        )


# -- the lifetime lock ---------------------------------------------------------------------
#
# Liveness by pid and start time fails across PID namespaces (containers sharing
# /dev/shm, ``unshare --pid``): there the owner's pid means nothing, or another process.
# So an owner also holds a *shared* open-file-description record lock (``F_OFD_SETLK``) on
# byte 0 of the table's header.  The kernel drops it when the owner's last descriptor of
# that description closes, death by SIGKILL included, in whatever namespace the owner
# runs; a prober asks ``F_OFD_GETLK`` whether anyone holds it.  Record locks and ``flock``
# are independent on Linux, so this never meets the writer lock.  Like the writer lock,
# the descriptor is ``O_CLOEXEC`` and a forked child closes its copy (``release_lifetime``
# from the ownership registry's fork hook): a child must not keep its parent "alive".

_FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux x86-64: type, whence, start, len, pid


def hold_lifetime(path: str) -> int:
    """Open ``path`` (a header) and hold a shared lifetime lock on it; return the descriptor.

    Returns -1 when the kernel has no open-file-description locks (liveness then falls
    back to pid and start time).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_RDLCK, os.SEEK_SET, 0, 1, 0))
    except OSError:
        os.close(fd)
        return -1
    return fd


def release_lifetime(fd: int) -> None:
    """Close a descriptor from :func:`hold_lifetime` (idempotent for -1)."""
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def lifetime_held(fd: int) -> bool:
    """True when some process (any PID namespace) holds the lifetime lock of the file ``fd``."""
    try:
        out = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0))
    except OSError:
        return False
    return bool(_FLOCK.unpack(out)[0] != fcntl.F_UNLCK)


class ReservationHold:
    """The lock of :func:`hold_lifetime` that a writer holds on a data segment while it
    copies a value in without the writer lock (see :func:`reservation_held`).

    A process forked meanwhile (another thread starting a fork-based pool) inherits the
    descriptor, and with it the lock, for as long as it lives: writers would leave the
    segment alone all that time.  So the child releases every hold it inherited at once,
    and a hold released there is not released again (its descriptor number may name
    another file of the child's by then).

    Parameters
    ----------
    path : str
        The segment's file.
    tag : int
        What the caller holds it for (the table's arena id), kept as :attr:`tag`.

    Attributes
    ----------
    fd : int
        The descriptor holding the lock; -1 when released, or when the kernel has no
        open-file-description locks (then nothing is held).
    tag : int
        As given.
    """

    __slots__ = ("__weakref__", "fd", "tag")

    def __init__(self, path: str, tag: int = 0) -> None:
        self.tag = tag
        self.fd = hold_lifetime(path)
        if self.fd >= 0:
            _HOLDS.add(self)

    def release(self) -> None:
        """Close the descriptor, which drops the lock (idempotent)."""
        fd, self.fd = self.fd, -1
        _HOLDS.discard(self)
        release_lifetime(fd)


_HOLDS: weakref.WeakSet[ReservationHold] = weakref.WeakSet()


def reservation_held(path: str) -> bool:
    """True when some process holds a lock of :func:`hold_lifetime` on the file ``path``.

    A writer that copies a value into a data segment outside the writer lock holds such a
    lock on the segment while it copies (``Table.reserve``); writers check it before they
    retire, compact or unlink a segment.  The kernel drops the lock when its holder dies.
    A file that cannot be opened is held by no one.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return lifetime_held(fd)
    finally:
        os.close(fd)
