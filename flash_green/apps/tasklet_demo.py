"""The demo app as a tasklet handler, for the `tasklets` engine.

    /sleep?ms=N              waits N ms with `tasklets.sleep` (cooperates)
    /upstream?port=P&ms=N    calls the slow upstream over a `tasklets.io`
                             socket (cooperates)
    /offload-sleep?ms=N      a plain blocking `time.sleep`, offloaded with
                             `run_in_thread` (cooperates, costs a thread)
    everything else          the plain demo app, run inline

The handler is a generator (`@tasklet_app`, `flash_green.colour`): it `yield from`s tasklet
operations and returns a WSGI body. The colour shows: `/sleep` here and in
`demo.py` do the same thing, but only this one lets other connections run.

    python -m flash_green serve flash_green.apps.tasklet_demo:app --engine tasklets
"""

from __future__ import annotations

import time

import tasklets
from tasklets.io import create_connection

from ..colour import tasklet_app
from .demo import _int_arg
from .demo import app as demo_app


def _text(start_response, body: bytes) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def sleep(environ, start_response):
    ms = _int_arg(environ, "ms", 100, 60_000)
    yield from tasklets.sleep(ms / 1000)
    return _text(start_response, f"slept {ms} ms (cooperatively)\n".encode())


def offload_sleep(environ, start_response):
    ms = _int_arg(environ, "ms", 100, 60_000)
    yield from tasklets.run_in_thread(time.sleep, ms / 1000)
    return _text(start_response, f"slept {ms} ms in a thread\n".encode())


def upstream(environ, start_response):
    """The demo's `/upstream`, line for line, with a tasklet socket."""
    port = _int_arg(environ, "port", 0, 65535)
    ms = _int_arg(environ, "ms", 50, 60_000)
    sock = yield from tasklets.timeout_after(30, create_connection(("127.0.0.1", port)))
    with sock:
        yield from sock.sendall(f"GET /?ms={ms} HTTP/1.0\r\nHost: upstream\r\n\r\n".encode())
        parts = []
        while data := (yield from tasklets.timeout_after(30, sock.recv(65536))):
            parts.append(data)
    body = b"".join(parts).partition(b"\r\n\r\n")[2]
    return _text(start_response, body)


ROUTES = {"/sleep": sleep, "/upstream": upstream, "/offload-sleep": offload_sleep}


@tasklet_app
def app(environ, start_response):
    handler = ROUTES.get(environ["PATH_INFO"])
    if handler is None:
        return demo_app(environ, start_response)
    return (yield from handler(environ, start_response))
