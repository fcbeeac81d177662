"""One blocking-style connection loop, written once: the engines' helper for every model that can block.

`serve_connection` reads requests from a socket, runs the app through the
WSGI adapter and writes the responses, with keep-alive, pipelining, limits
and timeouts. It only needs `recv`, `sendall`, `settimeout` and `shutdown`,
so the same function serves:

* a plain blocking socket in one thread     (sequential, prefork)
* a plain blocking socket per thread        (threaded, cgi, worker's pool)
* a cooperative socket in a greenlet        (greenlet, gevent, eventlet)

That it runs unchanged on all of them is the lesson of green threads: the
concurrency comes from the socket type, not from the code. TLS is one more
socket type: the engine wraps the accepted socket in its model's SSL socket
(stdlib, gevent's, eventlet's, greenhub's cooperative one), and the loop
begins with the handshake - a blocking call bounded by --header-timeout,
in the connection's own thread or greenlet - and ends with a close_notify.
"""

from __future__ import annotations

import logging
import socket
import time

from .. import tls
from ..config import Config
from ..http import CLOSED, NEED_DATA, HTTPError, Request, ServerConnection, render_error
from ..wsgi import ClientDisconnected, Exchange, InputStream, body_from_connection, peer_keys
from ._linger import LINGER_BYTES, LINGER_SECONDS, still_to_drop
from ._read_timeouts import UploadPace, body_timeout, head_timeout
from .base import RECV_SIZE

log = logging.getLogger("flash.connection")

#: Body bytes we are willing to read and drop when the app did not read its
#: request body, to keep the connection alive; beyond this we just close.
UNREAD_BODY_LIMIT = 1 << 20
#: What a recv that ran out of time raises: socket.timeout (an alias of
#: TimeoutError) for Python and green sockets, EAGAIN for SO_RCVTIMEO.
TIMED_OUT = (TimeoutError, BlockingIOError)


def serve_connection(sock, peer, engine, endpoint) -> None:
    """Serve every request on `sock` until the client or the engine ends it.

    `engine` provides `config`, `counters`, `stopping`, `drain_seconds` and
    `mark_idle(sock, idle)`; `endpoint` the listener's `wsgi` (WSGIContext)
    and `tls` (not None: `sock` is an SSL socket whose handshake is to do).
    """
    config = engine.config
    counters = engine.counters
    counters.connections_total += 1
    counters.connections_open += 1
    secure = endpoint.tls is not None
    try:
        if not secure or handshake(sock, peer, config):
            _serve(sock, peer, engine, endpoint.wsgi, config)
    except (ConnectionError, socket.timeout, TimeoutError):
        pass
    except OSError as exc:
        log.debug("connection from %s ended: %s", peer, exc)
    finally:
        engine.mark_idle(sock, False)
        counters.connections_open -= 1
        _close(sock)


def handshake(sock, peer, config: Config) -> bool:
    """The TLS handshake, bounded by --header-timeout; False (logged once) if it failed."""
    sock.settimeout(config.header_timeout)
    try:
        sock.do_handshake()
    except (OSError, ValueError) as exc:
        log.info("TLS handshake with %s failed: %s", peer, tls.handshake_failure(exc))
        return False
    return True


def _serve(sock, peer, engine, wsgi, config: Config) -> None:
    """The connection loop. Timeouts (see `engines._read_timeouts`): the wait
    for a request's first byte is bounded by --keep-alive; the rest of its head
    by what is left of --header-timeout since that first byte (the socket
    timeout shrinks at each read of a trickled head: only heads that take more
    than one read pay for it); its body by `BodySource`."""
    counters = engine.counters
    tracer = engine.tracer
    conn = engine.connection_class(config.limits, config.server_header)
    peer_environ = peer_keys(peer)
    recv = sock.recv
    sendall = sock.sendall
    keep_alive_timeout = config.keep_alive
    timeout = None
    head_deadline = 0.0
    body_source: BodySource | None = None
    # A new connection's first request is owed an answer even if a stop
    # arrives before its bytes do (a graceful restart must not drop it);
    # only the wait between two requests counts as idle.
    served = False

    while True:
        try:
            event = conn.next_event()
            if event is NEED_DATA:
                # Waiting for a new request's first byte is "idle" (the
                # keep-alive timeout, and a stop may end it); once bytes of a
                # head arrived, what is left of the header timeout.
                idle = conn.buffered == 0
                between_requests = idle and served
                if idle:
                    wanted = keep_alive_timeout
                    if between_requests and engine.stopping:
                        wanted = engine.drain_seconds  # see Engine.request_stop
                else:
                    now = time.monotonic()
                    if not head_deadline:
                        head_deadline = now + config.header_timeout
                    wanted = head_deadline - now
                    if wanted <= 0:
                        raise head_timeout(config)
                if wanted != timeout:
                    sock.settimeout(wanted)
                    timeout = wanted
                if between_requests:
                    engine.mark_idle(sock, True)
                try:
                    data = recv(RECV_SIZE)
                except TIMED_OUT:
                    if idle:
                        return
                    raise head_timeout(config) from None
                if between_requests:
                    engine.mark_idle(sock, False)
                conn.receive_data(data)
                continue
            if event is CLOSED:
                return
            if type(event) is not Request:
                return
        except HTTPError as exc:
            _send_error(sock, engine, exc)
            return

        request = event
        served = True
        if head_deadline:
            # A trickled head left a sliver of timeout on the socket: the
            # response's sends get --timeout, as on the other engines.
            head_deadline = 0.0
            timeout = config.timeout
            sock.settimeout(timeout)
        counters.requests += 1
        engine.heartbeat()
        source = None
        if request.has_body:
            if body_source is None:
                body_source = BodySource(sock, conn, peer, config)
            source = body_source.start()
        body = InputStream(source)
        environ = wsgi.environ(peer_environ, request, body)
        exchange = Exchange(wsgi, conn, environ, not engine.stopping, sendall)
        for data in exchange.run():
            sendall(data)
        counters.record_response(exchange.sent, exchange.status)
        if tracer is not None:
            tracer.record(exchange)
        if source is not None and source.failed:
            _linger_quietly(sock)  # unread input at close would reset our answer
            return
        if not exchange.keep_alive or not _finish_body(conn, body):
            return
        if source is not None and source.pace is not None:
            timeout = config.body_timeout  # it read the socket, under its own timeout
        if not conn.start_next_cycle():
            return


