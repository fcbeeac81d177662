"""One blocking-style connection loop, written once.

`serve_connection` reads requests from a socket, runs the app through the
WSGI adapter and writes the responses, with keep-alive, pipelining, limits
and timeouts. It only needs `recv`, `sendall`, `settimeout` and `shutdown`,
so the same function serves:

* a plain blocking socket in one thread     (sequential, prefork)
* a plain blocking socket per thread        (threaded, worker, event's pool)
* a cooperative socket in a greenlet        (greenlet, gevent, eventlet)

That it runs unchanged on all of them is the lesson of green threads: the
concurrency comes from the socket type, not from the code.
"""

from __future__ import annotations

import logging
import socket

from .http import CLOSED, NEED_DATA, HTTPError, Request, ServerConnection, render_error
from .wsgi import Exchange, InputStream, body_from_connection

log = logging.getLogger("flash.connection")

RECV_SIZE = 65536
#: Body bytes we are willing to read and drop when the app did not read its
#: request body, to keep the connection alive; beyond this we just close.
DRAIN_LIMIT = 1 << 20


def serve_connection(sock, peer, engine) -> None:
    """Serve every request on `sock` until the client or the engine ends it.

    `engine` provides `config`, `wsgi` (WSGIContext), `counters`,
    `mark_idle(sock, idle) -> bool` (False once the server is stopping).
    """
    config = engine.config
    counters = engine.counters
    counters.connections_total += 1
    counters.connections_open += 1
    try:
        _serve(sock, peer, engine, config)
    except (ConnectionError, socket.timeout, TimeoutError):
        pass
    except OSError as exc:
        log.debug("connection from %s ended: %s", peer, exc)
    finally:
        engine.mark_idle(sock, False)
        counters.connections_open -= 1
        _close(sock)


def _serve(sock, peer, engine, config) -> None:
    wsgi = engine.wsgi
    counters = engine.counters
    tracer = engine.tracer
    conn = engine.connection_class(config.limits, config.server_header)
    conn_environ = wsgi.connection_environ(peer)
    recv = sock.recv
    sendall = sock.sendall
    keep_alive_timeout = config.keep_alive
    header_timeout = config.header_timeout
    timeout = None
    # A new connection's first request is owed an answer even if a stop
    # arrives before its bytes do (a graceful restart must not drop it);
    # only the wait between two requests counts as idle.
    served = False

    def recv_body() -> bytes:
        return recv(RECV_SIZE)

    while True:
        try:
            event = conn.next_event()
            if event is NEED_DATA:
                # Waiting for a new request's first byte is "idle" (the
                # keep-alive timeout, and a stop may end it); once bytes of a
                # head arrived, the header timeout bounds the rest.
                idle = conn.buffered == 0
                wanted = keep_alive_timeout if idle else header_timeout
                if wanted != timeout:
                    sock.settimeout(wanted)
                    timeout = wanted
                between_requests = idle and served
                if between_requests and not engine.mark_idle(sock, True):
                    return
                data = recv(RECV_SIZE)
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
        counters.requests += 1
        engine.heartbeat()
        body = InputStream(body_from_connection(conn, recv_body, sendall)
                           if request.has_body else None)
        environ = wsgi.environ(conn_environ, request, body)
        exchange = Exchange(wsgi, conn, environ, not engine.stopping, sendall)
        for data in exchange.run():
            sendall(data)
        counters.record_response(exchange.sent, exchange.status)
        if tracer is not None:
            tracer.record(exchange)
        if not exchange.keep_alive or not _finish_body(conn, body):
            return
        if not conn.start_next_cycle() or engine.stopping:
            return


def _finish_body(conn: ServerConnection, body: InputStream) -> bool:
    """Read what the app left of the body, if cheap; False = must close."""
    if not conn.body_unread:
        return True
    if conn.continue_pending:
        return False
    try:
        left = DRAIN_LIMIT
        while conn.body_unread and left > 0:
            piece = body.read(65536)
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
        linger(sock)
    except OSError:
        pass


def linger(sock, seconds: float = 1.0, limit: int = DRAIN_LIMIT) -> None:
    """Half-close, then read and drop what the client is still sending.

    Closing with unread input makes the kernel answer RST, and an RST can
    overtake our error response in the client's receive path: the client
    would see "connection reset" instead of a 4xx. Bounded in time and bytes.
    """
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(seconds)
    while limit > 0:
        data = sock.recv(65536)
        if not data:
            return
        limit -= len(data)


def _close(sock) -> None:
    """Close so the client sees FIN after our last byte, not a reset.

    Unread input at close() makes Linux send RST, which can destroy the error
    response still in flight; shutting down writes first and closing after
    avoids that in the common case.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
