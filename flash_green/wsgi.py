"""PEP 3333, written once: environ, wsgi.input, start_response, write(), close().

Every engine uses the same three steps per request:

1. `ctx.environ(peer, request, body)` builds the environ (`peer` is the
   connection's `peer_keys`, made once per connection);
2. `Exchange(ctx, conn, environ, keep_alive, send_now).run()` calls the app
   and returns an iterable of framed bytes (head first) for the engine to
   send however its model sends: `sendall`, `yield from sock.sendall`,
   EPOLLOUT callbacks, or `transport.write`; `send_now` is the engine's way
   to send at once what the app passes to `write()`;
3. afterwards `exchange.keep_alive` says whether the connection may serve
   another request.

The common case - an app returning a list - is answered with one bytes object
holding head and body together, so it leaves in a single send (no Nagle +
delayed-ACK stall, one syscall).

What an app gets wrong ends its request, never the server or the protocol:
an exception (SystemExit and KeyboardInterrupt included) is a 500 before the
head and a closed connection after it; a body never goes past its
Content-Length, and one that does not match it closes the connection; a
piece that is not bytes never reaches an engine. Each is one log line.
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
#: The most environ templates a listener keeps (see `WSGIContext.environ`).
_TEMPLATES_MAX = 256
#: Where the peer goes in a template: the two keys of `peer_keys`.
_PEER_PLACES = {"REMOTE_ADDR": "", "REMOTE_PORT": ""}


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


#: `wsgi.input` of every request without a body: an InputStream with no
#: source holds nothing and keeps nothing (each read gives b""), so one
#: serves them all and a bodyless request allocates none.
NO_BODY = InputStream(None)


def input_from_pieces(pieces: list[bytes] | None) -> InputStream:
    """`wsgi.input` over a body already read into memory (epoll, tasklets...)."""
    return InputStream(body_from_pieces(pieces)) if pieces else NO_BODY


def _checked_piece(data: object, what: str) -> bytes:
    """A piece of body that is not exactly `bytes`, made bytes or refused.

    PEP 3333 wants bytes. bytearray and memoryview are accepted (copied),
    as a list body accepts them through `b"".join`; anything else, a str
    above all, is the app's error, caught here so it never reaches an
    engine's send.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise ResponseError(f"{what} a {type(data).__name__}, not bytes")


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


def peer_keys(peer) -> tuple[str, str]:
    """REMOTE_ADDR and REMOTE_PORT of a connection, made once per connection.

    Every idle connection keeps them, so they are a tuple (56 B; a dict of
    the two keys is 184 B more) and the address is interned (a client's
    connections - a proxy's, a load balancer's: thousands - share one
    string, not 58 B each). A peer the socket could not name (a connection
    reset before getpeername, an unnamed Unix socket) is an empty
    REMOTE_ADDR, never an invented one: an app that trusts 127.0.0.1 must
    not be fooled by a missing address.
    """
    if isinstance(peer, tuple) and len(peer) >= 2:
        return sys.intern(peer[0]), str(peer[1])
    return (str(peer) if peer else ""), ""


def peer_name(peer: tuple[str, str] | None) -> str:
    """The client of `peer_keys` as a log line names it: `addr:port`."""
    if not peer:
        return "?"
    address, port = peer
    return f"{address}:{port}" if port else address or "?"


class WSGIContext:
    """What every request of one listener shares: the app and the static environ."""

    def __init__(self, app: Callable, server_name: str, server_port: int | str, *,
                 server_header: str = "flash", multithread: bool = False,
                 multiprocess: bool = False, access_log: logging.Logger | None = None,
                 front: Callable[[dict], None] | None = None, url_scheme: str = "http") -> None:
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
            "wsgi.url_scheme": url_scheme,
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
        #: Shared Request -> its environ but the peer and body, and the
        #: front hook it needs (`environ`).
        self.templates: dict[Request, tuple[dict, Callable[[dict], None] | None]] = {}

    def for_listener(self, server_name: str, server_port: int | str, url_scheme: str,
                     front: Callable[[dict], None] | None) -> WSGIContext:
        """The context of another listener of the same server: its own static
        environ and front, and this context's app, whoever replaces it (a HUP
        reload, --trace-requests, the stats endpoint, the --timeout watch)."""
        return ListenerContext(self, server_name, server_port, url_scheme, front)

    def environ(self, peer: tuple[str, str], request: Request, body: InputStream) -> dict:
        """A new environ: the listener's keys, the connection's (`peer`, from
        `peer_keys`) and the request's.

        Discussion: speed. A repeated head is one shared Request (the parser's
        head cache), so the environ of its listener and request is kept as a
        template, the peer's two places empty, and each request is a copy of
        it with the peer and body put in: no header loop, no key built. The
        app and the front hook get the copy; the template is never handed
        out. The template also remembers whether the front hook has anything
        to do for its headers (a hook with `concerns`, as `proxy.Front`: on
        TCP, only a request with a forwarding header): most requests skip
        the call (callgrind, per hello request: tasklets 52.5k -> 50.8k
        instructions, epoll 54.2k -> 51.7k).
        """
        if request.shared:
            template, front = self.templates.get(request) or self._template(request)
            environ = template.copy()
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = peer
        else:
            front = self.front
            environ = self.base_environ.copy()
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = peer
            add_request_keys(environ, request)
        environ["wsgi.input"] = body
        if front is not None:
            front(environ)
        return environ

    def _template(self, request: Request) -> tuple[dict, Callable[[dict], None] | None]:
        """The environ of `request` on this listener but the peer and body,
        and the front hook its requests need (None: none), kept."""
        template = self.base_environ | _PEER_PLACES
        add_request_keys(template, request)
        front = self.front
        concerns = getattr(front, "concerns", None)
        if concerns is not None and not concerns(template):
            front = None
        if len(self.templates) >= _TEMPLATES_MAX:
            self.templates.clear()
        entry = self.templates[request] = (template, front)
        return entry


