"""Table: an ETS-style key/value table in named POSIX shared memory.

A table is a header segment, a hash-index segment and append-only data arenas
(byte map in :mod:`sharedzarr._layout`).  Any process that knows the name
attaches and reads with no lock; writers serialise on one writer lock
(:mod:`sharedzarr._lock`).

Why a reader never sees a torn value
------------------------------------
Records are immutable once published.  A writer appends a new record past the
arena's bump pointer, then publishes it with one aligned 8-byte store of the
slot's reference (``memoryview.cast("Q")`` item assignment: CPython packs it
with a fixed-size ``memcpy`` that compilers emit as one ``mov``, unlike
``struct``'s ``'<Q'`` which stores byte by byte).  A reader loads the
reference once (one aligned 8-byte load) and reads the immutable record, so it
sees the old or the new value, whole.  Memory ordering: we rely on x86-64's
TSO (stores become visible in program order, loads are not reordered with
older loads), so a reader that sees a reference also sees the record it
points to.  On a weakly ordered CPU this needs fences; ``Table.create`` and
``Table.attach`` refuse anything but x86-64/little-endian
(:func:`sharedzarr._platform.check_platform`).

Overwritten and deleted records become garbage; when garbage exceeds 40% of the
live data the writer copies the live records of the most wasteful arena forward
and republishes them.  An arena left with no live record is *retired*: unlinked
(a mapping of an unlinked segment stays valid), or parked in a small pool and,
after a grace period, renamed to a fresh id and appended to again, so that a
rewrite costs a copy instead of fresh tmpfs pages.  Reuse is the one case where
bytes a reader may be reading change, and readers handle it:

* a copying read loads the header's reuse epoch before its lookup and again
  after its copy; a writer bumps the epoch before the first byte of a reused
  arena changes (TSO: a reader that saw any such byte sees the bump), so a read
  that overlapped a reuse is repeated, and one that did not is whole;
* a zero-copy view marks its arena no-reuse, then checks that the arena's id
  word still holds the id of its reference.  A writer stores 0 there when it
  retires the arena and reads the mark at least ``REUSE_GRACE_NS`` (0.2 ms)
  later; a reader whose check saw the old id stored its mark before that check,
  and a store is visible to other CPUs within nanoseconds (the store buffer
  drains continuously), so the writer sees the mark and unlinks the arena
  instead of reusing it.  A view therefore never changes while it is held.

Crash consistency
-----------------
A writer stores its pid in the header's dirty word while it works.  The
kernel releases the ``flock`` writer lock when a writer dies, and the next
writer that finds the dirty word set recomputes the counters from the index
and unlinks the segments nothing references (``_recover``).  Because a value
becomes visible only through the single publishing store, a killed write is
either fully visible or not at all.  An atomic session keeps an undo log in shared
memory (``_undo``), so that the next writer rolls a killed one back whole.

How the engine is cut
---------------------
One module per responsibility, imported one way (each imports only those above
it in this list)::

    _undo       an atomic session's undo log in shared memory (write-ahead, read
                back by the next writer after a crash); stores H_UNDO
    _header     hot word indices (one definition site), handle state, checks;
                stores H_WRITES, H_RECLAIM, the created time, options and magic
    _catalog    tables by name: list, segments, destroy; stores H_DELETED
    _ownership  owner/heir rules, exit and fork registry, probe;
                stores H_OWNER_*, H_HEIR_*
    _arenas     arena map + allocator + pool; stores H_CUR_ARENA, H_NEXT_ARENA,
                H_REUSE, pool words and every arena word (A_*)
    _index      index generations, probes, growth; the only slot stores;
                stores H_GEN, H_USED_SLOTS
    _space      garbage accounting, reclaim policy, compaction;
                stores H_GARBAGE, H_LIVE_RECORD
    _read       the lock-free read protocol (invariants at its top), cached readers
    _recovery   repair after a dead writer: recounts, asks each owner to store
    _fill       a bulk write's fills shared with a helper thread; stores nothing
    _reserve    a big record reserved under the lock and filled without it, and the
                lease of the next one; stores no shared word
    _session    the writer session: lock, dirty mark, operations, rollback, interrupts;
                stores H_HOLDER, H_DIRTY, H_OPSEQ
    _write      put/remove, filled, reserved and conditional inserts, clear;
                stores H_KEYS, H_OBJECTS, H_LIVE_VALUE
    _bulk       insert_many in vectorised passes (runs of records, one publish);
                stores nothing: it calls the owners
    _table      the Table facade: create/attach/close, give_away, info

``tests/test_engine_structure.py`` enforces the one-writer-per-word rule, the
direction of imports and the size limits.

Why mixins, for now: the engine's parts are mixin classes of ``Table``
(``ArenaMixin`` <- ``IndexMixin`` <- ``SpaceMixin`` <- ``ReadMixin``/``RecoveryMixin``
<- ``SessionMixin`` <- ``WriteMixin`` <- ``BulkMixin`` <- ``Table``), not separate objects.  The hot
read paths bind ``self._H``, ``self._idx`` and ``self._arenas`` as locals; with objects
each would be one more attribute hop per read, and the split had to be behaviour- and
speed-preserving.  Every shared word already has one writer module, so turning a
mixin into an object later (``IndexMap``, ``Allocator``) changes no protocol.
Where this differs from the reviewed layout, and why (each keeps imports one-way):

* ``H_WRITES``/``H_RECLAIM`` are stored by ``_header`` (``count_write``,
  ``count_reclaim``), not ``_index``: the allocator (reuse), the catalog (delete) and
  recovery bump them too, and all sit beside or below the index.
* ``A_LIVE``/``A_GARBAGE`` are stored by ``_arenas``: the allocator initialises them on
  create, reuse and retire; ``_space`` decides their values and asks
  (``_account_arena``).  A reader's no-reuse mark goes through ``_arenas``' ``_pin``
  (called once per arena on the zero-copy path, so no call is added per read).
* Recovery returns the entry counts (keys, objects, live value bytes) and the write
  session stores them, as it stores them everywhere else.
* The owner-death rules and ``probe`` sit in ``_ownership`` above ``_catalog`` (which
  destroys), so no rule calls back down into a module that imports it.
* The retry loops of the read path stay where they were (``_consistent``,
  ``_get_slow``, ``view_reader``'s ``fill``): merging them into one helper would add a
  call on the hot paths.  Their shared budget is ``_READ_RETRIES``.
"""

