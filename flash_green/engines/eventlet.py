"""eventlet: a green thread per connection on eventlet's hub (pure Python).

The model
    Like `gevent`: each connection runs the plain blocking connection loop
    (`serve_connection`) in an eventlet green thread over an eventlet
    `GreenSocket`, whose blocking calls `trampoline` to the hub until the fd
    is ready. The hub is Python code around `select.epoll` - close to our
    own `greenhub`, which makes eventlet the easiest real hub to read. A
    `GreenPool` bounds the connections (`--max-connections`); each
    listener has its acceptor green thread. `--patch` runs
    `eventlet.monkey_patch()` first thing in the process, so the app's
    `time.sleep` and plain sockets cooperate.

    Eventlet is in maintenance mode: upstream discourages new projects and
    points to asyncio, and gunicorn removed its eventlet worker in 26.0. The
    engine says so once at start-up, and still serves (for the comparison).

What it costs per connection
    One green thread (a greenlet plus eventlet's bookkeeping) and its saved
    stack: about 12 KB of RSS per idle keep-alive connection here, against
    30 KB for eventlet.wsgi (comparisons/bench_green.py). Each switch costs
    more than gevent's, whose loop is C.

What breaks it
    What breaks every hub: without `--patch` any blocking call stalls every
    connection (the suite runs it so and asserts it); with it, C extensions
    doing their own I/O and CPU work still do. Patching late (after the app
    imported `socket` or `threading`) leaves blocking originals behind.

TLS
    The context is eventlet's `GreenSSLContext`: each connection is a
    `GreenSSLSocket`, whose handshake, reads and writes trampoline to the
    hub in the direction OpenSSL asks. The crypto runs on the one thread.

When to use it
    In existing eventlet deployments (OpenStack services). For new code,
    gevent for green threads or asyncio for coroutines.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Sequence

from .. import patching
from ..binds import Listener
from ..config import Config
from ._accept import AcceptBackoff
from ._blocking import serve_connection
from .base import HEARTBEAT_INTERVAL, BlockingServer, Capabilities, Endpoint, accept_backlog

eventlet = patching.import_eventlet()
from eventlet import greenio, hubs
from eventlet.green import ssl as green_ssl

log = logging.getLogger("flash.engine.eventlet")

DEPRECATION_NOTICE = (
    "eventlet is in maintenance mode and discouraged for new projects by its "
    "maintainers (gunicorn 26.0 dropped its eventlet worker); prefer gevent or asyncio"
)


class EventletEngine(BlockingServer):
    name = "eventlet"
    summary = "an eventlet green thread per connection (maintenance mode upstream); --patch to cooperate"
    capabilities = Capabilities(concurrent=True, parallel=False, blocking_handler_stalls=True,
                                bounds_connections=True)
    #: Its SSL sockets are eventlet's: their waits trampoline to the hub.
    tls_context_class = green_ssl.GreenSSLContext

    def __init__(self, config: Config, app: Callable, listeners: Sequence[Listener]) -> None:
        super().__init__(config, app, listeners)
        self._signals: list[int] = []

    @classmethod
    def validate(cls, config: Config) -> None:
        super().validate(config)
        # validate() runs once in the starting process, before any fork: the
        # notice is printed once, not once per worker.
        log.warning(DEPRECATION_NOTICE)

    def run(self) -> None:
        if self.config.patch:
            patching.ensure_patched("eventlet")
        super().run()

    def install_signal_handlers(self) -> None:
        """Signals become work for a green thread, never work in the hub.

        A Python signal handler runs where the interpreter happens to be -
        usually inside the hub's `epoll.poll` - and the hub must not block or
        switch (eventlet's patched `os.write` would do both). So the handler
        only queues the signal number and raises the `stopping` flag (so a
        request read before `_handle_signals` runs already says Connection:
        close); `set_wakeup_fd` makes the C-level handler write to the Waker
        pipe, which wakes `_handle_signals`.
        """
        signal.set_wakeup_fd(self.waker.wfd)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(signum, self._queue_signal)
        if not self.supervised:
            signal.signal(signal.SIGHUP, self._queue_signal)

    def _queue_signal(self, signum: int, frame) -> None:
        if signum != signal.SIGHUP:
            self.stopping = True
        self._signals.append(signum)

    def schedule_reload(self) -> None:
        """Already in the signal green thread: reload now."""
        self.reload_app()

    def serve(self) -> None:
        listeners = [greenio.GreenSocket(endpoint.sock) for endpoint in self.endpoints]
        pool = eventlet.GreenPool(self.config.max_connections)
        acceptors = [eventlet.spawn(self._accept_until_stopped, listener, endpoint, pool)
                     for listener, endpoint in zip(listeners, self.endpoints)]
        eventlet.spawn_n(self._beat)
        self._handle_signals()
        # Eventlet does not wake a green thread waiting on a socket that gets
        # closed (its hub's notify_close is a no-op): kill the acceptors instead.
        for acceptor in acceptors:
            acceptor.kill()
        for listener, endpoint in zip(listeners, self.endpoints):
            backlog = accept_backlog(endpoint.sock, close=False)
            listener.close()
            for sock, peer in backlog:
                pool.spawn_n(self._serve, greenio.GreenSocket(sock), peer, endpoint)
        pool.waitall()
        log.info("all connections finished")

    def _serve(self, sock: greenio.GreenSocket, peer, endpoint: Endpoint) -> None:
        """One connection, in its green thread (over eventlet's SSL socket for TLS)."""
        serve_connection(self.secured(sock, endpoint), peer, self, endpoint)

    def _beat(self) -> None:
        """Heartbeat from a green thread: it stops when something blocks the hub."""
        self.loop_heartbeat = True
        while not self.stopping:
            self.heartbeat()
            eventlet.sleep(HEARTBEAT_INTERVAL)

    def _accept_until_stopped(self, listener, endpoint: Endpoint, pool) -> None:
        """One listener's acceptor green thread (one per listener)."""
        backoff = AcceptBackoff(log)
        while not self.stopping:
            try:
                sock, peer = listener.accept()
            except OSError as exc:
                eventlet.sleep(backoff.failed(exc))
                continue
            backoff.accepted()
            # Blocks while the pool is full: the connection limit.
            pool.spawn_n(self._serve, sock, peer, endpoint)

    def _handle_signals(self) -> None:
        """Act on the queued signals, waiting on the Waker, until a stop."""
        while True:
            while self._signals:
                signum = self._signals.pop(0)
                if signum == signal.SIGHUP:
                    self.request_reload()
                    continue
                if signum == signal.SIGQUIT:
                    self.request_stop(graceful=False)
                self.stop_gracefully(f"received {signal.Signals(signum).name}")
            if self.stopping:
                return
            hubs.trampoline(self.waker.rfd, read=True)
            # One read, not Waker.clear(): its read-until-EAGAIN loop would
            # park forever in eventlet's patched os.read.
            os.read(self.waker.rfd, 4096)

    def close_idle_later(self) -> None:
        eventlet.spawn_after(self.drain_seconds, self.close_idle)