def add_request_keys(environ: dict, request: Request) -> None:
    """Put the keys of environ the request gives into `environ` (and
    wsgi.input's place, empty)."""
    path = request.path
    environ["REQUEST_METHOD"] = request.method
    environ["PATH_INFO"] = unquote(path, encoding="latin-1") if "%" in path else path
    environ["QUERY_STRING"] = request.query
    environ["REQUEST_URI"] = request.target
    environ["RAW_URI"] = request.target
    environ["SERVER_PROTOCOL"] = request.version
    environ["wsgi.input"] = None
    for name, value in request.headers:
        key = _ENVIRON_KEYS.get(name) or _environ_key(name)
        if key is None:
            continue
        if key in environ:
            sep = "; " if key == "HTTP_COOKIE" else ", "
            environ[key] = environ[key] + sep + value
        else:
            environ[key] = value


class ListenerContext(WSGIContext):
    """`WSGIContext.for_listener`: a second listener's context, sharing the first's app.

    Discussion: the app is read through the first context (a property), so
    code that wraps or replaces `engine.wsgi.app` serves every listener at
    once. It costs a property call per request on the listeners after the
    first; the first, usually the only one, reads a plain attribute.
    """

    def __init__(self, first: WSGIContext, server_name: str, server_port: int | str,
                 url_scheme: str, front: Callable[[dict], None] | None) -> None:
        self.first = first
        self.front = front
        self.server_header = first.server_header
        self.access_log = first.access_log
        self.base_environ = dict(first.base_environ, SERVER_NAME=server_name,
                                 SERVER_PORT=str(server_port))
        self.base_environ["wsgi.url_scheme"] = url_scheme
        self.templates = {}

    @property
    def app(self) -> Callable:
        return self.first.app

    @app.setter
    def app(self, app: Callable) -> None:
        self.first.app = app


#: What an app may raise that ends its request, never the server (PEP 3333
#: says nothing of SystemExit; an app calling sys.exit() in a request is a
#: bug in that request). Cancellation (GeneratorExit, tasklets.Cancelled,
#: greenlet.GreenletExit, asyncio.CancelledError) is not in it: it belongs
#: to the engine and must keep propagating to it.
APP_ERRORS = (Exception, SystemExit, KeyboardInterrupt)


