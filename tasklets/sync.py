"""Synchronisation between tasklets: Event, Lock, Semaphore, Queue, Channel.

Why a single-threaded scheduler needs these at all: code *between* two
yields is atomic, so shared data needs no protection there - but tasklets
still need to *wait for each other* (for a result, for a free slot, for a
turn at a resource held across a yield).  Each primitive here is a little
state plus one or two ``WaitQueue`` s from the kernel.

The recipe every primitive follows:

* The **fast path never touches the kernel**: acquiring a free Lock, getting
  from a non-empty Queue, waiting on a set Event returns at once, without a
  trap.
* To block, yield ``waiters.park(STATE)``.  The kernel parks the tasklet and
  records how to undo it, so a **cancelled waiter simply disappears** from
  the queue: every primitive is cancellation-safe without extra code.
* Waking is a plain call (``Event.set()`` is not a generator) and **hands the
  thing over directly**: ``Lock.release()`` makes the first waiter the owner,
  ``Queue.put()`` gives its item to a waiting getter.  Nobody can barge in
  between the wake-up and the moment the woken tasklet runs, so FIFO order
  is exact - and because the kernel keeps a cancellation that arrives in
  that window *pending*, a handed-over Lock or item is never lost.

Blocking methods are generators (``yield from lock.acquire()``) and, like
every helper in the package, are also awaitable from ``async def`` tasklets.
"""

from __future__ import annotations

import collections
import types
from collections.abc import Generator
from typing import Any

from .kernel import WaitQueue, running_kernel
from .tasklet import Tasklet
from .traps import Trap


class Event:
    """A flag tasklets can wait for: ``set()`` wakes every waiter."""

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters = WaitQueue()

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        """Set the flag and make every waiter ready.  A plain call: no ``yield from``."""
        self._flag = True
        self._waiters.wake_all(True)

    def clear(self) -> None:
        self._flag = False

    @types.coroutine
    def wait(self) -> Generator[Trap, Any, bool]:
        """Suspend until the flag is set (returns at once if it already is).  Returns True."""
        if self._flag:
            return True
        return (yield self._waiters.park("EVENT"))

    def __repr__(self) -> str:
        return f"<Event {'set' if self._flag else 'unset'} waiters={len(self._waiters)}>"


