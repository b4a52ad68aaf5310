"""Repair after a writer died mid-operation.

The next writer that finds the dirty word set (``_session``) calls
:meth:`RecoveryMixin._recover` with the lock held.  Recovery counts what the published
index references and asks each owner to store its words: the index its used-slot count,
the allocator its arena words (and unlinks what nothing references), the space
accounting its totals.  The entry counts (keys, objects, live value bytes) are returned
to the session, which hands them to the write module that owns them.  Every published
value was complete before it was published, so no value needs repair.

Words stored here, and only here: ``H_RECOVERIES``, counted at the start of each
recovery (a writer that reserved a record before it, ``_reserve``'s ``Reservation``,
counts that record in its arena again).
"""

from __future__ import annotations

import numpy as np

from .. import _layout as L
from .._segment import list_names
from .._segment import unlink as _unlink
from ._header import _OFFSET_BITS, count_reclaim
from ._space import SpaceMixin

__all__ = ["RecoveryMixin"]


class RecoveryMixin(SpaceMixin):
    """Crash recovery of a table handle."""

    def _recover(self) -> tuple[int, int, int]:
        """Repair after a writer died mid-operation (lock held).

        Recomputes the counters from the published index and unlinks the
        segments nothing references.  Returns the entry counts ``(keys, objects,
        live value bytes)`` for the write session to store.
        """
        H = self._H
        H[L.H_RECOVERIES] += 1  # a reserved record's writer re-counts it (Reservation)
        gen = H[L.H_GEN]
        base_idx = f"{L.PREFIX}{self.name}.idx."
        for n in list_names(base_idx, uid=self._uid):
            rest = n[len(base_idx) :]
            if rest.isdigit() and int(rest) != gen:
                self._same_table()
                _unlink(n)
        self._load_index()
        arr = np.frombuffer(self._idx, dtype=np.uint64).reshape(-1, 2)
        used_slots = int(np.count_nonzero(arr[:, 0]))
        refs = arr[arr[:, 1] > 1, 1].tolist()
        del arr
        keys = objects = live_value = live_record = 0
        per_arena: dict[int, int] = {}
        for ref in refs:
            r = self._record_at(ref)
            if r is None:
                continue
            seg, off = r
            total, lens = self._record_info(seg, off)
            keys += 1
            objects += len(lens)
            live_value += sum(lens)
            live_record += total
            aid = ref >> _OFFSET_BITS
            per_arena[aid] = per_arena.get(aid, 0) + total
        garbage = self._recount_arenas(per_arena)
        self._set_used_slots(used_slots)
        self._set_space(live_record, garbage)
        # also drops every reader's cached views, which trust an unchanged write counter: a
        # writer may have died between a slot's store and the counter's bump
        count_reclaim(H)
        self._set_wseg(None)
        return keys, objects, live_value
