"""The epoll loop that v4 (epoll) and v5 (event) share: accept, wait, call back, time out.

Both engines are one thread waiting in `select.epoll` on every listener and
every connection at once, each connection an explicit state machine (a
`Channel`) whose callbacks advance it as far as they can without waiting
and then return to the loop. They differ in one decision, which each
engine's own module makes in `Channel.dispatch`: where the app runs -
inline, on this loop (`epoll`), or on a thread pool that hands the
connection back when it is done (`event`). Everything else is here.

The loop (`Reactor.run_loop`)
    Wait in epoll; for each ready fd call a connection's callback, accept a
    batch on a listener, or clear the Waker (a stop, a reload, pool threads
    handing connections back); at most once per `timer_tick`, expire the
    timers and beat. The states after READING (`_pump` reads requests) are
    WRITING (a piece the socket did not take waits for EPOLLOUT), REJECTING
    (an error response), LINGERING (half-closed, input dropped within the
    bounds of `_linger`), CLOSED and, on a TLS listener, HANDSHAKING before
    READING.

Timers: one deadline per connection, checked lazily
    Every wait a connection can be in - for its next request (--keep-alive,
    the short drain during a stop), the rest of a head (--header-timeout,
    absolute from its first byte), more body (--body-timeout), room to
    write (--timeout), the end of a linger - is one number on the Channel,
    `deadline`. Moving it later, as every keep-alive request does, only
    stores that number. The loop keeps a heap of (time, fd) entries, and a
    channel has at most one live entry (`due`): an entry is pushed only
    when a channel has none or its deadline moves earlier. When an entry
    comes due the loop looks at the channel: a deadline still ahead is
    pushed again for the rest, a past one times out, an entry whose channel
    closed (or re-armed earlier) is dropped. So a keep-alive connection
    costs one heap push per keep-alive period, not two queue operations per
    request (about 1 us each time; docs/hot-path.md), and a closed channel
    is not kept alive by its entry: a stale entry is two numbers until it
    surfaces, at most one per connection per --keep-alive.
    A head or body that runs out gets 408 (`_read_timeouts`); the
    --min-body-rate floor needs no timer: it is checked as body bytes
    arrive. During a graceful stop the wait for a next request becomes the
    short drain (`begin_stop`), so that a request already on its way is
    still answered.

Level- vs edge-triggered: level
    A callback reads at most 64 KB and returns, so one busy client cannot
    starve the others; level-triggered epoll simply reports the rest on the
    next pass. Edge-triggered would oblige us to drain every socket until
    EAGAIN on every event (an extra, failing recv per request, and the
    starvation we just avoided), or else lose wake-ups - and this machine
    deliberately leaves input unread while it writes. Interest changes
    (EPOLLIN <-> EPOLLOUT) are needed only when a write blocks, so the
    keep-alive hot path makes no epoll_ctl call at all.

Accepting
    Several listeners are several fds in the same epoll set, each mapped to
    its endpoint. A readable listener yields at most ACCEPT_BATCH
    connections per pass (a connection storm cannot starve the others). At
    --max-connections, or out of fds (`_accept.AcceptBackoff`), every
    listener leaves the epoll set until a connection closes or the back-off
    has passed: new clients wait in the listen backlog.

TLS: one more state, and the wait that goes both ways
    A connection of a TLS listener begins in HANDSHAKING (`TLSHandshake`):
    OpenSSL says SSLWantReadError (EPOLLIN: more of the client's flight)
    or SSLWantWriteError (EPOLLOUT: our flight did not fit the socket
    buffer), the interest is switched to match, --header-timeout bounds it
    as it bounds a head. Then the Channel is an ordinary one over a
    `NonBlockingTLS` socket, which turns OpenSSL's "want" into EAGAIN and
    hands over the bytes OpenSSL already decrypted (`pending()`: a level-
    triggered loop does not see them, and would wait for bytes that
    arrived).
"""

from __future__ import annotations

import heapq
import logging
import os
import select
import socket
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from .. import stats, tls
from ..binds import Listener
from ..config import Config
from ..http import HTTPError, render_error
from ..wsgi import Exchange, WSGIContext, input_from_pieces, peer_keys, peer_name
from ._accept import ACCEPT_BATCH, AcceptBackoff
from ._linger import LINGER_BYTES, LINGER_SECONDS
from ._loop import LoopWatchdog
from ._pump import READING, RequestPump
from ._tls import NonBlockingTLS
from .base import HEARTBEAT_INTERVAL, RECV_SIZE, Endpoint, Engine, Waker, accept_backlog

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT

