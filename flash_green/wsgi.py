"""PEP 3333, written once: environ, wsgi.input, start_response, write(), close().

Every engine uses the same three steps per request:

1. `ctx.environ(conn_environ, request, body)` builds the environ;
2. `Exchange(ctx, conn, environ).run()` calls the app and returns an iterable
   of framed bytes (head first) for the engine to send however its model
   sends: `sendall`, `yield from sock.sendall`, EPOLLOUT callbacks, or
   `transport.write`;
3. afterwards `exchange.keep_alive` says whether the connection may serve
   another request.

The common case - an app returning a list - is answered with one bytes object
holding head and body together, so it leaves in a single send (no Nagle +
delayed-ACK stall, one syscall).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import unquote

from . import accesslog
from .http import END, NEED_DATA, HTTPError, Request, ResponseError, ServerConnection, render_error

log = logging.getLogger("flash.wsgi")

#: `content-type` -> `CONTENT_TYPE`, `x-a` -> `HTTP_X_A`; names holding `_`
#: are dropped (None) so `X_A` can never pose as `X-A`.
_ENVIRON_KEYS: dict[str, str | None] = {
    "content-type": "CONTENT_TYPE",
    "content-length": "CONTENT_LENGTH",
}
_MAX_KEY_CACHE = 4096


def _environ_key(name: str) -> str | None:
    key = _ENVIRON_KEYS.get(name, False)
    if key is False:
        key = None if "_" in name else "HTTP_" + name.upper().replace("-", "_")
        if len(_ENVIRON_KEYS) < _MAX_KEY_CACHE:
            _ENVIRON_KEYS[name] = key
    return key


class InputStream:
    """`wsgi.input`: the request body, pulled piece by piece from `source`.

    `source()` returns the next piece of body or b"" at its end. Engines that
    read the whole body before calling the app pass pieces already in memory;
    blocking engines pass a function that reads the socket on demand. Either
    way the stream never reads past the body, and works for chunked bodies.
    """

    __slots__ = ("_source", "_buf", "_done")

    def __init__(self, source: Callable[[], bytes] | None) -> None:
        self._source = source
        self._buf = b""
        self._done = source is None

    def _fill(self) -> bool:
        if self._done:
            return False
        piece = self._source()
        if not piece:
            self._done = True
            return False
        self._buf += piece
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            data, self._buf = self._buf, b""
            return data
        while len(self._buf) < size and self._fill():
            pass
        data, self._buf = self._buf[:size], self._buf[size:]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limited = size is not None and size >= 0
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                end += 1
                break
            if limited and size <= len(self._buf):
                end = size
                break
            if not self._fill():
                end = len(self._buf)
                break
        if limited and size < end:
            end = size
        line, self._buf = self._buf[:end], self._buf[end:]
        return line

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def drain(self) -> None:
        """Read and drop what the app left unread."""
        self._buf = b""
        while self._fill():
            self._buf = b""


class ClientDisconnected(HTTPError):
    """The client reset the connection while the app read its body.

    An HTTPError, so the adapter treats it as the client's doing (no 500,
    no traceback) and the engine logs it once, like any bad body.
    """

    def __init__(self, cause: OSError) -> None:
        super().__init__(400, f"client disconnected mid-body ({cause})")


def body_from_connection(conn: ServerConnection, recv: Callable[[], bytes],
                         send: Callable[[bytes], object]) -> Callable[[], bytes]:
    """A `source` for InputStream that reads the body through `conn` on demand.

    Sends `100 Continue` the first time the app asks for the body, so a client
    that expects it only uploads when the app really reads (RFC 9110 s.10.1.1).
    """
    def source() -> bytes:
        while True:
            event = conn.next_event()
            if type(event) is bytes:
                return event
            if event is END:
                return b""
            if event is NEED_DATA:
                interim = conn.send_continue()
                try:
                    if interim:
                        send(interim)
                    data = recv()
                except ConnectionError as exc:
                    raise ClientDisconnected(exc) from None
                conn.receive_data(data)
            else:
                return b""
    return source


def body_from_pieces(pieces: list[bytes]) -> Callable[[], bytes] | None:
    """A `source` over a body already read into memory (epoll, tasklets...)."""
    if not pieces:
        return None
    it = iter(pieces)
    return lambda: next(it, b"")


class FileWrapper:
    """`wsgi.file_wrapper`: iterate a file-like object in blocks, then close it."""

    def __init__(self, filelike, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while True:
            block = read(self.blksize)
            if not block:
                return
            yield block


class WSGIContext:
    """What every request of one server shares: the app and the static environ."""

    def __init__(self, app: Callable, server_name: str, server_port: int | str, *,
                 server_header: str = "flash", multithread: bool = False,
                 multiprocess: bool = False, access_log: logging.Logger | None = None,
                 front: Callable[[dict], None] | None = None) -> None:
        self.app = app
        #: Per-request corrections from in front of the server: trusted proxy
        #: headers, the Host header on a unix socket (`flash_green.proxy`).
        self.front = front
        self.server_header = server_header
        self.access_log = access_log
        self.base_environ = {
            "SERVER_NAME": server_name,
            "SERVER_PORT": str(server_port),
            "SCRIPT_NAME": "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": multithread,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            # The body ends where the server says (chunked bodies have no
            # CONTENT_LENGTH); werkzeug and others read to EOF when this is set.
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
            "SERVER_SOFTWARE": server_header,
        }

    def connection_environ(self, peer) -> dict:
        """The part of environ fixed for one connection (the peer address).

        Only the two peer keys: an idle connection keeps this dict, and a
        full copy of the base environ would cost it a kilobyte. A peer the
        socket could not name (a connection reset before getpeername, an
        unnamed Unix socket) is an empty REMOTE_ADDR, never an invented one:
        an app that trusts 127.0.0.1 must not be fooled by a missing address.
        """
        if isinstance(peer, tuple) and len(peer) >= 2:
            return {"REMOTE_ADDR": peer[0], "REMOTE_PORT": str(peer[1])}
        return {"REMOTE_ADDR": str(peer) if peer else "", "REMOTE_PORT": ""}

    def environ(self, conn_environ: dict, request: Request, body: InputStream) -> dict:
        environ = self.base_environ.copy()
        environ.update(conn_environ)
        path = request.path
        environ["REQUEST_METHOD"] = request.method
        environ["PATH_INFO"] = unquote(path, encoding="latin-1") if "%" in path else path
        environ["QUERY_STRING"] = request.query
        environ["REQUEST_URI"] = request.target
        environ["RAW_URI"] = request.target
        environ["SERVER_PROTOCOL"] = request.version
        environ["wsgi.input"] = body
        for name, value in request.headers:
            key = _ENVIRON_KEYS.get(name) or _environ_key(name)
            if key is None:
                continue
            if key in environ:
                sep = "; " if key == "HTTP_COOKIE" else ", "
                environ[key] = environ[key] + sep + value
            else:
                environ[key] = value
        if self.front is not None:
            self.front(environ)
        return environ


class Exchange:
    """Runs the app for one request and frames what it returns.

    After iterating `run()`, `keep_alive` tells whether the connection may
    carry another request; `status` and `sent` feed the access log.
    """

    __slots__ = ("ctx", "conn", "environ", "keep_alive", "status", "sent",
                 "_headers", "_status_line", "_pending", "_writer", "_started")

    def __init__(self, ctx: WSGIContext, conn: ServerConnection, environ: dict,
                 keep_alive: bool = True) -> None:
        self.ctx = ctx
        self.conn = conn
        self.environ = environ
        self.keep_alive = keep_alive
        self.status = 0
        self.sent = 0
        self._status_line: str | None = None
        self._headers: list[tuple[str, str]] = []
        self._pending: list[bytes] = []
        self._writer = None
        # The clock is read only when an access log will print the duration.
        self._started = time.perf_counter() if ctx.access_log is not None else 0.0

    @property
    def body_sent(self) -> int:
        """Body bytes sent so far: no head, no chunk framing (the access log's `b`)."""
        return self._writer.sent_body if self._writer is not None else 0

    # -- the PEP 3333 callables -----------------------------------------------

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info=None):
        if exc_info is not None:
            try:
                if self._writer is not None:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._status_line is not None:
            raise AssertionError("start_response called twice without exc_info")
        if type(status) is not str or type(headers) is not list:
            raise TypeError("status must be str and headers a list")
        self._status_line = status
        self._headers = headers
        return self._write

    def _write(self, data: bytes) -> None:
        if self._status_line is None:
            raise AssertionError("write() called before start_response")
        if type(data) is not bytes:
            raise TypeError(f"write() takes bytes, got {type(data).__name__}")
        self._pending.append(data)

    # -- running the app -------------------------------------------------------

    def run(self) -> Iterable[bytes]:
        """Call the app; return the framed response as an iterable of bytes."""
        refused = self.refuse()
        if refused is not None:
            return refused
        try:
            result = self.ctx.app(self.environ, self.start_response)
        except Exception as exc:
            return self.failed(exc)
        return self.respond(result)

    def refuse(self) -> list[bytes] | None:
        """A response the server gives without calling the app, if any."""
        if self.conn.request.method == "CONNECT":
            return self._error(501, "CONNECT is not supported by a WSGI server")
        return None

    def failed(self, exc: Exception) -> list[bytes]:
        """The response for an app that raised instead of returning a body."""
        if isinstance(exc, HTTPError):
            return self._error(exc.status, exc.reason)
        request = self.conn.request
        log.error("application error on %s %s", request.method, request.target, exc_info=exc)
        return self._error(500, "application error")

    def respond(self, result: Iterable[bytes]) -> Iterable[bytes]:
        """Frame what the app returned (engines that call the app themselves,
        e.g. a tasklet handler run with `yield from`, start here)."""
        if type(result) is list and not self._pending and self._status_line is not None:
            return self._run_list(result)
        return self._run_iterable(result)

    def _run_list(self, result: list) -> list[bytes]:
        """Fast path: the whole body is known, so send it with its length."""
        try:
            body = b"".join(result)
            head = self._head(len(body))
            writer = self._writer
            out = head + writer.body(body) + writer.end() if body else head + writer.end()
        except (ResponseError, TypeError, ValueError) as exc:
            log.error("invalid response from the application: %s", exc)
            return self._error(500, "invalid response from the application")
        self.sent = len(out)
        if self.ctx.access_log is not None:
            self._log_access()
        return [out]

    def _run_iterable(self, result: Iterable[bytes]) -> Iterator[bytes]:
        head = b""
        try:
            for data in result:
                if self._pending:
                    data = b"".join(self._pending) + data
                    self._pending.clear()
                if not data:
                    continue
                if self._writer is None:
                    head = self._head(None)
                out = self._writer.body(data)
                if head:
                    out, head = head + out, b""
                if out:
                    self.sent += len(out)
                    yield out
            if self._pending:
                yield from self._flush_pending()
            if self._writer is None:
                head = self._head(0 if self._status_line else None)
            out = head + self._writer.end()
            if out:
                self.sent += len(out)
                yield out
        except HTTPError as exc:
            self._abort(f"bad request body: {exc}")
            if self._writer is None or head:
                yield from self._error(exc.status, exc.reason)
        except Exception as exc:
            # `head` still set: it was built but never sent, so a 500 may replace it.
            if self._writer is None or head:
                log.error("application error before the response head", exc_info=exc)
                yield from self._error(500, "application error")
            else:
                self._abort("response aborted after its head was sent", exc)
        finally:
            self._close_result(result)
            self._log_access()

    def _flush_pending(self) -> Iterator[bytes]:
        data = b"".join(self._pending)
        self._pending.clear()
        out = b""
        if self._writer is None:
            out = self._head(None)
        out += self._writer.body(data)
        self.sent += len(out)
        yield out

    def _head(self, length: int | None) -> bytes:
        """The response head; `length` is the whole body's size when known."""
        status = self._status_line
        if status is None:
            raise ResponseError("the app returned without calling start_response")
        conn = self.conn
        if isinstance(conn, ServerConnection):
            head, writer = conn.respond(status, self._headers, self.keep_alive, length)
        else:
            # Another framer (the CGI gateway) learns the length from the headers.
            headers = self._headers
            if length is not None and not any(n.lower() == "content-length" for n, _ in headers):
                headers = headers + [("Content-Length", str(length))]
            head, writer = conn.respond(status, headers, self.keep_alive)
        self._writer = writer
        self.keep_alive = writer.keep_alive
        self.status = writer.status or int(status[:3])
        return head

    def _error(self, status: int, reason: str) -> list[bytes]:
        self.keep_alive = False
        self.status = status
        out = render_error(status, reason, self.ctx.server_header)
        self.sent = len(out)
        return [out]

    def _abort(self, why: str, exc: BaseException | None = None) -> None:
        self.keep_alive = False
        log.error("%s on %s", why, self.environ.get("PATH_INFO"), exc_info=exc)

    @staticmethod
    def _close_result(result) -> None:
        close = getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                log.exception("error in the app iterable's close()")

    def _log_access(self) -> None:
        if self.ctx.access_log is not None:
            accesslog.write(self.ctx.access_log, self)
