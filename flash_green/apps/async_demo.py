"""The demo app as an async app, for the `asyncio` engine.

    /sleep?ms=N              waits N ms with `await asyncio.sleep` (cooperates)
    /upstream?port=P&ms=N    calls the slow upstream with asyncio streams
                             (cooperates)
    /error                   raises after an await (the 500 path, from a task)
    everything else          the plain demo app, run inline on the loop

An async app is `async def app(environ, start_response)` returning the WSGI
body: the WSGI contract, with `await` allowed inside. The colour shows:
`/sleep` here and in `demo.py` do the same thing, but only this one lets
other connections run, and only because every wait is marked `await`.

    python -m flash_green serve flash_green.apps.async_demo:app --engine asyncio
"""

from __future__ import annotations

import asyncio

from .demo import _int_arg
from .demo import app as demo_app

#: Seconds an upstream call may take, connect and reply together.
UPSTREAM_TIMEOUT = 30.0


def _text(start_response, body: bytes) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def sleep(environ, start_response):
    ms = _int_arg(environ, "ms", 100, 60_000)
    await asyncio.sleep(ms / 1000)
    return _text(start_response, f"slept {ms} ms (cooperatively)\n".encode())


async def _fetch(port: int, ms: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /?ms={ms} HTTP/1.0\r\nHost: upstream\r\n\r\n".encode())
        reply = await reader.read()  # HTTP/1.0: the reply ends at EOF
    finally:
        writer.close()
    return reply.partition(b"\r\n\r\n")[2]


async def upstream(environ, start_response):
    """The demo's `/upstream`, with asyncio streams."""
    port = _int_arg(environ, "port", 0, 65535)
    ms = _int_arg(environ, "ms", 50, 60_000)
    body = await asyncio.wait_for(_fetch(port, ms), UPSTREAM_TIMEOUT)
    return _text(start_response, body)


async def error(environ, start_response):
    await asyncio.sleep(0)
    raise RuntimeError("the async /error endpoint always fails")


ROUTES = {"/sleep": sleep, "/upstream": upstream, "/error": error}


async def app(environ, start_response):
    handler = ROUTES.get(environ["PATH_INFO"])
    if handler is None:
        return demo_app(environ, start_response)
    return await handler(environ, start_response)
