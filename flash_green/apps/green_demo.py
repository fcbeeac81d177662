"""The demo app with cooperative variants for the `greenlet` engine's hub.

    /green/sleep?ms=N            waits N ms in `greenhub.sleep` (cooperates)
    /green/upstream?port=P&ms=N  calls the slow upstream through
                                 `greenhub.create_connection` (cooperates)
    everything else              the demo app (`/sleep` and `/upstream` there
                                 block the hub: the lesson of the chapter)

Under gevent or eventlet with `--patch`, the demo app's own `/sleep` and
`/upstream` already cooperate: patching swapped `time.sleep` and `socket`
underneath unmodified code. Our hub does not patch, so code must ask for it.
Outside a running hub (any other engine) the green variants simply block.
"""

from __future__ import annotations

import greenhub

from .demo import _int_arg
from .demo import app as demo_app


def green_sleep(environ, start_response):
    ms = _int_arg(environ, "ms", 100, 60_000)
    greenhub.sleep(ms / 1000)
    body = f"slept {ms} ms (cooperatively)\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def green_upstream(environ, start_response):
    """The demo's `/upstream`, line for line, with the hub's socket."""
    port = _int_arg(environ, "port", 0, 65535)
    ms = _int_arg(environ, "ms", 50, 60_000)
    with greenhub.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET /?ms={ms} HTTP/1.0\r\nHost: upstream\r\n\r\n".encode())
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    body = reply.partition(b"\r\n\r\n")[2]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


ROUTES = {
    "/green/sleep": green_sleep,
    "/green/upstream": green_upstream,
}


def app(environ, start_response):
    handler = ROUTES.get(environ["PATH_INFO"])
    if handler is None:
        return demo_app(environ, start_response)
    return handler(environ, start_response)
