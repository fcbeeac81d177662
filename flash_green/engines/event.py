"""v5 - event: epoll owns all the waiting, a thread pool runs the app.

What changed from v4 (epoll)
    One method: `dispatch`. The loop, the per-connection state machine, the
    timers and the reading of requests are v4's, unchanged (both engines
    build on `_reactor`: its `Channel` and `Reactor` loop). But when a
    complete request has arrived, v4 ran the
    app on the loop thread; v5 takes the connection out of epoll and hands
    it to a pool thread (`--threads N`, default 8), which runs the app and
    sends the response as long as the socket takes it. The finished
    connection comes back to the loop (a queue plus a wake-up of the loop's
    Waker), which puts it back in epoll until its next request. This is
    Apache's event MPM (and gunicorn's gthread worker, which however keeps
    a thread through a slow write: see "Slow readers" below).

Why it is better
    v3 held a thread for a connection's whole life; v4 held none but let
    one blocking handler freeze everyone. v5 holds a thread exactly while a
    request is being *served*: idle keep-alive clients and slowloris clients
    trickling their headers cost the loop a few hundred bytes each and no
    thread, so 1,000 slow clients do not starve a normal one; a blocking
    handler (`/sleep`) stalls only its own pool thread.

Slow readers: asynchronous write completion
    A pool thread only runs app code: the app itself, and the pulling of
    its iterable's pieces. When a send leaves part of a piece over (the
    client reads slower than we write), the thread does not wait for the
    client: the rest of the piece, and the iterable, go back to the loop,
    which finishes the piece on EPOLLOUT among all the other sockets and
    then hands the iterable to a pool thread for the next piece (the app's
    iterator may block, so it never runs on the loop). Order is kept (one
    piece at a time) and so is back-pressure: a client that reads nothing
    pins one piece in memory, never the whole response, until --timeout
    without progress cuts it off. With blocking sends instead, 8 clients
    reading a large download at 1 KB/s held all 8 threads, and the server
    answered nothing else until they were done.

Rules that keep it correct
    Only the loop thread touches the epoll object and the connection table.
    A connection belongs to exactly one side at a time: the loop (READING
    in epoll for EPOLLIN, or WRITING for EPOLLOUT) or one pool thread
    (IN_POOL, out of epoll), so two requests of one connection never run at
    once and pipelined requests keep their order (the next one is parsed
    only when the previous response is out). The hand-back is a deque plus
    one wake-up per burst (a flag suppresses redundant writes to the pipe).

Request bodies: read whole, in the loop, before dispatch
    A slow upload then holds no pool thread, and `wsgi.input` never blocks.
    The bound is --max-body-size per request (413 beyond it, from the
    protocol core); the price is memory: a body lives in RAM while its
    request is served (waitress, which makes the same choice, spills large
    bodies to a temporary file; we do not).

What it costs per connection
    Idle: v4's ~0.7 KB. Busy: a pool thread (~28 KB RSS, 8 MB virtual stack)
    while the app runs and its pieces flow; a slow reader costs one piece
    and no thread. Per request: two epoll_ctl calls (out of epoll and
    back), a queue hand-off to a thread and a wake-up of the loop, so on
    tiny requests it is slower than v4 (a response the socket does not take
    at once adds a round trip loop -> pool per piece).

What it still gets wrong
    The GIL: the pool overlaps waiting, not Python CPU work (`/cpu` is
    still serial; add processes with --workers). More blocking handlers
    than threads queue behind each other. And the in-memory request bodies
    above.

TLS
    The handshake is v4's HANDSHAKING state, on the loop: its CPU (about
    a millisecond per RSA handshake) holds the loop, not a pool thread.
    The records of a response are encrypted where it is sent - on a pool
    thread, whose OpenSSL calls run without the GIL - and finished, if the
    socket was full, by the loop. A connection is still owned by one side
    at a time, so its SSL object is never used by two threads at once.

When to use it
    The default for blocking WSGI apps facing real clients: many
    keep-alive connections, some slow ones, handlers that wait on
    databases and upstream services.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from queue import SimpleQueue

from ..binds import Listener
from ..config import Config
from ..wsgi import WSGIContext, peer_name
from ._reactor import EPOLLIN, EPOLLOUT, HANDSHAKING, WRITING, Channel, Reactor, TLSHandshake
from ._tls import NonBlockingTLS
from .base import Capabilities

log = logging.getLogger("flash.engine.event")

DEFAULT_THREADS = 8
#: The state the reactor does not have: the connection is out of epoll, on a pool thread.
IN_POOL = HANDSHAKING + 1


class PooledChannel(Channel):
    """The reactor's state machine, with the app (and its iterable) on a pool thread.

    Who owns the connection, and where it is:

        READING   loop, in epoll (EPOLLIN)      reading the next request
        IN_POOL   one pool thread, out of epoll running the app, or pulling
                                                and sending its next pieces
        WRITING   loop, in epoll (EPOLLOUT)     finishing a piece the socket
                                                did not take
    """

    __slots__ = ("failed",)

    def __init__(self, engine: EventEngine, sock: socket.socket | NonBlockingTLS, peer,
                 wsgi: WSGIContext) -> None:
        super().__init__(engine, sock, peer, wsgi)
        self.failed = False

    def dispatch(self) -> None:
        """v5: leave epoll and go to the pool; the loop serves the others."""
        engine = self.engine
        self.disarm()
        engine.counters.requests += 1
        engine.epoll.unregister(self.fd)
        self.state = IN_POOL
        engine.jobs.put(self.respond_in_pool)

    # -- on a pool thread ----------------------------------------------------------

    def respond_in_pool(self) -> None:
        """Run the app, then write its response. What the app passes to
        `write()` is sent before `write()` returns (PEP 3333): that wait is
        the app's, on its pool thread."""
        sock = self.sock
        timeout = self.engine.config.timeout

        def write_now(data: bytes) -> None:
            send_all(sock, data, timeout)

        self.in_pool(lambda: iter(self.start_exchange(write_now).run()))

    def write_in_pool(self) -> None:
        """Go on pulling the response's pieces (the loop finished the last one)."""
        self.in_pool(lambda: self.pending)

    def in_pool(self, response: Callable[[], Iterator[bytes]]) -> None:
        """Pull pieces from the app's iterable and send them while the socket
        takes them whole; then give the connection back to the loop.

        Discussion: this is asynchronous write completion (Apache's event
        MPM). A send that leaves bytes over means the client reads slower
        than we write: instead of waiting here (which pinned the thread for
        the whole download, so 8 slow readers stopped an 8-thread pool), the
        rest of the piece goes to the loop, which finishes it on EPOLLOUT
        with every other socket, and gives the iterable back to the pool for
        the next piece (`on_writable`). The app's iterator may block, so it
        never runs on the loop. One piece at a time: a slow client pins one
        piece in memory, never the whole response.
        """
        try:
            pending = self.pending = response()
            send = self.sock.send
            for data in pending:
                try:
                    sent = send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                if sent < len(data):
                    self.out = memoryview(data)[sent:]
                    break
            else:
                self.pending = None
                close_iterable(pending)
        except OSError as exc:
            log.debug("response to %s aborted: %s", peer_name(self.peer), exc)
            self.abandon_in_pool()
        except Exception:
            log.exception("pool thread failed serving %s", peer_name(self.peer))
            self.abandon_in_pool()
        self.engine.hand_back(self)

    def abandon_in_pool(self) -> None:
        self.failed = True
        self.out = None
        pending, self.pending = self.pending, None
        close_iterable(pending)

    # -- back on the loop thread ---------------------------------------------------

    def resume(self) -> None:
        """The pool is done with the connection: it broke, the socket is full,
        or the response is out (then read the next request, or close)."""
        engine = self.engine
        if self.failed:
            self.exchange = None
            self.close()
        elif self.out is not None:
            self.state = WRITING
            engine.epoll.register(self.fd, EPOLLOUT)
            self.want_out = True
            self.arm_write()
        elif self.finish_response():
            engine.epoll.register(self.fd, EPOLLIN)
            self.advance()

    def on_writable(self) -> None:
        """EPOLLOUT: send the rest of the piece; once it is out, the next one
        is the app's to produce, on a pool thread."""
        if self.state != WRITING:
            super().on_writable()  # REJECTING: an error response of the loop's own
            return
        out = self.out
        try:
            sent = self.sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if sent < len(out):
            self.out = out[sent:]
            self.arm_write()  # progress: only a client that reads nothing is cut off
            return
        engine = self.engine
        self.out = None
        self.disarm()
        engine.epoll.unregister(self.fd)
        self.want_out = False
        self.state = IN_POOL
        engine.jobs.put(self.write_in_pool)

    def close_response(self) -> None:
        """A response cut off on the loop (write timeout, client gone): its
        iterable's close() is the app's code, so a pool thread runs it."""
        pending, self.pending = self.pending, None
        if getattr(pending, "close", None) is not None:
            self.engine.jobs.put(pending.close)


