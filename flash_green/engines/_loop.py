"""The timer structure of the epoll (v4) and event (v5) loops."""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable


class DeadlineQueue:
    """Everything waiting under one fixed timeout, in deadline order.

    Discussion: all timeouts of one kind have the same length (the
    keep-alive timeout, the header timeout...), so whatever is armed later
    expires later. Insertion order therefore *is* deadline order, and an
    OrderedDict gives O(1) arm, re-arm (move to the end), cancel, and
    expiry (pop from the front while the front is due). A heap - the
    general structure, used by the tasklets kernel for arbitrary sleeps -
    would cost O(log n) per keep-alive request here and keep a stale entry
    for every re-arm until it surfaced.
    """

    __slots__ = ("duration", "_deadlines")

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self._deadlines: OrderedDict[Hashable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._deadlines)

    def arm(self, item: Hashable, now: float) -> None:
        """(Re)start `item`'s timeout at `now`."""
        deadlines = self._deadlines
        deadlines[item] = now + self.duration
        deadlines.move_to_end(item)

    def cancel(self, item: Hashable) -> None:
        self._deadlines.pop(item, None)

    def first_deadline(self) -> float | None:
        """The earliest deadline, or None when nothing waits."""
        for deadline in self._deadlines.values():
            return deadline
        return None

    def pop_expired(self, now: float) -> list:
        """Remove and return the items whose deadline is <= `now`, oldest first."""
        deadlines = self._deadlines
        expired = []
        while deadlines:
            item, deadline = next(iter(deadlines.items()))
            if deadline > now:
                break
            del deadlines[item]
            expired.append(item)
        return expired
