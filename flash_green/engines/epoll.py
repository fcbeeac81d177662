"""v4 - epoll: one thread, non-blocking sockets, a state machine per connection.

What changed from v3 (threaded)
    No thread waits for a client any more. Every socket is non-blocking, and
    one loop asks the kernel (`select.epoll`) which sockets are ready. Each
    connection is an explicit state machine, a `Channel`, whose callbacks
    (`on_readable`, `on_writable`, `on_timeout`) advance it as far as they
    can without waiting and then return to the loop. An idle keep-alive
    connection is now under a kilobyte of Python objects plus the kernel's
    socket, not a thread: 10,000 idle clients are cheap, and slowloris
    clients cost only the bytes they trickled.

The state machine (each arrow is one callback's work)
    READING   --recv, parse: a whole request, body included-->  app runs inline
              --> WRITING
    WRITING   --send; socket full-->  wait for EPOLLOUT  --> WRITING
    WRITING   --response done, keep-alive-->  READING (pipelined bytes
              already buffered are parsed at once, in order)
    READING   --bad input-->  REJECTING (error response)  --> LINGERING
              (half-closed, input drained)  --> CLOSED
    any state --timeout, socket error, Connection: close-->  CLOSED

    In v3 the same sequence was a plain loop of blocking calls
    (`serve_connection`), and the "state" lived in the thread's stack. Here
    every wait is a return to the loop, so the state must be saved by hand
    in the Channel's fields. Tasklets, greenlets and asyncio exist to hide
    exactly this machine; read it once to see what they do for you.

    The READING part of the machine - feed the parser, collect the body,
    dispatch a whole request, choose a timeout when it needs more bytes,
    reject bad input - is the same for every callback-style engine, so it
    lives in `_pump.RequestPump` (asyncio's Protocol uses it too). This
    module adds the rest: the loop, sending, timers, lingering, closing.

Back-pressure
    The next piece of a response is pulled from the app's iterable only
    when the previous piece has gone to the kernel, so a client that stops
    reading a 10 MB download pins one 64 KB piece, not 10 MB. Input is not
    read while a response is being written, so a client that pipelines
    without reading is throttled by its own TCP window. Request bodies are
    read whole before the app runs (bounded by --max-body-size), because
    `wsgi.input.read()` is a blocking call: it could only wait for the
    socket by blocking the loop. 100-continue is answered when the body is
    due. Bytes an app passes to `write()` are sent at once (PEP 3333), and
    what the socket does not take waits in memory, ahead of the next piece:
    the app holds the loop while it writes, so it cannot wait for the client.

Timers
    Keep-alive (between requests), header (from the first byte of a head:
    absolute, so trickling does not extend it), body and write (inactivity,
    re-armed on progress: --body-timeout, --timeout) and linger. Each kind
    has a fixed length, so each is a `DeadlineQueue` (O(1) per operation);
    the loop sleeps in epoll until the earliest deadline. A head or body
    that runs out gets 408 (`_read_timeouts`); the --min-body-rate floor
    needs no timer: it is checked as body bytes arrive.
    During a graceful stop the keep-alive wait becomes the short drain
    (`begin_stop`), so that a request already on its way is still answered.

TLS: one more state, and the wait that goes both ways
    A connection of a TLS listener begins in HANDSHAKING (`TLSHandshake`):
    OpenSSL says SSLWantReadError (EPOLLIN: more of the client's flight)
    or SSLWantWriteError (EPOLLOUT: our flight did not fit the socket
    buffer), the interest is switched to match, --header-timeout bounds it
    as it bounds a head. Then the Channel is an ordinary one over a
    `NonBlockingTLS` socket, which turns OpenSSL's "want" into EAGAIN and
    hands over the bytes OpenSSL already decrypted (`pending()`: a level-
    triggered loop does not see them, and would wait for bytes that
    arrived). The price is CPU on the one loop thread: 0.84 ms per
    handshake, during which every other connection waits (a burst of new
    TLS clients is a blocking handler of its own), and 24 us per
    keep-alive request for the records (`python -m comparisons.bench_tls`).

Level- vs edge-triggered: level
    A callback reads at most 64 KB and returns, so one busy client cannot
    starve the others; level-triggered epoll simply reports the rest on the
    next pass. Edge-triggered would oblige us to drain every socket until
    EAGAIN on every event (an extra, failing recv per request, and the
    starvation we just avoided), or else lose wake-ups - and this machine
    deliberately leaves input unread while it writes. Interest changes
    (EPOLLIN <-> EPOLLOUT) are needed only when a write blocks, so the
    keep-alive hot path makes no epoll_ctl call at all. Several listeners
    are several fds in the same epoll set, each mapped to its endpoint.

What it costs per connection
    About 0.7 KB of RSS per idle keep-alive connection (Channel,
    ServerConnection, socket object, peer address, a timer entry), measured
    with 10,000 of them held open by comparisons/bench_inprocess.py, plus
    the kernel's socket buffers (not in RSS). No thread, no stack, no
    switch: per request one recv, the parse, the app, one send.

What breaks it (the seed's lesson)
    One slow handler blocks every connection. The app runs on the loop
    thread, so a `/sleep`, a blocking upstream call, a slow query or a CPU
    burn stops the whole server for its duration (the cross-engine suite
    asserts it: `blocking_handler_stalls`). It also uses one core, and the
    code is inside out: every blocking call of v3 became a state and a
    callback.

When to use it
    Servers whose handlers never block: proxies, static files, chat and
    push servers holding many idle connections (nginx, HAProxy, Redis and
    Node are this model in C and JavaScript). For WSGI apps, which block,
    use v5 (event): the same loop, with the app on a thread pool.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import time
from collections.abc import Callable, Sequence

from .. import stats, tls
from ..binds import Listener
from ..config import Config
from ..http import HTTPError, render_error
from ..wsgi import Exchange, WSGIContext, input_from_pieces
from ._accept import AcceptBackoff
from ._loop import DeadlineQueue, LoopWatchdog
from ._pump import READING, RequestPump
from ._tls import NonBlockingTLS
from .base import HEARTBEAT_INTERVAL, Capabilities, Endpoint, Engine, Waker, accept_backlog

log = logging.getLogger("flash.engine.epoll")

RECV_SIZE = 65536
#: Connections accepted per readiness of the listener; level-triggered epoll
#: reports the rest next pass, so a connection storm cannot starve the others.
ACCEPT_BATCH = 64
#: After an error response: how long and how much we keep reading and
#: dropping so that our close does not turn into an RST (see blocking.linger).
LINGER_SECONDS = 1.0
LINGER_BYTES = 1 << 20

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT

# Channel states after READING (small ints: compared on every event).
WRITING, REJECTING, LINGERING, CLOSED, HANDSHAKING = range(READING + 1, READING + 6)


class Channel(RequestPump):
    """One connection's state machine, driven by the loop's callbacks."""

    __slots__ = ("engine", "sock", "fd", "peer", "wsgi", "conn", "state", "served", "body", "pace",
                 "exchange", "pending", "out", "want_out", "timer", "linger_left")

    def __init__(self, engine: EpollEngine, sock: socket.socket | NonBlockingTLS, peer,
                 wsgi: WSGIContext) -> None:
        self.start_pump(engine, peer)
        self.sock = sock
        #: The static environ of the listener it came from.
        self.wsgi = wsgi
        self.fd = sock.fileno()
        #: The part of a piece the socket did not take yet.
        self.out: bytes | memoryview | None = None
        #: Registered for EPOLLOUT (a write is blocked) instead of EPOLLIN.
        self.want_out = False
        self.timer: DeadlineQueue | None = None
        self.linger_left = 0

    # -- callbacks from the loop -------------------------------------------------

    def on_event(self, events: int) -> None:
        """The state says which callback is due. Error and hang-up bits need
        no case of their own: the recv or send they prompt fails, and closes."""
        if self.state == WRITING or self.state == REJECTING:
            self.on_writable()
        else:
            self.on_readable()

    def on_readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.lost(exc)
            return
        if self.state == LINGERING:
            self.drop_input(data)
            return
        self.conn.receive_data(data)
        self.advance()

    def on_writable(self) -> None:
        if self.flush():
            self.advance()

    def on_timeout(self) -> None:
        log.debug("connection from %s timed out in state %d", self.peer, self.state)
        self.timed_out()

    # -- waiting for input (the hooks of RequestPump.wait_for_input) ---------------

    def arm_body(self) -> None:
        self.arm(self.engine.body_timers)

    def arm_head(self) -> None:
        if self.timer is not self.engine.head_timers:
            self.arm(self.engine.head_timers)

    def arm_idle(self) -> None:
        self.arm(self.engine.idle_timers)

    def send_interim(self, data: bytes) -> bool:
        """Send `100 Continue`; False (and closed) if that failed.

        Nothing else is queued on the socket at this point and its buffer
        holds kilobytes, so a short send can only mean a broken connection.
        """
        try:
            sent = self.sock.send(data)
        except OSError:
            sent = 0
        if sent != len(data):
            self.close()
            return False
        return True

    # -- running the app ----------------------------------------------------------

    def dispatch(self) -> None:
        """v4: run the app right here, on the loop thread; everyone else waits."""
        self.disarm()
        self.engine.counters.requests += 1
        self.state = WRITING
        # write() output goes straight to the socket; what it does not take
        # leaves with the response's next piece (Exchange.send_now).
        self.pending = iter(self.start_exchange(self.sock.send).run())
        self.flush()

    def start_exchange(self, send_now: Callable[[bytes], int | None]) -> Exchange:
        wsgi = self.wsgi
        body = input_from_pieces(self.body)
        self.body = None
        # The connection's part of environ is rebuilt per request (two keys,
        # well under a microsecond) rather than kept for the connection's
        # life: kept, it would add a quarter kilobyte to every idle one.
        environ = wsgi.environ(wsgi.connection_environ(self.peer), self.conn.request, body)
        self.exchange = Exchange(wsgi, self.conn, environ, not self.engine.stopping, send_now)
        return self.exchange

    # -- writing ----------------------------------------------------------------

    def flush(self) -> bool:
        """Send until the response is done (True) or the socket is full."""
        out = self.out
        pending = self.pending
        send = self.sock.send
        while True:
            if out:
                try:
                    sent = send(out)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    self.close()
                    return False
                if sent < len(out):
                    self.out = memoryview(out)[sent:]
                    self.wait_writable()
                    return False
            out = next(pending, None)
            if out is None:
                break
        self.out = None
        if self.state == REJECTING:
            self.linger()
            return False
        if self.finish_response():
            self.watch_input()
            return True
        return False

    def wait_writable(self) -> None:
        """The socket is full: sleep until EPOLLOUT; each partial send re-arms
        the write timeout, so only a client that reads nothing is cut off."""
        if not self.want_out:
            self.engine.epoll.modify(self.fd, EPOLLOUT)
            self.want_out = True
        self.arm(self.engine.write_timers)

    def watch_input(self) -> None:
        if self.want_out:
            self.engine.epoll.modify(self.fd, EPOLLIN)
            self.want_out = False

    # -- bad input ----------------------------------------------------------------

    def reject(self, exc: HTTPError) -> None:
        """Answer the core's verdict, then linger and close."""
        engine = self.engine
        engine.counters.record_rejection(exc.status)
        log.info("bad request from %s: %s %s", self.peer, exc.status, exc.reason)
        self.disarm()
        self.state = REJECTING
        self.pending = iter((render_error(exc.status, exc.reason, engine.config.server_header),))
        self.flush()

    def linger(self) -> None:
        """Half-close, then read and drop what the client still sends (bounded)."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.state = LINGERING
        self.pending = None
        self.linger_left = LINGER_BYTES
        self.watch_input()
        self.arm(self.engine.linger_timers)

    # -- timers and closing ---------------------------------------------------------

    def arm(self, queue: DeadlineQueue) -> None:
        timer = self.timer
        if timer is not queue:
            if timer is not None:
                timer.cancel(self)
            self.timer = queue
        queue.arm(self, time.monotonic())

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel(self)
            self.timer = None

    def close(self) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.disarm()
        self.close_response()
        try:
            self.sock.shutdown(socket.SHUT_WR)  # FIN after our last byte, not RST
        except OSError:
            pass
        self.sock.close()  # closing the fd also removes it from the epoll set
        self.engine.forget(self)


class TLSHandshake:
    """Mixin for a Channel of a TLS listener: the HANDSHAKING state before READING.

    The one state whose waits go both ways: OpenSSL asks for more of the
    client's flight (SSLWantReadError: EPOLLIN) or for room to send ours
    (SSLWantWriteError: EPOLLOUT; a long certificate chain may not fit the
    socket buffer), and the loop calls back into `handshake` on either
    event. --header-timeout bounds it (the head timers), as it bounds a
    request head. Once done the channel is an ordinary one: `self.sock` is
    a `NonBlockingTLS`, so reading and writing go through the same code.
    """

    __slots__ = ()

    def begin_handshake(self) -> None:
        self.state = HANDSHAKING
        self.arm(self.engine.head_timers)
        self.handshake()  # the client's hello came with the connection, usually

    def on_readable(self) -> None:
        if self.state == HANDSHAKING:
            self.handshake()
        else:
            super().on_readable()

    def handshake(self) -> None:
        try:
            wanted = self.sock.handshake()
        except (OSError, ValueError) as exc:
            log.info("TLS handshake with %s failed: %s", self.peer, tls.handshake_failure(exc))
            self.close()
            return
        if wanted == EPOLLOUT:
            self.wait_writable_for_handshake()
        elif wanted:
            self.watch_input()
        else:
            self.state = READING
            self.watch_input()
            self.arm(self.engine.idle_timers)
            self.on_readable()  # a request may have come with the last of the handshake

    def wait_writable_for_handshake(self) -> None:
        if not self.want_out:
            self.engine.epoll.modify(self.fd, EPOLLOUT)
            self.want_out = True

    def on_timeout(self) -> None:
        if self.state == HANDSHAKING:
            log.info("TLS handshake with %s failed: %s", self.peer,
                     tls.handshake_failure(TimeoutError()))
            self.close()
        else:
            super().on_timeout()


class TLSChannel(TLSHandshake, Channel):
    __slots__ = ()


class EpollEngine(Engine):
    """The loop: accept, wait in epoll, run callbacks, expire timers, stop."""

    name = "epoll"
    summary = ("v4: one thread, epoll and a state machine per connection; idle clients are "
               "cheap, one blocking handler stalls everyone")
    capabilities = Capabilities(concurrent=True, parallel=False, blocking_handler_stalls=True,
                                bounds_connections=True)
    channel_class: type[Channel] = Channel
    tls_channel_class: type[Channel] = TLSChannel

    def __init__(self, config: Config, app: Callable, listeners: Sequence[Listener]) -> None:
        super().__init__(config, app, listeners)
        # Counted and timed when --stats asks (loop iterations, time in epoll).
        self.epoll = stats.metered_poller(self, select.epoll())
        self.waker = Waker()
        self.channels: dict[int, Channel] = {}
        #: The listeners by fd, while they are open.
        self.listening: dict[int, Endpoint] = {e.sock.fileno(): e for e in self.endpoints}
        self.accepting = False
        self.accept_backoff = AcceptBackoff(log)
        #: When to try accepting again after accept() failed (out of fds).
        self.accept_retry_at = 0.0
        self.stop_begun = False
        self.idle_timers = DeadlineQueue(config.keep_alive)
        self.head_timers = DeadlineQueue(config.header_timeout)
        self.body_timers = DeadlineQueue(config.body_timeout)
        self.write_timers = DeadlineQueue(config.timeout)
        self.linger_timers = DeadlineQueue(LINGER_SECONDS)
        #: Becomes `idle_timers` when a stop begins (see `begin_stop`).
        self.drain_timers = DeadlineQueue(self.drain_seconds)
        self.timer_queues = (self.idle_timers, self.head_timers, self.body_timers,
                             self.write_timers, self.linger_timers, self.drain_timers)
        #: Look at the timers (and beat) at least this often. Every timeout
        #: is at least this long, so nothing armed after a look can fall due
        #: before the next one: most loop passes skip the timers entirely.
        self.timer_tick = min(HEARTBEAT_INTERVAL, *(q.duration for q in self.timer_queues))
        self.timers_due = 0.0

    # -- the loop -------------------------------------------------------------------

    def serve(self) -> None:
        for endpoint in self.endpoints:
            endpoint.sock.setblocking(False)
        self.epoll.register(self.waker.rfd, EPOLLIN)
        self.resume_accepting()
        try:
            self.run_loop()
        finally:
            self.shut_down()

    def run_loop(self) -> None:
        channels = self.channels
        listening = self.listening
        poll = self.epoll.poll
        wake_fd = self.waker.rfd
        watchdog = (LoopWatchdog(self.config.debug_blocking_ms, log)
                    if self.config.debug_blocking_ms else None)
        self.loop_heartbeat = True  # a stuck loop (a handler that never returns) stops beating
        while channels or not self.stop_begun:  # a stop takes the backlog first (begin_stop)
            ready = poll(self.poll_timeout())
            if watchdog is not None:
                watchdog.busy()
            for fd, events in ready:
                # Discussion: a callback may close a connection and an accept
                # later in this batch may reuse its fd, so a stale event can
                # reach the new channel. Harmless: callbacks only try a
                # non-blocking recv/send, and EAGAIN sends them back here.
                channel = channels.get(fd)
                if channel is not None:
                    channel.on_event(events)
                elif fd in listening:  # emptied at the stop
                    self.accept(listening[fd])
                elif fd == wake_fd:
                    self.on_wake()
            if watchdog is not None:
                watchdog.idle()

    def poll_timeout(self) -> float:
        """Expire timers and beat when due; seconds until the next look."""
        now = time.monotonic()
        if now >= self.timers_due:
            self.heartbeat()
            self.expire_timers(now)
            due = now + self.timer_tick
            for queue in self.timer_queues:
                deadline = queue.first_deadline()
                if deadline is not None and deadline < due:
                    due = deadline
            if self.accept_retry_at and self.accept_retry_at < due:
                due = self.accept_retry_at
            self.timers_due = due
        return max(0.0, self.timers_due - now)

    def expire_timers(self, now: float) -> None:
        for queue in self.timer_queues:
            for channel in queue.pop_expired(now):
                channel.timer = None
                channel.on_timeout()
        if self.accept_retry_at and now >= self.accept_retry_at:
            self.accept_retry_at = 0.0
            if not self.accepting and not self.stopping:
                self.resume_accepting()

    # -- connections ------------------------------------------------------------------

    def accept(self, endpoint: Endpoint) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = endpoint.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of fds (EMFILE) and the like: rather than spin on a
                # listener that stays ready, pause until a connection closes
                # or the back-off has passed.
                pause = self.accept_backoff.failed(exc)
                if pause:
                    self.pause_accepting()
                    self.accept_retry_at = time.monotonic() + pause
                    self.timers_due = min(self.timers_due, self.accept_retry_at)
                    return
                continue
            self.accept_backoff.accepted()
            sock.setblocking(False)
            self.add_channel(sock, peer, endpoint)
            if len(self.channels) >= self.config.max_connections:
                self.pause_accepting()
                return

    def add_channel(self, sock: socket.socket, peer, endpoint: Endpoint) -> None:
        counters = self.counters
        counters.connections_total += 1
        counters.connections_open += 1
        if endpoint.tls is None:
            channel = self.channel_class(self, sock, peer, endpoint.wsgi)
            self.channels[channel.fd] = channel
            self.epoll.register(channel.fd, EPOLLIN)
            channel.arm(self.idle_timers)
        else:
            secured = NonBlockingTLS(tls.wrap(endpoint.tls, sock))
            channel = self.tls_channel_class(self, secured, peer, endpoint.wsgi)
            self.channels[channel.fd] = channel
            self.epoll.register(channel.fd, EPOLLIN)
            channel.begin_handshake()

    def forget(self, channel: Channel) -> None:
        """A channel closed: drop it, and accept again if we were full."""
        del self.channels[channel.fd]
        self.counters.connections_open -= 1
        if not self.accepting and not self.stopping and len(self.channels) < self.config.max_connections:
            self.resume_accepting()

    def pause_accepting(self) -> None:
        """Stop watching every listener (full, or out of fds: the process's
        shortage, not one listener's)."""
        if self.accepting:
            for fd in self.listening:
                self.epoll.unregister(fd)
            self.accepting = False

    def resume_accepting(self) -> None:
        for fd in self.listening:
            self.epoll.register(fd, EPOLLIN)
        self.accepting = True
        self.accept_retry_at = 0.0

    # -- stopping -----------------------------------------------------------------------

    def request_stop(self, graceful: bool = True) -> None:
        """Signal-handler safe: set the flag and wake the loop, nothing else."""
        self.stopping = True
        self.waker.wake()
        if not graceful:
            os._exit(0)

    def schedule_reload(self) -> None:
        """Signal-handler safe: the loop reloads when woken (`on_wake`), where
        no app call is running (v4 runs the app inline)."""
        self.reload_requested = True
        self.waker.wake()

    def on_wake(self) -> None:
        self.waker.clear()
        self.reload_if_requested()
        self.check_stop()

    def check_stop(self) -> None:
        if self.stopping and not self.stop_begun:
            self.begin_stop()

    def begin_stop(self) -> None:
        """Take the listener's backlog and close it; give the connections that
        wait for a next request `drain_seconds` for it (see
        `Engine.request_stop`). The loop ends when no connection is left.

        Discussion: the drain is one swap. From now on every wait for a next
        request is armed on `drain_timers` instead of the keep-alive queue,
        with no test on the keep-alive path; the connections idle right now
        are moved over here.
        """
        self.stop_begun = True
        self.pause_accepting()
        self.listening.clear()
        self.idle_timers = self.drain_timers
        for endpoint in self.endpoints:
            for sock, peer in accept_backlog(endpoint.sock):
                sock.setblocking(False)
                self.add_channel(sock, peer, endpoint)
        for channel in list(self.channels.values()):
            if channel.idle:
                channel.arm_idle()

    def shut_down(self) -> None:
        for channel in list(self.channels.values()):
            channel.close()
        self.epoll.close()
        self.waker.close()
