"""pool: a fixed pool of threads in each process; `worker` (Apache worker MPM) is N of them.

The model
    `worker` is a composition of the registry (`flash_green.engines`):
    the supervisor (`flash_green.supervisor`) forks N processes
    (`--workers`, default 2), and each runs this engine. In each, the main
    thread runs the accept loop (one poll() over every listener) and a fixed pool of T threads (`--threads`,
    default 4) runs the blocking connection loop, one connection per thread,
    handed over through a queue. The accept loop accepts only while a pool
    thread is idle: when all T are busy it stops accepting, so new
    connections wait in the shared listen backlog, where another process
    with an idle thread picks them up. N x T connections are served at once;
    processes give parallelism, threads overlap waits.

What forking buys
    Parallelism past the GIL (N interpreters on N cores) and crash
    isolation: a process that dies takes only its T connections with it.
    Threads make a process cheap per connection: T connections share one
    interpreter and one copy of the app.

What it costs
    Per process: an interpreter and the app (no shared state between
    processes). Per connection: a pool thread (its stack, ~tens of KB
    touched) for the connection's whole life, idle keep-alive time included.
    Handlers inside one process share a GIL: CPU-bound work scales with N,
    not with T.

What breaks it
    More open connections than N x T: idle keep-alive clients and slow
    clients pin threads until `--keep-alive` / `--header-timeout` release
    them, and everyone else waits. That is why Apache grew the event MPM
    (v5 here): wait for idle connections in epoll, hand only ready requests
    to the pool. A stuck handler holds one thread until `--timeout`: the
    supervisor watches each call into the app (`flash_green.watchdog`), so
    the stuck request gets a 500 and its process is replaced.

TLS
    A pool thread does the handshake of the connection it serves, as on
    `threaded` (bounded by --header-timeout; OpenSSL releases the GIL).

When to use it
    Blocking, I/O-bound apps with a known client count, behind a proxy that
    absorbs slow clients: the classic Apache worker / gunicorn gthread setup
    (gthread keeps idle keep-alive connections in a selector instead).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Callable, Sequence
from typing import ClassVar

from ..binds import Listener
from ..config import Config
from ._blocking import serve_connection
from .base import HEARTBEAT_INTERVAL, BlockingServer, Capabilities, Endpoint

log = logging.getLogger("flash.engine.worker")


class PoolEngine(BlockingServer):
    """Each worker process of `worker` runs this: accept loop + a bounded thread pool."""

    name = "pool"
    #: Pool threads per process when --threads is not given.
    default_threads: ClassVar[int] = 4
    capabilities = Capabilities(concurrent=True, parallel=False, blocking_handler_stalls=False, threads=True)
    app_off_loop = True
    multithread = True

    def __init__(self, config: Config, app: Callable, listeners: Sequence[Listener]) -> None:
        super().__init__(config, app, listeners)
        self.pool_size = config.threads or self.default_threads
        self.handoff: queue.SimpleQueue[tuple[socket.socket, object, Endpoint] | None] = queue.SimpleQueue()
        self.idle_threads = threading.Semaphore(self.pool_size)

    def serve(self) -> None:
        pool = [threading.Thread(target=self.pool_thread, name=f"pool-{i}", daemon=True)
                for i in range(self.pool_size)]
        for thread in pool:
            thread.start()
        self.wait_for_idle_thread()  # False only if a stop came first: then no loop
        self.accept_loop(self.hand_over, adopt=self.queue_connection)
        for _ in pool:
            self.handoff.put(None)
        # In-flight requests finish; --graceful-timeout (armed by the signal
        # handler) bounds the wait.
        for thread in pool:
            thread.join()

    def hand_over(self, sock: socket.socket, peer, endpoint: Endpoint) -> None:
        """Give the connection to the idle thread we reserved, then reserve
        the next one before accepting again."""
        self.queue_connection(sock, peer, endpoint)
        self.wait_for_idle_thread()

    def queue_connection(self, sock: socket.socket, peer, endpoint: Endpoint) -> None:
        """A connection taken from the backlog at a stop: the next free thread serves it."""
        self.handoff.put((sock, peer, endpoint))

    def wait_for_idle_thread(self) -> bool:
        """Block the accept loop until a pool thread is free (False if stopping).

        While all threads are busy nothing is accepted here, and the backlog
        feeds the other processes. Beats while waiting: a full pool is busy,
        not stuck. The timeout lets a stop request through (a signal handler
        cannot safely release a semaphore the loop holds).
        """
        while not self.idle_threads.acquire(timeout=HEARTBEAT_INTERVAL):
            self.heartbeat()
            if self.stopping:
                return False
        return not self.stopping

    def stats(self) -> dict:
        """Each open connection holds one pool thread; accepted ones wait in the hand-off."""
        snapshot = super().stats()
        snapshot["pool"] = {"threads": self.pool_size, "queued": self.handoff.qsize(),
                            "busy_threads": self.counters.connections_open}
        return snapshot

    def pool_thread(self) -> None:
        while True:
            item = self.handoff.get()
            if item is None:
                return
            sock, peer, endpoint = item
            try:
                serve_connection(self.secured(sock, endpoint), peer, self, endpoint)
            except Exception:
                log.exception("pool thread failed on %s", peer)
            finally:
                self.idle_threads.release()
