"""Filling records on two threads: the caller's and one helper (a bulk write's copies).

:meth:`sharedzarr._table.Table.insert_filled_many` with ``submit`` appends records under
the writer lock and hands their fills to a :class:`SharedFill`; numpy releases the GIL
while it copies, so the two threads copy at once.  What is filled is published by the
write module, in order (see "Publishing" in :mod:`._write`).  Nothing here touches the
table's shared words: a fill writes only the value of a record that is not published yet.
"""

from __future__ import annotations

import queue
from concurrent.futures import wait as futures_wait
from typing import Any

__all__ = ["FILL_AHEAD", "FILL_AHEAD_SHARE", "Copy", "SharedFill"]

#: Records appended and not yet published while two threads fill values (in flight: this
#: bounds the extra memory a rewrite needs, see :class:`_SharedFill`) ...
FILL_AHEAD = 5
#: ... and their bytes, at most this fraction of the table's live data (at least one
#: record is in flight: a big one is filled in parts by both threads, see ``fill.parts``).
FILL_AHEAD_SHARE = 1 / 32


class Copy:
    """A fill that copies a value in (``insert_filled_many`` takes values too)."""

    __slots__ = ("value",)

    def __init__(self, value: memoryview) -> None:
        self.value = value

    def __call__(self, room: memoryview) -> None:
        room[:] = self.value


class SharedFill:
    """Fills of appended records shared by the caller's thread and one helper thread.

    The caller appends records (under the writer lock) and queues their fills; both
    threads take fills from that one queue, so the helper copies while the caller prepares
    the next record, and the caller copies too whenever enough records wait to be
    published (``FILL_AHEAD``, ``FILL_AHEAD_SHARE``).  A fill with a ``parts`` attribute
    (callables that each write a disjoint part of the buffer) is queued as its parts, so
    the two threads fill one big record together.  The helper is handed the whole write
    once (one task, not one per value), and reports each fill on a second queue, on which
    the caller blocks (the GIL released) when it has nothing else to do; only the caller
    counts what is done.  The caller publishes the filled records in order.  (A task per
    value, or per batch of values, left each thread idle while the other handed over: a
    128 MiB rewrite in 512 KiB chunks took 20-35 ms that way, 17 ms so; two threads
    copying alone take 9.5 ms, one 18 ms.)
    """

    __slots__ = ("errors", "future", "jobs", "left", "outstanding", "recs", "reports", "todo")

    def __init__(self, submit: Any) -> None:
        self.recs: list[tuple[Any, ...]] = []  # (kb, h, nbytes, ref, total)
        self.left: list[int] = []  # fills not yet done, per record
        self.errors: dict[int, BaseException] = {}  # record -> its first failed fill
        self.jobs: list[tuple[int, Any, memoryview]] = []  # (record, fill, buffer)
        self.outstanding = 0  # fills queued and not yet done (here or by the helper)
        self.todo: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self.reports: queue.SimpleQueue[tuple[int, BaseException | None]] = queue.SimpleQueue()
        self.future = submit(self._helper)

    def _helper(self) -> None:
        jobs, todo, reports = self.jobs, self.todo, self.reports
        while True:
            j = todo.get()
            if j is None:
                return
            job = jobs[j]
            try:
                job[1](job[2])
            except BaseException as e:  # handed to the caller's thread
                reports.put((j, e))
            else:
                reports.put((j, None))

    def add(self, rec: tuple[Any, ...], fill: Any, buf: memoryview) -> None:
        """Queue the fill (or the parts of the fill) of an appended record."""
        r = len(self.recs)
        self.recs.append(rec)
        if type(fill) is memoryview:  # the value itself: copied in
            fill = Copy(fill)
        parts = getattr(fill, "parts", None) or (fill,)
        self.left.append(len(parts))
        for part in parts:
            self.jobs.append((r, part, buf))
            self.outstanding += 1
            self.todo.put(len(self.jobs) - 1)

    def filled(self, r: int) -> bool:
        """Whether record ``r`` is whole (every fill done, none failed)."""
        return not self.left[r] and r not in self.errors

    def whole_from(self, r: int) -> int:
        """The first record from ``r`` on that is not whole (``len(recs)`` if none)."""
        while r < len(self.recs) and self.filled(r):
            r += 1
        return r

    def _note(self, j: int, error: BaseException | None) -> None:
        self.outstanding -= 1
        r = self.jobs[j][0]
        if error is None:
            self.left[r] -= 1
        else:
            self.errors.setdefault(r, error)

    def step(self, block: bool) -> None:
        """Take the helper's reports; then (``block``) fill a queued job here, or wait for
        the helper's next report when it has taken every queued job."""
        reports = self.reports
        while not reports.empty():
            self._note(*reports.get())
        if not block:
            return
        try:
            j = self.todo.get_nowait()
        except queue.Empty:
            if self.outstanding:  # the helper is filling one: its report will come
                self._note(*reports.get())
            return
        if j is not None:  # (None is queued by finish() only)
            self._fill_here(j)

    def _fill_here(self, j: int) -> None:
        job = self.jobs[j]
        try:
            job[1](job[2])
        except BaseException as e:
            self._note(j, e)
        else:
            self._note(j, None)

    def finish(self) -> None:
        """Fill what is queued (here and on the helper) and stop the helper."""
        todo = self.todo
        while True:
            try:
                j = todo.get_nowait()
            except queue.Empty:
                break
            if j is not None:
                self._fill_here(j)
        todo.put(None)
        futures_wait([self.future])
        reports = self.reports
        while not reports.empty():
            self._note(*reports.get())
