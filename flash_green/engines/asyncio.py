"""asyncio: the standard library's event loop, the HTTP core in a Protocol.

The model
    One thread, one asyncio event loop (asyncore's successor; `--uvloop` or
    FLASH_UVLOOP=1 swaps in uvloop's libuv loop). Each connection is an
    `asyncio.Protocol`: the loop calls `data_received(bytes)`, we feed the
    sans-IO `ServerConnection` and act on its events - the `epoll` engine's
    callback state machine (the same `_pump.RequestPump`), with the loop
    and timers supplied by asyncio. The transport under the Protocol is
    uvloop's own on uvloop (C), and ours on the standard loop
    (`_transport.SocketTransport`: the same contract on the same loop, for
    10 % fewer instructions per hello request, 68.0k -> 60.9k, and 27 %
    less memory per idle connection than `_SelectorSocketTransport`). The request
    body is read before the app runs (a WSGI app reads `wsgi.input`
    synchronously, it could not wait for the network), then the response
    is written through `transport.write`, pausing when the transport says
    its buffer is full (`pause_writing`) and going on at `resume_writing`:
    back-pressure for large downloads. Bytes an app passes to `write()` go
    to `transport.write` at once (PEP 3333: sent before write() returns).

    Two kinds of apps:
    * a plain WSGI app runs inline, on the loop: while it runs nothing else
      does (the same lesson as `epoll` and `tasklets`);
    * an async app - `async def app(environ, start_response)` that returns
      the WSGI body (`flash_green.apps.async_demo`) - runs as a task: it may
      `await asyncio.sleep(...)` or an upstream call, and every other
      connection is served meanwhile. `await` marks every place where it
      may switch: that is asyncio's "function colour", the price of needing
      no hub and no monkey-patching.

What it costs per connection
    A Protocol object (slots), a `ServerConnection`, the peer's two environ
    strings (`peer_keys`), the transport and its reader handle, and at most
    one timer handle: about 1.6 KB of RSS per idle keep-alive connection on
    the standard loop, 2.6 KB on uvloop (uvicorn: 7 KB;
    comparisons/bench_green.py). No thread, no stack.

What breaks it
    Anything that blocks the loop: a plain WSGI app calling `time.sleep`, a
    blocking socket or database call, CPU work; the suite asserts it. Async
    code that forgets an `await` (calls a blocking function) blocks it just
    the same. One core: use `--workers N` for more.

The accept loop is ours
    Not `loop.create_server`'s, because neither loop survives running out
    of file descriptors well. The standard loop retries its accept up to
    `backlog` times per wake-up, and at EMFILE logs a traceback and
    schedules a retry for *each* failed attempt (thousands of tracebacks
    and timers a second; recovery took seconds). uvloop (libuv) closes a
    spare fd to accept and drop the waiting connections, and if that spare
    is gone, closes the whole server without a word. So the engine watches
    each listener with `add_reader` (one reader per listener: several
    listeners are several readers), accepts a batch per wake-up, makes each
    socket a transport (ours at once on the standard loop; on uvloop
    `loop.connect_accepted_socket`, one task per connection, as its server
    does), and on failure follows the shared policy
    (`_accept.AcceptBackoff`): remove the readers, retry after a back-off,
    one warning per episode. New clients wait in the backlog meanwhile, as
    on every other engine. `--max-connections` works the same way: at the
    limit the readers are removed and the next client waits in the backlog
    until a connection ends (uvicorn's `--limit-concurrency` answers 503
    instead; a queued client is served a moment later, not refused).

TLS
    The loop's own: `connect_accepted_socket(ssl=context,
    ssl_handshake_timeout=--header-timeout)` puts an SSL protocol between
    the transport and ours (asyncio's `sslproto` over memory BIOs, uvloop's
    in Cython); the Protocol is made once the handshake is done. Every
    record goes through those buffers: 47 us of CPU per keep-alive
    request, and 0.8 ms per handshake, on the loop thread
    (`python -m comparisons.bench_tls`). TLS has no half-close, so a 4xx
    ends with the transport's close, whose close_notify exchange is the
    linger. A handshake that fails is one INFO line.

When to use it
    New I/O-bound services written with async/await (and the ASGI world:
    uvicorn, hypercorn run this model). For existing blocking WSGI code,
    gevent keeps the code unchanged.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
from asyncio.selector_events import BaseSelectorEventLoop
from collections.abc import Callable, Sequence

from .. import stats, tls
from ..binds import Listener
from ..colour import ASYNC, app_colour
from ..config import Config
from ..http import HTTPError, render_error
from ..wsgi import APP_ERRORS, Exchange, WSGIContext, input_from_pieces, peer_keys, peer_name
from ._accept import ACCEPT_BATCH, AcceptBackoff
from ._linger import LINGER_BYTES, LINGER_SECONDS
from ._loop import LoopWatchdog
from ._pump import READING, RequestPump
from ._transport import SocketTransport
from .base import HEARTBEAT_INTERVAL, Capabilities, Endpoint, Engine, accept_backlog

log = logging.getLogger("flash.engine.asyncio")

#: Stop reading from a client that pipelines more than this while one of its
#: responses is still being produced (resumed when it is done).
MAX_PIPELINED = 256 * 1024

# Connection states after READING (small ints: compared on every callback).
AWAITING, WRITING, LINGERING, CLOSED = range(READING + 1, READING + 5)


def uvloop_requested(config: Config) -> bool:
    return config.uvloop or os.environ.get("FLASH_UVLOOP", "") not in ("", "0")


class HTTPProtocol(RequestPump, asyncio.Protocol):
    """One connection's state machine, driven by the loop's callbacks."""

    __slots__ = (
        "body",
        "conn",
        "deadline",
        "engine",
        "exchange",
        "in_head",
        "linger_left",
        "pace",
        "peer",
        "pending",
        "reading_paused",
        "served",
        "state",
        "task",
        "timer",
        "timer_at",
        "transport",
        "write_paused",
        "wsgi",
    )

    def __init__(self, engine: AsyncioEngine, wsgi: WSGIContext) -> None:
        self.start_pump(engine, None)
        #: The static environ of the listener it came from.
        self.wsgi = wsgi
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task | None = None
        self.write_paused = False
        self.reading_paused = False
        #: The deadline of the current request head is armed (from its first byte).
        self.in_head = False
        self.deadline: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        #: When `timer` fires (its `when()`, without the method call).
        self.timer_at = 0.0
        self.linger_left = 0

    # -- callbacks from the loop ------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.peer = peer_keys(transport.get_extra_info("peername"))
        self.engine.adopt(self)
        self._arm(self.engine.config.keep_alive)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == READING:
            self.conn.receive_data(data)
            self.advance()
        elif state == LINGERING:
            self.drop_input(data)
        elif state != CLOSED:
            # A response is in progress: keep pipelined bytes for later.
            self.conn.receive_data(data)
            if self.conn.buffered > MAX_PIPELINED and not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        if self.state == LINGERING:
            self.close()
            return False
        self.conn.receive_data(b"")
        if self.state == READING:
            self.advance()
        # Keep the transport: a response may still be on its way out. (TLS
        # has no half-open state: the client's close_notify ends it.)
        return self.transport.can_write_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost(exc)
        # Counted as open until here, not until close(): a transport's close
        # sends what it holds first, and a stop must wait for that too.
        self.engine.forget(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.state == WRITING and self._flush():
            self.advance()

    # -- waiting for input (the hooks of RequestPump.wait_for_input) ---------------

    def send_interim(self, data: bytes) -> bool:
        self.transport.write(data)
        return True

    def arm_body(self) -> None:
        self._arm(self.engine.config.body_timeout)

    def arm_head(self) -> None:
        if not self.in_head:
            self.in_head = True
            self._arm(self.engine.config.header_timeout)

    def arm_idle(self) -> None:
        self._arm(self.engine.idle_timeout)

    # -- running the app ----------------------------------------------------------

    def dispatch(self) -> None:
        engine = self.engine
        wsgi = self.wsgi
        self.deadline = None
        self.in_head = False
        # (No heartbeat per request: the loop's own beat, `_beat`, proves the
        # loop alive, and stops when a handler holds it.)
        engine.counters.requests += 1
        body = input_from_pieces(self.body)
        self.body = None
        environ = wsgi.environ(self.peer, self.conn.request, body)
        exchange = self.exchange = Exchange(wsgi, self.conn, environ, not engine.stopping,
                                            self.transport.write)
        if engine.async_app:
            # The handler may await: bounded by --timeout like a stalled write.
            self.state = AWAITING
            self._arm(engine.config.timeout)
            self.task = engine.loop.create_task(self._run_async(exchange, environ))
        else:
            self.state = WRITING
            self.pending = iter(exchange.run())
            self._flush()

    async def _run_async(self, exchange: Exchange, environ: dict) -> None:
        """Await the async app, then frame its body exactly as for a WSGI app."""
        out = exchange.refuse()
        if out is None:
            try:
                result = self.engine.app(environ, exchange.start_response)
                if inspect.isawaitable(result):  # a middleware may answer without awaiting
                    result = await result
            except APP_ERRORS as exc:  # a 500 or an abort, as in Exchange.run
                out = exchange.failed(exc)
            else:
                out = exchange.respond(result)
        self.task = None
        if self.state != AWAITING:
            return
        self.state = WRITING
        self.pending = iter(out)
        if self._flush():
            self.advance()

    # -- writing ----------------------------------------------------------------

    def _flush(self) -> bool:
        """Write until the response is done (True) or the transport is full."""
        pending = self.pending
        transport = self.transport
        write = transport.write
        while not self.write_paused:
            data = next(pending, None)
            if data is None:
                self.deadline = None
                if not self.finish_response():
                    return False
                if self.reading_paused:
                    self.reading_paused = False
                    transport.resume_reading()
                return True
            write(data)
            if transport.is_closing():  # the client is gone: stop pulling the body
                return False
        # Paused: a client that reads nothing for --timeout is cut off.
        self._arm(self.engine.config.timeout)
        return False

    # -- bad input ----------------------------------------------------------------

    def reject(self, exc: HTTPError) -> None:
        """Answer the core's verdict, half-close, and drop what still comes."""
        engine = self.engine
        engine.counters.record_rejection(exc.status)
        log.info("bad request from %s: %s %s", peer_name(self.peer), exc.status, exc.reason)
        self.state = LINGERING
        self.in_head = False
        self.transport.write(render_error(exc.status, exc.reason, engine.config.server_header))
        if not self.transport.can_write_eof():
            # TLS cannot half-close. Its transport's close sends what is
            # buffered, then close_notify, and reads (and drops) what comes
            # until the client answers: the linger, done by the SSL layer.
            self.close()
            return
        self.transport.write_eof()
        self.linger_left = LINGER_BYTES
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        self._arm(LINGER_SECONDS)

    # -- timers and closing ---------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        """Set the connection's one deadline.

        Moving a deadline later (every keep-alive request does) only stores
        a number: the pending timer, when it fires early, re-arms itself for
        the rest. A timer is created only when none is pending or the new
        deadline is earlier: a keep-alive connection costs one timer per
        keep-alive period, not one per request.
        """
        loop = self.engine.loop
        deadline = self.deadline = loop.time() + seconds
        timer = self.timer
        if timer is None or self.timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self.timer = loop.call_at(deadline, self._on_timer)
            self.timer_at = deadline

    def _on_timer(self) -> None:
        self.timer = None
        deadline = self.deadline
        if deadline is None or self.state == CLOSED:
            return
        if self.engine.loop.time() < deadline:
            self.timer = self.engine.loop.call_at(deadline, self._on_timer)
            self.timer_at = deadline
            return
        if self.state == AWAITING:
            log.warning("async handler for %s ran past --timeout; connection closed",
                        self.exchange.environ.get("PATH_INFO") if self.exchange else "?")
        log.debug("connection from %s timed out in state %d", peer_name(self.peer), self.state)
        if self.state == WRITING:
            # The client took nothing for --timeout: drop what waits for it
            # (a transport's close would wait for it forever).
            self.transport.abort()
        self.timed_out()

    def close(self) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.deadline = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self.close_response()
        transport = self.transport
        if transport is not None:
            transport.close()
            if transport.get_write_buffer_size():
                # Its close waits for the client to take the rest: bounded
                # by --timeout, as every write.
                self.engine.loop.call_later(self.engine.config.timeout, transport.abort)


class AsyncioEngine(Engine):
    name = "asyncio"
    summary = "asyncio Protocols (uvloop with --uvloop); WSGI inline on the loop, async apps as tasks"
    capabilities = Capabilities(concurrent=True, parallel=False, blocking_handler_stalls=True,
                                bounds_connections=True)
    app_colours = frozenset({ASYNC})

    def __init__(self, config: Config, app: Callable, listeners: Sequence[Listener]) -> None:
        super().__init__(config, app, listeners)
        self.async_app = app_colour(app) == ASYNC
        self.loop: asyncio.AbstractEventLoop | None = None
        #: On the standard loop a connection's transport is ours (`_transport`).
        self.use_own_transport = False
        # (A dict used as an ordered set: a set's table costs 52-105 B per
        # member at 5,000-20,000 members, a dict 30 B.)
        self.connections: dict[HTTPProtocol, None] = {}
        self._stop_requested: asyncio.Future | None = None
        self._drained: asyncio.Future | None = None
        self.accept_backoff = AcceptBackoff(log)
        self._accepting = False
        self._accept_retry: asyncio.TimerHandle | None = None
        #: Sockets accepted and not yet closed (a connection is counted from
        #: its accept, before its Protocol exists): --max-connections.
        self.open_sockets = 0
        #: How long a connection waits for its next request: --keep-alive,
        #: `drain_seconds` once a stop began.
        self.idle_timeout = config.keep_alive

    @classmethod
    def validate(cls, config: Config) -> None:
        super().validate(config)
        if uvloop_requested(config):
            try:
                import uvloop  # noqa: F401
            except ImportError:
                raise ValueError("--uvloop needs the package 'uvloop': pip install uvloop") from None

    def serve(self) -> None:
        loop_factory = None
        if uvloop_requested(self.config):
            import uvloop

            loop_factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(self._main())

    def _meter_selector(self, loop: asyncio.AbstractEventLoop) -> None:
        """--stats: count the loop's epoll waits; --debug-blocking: also log the
        loop thread's stack *while* a handler holds it (the slow-callback log
        only comes afterwards, without it). A selector loop waits in
        `loop._selector._selector.poll()`; uvloop has no such poller and keeps
        only its slow-callback log."""
        selector = getattr(loop, "_selector", None)
        epoll = getattr(selector, "_selector", None)
        if epoll is None or not hasattr(epoll, "poll"):
            return
        watchdog = (LoopWatchdog(self.config.debug_blocking_ms, log)
                    if self.config.debug_blocking_ms else None)
        selector._selector = stats.metered_poller(self, epoll, watchdog)

    async def _main(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        self.use_own_transport = isinstance(loop, BaseSelectorEventLoop)
        log.info("event loop: %s.%s", type(loop).__module__, type(loop).__name__)
        if self.config.debug_blocking_ms:
            # asyncio's own detector: in debug mode the loop logs every
            # callback or task step that held it longer than this.
            loop.set_debug(True)
            loop.slow_callback_duration = self.config.debug_blocking_ms / 1000
        self._meter_selector(loop)
        self._stop_requested = loop.create_future()
        self._drained = loop.create_future()
        if self.stopping:  # a stop signal came before the loop did
            self._stop_requested.set_result(None)
        for endpoint in self.endpoints:
            endpoint.sock.setblocking(False)
        self._start_accepting()
        self.loop_heartbeat = True
        self._beat()
        await self._stop_requested
        await self._stop_serving()
        if self.connections:
            await self._drained
        log.info("all connections finished")

    async def _stop_serving(self) -> None:
        """The stop (see `Engine.request_stop`): take the listener's backlog,
        close it, and give idle connections `drain_seconds` for a last request.

        Discussion: the accept loop's readers go first, and the sockets are
        closed one loop pass later (`sleep(0)`: uvloop lets go of a reader's
        handle a pass after its removal), once the backlogs are taken from them.
        """
        self._stop_accepting()
        await asyncio.sleep(0)
        backlog = [(sock, endpoint) for endpoint in self.endpoints
                   for sock, _ in accept_backlog(endpoint.sock)]
        self.open_sockets += len(backlog)
        self.idle_timeout = self.drain_seconds
        for protocol in [p for p in self.connections if p.idle]:
            protocol.arm_idle()
        connecting = [self._connect(sock, endpoint) for sock, endpoint in backlog]
        await asyncio.gather(*(task for task in connecting if task is not None))

    # -- accepting (ours, not loop.create_server's: see the module docstring) -----

    def _accept_connections(self, endpoint: Endpoint) -> None:
        """A listener is readable: accept what waits (a batch), each into a Protocol."""
        listener = endpoint.sock
        loop = self.loop
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                pause = self.accept_backoff.failed(exc)
                if pause:
                    self._stop_accepting()
                    self._accept_retry = loop.call_later(pause, self._start_accepting)
                    return
                continue
            self.accept_backoff.accepted()
            self.open_sockets += 1
            self._connect(sock, endpoint)
            if self.open_sockets >= self.config.max_connections:
                self._stop_accepting()
                return

    def _socket_closed(self) -> None:
        """One accepted socket fewer: below the limit again, accept again."""
        self.open_sockets -= 1
        if not (self._accepting or self.stopping or self._accept_retry is not None):
            self._start_accepting()

    def _start_accepting(self) -> None:
        """One reader per listener (out of fds, the back-off pauses them all)."""
        self._accept_retry = None
        for endpoint in self.endpoints:
            self.loop.add_reader(endpoint.sock.fileno(), self._accept_connections, endpoint)
        self._accepting = True

    def _stop_accepting(self) -> None:
        if self._accepting:
            for endpoint in self.endpoints:
                self.loop.remove_reader(endpoint.sock.fileno())
            self._accepting = False
        if self._accept_retry is not None:
            self._accept_retry.cancel()
            self._accept_retry = None

    def _connect(self, sock: socket.socket, endpoint: Endpoint) -> asyncio.Task | None:
        """Make `sock` a transport with its Protocol: at once on the standard
        loop (our `SocketTransport`), else in a task (the loop's own
        transport, made by `connect_accepted_socket`; a TLS handshake)."""
        loop = self.loop
        if endpoint.tls is not None:
            return loop.create_task(self._connect_tls(sock, endpoint))
        if self.use_own_transport:
            SocketTransport(loop, sock, HTTPProtocol(self, endpoint.wsgi))
            return None
        return loop.create_task(loop.connect_accepted_socket(lambda: HTTPProtocol(self, endpoint.wsgi), sock))

    async def _connect_tls(self, sock: socket.socket, endpoint: Endpoint) -> None:
        """TLS by the loop's own SSL protocol: a non-blocking handshake bounded by
        --header-timeout; the Protocol is made (and counted) once it is done."""
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None
        try:
            await self.loop.connect_accepted_socket(
                lambda: HTTPProtocol(self, endpoint.wsgi), sock, ssl=endpoint.tls,
                ssl_handshake_timeout=self.config.header_timeout,
                ssl_shutdown_timeout=LINGER_SECONDS)
        except (OSError, ValueError) as exc:
            log.info("TLS handshake with %s failed: %s", peer, tls.handshake_failure(exc))
            self._socket_closed()  # no Protocol was made: `forget` will not come

    def _beat(self) -> None:
        """Heartbeat from a loop callback: it stops when something blocks the loop."""
        if not self.stopping:
            self.heartbeat()
            self.loop.call_later(HEARTBEAT_INTERVAL, self._beat)

    def request_stop(self, graceful: bool = True) -> None:
        """Set the flag and hand the rest to the loop (`_stop_serving`).

        Discussion: the signal handlers are plain ones (`Engine`'s), not
        `loop.add_signal_handler`. Those run as loop callbacks, after the I/O
        callbacks of the loop pass in which the signal was seen: a request
        read in that pass (one that waited while a handler held the loop)
        was answered keep-alive although the stop had begun. A plain handler
        runs between two bytecodes of whatever the loop is doing, so the flag
        is up before the next request is read; `call_soon_threadsafe` is the
        loop's signal-safe door for the rest.
        """
        self.stopping = True
        if not graceful:
            os._exit(0)
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._stop_requested_now)

    def schedule_reload(self) -> None:
        """A loop callback: no plain WSGI call is running then; an async
        handler in flight keeps its old code."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.reload_app)

    def use_app(self, app: Callable) -> None:
        super().use_app(app)
        self.async_app = app_colour(app) == ASYNC

    def _stop_requested_now(self) -> None:
        if not self._stop_requested.done():
            self._stop_requested.set_result(None)

    # -- connection bookkeeping (called by the protocols) ------------------------

    def adopt(self, protocol: HTTPProtocol) -> None:
        self.connections[protocol] = None
        self.counters.connections_total += 1
        self.counters.connections_open += 1

    def forget(self, protocol: HTTPProtocol) -> None:
        self.connections.pop(protocol, None)
        self.counters.connections_open -= 1
        self._socket_closed()
        if self.stopping and not self.connections and not self._drained.done():
            self._drained.set_result(None)

