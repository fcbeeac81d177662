"""gevent: a greenlet per connection on gevent's hub (libev/libuv in C).

The model
    The model of the `greenlet` engine, industrial strength: each connection
    runs the plain blocking connection loop (`serve_connection`, the same
    function `sequential` and `threaded` run) in a gevent greenlet, over a
    `gevent.socket` whose blocking calls switch to gevent's hub. The hub's
    loop is C (libev by default), its waits and timers are C watchers. A
    `gevent.pool.Pool` bounds the connections served at once
    (`--max-connections`): when it is full the accept loop waits for a slot
    and new clients wait in the listen backlog. Only the socket and the
    scheduler are gevent's; the HTTP core is ours (not gevent.pywsgi).
    Each listener has its acceptor greenlet.

    With `--patch`, `gevent.monkey.patch_all()` runs first thing in the
    process (`flash_green.patching`), so the app's own blocking calls -
    `time.sleep`, `socket.create_connection` in the demo's `/sleep` and
    `/upstream`, pure-Python database drivers - cooperate too.

What it costs per connection
    One gevent Greenlet (a greenlet plus gevent's bookkeeping) and its saved
    stack slice: about 13 KB of RSS per idle keep-alive connection here,
    against 17 KB for gevent.pywsgi (comparisons/bench_green.py).

What breaks it
    Without `--patch`, any blocking call the hub does not know (the suite's
    handler polls with `time.sleep`) stalls every connection; the
    capabilities say so, because the suite runs without `--patch`. With it,
    C extensions doing their own I/O and CPU-bound handlers still stall the
    one thread. Patching must happen before anything captures the originals
    (`from time import sleep`, a lock created at import).

TLS
    The context is a `gevent.ssl.SSLContext`, so each connection is
    gevent's SSL socket: its handshake, reads and writes wait in the hub
    for the direction OpenSSL asks (the handshake bounded by
    --header-timeout, as a blocking call of `serve_connection`). The
    crypto runs on the one thread: 0.7 ms of CPU per handshake, 42 us
    per keep-alive request (`python -m comparisons.bench_tls`).

When to use it
    Many concurrent, mostly waiting connections running existing blocking
    code (WSGI apps calling services and databases): gunicorn's gevent
    worker is this model. Use `--workers N` to use every core.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Sequence

import gevent
import gevent.pool
import gevent.socket
import gevent.ssl

from .. import patching, tls
from ..binds import Listener
from ..config import Config
from ._accept import AcceptBackoff
from ._blocking import serve_connection
from .base import HEARTBEAT_INTERVAL, BlockingServer, Capabilities, Endpoint, accept_backlog

log = logging.getLogger("flash.engine.gevent")


class OneSendFirst:
    """A gevent socket whose `sendall` tries one plain `send` first.

    gevent's own `sendall` asks the kernel for SO_SNDBUF (a `getsockopt`
    system call) and slices the data in Python on every call: about 6 us
    that a response of a few hundred bytes does not need, since one `send`
    takes it whole. Only what the socket did not take goes through gevent's
    `sendall` (which waits cooperatively). Everything else is the gevent
    socket's own bound method.
    """

    __slots__ = ("_sock", "close", "fileno", "recv", "send", "settimeout", "shutdown")

    def __init__(self, sock: gevent.socket.socket) -> None:
        self._sock = sock
        self.recv = sock.recv
        self.send = sock.send
        self.settimeout = sock.settimeout
        self.shutdown = sock.shutdown
        self.close = sock.close
        self.fileno = sock.fileno

    def sendall(self, data: bytes) -> None:
        sent = self.send(data)
        if sent < len(data):
            self._sock.sendall(memoryview(data)[sent:])


class GeventEngine(BlockingServer):
    name = "gevent"
    summary = "a gevent greenlet per connection, pool-bounded; --patch makes the app's blocking calls cooperate"
    capabilities = Capabilities(concurrent=True, parallel=False, blocking_handler_stalls=True,
                                bounds_connections=True)
    #: Its SSL sockets are gevent's: their waits switch to the hub.
    tls_context_class = gevent.ssl.SSLContext

    def __init__(self, config: Config, app: Callable, listeners: Sequence[Listener]) -> None:
        super().__init__(config, app, listeners)
        self._pool = gevent.pool.Pool(config.max_connections)
        self._adopting: gevent.Greenlet | None = None
        #: One acceptor greenlet per listener, once serving.
        self._acceptors: list[gevent.Greenlet] = []

    def run(self) -> None:
        if self.config.patch:
            patching.ensure_patched("gevent")
        super().run()

    def install_signal_handlers(self) -> None:
        # Signals go through the hub: the handler then runs in a greenlet of
        # its own, where it may close the listener (a plain signal handler
        # would run in whatever greenlet was interrupted).
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self._stop_on_signal, signum)
        gevent.signal_handler(signal.SIGQUIT, self.request_stop, False)
        if not self.supervised:
            gevent.signal_handler(signal.SIGHUP, self.request_reload)

    def schedule_reload(self) -> None:
        """Already in a greenlet of the hub's (the signal's): reload now."""
        self.reload_app()

    def _stop_on_signal(self, signum: int) -> None:
        self.stop_gracefully(f"received {signal.Signals(signum).name}")

    def request_stop(self, graceful: bool = True) -> None:
        """Runs in a greenlet (a signal through the hub, or the app's own
        greenlet at --max-requests), where it may take the backlog and close."""
        super().request_stop(graceful)
        if not self._acceptors or self._adopting is not None:
            return  # not serving yet, or the backlogs are taken already
        # Discussion: gevent closes a socket that a greenlet waits on only
        # a loop pass later; connections queued in between would be reset.
        # So the acceptors go first, and the close that follows each
        # backlog is immediate.
        for acceptor in self._acceptors:
            acceptor.kill()
        backlog = [(sock, peer, endpoint) for endpoint in self.endpoints
                   for sock, peer in accept_backlog(endpoint.sock)]
        self._adopting = gevent.spawn(self._adopt, backlog)

    def _adopt(self, backlog: list) -> None:
        """The connections taken from the backlogs at a stop: served like any
        other (a greenlet of its own: a full pool makes `spawn` wait)."""
        for sock, peer, endpoint in backlog:
            self._pool.spawn(self._serve, sock, peer, endpoint)

    def _serve(self, sock: gevent.socket.socket, peer, endpoint: Endpoint) -> None:
        """One connection, in its greenlet: over gevent's SSL socket for a TLS listener."""
        wrapped = OneSendFirst(sock) if endpoint.tls is None else tls.wrap(endpoint.tls, sock)
        serve_connection(wrapped, peer, self, endpoint)

    def close_idle_later(self) -> None:
        gevent.spawn_later(self.drain_seconds, self.close_idle)

    def _beat(self) -> None:
        """Heartbeat from a greenlet: it stops when something blocks the hub."""
        self.loop_heartbeat = True
        while not self.stopping:
            self.heartbeat()
            gevent.sleep(HEARTBEAT_INTERVAL)

    def serve(self) -> None:
        for endpoint in self.endpoints:
            plain = endpoint.sock
            endpoint.sock = gevent.socket.socket(plain.family, plain.type, fileno=plain.detach())
        gevent.spawn(self._beat)
        self._acceptors = [gevent.spawn(self._accept_until_stopped, endpoint)
                           for endpoint in self.endpoints]
        gevent.joinall(self._acceptors)
        if self._adopting is not None:
            self._adopting.join()
        self._pool.join()
        log.info("all connections finished")

    def _accept_until_stopped(self, endpoint: Endpoint) -> None:
        """One listener's acceptor greenlet (one per listener)."""
        backoff = AcceptBackoff(log)
        pool = self._pool
        while not self.stopping:
            try:
                sock, peer = endpoint.sock.accept()
            except OSError as exc:
                if self.stopping:
                    break
                gevent.sleep(backoff.failed(exc))
                continue
            backoff.accepted()
            # Blocks while the pool is full: the connection limit.
            pool.spawn(self._serve, sock, peer, endpoint)
