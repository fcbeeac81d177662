"""The kernel: one loop that runs generator tasklets on top of epoll.

Principles
==========

**A tasklet is a generator, a wait is a yielded trap.**  The kernel never
preempts anybody.  It resumes a tasklet with ``send()``; the tasklet runs
until it yields a trap (``Sleep(1.0)``, ``ReadWait(7)``, ...); the kernel
files the tasklet under whatever the trap waits for and resumes the next
one.  Because a tasklet can only lose the processor at a ``yield``, the code
between two yields runs atomically: no locks are needed to update shared
state, and every point where the world can change under you is marked in
the source by ``yield from``.

**One loop, four phases, in this order, forever:**

1. *Run* the tasklets that are ready - but only those that were ready when
   the pass began.  A tasklet that reschedules itself goes to the back of the
   queue and waits for the next pass, so it cannot starve the others.
2. *Reconcile* epoll: drop registrations nobody needs any more (see "lazy
   unregistration" in ``_reconcile_fds``).
3. *Poll* epoll.  The timeout is 0 if someone is ready to run, else the time
   until the earliest timer, else infinite.  Every fd event wakes the tasklet
   parked on that fd and direction.
4. *Expire* the timers that are due: wake sleepers, deliver timeouts.

**Only waiting is a trap.**  Operations that never block - ``spawn``,
``current``, ``cancel``, ``Event.set`` - are ordinary function calls: the
kernel object is reachable from running code (``running_kernel()``) and a
plain call is ten times cheaper than a round trip through the loop.

**Every wait can be undone.**  When a trap parks a tasklet, the handler also
stores in ``tasklet._unwait`` a callable that removes it from wherever it was
parked (the reader table of an fd, a timer, a wait queue, a joiners list).
Cancellation and timeouts are then one generic operation: call ``_unwait``,
then throw the exception into the tasklet.  A tasklet that is not blocked -
it is running, or it is ready with a result it must not lose (a Lock it was
just handed, an item it just got from a Queue) - gets the exception
*pending*, delivered at its next blocking point.

**Every state change is visible.**  The kernel is an ordinary object whose
attributes (slots) are its whole state: ``_ready``, ``_readers``, ``_writers``,
``_registered``, ``_timers``, ``current``, ``_tasklets``.  Stop in a
debugger anywhere and print them.  (curio keeps its kernel state in local
variables of one huge closure, which is fast but invisible; we keep the
speed by aliasing attributes to locals inside the hot loop only.)

**Measure it.**  ``stats()`` returns a snapshot of counters: loop iterations,
epoll waits and time spent in them, tasklet steps, traps by type, timers,
epoll_ctl calls.  ``ps()`` lists every tasklet with its stack.  The debug
switches ``longblock_ms``, ``traptrace`` and ``schedtrace`` swap in an
instrumented twin of the run loop, so that when they are off the hot loop
pays nothing for them.

Speed
=====

A switch between tasklets costs one ``gen.send()`` plus the loop around it.
The loop is written for that: attribute lookups are hoisted into locals, the
two commonest traps are handled inline - ``SCHEDULE`` (``sleep(0)``),
recognised by identity, and a ``ReadWait`` on an fd that epoll already
watches for reading alone (a server's wait for the next request on a
keep-alive connection) - every other trap is dispatched through a dict of
bound methods keyed by trap class, and nothing is allocated per step.
Counting ``SCHEDULE`` traps is not even done per step: it is derived in
``stats()``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import itertools
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import Cancelled, ClosedError, ResourceBusy, TaskletTimeout, TimeoutCancelled
from .tasklet import (
    CANCELLED,
    CRASHED,
    DONE,
    ENDED,
    JOIN,
    READ_WAIT,
    READY,
    SLEEP,
    THREAD,
    WRITE_WAIT,
    Tasklet,
)
from .timequeue import TimerQueue
from .traps import SCHEDULE, Join, Park, ReadWait, RunInThread, Schedule, Sleep, WriteWait

log = logging.getLogger("tasklets")

# epoll reports hang-ups and errors whether asked or not; both must wake the
# waiter, whose next system call will then see EOF or the error.
_READABLE = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
_WRITABLE = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
_IN = select.EPOLLIN

# One thread-local slot says which kernel is running in this thread, so that
# plain functions (spawn, current, timeout_after, Socket.close) can find it.
_local = threading.local()


def running_kernel() -> Kernel:
    """The kernel running in this thread; RuntimeError outside of ``Kernel.run``."""
    kernel = getattr(_local, "kernel", None)
    if kernel is None:
        raise RuntimeError("no tasklets kernel is running in this thread")
    return kernel


def running_kernel_or_none() -> Kernel | None:
    """The kernel running in this thread, or None."""
    return getattr(_local, "kernel", None)


@dataclasses.dataclass(frozen=True)
class KernelStats:
    """A snapshot of the kernel's counters (all cumulative since the kernel was made)."""

    loop_iterations: int        # iterations of the main loop (run ready tasklets, poll)
    epoll_waits: int            # calls to epoll.poll()
    epoll_wait_seconds: float   # wall time spent blocked in epoll.poll() (timeout > 0)
    epoll_events: int           # (fd, events) pairs epoll returned
    steps: int                  # tasklet resumptions, i.e. switches
    traps: dict[str, int]       # trap class name -> how many were yielded
    tasklets_spawned: int
    tasklets_finished: int      # ended by returning
    tasklets_crashed: int       # ended by an exception
    tasklets_cancelled: int     # ended by Cancelled
    tasklets_alive: int         # spawned and not ended
    tasklets_runnable: int      # in the ready queue right now
    timers_set: int
    timers_cancelled: int
    timers_fired: int
    epoll_register: int         # epoll_ctl(ADD) calls
    epoll_modify: int           # epoll_ctl(MOD) calls
    epoll_unregister: int       # epoll_ctl(DEL) calls
    fds_registered: int         # fds in the epoll interest set right now
    thread_jobs: int            # run_in_thread() calls submitted to the pool
    threadsafe_callbacks: int   # call_soon_threadsafe() callbacks run


