"""Owner and heir: who owns a table, who inherits it, and what happens when they die.

* The creating process owns a table.  At its exit (atexit, and multiprocessing's
  finalizers for forked children) a table it owns goes to a live heir, stays if
  persistent, or is destroyed (:func:`_exit_cleanup`).
* An owner killed with SIGKILL cannot clean up: a later attach, :func:`probe`,
  ``ls`` or ``gc`` that finds the owner dead promotes a live heir
  (:func:`_promote_heir`, the one place that does) or destroys a non-persistent table.
* After ``fork`` the child owns nothing and resets every handle's lock state.

Liveness
--------
An owner is alive when its ``(pid, start time)`` runs (:mod:`sharedzarr._proc`) *or*
anyone holds the table's lifetime lock (:func:`sharedzarr._lock.hold_lifetime`), which
every process that owns the table holds from the moment it creates or takes it.  The
first holds within one PID namespace; the second in any (containers sharing
``/dev/shm``, ``unshare --pid``), because the kernel releases the lock at death.  What
remains pid-only: an heir's liveness (an heir in another namespace counts as dead), and
an owner that received the table without ever touching it there (``give_away`` to a
process that has not attached it since) is judged by pid alone.

:func:`probe` lives here rather than in :mod:`._catalog` because it applies these
rules; the catalog below it only lists and destroys.

Words stored here, and only here
--------------------------------
``H_OWNER_PID``, ``H_OWNER_START``, ``H_HEIR_PID``, ``H_HEIR_START``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import weakref
from typing import Any

from .. import _layout as L
from .. import _proc
from .._faults import pause_point as _pause_point
from .._lock import hold_lifetime, lifetime_held, release_lifetime
from .._segment import creator_gone, map_os_errors
from .._segment import exists as _seg_exists
from ..errors import AccessDeniedError, CorruptTableError, TableNotFoundError
from ._catalog import _destroy, _wait_for_magic
from ._header import Segment

__all__ = ["probe"]

_OWNED: dict[str, int] = {}  # name -> descriptor holding the lifetime lock (-1: none)
# tables this process attached without owning them: ownership can arrive without a write
# (it inherits as a live heir, or is given the table), so the exit checks these too
_ATTACHED: dict[str, None] = {}
_HANDLES: weakref.WeakSet[Any] = weakref.WeakSet()  # Table handles (reset after fork)
_cleanup_registered = False
_registry_lock = threading.Lock()


def forget_owned(name: str) -> None:
    """This process no longer owns table ``name`` (given away or deleted)."""
    release_lifetime(_OWNED.pop(name, -1))


def register_attached(name: str) -> None:
    """This process attached table ``name``: at exit, release it if it owns it by then."""
    with _registry_lock:
        _ATTACHED[name] = None
    _ensure_cleanup()


def register_handle(t: Any) -> None:
    """Remember handle ``t`` (weakly): a forked child resets its lock state and rooms."""
    _HANDLES.add(t)


def set_owner(H: memoryview, ident: tuple[int, int]) -> None:
    """Store the owner ``(pid, start time)`` (start first: a reader pairs them)."""
    H[L.H_OWNER_START] = ident[1]
    H[L.H_OWNER_PID] = ident[0]


def set_heir(H: memoryview, ident: tuple[int, int] | None) -> None:
    """Store the heir ``(pid, start time)``, or clear it with None."""
    H[L.H_HEIR_START] = ident[1] if ident else 0
    H[L.H_HEIR_PID] = ident[0] if ident else 0


def init_owner(H: memoryview, me: tuple[int, int], heir: tuple[int, int] | None) -> None:
    """A new header: owner ``me`` and the optional heir."""
    H[L.H_OWNER_PID], H[L.H_OWNER_START] = me
    if heir:
        H[L.H_HEIR_PID], H[L.H_HEIR_START] = heir


def _promote_heir(H: memoryview, heir: tuple[int, int]) -> None:
    """The owner is gone and ``heir`` lives: it becomes the owner, and there is no heir."""
    H[L.H_OWNER_START] = heir[1]
    H[L.H_OWNER_PID] = heir[0]
    H[L.H_HEIR_PID] = 0
    H[L.H_HEIR_START] = 0


def _register_owned(name: str, hdr: Segment) -> None:
    """This process owns table ``name`` (header ``hdr``): hold its lifetime lock, and
    release the table at exit."""
    with _registry_lock:
        if name not in _OWNED:
            try:
                _OWNED[name] = hold_lifetime(hdr.reopen_path())
            except OSError:
                _OWNED[name] = -1  # pid liveness only
    _ensure_cleanup()


def _ensure_cleanup() -> None:
    global _cleanup_registered
    with _registry_lock:
        if not _cleanup_registered:
            atexit.register(_exit_cleanup)
            try:  # forked multiprocessing children skip atexit but run these finalizers
                from multiprocessing import util

                util.Finalize(None, _exit_cleanup, exitpriority=-100)
            except Exception:  # pragma: no cover
                pass
            _cleanup_registered = True


def _exit_cleanup() -> None:
    """At exit: delete the tables this process owns, or hand them to a live heir.

    Those it created or wrote as the owner are known; those it only attached are checked
    (one header read each): it may have become their owner since, as a live heir or by
    ``give_away``.
    """
    me = _proc.current()
    for registry in (_OWNED, _ATTACHED):
        for name in list(registry):
            with contextlib.suppress(Exception):
                _release_ownership(name, me)
            fd = registry.pop(name, -1)
            if isinstance(fd, int):
                release_lifetime(fd)


def _after_fork_in_child() -> None:
    global _cleanup_registered
    for fd in _OWNED.values():  # a child must not keep its parent's table alive
        release_lifetime(fd)
    _OWNED.clear()
    _ATTACHED.clear()
    # multiprocessing's fork bootstrap clears the inherited Finalize registry (and
    # skips atexit): register again when this child creates or takes a table
    _cleanup_registered = False
    for t in list(_HANDLES):
        with contextlib.suppress(Exception):
            t._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _release_ownership(name: str, me: tuple[int, int]) -> None:
    """Owner ``me`` exits: hand the table to a live heir, keep it if persistent, else delete."""
    try:
        hdr = Segment.attach(L.segment_names(name)[0], keep_fd=True)
    except Exception:
        return
    try:
        H = hdr.buf.cast("Q")
        try:
            if bytes(hdr.buf[:8]) != L.MAGIC or H[L.H_DELETED]:
                return
            if (H[L.H_OWNER_PID], H[L.H_OWNER_START]) != me:
                return  # given away meanwhile
            heir = (H[L.H_HEIR_PID], H[L.H_HEIR_START])
            if heir[0] and _proc.alive(*heir):
                _promote_heir(H, heir)
                return
            if hdr.buf[19]:  # persistent
                return
        finally:
            H.release()
        _destroy(name, hdr=hdr, still=lambda seg: _still_mine(seg, me))
    finally:
        hdr.close()


def _still_mine(hdr: Segment, me: tuple[int, int]) -> bool:
    """Under the writer lock: still owned by ``me``, no live heir, not persistent."""
    H = hdr.buf.cast("Q")
    try:
        if H[L.H_DELETED] or (H[L.H_OWNER_PID], H[L.H_OWNER_START]) != me or hdr.buf[19]:
            return False
        return not (H[L.H_HEIR_PID] and _proc.alive(H[L.H_HEIR_PID], H[L.H_HEIR_START]))
    finally:
        H.release()


def _owner_state(H: memoryview, fd: int = -1) -> str:
    """'alive' when the owner runs, 'heir' when only the heir does, else 'dead'.

    ``fd``, a descriptor of the header, adds the lifetime lock to the owner's liveness
    (see "Liveness" above): without it, only pid and start time are asked.
    """
    if _proc.alive(H[L.H_OWNER_PID], H[L.H_OWNER_START]):
        return "alive"
    if fd >= 0 and lifetime_held(fd):
        return "alive"
    if H[L.H_HEIR_PID] and _proc.alive(H[L.H_HEIR_PID], H[L.H_HEIR_START]):
        return "heir"
    return "dead"


def _still_orphaned(hdr: Segment) -> bool:
    """Under the writer lock: the decision to reap still holds (see :func:`_destroy`)."""
    if bytes(hdr.buf[:8]) != L.MAGIC:
        return False
    H = hdr.buf.cast("Q")
    try:
        if H[L.H_DELETED]:
            return True  # a deleter left it: finish
        return not hdr.buf[19] and _owner_state(H, hdr.fd) == "dead"
    finally:
        H.release()


def _reap_if_orphaned(name: str, hdr: Segment, persistent: bool) -> bool:
    """Apply the owner-death rules to a table; return True when it was deleted.

    The owner is dead (it was killed and could not clean up): a live heir becomes
    the owner; otherwise a non-persistent table is deleted, after the decision is
    checked again under the writer lock (:func:`_destroy`).
    """
    H = hdr.buf.cast("Q")
    try:
        state = _owner_state(H, hdr.fd)
        if state == "alive":
            return False
        if state == "heir":
            _promote_heir(H, (H[L.H_HEIR_PID], H[L.H_HEIR_START]))
            return False
    finally:
        H.release()
    if persistent:
        return False
    _pause_point("reap.decided")
    return _destroy(name, hdr=hdr, still=_still_orphaned)


def _heir_ident(pid: int | str | None) -> tuple[int, int] | None:
    if pid is None or pid == "none":
        return None
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ValueError(f"heir/owner must be a process id (a positive int) or None, got {pid!r}")
    ident = _proc.ident_of(pid)
    if ident is None:
        raise ValueError(f"process {pid} is not running; the heir must be a live process")
    return ident


def probe(name: str, *, reap: bool = True) -> str:
    """Classify table ``name`` and apply the owner-death rules.

    Returns ``"missing"`` (no header), ``"alive"`` (usable), ``"orphan"`` (owner
    and heir dead, persistent: kept), ``"reaped"`` (it was orphaned and has just
    been deleted; only when ``reap``), ``"deleted"`` (marked deleted: its deleter
    crashed, or a live writer still holds its lock; removed here when possible),
    ``"corrupt"`` (not a table of ours) or ``"denied"`` (the segment mode hides it
    from this user).
    A live heir of a dead owner becomes the owner here.  A process that may only
    read the header (mode) never deletes: it reports an orphan as ``"orphan"``.
    """
    hdr_name = L.segment_names(name)[0]
    try:
        hdr = Segment.attach(hdr_name, keep_fd=True)
    except Exception:
        try:
            with map_os_errors(name, "header"):
                hdr = Segment.attach(hdr_name, readonly=True, keep_fd=True)
        except AccessDeniedError:
            return "denied"
        except TableNotFoundError:
            return "missing"
        except (CorruptTableError, ValueError):  # bytes read and found invalid (or empty)
            return "missing" if not _seg_exists(hdr_name) else "corrupt"
        # anything else (EMFILE, ENOMEM, ...) is an error, raised: never grounds to delete
    try:
        if hdr.size < L.HEADER_SIZE:
            return "corrupt"
        _wait_for_magic(name, hdr)
        if bytes(hdr.buf[:8]) != L.MAGIC:
            if not (reap and not hdr.readonly and creator_gone(hdr_name)):
                return "corrupt"
            if _destroy(name, hdr=hdr, still=_still_half_made):
                return "reaped"  # its creator died before the magic: nobody could use it
            return "corrupt"
        state = _header_state(name, hdr, reap)
        if state in ("reaped", "deleted") and reap and not hdr.readonly:
            if not _destroy(name, hdr=hdr, still=_still_orphaned):
                return "deleted" if state == "deleted" else "alive"
        return state
    finally:
        hdr.close()


def _still_half_made(hdr: Segment) -> bool:
    """Under the creation (= writer) lock: still no magic, so its creator is gone."""
    return hdr.buf is not None and bytes(hdr.buf[:8]) != L.MAGIC


def _header_state(name: str, hdr: Segment, reap: bool = True) -> str:
    """:func:`probe`'s verdict on a header with its magic (may promote a live heir)."""
    H = hdr.buf.cast("Q")
    try:
        if H[L.H_DELETED]:
            return "deleted"
        who = _owner_state(H, hdr.fd)
        persistent = bool(hdr.buf[19])
        if who == "alive":
            return "alive"
        if who == "heir" and not hdr.readonly:
            _promote_heir(H, (H[L.H_HEIR_PID], H[L.H_HEIR_START]))  # the heir takes over
            return "alive"
        if persistent or who == "heir":
            return "alive" if who == "heir" else "orphan"
        if reap and not hdr.readonly:
            _pause_point("reap.decided")
            return "reaped"
        return "orphan"
    finally:
        H.release()


def _try_reap(name: str) -> bool:
    """For create(): if table ``name`` is orphaned or half-deleted, delete it; True if gone."""
    probe(name)
    return not _seg_exists(L.segment_names(name)[0])
