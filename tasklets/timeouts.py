"""Timeouts that nest: ``timeout_after`` and ``ignore_after``.

``yield from timeout_after(5, sock.recv(100))`` runs ``sock.recv(100)`` and
gives up with ``TaskletTimeout`` if it takes longer than five seconds.  Any
tasklet operation can be wrapped - a single recv, or a whole conversation.

Timeouts nest, and the inner and outer cases differ:

* **The inner one expires first.**  The blocked operation raises
  ``TaskletTimeout``; it travels up through the inner work (which may catch
  it like any ``TimeoutError``) and out of the inner ``timeout_after`` to its
  caller.  The outer ``timeout_after`` is unaffected.

* **The outer one expires while inner work is still running.**  The inner
  work is *cancelled*: it gets ``TimeoutCancelled``, a ``Cancelled`` and not a
  ``TimeoutError``, so it cannot mistake the outer deadline for its own.  It
  unwinds through the inner ``timeout_after`` untouched, and the outer one,
  recognising its own scope, raises ``TaskletTimeout`` to *its* caller.

The bookkeeping (a stack of deadlines per tasklet, one timer per scope)
lives in the kernel; entering and leaving a scope are plain calls to it, not
traps, because they never block.
"""

from __future__ import annotations

import types
from collections.abc import Generator
from typing import Any

from .errors import TaskletTimeout, TimeoutCancelled
from .kernel import running_kernel
from .traps import Trap


def _as_generator(target: Any, args: tuple[Any, ...]) -> Any:
    return target(*args) if callable(target) else target


@types.coroutine
def timeout_after(seconds: float, target: Any, *args: Any) -> Generator[Trap, Any, Any]:
    """Run ``target`` (a generator, coroutine, or function + ``args``) with a deadline.

    Returns its result, or raises ``TaskletTimeout`` if ``seconds`` pass
    first.  If the operation completes in the same instant the deadline
    passes, the completed result wins.
    """
    kernel = running_kernel()
    task = kernel.current
    gen = _as_generator(target, args)
    scope = kernel._push_deadline(task, seconds)
    try:
        return (yield from gen)
    except TimeoutCancelled as exc:
        if exc.scope is scope:  # our deadline cancelled the inner work
            raise TaskletTimeout(seconds, scope) from None
        raise
    finally:
        kernel._pop_deadline(task, scope)


@types.coroutine
def ignore_after(seconds: float, target: Any, *args: Any,
                 timeout_result: Any = None) -> Generator[Trap, Any, Any]:
    """Like ``timeout_after``, but on *its own* timeout return ``timeout_result``, not raise.

    A timeout of an inner ``timeout_after`` is not ours and still propagates.
    """
    kernel = running_kernel()
    task = kernel.current
    gen = _as_generator(target, args)
    scope = kernel._push_deadline(task, seconds)
    try:
        return (yield from gen)
    except (TaskletTimeout, TimeoutCancelled) as exc:
        if exc.scope is scope:
            return timeout_result
        raise
    finally:
        kernel._pop_deadline(task, scope)
