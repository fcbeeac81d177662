"""What every engine shares: its description, counters, and stopping.

An engine is one concurrency model. It receives an already-bound listening
socket (from the runner, or inherited from the supervisor after fork), a
`Config` and a WSGI app, and serves until asked to stop. It never parses HTTP
or builds an environ itself: that is `flash_green.http` and `flash_green.wsgi`.
"""

from __future__ import annotations

import inspect
import logging
import os
import select
import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, ClassVar

from .. import proxy, stats, tracing
from ..binds import server_address
from ..config import Config
from ..http import ServerConnection
from ..wsgi import WSGIContext
from ._accept import AcceptBackoff

log = logging.getLogger("flash.engine")

#: Longest a healthy engine loop goes without calling `Engine.heartbeat()`
#: (seconds). The supervisor kills a worker silent for `--timeout`.
HEARTBEAT_INTERVAL = 1.0


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
    #: Runs under the supervisor by nature (prefork, worker).
    multiprocess: bool = False
    #: Honours --max-connections: at the bound it stops accepting, and new
    #: clients wait in the listen backlog (per process under --workers).
    bounds_connections: bool = False


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


class Engine:
    """Base class: one subclass per concurrency model (gunicorn's workers)."""

    name: ClassVar[str] = ""
    #: One line for `flash_green engines`.
    summary: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities]
    #: `--trace-requests`: told of every answered request (`flash_green.tracing`); None when off.
    tracer: tracing.Tracer | None = None
    #: The protocol state of each connection (a `TracedConnection` when tracing).
    connection_class: type[ServerConnection] = ServerConnection

    def __init__(self, config: Config, app: Callable, listener: socket.socket) -> None:
        self.config = config
        self.app = app
        self.listener = listener
        self.counters = Counters()
        self.stopping = False
        #: Set by an engine whose own loop calls `heartbeat()` at least every
        #: HEARTBEAT_INTERVAL. Until then the supervisor beats from a thread,
        #: which cannot notice a stuck single-threaded loop.
        self.loop_heartbeat = False
        self.wsgi = self.wsgi_context(listener)

    def wsgi_context(self, listener: socket.socket) -> WSGIContext:
        """The static environ of requests that arrive on `listener` (one per listener)."""
        config = self.config
        server_name, server_port = server_address(listener)
        return WSGIContext(
            self.app, server_name, server_port,
            server_header=config.server_header,
            multithread=self.capabilities.threads,
            multiprocess=config.workers > 0 or self.capabilities.multiprocess,
            access_log=logging.getLogger("flash.access") if config.access_log else None,
            front=proxy.front_for(listener.family, config.forwarded_allow_ips),
        )

    #: The kinds of app this model can run besides plain WSGI ("tasklet":
    #: generator handlers, "async": `async def` apps). See `refuse_app`.
    app_colours: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def refuse_app(cls, app: Callable) -> str | None:
        """Why this model cannot run `app` (its function colour), or None."""
        colour = app_colour(app)
        if colour is None or colour in cls.app_colours:
            return None
        runs_it = "tasklets" if colour == "tasklet" else "asyncio"
        kind = "a tasklet handler (a generator)" if colour == "tasklet" else "an async app (async def)"
        return f"the app is {kind}; only --engine {runs_it} can run it"

    @classmethod
    def validate(cls, config: Config) -> None:
        """Refuse options this model cannot honour, with a clear message."""
        if config.threads and not cls.capabilities.threads:
            raise ValueError(f"engine {cls.name!r} does not use a thread pool: drop --threads")

    def run(self) -> None:
        """Install stop signals, --trace-requests and --stats, then serve until stopped."""
        self.install_signal_handlers()
        tracer = tracing.install(self)
        monitor = stats.install(self)
        try:
            self.serve()
        finally:
            monitor.close()
            if tracer is not None:
                tracer.close()

    def serve(self) -> None:
        raise NotImplementedError

    def heartbeat(self) -> None:
        """Proof of life for the supervisor: call it from the engine's loop.

        A no-op outside the supervisor, which replaces it per worker. It must
        be called by the code that would stop if the worker got stuck (the
        accept loop, each request), never from a helper thread.
        """

    def request_stop(self, graceful: bool = True) -> None:
        """Stop accepting; let in-flight requests finish (graceful) or not.

        Called from a signal handler in the main thread: it must only set
        flags and wake the loop.
        """
        raise NotImplementedError

    def install_signal_handlers(self) -> None:
        def on_signal(signum, frame):
            log.info("received %s, stopping gracefully", signal.Signals(signum).name)
            self.request_stop(graceful=True)
            self._arm_graceful_deadline()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGQUIT, lambda s, f: self.request_stop(graceful=False))

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


def app_colour(app: Callable) -> str | None:
    """"tasklet", "async", or None for a plain WSGI app."""
    if getattr(app, "__tasklet_app__", False):
        return "tasklet"
    if inspect.iscoroutinefunction(app):
        return "async"
    return None


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

    The accept loop waits on the listener and a Waker together, so a stop
    request wakes it at once. Connections between two requests are "idle":
    on stop they are shut down for reading, which ends their blocked recv;
    busy ones finish their request first (see `serve_connection`).
    """

    def __init__(self, config: Config, app: Callable, listener: socket.socket) -> None:
        super().__init__(config, app, listener)
        self.waker = Waker()
        self.idle: set[socket.socket] = set()
        self.idle_lock = threading.Lock()

    def accept_loop(self, handle: Callable[[socket.socket, object], None]) -> None:
        listener = self.listener
        listener.setblocking(False)
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        poller.register(self.waker.rfd, select.POLLIN)
        self.loop_heartbeat = True
        wait_ms = HEARTBEAT_INTERVAL * 1000
        backoff = AcceptBackoff(log)
        while not self.stopping:
            self.heartbeat()
            for fd, _ in poller.poll(wait_ms):
                if fd == self.waker.rfd:
                    self.waker.clear()
                    continue
                try:
                    sock, peer = listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    self.sleep_unless_stopped(backoff.failed(exc))
                    continue
                backoff.accepted()
                sock.setblocking(True)
                handle(sock, peer)

    def sleep_unless_stopped(self, seconds: float) -> None:
        """Sleep `seconds` (an accept pause), or less if a stop is requested."""
        if seconds > 0:
            waker = select.poll()
            waker.register(self.waker.rfd, select.POLLIN)
            waker.poll(seconds * 1000)

    def request_stop(self, graceful: bool = True) -> None:
        self.stopping = True
        self.waker.wake()
        with self.idle_lock:
            idle = list(self.idle)
        for sock in idle:
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        if not graceful:
            os._exit(0)

    def mark_idle(self, sock: socket.socket, idle: bool) -> bool:
        """Track whether `sock` waits between requests; False if stopping."""
        with self.idle_lock:
            if idle:
                self.idle.add(sock)
            else:
                self.idle.discard(sock)
        return not self.stopping
