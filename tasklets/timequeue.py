"""A timer queue: a binary heap of deadlines with lazy cancellation.

Sleeps and ``timeout_after`` deadlines all land here.  The kernel asks two
questions of it on every loop pass: *when is the next deadline?* (that is
how long ``epoll`` may block) and *which timers are due now?*

A heap answers both cheaply: push and pop are O(log n), peeking at the
earliest deadline is O(1).  What a heap cannot do cheaply is remove an
arbitrary entry - and timers are removed all the time: every
``timeout_after`` whose operation finishes in time cancels its timer.  So
cancellation is *lazy*: the entry stays in the heap and is thrown away when
it reaches the top.  When dead entries outnumber live ones the heap is
rebuilt, so a server that sets and cancels a million timeouts does not grow
a million-entry heap.

How does a popped entry know it is dead?  Each entry is a tuple
``(deadline, sequence, owner)`` and the owner (a Tasklet or a timeout
scope) holds its one live entry in its ``_timer`` attribute.  Cancelling
sets ``owner._timer = None``; an entry is live exactly while
``owner._timer is entry``.  Tuples rather than mutable lists because a
million sleeping tasklets means a million entries, and a tuple is 40% smaller.

The sequence number breaks ties between equal deadlines in FIFO order, and
keeps the heap from ever comparing two owners.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

#: A heap entry: (deadline, sequence, owner).
TimerEntry = tuple

# Rebuild the heap when at least this many entries are dead *and* they are
# the majority.  Small heaps never bother.
_COMPACT_MIN_DEAD = 256


class TimerQueue:
    """Deadlines (``time.monotonic()`` seconds) of owners with a ``_timer`` slot, earliest first."""

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

    def push(self, deadline: float, owner: Any) -> None:
        """Set ``owner``'s timer (it must not have a live one)."""
        entry = (deadline, next(self._sequence), owner)
        owner._timer = entry
        heapq.heappush(self._heap, entry)
        self.set_count += 1

    def cancel(self, owner: Any) -> None:
        """Cancel ``owner``'s live timer.  O(1): the heap entry just becomes dead."""
        owner._timer = None
        self._dead += 1
        self.cancelled_count += 1
        if self._dead >= _COMPACT_MIN_DEAD and self._dead * 2 > len(self._heap):
            self._compact()

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or None when no timer is set."""
        heap = self._heap
        while heap and heap[0][2]._timer is not heap[0]:  # drop dead entries from the top
            heapq.heappop(heap)
            self._dead -= 1
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> Any:
        """Remove the earliest timer due at ``now`` and return its owner, else None.

        Call it in a loop until it returns None.  Due timers come out in
        deadline order, ties in the order they were set.  The owner's
        ``_timer`` is reset to None: the timer has fired.
        """
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            owner = entry[2]
            if owner._timer is not entry:  # cancelled earlier: skip the corpse
                self._dead -= 1
                continue
            owner._timer = None
            self.fired_count += 1
            return owner
        return None

    def _compact(self) -> None:
        """Drop every dead entry at once and restore the heap property: O(n)."""
        self._heap[:] = [entry for entry in self._heap if entry[2]._timer is entry]
        heapq.heapify(self._heap)
        self._dead = 0