class Exchange:
    """Runs the app for one request and frames what it returns.

    After iterating `run()`, `keep_alive` tells whether the connection may
    carry another request; `status` and `sent` feed the access log.

    `send_now(data)` is how the engine sends bytes *now*, for `write()`
    (PEP 3333: written bytes are sent or queued before write() returns). It
    returns how many bytes it took, None meaning all: a blocking `sendall`
    or `transport.write` takes everything, a non-blocking `socket.send`
    takes what fits (BlockingIOError = nothing) and the rest leaves ahead
    of the next piece `run()` yields. Without it, written bytes wait for
    that next piece.

    Engines pass `keep_alive` and `send_now` by position: a class called
    with keywords builds a dict per call, ~1,000 instructions per request.
    """

    __slots__ = ("ctx", "conn", "environ", "keep_alive", "status", "sent", "_headers",
                 "_status_line", "_writer", "_started", "_send_now", "_unsent", "_overrun",
                 "_send_error")

    def __init__(self, ctx: WSGIContext, conn: ServerConnection, environ: dict,
                 keep_alive: bool = True,
                 send_now: Callable[[bytes], int | None] | None = None) -> None:
        self.ctx = ctx
        self.conn = conn
        self.environ = environ
        self.keep_alive = keep_alive
        self.status = 0
        self.sent = 0
        self._status_line: str | None = None
        self._headers: list[tuple[str, str]] = []
        #: Set once the head is built; from then on it counts as sent.
        self._writer = None
        self._send_now = send_now
        #: Framed pieces from `write()` that `send_now` did not take yet, in
        #: order (a list once there are any).
        self._unsent: list[bytes] | tuple = ()
        #: The app went past its Content-Length (the rest is dropped).
        self._overrun = False
        #: What `send_now` raised: the client is gone, not the app broken.
        self._send_error: OSError | None = None
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
        """PEP 3333 write(): frame `data` (the head first) and send it now."""
        if self._status_line is None:
            raise AssertionError("write() called before start_response")
        if type(data) is not bytes:
            data = _checked_piece(data, "write() was given")
        out = b"" if self._writer is not None else self._head(None)
        if data and not self._overrun:
            out += self._frame(data)
        if out:
            self.sent += len(out)
            self._emit(out)

    def _emit(self, out: bytes) -> None:
        """Send `out` now, behind what a full socket left queued.

        Pieces wait in a list, each sent (or cut) once: a slow client and an
        app that writes a lot cost memory, never a copy of the queue per write.
        """
        if self._unsent:
            self._unsent.append(out)
        else:
            self._unsent = [out]
        if self._send_now is not None:
            self._send_queued(self._unsent)

    def _send_queued(self, queued: list[bytes]) -> None:
        while queued:
            piece = queued[0]
            try:
                taken = self._send_now(piece)
            except BlockingIOError:
                return
            except OSError as exc:
                queued.clear()  # the client is gone: nothing more leaves
                self.keep_alive = False
                self._send_error = exc
                raise
            if taken is not None and taken < len(piece):
                queued[0] = piece[taken:]
                return
            del queued[0]

    def _take_unsent(self) -> bytes:
        """What write() left queued, to leave ahead of the next piece."""
        unsent, self._unsent = self._unsent, ()
        return b"".join(unsent)

    # -- running the app -------------------------------------------------------

    def run(self) -> Iterable[bytes]:
        """Call the app; return the framed response as an iterable of bytes."""
        if self.conn.request.method == "CONNECT":  # `refuse`, tested here: one call less per request
            return self.refuse()
        try:
            result = self.ctx.app(self.environ, self.start_response)
        except APP_ERRORS as exc:
            return self.failed(exc)
        return self.respond(result)

    def refuse(self) -> list[bytes] | None:
        """A response the server gives without calling the app, if any."""
        if self.conn.request.method == "CONNECT":
            return self._error(501, "CONNECT is not supported by a WSGI server")
        return None

    def failed(self, exc: BaseException) -> list[bytes]:
        """The response for an app that raised instead of returning a body
        (one of APP_ERRORS): a 500, or the end of what write() began."""
        if self._writer is not None:
            self._abort("application error after write() sent the head", exc)
            unsent = self._take_unsent()
            return [unsent] if unsent else []
        if isinstance(exc, HTTPError):
            return self._error(exc.status, exc.reason)
        log.error("application error on %s", self._request_line(), exc_info=exc)
        return self._error(500, "application error")

    def respond(self, result: Iterable[bytes]) -> Iterable[bytes]:
        """Frame what the app returned (engines that call the app themselves,
        e.g. a tasklet handler run with `yield from`, start here)."""
        if (type(result) is list or type(result) is tuple) and self._writer is None \
                and self._status_line is not None:
            return self._run_list(result)
        return self._run_iterable(result)

    def _run_list(self, result: list | tuple) -> list[bytes]:
        """Fast path: the whole body is known (a list or a tuple), so it leaves
        with its length, in one piece with the head."""
        try:
            body = b"".join(result)
            head = self._head(len(body))
        except (ResponseError, TypeError, ValueError) as exc:
            log.error("invalid response from the application on %s: %s", self._request_line(), exc)
            return self._error(500, "invalid response from the application")
        writer = self._writer
        remaining = writer.remaining
        if remaining is None or remaining == len(body):
            out = head + writer.body(body) if body else head
        else:
            # Nothing is out yet: the head can still say Connection: close.
            self._length_mismatch(len(body) - remaining)
            head = self._head(len(body))
            out = head + self._writer.body(body[:remaining])
        self.sent = len(out)
        if self.ctx.access_log is not None:
            self._log_access()
        return [out]

    def _run_iterable(self, result: Iterable[bytes]) -> Iterator[bytes]:
        try:
            for data in result:
                writer = self._writer
                if type(data) is bytes and writer is not None and writer.chunked:
                    out = writer.body(data)  # the common stream: nothing to check
                    last = False
                else:
                    out = self._frame_checked(data)
                    last = self._overrun
                self.sent += len(out)  # _handed_out, inline: this runs per piece
                if self._unsent:
                    out = self._take_unsent() + out
                if out:
                    yield out
                if last:
                    break
            out = self._handed_out(self._end())
            if out:
                yield out
        except HTTPError as exc:
            self._abort(f"bad request body: {exc}")
            if self._writer is None:
                yield from self._error(exc.status, exc.reason)
        except ResponseError as exc:
            if self._writer is None:
                log.error("invalid response from the application on %s: %s", self._request_line(), exc)
                yield from self._error(500, "invalid response from the application")
            else:
                self._abort(f"invalid response from the application: {exc}")
        except APP_ERRORS as exc:
            if self._writer is None:
                log.error("application error before the response head on %s", self._request_line(),
                          exc_info=exc)
                yield from self._error(500, "application error")
            else:
                self._abort("response aborted after its head was sent", exc)
        finally:
            self._close_result(result)
            self._log_access()
        if self._unsent:
            # What write() could not send yet still leaves, before the close.
            yield self._handed_out(b"")

    def _handed_out(self, out: bytes) -> bytes:
        """`out` as it leaves for the engine, behind what write() left unsent."""
        self.sent += len(out)
        if self._unsent:
            out = self._take_unsent() + out
        return out

    def _frame_checked(self, data: bytes) -> bytes:
        """A piece framed, after the head if it has not left yet."""
        if type(data) is not bytes:
            data = _checked_piece(data, "the app yielded")
        if not data:
            return b""
        head = b"" if self._writer is not None else self._head(None)
        out = self._frame(data)
        if head and self._overrun:
            # Nothing is out yet: the head can still say Connection: close.
            # (Past a Content-Length the framing is the bytes themselves, so
            # the new writer counts `out` again.)
            head = self._head(None)
            out = self._writer.body(out)
        return head + out

    def _frame(self, data: bytes) -> bytes:
        """One piece of body, framed; never past the app's Content-Length."""
        writer = self._writer
        remaining = writer.remaining
        if remaining is not None and len(data) > remaining:
            if self._overrun:
                return b""
            self._length_mismatch(len(data) - remaining)
            data = data[:remaining]
        return writer.body(data)

    def _end(self) -> bytes:
        """The end of the body (with the head, if nothing went out yet)."""
        if self._overrun:
            return b""
        head = b""
        if self._writer is None:
            head = self._head(0 if self._status_line else None)
        short = self._writer.remaining
        if short:
            self._length_mismatch(-short)
            return self._head(0) if head else b""  # the head again, now with Connection: close
        return head + self._writer.end()

    def _length_mismatch(self, excess: int) -> None:
        """The body is longer (`excess` > 0) or shorter than the app's
        Content-Length. PEP 3333: never send more than it says; so the
        client gets exactly that many bytes (or the short body), then the
        connection closes, which is the only way left to say it broke
        (waitress and gunicorn do the same)."""
        declared = self._writer.sent_body + self._writer.remaining
        if excess > 0:
            self._overrun = True
            why = f"the app sent more than its Content-Length ({declared}); the rest dropped, the connection closed"
        else:
            why = (f"the app sent {declared + excess} bytes, {-excess} short of its Content-Length "
                   f"({declared}); the connection closed")
        self._abort(why, level=logging.WARNING)

    def _head(self, length: int | None) -> bytes:
        """The response head; `length` is the whole body's size when known."""
        status = self._status_line
        if status is None:
            raise ResponseError("the app returned without calling start_response")
        conn = self.conn
        if isinstance(conn, ServerConnection):
            keep_alive = self.keep_alive
            if (keep_alive and conn.request.expect_continue and conn.continue_pending
                    and conn.body_unread):
                # The client still holds its body back, waiting for a 100 that
                # will not come: whether it sends it now is its guess, so the
                # connection cannot carry another request. Say so (RFC 9110
                # s.10.1.1) rather than close without a word.
                keep_alive = False
            head, writer = conn.respond(status, self._headers, keep_alive, length)
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

    def _abort(self, why: str, exc: BaseException | None = None, level: int = logging.ERROR) -> None:
        """The response cannot end cleanly: the connection will close after it."""
        self.keep_alive = False
        if exc is not None and exc is self._send_error:
            log.info("client gone while the app wrote to it (%s) on %s", exc, self._request_line())
            return
        log.log(level, "%s on %s", why, self._request_line(), exc_info=exc)

    def _request_line(self) -> str:
        """The request, as log lines name it (from the environ, which outlives
        the connection's current request)."""
        environ = self.environ
        return f"{environ.get('REQUEST_METHOD')} {environ.get('REQUEST_URI')}"

    def _close_result(self, result) -> None:
        close = getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except APP_ERRORS:
                log.exception("error in the app iterable's close() on %s", self._request_line())

    def _log_access(self) -> None:
        if self.ctx.access_log is not None:
            accesslog.write(self.ctx.access_log, self)
