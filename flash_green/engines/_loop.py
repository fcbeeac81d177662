"""What the epoll (v4) and event (v5) loops share: timers and a stall detector."""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Hashable


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


class LoopWatchdog:
    """`--debug-blocking MS`: show where a single-threaded loop is stuck.

    The loop marks when it leaves epoll (`busy`) and when it returns to it
    (`idle`). A daemon thread looks every MS/2 milliseconds; if the loop has
    been busy for longer than MS, it logs the loop thread's stack *while it
    is stuck* - the blocking call is right there (`time.sleep` in a handler,
    a socket read on a slow upstream...). One warning per stall.
    """

    def __init__(self, limit_ms: float, logger: logging.Logger) -> None:
        self.limit = limit_ms / 1000
        self.log = logger
        self.loop_thread = threading.get_ident()
        self.busy_since = 0.0
        self._reported = 0.0
        threading.Thread(target=self._watch, name="loop-watchdog", daemon=True).start()

    def busy(self) -> None:
        self.busy_since = time.monotonic()

    def idle(self) -> None:
        self.busy_since = 0.0

    def _watch(self) -> None:
        while True:
            time.sleep(self.limit / 2)
            since = self.busy_since
            if since and since != self._reported and time.monotonic() - since > self.limit:
                self._reported = since
                frame = sys._current_frames().get(self.loop_thread)
                stack = "".join(traceback.format_stack(frame)) if frame else "(no frame)"
                self.log.warning("the loop has been held for over %.0f ms; it is at:\n%s",
                                 self.limit * 1000, stack)
