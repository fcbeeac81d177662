"""The seed's class-based API: an `http.server`-style handler, served as WSGI.

Write a subclass with `do_GET`, `do_POST`, ... methods the way you would for
`http.server.BaseHTTPRequestHandler`, then turn it into a WSGI app with
`as_wsgi`, and every engine can serve it::

    class Hello(RequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"Hello from a handler class\\n")

    app = as_wsgi(Hello)

The difference from `http.server`: the handler never touches the socket.
It reads a parsed request (`method`, `path`, `query`, `headers`, `body`) and
writes into a buffer; the server - any engine - does the I/O. A request
method without a `do_<METHOD>` gets 501 through `do_error`, and an exception
in a handler gets 500 through `do_error` (logged); override `do_error` to
change what errors look like.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from urllib.parse import parse_qs

log = logging.getLogger("flash.handler")


class Headers:
    """Request headers by case-insensitive name, read from the WSGI environ."""

    def __init__(self, environ: dict) -> None:
        self._environ = environ

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        return self._environ.get(key, default)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None


class RequestHandler:
    """Base class: override `do_<METHOD>` (and optionally `do_error`)."""

    def __init__(self, environ: dict) -> None:
        self.environ = environ
        self.method: str = environ["REQUEST_METHOD"]
        self.path: str = environ.get("PATH_INFO", "") or "/"
        self.query: dict[str, list[str]] = parse_qs(environ.get("QUERY_STRING", ""))
        self.headers = Headers(environ)
        self.client_address = (environ.get("REMOTE_ADDR", ""), int(environ.get("REMOTE_PORT", 0) or 0))
        self.wfile = io.BytesIO()
        self._status = "200 OK"
        self._response_headers: list[tuple[str, str]] = []
        self._body: bytes | None = None

    @property
    def body(self) -> bytes:
        """The request body (read once, on first use)."""
        if self._body is None:
            length = self.environ.get("CONTENT_LENGTH", "")
            stream = self.environ["wsgi.input"]
            if length.isdigit():
                self._body = stream.read(int(length))
            elif self.environ.get("wsgi.input_terminated"):
                self._body = stream.read()
            else:
                self._body = b""
        return self._body

    # -- the http.server vocabulary ------------------------------------------------

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = f"{code} {message or _phrase(code)}"

    def send_header(self, name: str, value: str) -> None:
        self._response_headers.append((name, str(value)))

    def end_headers(self) -> None:
        """Kept for http.server familiarity: headers are sent by the server."""

    def send_error(self, code: int, message: str | None = None) -> None:
        self._response_headers = []
        self.wfile = io.BytesIO()
        self.do_error(code, message or _phrase(code))

    def do_error(self, code: int, message: str) -> None:
        """The error page; override to change it."""
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.wfile.write(f"{code} {message}\n".encode())

    # -- running ------------------------------------------------------------------

    def handle(self) -> None:
        method = getattr(self, "do_" + self.method, None)
        if method is None:
            self.send_error(501, f"method {self.method} not implemented")
            return
        try:
            method()
        except Exception:
            log.exception("handler %s failed on %s %s", type(self).__name__, self.method, self.path)
            self.send_error(500)

    def finish(self, start_response: Callable) -> Iterable[bytes]:
        body = self.wfile.getvalue()
        headers = [(k, v) for k, v in self._response_headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(self._status, headers)
        return [body]


def as_wsgi(handler_cls: type[RequestHandler]) -> Callable:
    """A WSGI app that serves each request with a new `handler_cls` instance."""
    def app(environ, start_response):
        handler = handler_cls(environ)
        handler.handle()
        return handler.finish(start_response)
    app.__name__ = f"as_wsgi({handler_cls.__name__})"
    return app


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"
