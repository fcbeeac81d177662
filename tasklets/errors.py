"""The exceptions of the tasklets package, and why each one exists.

Two families live here, and the split between them matters:

* **Cancellation is a BaseException.**  ``Cancelled`` (and its subclass
  ``TimeoutCancelled``) is thrown *into* a tasklet by the kernel to unwind
  it.  It derives from ``BaseException`` - like ``KeyboardInterrupt`` and
  ``GeneratorExit`` - so the everyday ``except Exception:`` in application
  code does not swallow it by accident.  Catch it only to clean up, then
  re-raise.

* **Everything else is an ordinary Exception** that a caller is expected to
  handle: ``TaskletTimeout`` (a ``TimeoutError``, so it reads like the
  timeout of a blocking socket), ``TaskletError`` (a child tasklet failed;
  the child's exception is its ``__cause__``), ``ResourceBusy`` and
  ``ClosedError``.
"""

from __future__ import annotations

import errno
from typing import Any


class Cancelled(BaseException):
    """Thrown into a tasklet at its next blocking point to cancel it.

    The tasklet may run ``finally`` blocks and ``except Cancelled:`` clean-up
    code, then should let the exception propagate; a tasklet that ends with
    it is in state ``CANCELLED``.
    """


#: Stackless Python's name for the same idea: the exception that kills a
#: tasklet.  Kept as an alias so readers who know Stackless feel at home.
TaskletExit = Cancelled


class TimeoutCancelled(Cancelled):
    """An *enclosing* ``timeout_after`` expired while inner work was running.

    The inner work must not mistake this for its own timeout (it is not a
    ``TimeoutError``, so ``except TimeoutError`` or ``except OSError`` in
    the inner code lets it pass).  The ``timeout_after`` that owns the
    expired deadline recognises it by ``scope`` and turns it into a
    ``TaskletTimeout`` for its caller.
    """

    def __init__(self, scope: Any) -> None:
        super().__init__("an enclosing timeout expired")
        self.scope = scope


class TaskletTimeout(TimeoutError):
    """A ``timeout_after`` deadline expired.

    Raised at the blocking point of the innermost timed operation when its
    own deadline expires, and raised by ``timeout_after`` to its caller.
    ``scope`` identifies which ``timeout_after`` it belongs to, so that
    ``ignore_after`` only ignores its own timeout.
    """

    def __init__(self, seconds: float, scope: Any = None) -> None:
        super().__init__(f"timed out after {seconds:g} s")
        self.seconds = seconds
        self.scope = scope


class TaskletError(Exception):
    """``join()`` on a tasklet that crashed or was cancelled.

    The child's own exception is chained as ``__cause__`` (``raise ... from``),
    so the traceback shows both where the child failed and where the parent
    joined it.
    """


class ResourceBusy(RuntimeError):
    """A second tasklet tried to wait on an fd in a direction already taken.

    Two readers of one socket would race for the same bytes; the kernel
    refuses the second waiter loudly rather than silently replacing the
    first (which would leave the first asleep forever: a lost wake-up).
    """


class ClosedError(OSError):
    """The fd a tasklet was waiting on was closed under it.

    It is an ``OSError`` with ``errno.EBADF``, which is what the next system
    call on the closed descriptor would have raised anyway.
    """

    def __init__(self, fd: int) -> None:
        super().__init__(errno.EBADF, f"fd {fd} was closed while a tasklet waited on it")
