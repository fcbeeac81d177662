"""What every engine shares: its description, counters, and stopping.

An engine is one concurrency model. It receives its already-bound listening
sockets (from the runner, or inherited from the supervisor after fork), a
`Config` and a WSGI app, and serves until asked to stop. It never parses HTTP
or builds an environ itself: that is `flash_green.http` and `flash_green.wsgi`.

Several listeners: each is an `Endpoint` - its socket, the static environ of
the requests that arrive on it (SERVER_NAME, SERVER_PORT, `wsgi.url_scheme`,
whether its peers are trusted proxies) and, for a TLS listener, the SSL
context. Every engine waits on all of them at once in its own way, and
serves each connection with the endpoint it came from.
"""

from __future__ import annotations

import logging
import os
import random
import select
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar

from .. import proxy, stats, tls, tracing
from ..binds import Listener, server_address
from ..colour import TASKLET, app_colour
from ..config import Config
from ..http import ServerConnection
from ..loader import AppLoadError, load_app
from ..logfiles import reopen_log_files
from ..wsgi import WSGIContext
from ._accept import AcceptBackoff

log = logging.getLogger("flash.engine")

#: Longest a healthy engine loop goes without calling `Engine.heartbeat()`
#: (seconds). The supervisor kills a worker silent for `--timeout`.
HEARTBEAT_INTERVAL = 1.0

#: The most bytes one read takes from a socket, on every engine: a callback
#: or tasklet reads this much at most and lets the others run.
RECV_SIZE = 65536
#: The signals an engine handles once it runs (`Engine.run`): the stops
#: (graceful: TERM, INT; at once: QUIT), USR1's log reopening and USR2's dump. A supervised worker
#: is forked with them blocked, so one sent while it boots waits for them.
ENGINE_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2})
#: During a graceful stop, how long a keep-alive connection waiting for its
#: next request is kept (seconds; --keep-alive if that is shorter). See
#: `Engine.request_stop`.
STOP_DRAIN_SECONDS = 1.0


@dataclass(frozen=True)
class Capabilities:
    """What a model can and cannot do; the cross-engine suite reads this."""

    #: Serves several clients at once (a slow client does not block others).
    concurrent: bool
    #: Runs handlers truly in parallel on several cores (processes).
    parallel: bool
    #: A blocking handler (time.sleep) stalls every other client.
    blocking_handler_stalls: bool
    #: Accepts --threads N.
    threads: bool = False
    #: Forks per request (each request pays a process start).
    fork_per_request: bool = False
    #: Runs under the supervisor by nature (a composition: prefork, worker).
    multiprocess: bool = False
    #: Honours --max-connections: at the bound it stops accepting, and new
    #: clients wait in the listen backlog (per process under --workers).
    bounds_connections: bool = False

    def supervised(self, workers: int) -> Capabilities:
        """What `workers` processes of this model can do together (a
        composition of the registry, or any engine with --workers N).

        Each process still behaves as its model does, but with two or more a
        second client is served by another process: a slow client or a blocking
        handler holds only its own worker (up to N - 1 of them at once).
        """
        several = workers >= 2
        return replace(
            self, concurrent=self.concurrent or several, parallel=True,
            blocking_handler_stalls=self.blocking_handler_stalls and not several,
            multiprocess=True,
        )


@dataclass
class Counters:
    """Live counters of one engine process (`--stats`)."""

    connections_total: int = 0
    connections_open: int = 0
    requests: int = 0
    bytes_sent: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    started: float = field(default_factory=time.time)

    def record_response(self, sent: int, status: int) -> None:
        """Account for one answered request (after its last byte was sent)."""
        self.bytes_sent += sent
        if status >= 400:
            if status >= 500:
                self.errors_5xx += 1
            else:
                self.errors_4xx += 1

    def record_rejection(self, status: int) -> None:
        """Account for a request the protocol core refused (HTTPError)."""
        if status < 500:
            self.errors_4xx += 1

    def snapshot(self) -> dict:
        return asdict(self)


