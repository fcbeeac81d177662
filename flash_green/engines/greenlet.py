"""greenlet: a greenlet per connection on a hand-written epoll hub.

The model
    One OS thread. Each connection runs the plain blocking connection loop
    (`_blocking.serve_connection`, the very function `sequential` and
    `threaded` run) in its own greenlet, over a `CooperativeSocket` whose
    `recv`/`sendall`/`accept` switch to the hub greenlet instead of
    blocking. The hub (`greenhub`: epoll, a timer heap, one waiter per fd)
    switches back when the fd is ready. Each listener has its acceptor
    greenlet, waiting on its own fd. Blocking-style code becomes concurrent
    without threads, generators or `async`: this is what gevent and eventlet
    do, with only the `greenlet` package underneath, so every step can be
    read.

What it costs per connection
    One greenlet: a small object plus the slice of stack it used, copied to
    the heap while it is switched out. An idle keep-alive connection costs
    about 11 KB of RSS here (gevent.pywsgi: 17 KB; a thread: its stack;
    comparisons/bench_green.py measures it). A switch is a stack copy: no
    system call, no kernel scheduler.

What breaks it
    Anything that blocks without going through the hub: `time.sleep`, a
    plain socket, a C driver doing its own I/O, CPU work. It stalls the one
    thread and so every connection (the suite asserts it with a handler that
    polls with `time.sleep`). The demo app's `/green/sleep` and
    `/green/upstream` use `greenhub.sleep` and `greenhub.create_connection`
    and cooperate; gevent and eventlet go further and monkey-patch the
    standard library so unmodified code cooperates. One core only: run it
    under `--workers N` for more.

TLS
    `CooperativeSocket.start_tls` wraps the connection in a
    `greenhub.CooperativeTLSSocket`: each call tries OpenSSL first and, on
    SSLWantReadError or SSLWantWriteError, waits in the hub for that
    direction - the blocking handshake of `serve_connection` becomes
    cooperative the way recv did. The crypto runs on the hub's thread
    (about a millisecond per handshake): the other greenlets wait for it.

When to use it
    To understand gevent and eventlet. In production use gevent, which has
    the same model with a C loop, DNS, SSL, monkey-patching and years of
    fixes.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Callable, Sequence

import greenhub

from .. import stats
from ..binds import Listener
from ..config import Config
from ._accept import AcceptBackoff
from ._blocking import serve_connection
from ._loop import LoopWatchdog
from .base import (
    HEARTBEAT_INTERVAL,
    BlockingServer,
    Capabilities,
    Endpoint,
    accept_backlog,
)

log = logging.getLogger("flash.engine.greenlet")


class GreenletEngine(BlockingServer):
    name = "greenlet"
    summary = "a greenlet per connection on our own epoll hub; blocking code, cooperative sockets"
    capabilities = Capabilities(concurrent=True, parallel=False, blocking_handler_stalls=True,
                                bounds_connections=True)

    def __init__(self, config: Config, app: Callable, listeners: Sequence[Listener]) -> None:
        super().__init__(config, app, listeners)
        self.hub: greenhub.Hub | None = None
        self._open = 0
        self._slot_free: greenhub.Event | None = None
        self._drained: greenhub.Event | None = None
        self._backlog_taken: greenhub.Event | None = None

    def serve(self) -> None:
        # Created here, not in __init__: under the supervisor this runs after
        # fork, so each worker owns its own epoll instance.
        watchdog = (LoopWatchdog(self.config.debug_blocking_ms, log)
                    if self.config.debug_blocking_ms else None)
        self.hub = hub = greenhub.Hub(stats.metered_poller(self, select.epoll(), watchdog))
        greenhub.install(hub)
        try:
            hub.run(self._main)
        finally:
            greenhub.install(None)
            hub.close()

    def _main(self) -> None:
        hub = self.hub
        self._slot_free = greenhub.Event(hub)
        self._drained = greenhub.Event(hub)
        self._backlog_taken = greenhub.Event(hub)
        listeners = [greenhub.CooperativeSocket(endpoint.sock, hub) for endpoint in self.endpoints]
        hub.spawn(self._close_on_stop, listeners)
        hub.spawn(self._beat)
        for listener, endpoint in zip(listeners, self.endpoints):
            hub.spawn(self._accept_until_stopped, listener, endpoint)
        # The connections may all be done before `_close_on_stop` ran: the
        # listeners' backlogs are still to be served.
        self._backlog_taken.wait()
        while self._open:
            self._drained.clear()  # set already if they were all done before it
            self._drained.wait()
        log.info("all connections finished")

    def _accept_until_stopped(self, listener: greenhub.CooperativeSocket, endpoint: Endpoint) -> None:
        """One listener's acceptor greenlet (one per listener: each waits on
        its own fd in the hub)."""
        limit = self.config.max_connections
        backoff = AcceptBackoff(log)
        while not self.stopping:
            while self._open >= limit and not self.stopping:
                self._slot_free.clear()
                self._slot_free.wait()
            try:
                sock, peer = listener.accept()
            except OSError as exc:
                if self.stopping:
                    return
                self.hub.sleep(backoff.failed(exc))
                continue
            backoff.accepted()
            self._open += 1
            self.hub.spawn(self._serve_one, sock, peer, endpoint)

    def _serve_one(self, sock: greenhub.CooperativeSocket, peer, endpoint: Endpoint) -> None:
        if endpoint.tls is not None:
            sock = sock.start_tls(endpoint.tls)
        try:
            serve_connection(sock, peer, self, endpoint)
        finally:
            self._open -= 1
            self._slot_free.set()
            if self._open == 0 and self.stopping:
                self._drained.set()

    def _close_on_stop(self, listeners: list[greenhub.CooperativeSocket]) -> None:
        """Wait on the Waker; on stop, take each listener's backlog and close
        it (its accept fails), and close idle connections after `drain_seconds`.

        The signal handler itself only sets a flag and writes to the Waker
        pipe: it may run inside any greenlet, so it must not switch.
        """
        while not self.stopping:
            self.hub.wait_readable(self.waker.rfd)
            self.waker.clear()
            self.reload_if_requested()
        for listener, endpoint in zip(listeners, self.endpoints):
            backlog = accept_backlog(endpoint.sock, close=False)
            listener.close()
            for sock, peer in backlog:
                self._open += 1
                self.hub.spawn(self._serve_one, greenhub.CooperativeSocket(sock, self.hub), peer, endpoint)
        self._slot_free.set()
        self._backlog_taken.set()
        self.hub.sleep(self.drain_seconds)
        self.close_idle()

    def schedule_reload(self) -> None:
        """`_close_on_stop` reloads when woken, in a greenlet of its own
        (the signal handler may run inside any greenlet)."""
        self.reload_requested = True
        self.waker.wake()

    def close_idle_later(self) -> None:
        """Done by `_close_on_stop` on the hub: `request_stop` may run in a
        signal handler inside any greenlet, where nothing may switch."""

    def _beat(self) -> None:
        """Heartbeat from a greenlet: it stops when something blocks the hub."""
        self.loop_heartbeat = True
        while not self.stopping:
            self.heartbeat()
            self.hub.sleep(HEARTBEAT_INTERVAL)

    def stats(self) -> dict:
        snapshot = super().stats()
        if self.hub is not None:
            snapshot["hub"] = vars(self.hub.stats).copy()
        return snapshot
