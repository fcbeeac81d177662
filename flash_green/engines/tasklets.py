"""tasklets - generator tasklets on our own epoll kernel (the `tasklets` package).

The model
    One thread, one `tasklets.Kernel`. An accept tasklet per listener
    spawns one tasklet per connection; each runs the connection loop below,
    which reads like the blocking loop of `sequential` and `threaded` but
    every wait is a `yield` of a trap (`yield from sock.recv(...)`, `yield
    read_trap`). The kernel parks the tasklet on epoll and resumes it when
    the socket is ready; in between, every other connection runs. This is
    the explicit state machine of the `epoll` engine, written as
    straight-line code: the generator's frame *is* the connection's state.

    Plain WSGI apps run inline in the connection's tasklet. Apps marked with
    `@tasklet_app` (`flash_green.colour`) are generators: the engine runs
    them with `yield from`, so they may `yield from tasklets.sleep(...)` or
    talk to an upstream over a `tasklets.io.Socket` and every other
    connection keeps being served (see `flash_green.apps.tasklet_demo`).

What it costs per connection
    A generator frame, a `ServerConnection`, a `Socket` wrapper and a
    `Tasklet` handle: about 1.3 KB of RSS, no thread, no stack. 10,000 idle
    keep-alive connections are ~13 MB (`python -m comparisons.stages.ab
    --measure idle .`). A switch is a generator resume (well under a
    microsecond), so the loop spends its time in the HTTP core and the app,
    not in scheduling.

What breaks it
    Anything that blocks the thread: a plain WSGI app calling `time.sleep`,
    a blocking socket, a slow database driver, or CPU work stalls *every*
    connection (the blocking-handler scenario; the suite asserts it). The
    cure is a tasklet handler (cooperate) or `run_in_thread` (offload), or
    the `event` engine. One process uses one core: run `--workers N` for
    more. Its colour is contagious: code that waits must be a generator and
    be called with `yield from`, all the way up.

TLS
    The handshake is a loop of traps in the connection's tasklet
    (`_handshake`): OpenSSL's SSLWantReadError becomes `yield read_trap`,
    SSLWantWriteError a write trap, and the deadline sweeper cuts a client
    that never finishes at --header-timeout. Afterwards the connection
    loop runs unchanged over a `NonBlockingTLS` socket (OpenSSL's "want"
    is EAGAIN again, and decrypted bytes OpenSSL holds are taken along, so
    `yield read_trap` never waits for bytes that already came). All the
    crypto is on the one thread: 0.9 ms of CPU per handshake, during which
    every tasklet waits, and 29 us per keep-alive request
    (`python -m comparisons.bench_tls`).

When to use it
    Many connections, mostly idle or waiting on I/O, handlers that are cheap
    or written as tasklets: chat, proxies, long polling, API gateways. With
    `--workers N` (one kernel per core) it is the hybrid that uses all cores.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Generator
from typing import Any

from tasklets import Cancelled, ClosedError, Kernel, Semaphore, ignore_after, sleep
from tasklets.io import Socket

from .. import tls
from ..colour import TASKLET, app_colour
from ..http import NEED_DATA, HTTPError, Request, ServerConnection, render_error
from ..wsgi import APP_ERRORS, ClientDisconnected, Exchange, input_from_pieces, peer_keys, peer_name
from ._accept import AcceptBackoff
from ._linger import LINGER_BYTES, LINGER_SECONDS, still_to_drop
from ._read_timeouts import UploadPace, body_timeout, head_timeout
from ._tls import NonBlockingTLS
from .base import HEARTBEAT_INTERVAL, RECV_SIZE, Capabilities, Endpoint, Engine, accept_backlog

log = logging.getLogger("flash.engine.tasklets")


class DeadlineExpired(Cancelled):
    """Thrown by the deadline sweeper into a connection whose wait ran out.

    A Cancelled, so code that does not expect it unwinds as for any cancel;
    the head and body waits catch it to answer 408.
    """


class ConnectionState:
    """What the deadline sweeper needs to know about one connection."""

    __slots__ = ("deadline", "idle", "task")

    def __init__(self) -> None:
        self.task = None
        self.deadline = 0.0
        self.idle = False


class TaskletsEngine(Engine):
    name = "tasklets"
    summary = "generator tasklets on our own epoll kernel; one thread, a tasklet per connection"
    capabilities = Capabilities(concurrent=True, parallel=False, blocking_handler_stalls=True,
                                bounds_connections=True)
    app_colours = frozenset({TASKLET})

    def __init__(self, config, app, listener) -> None:
        super().__init__(config, app, listener)
        trace = config.trace
        if trace:
            # The kernel traces at DEBUG; --log-level keeps governing the rest.
            logging.getLogger("tasklets").setLevel(logging.DEBUG)
        # Made here, not in serve(): a stop signal may arrive before serving.
        self.kernel = Kernel(longblock_ms=config.debug_blocking_ms or None,
                             traptrace=trace in ("traps", "all"),
                             schedtrace=trace in ("sched", "all"))
        self.is_tasklet_app = app_colour(app) == TASKLET
        # Discussion: a dict with None values (an ordered set), not a set:
        # CPython's set table grows fourfold and costs 52-105 B per member
        # between 5,000 and 20,000 connections, a dict's compact table 30 B.
        self.connections: dict[ConnectionState, None] = {}
        #: The listening sockets as the kernel waits on them (made by `serve`).
        self.listener_sockets: list[Socket] = []
        self.slots = Semaphore(config.max_connections)
        #: How long a connection waits for its next request: --keep-alive,
        #: `drain_seconds` once a stop began.
        self.idle_timeout = config.keep_alive

    def serve(self) -> None:
        """One accept tasklet per listener, and the deadline sweeper."""
        self.loop_heartbeat = True
        kernel = self.kernel
        self.listener_sockets = [Socket(endpoint.sock) for endpoint in self.endpoints]
        kernel.spawn(self._sweep_deadlines, name="deadlines", daemon=True)
        for listener, endpoint in zip(self.listener_sockets, self.endpoints):
            kernel.spawn(self._accept_loop, listener, endpoint, name=f"accept-{listener.fileno()}")
        try:
            kernel.run()
        finally:
            kernel.close()

    def request_stop(self, graceful: bool = True) -> None:
        # Runs in a signal handler, possibly in the middle of a tasklet step:
        # only hand the work to the loop.
        self.stopping = True
        self.kernel.call_soon_threadsafe(self._begin_stop, graceful)

    def schedule_reload(self) -> None:
        """Between two passes of the kernel: no tasklet step (no plain WSGI
        call) is running; a tasklet handler in flight keeps its old code."""
        self.kernel.call_soon_threadsafe(self.reload_app)

    def use_app(self, app) -> None:
        super().use_app(app)
        self.is_tasklet_app = app_colour(app) == TASKLET

    def stats(self) -> dict:
        stats = super().stats()
        stats["kernel"] = self.kernel.stats().__dict__
        return stats

    def ps(self) -> str:
        """Every live tasklet (the `?ps` dump of --stats-path, which runs in the loop)."""
        return self.kernel.ps()

    def request_dump(self) -> None:
        """SIGUSR2: log `ps` from the loop, between two passes (not inside a tasklet step)."""
        kernel = self.kernel
        kernel.call_soon_threadsafe(lambda: log.warning("tasklets (SIGUSR2):\n%s", kernel.ps()))

    # -- the tasklets -------------------------------------------------------------

    def _accept_loop(self, listener: Socket, endpoint: Endpoint) -> Generator:
        spawn = self.kernel.spawn
        backoff = AcceptBackoff(log)
        while not self.stopping:
            yield from self.slots.acquire()
            try:
                sock, peer = yield from listener.accept()
            except (ClosedError, OSError) as exc:
                self.slots.release()
                if self.stopping:
                    return
                yield from sleep(backoff.failed(exc))
                continue
            backoff.accepted()
            state = ConnectionState()
            state.task = spawn(self._connection, sock, peer, state, endpoint, name="conn-")

    def _sweep_deadlines(self) -> Generator:
        """Once per second: cut off idle and trickling connections, and beat.

        Discussion: one sweep over all connections per second instead of a
        timer per recv keeps the per-request path free of heap pushes; a
        deadline is then honoured to within a second, which is all the
        keep-alive and header timeouts need.
        """
        cancel = self.kernel.cancel
        while True:
            self.heartbeat()
            yield from sleep(min(HEARTBEAT_INTERVAL, 1.0))
            now = time.monotonic()
            for state in list(self.connections):
                if state.deadline and now > state.deadline:
                    state.deadline = 0.0
                    cancel(state.task, DeadlineExpired())

    def _begin_stop(self, graceful: bool) -> None:
        """The stop (see `Engine.request_stop`): take each listener's backlog and
        close it; idle connections get `drain_seconds` for a last request."""
        backlog = []
        for listener, endpoint in zip(self.listener_sockets, self.endpoints):
            backlog += [(sock, peer, endpoint) for sock, peer in accept_backlog(endpoint.sock, close=False)]
            listener.close()
        if not graceful:
            for state in list(self.connections):
                self.kernel.cancel(state.task)
            return
        self.idle_timeout = self.drain_seconds
        drained_by = time.monotonic() + self.drain_seconds
        for state in self.connections:
            if state.idle:
                state.deadline = min(state.deadline, drained_by)
        if backlog:
            self.kernel.spawn(self._adopt, backlog, name="backlog")

    def _adopt(self, backlog: list) -> Generator:
        """The connections taken from the backlogs at a stop: served like any other."""
        for sock, peer, endpoint in backlog:
            yield from self.slots.acquire()
            state = ConnectionState()
            state.task = self.kernel.spawn(self._connection, Socket(sock), peer, state, endpoint,
                                           name="conn-")

    def _connection(self, sock: Socket, peer: Any, state: ConnectionState, endpoint: Endpoint) -> Generator:
        """The tasklet twin of `_blocking.serve_connection`.

        Discussion: an idle keep-alive connection is this generator's frame
        and little else, so everything a request needs is dropped (set to
        None) before the next wait, and the frame keeps only aliases of
        shared objects: no bound methods (`raw.recv(...)` is called through
        the socket, which costs no object), the peer as its `peer_keys`
        (the strings its environ needs, not the address tuple). Each local is a slot in the frame of every
        idle connection, so the hot loop keeps few (`self.counters` costs
        a request a few nanoseconds more than a local would).
        """
        self.connections[state] = None
        self.counters.connections_total += 1
        self.counters.connections_open += 1
        peer = peer_keys(peer)
        try:
            if endpoint.tls is not None:
                sock = Socket(NonBlockingTLS(tls.wrap(endpoint.tls, sock.socket)))
                if not (yield from self._handshake(sock, peer, state)):
                    return
            conn = self.connection_class(self.config.limits, self.config.server_header)
            raw = sock.socket
            read_trap = sock.read_trap
            # Discussion: a new connection's first request has usually arrived
            # with it, so read first. After a response, the next request has
            # rarely arrived yet: wait first, then read, which saves an EAGAIN
            # recv per keep-alive request.
            wait_first = False
            # A new connection's first request is owed an answer even if a stop
            # arrives before its bytes do (as in serve_connection and _pump):
            # only the wait between two requests counts as idle.
            served = False
            # The whole head is bounded from its first byte: the deadline is set
            # once per head, not moved by the bytes a trickling client sends.
            head_deadline = 0.0
            event = NEED_DATA
            while True:
                try:
                    if event is None:
                        # After a response: a pipelined request may be buffered.
                        # Nothing is, mostly: then wait, and skip the parser's
                        # call that would only say NEED_DATA.
                        event = conn.next_event() if conn.buffered else NEED_DATA
                    while event is NEED_DATA:
                        if wait_first:
                            idle = not conn.buffered
                            if idle:
                                state.idle = served
                                state.deadline = time.monotonic() + self.idle_timeout
                            elif not head_deadline:
                                head_deadline = state.deadline = time.monotonic() + self.config.header_timeout
                            try:
                                yield read_trap
                            except DeadlineExpired:
                                if idle:
                                    return  # idle: nothing was asked, nothing to answer
                                raise head_timeout(self.config) from None
                            state.idle = False
                        try:
                            conn.receive_data(raw.recv(RECV_SIZE))
                        except BlockingIOError:
                            wait_first = True
                            continue
                        wait_first = True
                        event = conn.next_event()
                    if type(event) is not Request:  # CLOSED
                        return
                    head_deadline = 0.0
                    pieces = None
                    if event.has_body:
                        pieces = yield from self._read_body(sock, conn, state)
                except ClientDisconnected as exc:
                    log.info("request body from %s: %s", peer_name(peer), exc.reason)
                    return
                except HTTPError as exc:
                    yield from self._send_error(sock, exc)
                    return

                self.counters.requests += 1
                served = True
                environ = endpoint.wsgi.environ(peer, event, input_from_pieces(pieces))
                # write() output goes straight to the socket; what it does not
                # take leaves with the response's next piece.
                exchange = Exchange(endpoint.wsgi, conn, environ, not self.stopping, raw.send)
                if self.is_tasklet_app:
                    # A tasklet handler is bounded by --timeout (a plain app
                    # cannot be, and never yields: no deadline to set for it).
                    state.deadline = time.monotonic() + self.config.timeout
                    out = yield from self._run_tasklet_app(exchange, environ)
                else:
                    out = exchange.run()
                for data in out:
                    # The usual case: the socket takes the whole response at
                    # once, with no generator made for sendall.
                    try:
                        sent = raw.send(data)
                    except BlockingIOError:
                        sent = 0
                    if sent < len(data):
                        yield from self._send_rest(sock, data, sent, state)
                state.deadline = 0.0
                self.counters.record_response(exchange.sent, exchange.status)
                if self.tracer is not None:
                    self.tracer.record(exchange)
                if not exchange.keep_alive or not conn.start_next_cycle():
                    return
                event = pieces = environ = exchange = out = data = None
        except (Cancelled, ClosedError, ConnectionError):
            pass
        except OSError as exc:
            log.debug("connection from %s ended: %s", peer_name(peer), exc)
        finally:
            del self.connections[state]
            self.counters.connections_open -= 1
            self.slots.release()
            if endpoint.tls is not None:
                self._end_tls(sock)
            sock.close()

    def _send_rest(self, sock: Socket, data: bytes, sent: int, state: ConnectionState) -> Generator:
        """What the socket did not take at once, as it drains: --timeout bounds
        each wait for the client to read (re-armed on progress), not the whole
        download."""
        timeout = self.config.timeout
        view = memoryview(data)
        while sent < len(view):
            state.deadline = time.monotonic() + timeout
            sent += yield from sock.send(view[sent:])

    def _handshake(self, sock: Socket, peer: tuple[str, str], state: ConnectionState) -> Generator[Any, Any, bool]:
        """The TLS handshake as traps: the tasklet waits for whichever way
        OpenSSL asks (readable, or writable for a flight the socket did not
        take), bounded by --header-timeout through the deadline sweeper.
        False, with one INFO line, if it failed."""
        state.deadline = time.monotonic() + self.config.header_timeout
        secured = sock.socket
        try:
            while wanted := secured.handshake():
                yield sock.read_trap if wanted == select.EPOLLIN else sock.write_trap
        except DeadlineExpired:
            log.info("TLS handshake with %s failed: %s", peer_name(peer), tls.handshake_failure(TimeoutError()))
            return False
        except (OSError, ValueError) as exc:
            log.info("TLS handshake with %s failed: %s", peer_name(peer), tls.handshake_failure(exc))
            return False
        return True

    @staticmethod
    def _end_tls(sock: Socket) -> None:
        """close_notify and FIN before the close (see `NonBlockingTLS.shutdown`)."""
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _read_body(self, sock: Socket, conn: ServerConnection,
                   state: ConnectionState) -> Generator[Any, Any, list[bytes]]:
        """The whole request body, before the app runs (bounded by max_body_size).

        A plain WSGI app reads `wsgi.input` synchronously; reading the socket
        there would block the loop, so the body is read here, cooperatively.
        --body-timeout bounds each wait for more of it (inactivity, re-armed
        by every piece), `UploadPace` the pace of the whole upload.
        """
        config = self.config
        monotonic = time.monotonic
        state.deadline = monotonic() + config.body_timeout
        interim = conn.send_continue()
        if interim:
            yield from sock.sendall(interim)
        pace = None
        pieces = []
        while True:
            event = conn.next_event()
            if type(event) is bytes:
                pieces.append(event)
            elif event is NEED_DATA:
                if pace is None:
                    pace = UploadPace(config, monotonic())
                try:
                    data = yield from sock.recv(RECV_SIZE)
                except DeadlineExpired:
                    raise body_timeout(config) from None
                except ConnectionError as exc:
                    raise ClientDisconnected(exc) from None
                now = monotonic()
                pace.arrived(len(data), now)
                state.deadline = now + config.body_timeout
                conn.receive_data(data)
            else:
                return pieces

    def _run_tasklet_app(self, exchange: Exchange, environ: dict) -> Generator:
        refused = exchange.refuse()
        if refused is not None:
            return refused
        try:
            result = yield from self.app(environ, exchange.start_response)
        except APP_ERRORS as exc:
            return exchange.failed(exc)
        return exchange.respond(result)

    def _send_error(self, sock: Socket, exc: HTTPError) -> Generator:
        self.counters.record_rejection(exc.status)
        log.info("bad request: %s %s", exc.status, exc.reason)
        try:
            yield from sock.sendall(render_error(exc.status, exc.reason, self.config.server_header))
            sock.shutdown(socket.SHUT_WR)
            yield from ignore_after(LINGER_SECONDS, self._drain(sock))
        except OSError:
            pass

    @staticmethod
    def _drain(sock: Socket) -> Generator:
        """Drop what the client still sends, within `_linger`'s byte bound
        (the caller bounds the time)."""
        left = LINGER_BYTES
        while left:
            left = still_to_drop(left, (yield from sock.recv(RECV_SIZE)))
