"""The epoll benchmark: one wait with timeout 0 on N registered fds, one of them ready.

epoll against poll and select, at growing N: epoll's cost follows the ready
fds, the other two scan every fd they are given. These are mechanisms, not
runtimes, so they have no adapter: the harness runs them under the name
``pollers``.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable
from time import perf_counter

from comparisons.childproc import raise_fd_limit

#: The mechanisms of the epoll benchmark (they are not runtimes).
POLLERS = ("epoll", "poll", "select")
#: select() cannot watch fd numbers at or above FD_SETSIZE.
SELECT_FD_LIMIT = 1024


def poller_wait_cost(mechanism: str, nfds: int, budget: float) -> float:
    """Seconds per zero-timeout wait of `mechanism` watching `nfds` eventfds, one ready."""
    raise_fd_limit(nfds + 64)
    fds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(nfds)]
    try:
        os.eventfd_write(fds[-1], 1)
        if mechanism == "epoll":
            poller = select.epoll()
            for fd in fds:
                poller.register(fd, select.EPOLLIN)
            wait = lambda: poller.poll(0)
        elif mechanism == "poll":
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            wait = lambda: poller.poll(0)
        else:
            wait = lambda: select.select(fds, [], [], 0)
        assert wait(), "the ready fd was not reported"
        return _per_call(wait, budget)
    finally:
        for fd in fds:
            os.close(fd)


def _per_call(call: Callable[[], object], budget: float) -> float:
    """Seconds per call, timing batches until `budget` seconds are spent."""
    count = 1
    while True:
        started = perf_counter()
        for _ in range(count):
            call()
        elapsed = perf_counter() - started
        if elapsed >= budget or count >= 1 << 24:
            return elapsed / count
        count = max(count * 2, int(count * budget / max(elapsed, 1e-6) * 1.1))
