"""A thread per connection, for the connection's whole life: the base of v2 (cgi) and v3 (threaded).

The accept loop (`BlockingServer.accept_loop`: one poll() over every
listener) starts a thread for each connection it accepts; the thread runs
the blocking connection loop (`serve_connection`) until the client or a
timeout ends the connection, and the accept loop goes straight back to
accepting. v3 `threaded` is exactly this; v2 `cgi` is this with a bridge
app that forks a child per request (`flash_green.engines.cgi`). The course
order is the dependency order: neither engine imports the other.

What it holds, written once:

* `--max-connections N` bounds the threads: at N the accept loop stops
  accepting until a thread ends (it holds the one connection it just
  accepted), so new connections wait in the kernel's listen backlog
  (`--backlog`) instead of being refused. Waiting rather than an immediate
  503: a 503 sent before the request was read races the client's request
  bytes (closing with unread input sends an RST that can destroy it), and
  waiting is what a burst wants; when the backlog fills, the kernel drops
  SYNs and clients retry.
* The timeouts of a plain connection are enforced by the kernel
  (`KernelTimeoutSocket`): Python's own socket timeouts would add a poll()
  and a GIL round trip to every recv and send, on every thread.
* A TLS connection gets the standard library's SSL socket, whose own
  timeouts cost that poll(): beside the cipher it is noise. The handshake
  runs in the connection's thread, bounded by --header-timeout.
* A stop: idle connections are shut down for reading `drain_seconds`
  after it (`BlockingServer.close_idle_later`), busy ones close after their
  response, and the engine returns when the last thread has ended.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import ClassVar

from ..binds import Listener
from ..config import Config
from ._blocking import serve_connection
from .base import HEARTBEAT_INTERVAL, BlockingServer, Endpoint

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


class ThreadPerConnection(BlockingServer):
    """The accept loop, a thread per connection under --max-connections, and the stop."""

    #: The app runs on the connection threads; the accept loop beats (see `Engine.app_off_loop`).
    app_off_loop: ClassVar[bool] = True
    multithread = True

    def __init__(self, config: Config, app: Callable, listeners: Sequence[Listener]) -> None:
        super().__init__(config, app, listeners)
        self.log = logging.getLogger(f"flash.engine.{self.name}")
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
            self.log.exception("connection thread for %s failed", peer)
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