class Semaphore:
    """A counter of free permits; ``acquire()`` waits while it is zero."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: int = 1) -> None:
        if value < 0:
            raise ValueError("Semaphore value must be >= 0")
        self._value = value
        self._waiters = WaitQueue()

    @property
    def value(self) -> int:
        """Permits free right now."""
        return self._value

    @types.coroutine
    def acquire(self) -> Generator[Trap, Any, None]:
        """Take a permit, waiting in FIFO order if none is free."""
        if self._value > 0:  # (never true while tasklets wait: release() hands over)
            self._value -= 1
            return
        yield self._waiters.park("SEMAPHORE")
        # Woken by release(), which handed its permit straight to us.

    def release(self) -> None:
        """Return a permit: to the first waiter if there is one, else to the pool."""
        if self._waiters:
            self._waiters.wake_one()
        else:
            self._value += 1

    def __repr__(self) -> str:
        return f"<Semaphore value={self._value} waiters={len(self._waiters)}>"


class Lock:
    """Mutual exclusion across yields, owned by one tasklet at a time, FIFO.

    Use it as::

        yield from lock.acquire()
        try:
            ...                      # may yield; others wanting the lock wait
        finally:
            lock.release()
    """

    __slots__ = ("_owner", "_waiters")

    def __init__(self) -> None:
        self._owner: Tasklet | None = None
        self._waiters = WaitQueue()

    def locked(self) -> bool:
        return self._owner is not None

    @property
    def owner(self) -> Tasklet | None:
        return self._owner

    @types.coroutine
    def acquire(self) -> Generator[Trap, Any, None]:
        """Wait until the lock is free, then own it."""
        me = running_kernel().current
        if self._owner is None:
            self._owner = me
            return
        if self._owner is me:
            raise RuntimeError(f"{me.name} already holds this lock (it is not re-entrant)")
        yield self._waiters.park("LOCK")
        # release() has already made us the owner.

    def release(self) -> None:
        """Release; the longest waiter (if any) becomes the owner immediately."""
        if self._owner is None:
            raise RuntimeError("release of an unlocked Lock")
        if self._waiters:
            self._owner, _ = self._waiters.wake_one()
        else:
            self._owner = None

    def __repr__(self) -> str:
        owner = self._owner.name if self._owner else None
        return f"<Lock owner={owner} waiters={len(self._waiters)}>"


class Queue:
    """A FIFO queue between tasklets.  ``maxsize`` > 0 bounds it: ``put`` then waits while full."""

    __slots__ = ("maxsize", "_items", "_getters", "_putters")

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._items: collections.deque[Any] = collections.deque()
        self._getters = WaitQueue()  # tasklets waiting for an item
        self._putters = WaitQueue()  # tasklets waiting for room, each parked with its item

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items)

    @types.coroutine
    def put(self, item: Any) -> Generator[Trap, Any, None]:
        """Add ``item``; wait while the queue is full."""
        if self._getters:
            # Someone is waiting, so the queue is empty: hand the item over.
            self._getters.wake_one(item)
        elif not self.full():
            self._items.append(item)
        else:
            yield self._putters.park("QUEUE_PUT", item)
            # get() has already moved our item into the queue.

    @types.coroutine
    def get(self) -> Generator[Trap, Any, Any]:
        """Remove and return the oldest item; wait while the queue is empty."""
        if self._items:
            item = self._items.popleft()
            if self._putters:
                # A slot just freed up: admit the longest-waiting putter's item.
                _, waiting_item = self._putters.wake_one()
                self._items.append(waiting_item)
            return item
        return (yield self._getters.park("QUEUE_GET"))

    def __repr__(self) -> str:
        return (f"<Queue size={len(self._items)} maxsize={self.maxsize} "
                f"getters={len(self._getters)} putters={len(self._putters)}>")


class Channel:
    """Stackless's unbuffered channel: a rendezvous between one sender and one receiver.

    ``send(value)`` blocks until a receiver takes the value; ``receive()``
    blocks until a sender offers one.  Whoever comes second completes the
    exchange without blocking and the first one is made ready.  Senders and
    receivers are each served in FIFO order.  ``balance`` tells which side
    is queued: the number of blocked senders (positive) or of blocked
    receivers (negative).
    """

    __slots__ = ("_senders", "_receivers")

    # A sender's payload says what it sends: (value, None) or (None, exception).

    def __init__(self) -> None:
        self._senders = WaitQueue()
        self._receivers = WaitQueue()

    @property
    def balance(self) -> int:
        return len(self._senders) - len(self._receivers)

    @types.coroutine
    def send(self, value: Any) -> Generator[Trap, Any, None]:
        """Hand ``value`` to a receiver, waiting for one if none is waiting."""
        if self._receivers:
            self._receivers.wake_one(value)
        else:
            yield self._senders.park("CHANNEL_SEND", (value, None))

    @types.coroutine
    def send_exception(self, exc_type: type[BaseException], *args: Any
                       ) -> Generator[Trap, Any, None]:
        """Like ``send``, but the receiver raises ``exc_type(*args)`` instead of receiving."""
        exc = exc_type(*args)
        if self._receivers:
            self._receivers.throw_one(exc)
        else:
            yield self._senders.park("CHANNEL_SEND", (None, exc))

    @types.coroutine
    def receive(self) -> Generator[Trap, Any, Any]:
        """Take the next value from a sender, waiting for one if none is waiting."""
        if self._senders:
            _, (value, exc) = self._senders.wake_one()
            if exc is not None:
                raise exc
            return value
        return (yield self._receivers.park("CHANNEL_RECEIVE"))

    def __repr__(self) -> str:
        return f"<Channel balance={self.balance}>"