# Channel states after READING (small ints: compared on every event).
WRITING, REJECTING, LINGERING, CLOSED, HANDSHAKING = range(READING + 1, READING + 6)


class Channel(RequestPump):
    """One connection's state machine, driven by the loop's callbacks.

    The engine's module subclasses it with `dispatch`: where the app runs.
    """

    __slots__ = ("engine", "sock", "fd", "peer", "wsgi", "conn", "state", "served", "body", "pace",
                 "exchange", "pending", "out", "want_out", "deadline", "due", "in_head", "linger_left")

    def __init__(self, engine: Reactor, sock: socket.socket | NonBlockingTLS, peer,
                 wsgi: WSGIContext) -> None:
        self.start_pump(engine, peer_keys(peer))
        self.sock = sock
        #: The static environ of the listener it came from.
        self.wsgi = wsgi
        self.fd = sock.fileno()
        #: The part of a piece the socket did not take yet.
        self.out: bytes | memoryview | None = None
        #: Registered for EPOLLOUT (a write is blocked) instead of EPOLLIN.
        self.want_out = False
        #: When the current wait runs out (monotonic); 0.0: nothing armed.
        self.deadline = 0.0
        #: The time of this channel's live entry in the engine's timer heap; 0.0: none.
        self.due = 0.0
        #: The deadline is the current head's (absolute: re-arming must not extend it).
        self.in_head = False
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
        self.engine.log.debug("connection from %s timed out in state %d", peer_name(self.peer), self.state)
        self.timed_out()

    # -- waiting for input (the hooks of RequestPump.wait_for_input) ---------------

    def arm_body(self) -> None:
        self.arm(self.engine.config.body_timeout)

    def arm_head(self) -> None:
        if not self.in_head:
            self.arm(self.engine.config.header_timeout)
            self.in_head = True

    def arm_idle(self) -> None:
        self.arm(self.engine.idle_timeout)

    def arm_write(self) -> None:
        """Bound the wait for room to write (--timeout, re-armed on progress)."""
        self.arm(self.engine.config.timeout)

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

    def start_exchange(self, send_now: Callable[[bytes], int | None]) -> Exchange:
        wsgi = self.wsgi
        body = input_from_pieces(self.body)
        self.body = None
        environ = wsgi.environ(self.peer, self.conn.request, body)
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
            if self.want_out:  # tested here: most responses never blocked (-440 instructions a request)
                self.watch_input()
            return True
        return False

    def wait_writable(self) -> None:
        """The socket is full: sleep until EPOLLOUT; each partial send re-arms
        the write timeout, so only a client that reads nothing is cut off."""
        if not self.want_out:
            self.engine.epoll.modify(self.fd, EPOLLOUT)
            self.want_out = True
        self.arm_write()

    def watch_input(self) -> None:
        if self.want_out:
            self.engine.epoll.modify(self.fd, EPOLLIN)
            self.want_out = False

    # -- bad input ----------------------------------------------------------------

    def reject(self, exc: HTTPError) -> None:
        """Answer the core's verdict, then linger and close."""
        engine = self.engine
        engine.counters.record_rejection(exc.status)
        engine.log.info("bad request from %s: %s %s", peer_name(self.peer), exc.status, exc.reason)
        self.disarm()
        self.state = REJECTING
        self.pending = iter((render_error(exc.status, exc.reason, engine.config.server_header),))
        self.flush()

    def linger(self) -> None:
        """Half-close, then read and drop what the client still sends (`_linger`):
        the LINGERING state, its input counted down by `drop_input`, on a timer."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.state = LINGERING
        self.pending = None
        self.linger_left = LINGER_BYTES
        self.watch_input()
        self.arm(LINGER_SECONDS)

    # -- timers and closing ---------------------------------------------------------

    def arm(self, seconds: float) -> None:
        """Bound the current wait by `seconds` from now (see "Timers" above)."""
        deadline = self.deadline = time.monotonic() + seconds
        self.in_head = False
        due = self.due
        if not due or deadline < due:
            self.due = deadline
            heapq.heappush(self.engine.timers, (deadline, self.fd))

    def disarm(self) -> None:
        """Nothing bounds the connection now (its heap entry is dropped when it surfaces)."""
        self.deadline = 0.0
        self.in_head = False

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
    event. --header-timeout bounds it, as it bounds a request head. Once
    done the channel is an ordinary one: `self.sock` is a `NonBlockingTLS`,
    so reading and writing go through the same code.
    """

    __slots__ = ()

    def begin_handshake(self) -> None:
        self.state = HANDSHAKING
        self.arm(self.engine.config.header_timeout)
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
            self.engine.log.info("TLS handshake with %s failed: %s", peer_name(self.peer), tls.handshake_failure(exc))
            self.close()
            return
        if wanted == EPOLLOUT:
            self.wait_writable_for_handshake()
        elif wanted:
            self.watch_input()
        else:
            self.state = READING
            self.watch_input()
            self.arm_idle()
            self.on_readable()  # a request may have come with the last of the handshake

    def wait_writable_for_handshake(self) -> None:
        if not self.want_out:
            self.engine.epoll.modify(self.fd, EPOLLOUT)
            self.want_out = True

    def on_timeout(self) -> None:
        if self.state == HANDSHAKING:
            self.engine.log.info("TLS handshake with %s failed: %s", peer_name(self.peer),
                                 tls.handshake_failure(TimeoutError()))
            self.close()
        else:
            super().on_timeout()