from __future__ import annotations

from typing import Any

from .. import _faults
from .._index import decode_key, encode_key, key_hash, sort_key  # noqa: F401
from ._arenas import MAX_MAPPED, _Filler  # noqa: F401
from ._catalog import _destroy, _wait_for_magic, list_tables, table_segments  # noqa: F401
from ._header import DEFAULT_TIMEOUT, _as_buffer, count_reclaim, validate_name  # noqa: F401
from ._ownership import (  # noqa: F401
    _HANDLES,
    _OWNED,
    _after_fork_in_child,
    _exit_cleanup,
    _heir_ident,
    _owner_state,
    _reap_if_orphaned,
    _register_owned,
    _release_ownership,
    _try_reap,
    probe,
)
from ._space import RECLAIM_MIN, RECLAIM_RATIO, RECLAIM_RATIO_BUSY  # noqa: F401
from ._table import Table, collect_garbage

__all__ = [
    "Table",
    "collect_garbage",
    "decode_key",
    "encode_key",
    "key_hash",
    "list_tables",
    "probe",
    "table_segments",
    "validate_name",
]

_sort_key = sort_key  # the old private name, kept for callers
_count_reclaim = count_reclaim  # the old private name
_crash_point = _faults.crash_point  # the old private name


def __getattr__(name: str) -> Any:
    """``_crash_count`` and the other crash-hook state live in :mod:`sharedzarr._faults`."""
    if name in ("_crash_count", "_CRASH_AT", "_CRASH_AFTER"):
        return getattr(_faults, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
