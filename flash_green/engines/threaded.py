"""v3 - threaded: one thread per connection, for the connection's whole life.

What changed from v1 (sequential)
    The accept loop no longer serves the connection itself: it starts a
    thread that runs the very same blocking connection loop
    (`flash_green.blocking.serve_connection`) and goes back to accepting.
    Nothing else changed, and that is the lesson: blocking code becomes
    concurrent when each wait happens on its own thread, because the kernel
    parks a thread blocked in recv/send/sleep and runs another. A slow
    client or a `/sleep` handler now stalls only its own thread.

The model
    accept -> thread(serve_connection) -> keep-alive requests -> close. The
    thread is held while the connection is open, including the idle time
    between keep-alive requests; `--keep-alive`, `--header-timeout` (the
    whole head from its first byte: the timeout shrinks at each read of a
    trickled head) and `--body-timeout` are socket timeouts that release
    threads held by idle or trickling clients (enforced by the kernel, see
    `KernelTimeoutSocket`: Python's own socket timeouts would add a poll()
    and a GIL round trip to every recv and send). `--max-connections N` bounds the threads: at N, the accept loop
    stops accepting until a thread ends (it holds the one connection it just
    accepted), so new connections wait in the kernel's listen backlog
    (`--backlog`) instead of being refused. We chose waiting over an
    immediate 503 because a 503 sent before the request was read races the
    client's request bytes (closing with unread input sends an RST that can
    destroy the 503), and because waiting is what a burst wants; when the
    backlog fills, the kernel drops SYNs and clients retry.

What it costs per connection
    A thread: 25-28 KB of RSS here (its stack pages actually touched, the
    thread state, the socket; `comparisons/bench_inprocess.py` measures it
    per idle keep-alive connection) and an 8 MB *virtual* stack reservation
    (`ulimit -s`), so thousands of threads are fine for RSS but eat address
    space and scheduler time. Starting a thread per connection costs tens of
    microseconds; keep-alive amortises it.

The GIL
    Handlers do not run Python in parallel: only one thread holds the
    interpreter at a time. Threads overlap their *waiting* (sockets, sleep,
    upstream calls release the GIL), not their CPU work; `/cpu` requests on
    two threads take as long as on one. Use processes (`--workers`) for
    CPU-bound apps.

What breaks it
    Many idle keep-alive connections: each pins a thread until the
    keep-alive timeout, so 10,000 idle browsers mean 10,000 threads (or,
    with the bound, a full server that queues new clients behind idle
    ones). Slow clients pin threads the same way: a slowloris attacker with
    N connections takes N threads for up to `--header-timeout` each. v4
    (epoll) and v5 (event) fix exactly this by waiting without a thread.

Several listeners, and TLS
    The accept loop waits on every listener in one poll(). With TLS the
    handshake runs in the connection's own thread, bounded by
    --header-timeout, so a slow or silent client holds only its thread.
    The socket is the standard library's SSL socket with Python's own
    timeouts (a poll() before each blocking call, the cost
    `KernelTimeoutSocket` saves plain connections: beside the cipher it is
    noise). OpenSSL runs without the GIL, so the handshakes of several
    threads - 1.0 ms of CPU each here - use several cores: the one
    place where threads beat a single-threaded loop on CPU. TLS adds 28 us
    of CPU per keep-alive request (`python -m comparisons.bench_tls`).

When to use it
    Small and medium deployments with blocking handlers and a known number
    of clients (intranet apps, internal APIs), behind a proxy that absorbs
    slow clients and keep-alive. It is the model of
    `socketserver.ThreadingMixIn` / `http.server.ThreadingHTTPServer` and,
    with a bounded pool instead of a thread per accept, of cheroot and of
    Apache's worker MPM.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable, Sequence

from ..binds import Listener
from ..blocking import serve_connection
from ..config import Config
from .base import HEARTBEAT_INTERVAL, BlockingServer, Capabilities, Endpoint

log = logging.getLogger("flash.engine.threaded")

_TIMEVAL = struct.Struct("@ll")


class KernelTimeoutSocket:
    """A blocking socket whose timeouts the kernel enforces.

    `serve_connection` bounds every wait with `settimeout`. Python implements
    a socket timeout by calling poll() before each recv and send: two more
    system calls per request, and two more trips through the GIL, on every
    thread - measured under strace, twice the futex (GIL) traffic. Here
    `settimeout` sets SO_RCVTIMEO instead, the socket stays blocking, and
    `recv`/`sendall` are the socket's own methods (no wrapper on the hot
    path). A recv that times out fails with EAGAIN, which `serve_connection`
    takes for a timeout. Sends are bounded once, at `send_timeout` (SO_SNDTIMEO,
    --timeout: a client that reads nothing for that long is cut off), so the
    read timeouts - a trickled head shrinks it at each read - never cut
    short a download.
    """

    __slots__ = ("close", "recv", "sendall", "shutdown", "sock")

    def __init__(self, sock: socket.socket, send_timeout: float) -> None:
        self.sock = sock
        self.recv = sock.recv
        self.sendall = sock.sendall
        self.shutdown = sock.shutdown
        self.close = sock.close
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(send_timeout))

    def settimeout(self, seconds: float | None) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))


def _timeval(seconds: float | None) -> bytes:
    """A struct timeval; None or 0 = wait for ever (as the kernel reads 0)."""
    seconds = seconds or 0.0
    whole = int(seconds)
    micro = int((seconds - whole) * 1_000_000)
    if seconds and not whole and not micro:
        micro = 1  # under a microsecond left is not "no timeout"
    return _TIMEVAL.pack(whole, micro)


class ThreadedEngine(BlockingServer):
    name = "threaded"
    summary = ("v3: a thread per connection (keep-alive included); handlers overlap "
               "their waits, idle clients pin threads")
    capabilities = Capabilities(concurrent=True, parallel=False, blocking_handler_stalls=False,
                                bounds_connections=True)
    app_off_loop = True
    reload_refusal = ("requests run on many threads at once, and re-importing the app's "
                      "modules under them is not safe; with --workers N a HUP starts new "
                      "workers on the new code")

    multithread = True

    def __init__(self, config: Config, app: Callable, listeners: Sequence[Listener]) -> None:
        super().__init__(config, app, listeners)
        self.slots = threading.BoundedSemaphore(config.max_connections)
        self.active = 0
        self.all_done = threading.Condition()

    def serve(self) -> None:
        self.accept_loop(self.start_connection_thread)
        self.wait_for_connections()

    def start_connection_thread(self, sock: socket.socket, peer, endpoint: Endpoint) -> None:
        """Serve `sock` on a new thread once a slot is free (else keep waiting)."""
        self.wait_for_slot()
        with self.all_done:
            self.active += 1
        thread = threading.Thread(target=self.run_connection, args=(sock, peer, endpoint),
                                  name=f"conn-{peer[1] if isinstance(peer, tuple) else peer}",
                                  daemon=True)
        thread.start()

    def wait_for_slot(self) -> None:
        """Block the accept loop while --max-connections threads are busy.

        While we wait here nothing is accepted, so further clients queue in
        the listen backlog. The connection in hand was accepted: it waits for
        its slot even if a stop begins meanwhile (a graceful stop loses no
        connection that reached the server).
        """
        while not self.slots.acquire(timeout=HEARTBEAT_INTERVAL):
            self.heartbeat()  # full is not stuck: the supervisor must not kill us

    def stats(self) -> dict:
        snapshot = super().stats()
        snapshot["pool"] = {"busy_threads": self.active, "limit": self.config.max_connections}
        return snapshot

    def run_connection(self, sock: socket.socket, peer, endpoint: Endpoint) -> None:
        # TLS: the SSL socket's own timeouts (a poll before each blocking
        # call); beside the cipher's cost that poll is noise.
        wrapped = (KernelTimeoutSocket(sock, self.config.timeout) if endpoint.tls is None
                   else self.secured(sock, endpoint))
        try:
            serve_connection(wrapped, peer, self, endpoint)
        except Exception:
            log.exception("connection thread for %s failed", peer)
        finally:
            self.slots.release()
            with self.all_done:
                self.active -= 1
                self.all_done.notify_all()

    def wait_for_connections(self) -> None:
        """After a stop: let every in-flight request finish, then return.

        Idle connections are shut down for reading `drain_seconds` after the
        stop (`close_idle_later`), busy ones close after the response to a
        request read after the stop; `--graceful-timeout` bounds the wait.
        """
        with self.all_done:
            while self.active:
                self.all_done.wait()