class LimitedCounters(Counters):
    """`Counters` whose request count calls `on_limit` once it reaches `limit`
    (--max-requests).

    Discussion: every engine already counts each request the moment it is
    read (`counters.requests += 1`), before the app runs. Checking the
    limit right there makes it exact - the request that reaches it already
    sees the stop begun and says `Connection: close` - at no cost without
    --max-requests (these counters are only swapped in with it) and one
    comparison with it. A check in the once-a-second heartbeat let an event
    loop serve hundreds more.
    """

    def __init__(self, limit: int, on_limit: Callable[[], None]) -> None:
        self.limit = limit
        self.on_limit = on_limit
        self._requests = 0
        super().__init__()

    @property
    def requests(self) -> int:
        return self._requests

    @requests.setter
    def requests(self, value: int) -> None:
        self._requests = value
        if value == self.limit:
            self.on_limit()


@dataclass(eq=False)
class Endpoint:
    """One listener as an engine serves it."""

    sock: socket.socket
    #: The static environ of its requests (`WSGIContext.for_listener`).
    wsgi: WSGIContext
    #: The TLS context of a TLS listener (a green one on gevent/eventlet);
    #: None for plain HTTP.
    tls: ssl.SSLContext | None = None


class Engine:
    """Base class: one subclass per concurrency model (gunicorn's workers)."""

    name: ClassVar[str] = ""
    #: One line for `flash_green engines`.
    summary: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities]
    #: Worker processes when --workers is not given: a composition's own
    #: count (`flash_green.engines.Supervised`); 0 runs in the serving process.
    processes: ClassVar[int] = 0
    #: `--trace-requests`: told of every answered request (`flash_green.tracing`); None when off.
    tracer: tracing.Tracer | None = None
    #: The protocol state of each connection (a `TracedConnection` when tracing).
    connection_class: type[ServerConnection] = ServerConnection

    #: The SSLContext class this model's sockets need (gevent's and eventlet's
    #: make green SSL sockets).
    tls_context_class: ClassVar[type[ssl.SSLContext]] = ssl.SSLContext
    #: Requests run on several threads at once (PEP 3333 wsgi.multithread).
    multithread: ClassVar[bool] = False

    def __init__(self, config: Config, app: Callable, listeners: Sequence[Listener]) -> None:
        if not listeners:
            raise ValueError("an engine needs at least one listener")
        self.config = config
        self.app = app
        self.counters = Counters()
        self.stopping = False
        #: A HUP asked for `reload_app` (engines that schedule it by flag).
        self.reload_requested = False
        #: Set by an engine whose own loop calls `heartbeat()` at least every
        #: HEARTBEAT_INTERVAL. Until then the supervisor beats from a thread,
        #: which cannot notice a stuck single-threaded loop.
        self.loop_heartbeat = False
        context = (tls.server_context(config, self.tls_context_class)
                   if any(listener.tls for listener in listeners) else None)
        self.endpoints: list[Endpoint] = []
        for listener in listeners:
            first = self.endpoints[0].wsgi if self.endpoints else None
            wsgi = self.wsgi_context(listener.sock, listener.tls, first)
            self.endpoints.append(Endpoint(listener.sock, wsgi, context if listener.tls else None))
        #: The first listener's context: the others read the app from it.
        self.wsgi = self.endpoints[0].wsgi

    def wsgi_context(self, sock: socket.socket, secure: bool, first: WSGIContext | None) -> WSGIContext:
        """The static environ of requests that arrive on `sock` (one per listener)."""
        config = self.config
        server_name, server_port = server_address(sock)
        scheme = "https" if secure else "http"
        front = proxy.front_for(sock.family, config.forwarded_allow_ips)
        if first is not None:
            return first.for_listener(server_name, server_port, scheme, front)
        return WSGIContext(
            self.app, server_name, server_port,
            server_header=config.server_header,
            multithread=self.multithread or self.capabilities.threads,
            multiprocess=config.workers > 0 or self.capabilities.multiprocess,
            access_log=logging.getLogger("flash.access") if config.access_log else None,
            front=front, url_scheme=scheme,
        )

    #: The app runs on other threads than the loop that calls `heartbeat()`,
    #: so a stuck request does not silence it: under the supervisor, --timeout
    #: then watches each call into the app (`flash_green.watchdog`).
    app_off_loop: ClassVar[bool] = False

    #: Why a HUP without --workers cannot reload the app in place in this
    #: model (None: it can, see `reload_app`). Under --workers the master
    #: always can: its new workers import the new code.
    reload_refusal: ClassVar[str | None] = None

    #: The kinds of app this model can run besides plain WSGI (colours of
    #: `flash_green.colour`: TASKLET, ASYNC). See `refuse_app`.
    app_colours: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def refuse_app(cls, app: Callable) -> str | None:
        """Why this model cannot run `app` (its function colour), or None."""
        colour = app_colour(app)
        if colour is None or colour in cls.app_colours:
            return None
        runs_it = "tasklets" if colour == TASKLET else "asyncio"
        kind = "a tasklet handler (a generator)" if colour == TASKLET else "an async app (async def)"
        return f"the app is {kind}; only --engine {runs_it} can run it"

    @classmethod
    def validate(cls, config: Config) -> None:
        """Refuse options this model cannot honour, with a clear message."""
        if config.threads and not cls.capabilities.threads:
            raise ValueError(f"engine {cls.name!r} does not use a thread pool: drop --threads")
        tls.check(config)

    def run(self) -> None:
        """Install stop signals, --trace-requests and --stats, then serve until stopped."""
        self.install_signal_handlers()
        # Every model alike: it only swaps file objects (`flash_green.logfiles`).
        signal.signal(signal.SIGUSR1, lambda signum, frame: reopen_log_files())
        if self.config.max_requests:
            self.limit_requests()
        tracer = tracing.install(self)
        monitor = stats.install(self)
        # A supervised worker is forked with them blocked: one sent while it
        # booted waited for the handlers above, instead of killing it.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, ENGINE_SIGNALS)
        try:
            self.serve()
        finally:
            monitor.close()
            if tracer is not None:
                tracer.close()

    def serve(self) -> None:
        raise NotImplementedError

    def limit_requests(self) -> None:
        """--max-requests N (+ up to --max-requests-jitter): after the Nth
        request, stop gracefully - the requests in flight are answered, the
        Nth and later ones with `Connection: close`. A supervised worker is
        then replaced by its master (gunicorn's recycling); a server without
        --workers exits 0, for its process manager to restart (systemd
        `Restart=always`; uvicorn's --limit-max-requests does the same)."""
        config = self.config
        limit = config.max_requests + random.randint(0, config.max_requests_jitter)
        supervised = config.workers > 0 or self.capabilities.multiprocess
        then = "recycling this worker" if supervised else "exiting for a restart"

        def reached() -> None:
            self.stop_gracefully(f"served {limit} requests (--max-requests): {then}")

        self.counters = LimitedCounters(limit, reached)

    def heartbeat(self) -> None:
        """Proof of life for the supervisor: call it from the engine's loop.

        A no-op outside the supervisor, which replaces it per worker. It must
        be called by the code that would stop if the worker got stuck (the
        accept loop, each request), never from a helper thread.
        """

    def request_stop(self, graceful: bool = True) -> None:
        """Stop accepting; let in-flight requests finish (graceful) or not.

        A graceful stop loses no request that reached the server, in every
        engine, in this order:

        1. The listener is closed once the connections the kernel already
           queued on it are accepted (`accept_backlog`): a new client is
           refused from then on, one that had connected is served.
        2. Every request the engine read, or that is already waiting in a
           connection's socket buffer, is answered; a response that begins
           after the stop says `Connection: close`.
        3. A connection waiting for its next request, or whose last response
           (begun before the stop) promised keep-alive, is given
           `drain_seconds` for it: a request already on its way is answered
           (with `Connection: close`) instead of meeting a closed socket.
           Then it is closed, as a keep-alive timeout would close it.

        The engine exits when no connection is left, or at --graceful-timeout.
        Called from a signal handler in the main thread, and from the
        engine's own code (`stop_gracefully`): it must only set flags and
        wake the loop, which does the rest.
        """
        raise NotImplementedError

    @property
    def drain_seconds(self) -> float:
        """How long a stop waits for a keep-alive connection's next request."""
        return min(self.config.keep_alive, STOP_DRAIN_SECONDS)

    def stop_gracefully(self, why: str) -> None:
        """Begin a graceful stop, bounded by --graceful-timeout (a stop signal,
        or --max-requests reached)."""
        log.info("%s, stopping gracefully", why)
        self.request_stop(graceful=True)
        self._arm_graceful_deadline()

    def install_signal_handlers(self) -> None:
        def on_signal(signum, frame):
            self.stop_gracefully(f"received {signal.Signals(signum).name}")

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGQUIT, lambda s, f: self.request_stop(graceful=False))
        if not self.supervised:  # a worker leaves HUP to its master
            signal.signal(signal.SIGHUP, lambda s, f: self.request_reload())

    @property
    def supervised(self) -> bool:
        """Runs as a worker under the supervisor (which owns HUP, TTIN...)."""
        return self.config.workers > 0 or self.capabilities.multiprocess

    # -- HUP without --workers ----------------------------------------------------

    def request_reload(self) -> None:
        """HUP without --workers: reload the app where the model can, else say
        why not and go on serving. Signal-handler safe, as `request_stop`."""
        if self.reload_refusal:
            log.warning("HUP ignored without --workers: %s", self.reload_refusal)
            return
        self.schedule_reload()

    def schedule_reload(self) -> None:
        """Have the engine's loop call `reload_app` at a point where no plain
        WSGI call is running (between two requests)."""
        raise NotImplementedError

    def reload_if_requested(self) -> None:
        """For the loops that `schedule_reload` by flag and Waker."""
        if self.reload_requested:
            self.reload_requested = False
            self.reload_app()

    def reload_app(self) -> None:
        """Import the app anew and serve it from the next request on.

        The app's package (its top-level package: the modules that are the
        app's own code) is dropped from `sys.modules` and imported again;
        libraries stay as they are. Requests in flight finish with the code
        they started with. An app that does not load now - a syntax error, a
        failing import - is logged, and the previous one goes on serving.
        """
        spec = self.config.app
        log.info("HUP: reloading %s", spec)
        previous = forget_app_modules(spec)
        try:
            app = load_app(spec, self.config.factory)
            refusal = self.refuse_app(app)
            if refusal:
                raise AppLoadError(refusal)
        except AppLoadError as exc:
            forget_app_modules(spec)
            sys.modules.update(previous)
            log.error("HUP: %s; still serving the previous app", exc)
            return
        self.use_app(app)
        log.info("HUP: serving the reloaded %s", spec)

    def use_app(self, app: Callable) -> None:
        """Serve `app` from the next request on (traced, with the stats
        endpoint in front, as at start-up)."""
        if self.tracer is not None:
            app = self.tracer.wrap_app(app)
        self.app = self.wsgi.app = app
        if self.config.stats_path:
            stats.add_endpoint(self)

    def _arm_graceful_deadline(self) -> None:
        """After --graceful-timeout, whatever is still running is cut off."""
        def expire():
            log.warning("graceful timeout (%ss) expired; exiting", self.config.graceful_timeout)
            os._exit(0)

        timer = threading.Timer(self.config.graceful_timeout, expire)
        timer.daemon = True
        timer.start()

    def stats(self) -> dict:
        """Counters for `--stats`; engines add their scheduler's own numbers."""
        return self.counters.snapshot()


