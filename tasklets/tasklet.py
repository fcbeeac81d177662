"""The Tasklet: a generator plus the little record the kernel keeps about it.

A Tasklet is to the kernel what a process-table entry is to an operating
system: *which* generator, *what* it is doing now (``state``), *what* it
waits on, *what* to hand it when it resumes, and *how* to undo its current
wait if it has to be woken early.  Everything is a plain slot, so a debugger
or ``ps()`` sees the whole story, and a million sleeping tasklets cost only
a few hundred bytes each.

User code gets Tasklet objects from ``spawn()`` and ``current()`` and uses
``name``, ``state``, ``steps``, ``where()``, ``join()`` and ``cancel()``.
The underscore slots belong to the kernel.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from .errors import TaskletError
from .traps import Join, Trap

if TYPE_CHECKING:
    from .kernel import Kernel

# --- states ------------------------------------------------------------------
# Plain strings: readable in ps() and in a debugger, and cheap to store.
# RUNNING is never stored: a tasklet is running exactly when it is the
# kernel's ``current`` tasklet, so the ``state`` property derives it.
READY = "READY"
RUNNING = "RUNNING"
SLEEP = "SLEEP"
READ_WAIT = "READ_WAIT"
WRITE_WAIT = "WRITE_WAIT"
JOIN = "JOIN"
THREAD = "THREAD"
DONE = "DONE"
CRASHED = "CRASHED"
CANCELLED = "CANCELLED"
#: The states a tasklet never leaves.
ENDED = frozenset({DONE, CRASHED, CANCELLED})


class Tasklet:
    """A handle on one tasklet: inspect it, ``join()`` it, ``cancel()`` it.

    Created by ``Kernel.spawn`` (or ``tasklets.spawn``), never directly.
    """

    __slots__ = (
        "id",            # small int, unique per kernel, in spawn order
        "daemon",        # a daemon tasklet does not keep Kernel.run() going
        "steps",         # how many times the kernel has resumed it
        "_name",         # explicit name, or None for a default derived lazily
        "_gen",          # the generator (or coroutine); None once ended
        "_kernel",       # the kernel that owns it
        "_state",        # one of the state strings above (never RUNNING)
        "_value",        # what to send() in at the next resume
        "_throw",        # or: the exception to throw() in instead (wins over _value)
        "_unwait",       # while blocked: callable(tasklet) that undoes the wait
        "_waiting_on",   # while blocked: the fd / WaitQueue / tasklet / future
        "_timer",        # while sleeping: its TimerQueue entry
        "_deadlines",    # stack of active timeout scopes, innermost last (or None)
        "_pending",      # cancellation or expired timeout to deliver at the next blocking point
        "_joiners",      # tasklets blocked in join() on this one (or None)
        "_result",       # return value once DONE
        "_exception",    # exception once CRASHED or CANCELLED
    )

    def __init__(self, ident: int, gen: Generator[Trap, Any, Any], kernel: Kernel,
                 name: str | None, daemon: bool) -> None:
        self.id = ident
        self.daemon = daemon
        self.steps = 0
        self._name = name
        self._gen: Any = gen
        self._kernel = kernel
        self._state = READY
        self._value: Any = None
        self._throw: BaseException | None = None
        self._unwait: Callable[[Tasklet], None] | None = None
        self._waiting_on: Any = None
        self._timer: tuple | None = None
        self._deadlines: list | None = None
        self._pending: Any = None
        self._joiners: list[Tasklet] | None = None
        self._result: Any = None
        self._exception: BaseException | None = None

    # --- what you can look at ---------------------------------------------

    @property
    def name(self) -> str:
        """The given name, or ``<function name>-<id>``.  A given name ending in
        ``-`` names a family, and the id completes it: ``conn-17``.

        Discussion: the default and the family names are built on demand,
        not in ``__init__``, so spawning a million tasklets does not build
        a million strings (a server names each connection's tasklet
        ``conn-``: one shared string, not 58 bytes of every connection).
        """
        name = self._name
        if name is None:
            return f"{getattr(self._gen, '__name__', 'tasklet')}-{self.id}"
        if name.endswith("-"):
            return f"{name}{self.id}"
        return name

    @property
    def state(self) -> str:
        """READY, RUNNING, SLEEP, READ_WAIT, WRITE_WAIT, JOIN, THREAD, a primitive's
        state (EVENT, LOCK, QUEUE_GET, CHANNEL_SEND, ...), DONE, CRASHED or CANCELLED."""
        if self._kernel.current is self:
            return RUNNING
        return self._state

    @property
    def done(self) -> bool:
        """True once the tasklet has ended, whether it returned, crashed or was cancelled."""
        return self._state in ENDED

    @property
    def result(self) -> Any:
        """The return value of an ended tasklet; raises TaskletError if it failed."""
        if not self.done:
            raise RuntimeError(f"tasklet {self.name} has not ended")
        return self._outcome()

    @property
    def exception(self) -> BaseException | None:
        """The exception that ended the tasklet (CRASHED or CANCELLED), else None."""
        return self._exception

    def where(self) -> list[str]:
        """The suspended stack, outermost first, as ``"file:line in function"`` strings.

        A suspended generator remembers which generator it is delegating to
        with ``yield from`` (``gi_yieldfrom``; ``cr_await`` for coroutines),
        so following that chain from the tasklet's own generator down to
        the innermost one gives its whole stack - no frames are walked from
        the top of the interpreter, and it works for tasklets that are not
        running.
        """
        lines = []
        obj = self._gen
        while obj is not None:
            frame = getattr(obj, "gi_frame", None) or getattr(obj, "cr_frame", None)
            if frame is None:
                break
            code = frame.f_code
            lines.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
            obj = getattr(obj, "gi_yieldfrom", None) or getattr(obj, "cr_await", None)
        return lines

    def __repr__(self) -> str:
        return f"<Tasklet {self.id} {self.name!r} {self.state}>"

    # --- what you can do ----------------------------------------------------

    @types.coroutine
    def join(self) -> Generator[Trap, Any, Any]:
        """Wait until this tasklet ends; return its result.

        Raises ``TaskletError`` if it crashed or was cancelled, with the
        tasklet's own exception as ``__cause__``.  Joining an ended tasklet
        returns at once without a trip through the kernel.
        """
        if not self.done:
            yield Join(self)
        return self._outcome()

    def cancel(self, exc: BaseException | None = None) -> bool:
        """Ask the kernel to cancel this tasklet; see ``Kernel.cancel``."""
        return self._kernel.cancel(self, exc)

    def _outcome(self) -> Any:
        if self._exception is None:
            return self._result
        raise TaskletError(f"tasklet {self.name} {self._state.lower()}: {self._exception!r}") \
            from self._exception