class BodySource:
    """`wsgi.input`'s source on a blocking socket: reads the body on demand.

    Bounds each read by --body-timeout and the upload by --min-body-rate
    (`UploadPace`); a body that fails - too slow, a reset (ClientDisconnected),
    bad chunking - raises an HTTPError that the adapter answers (408, 400...)
    and that is logged here once, as INFO: the client's doing, not the app's.
    One per connection, made for its first request with a body.
    """

    __slots__ = ("sock", "peer", "config", "read", "pace", "failed")

    def __init__(self, sock, conn: ServerConnection, peer, config: Config) -> None:
        self.sock = sock
        self.peer = peer
        self.config = config
        self.read = body_from_connection(conn, self._recv, sock.sendall)
        #: Set at the first read of the socket for this body.
        self.pace: UploadPace | None = None
        #: (status, reason) of the error that ended this body. Not the
        #: exception itself: its traceback holds our frame, and that cycle
        #: would keep the app's frames (their open files) alive until a GC.
        self.failed: tuple[int, str] | None = None

    def start(self) -> BodySource:
        """Ready for the next request's body."""
        self.pace = None
        self.failed = None
        return self

    def __call__(self) -> bytes:
        if self.failed is not None:
            raise HTTPError(*self.failed)
        try:
            return self.read()
        except HTTPError as exc:
            self.failed = (exc.status, exc.reason)
            if isinstance(exc, ClientDisconnected):
                log.info("request body from %s: %s", self.peer, exc.reason)
            else:
                log.info("bad request body from %s: %s %s", self.peer, exc.status, exc.reason)
            raise

    def _recv(self) -> bytes:
        config = self.config
        if self.pace is None:
            self.pace = UploadPace(config, time.monotonic())
            self.sock.settimeout(config.body_timeout)
        try:
            data = self.sock.recv(RECV_SIZE)
        except TIMED_OUT:
            raise body_timeout(config) from None
        self.pace.arrived(len(data), time.monotonic())
        return data


def _finish_body(conn: ServerConnection, body: InputStream) -> bool:
    """Read what the app left of the body, if cheap; False = must close."""
    if not conn.body_unread:
        return True
    if conn.continue_pending:
        return False
    try:
        left = UNREAD_BODY_LIMIT
        while conn.body_unread and left > 0:
            piece = body.read(RECV_SIZE)
            if not piece:
                break
            left -= len(piece)
    except HTTPError:
        return False
    return not conn.body_unread


def _send_error(sock, engine, exc: HTTPError) -> None:
    engine.counters.record_rejection(exc.status)
    log.info("bad request: %s %s", exc.status, exc.reason)
    try:
        sock.sendall(render_error(exc.status, exc.reason, engine.config.server_header))
    except OSError:
        return
    _linger_quietly(sock)


def _linger_quietly(sock) -> None:
    """`linger` after an error response; the client may be gone already."""
    try:
        linger(sock)
    except OSError:
        pass


def linger(sock) -> None:
    """Half-close, then read and drop what the client is still sending
    (the rule and its bounds: `_linger`), under a socket timeout that
    shrinks to what is left of them. On TLS what is dropped is read
    undecrypted."""
    _end_writes(sock)
    deadline = time.monotonic() + LINGER_SECONDS
    left = LINGER_BYTES
    while left:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        sock.settimeout(remaining)
        left = still_to_drop(left, sock.recv(RECV_SIZE))


def _end_writes(sock) -> None:
    """Our last byte is out: close_notify on TLS (an SSL socket has `unwrap`),
    then FIN. Afterwards a TLS socket reads its raw bytes."""
    if hasattr(sock, "unwrap"):
        tls.send_close_notify(sock)
    sock.shutdown(socket.SHUT_WR)


def _close(sock) -> None:
    """Close so the client sees FIN after our last byte, not a reset.

    Unread input at close() makes Linux send RST, which can destroy the error
    response still in flight; shutting down writes first and closing after
    avoids that in the common case.
    """
    try:
        _end_writes(sock)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