def forget_app_modules(spec: str) -> dict[str, object]:
    """Drop the app's own modules from `sys.modules`; return what was dropped.

    The app's own code is its top-level package (`myapp` for `myapp.wsgi:app`)
    - or, for an app shipped inside flash_green, only its own module and
    submodules, never the server's.
    """
    module = spec.partition(":")[0]
    scope = module if module.startswith("flash_green.") else module.split(".")[0]
    names = [name for name in sys.modules if name == scope or name.startswith(scope + ".")]
    return {name: sys.modules.pop(name) for name in names}


def accept_backlog(listener: socket.socket, close: bool = True) -> list[tuple[socket.socket, object]]:
    """Accept every connection the kernel already queued on `listener`, then
    close it (unless the caller's event loop must close it itself).

    Closing a listening socket resets the connections still in its accept
    queue - clients that connected, sent a request, and would read a reset.
    So a stop takes them first (they are served like any other, with
    `Connection: close`) and closes the listener at once after, which
    refuses every later client. Only a handshake that completes between the
    last accept and the close is still reset: a window of two system calls.

    Under the supervisor the listening socket is shared: this closes only
    this process's descriptor (the kernel keeps the socket while the master
    or a new worker holds it, as after a HUP). The sockets come back
    blocking, as `accept` returns them.
    """
    accepted = []
    if listener.fileno() < 0:
        return accepted
    listener.setblocking(False)
    while True:
        try:
            sock, peer = listener.accept()
        except OSError:
            break  # EAGAIN: the queue is empty (or accept failed: nothing more to take)
        accepted.append((sock, peer))
    if close:
        listener.close()
    return accepted