class WaitQueue:
    """A FIFO of parked tasklets: the building block of every primitive in ``sync``.

    A primitive yields ``queue.park(state)`` to block the current tasklet
    here, and calls ``wake_one`` / ``wake_all`` (plain calls, no trap) to make
    waiters ready again.  Each waiter is stored with a ``payload`` - a Queue
    putter parks with its item, a Channel sender with its message - which
    ``wake_one`` hands back to the waker.  A cancelled waiter is removed by
    the kernel, so primitives built on this are cancellation-safe for free.
    """

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: collections.deque[tuple[Tasklet, Any]] = collections.deque()

    def __len__(self) -> int:
        return len(self._waiters)

    def park(self, state: str, payload: Any = None) -> Park:
        """The trap to yield to wait here: ``yield queue.park('EVENT')``."""
        return Park(self, state, payload)

    def wake_one(self, value: Any = None) -> tuple[Tasklet, Any]:
        """Make the longest waiter ready; it receives ``value``.  Returns (tasklet, payload)."""
        task, payload = self._waiters.popleft()
        task._kernel._wake(task, value)
        return task, payload

    def throw_one(self, exc: BaseException) -> tuple[Tasklet, Any]:
        """Make the longest waiter ready; ``exc`` is raised in it.  Returns (tasklet, payload)."""
        task, payload = self._waiters.popleft()
        task._kernel._wake_throw(task, exc)
        return task, payload

    def wake_all(self, value: Any = None) -> int:
        """Make every waiter ready with ``value``; returns how many there were."""
        count = len(self._waiters)
        while self._waiters:
            self.wake_one(value)
        return count

    def _remove(self, task: Tasklet) -> None:
        # Discussion: deque.remove() compares with ==, which would compare
        # payloads too (and a payload may have a surprising __eq__), so find
        # the waiter by identity and delete it by index.
        for index, (waiter, _payload) in enumerate(self._waiters):
            if waiter is task:
                del self._waiters[index]
                return


class _TimeoutScope:
    """One active ``timeout_after``: its deadline, its timer, and whether it fired."""

    __slots__ = ("task", "seconds", "_timer", "expired")

    def __init__(self, task: Tasklet, seconds: float) -> None:
        self.task = task
        self.seconds = seconds
        self._timer: tuple | None = None
        self.expired = False

    def __repr__(self) -> str:
        expired = " expired" if self.expired else ""
        return f"<timeout {self.seconds:g}s of {self.task.name}{expired}>"


