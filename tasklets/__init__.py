"""tasklets: a small generator-tasklet scheduler on epoll, written to be read.

A tasklet is a plain generator.  It waits by yielding a *trap* - usually
through a helper and ``yield from`` - and the kernel resumes it when the
wait is over::

    import tasklets
    from tasklets.io import create_server

    def handle(sock):
        with sock:
            while data := (yield from sock.recv(65536)):
                yield from sock.sendall(data)

    def main():
        server = create_server(("127.0.0.1", 8000))
        while True:
            conn, _ = yield from server.accept()
            tasklets.spawn(handle, conn)

    tasklets.run(main)

Where to read next: ``traps.py`` (what a tasklet can wait for), ``kernel.py``
(the loop, with an essay on its principles), ``sync.py`` (Event, Lock,
Semaphore, Queue, Channel), ``io.py`` (sockets), ``timeouts.py``.

The same helpers are awaitable, so ``async def`` tasklets run on the same
kernel: ``await tasklets.sleep(1)``.
"""

from .errors import (
                     Cancelled,
                     ClosedError,
                     ResourceBusy,
                     TaskletError,
                     TaskletExit,
                     TaskletTimeout,
                     TimeoutCancelled,
)
from .kernel import (
                     Kernel,
                     KernelStats,
                     WaitQueue,
                     cancel,
                     current,
                     join,
                     ps,
                     run,
                     running_kernel,
                     spawn,
)
from .sync import Channel, Event, Lock, Queue, Semaphore
from .tasklet import Tasklet
from .timeouts import ignore_after, timeout_after
from .traps import SCHEDULE, Trap, read_wait, run_in_thread, schedule, sleep, write_wait

__all__ = [
    "Cancelled", "Channel", "ClosedError", "Event", "Kernel", "KernelStats", "Lock", "Queue",
    "ResourceBusy", "SCHEDULE", "Semaphore", "Tasklet", "TaskletError", "TaskletExit",
    "TaskletTimeout", "TimeoutCancelled", "Trap", "WaitQueue", "cancel", "current",
    "ignore_after", "join", "ps", "read_wait", "run", "run_in_thread", "running_kernel",
    "schedule", "sleep", "spawn", "timeout_after", "write_wait",
]
