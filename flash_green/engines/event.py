"""v5 - event: epoll owns all the waiting, a thread pool runs the app.

What changed from v4 (epoll)
    One method: `dispatch`. The loop, the per-connection state machine, the
    timers and the reading of requests are v4's, unchanged (this module
    subclasses them). But when a complete request has arrived, v4 ran the
    app on the loop thread; v5 takes the connection out of epoll and hands
    it to a pool thread (`--threads N`, default 8), which runs the app and
    writes the response with blocking sends. The finished connection comes
    back to the loop (a queue plus a wake-up of the loop's Waker), which
    puts it back in epoll until its next request. This is Apache's event
    MPM and gunicorn's gthread worker.

Why it is better
    v3 held a thread for a connection's whole life; v4 held none but let
    one blocking handler freeze everyone. v5 holds a thread exactly while a
    request is being *served*: idle keep-alive clients and slowloris clients
    trickling their headers cost the loop a few hundred bytes each and no
    thread, so 1,000 slow clients do not starve a normal one; a blocking
    handler (`/sleep`) stalls only its own pool thread.

Rules that keep it correct
    Only the loop thread touches the epoll object and the connection table.
    A connection belongs to exactly one side at a time: the loop (READING,
    in epoll) or one pool thread (IN_POOL, out of epoll), so two requests of
    one connection never run at once and pipelined requests keep their
    order (the next one is parsed only when the previous response is out).
    The hand-back is a deque plus one wake-up per burst (a flag suppresses
    redundant writes to the pipe).

Request bodies: read whole, in the loop, before dispatch
    A slow upload then holds no pool thread, and `wsgi.input` never blocks.
    The bound is --max-body-size per request (413 beyond it, from the
    protocol core); the price is memory: a body lives in RAM while its
    request is served (waitress, which makes the same choice, spills large
    bodies to a temporary file; we do not).

What it costs per connection
    Idle: v4's ~0.7 KB. Busy: a pool thread (~28 KB RSS, 8 MB virtual stack)
    for the duration of one request. Per request: two epoll_ctl calls (out
    of epoll and back), a queue hand-off to a thread and a wake-up of the
    loop, so on tiny requests it is slower than v4.

What it still gets wrong
    The GIL: the pool overlaps waiting, not Python CPU work (`/cpu` is
    still serial; add processes with --workers). More blocking handlers
    than threads queue behind each other. A client that reads a big
    response slowly pins its pool thread while the blocking send waits
    (gthread does the same); v4's EPOLLOUT machine would not, but it would
    have to run the app's iterator on the loop thread. And the in-memory
    request bodies above.

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
from collections.abc import Callable
from queue import SimpleQueue

from ..config import Config
from .base import Capabilities
from .epoll import CLOSED, EPOLLIN, Channel, EpollEngine

log = logging.getLogger("flash.engine.event")

DEFAULT_THREADS = 8
#: The state v4 does not have: the connection is out of epoll, on a pool thread.
IN_POOL = CLOSED + 1


class PooledChannel(Channel):
    """v4's state machine, with the app moved to a pool thread."""

    __slots__ = ("failed",)

    def __init__(self, engine: EventEngine, sock: socket.socket, peer) -> None:
        super().__init__(engine, sock, peer)
        self.failed = False

    def dispatch(self) -> None:
        """v5: leave epoll and go to the pool; the loop serves the others."""
        engine = self.engine
        self.disarm()
        engine.counters.requests += 1
        engine.epoll.unregister(self.fd)
        self.state = IN_POOL
        engine.jobs.put(self)

    def serve_in_pool(self) -> None:
        """On a pool thread: run the app and send the response, blocking."""
        sock = self.sock
        timeout = self.engine.config.timeout

        def send(data: bytes) -> None:
            send_all(sock, data, timeout)

        chunks = self.start_exchange(send).run()
        try:
            for data in chunks:
                send(data)
        except OSError as exc:
            log.debug("response to %s aborted: %s", self.peer, exc)
            self.failed = True
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def resume(self) -> None:
        """Back on the loop thread: read the next request, or close."""
        if self.failed:
            self.exchange = None
            self.close()
            return
        if self.finish_response():
            self.engine.epoll.register(self.fd, EPOLLIN)
            self.advance()


def send_all(sock: socket.socket, data: bytes, timeout: float) -> None:
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


class EventEngine(EpollEngine):
    name = "event"
    summary = ("v5: epoll for waiting + a thread pool for handlers (Apache event, "
               "gunicorn gthread); idle and slow clients hold no thread")
    capabilities = Capabilities(concurrent=True, parallel=False, blocking_handler_stalls=False,
                                threads=True, bounds_connections=True)
    channel_class = PooledChannel

    def __init__(self, config: Config, app: Callable, listener: socket.socket) -> None:
        super().__init__(config, app, listener)
        self.jobs: SimpleQueue[PooledChannel | None] = SimpleQueue()
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
        while True:
            channel = self.jobs.get()
            if channel is None:
                return
            try:
                channel.serve_in_pool()
            except Exception:
                log.exception("pool thread failed serving %s", channel.peer)
                channel.failed = True
            self.hand_back(channel)

    def hand_back(self, channel: PooledChannel) -> None:
        """Pool thread -> loop thread. One pipe write per burst: the loop
        clears `wake_pending` before it drains, so nothing is missed."""
        self.finished.append(channel)
        if not self.wake_pending:
            self.wake_pending = True
            self.waker.wake()

    def stats(self) -> dict:
        """v4's figures plus the pool: jobs waiting for a thread, threads busy."""
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
