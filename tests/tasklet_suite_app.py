"""Tasklet handlers for the tests.

`app`, for the tasklets engine's own tests:

    /hold?name=N        writes <dir>/N.started, then waits (cooperatively,
                        tasklets.sleep polling) for <dir>/N.release
    /upstream?port=P    one call to an upstream over a tasklets socket
    everything else     the tasklet demo app

`suite_app`, the cross-engine suite's app as a tasklet handler: /hold as
above, /echo and /json yield to the kernel before answering, every other
route is the plain suite app run inline - what a real tasklet app looks like.
"""

from __future__ import annotations

import os

import tasklets

from flash_green.apps.tasklet_demo import app as demo_app
from flash_green.colour import tasklet_app

from .suite_app import HOLD_POLL_SECONDS, HOLD_POLLS, hold_begin, hold_end
from .suite_app import app as plain_suite_app


def hold(environ, start_response):
    name, release = hold_begin(environ)
    for _ in range(HOLD_POLLS):
        if os.path.exists(release):
            break
        yield from tasklets.sleep(HOLD_POLL_SECONDS)
    return hold_end(name, start_response)


@tasklet_app
def app(environ, start_response):
    if environ["PATH_INFO"] == "/hold":
        return (yield from hold(environ, start_response))
    return (yield from demo_app(environ, start_response))


#: Suite routes served by a handler that yields to the kernel first.
_YIELDING_ROUTES = frozenset({"/echo", "/json"})


@tasklet_app
def suite_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/hold":
        return (yield from hold(environ, start_response))
    if path in _YIELDING_ROUTES:
        yield from tasklets.sleep(0)
    return plain_suite_app(environ, start_response)
