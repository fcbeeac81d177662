"""Function colour: what kind of callable an app is, and so which engines can run it.

A plain WSGI app returns its body when called: every engine can run it, on
whatever thread, greenlet or loop it has. Two other kinds do not return
their answer when called; they must be resumed until they finish, and only
the runtime they were written for knows how:

* "tasklet": a generator handler marked with `@tasklet_app`. It `yield
  from`s tasklet traps and `return`s the WSGI body; the tasklets engine
  drives it with `yield from`.
* "async": a coroutine function, or an object whose `__call__` is one
  (`async def __call__`). The asyncio engine awaits it.

That is function colour: code of one kind can only be called, as it is
meant to run, by code of the same kind. The rule lives here, once, and both
sides import it: an app to mark itself (`tasklet_app`), an engine to know
what it was given (`Engine.refuse_app`, the tasklets and asyncio engines).
A wrapper put in front of an app (`flash_green.tracing`, the stats
endpoint) must have the app's colour, or the engine would run it as the
wrong kind: it asks `app_colour` and builds its wrapper of that kind.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

#: A generator handler for the tasklets engine.
TASKLET = "tasklet"
#: A coroutine function (or an object with an `async def __call__`) for asyncio.
ASYNC = "async"


def tasklet_app(app: Callable) -> Callable:
    """Mark a WSGI-shaped generator function as a tasklet handler.

    `app(environ, start_response)` is then a generator: it may `yield from`
    tasklet operations and `return` the WSGI body iterable. The tasklets
    engine runs it with `yield from`; other engines cannot, and refuse it.
    """
    app.__tasklet_app__ = True
    return app


def app_colour(app: Callable) -> str | None:
    """TASKLET, ASYNC, or None for a plain WSGI app."""
    if getattr(app, "__tasklet_app__", False):
        return TASKLET
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(type(app).__call__):
        return ASYNC
    return None