class PooledTLSChannel(TLSHandshake, PooledChannel):
    """The handshake on the loop (it only waits), then v5's channel. A pool
    thread encrypts what the app writes: the cipher's CPU is the pool's."""

    __slots__ = ()


def send_all(sock: socket.socket | NonBlockingTLS, data: bytes, timeout: float) -> None:
    """`sendall` for a non-blocking socket: poll only when it is full.

    The socket stays non-blocking for the loop's sake; a pool thread waits
    for room with its own poll() (never the loop's epoll), up to `timeout`
    seconds without progress.
    """
    view = data
    waiter = None
    while True:
        try:
            sent = sock.send(view)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == len(view):
            return
        view = memoryview(view)[sent:]
        if waiter is None:
            waiter = select.poll()
            waiter.register(sock, select.POLLOUT)
        if not waiter.poll(timeout * 1000):
            raise TimeoutError(f"client read nothing for {timeout} s")


def close_iterable(iterable) -> None:
    close = getattr(iterable, "close", None)
    if close is not None:
        close()


class EventEngine(Reactor):
    name = "event"
    summary = ("v5: epoll for waiting + a thread pool for handlers (Apache event, "
               "gunicorn gthread); idle and slow clients hold no thread")
    capabilities = Capabilities(concurrent=True, parallel=False, blocking_handler_stalls=False,
                                threads=True, bounds_connections=True)
    channel_class = PooledChannel
    tls_channel_class = PooledTLSChannel
    app_off_loop = True
    reload_refusal = ("requests run on many threads at once, and re-importing the app's "
                      "modules under them is not safe; with --workers N a HUP starts new "
                      "workers on the new code")

    def __init__(self, config: Config, app: Callable, listeners: Sequence[Listener]) -> None:
        super().__init__(config, app, listeners)
        self.jobs: SimpleQueue[Callable[[], None] | None] = SimpleQueue()
        self.finished: deque[PooledChannel] = deque()
        self.wake_pending = False
        self.pool = [threading.Thread(target=self.pool_worker, name=f"pool-{i}", daemon=True)
                     for i in range(config.threads or DEFAULT_THREADS)]

    def serve(self) -> None:
        for thread in self.pool:
            thread.start()
        try:
            super().serve()
        finally:
            for _ in self.pool:
                self.jobs.put(None)
            for thread in self.pool:
                thread.join(self.config.graceful_timeout)

    def pool_worker(self) -> None:
        """Run jobs: a channel's next step (`respond_in_pool`, `write_in_pool`,
        which hand it back), or the close() of an abandoned response."""
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:
                log.exception("pool job %r failed", job)

    def hand_back(self, channel: PooledChannel) -> None:
        """Pool thread -> loop thread. One pipe write per burst: the loop
        clears `wake_pending` before it drains, so nothing is missed."""
        self.finished.append(channel)
        if not self.wake_pending:
            self.wake_pending = True
            self.waker.wake()

    def stats(self) -> dict:
        """The engine's figures plus the pool: jobs waiting for a thread, threads busy."""
        snapshot = super().stats()
        queued = self.jobs.qsize()
        in_pool = sum(1 for channel in list(self.channels.values()) if channel.state == IN_POOL)
        snapshot["pool"] = {"threads": len(self.pool), "queued": queued,
                            "busy_threads": max(0, in_pool - queued - len(self.finished))}
        return snapshot

    def on_wake(self) -> None:
        self.waker.clear()
        self.wake_pending = False
        finished = self.finished
        while finished:
            finished.popleft().resume()
        self.check_stop()
