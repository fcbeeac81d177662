"""A timer queue: a binary heap of deadlines with lazy cancellation.

Sleeps and ``timeout_after`` deadlines all land here.  The kernel asks two
questions of it on every loop pass: *when is the next deadline?* (that is
how long ``epoll`` may block) and *which timers are due now?*

A heap answers both cheaply: push and pop are O(log n), peeking at the
earliest deadline is O(1).  What a heap cannot do cheaply is remove an
arbitrary entry - and timers are removed all the time: every
``timeout_after`` whose operation finishes in time cancels its timer.  So
cancellation is *lazy*: the entry stays in the heap with its owner set to
``None`` and is thrown away when it reaches the top.  When dead entries
outnumber live ones the heap is rebuilt, so a server that sets and cancels a
million timeouts does not grow a million-entry heap.

Each entry is a 3-item list ``[deadline, sequence, owner]``.  The sequence
number breaks ties between equal deadlines in FIFO order (and keeps the heap
from ever comparing two owners).  A list rather than a tuple because
cancelling mutates it.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

#: A heap entry: [deadline, sequence, owner-or-None].
TimerEntry = list

# Rebuild the heap when at least this many entries are dead *and* they are
# the majority.  Small heaps never bother.
_COMPACT_MIN_DEAD = 256


class TimerQueue:
    """Deadlines (``time.monotonic()`` seconds) mapped to owners, earliest first."""

    __slots__ = ("_heap", "_sequence", "_dead", "set_count", "cancelled_count", "fired_count")

    def __init__(self) -> None:
        self._heap: list[TimerEntry] = []
        self._sequence = itertools.count()
        self._dead = 0  # cancelled entries still sitting in the heap
        # Counters for Kernel.stats().
        self.set_count = 0
        self.cancelled_count = 0
        self.fired_count = 0

    def __len__(self) -> int:
        """Number of live (not cancelled, not fired) timers."""
        return len(self._heap) - self._dead

    def push(self, deadline: float, owner: Any) -> TimerEntry:
        """Add a timer; keep the returned entry to cancel it later."""
        entry = [deadline, next(self._sequence), owner]
        heapq.heappush(self._heap, entry)
        self.set_count += 1
        return entry

    def cancel(self, entry: TimerEntry) -> None:
        """Forget a timer that has not fired.  O(1): the entry is only marked dead."""
        entry[2] = None
        self._dead += 1
        self.cancelled_count += 1
        if self._dead >= _COMPACT_MIN_DEAD and self._dead * 2 > len(self._heap):
            self._compact()

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or None when no timer is set."""
        heap = self._heap
        while heap and heap[0][2] is None:  # drop dead entries from the top
            heapq.heappop(heap)
            self._dead -= 1
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> Any:
        """Remove and return the owner of the earliest timer due at ``now``, else None.

        Call it in a loop until it returns None.  Due timers come out in
        deadline order, ties in the order they were set.
        """
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            owner = entry[2]
            if owner is None:  # cancelled earlier: skip the corpse
                self._dead -= 1
                continue
            entry[2] = None
            self.fired_count += 1
            return owner
        return None

    def _compact(self) -> None:
        """Drop every dead entry at once and restore the heap property: O(n)."""
        self._heap[:] = [entry for entry in self._heap if entry[2] is not None]
        heapq.heapify(self._heap)
        self._dead = 0