class Waker:
    """A self-pipe: lets a signal handler or another thread wake a poll loop."""

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        try:
            os.write(self.wfd, b"x")
        except BlockingIOError:
            pass

    def clear(self) -> None:
        try:
            while os.read(self.rfd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.rfd)
        os.close(self.wfd)


class BlockingServer(Engine):
    """Base of the models whose connection code is plain blocking code.

    The accept loop waits on every listener and a Waker together, in one
    poll(), so a stop request wakes it at once; it then takes each
    listener's backlog and closes it (`accept_backlog`). Connections
    between two requests are "idle": `drain_seconds` after the stop, those
    still idle are shut down for reading, which ends their blocked recv
    (one that became idle after the stop waits at most `drain_seconds`
    itself, see `serve_connection`); busy ones finish their request first.
    """

    def __init__(self, config: Config, app: Callable, listeners: Sequence[Listener]) -> None:
        super().__init__(config, app, listeners)
        self.waker = Waker()
        self.idle: set[socket.socket] = set()
        self.idle_lock = threading.Lock()

    def accept_loop(self, handle: Callable[[socket.socket, object, Endpoint], None],
                    adopt: Callable[[socket.socket, object, Endpoint], None] | None = None) -> None:
        """Accept and `handle` each connection until a stop; then `adopt` (by
        default `handle`) each connection left in the listeners' backlogs.

        One poll() over every listener: a connection is handed on with the
        endpoint it came from. Out of fds, the back-off pauses them all (the
        shortage is the process's, not one listener's).
        """
        by_fd = {endpoint.sock.fileno(): endpoint for endpoint in self.endpoints}
        poller = select.poll()
        for fd, endpoint in by_fd.items():
            endpoint.sock.setblocking(False)
            poller.register(fd, select.POLLIN)
        poller.register(self.waker.rfd, select.POLLIN)
        self.loop_heartbeat = True
        wait_ms = HEARTBEAT_INTERVAL * 1000
        backoff = AcceptBackoff(log)
        while not self.stopping:
            self.heartbeat()
            for fd, _ in poller.poll(wait_ms):
                if fd == self.waker.rfd:
                    self.waker.clear()
                    self.reload_if_requested()
                    continue
                endpoint = by_fd[fd]
                try:
                    sock, peer = endpoint.sock.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    self.sleep_unless_stopped(backoff.failed(exc))
                    continue
                backoff.accepted()
                sock.setblocking(True)
                handle(sock, peer, endpoint)
        for endpoint in self.endpoints:
            for sock, peer in accept_backlog(endpoint.sock):
                sock.setblocking(True)
                (adopt or handle)(sock, peer, endpoint)

    @staticmethod
    def secured(sock: socket.socket, endpoint: Endpoint):
        """`sock` as its listener serves it: in TLS (the handshake is
        `serve_connection`'s first step) or as it is."""
        return sock if endpoint.tls is None else tls.wrap(endpoint.tls, sock)

    def sleep_unless_stopped(self, seconds: float) -> None:
        """Sleep `seconds` (an accept pause), or less if a stop is requested."""
        if seconds > 0:
            waker = select.poll()
            waker.register(self.waker.rfd, select.POLLIN)
            waker.poll(seconds * 1000)

    def request_stop(self, graceful: bool = True) -> None:
        self.stopping = True
        self.waker.wake()
        if not graceful:
            os._exit(0)
        self.close_idle_later()

    def schedule_reload(self) -> None:
        """The accept loop reloads when woken: between connections (v1 serves
        one at a time, so after the current one)."""
        self.reload_requested = True
        self.waker.wake()

    def close_idle_later(self) -> None:
        """After `drain_seconds`, shut down the connections still idle.

        A timer thread here; the hub engines schedule `close_idle` on their
        hub instead (their sockets belong to it).
        """
        timer = threading.Timer(self.drain_seconds, self.close_idle)
        timer.daemon = True
        timer.start()

    def close_idle(self) -> None:
        """End the blocked recv of every connection idle between requests.

        An SSL socket is shut below OpenSSL (`tls.shut_reading`): the reader
        sees the end of the stream, and the connection still ends with a
        close_notify.
        """
        with self.idle_lock:
            idle = list(self.idle)
        for sock in idle:
            try:
                if hasattr(sock, "unwrap"):
                    tls.shut_reading(sock)
                else:
                    sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def mark_idle(self, sock: socket.socket, idle: bool) -> None:
        """Track whether `sock` waits between requests (see `close_idle`)."""
        with self.idle_lock:
            if idle:
                self.idle.add(sock)
            else:
                self.idle.discard(sock)
