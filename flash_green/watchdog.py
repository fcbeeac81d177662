"""--timeout, the worker's side: what proves it alive, and how a stuck one ends.

The master (`flash_green.supervisor`) reads one timestamp per worker, its
heartbeat, and calls a worker stuck when the stamp is older than --timeout.
What the stamp means depends on where the app runs:

* On the loop's own thread (sequential/prefork, epoll, tasklets, greenlet,
  gevent, eventlet, asyncio), the loop stamps it at least once a second:
  a request that never returns holds the loop, and the stamp ages.
* On other threads (threaded, event, worker), the loop goes on beating
  while a request is stuck. There `RequestWatch` wraps the app: it notes
  when each thread entered the app (the call, and each pull of a piece of
  the body), and a reporter thread stamps the slot with the older of the
  loop's last beat and the oldest call still in the app. So the stamp ages
  exactly when one request has been in the app for --timeout.
  (cgi needs neither: each request's child is killed at --timeout, 504.)

A stuck worker then gets, from the master:

1. SIGABRT. Its handler (`install_abort`, Python, on the main thread) logs
   every thread's stack, begins a graceful stop (the worker is replaced;
   other requests finish), and raises `WorkerTimeout` in the stuck code:
   in the main thread when the loop is stuck (the handler runs inside it),
   else in each thread whose request is past --timeout. `WorkerTimeout` is
   a `SystemExit`, which the WSGI adapter treats as an app error: a 500
   where no head went out yet, else the response is cut off (gunicorn's
   abort handler calls sys.exit too).
2. If no fresh heartbeat comes within `ABORT_GRACE` - Python code cannot
   run (a C extension holding the GIL), or the exception did not end the
   stuck call - SIGXCPU, on which faulthandler dumps every thread's stack
   from C, and a moment later SIGKILL.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from .stats import thread_stacks

log = logging.getLogger("flash.watchdog")

#: Seconds the master waits, after SIGABRT, for a fresh heartbeat.
ABORT_GRACE = 3.0
#: The master's second signal: faulthandler's C-level dump of every thread.
C_DUMP_SIGNAL = signal.SIGXCPU


class WorkerTimeout(SystemExit):
    """Raised in a request that ran past --timeout (see the module docstring)."""


class RequestWatch:
    """When each thread entered the app, for engines whose app runs off the loop.

    Per request it costs one function layer, a clock read and two dict
    operations (and per piece of a streamed body the same again); the
    engines' own code is untouched.
    """

    def __init__(self) -> None:
        #: thread ident -> when it entered the app (absent while outside it).
        self.entered: dict[int, float] = {}
        #: The loop's last beat (the engine's `heartbeat`).
        self.loop_beat = time.monotonic()

    def beat(self) -> None:
        self.loop_beat = time.monotonic()

    def stamp(self) -> float:
        """The heartbeat to publish: the loop's beat, or the oldest call into
        the app still running if that is older."""
        oldest = min(self.entered.values(), default=self.loop_beat)
        return min(oldest, self.loop_beat)

    def stuck_threads(self, timeout: float) -> list[int]:
        now = time.monotonic()
        return [ident for ident, since in list(self.entered.items()) if now - since > timeout]

    def wrap(self, app: Callable) -> Callable:
        entered = self.entered

        def watched(environ, start_response):
            me = threading.get_ident()
            entered[me] = time.monotonic()
            try:
                result = app(environ, start_response)
            finally:
                entered.pop(me, None)
            if type(result) is list:  # the common case: the whole body, nothing to pull
                return result
            return WatchedBody(result, entered)

        return watched

    def report(self, publish: Callable[[float], None]) -> None:
        """A daemon thread's loop, for the process's life (a stop is watched
        too): publish the stamp twice per heartbeat interval."""
        while True:
            publish(self.stamp())
            time.sleep(0.5)


class WatchedBody:
    """The app's body iterable, with each pull of a piece watched."""

    __slots__ = ("_iterator", "_result", "_entered")

    def __init__(self, result: Iterable[bytes], entered: dict[int, float]) -> None:
        self._result = result
        self._entered = entered
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> WatchedBody:
        return self

    def __next__(self) -> bytes:
        entered = self._entered
        me = threading.get_ident()
        entered[me] = time.monotonic()
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            return next(self._iterator)
        finally:
            entered.pop(me, None)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()


def install_abort(watch: RequestWatch | None, timeout: float) -> None:
    """The worker's SIGABRT handler and its C-level last resort (see the module
    docstring). Call in the main thread, before the engine runs."""
    faulthandler.register(C_DUMP_SIGNAL, file=sys.stderr, all_threads=True)

    def on_abort(signum, frame) -> None:
        log.error("--timeout: the master found this worker stuck; every thread's stack:\n%s",
                  thread_stacks())
        # The engine's own graceful stop, through its own signal path.
        os.kill(os.getpid(), signal.SIGTERM)
        stuck = watch.stuck_threads(timeout) if watch is not None else []
        for ident in stuck:
            raise_in_thread(ident, WorkerTimeout)
        if not stuck:
            raise WorkerTimeout(f"the request ran past --timeout ({timeout}s)")

    signal.signal(signal.SIGABRT, on_abort)


def raise_in_thread(ident: int, exc_type: type[BaseException]) -> None:
    """Raise `exc_type` in thread `ident` at its next Python instruction
    (a thread blocked in a C call gets it when the call returns)."""
    found = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                        ctypes.py_object(exc_type))
    if found > 1:  # never expected: undo rather than hit several threads
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
