"""The request pump of the callback-style engines (epoll, event, asyncio).

A blocking-style engine reads a request with a loop of blocking calls
(`serve_connection`). A callback-style engine cannot wait: each time bytes
arrive, a callback feeds them to the connection's `ServerConnection` and
pumps its events as far as they go without waiting:

    Request  -> start collecting the body's pieces
    bytes    -> one more piece
    END      -> the request is whole: dispatch it (the app runs, or is handed off)
    NEED_DATA-> choose the timeout for the wait, return to the loop
    CLOSED   -> the client hung up between two requests: close
    HTTPError-> answer the core's verdict (reject)

That pump, the choice of timeout and the bookkeeping after a response are
the same whether the loop is our own epoll (a `Channel`) or asyncio's (an
`asyncio.Protocol`), so they are written once, here, as a mixin. What
differs is how each engine writes, sets timers and closes: those are the
hooks a subclass provides (listed on `RequestPump`).
"""

from __future__ import annotations

import logging
import time

from ..http import END, NEED_DATA, HTTPError, Request
from ..wsgi import peer_name
from ._linger import still_to_drop
from ._read_timeouts import UploadPace, body_timeout, head_timeout

log = logging.getLogger("flash.connection")

#: The state in which a connection reads requests; each engine numbers its
#: other states after it (small ints: compared on every event).
READING = 0


class RequestPump:
    """Mixin: the event pump over `self.conn`, shared by the callback engines.

    A subclass has the attributes `engine` (with `config`, `counters` and
    `stopping`), `conn`, `state`, `served`, `body`, `pace`, `exchange`,
    `pending`, `linger_left`, and the hooks:

    * `dispatch()`: the request in `self.body` is whole; run or hand off the app
    * `reject(exc)`: answer an `HTTPError` and close
    * `close()`: close the connection (idempotent)
    * `send_interim(data) -> bool`: send `100 Continue`; False if that closed us
    * `arm_body()`, `arm_head()`, `arm_idle()`: bound the wait for the rest of
      a body (--body-timeout, re-armed by every piece), for the rest of a head
      (--header-timeout from its first byte: arming it again must not extend
      it), and for the next request (--keep-alive; during a stop, the
      engine's `drain_seconds`: a response that promised keep-alive before
      the stop is followed by one more request at most, answered with
      `Connection: close`). When one runs out, the subclass calls
      `timed_out()`.
    """

    __slots__ = ()

    def start_pump(self, engine, peer: tuple[str, str] | None) -> None:
        """The pump's own state for a new connection (call from `__init__`);
        `peer` is the connection's `wsgi.peer_keys`."""
        self.engine = engine
        self.peer = peer
        self.conn = engine.connection_class(engine.config.limits, engine.config.server_header)
        self.state = READING
        #: A response went out: from now on, waiting for a request is idling.
        self.served = False
        #: Pieces of the current request body (None between requests).
        self.body: list[bytes] | None = None
        #: The --min-body-rate check of a body that did not come whole.
        self.pace: UploadPace | None = None
        self.exchange = None
        #: The rest of the current response, pulled one piece at a time.
        self.pending = None

    def advance(self) -> None:
        """Parse what is buffered; run each complete request, in order.

        Loops rather than recursing, so a client that pipelines a thousand
        requests in one packet costs no stack depth.
        """
        conn = self.conn
        while self.state == READING:
            try:
                event = conn.next_event()
            except HTTPError as exc:
                self.reject(exc)
                return
            if type(event) is bytes:
                self.body.append(event)
                if self.pace is not None:
                    self.pace.extend(len(event))
            elif type(event) is Request:
                self.pace = None
                if event.has_body:
                    self.body = []
                    continue
                # Most requests: no body, so no END to ask the parser for
                # (it waits in start_next_cycle) and, once the response is
                # out with nothing more buffered, no parse that could only
                # say NEED_DATA: two parser calls fewer per request.
                self.dispatch()
                if self.state == READING and not conn.buffered and not conn.their_eof:
                    self.arm_idle()
                    return
            elif event is END:
                self.dispatch()
            elif event is NEED_DATA:
                self.wait_for_input()
                return
            else:  # CLOSED: the client hung up between two requests
                self.close()
                return

    def wait_for_input(self) -> None:
        """Choose the timeout that bounds the wait for the next bytes."""
        conn = self.conn
        if conn.request is not None:
            # Inside a body: ask for it if the client waits for our go-ahead.
            interim = conn.send_continue()
            if interim and not self.send_interim(interim):
                return
            now = time.monotonic()
            if self.pace is None:
                self.pace = UploadPace(self.engine.config, now)
            else:
                try:
                    self.pace.check(now)
                except HTTPError as exc:
                    self.reject(exc)
                    return
            self.arm_body()
        elif conn.buffered:
            self.arm_head()
        else:
            self.arm_idle()

    def timed_out(self) -> None:
        """A timer of this connection ran out: 408 if a request was coming in
        (a head begun, a body unfinished: nothing answered yet), else close."""
        conn = self.conn
        if self.state == READING and (conn.request is not None or conn.buffered):
            config = self.engine.config
            self.reject(body_timeout(config) if conn.request is not None else head_timeout(config))
        else:
            self.close()

    def lost(self, exc: BaseException | None) -> None:
        """The connection broke (a reset): say so if it was mid-body, and close."""
        if exc is not None and self.state == READING and self.conn.request is not None:
            log.info("request body from %s: client disconnected mid-body (%s)", peer_name(self.peer), exc)
        self.close()

    def finish_response(self) -> bool:
        """The response is out: count it; True if the connection reads the
        next request (state READING), False if it closed."""
        engine = self.engine
        exchange = self.exchange
        self.exchange = self.pending = None
        self.served = True
        engine.counters.record_response(exchange.sent, exchange.status)
        if engine.tracer is not None:
            engine.tracer.record(exchange)
        if not exchange.keep_alive or not self.conn.start_next_cycle():
            self.close()
            return False
        self.state = READING
        return True

    def close_response(self) -> None:
        """Drop the response in progress, if any, running the Exchange's
        cleanup (the app iterable's close())."""
        pending, self.pending = self.pending, None
        close_pending = getattr(pending, "close", None)
        if close_pending is not None:
            close_pending()

    def drop_input(self, data: bytes) -> None:
        """Lingering after an error response: drop what the client still sends,
        up to `self.linger_left` bytes; close at its end of file or past that
        (`_linger`)."""
        self.linger_left = still_to_drop(self.linger_left, data)
        if not self.linger_left:
            self.close()

    @property
    def idle(self) -> bool:
        """Between two requests, with nothing buffered: a stop gives it the
        engine's `drain_seconds` for its next request, then closes it.

        A new connection's first request is owed an answer even if it has
        not arrived yet (a graceful restart must not drop it), as in v1-v3:
        its wait stays bounded by the keep-alive timeout.
        """
        return (self.served and self.state == READING and self.conn.request is None
                and not self.conn.buffered)
