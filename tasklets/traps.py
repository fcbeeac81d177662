"""Traps: the small named objects a tasklet yields to tell the kernel what it waits for.

A tasklet is a plain generator.  When it cannot go on - it wants to sleep,
or a socket is not readable yet - it *yields a trap*.  The generator is then
suspended, the kernel looks at the trap, parks the tasklet wherever the trap
says, and later resumes it by ``send()``-ing the trap's result back in (or by
``throw()``-ing an exception in).  This is the whole contract between a
tasklet and the kernel; it is the same idea as a system call in an operating
system, which is why Beazley's pyos and curio call them "traps".

Each trap is a class with ``__slots__`` and nothing else: cheap to create,
obvious in a debugger (``ReadWait(fd=7)``), and the kernel dispatches on its
class through a dict, so adding a trap means adding a class here and one
handler method in the kernel.

User code rarely yields these by hand (``yield SCHEDULE`` in a hot loop is
the exception: it skips the helper's own generator).  The helper generators
at the bottom (``sleep``, ``read_wait``, ...) wrap them so that user code
reads ``yield from sleep(1)``; ``yield from`` is also what lets tasklets compose,
because a trap yielded ten generators deep travels straight up to the kernel
and its result travels straight back down.

Every helper is decorated with ``types.coroutine``.  That flag changes
nothing for generators, but makes the very same helpers awaitable, so an
``async def`` tasklet can ``await sleep(1)`` on the same kernel.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")


class Trap:
    """Base class of all traps.  A trap only describes a wait; the kernel acts on it."""

    __slots__ = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Schedule(Trap):
    """Put me at the back of the ready queue; let the others run first.

    The cheapest trap and the hottest one (``sleep(0)``): the kernel handles
    it inline in its run loop without a dispatch.  There is one instance,
    ``SCHEDULE``, because it carries no data.
    """

    __slots__ = ()


SCHEDULE = Schedule()


class Sleep(Trap):
    """Wake me after ``seconds`` (a positive number) have passed."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class ReadWait(Trap):
    """Wake me when ``fd`` is readable (or has hung up, or has an error)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd


class WriteWait(Trap):
    """Wake me when ``fd`` is writable (or has hung up, or has an error)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd


class Join(Trap):
    """Wake me when ``tasklet`` has ended, however it ended."""

    __slots__ = ("tasklet",)

    def __init__(self, tasklet: Any) -> None:
        self.tasklet = tasklet


class Park(Trap):
    """Park me on a ``WaitQueue`` until some other code wakes me.

    This one trap carries every synchronisation primitive (Event, Lock,
    Queue, Channel, ...): the primitive owns the queue and decides whom to
    wake, the kernel only parks and unparks.  ``state`` is what the tasklet
    shows in ``ps()`` while parked (``'EVENT'``, ``'LOCK'``, ...), and
    ``payload`` travels with the waiter (a Queue putter parks with its item).
    """

    __slots__ = ("queue", "state", "payload")

    def __init__(self, queue: Any, state: str, payload: Any = None) -> None:
        self.queue = queue
        self.state = state
        self.payload = payload


class RunInThread(Trap):
    """Run ``fn(*args)`` in the kernel's thread pool; wake me with its outcome."""

    __slots__ = ("fn", "args")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args


# --- the helper generators -------------------------------------------------
#
# Discussion: the helpers are generator functions, so each call allocates a
# small generator object (about 0.1 us).  We tried cheaper-looking tricks
# (returning a prebuilt one-element tuple to ``yield from``) and they were
# slower, because ``yield from`` has a fast path for real generators only.


def _fileno(fd: int | Any) -> int:
    """Accept an int or anything with ``fileno()`` (sockets, files, pipes)."""
    return fd if isinstance(fd, int) else fd.fileno()


@types.coroutine
def schedule() -> Generator[Trap, Any, None]:
    """Yield the processor: go to the back of the ready queue (Stackless ``schedule()``)."""
    yield SCHEDULE


@types.coroutine
def sleep(seconds: float) -> Generator[Trap, Any, None]:
    """Suspend this tasklet for ``seconds``; ``sleep(0)`` just lets the others run."""
    if seconds <= 0:
        yield SCHEDULE
    else:
        yield Sleep(seconds)


@types.coroutine
def read_wait(fd: int | Any) -> Generator[Trap, Any, None]:
    """Suspend until ``fd`` (an int or an object with ``fileno()``) is readable.

    Wake-ups can be spurious (another reader drained the data first, a stale
    readiness report): always retry the operation and wait again if it would
    still block.  That try-then-wait loop is how ``tasklets.io.Socket`` works.

    Before closing an fd you waited on, call ``running_kernel().forget_fd(fd)``
    (``Socket.close()`` does it for you); see ``Kernel.forget_fd`` for why.
    """
    yield ReadWait(_fileno(fd))


@types.coroutine
def write_wait(fd: int | Any) -> Generator[Trap, Any, None]:
    """Suspend until ``fd`` (an int or an object with ``fileno()``) is writable."""
    yield WriteWait(_fileno(fd))


@types.coroutine
def run_in_thread(fn: Callable[..., T], *args: Any) -> Generator[Trap, Any, T]:
    """Call the blocking ``fn(*args)`` in a worker thread; return its result or raise its exception.

    The tasklet sleeps meanwhile and the other tasklets keep running.  If
    the tasklet is cancelled, it is woken at once; a call that already
    started cannot be stopped, so its result is simply discarded.
    """
    return (yield RunInThread(fn, args))
