"""What the single-threaded loops share: a stall detector (epoll, event, greenlet, asyncio)."""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback


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