class Reactor(Engine):
    """The loop: accept, wait in epoll, run callbacks, expire timers, stop.

    A subclass names its `channel_class` (and `tls_channel_class`, the same
    with `TLSHandshake` in front): the `Channel` whose `dispatch` runs the app.
    """

    channel_class: ClassVar[type[Channel]]
    tls_channel_class: ClassVar[type[Channel]]

    def __init__(self, config: Config, app: Callable, listeners: Sequence[Listener]) -> None:
        super().__init__(config, app, listeners)
        self.log = logging.getLogger(f"flash.engine.{self.name}")
        # Counted and timed when --stats asks (loop iterations, time in epoll).
        self.epoll = stats.metered_poller(self, select.epoll())
        self.waker = Waker()
        self.channels: dict[int, Channel] = {}
        #: The listeners by fd, while they are open.
        self.listening: dict[int, Endpoint] = {e.sock.fileno(): e for e in self.endpoints}
        self.accepting = False
        self.accept_backoff = AcceptBackoff(self.log)
        #: When to try accepting again after accept() failed (out of fds).
        self.accept_retry_at = 0.0
        self.stop_begun = False
        #: (time, fd) of every channel's next look at its deadline (see "Timers").
        self.timers: list[tuple[float, int]] = []
        #: The wait for a next request: --keep-alive; the drain once a stop began.
        self.idle_timeout = config.keep_alive
        #: Look at the timers (and beat) at least this often. Every timeout
        #: is at least this long, so nothing armed after a look can fall due
        #: before the next one: most loop passes skip the timers entirely.
        self.timer_tick = min(HEARTBEAT_INTERVAL, config.keep_alive, config.header_timeout,
                              config.body_timeout, config.timeout, LINGER_SECONDS, self.drain_seconds)
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
        watchdog = (LoopWatchdog(self.config.debug_blocking_ms, self.log)
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
            if self.timers and self.timers[0][0] < due:
                due = self.timers[0][0]
            if self.accept_retry_at and self.accept_retry_at < due:
                due = self.accept_retry_at
            self.timers_due = due
        return max(0.0, self.timers_due - now)

    def expire_timers(self, now: float) -> None:
        """Look at each channel whose entry came due: time it out, or push it
        again for the rest of a deadline that moved later (see "Timers")."""
        timers = self.timers
        channels = self.channels
        while timers and timers[0][0] <= now:
            due, fd = heapq.heappop(timers)
            channel = channels.get(fd)
            if channel is None or channel.due != due:
                continue  # closed, or pushed again earlier: a stale entry
            deadline = channel.deadline
            if deadline > now:
                channel.due = deadline
                heapq.heappush(timers, (deadline, fd))
                continue
            channel.due = 0.0
            if deadline:
                channel.disarm()
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
            channel.arm_idle()
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
        """Signal-handler safe: the loop reloads when woken (`on_wake`),
        between two callbacks, where no app call runs on the loop."""
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
        request is bounded by `drain_seconds` instead of --keep-alive, with
        no test on the keep-alive path; the connections idle right now are
        re-armed here (an earlier deadline: a heap push each).
        """
        self.stop_begun = True
        self.pause_accepting()
        self.listening.clear()
        self.idle_timeout = self.drain_seconds
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