class Kernel:
    """Runs tasklets.  ``k = Kernel(); k.spawn(gen); k.run()``; or ``k.run(main)``.

    Keyword options (all off by default, and free when off):

    * ``longblock_ms`` - log a warning (logger ``'tasklets'``) naming any
      tasklet that ran longer than this without yielding, with its stack.
    * ``traptrace`` - log every trap a tasklet yields (DEBUG).
    * ``schedtrace`` - log every time a tasklet is resumed (DEBUG).
    * ``max_threads`` - size of the ``run_in_thread`` pool (default: the
      ``concurrent.futures`` default).
    * ``poll_every`` - while tasklets are ready, poll epoll only once per
      this many steps (see the Discussion in ``_loop``).
    """

    # Discussion: __slots__ is for speed, not memory - there is one kernel.
    # A slot store is a fixed-offset write; a kernel with this many plain
    # attributes would fall back to a dict, and the hot loop's
    # ``self.current = task`` would cost three times as much.  Debuggers
    # show slots like any other attribute.
    __slots__ = (
        "current", "_ready", "_tasklets", "_live_non_daemon", "_ids", "_root",
        "_epoll", "_readers", "_writers", "_registered", "_stale_fds",
        "_timers",
        "_callbacks", "_wake_fd", "_wake_lock", "_pool", "_max_threads", "_threads_busy",
        "_stopping", "_closed", "_poll_every", "_stuck_warned",
        "_longblock", "_traptrace", "_schedtrace", "_instrumented",
        "_dispatch", "_unwait_sleep", "_unwait_read", "_unwait_write", "_unwait_join",
        "_unwait_park", "_unwait_thread",
        "_trap_counts", "_n_invalid_traps", "_n_loops", "_n_epoll_waits",
        "_epoll_wait_seconds", "_n_events", "_n_steps", "_steps_at_last_poll", "_n_spawned",
        "_n_finished", "_n_crashed", "_n_cancelled", "_n_register", "_n_modify",
        "_n_unregister", "_n_thread_jobs", "_n_callbacks",
    )

    def __init__(self, *, longblock_ms: float | None = None, traptrace: bool = False,
                 schedtrace: bool = False, max_threads: int | None = None,
                 poll_every: int = 128) -> None:
        # --- tasklets and the ready queue
        self.current: Tasklet | None = None                  # the tasklet being stepped
        self._ready: collections.deque[Tasklet] = collections.deque()
        self._tasklets: dict[int, Tasklet] = {}              # every live tasklet by id
        self._live_non_daemon = 0                            # run() continues while > 0
        self._ids = itertools.count(1)
        self._root: Tasklet | None = None                    # the main tasklet of run(main)
        # --- I/O: who waits on which fd, and what epoll currently watches
        self._epoll = select.epoll()
        self._readers: dict[int, Tasklet] = {}
        self._writers: dict[int, Tasklet] = {}
        self._registered: dict[int, int] = {}                # fd -> event mask in epoll
        self._stale_fds: set[int] = set()                    # fds whose mask may be too wide
        # --- time
        self._timers = TimerQueue()
        # --- other threads: callbacks + an eventfd that interrupts epoll
        self._callbacks: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = \
            collections.deque()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_lock = threading.RLock()                  # guards writing vs closing _wake_fd
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        self._registered[self._wake_fd] = select.EPOLLIN
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._max_threads = max_threads
        self._threads_busy = 0                               # run_in_thread jobs not yet back
        # --- life cycle
        self._stopping = False
        self._closed = False
        self._poll_every = poll_every
        self._stuck_warned = False                           # see _poll
        # --- debugging
        self._longblock = None if longblock_ms is None else longblock_ms / 1000.0
        self._traptrace = traptrace
        self._schedtrace = schedtrace
        self._instrumented = longblock_ms is not None or traptrace or schedtrace
        # --- the trap dispatch table: trap class -> bound handler method
        self._dispatch: dict[type, Callable[[Tasklet, Any], None]] = {
            Schedule: self._trap_schedule,
            Sleep: self._trap_sleep,
            ReadWait: self._trap_read_wait,
            WriteWait: self._trap_write_wait,
            Join: self._trap_join,
            Park: self._trap_park,
            RunInThread: self._trap_run_in_thread,
        }
        # Discussion: ``self._undo_sleep`` builds a new bound-method object
        # on every access, and every parked tasklet keeps its undo callback
        # in ``_unwait`` - a million sleepers, a million bound methods.
        # Binding each one once here makes parking allocation-free.
        self._unwait_sleep = self._undo_sleep
        self._unwait_read = self._undo_read_wait
        self._unwait_write = self._undo_write_wait
        self._unwait_join = self._undo_join
        self._unwait_park = self._undo_park
        self._unwait_thread = self._undo_thread
        # --- counters for stats()
        self._trap_counts: dict[type, int] = dict.fromkeys(self._dispatch, 0)
        self._n_invalid_traps = 0                            # yielded objects that are not traps
        self._n_loops = 0
        self._n_epoll_waits = 0
        self._epoll_wait_seconds = 0.0
        self._n_events = 0
        self._n_steps = 0
        self._steps_at_last_poll = 0
        self._n_spawned = 0
        self._n_finished = 0
        self._n_crashed = 0
        self._n_cancelled = 0
        self._n_register = 1                                 # the wake-up eventfd
        self._n_modify = 0
        self._n_unregister = 0
        self._n_thread_jobs = 0
        self._n_callbacks = 0

    # =====================================================================
    # Public interface
    # =====================================================================

    def spawn(self, target: Any, *args: Any, name: str | None = None,
              daemon: bool = False) -> Tasklet:
        """Create a tasklet and put it at the back of the ready queue.

        ``target`` is a generator (or coroutine) object, or a function that
        returns one when called with ``args``.  ``name`` shows in ``ps()``
        and the traces; one ending in ``-`` is completed by the tasklet's id
        (``name="conn-"`` makes ``conn-17``).  Works before ``run()``, from
        inside tasklets, and from ``call_soon_threadsafe`` callbacks.
        """
        if self._closed:
            raise RuntimeError("kernel is closed")
        gen = target(*args) if callable(target) else target
        if args and gen is target:
            raise TypeError("spawn() got arguments but target is not callable")
        if not (hasattr(gen, "send") and hasattr(gen, "throw")):
            raise TypeError(f"spawn() needs a generator or coroutine, got {gen!r}")
        task = Tasklet(next(self._ids), gen, self, name, daemon)
        self._tasklets[task.id] = task
        if not daemon:
            self._live_non_daemon += 1
        self._n_spawned += 1
        self._ready.append(task)
        return task

    def run(self, main: Any = None, *args: Any, name: str | None = None) -> Any:
        """Run until no non-daemon tasklet is left, or until ``stop()``.

        With ``main``, spawn it first and return its result once the loop
        ends.  If ``main`` raises, ``run()`` stops at once and raises it
        (the tasklets still alive stay in the kernel; ``close()`` cancels
        them).  Can be called again after a stop.
        """
        if self._closed:
            raise RuntimeError("kernel is closed")
        root = None
        if main is not None:
            root = self._root = self.spawn(main, *args, name=name)
        with self._activated():
            self._loop(until_all=False)
        self._stopping = False
        if root is None:
            return None
        if not root.done:
            raise RuntimeError(f"kernel stopped before the main tasklet {root.name} ended")
        if root._exception is not None:
            raise root._exception
        return root._result

    def stop(self) -> None:
        """Make ``run()`` return after the current pass.  Thread- and signal-safe."""
        self._stopping = True
        self._interrupt_poll()

    def close(self) -> None:
        """Cancel every tasklet still alive, let them unwind, release epoll and threads.

        Called by ``with Kernel() as k:`` on exit.  Idempotent.  A tasklet
        that catches ``Cancelled`` and blocks again keeps it waiting, as
        does a ``run_in_thread`` call that never returns.
        """
        if self._closed:
            return
        if getattr(_local, "kernel", None) is self:
            raise RuntimeError("close() called from inside the running kernel")
        if self._tasklets:
            for task in list(self._tasklets.values()):
                self.cancel(task)
            with self._activated():
                self._loop(until_all=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        with self._wake_lock:
            self._closed = True
            os.close(self._wake_fd)
        self._epoll.close()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def cancel(self, task: Tasklet, exc: BaseException | None = None) -> bool:
        """Cancel ``task``: raise ``exc`` (default ``Cancelled()``) at its next blocking point.

        A blocked tasklet has its wait undone and is woken at once with the
        exception.  One that never ran yet never runs.  A running or ready
        tasklet gets it when it next yields a trap.  Returns False if the
        tasklet had already ended.  Cancelling does not wait for the
        tasklet to finish unwinding; ``join()`` it for that.
        """
        if task._state in ENDED:
            return False
        if exc is None:
            exc = Cancelled(f"tasklet {task.name} cancelled")
        if task._unwait is not None:
            task._unwait(task)
            self._wake_throw(task, exc)
        elif task.steps == 0:
            # Discussion: an unstarted generator that is thrown into raises
            # at once without running a line - exactly "never runs".
            task._throw = exc
        else:
            task._pending = exc  # overrides a pending timeout: cancel is stronger
        return True

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in the kernel thread soon.  Callable from any thread or signal handler.

        The callback runs between passes of the loop, outside any tasklet;
        it may spawn tasklets, set Events, put into Queues, stop the kernel.
        """
        self._callbacks.append((fn, args))
        self._interrupt_poll()

    def forget_fd(self, fd: int) -> None:
        """Call before closing ``fd``: wake its waiters with ``ClosedError``, drop it from epoll.

        ``tasklets.io.Socket.close()`` does this for you.  Code that closes
        raw fds it waited on must call it first.  Why it matters: epoll
        watches open file *descriptions*, reports them by fd *number*, and the
        kernel keeps registrations around lazily; a number closed behind the
        kernel's back and reused by a new socket could otherwise keep a stale
        registration, or lose one.
        """
        for table in (self._readers, self._writers):
            task = table.pop(fd, None)
            if task is not None:
                self._wake_throw(task, ClosedError(fd))
        self._stale_fds.discard(fd)
        if self._registered.pop(fd, None) is not None:
            self._n_unregister += 1
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass  # already closed: epoll dropped it itself

    def stats(self) -> KernelStats:
        """A snapshot of the counters; see ``KernelStats``."""
        traps = {cls.__name__: count for cls, count in self._trap_counts.items()}
        # Discussion: every step ends in exactly one way - the tasklet ended,
        # it yielded SCHEDULE with nothing pending (handled inline in the run
        # loop and never counted there), or it yielded anything else (counted
        # in _trap).  So the inline SCHEDULE count is what remains, and the hot
        # path does not have to increment a counter.
        ended = self._n_finished + self._n_crashed + self._n_cancelled
        dispatched = sum(self._trap_counts.values()) + self._n_invalid_traps
        traps["Schedule"] += self._n_steps - ended - dispatched
        traps["invalid"] = self._n_invalid_traps
        return KernelStats(
            loop_iterations=self._n_loops,
            epoll_waits=self._n_epoll_waits,
            epoll_wait_seconds=self._epoll_wait_seconds,
            epoll_events=self._n_events,
            steps=self._n_steps,
            traps=traps,
            tasklets_spawned=self._n_spawned,
            tasklets_finished=self._n_finished,
            tasklets_crashed=self._n_crashed,
            tasklets_cancelled=self._n_cancelled,
            tasklets_alive=len(self._tasklets),
            tasklets_runnable=len(self._ready),
            timers_set=self._timers.set_count,
            timers_cancelled=self._timers.cancelled_count,
            timers_fired=self._timers.fired_count,
            epoll_register=self._n_register,
            epoll_modify=self._n_modify,
            epoll_unregister=self._n_unregister,
            fds_registered=len(self._registered),
            thread_jobs=self._n_thread_jobs,
            threadsafe_callbacks=self._n_callbacks,
        )

    def tasklets(self) -> list[Tasklet]:
        """Every live tasklet, in spawn order."""
        return list(self._tasklets.values())

    def ps(self) -> str:
        """A table of the live tasklets: id, name, state, steps, and where each one is."""
        rows = [f"{'ID':>6}  {'NAME':<24} {'STATE':<14} {'STEPS':>8}  WHERE"]
        for task in self._tasklets.values():
            stack = task.where()
            rows.append(f"{task.id:>6}  {task.name:<24.24} {task.state:<14} {task.steps:>8}  "
                        f"{stack[-1] if stack else '-'}")
        return "\n".join(rows)

    # =====================================================================
    # The loop
    # =====================================================================

    @contextmanager
    def _activated(self) -> Iterator[None]:
        """Make this the running kernel of the thread for the duration of the block."""
        if getattr(_local, "kernel", None) is not None:
            raise RuntimeError("a tasklets kernel is already running in this thread")
        _local.kernel = self
        try:
            yield
        finally:
            _local.kernel = None
            self.current = None

    def _loop(self, until_all: bool) -> None:
        """Run passes until there is nothing left to do (see the module docstring)."""
        ready = self._ready
        while True:
            self._n_loops += 1
            if ready:
                if self._instrumented:
                    self._run_ready_instrumented()
                else:
                    self._run_ready(until_all)
            if self._stopping and not until_all:
                return
            if not (self._tasklets if until_all else self._live_non_daemon):
                return
            # Discussion: a trip through epoll - even with a zero timeout -
            # costs a couple of microseconds, several tasklet switches.  Two
            # tasklets ping-ponging with sleep(0) would pay it on every pass.
            # So while tasklets are ready we skip the poll (and the timer
            # check) until `poll_every` steps have run since the last one.
            # With many ready tasklets a single pass is that long anyway, so
            # this only changes anything when few tasklets keep the processor
            # busy - and then I/O and timers are noticed within `poll_every`
            # steps instead of at the next pass: a little latency for them, in
            # exchange for switches that cost a switch.
            if ready and self._n_steps - self._steps_at_last_poll < self._poll_every:
                continue
            if self._stale_fds:
                self._reconcile_fds()
            self._poll()

    def _run_ready(self, until_all: bool) -> None:
        """Step the ready tasklets, pass after pass, until it is time to poll.  The hot loop.

        One pass steps exactly the tasklets that were ready when it began:
        whatever they make ready (themselves included) is appended behind
        them and waits for the next pass.  Passes follow each other here
        without returning to ``_loop`` - returning costs more than a switch
        - until ``poll_every`` steps have run, nobody is ready, or the loop
        should end.
        """
        ready = self._ready
        popleft = ready.popleft
        append = ready.append
        schedule = SCHEDULE
        readers, registered = self._readers, self._registered
        keep_registration = self._stale_fds.discard
        unwait_read = self._unwait_read
        budget = self._poll_every - (self._n_steps - self._steps_at_last_poll)
        steps = 0             # counted locally, added to _n_steps once at the end
        read_waits = 0        # inline ReadWait traps, likewise
        someone_ended = False
        try:
            while True:
                batch = len(ready)
                # (An ascending range: CPython 3.11 iterates it measurably
                # faster than a descending one.)
                for done in range(1, batch + 1):
                    task = popleft()
                    self.current = task
                    task.steps += 1
                    try:
                        if task._throw is None:
                            trap = task._gen.send(task._value)
                        else:
                            exc, task._throw = task._throw, None
                            trap = task._gen.throw(exc)
                    except StopIteration as stop:
                        self._finish(task, stop.value, None)
                        someone_ended = True
                        continue
                    except BaseException as error:
                        self._finish(task, None, error)
                        someone_ended = True
                        if isinstance(error, (KeyboardInterrupt, SystemExit)):
                            steps += done  # the rest of the batch stays queued
                            raise
                        continue
                    if trap is schedule and task._pending is None:
                        task._value = None
                        append(task)
                    elif (trap.__class__ is ReadWait and task._pending is None
                          and registered.get(fd := trap.fd) == _IN and fd not in readers):
                        # The server's hottest wait, inline: a reader woken in
                        # the last poll reads, answers and waits on the same fd
                        # again.  epoll already watches exactly EPOLLIN there,
                        # so park it and take the fd off the stale set (nothing
                        # to trim).  The same as _trap -> _trap_read_wait ->
                        # _wait_fd, without the three calls.
                        readers[fd] = task
                        keep_registration(fd)
                        task._value = None
                        task._state = READ_WAIT
                        task._waiting_on = fd
                        task._unwait = unwait_read
                        read_waits += 1
                    else:
                        self._trap(task, trap)
                steps += batch
                if steps >= budget or not ready or self._stopping:
                    break
                if someone_ended:  # maybe the last tasklet that kept the loop running?
                    someone_ended = False
                    if not (self._tasklets if until_all else self._live_non_daemon):
                        break
        finally:
            self._n_steps += steps
            self._trap_counts[ReadWait] += read_waits
            self.current = None

    def _run_ready_instrumented(self) -> None:
        """The same pass as ``_run_ready``, with tracing and long-block detection.

        Discussion: rather than testing three debug flags on every step of
        the hot loop, the kernel picks this twin once per pass when any of
        them is on.  It reads more plainly, because speed is not its job.
        """
        longblock, traptrace, schedtrace = self._longblock, self._traptrace, self._schedtrace
        batch = len(self._ready)
        self._n_steps += batch
        for done in range(1, batch + 1):
            task = self._ready.popleft()
            self.current = task
            task.steps += 1
            if schedtrace:
                log.debug("run %s (step %d)", task.name, task.steps)
            ended: tuple[Any, BaseException | None] | None = None
            started = time.perf_counter()
            try:
                if task._throw is None:
                    trap = task._gen.send(task._value)
                else:
                    exc, task._throw = task._throw, None
                    trap = task._gen.throw(exc)
            except StopIteration as stop:
                ended = (stop.value, None)
            except BaseException as error:
                ended = (None, error)
            elapsed = time.perf_counter() - started
            if longblock is not None and elapsed > longblock:
                stack = task.where()
                log.warning("tasklet %s ran %.1f ms without yielding; %s", task.name,
                            elapsed * 1000.0,
                            "now at:\n  " + "\n  ".join(stack) if stack else "then it ended")
            if ended is not None:
                self._finish(task, *ended)
                if isinstance(ended[1], (KeyboardInterrupt, SystemExit)):
                    self._n_steps -= batch - done  # the rest of the batch stays queued
                    raise ended[1]
                continue
            if traptrace:
                log.debug("trap %s: %r", task.name, trap)
            if trap is SCHEDULE and task._pending is None:
                task._value = None
                self._ready.append(task)
            else:
                self._trap(task, trap)
        self.current = None

    def _trap(self, task: Tasklet, trap: Any) -> None:
        """Dispatch a trap other than the inline SCHEDULE to its handler."""
        task._value = None  # do not keep the last result alive while parked
        handler = self._dispatch.get(trap.__class__)
        if handler is None:
            self._n_invalid_traps += 1
            hint = " (did you mean 'yield from'?)" if hasattr(trap, "send") else ""
            error = TypeError(f"tasklet yielded {trap!r}, which is not a trap{hint}")
            self._wake_throw(task, error)
            return
        self._trap_counts[trap.__class__] += 1
        if task._pending is not None:
            # Every trap is a blocking point: the place to deliver a
            # cancellation or timeout that could not be delivered earlier.
            pending, task._pending = task._pending, None
            if isinstance(pending, _TimeoutScope):
                pending = self._timeout_exception(task, pending)
            self._wake_throw(task, pending)
            return
        handler(task, trap)

    def _poll(self) -> None:
        """Wait for I/O (or the next timer), wake the I/O waiters, run callbacks, expire timers."""
        if self._ready:
            timeout = 0.0
        else:
            deadline = self._timers.next_deadline()
            timeout = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            if (deadline is None and not (self._readers or self._writers or self._threads_busy)
                    and not self._callbacks and not self._stuck_warned):
                # Discussion: nothing inside the kernel can ever wake anybody
                # now - no timer, no fd, no thread job.  gevent raises
                # LoopExit here; we only warn, because another thread or a
                # signal handler may still call call_soon_threadsafe().  Once
                # per kernel: a program that really waits for a signal is told
                # only once.
                self._stuck_warned = True
                log.warning("every tasklet is blocked and only call_soon_threadsafe() "
                            "can wake them - a deadlock?\n%s", self.ps())
        if timeout:
            started = time.perf_counter()
            events = self._epoll.poll(timeout)
            self._epoll_wait_seconds += time.perf_counter() - started
        else:  # a zero-timeout poll only looks: not worth two clock reads
            events = self._epoll.poll(0.0)
        self._n_epoll_waits += 1
        self._steps_at_last_poll = self._n_steps
        if events:
            self._n_events += len(events)
            readers, writers, stale = self._readers, self._writers, self._stale_fds
            append = self._ready.append
            readable, writable = _READABLE, _WRITABLE
            wake_fd, woken_from_outside = self._wake_fd, False
            for fd, mask in events:
                if fd == wake_fd:
                    woken_from_outside = True
                    continue
                # _wake(task, None), inline (one event per request on a busy
                # server); a parked waiter's _value is already None.
                if mask & readable:
                    task = readers.pop(fd, None)
                    if task is not None:
                        task._state = READY
                        task._unwait = task._waiting_on = None
                        append(task)
                if mask & writable:
                    task = writers.pop(fd, None)
                    if task is not None:
                        task._state = READY
                        task._unwait = task._waiting_on = None
                        append(task)
                # The registration stays for now; _reconcile_fds() trims it
                # before the next poll unless the tasklet waits here again.
                stale.add(fd)
            if woken_from_outside:
                self._run_callbacks()
        if len(self._timers):
            self._expire_timers(time.monotonic())

    def _expire_timers(self, now: float) -> None:
        """Wake the sleepers and fire the timeouts whose deadline is ``now`` or earlier."""
        while (owner := self._timers.pop_due(now)) is not None:
            if isinstance(owner, Tasklet):
                self._wake(owner, None)
            else:
                self._expire_scope(owner)

    def _run_callbacks(self) -> None:
        """Drain the eventfd and run what other threads handed over."""
        try:
            os.eventfd_read(self._wake_fd)
        except BlockingIOError:
            pass  # another wake-up already drained it
        callbacks = self._callbacks
        while callbacks:
            fn, args = callbacks.popleft()
            self._n_callbacks += 1
            try:
                fn(*args)
            except Exception:
                log.exception("call_soon_threadsafe callback %r failed", fn)

    def _interrupt_poll(self) -> None:
        """Make a blocked epoll.poll() return by making the eventfd readable."""
        # Discussion: the lock keeps close() from closing the eventfd between
        # our check and our write - the fd number could already belong to
        # someone else.  It is re-entrant because a signal handler can run
        # this in the main thread while close() holds it.
        with self._wake_lock:
            if not self._closed:
                os.eventfd_write(self._wake_fd, 1)

    # =====================================================================
    # Waking, finishing
    # =====================================================================

    def _wake(self, task: Tasklet, value: Any) -> None:
        """Blocked -> READY; ``value`` becomes the result of the trap it yielded."""
        task._value = value
        task._state = READY
        task._unwait = None
        task._waiting_on = None
        self._ready.append(task)

    def _wake_throw(self, task: Tasklet, exc: BaseException) -> None:
        """Blocked -> READY; ``exc`` is raised at the trap it yielded."""
        task._throw = exc
        task._state = READY
        task._unwait = None
        task._waiting_on = None
        self._ready.append(task)

    def _finish(self, task: Tasklet, result: Any, exc: BaseException | None) -> None:
        """Record how a tasklet ended, forget it, wake its joiners."""
        if task._name is None:
            task._name = task.name  # the default name comes from the generator ...
        task._gen = None  # ... which goes now, freeing its frames; where() is empty
        task._pending = None
        if exc is None:
            task._state = DONE
            task._result = result
            self._n_finished += 1
        elif isinstance(exc, Cancelled):
            task._state = CANCELLED
            task._exception = exc
            self._n_cancelled += 1
        else:
            task._state = CRASHED
            task._exception = exc
            self._n_crashed += 1
            # A crash nobody is waiting to hear about would vanish silently.
            if not task._joiners and task is not self._root:
                log.error("tasklet %s crashed", task.name, exc_info=exc)
        if task is self._root and exc is not None:
            # The main tasklet failed: its exception ends run() now, rather
            # than after tasklets that may be waiting for main forever.
            self._stopping = True
        del self._tasklets[task.id]
        if not task.daemon:
            self._live_non_daemon -= 1
        if task._joiners:
            for joiner in task._joiners:
                self._wake(joiner, None)
            task._joiners = None

    # =====================================================================
    # Trap handlers: park the tasklet, say how to undo it
    # =====================================================================

    def _trap_schedule(self, task: Tasklet, trap: Schedule) -> None:
        # The run loop handles the SCHEDULE singleton inline; this handler
        # serves any other Schedule instance a tasklet may yield.
        self._wake(task, None)

    def _trap_sleep(self, task: Tasklet, trap: Sleep) -> None:
        self._timers.push(time.monotonic() + trap.seconds, task)
        task._state = SLEEP
        task._unwait = self._unwait_sleep

    def _undo_sleep(self, task: Tasklet) -> None:
        self._timers.cancel(task)

    def _trap_read_wait(self, task: Tasklet, trap: ReadWait) -> None:
        self._wait_fd(task, trap.fd, self._readers, select.EPOLLIN, READ_WAIT, self._unwait_read)

    def _trap_write_wait(self, task: Tasklet, trap: WriteWait) -> None:
        self._wait_fd(task, trap.fd, self._writers, select.EPOLLOUT, WRITE_WAIT,
                      self._unwait_write)

    def _wait_fd(self, task: Tasklet, fd: int, table: dict[int, Tasklet], flag: int,
                 state: str, undo: Callable[[Tasklet], None]) -> None:
        """Park ``task`` as the one waiter for ``fd`` in one direction."""
        other = table.get(fd)
        if other is not None:
            self._wake_throw(task, ResourceBusy(
                f"tasklet {task.name} cannot wait on fd {fd}: {other.name} is already in {state}"))
            return
        have = self._registered.get(fd, 0)
        if not have & flag:
            try:
                self._epoll_set(fd, have | flag)
            except OSError as error:  # EBADF (closed fd), EPERM (a regular file) ...
                self._wake_throw(task, error)
                return
        table[fd] = task
        task._state = state
        task._waiting_on = fd
        task._unwait = undo

    def _undo_read_wait(self, task: Tasklet) -> None:
        del self._readers[task._waiting_on]
        self._stale_fds.add(task._waiting_on)

    def _undo_write_wait(self, task: Tasklet) -> None:
        del self._writers[task._waiting_on]
        self._stale_fds.add(task._waiting_on)

    def _epoll_set(self, fd: int, want: int) -> None:
        """Make epoll watch exactly ``want`` on ``fd`` (0 = not at all): one epoll_ctl call."""
        have = self._registered.get(fd, 0)
        if want == have:
            return
        if not want:
            del self._registered[fd]
            self._n_unregister += 1
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass  # closed behind our back: epoll has already forgotten it
            return
        try:
            if have:
                self._n_modify += 1
                try:
                    self._epoll.modify(fd, want)
                except FileNotFoundError:
                    # Closed behind our back and the number reused: epoll
                    # dropped the old registration, so this is a fresh one.
                    self._n_register += 1
                    self._epoll.register(fd, want)
            else:
                self._n_register += 1
                self._epoll.register(fd, want)
        except OSError:
            self._registered.pop(fd, None)  # whatever epoll had, it is gone or unusable
            raise
        self._registered[fd] = want

    def _reconcile_fds(self) -> None:
        """Trim epoll registrations to what the current waiters need.

        Discussion: lazy unregistration.  When a reader is woken, the kernel
        does not tell epoll at once to stop watching its fd: the typical
        tasklet reads, finds nothing more, and waits on the same fd again in
        the same pass - and then there is nothing to tell epoll at all.  This
        runs once per pass, after the tasklets, and issues epoll_ctl only for
        the fds whose registration is now wider than needed.  Until then a
        stale registration can at worst wake somebody spuriously, which the
        try-then-wait style of every I/O operation absorbs.
        """
        readers, writers = self._readers, self._writers
        for fd in self._stale_fds:
            want = ((select.EPOLLIN if fd in readers else 0)
                    | (select.EPOLLOUT if fd in writers else 0))
            try:
                self._epoll_set(fd, want)
            except OSError as error:
                # The fd was closed behind our back while still wanted: tell
                # its waiters instead of leaving them asleep forever.
                self._registered.pop(fd, None)
                for table in (readers, writers):
                    task = table.pop(fd, None)
                    if task is not None:
                        self._wake_throw(task, error)
        self._stale_fds.clear()

    def _trap_join(self, task: Tasklet, trap: Join) -> None:
        target = trap.tasklet
        if target._state in ENDED:
            self._wake(task, None)
        elif target is task:
            self._wake_throw(task, RuntimeError("a tasklet cannot join itself"))
        else:
            if target._joiners is None:
                target._joiners = []
            target._joiners.append(task)
            task._state = JOIN
            task._waiting_on = target
            task._unwait = self._unwait_join

    def _undo_join(self, task: Tasklet) -> None:
        task._waiting_on._joiners.remove(task)

    def _trap_park(self, task: Tasklet, trap: Park) -> None:
        trap.queue._waiters.append((task, trap.payload))
        task._state = trap.state
        task._waiting_on = trap.queue
        task._unwait = self._unwait_park

    def _undo_park(self, task: Tasklet) -> None:
        task._waiting_on._remove(task)

    def _trap_run_in_thread(self, task: Tasklet, trap: RunInThread) -> None:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._max_threads, thread_name_prefix="tasklets-worker")
        future = self._pool.submit(trap.fn, *trap.args)
        self._n_thread_jobs += 1
        self._threads_busy += 1
        task._state = THREAD
        task._waiting_on = future
        task._unwait = self._unwait_thread
        # The done-callback runs in the worker thread; it must not touch the
        # kernel, only hand the outcome over through the wake-up channel.
        future.add_done_callback(functools.partial(self._thread_job_done_cb, task))

    def _thread_job_done_cb(self, task: Tasklet, future: concurrent.futures.Future) -> None:
        self.call_soon_threadsafe(self._thread_job_done, task, future)

    def _thread_job_done(self, task: Tasklet, future: concurrent.futures.Future) -> None:
        self._threads_busy -= 1
        if task._waiting_on is not future:
            return  # the tasklet was cancelled meanwhile: nobody wants this result
        error = future.exception()
        if error is None:
            self._wake(task, future.result())
        else:
            self._wake_throw(task, error)

    def _undo_thread(self, task: Tasklet) -> None:
        task._waiting_on.cancel()  # succeeds only if the job has not started yet

    # =====================================================================
    # Timeouts (used by tasklets.timeouts)
    # =====================================================================
    #
    # Each tasklet has a stack of active timeout scopes (task._deadlines),
    # innermost last, and each scope has its own timer.  When a scope's timer
    # fires, the tasklet must stop what it is doing:
    #
    # * if the scope is the innermost one, the blocked operation raises
    #   TaskletTimeout - a TimeoutError, like a socket timeout;
    # * if it is an outer one, the inner work is cancelled with
    #   TimeoutCancelled (a Cancelled, so the inner code cannot mistake it
    #   for its own timeout) and the owning timeout_after converts it into
    #   TaskletTimeout on the way out.
    #
    # Which of the two is decided when the exception is delivered, not when
    # the timer fires, because the tasklet may have entered a new inner scope
    # in between.

    def _push_deadline(self, task: Tasklet, seconds: float) -> _TimeoutScope:
        scope = _TimeoutScope(task, seconds)
        self._timers.push(time.monotonic() + seconds, scope)
        if task._deadlines is None:
            task._deadlines = []
        task._deadlines.append(scope)
        return scope

    def _pop_deadline(self, task: Tasklet, scope: _TimeoutScope) -> None:
        popped = task._deadlines.pop()
        assert popped is scope, "timeout scopes must nest"
        if scope._timer is not None:
            self._timers.cancel(scope)
        if task._pending is scope:
            # It expired, but the operation finished first: the result wins.
            task._pending = None

    def _expire_scope(self, scope: _TimeoutScope) -> None:
        scope.expired = True
        task = scope.task
        if task._unwait is not None:
            task._unwait(task)
            self._wake_throw(task, self._timeout_exception(task, scope))
        elif task._pending is None:
            task._pending = scope

    @staticmethod
    def _timeout_exception(task: Tasklet, scope: _TimeoutScope) -> BaseException:
        if task._deadlines and task._deadlines[-1] is scope:
            return TaskletTimeout(scope.seconds, scope)
        return TimeoutCancelled(scope)


# =========================================================================
# The module-level API: plain calls that find the running kernel
# =========================================================================

def spawn(target: Any, *args: Any, name: str | None = None, daemon: bool = False) -> Tasklet:
    """Spawn a tasklet on the running kernel; see ``Kernel.spawn``."""
    return running_kernel().spawn(target, *args, name=name, daemon=daemon)


def current() -> Tasklet | None:
    """The tasklet that is running now (None inside a kernel callback)."""
    return running_kernel().current


def cancel(task: Tasklet, exc: BaseException | None = None) -> bool:
    """Cancel ``task``; see ``Kernel.cancel``."""
    return task._kernel.cancel(task, exc)


def join(task: Tasklet) -> Any:
    """``yield from join(t)``: wait for ``t`` to end and return its result; see ``Tasklet.join``."""
    return task.join()


def ps() -> str:
    """The running kernel's table of tasklets; see ``Kernel.ps``."""
    return running_kernel().ps()


def run(main: Any, *args: Any, **kernel_options: Any) -> Any:
    """Run ``main(*args)`` (or the generator ``main``) on a fresh kernel; return its result.

    Like a program with threads, it runs until every non-daemon tasklet has
    ended, then cancels the leftover daemons and closes.  Unlike threads,
    an exception in ``main`` ends the run at once: the other tasklets are
    cancelled (their ``finally`` blocks run) and the exception is raised.
    ``kernel_options`` go to ``Kernel()``.
    """
    with Kernel(**kernel_options) as kernel:
        return kernel.run(main, *args)
