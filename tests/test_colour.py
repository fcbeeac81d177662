"""Function colour, one rule (`flash_green.colour`) for apps, engines and wrappers.

An object whose `__call__` is a coroutine function is an async app like an
`async def` function: every engine but asyncio refuses it at start-up
(instead of calling it and getting a coroutine for a body), and a wrapper
in front of it (`--trace-requests`) keeps its colour.
"""

from __future__ import annotations

import pytest

from flash_green import engines, tracing
from flash_green.colour import ASYNC, TASKLET, app_colour, tasklet_app

from .async_suite_app import AsyncSuiteApp
from .async_suite_app import app as async_function_app
from .suite_app import app as plain_app


@tasklet_app
def generator_app(environ, start_response):
    yield from ()
    return []


@pytest.mark.parametrize("app, colour", [
    (plain_app, None),
    (async_function_app, ASYNC),
    (AsyncSuiteApp(), ASYNC),
    (generator_app, TASKLET),
], ids=["wsgi", "async-def", "async-call-object", "tasklet"])
def test_app_colour(app, colour):
    assert app_colour(app) == colour


@pytest.mark.parametrize("engine", ["sequential", "threaded", "epoll", "tasklets", "prefork"])
def test_an_object_with_an_async_call_is_refused_outside_asyncio(engine):
    refusal = engines.get(engine).refuse_app(AsyncSuiteApp())
    assert refusal == "the app is an async app (async def); only --engine asyncio can run it"


def test_an_object_with_an_async_call_is_run_by_asyncio():
    assert engines.get("asyncio").refuse_app(AsyncSuiteApp()) is None


@pytest.mark.parametrize("app, colour", [
    (plain_app, None), (AsyncSuiteApp(), ASYNC), (generator_app, TASKLET),
], ids=["wsgi", "async-call-object", "tasklet"])
def test_the_tracing_wrapper_keeps_the_colour(tmp_path, app, colour):
    tracer = tracing.Tracer(str(tmp_path / "trace.jsonl"), "test")
    try:
        assert app_colour(tracer.wrap_app(app)) == colour
    finally:
        tracer.close()
