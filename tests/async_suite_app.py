"""The cross-engine suite's app as an async app, for the asyncio engine.

    /hold?name=N    writes <dir>/N.started, then awaits (polling) <dir>/N.release
    /echo, /json    await once before answering
    everything else the plain suite app, run inline in the task

What a real async app looks like: a few coroutines among plain routes.
"""

from __future__ import annotations

import asyncio
import os

from .suite_app import HOLD_POLL_SECONDS, HOLD_POLLS, hold_begin, hold_end
from .suite_app import app as plain_suite_app

#: Suite routes that await before answering.
_AWAITING_ROUTES = frozenset({"/echo", "/json"})


async def hold(environ, start_response):
    name, release = hold_begin(environ)
    for _ in range(HOLD_POLLS):
        if os.path.exists(release):
            break
        await asyncio.sleep(HOLD_POLL_SECONDS)
    return hold_end(name, start_response)


async def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hold":
        return await hold(environ, start_response)
    if path in _AWAITING_ROUTES:
        await asyncio.sleep(0)
    return plain_suite_app(environ, start_response)


class AsyncSuiteApp:
    """The same app as an object whose `__call__` is a coroutine function
    (as Starlette-style ASGI apps are built): async too, by the same rule."""

    async def __call__(self, environ, start_response):
        return await app(environ, start_response)


callable_app = AsyncSuiteApp()
