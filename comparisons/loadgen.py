"""Flash's own HTTP/1.1 load generator: one epoll loop per process, many keep-alive connections.

Why write one when wrk exists? wrk may not be installed, it cannot open a
new connection per request, it cannot run open-loop (that needs wrk2), and
its results do not merge with ours. This generator does all of that in
plain Python, fast enough to saturate most of the Python servers it measures
(``ceiling()`` tells you how fast it is on your machine; see below).

How it works
------------
Each process runs ONE ``select.epoll`` loop over ``concurrency`` connection
"slots". A slot owns at most one socket plus an incremental response parser
(``ResponseParser``). Everything is non-blocking and level-triggered; the
loop reads with ``recv_into`` into one preallocated buffer and finds response
boundaries with ``bytes.find``/``startswith``. After the first response on a
connection, a response whose head is byte-for-byte the previous one (the
common case for a fixed reply) is framed with one ``startswith`` call and no
parsing at all. ``processes=N`` starts N such loops in worker processes
(fresh interpreters that connect, then start measuring together on the
parent's signal) and merges their histograms and counters.

Modes
-----
* **closed-loop keep-alive** (default): each connection sends its next
  request the moment the previous response completes. The rate you measure
  is the server's throughput at that concurrency. A server that closes
  after each response (``Connection: close``) makes the slot reconnect:
  the handshake then costs throughput but is outside the latency.
* **pipelining** (``pipeline=K``): each write carries K requests; the next
  write happens once all K responses are in. It shows per-request overhead
  once syscalls and wake-ups are amortised.
* **new connection per request** (``new_conn=True``): connect, send with
  ``Connection: close``, read to the end of the framed response (or to EOF
  if unframed), close. Latency includes the TCP handshake and ``accept``.
* **open loop** (``rate=R``): requests are *scheduled* at fixed intended send
  times (R per second in total) whatever the server does. A request waits for
  a free connection if necessary, and its latency is measured from its
  intended send time, not from when it could actually be written. A closed
  loop under-reports latency when the server stalls, because the stalled
  clients stop sending and the requests they *would* have sent are never
  measured ("coordinated omission", Gil Tene); the open loop does not. If
  ``sent`` falls well short of ``scheduled`` the server (or ``concurrency``)
  cannot keep up with R and the latencies say by how much.

Errors
------
``connect`` (refused, unreachable, no file descriptors), ``read`` (the
connection broke after it was established: reset, EOF in the middle of a
response, a write that failed, a malformed response), ``timeout`` (no
progress on a socket operation for ``timeout`` seconds, connect included),
and ``status`` (completed responses whose code is not 2xx; the codes are in
``status_counts``). Errors are counted per request lost, so with pipelining
one reset may count K.

Bounds
------
A run stops at ``warmup + duration`` seconds, or once ``requests`` requests
have been attempted and answered (or failed), whichever comes first; a run
with neither stops at ``time_limit``. Every socket operation is bounded by
``timeout``. Requests still in flight at the end are not counted.

The ceiling
-----------
``ceiling()`` runs the generator against ``comparisons.canned``, a server
that does nothing but send a fixed response. If a server under test scores
near that ceiling, the generator was the bottleneck, not the server: add
``processes``, use wrk (``prefer_wrk``), or pin the generator and server to
different CPUs (``cpu=`` / ``server_cpu=``).

CLI::

    python -m comparisons.loadgen http://127.0.0.1:8000/ -c 100 -d 5 \\
        [--pipeline K] [--new-conn] [--rate R] [--processes N] [--json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import json
import logging
import math
import os
import select
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from types import TracebackType
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from comparisons.childproc import child_env, raise_fd_limit
from comparisons.histogram import Histogram

log = logging.getLogger(__name__)

#: The error kinds every ``LoadResult.errors`` holds, in report order.
ERROR_KINDS: tuple[str, ...] = ("connect", "read", "timeout", "status")

_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_READABLE = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP

#: Pause before re-dialling after a failed connect, so that a closed port
#: produces a few hundred errors a second per slot rather than a busy loop.
_CONNECT_RETRY_DELAY = 0.01
#: Longest a response head or chunk-size line may be before we call it garbage.
_MAX_HEAD = 64 * 1024
_MAX_CHUNK_LINE = 4 * 1024
_RECV_SIZE = 256 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not an HTTP/1.1 response we can frame."""


# ---------------------------------------------------------------------------
# Target and request
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where to connect and what to ask for, resolved once from a URL."""

    host: str
    port: int
    path: str
    family: int
    sockaddr: tuple[Any, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """Resolve an ``http://host:port/path?query`` URL; only that host is ever contacted."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {url!r}")
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    family, _, _, _, sockaddr = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)[0]
    return Target(parts.hostname, port, path, family, sockaddr)


def build_request(
    target: Target,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    close: bool = False,
) -> bytes:
    """Serialise one request. Built once per run; the hot loop only resends the bytes.

    ``Host`` and ``Content-Length`` are added unless given; ``close`` adds
    ``Connection: close`` (the new-connection mode's request).
    """
    given = {name.lower() for name in (headers or {})}
    lines = [f"{method} {target.path} HTTP/1.1"]
    if "host" not in given:
        lines.append(f"Host: {target.host_header}")
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    if "content-length" not in given and (body or method.upper() in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(body)}")
    if close and "connection" not in given:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ---------------------------------------------------------------------------
# Response framing
# ---------------------------------------------------------------------------

# Body framing of a parsed head: a length >= 0, or one of these.
_CHUNKED = -1
_UNTIL_CLOSE = -2

# Parser phases.
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _AT_EOF = range(6)


def parse_head(head: bytes, head_request: bool = False) -> tuple[int, int, bool]:
    """Frame a response from its head: ``(status, body_length, close)``.

    ``body_length`` is a byte count, ``_CHUNKED`` or ``_UNTIL_CLOSE``
    (RFC 9112 section 6.3: HEAD, 1xx, 204 and 304 have no body; then
    chunked; then Content-Length; otherwise the body runs to EOF).
    ``close`` says the server will close after this response.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise ProtocolError(f"bad status code {parts[1]!r}") from None
    if not 100 <= status <= 999:
        raise ProtocolError(f"bad status code {status}")
    length: int | None = None
    chunked = False
    close = parts[0] == b"HTTP/1.0"  # 1.0 closes unless it says keep-alive
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise ProtocolError(f"bad Content-Length {value!r}") from None
        elif name == b"transfer-encoding":
            chunked = value.split(b",")[-1].strip() == b"chunked"
        elif name == b"connection":
            tokens = {token.strip() for token in value.split(b",")}
            if b"close" in tokens:
                close = True
            elif b"keep-alive" in tokens:
                close = False
    if head_request or status < 200 or status in (204, 304):
        return status, 0, close
    if chunked:
        return status, _CHUNKED, close
    if length is not None:
        return status, length, close
    return status, _UNTIL_CLOSE, True


class ResponseParser:
    """Incremental response framer: feed it bytes, it counts complete responses.

    It keeps only what it must: a partial head or chunk-size line (in
    ``pending``, which the caller prepends to the next read) and how many
    body bytes remain to skip. Bodies are never copied, so a 1 GB download
    costs no memory.
    """

    __slots__ = ("head_request", "phase", "remaining", "pending", "status", "closing", "last_head", "last_info")

    def __init__(self, head_request: bool = False) -> None:
        self.head_request = head_request
        # The previous head and its framing: identical heads skip parsing.
        self.last_head = b""
        self.last_info: tuple[int, int, bool] = (0, 0, False)
        self.reset()

    def reset(self) -> None:
        """Forget any partial response (a new connection starts clean)."""
        self.phase = _HEAD
        self.remaining = 0
        self.pending = b""
        self.status = 0
        self.closing = False

    def feed(self, data: bytes | bytearray, end: int, statuses: list[int]) -> int:
        """Consume ``data[:end]``; return how many responses completed in it.

        Each completed response adds one to ``statuses[code]``. If the data
        stops inside a head or a chunk-size line, the partial bytes are kept
        in ``pending`` and the caller must pass ``pending + next_read`` next
        time. Raises ``ProtocolError`` on garbage.
        """
        pos = 0
        done = 0
        while pos < end:
            phase = self.phase
            if phase == _HEAD:
                last = self.last_head
                if last and data.startswith(last, pos, end):
                    pos += len(last)
                    status, length, close = self.last_info
                else:
                    i = data.find(b"\r\n\r\n", pos, end)
                    if i < 0:
                        if end - pos > _MAX_HEAD:
                            raise ProtocolError("response head too large")
                        self.pending = bytes(data[pos:end])
                        return done
                    head = bytes(data[pos : i + 4])
                    status, length, close = info = parse_head(head, self.head_request)
                    self.last_head = head
                    self.last_info = info
                    pos = i + 4
                if status < 200 and status != 101:
                    continue  # interim response (100 Continue): the real one follows
                if close:
                    self.closing = True
                if length > 0:
                    avail = end - pos
                    if avail >= length:
                        pos += length
                    else:
                        self.status = status
                        self.remaining = length - avail
                        self.phase = _BODY
                        return done
                elif length == _CHUNKED:
                    self.status = status
                    self.phase = _CHUNK_SIZE
                    continue
                elif length == _UNTIL_CLOSE:
                    self.status = status
                    self.phase = _AT_EOF
                    return done
                statuses[status] += 1
                done += 1
            elif phase == _BODY or phase == _CHUNK_DATA:
                avail = end - pos
                if avail < self.remaining:
                    self.remaining -= avail
                    return done
                pos += self.remaining
                self.remaining = 0
                if phase == _CHUNK_DATA:
                    self.phase = _CHUNK_SIZE
                else:
                    self.phase = _HEAD
                    statuses[self.status] += 1
                    done += 1
            elif phase == _CHUNK_SIZE:
                i = data.find(b"\r\n", pos, end)
                if i < 0:
                    if end - pos > _MAX_CHUNK_LINE:
                        raise ProtocolError("chunk-size line too long")
                    self.pending = bytes(data[pos:end])
                    return done
                size_field = bytes(data[pos:i]).split(b";", 1)[0].strip()
                try:
                    size = int(size_field, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size_field[:20]!r}") from None
                if size < 0:
                    raise ProtocolError("negative chunk size")
                pos = i + 2
                if size:
                    # The chunk data and its CRLF are skipped in one go.
                    self.remaining = size + 2
                    self.phase = _CHUNK_DATA
                else:
                    self.phase = _TRAILER
            elif phase == _TRAILER:
                i = data.find(b"\r\n", pos, end)
                if i < 0:
                    if end - pos > _MAX_HEAD:
                        raise ProtocolError("trailer too large")
                    self.pending = bytes(data[pos:end])
                    return done
                if i == pos:  # the empty line ends the chunked message
                    self.phase = _HEAD
                    statuses[self.status] += 1
                    done += 1
                pos = i + 2
            else:  # _AT_EOF: the body is everything until the server closes
                return done
        return done

    def finish_at_eof(self, statuses: list[int]) -> bool:
        """Called when the peer closes: completes a close-delimited response, if one is open."""
        if self.phase != _AT_EOF:
            return False
        self.phase = _HEAD
        statuses[self.status] += 1
        return True

    @property
    def between_responses(self) -> bool:
        """True if no response is partly received (an EOF here is a clean close)."""
        return self.phase == _HEAD and not self.pending


def _new_statuses() -> list[int]:
    return [0] * 1000


# ---------------------------------------------------------------------------
# Configuration and result
# ---------------------------------------------------------------------------


@dataclass
class LoadConfig:
    """Everything one run needs (plain data, so it travels to worker processes as JSON).

    ``concurrency`` connections in total (split across ``processes``);
    ``duration`` seconds measured after ``warmup`` seconds of unmeasured load,
    and/or ``requests`` requests in total (None for no bound; with neither,
    ``time_limit`` ends the run); ``pipeline`` requests per write;
    ``new_conn`` for a connection per request; ``rate`` for an open loop of
    that many requests per second in total; ``method``/``headers``/``body``
    shape the request; ``timeout`` bounds every socket operation; ``cpu``
    pins the generator process(es).
    """

    url: str
    concurrency: int = 50
    duration: float | None = 10.0
    requests: int | None = None
    warmup: float = 0.0
    pipeline: int = 1
    new_conn: bool = False
    rate: float | None = None
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    timeout: float = 5.0
    processes: int = 1
    cpu: int | tuple[int, ...] | None = None
    time_limit: float = 600.0

    def validate(self) -> None:
        """Reject combinations that make no sense before any socket is opened."""
        parse_url(self.url)
        if self.concurrency < 1 or self.pipeline < 1 or self.processes < 1:
            raise ValueError("concurrency, pipeline and processes must be >= 1")
        if self.concurrency < self.processes:
            raise ValueError("need at least one connection per process")
        if self.pipeline > 1 and (self.new_conn or self.rate is not None):
            raise ValueError("pipelining is only for closed-loop keep-alive runs")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be > 0")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be > 0")
        if self.requests is not None and self.requests < 1:
            raise ValueError("requests must be >= 1")
        if self.timeout <= 0 or self.warmup < 0:
            raise ValueError("timeout must be > 0 and warmup >= 0")

    @property
    def mode(self) -> str:
        if self.rate is not None:
            return "open-loop-new-conn" if self.new_conn else "open-loop"
        if self.new_conn:
            return "new-conn"
        return "pipeline" if self.pipeline > 1 else "keepalive"


@dataclass
class LoadResult:
    """What one run measured. ``to_dict()`` is the JSON form reports consume.

    ``requests`` counts completed responses of any status during the
    measured window (after warm-up); ``sent`` counts requests written;
    ``scheduled`` (open loop only) counts requests whose intended send time
    fell in the window. ``connections_opened`` counts connections established
    before the window and still open at its start, plus those established
    during it (so new-conn runs show about one per request, keep-alive runs
    about ``concurrency``; failed dials are not counted).
    ``latency_ms`` holds p50/p90/p99/p99.9/max/mean. ``generator_cpu`` is
    the share of one core each generator process used (ours only): near 1.0
    the generator, not the server, was the bottleneck.
    ``histogram`` is kept (ours only; wrk gives no histogram) so that runs
    can be merged later; it is left out of ``to_dict()`` unless asked for.
    """

    url: str
    mode: str
    concurrency: int
    requests: int
    duration: float
    rps: float
    bytes_read: int
    latency_ms: dict[str, float]
    errors: dict[str, int]
    status_counts: dict[int, int]
    connections_opened: int
    sent: int
    tool: str = "flash"
    processes: int = 1
    pipeline: int = 1
    rate: float | None = None
    scheduled: int | None = None
    generator_cpu: float | None = None
    histogram: Histogram | None = field(default=None, repr=False, compare=False)

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    def to_dict(self, include_histogram: bool = False) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "histogram"}
        data["latency_ms"] = dict(self.latency_ms)
        data["errors"] = dict(self.errors)
        data["status_counts"] = {str(code): count for code, count in sorted(self.status_counts.items())}
        if include_histogram and self.histogram is not None:
            data["histogram"] = self.histogram.to_dict()
        return data

    def format(self) -> str:
        """A few human-readable lines, like wrk's summary."""
        lat = self.latency_ms
        shape = f"c={self.concurrency} processes={self.processes}"
        if self.pipeline > 1:
            shape += f" pipeline={self.pipeline}"
        if self.rate is not None:
            shape += f" rate={self.rate:g}/s scheduled={self.scheduled} sent={self.sent}"
        lines = [
            f"{self.tool} {self.mode} {self.url} {shape}",
            f"  {self.requests} requests in {self.duration:.2f}s = {self.rps:,.0f} req/s, "
            f"{self.bytes_read / 1e6:.1f} MB read, {self.connections_opened} connections opened"
            + (f", generator CPU {self.generator_cpu:.0%}" if self.generator_cpu is not None else ""),
            "  latency ms: " + "  ".join(f"{key} {lat.get(key, 0.0):.3f}" for key in ("p50", "p90", "p99", "p99.9", "max", "mean")),
            "  errors: " + "  ".join(f"{kind} {self.errors.get(kind, 0)}" for kind in ERROR_KINDS),
        ]
        if self.status_counts:
            lines.append("  status: " + "  ".join(f"{code}={count}" for code, count in sorted(self.status_counts.items())))
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# The engine: one epoll loop over many connection slots
# ---------------------------------------------------------------------------


class _Slot(ResponseParser):
    """One connection slot: a socket (or none, between connections) plus its parser."""

    __slots__ = ("sock", "fd", "connecting", "outstanding", "started", "deadline", "out", "retry_at", "dial_reserved")

    def __init__(self, head_request: bool) -> None:
        super().__init__(head_request)
        self.sock: socket.socket | None = None
        self.fd = -1
        self.connecting = False
        self.outstanding = 0  # requests written (or reserved) and not yet answered
        self.started = 0.0  # when the current batch started: send time, or intended time (open loop)
        self.deadline = 0.0  # the current socket operation times out at this time
        self.out: memoryview | None = None  # unsent request bytes, when the kernel buffer was full
        self.retry_at = 0.0
        self.dial_reserved = False  # a keep-alive re-dial holding one unit of budget


class _Engine:
    """The load loop of one process. ``prepare()`` connects, ``run()`` measures, ``partial()`` reports."""

    def __init__(self, cfg: LoadConfig, concurrency: int, budget: int | None, rate: float | None) -> None:
        self.cfg = cfg
        self.target = parse_url(cfg.url)
        self.new_conn = cfg.new_conn
        self.open_loop = rate is not None
        self.rate = rate
        self.budget = budget  # requests this process may still start; None = no limit
        self.k = cfg.pipeline
        self.timeout = cfg.timeout
        one = build_request(self.target, cfg.method, cfg.headers, cfg.body, close=cfg.new_conn)
        self.request_one = one
        self.request_batch = one * self.k
        raise_fd_limit(concurrency + 64)
        head_request = cfg.method.upper() == "HEAD"
        self.slots = [_Slot(head_request) for _ in range(concurrency)]
        self.by_fd: dict[int, _Slot] = {}
        self.dead: list[_Slot] = []  # slots waiting to (re)connect or start their next request
        self.idle: list[_Slot] = []  # open loop: slots free to take the next scheduled request
        self.ep = select.epoll()
        self.buf = bytearray(_RECV_SIZE)
        self.running = False
        self.t0 = 0.0  # open loop: the schedule's time zero
        self.next_index = 0  # open loop: index of the next scheduled request
        self.measure_end = 0.0
        self.cpu_seconds = 0.0
        self._reset_stats(time.perf_counter())

    def _reset_stats(self, now: float) -> None:
        """Start (or, after warm-up, restart) the measured window at ``now``."""
        self.hist = Histogram()
        self.statuses = _new_statuses()
        self.errors = dict.fromkeys(ERROR_KINDS[:3], 0)
        self.completed = 0
        self.sent = 0
        self.bytes_read = 0
        # Connections carried into the window count as used in it, so a
        # keep-alive run reports its connections, not zero.
        self.connections_opened = sum(1 for c in self.by_fd.values() if not c.connecting)
        self.measure_start = now
        # CPU of this thread only (the loop's), so a server thread in the
        # same process (as in tests) is not charged to the generator.
        self.cpu_start = time.thread_time()

    # -- connection lifecycle -------------------------------------------

    def _open(self, c: _Slot, now: float) -> None:
        """Start a non-blocking connect; completion arrives as EPOLLOUT."""
        try:
            sock = socket.socket(self.target.family, socket.SOCK_STREAM)
        except OSError as exc:  # EMFILE/ENFILE: out of descriptors
            log.debug("socket() failed: %s", exc)
            self._connect_failed(c, now, "connect")
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(self.target.sockaddr)
        if err and err != errno.EINPROGRESS:
            log.debug("connect failed: %s", os.strerror(err))
            sock.close()
            self._connect_failed(c, now, "connect")
            return
        c.reset()
        c.sock = sock
        c.fd = sock.fileno()
        c.connecting = True
        c.out = None
        c.deadline = now + self.timeout
        self.by_fd[c.fd] = c
        self.ep.register(c.fd, _EPOLLOUT)

    def _on_connect(self, c: _Slot, now: float) -> None:
        assert c.sock is not None
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            log.debug("connect failed: %s", os.strerror(err))
            self._close(c)
            self._connect_failed(c, now, "connect")
            return
        c.connecting = False
        self.connections_opened += 1
        if c.dial_reserved:
            # The dial succeeded: its unit of budget goes back to real requests.
            c.dial_reserved = False
            assert self.budget is not None
            self.budget += 1
        self.ep.modify(c.fd, _EPOLLIN)
        if self.running:
            self._ready(c, now)

    def _ready(self, c: _Slot, now: float) -> None:
        """A freshly connected slot starts its work."""
        if self.new_conn:
            # The request was reserved (and its clock started) before connecting.
            c.deadline = now + self.timeout
            self._write(c, self.request_one)
        elif self.open_loop:
            self.idle.append(c)
        else:
            self._send_batch(c, now, now)

    def _close(self, c: _Slot) -> None:
        if c.sock is None:
            return
        if self.open_loop and not self.new_conn and c.outstanding == 0:
            with contextlib.suppress(ValueError):
                self.idle.remove(c)
        del self.by_fd[c.fd]
        with contextlib.suppress(OSError):
            self.ep.unregister(c.fd)
        c.sock.close()
        c.sock = None
        c.fd = -1
        c.connecting = False
        c.out = None

    def _connect_failed(self, c: _Slot, now: float, kind: str) -> None:
        self.errors[kind] += max(1, c.outstanding)
        if c.dial_reserved:
            c.dial_reserved = False  # the reserved unit is spent on this failure
        elif not self.new_conn and self.budget is not None and self.budget > 0:
            # A keep-alive dial holds no request, yet must consume budget or a
            # closed port would never let a count-bounded run finish.
            self.budget -= 1
        c.outstanding = 0
        self._release(c, now + _CONNECT_RETRY_DELAY)

    def _fail(self, c: _Slot, kind: str) -> None:
        """The connection broke: count the requests it carried, drop it, try again."""
        if c.outstanding:
            self.errors[kind] += c.outstanding
            c.outstanding = 0
        self._close(c)
        self._release(c, time.perf_counter())

    def _release(self, c: _Slot, retry_at: float) -> None:
        """A slot without a socket waits to be recycled (or, open loop new-conn, to be picked)."""
        if self.new_conn and self.open_loop:
            self.idle.append(c)
        else:
            c.retry_at = retry_at
            self.dead.append(c)

    def _recycle(self, c: _Slot, now: float) -> None:
        """Give a socket-less slot its next piece of work."""
        if self.new_conn:
            if self.open_loop:
                self.idle.append(c)
            else:
                self._start_new_conn(c, now, now)
        elif self.open_loop or self.budget is None:
            self._open(c, now)
        elif self.budget > 0:
            # Reserve a unit so parallel re-dials cannot overspend the budget
            # if they all fail; a successful connect gives it back.
            self.budget -= 1
            c.dial_reserved = True
            self._open(c, now)

    def _start_new_conn(self, c: _Slot, now: float, started: float) -> None:
        if self.budget is not None:
            if self.budget <= 0:
                return
            self.budget -= 1
        c.outstanding = 1
        c.started = started
        self.sent += 1
        self._open(c, now)

    # -- writing ---------------------------------------------------------

    def _send_batch(self, c: _Slot, now: float, started: float) -> None:
        """Write the next K requests (fewer if the budget is nearly spent)."""
        k = self.k
        if self.budget is not None:
            if self.budget <= 0:
                return
            k = min(k, self.budget)
            self.budget -= k
        c.started = started
        c.outstanding = k
        self.sent += k
        c.deadline = now + self.timeout
        self._write(c, self.request_batch if k == self.k else self.request_one * k)

    def _write(self, c: _Slot, data: bytes) -> None:
        assert c.sock is not None
        try:
            sent = c.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._fail(c, "read")
            return
        if sent < len(data):
            self._hold(c, data, sent)

    def _hold(self, c: _Slot, data: bytes, sent: int) -> None:
        """Keep what the kernel did not take and wait for EPOLLOUT (large uploads)."""
        c.out = memoryview(data)[sent:]
        self.ep.modify(c.fd, _EPOLLIN | _EPOLLOUT)

    def _flush(self, c: _Slot) -> None:
        assert c.sock is not None and c.out is not None
        try:
            sent = c.sock.send(c.out)
        except BlockingIOError:
            return
        except OSError:
            self._fail(c, "read")
            return
        c.deadline = time.perf_counter() + self.timeout
        if sent == len(c.out):
            c.out = None
            self.ep.modify(c.fd, _EPOLLIN)
        else:
            c.out = c.out[sent:]

    # -- reading: the rare paths ------------------------------------------

    def _after_response(self, c: _Slot, now: float) -> None:
        """All outstanding responses arrived; decide what the slot does next."""
        if c.closing or self.new_conn or c.out is not None:
            # (An answer before the whole request was written, such as a 413
            # to an upload, leaves the connection out of step: start afresh.)
            self._close(c)
            self._recycle(c, now)
        elif self.open_loop:
            self.idle.append(c)
        else:
            self._send_batch(c, now, now)

    def _on_eof(self, c: _Slot, now: float) -> None:
        if c.outstanding and c.finish_at_eof(self.statuses):
            # A close-delimited body ended: that is a complete response.
            self.hist.record(int((now - c.started) * 1_000_000))
            self.completed += 1
            c.outstanding -= 1
            if c.outstanding:  # pipelined requests behind it are lost
                self.errors["read"] += c.outstanding
                c.outstanding = 0
            self._close(c)
            self._recycle(c, now)
        elif not c.outstanding and c.between_responses:
            # The server closed an idle connection (keep-alive timeout): not an error.
            self._close(c)
            self._recycle(c, now)
        else:
            self._fail(c, "read")

    # -- housekeeping ------------------------------------------------------

    def _expire(self, now: float) -> None:
        """Fail every slot whose current socket operation made no progress in ``timeout``."""
        for c in self.slots:
            if c.sock is None or c.deadline > now:
                continue
            if c.connecting:
                self._close(c)
                self._connect_failed(c, now, "timeout")
            elif c.outstanding or c.out is not None:
                self._fail(c, "timeout")

    def _revive(self, now: float) -> None:
        waiting, self.dead = self.dead, []
        for c in waiting:
            if c.retry_at > now:
                self.dead.append(c)
            else:
                self._recycle(c, now)

    def _dispatch_due(self, now: float) -> float:
        """Open loop: start every request whose intended time has come; return the next one's time."""
        rate = self.rate
        assert rate is not None
        idle = self.idle
        while True:
            if not idle or self.budget == 0:
                # Nothing can be sent until a response frees a slot: that is
                # an epoll event, so there is no time to wake up for.
                return math.inf
            intended = self.t0 + self.next_index / rate
            if intended > now:
                return intended
            c = idle.pop()
            self.next_index += 1
            if self.new_conn:
                self._start_new_conn(c, now, intended)
            else:
                self._send_batch(c, now, intended)

    def _drained(self) -> bool:
        return not any(c.outstanding or c.dial_reserved for c in self.slots)

    # -- the loop ----------------------------------------------------------

    def prepare(self) -> None:
        """Keep-alive modes: connect every slot before the clock starts (bounded by ``timeout``)."""
        if self.new_conn:
            return
        now = time.perf_counter()
        for c in self.slots:
            self._open(c, now)
        deadline = now + self.timeout
        while time.perf_counter() < deadline and any(c.connecting for c in self.slots):
            for fd, _ in self.ep.poll(0.05):
                c = self.by_fd.get(fd)
                if c is not None and c.connecting:
                    self._on_connect(c, time.perf_counter())

    def run(self) -> None:
        """Measure until the duration, the request budget or the time limit runs out."""
        cfg = self.cfg
        perf = time.perf_counter
        start = perf()
        self.running = True
        self.t0 = start
        self.measure_start = start
        warm_end: float | None = start + cfg.warmup if cfg.warmup > 0 else None
        hard_stop = start + cfg.warmup + (cfg.duration if cfg.duration is not None else cfg.time_limit)
        hard_stop = min(hard_stop, start + cfg.time_limit)
        scan_every = min(0.1, self.timeout / 4)
        next_scan = start + scan_every

        for c in self.slots:
            if self.new_conn:
                self._release(c, start)
            elif c.sock is not None and not c.connecting:
                self._ready(c, start)

        # Hot-loop locals: attribute and global lookups cost more than the work.
        poll = self.ep.poll
        ep_fd = [self.ep.fileno()]
        precise_wait = self.open_loop
        by_fd = self.by_fd
        buf = self.buf
        view = memoryview(buf)
        hist = self.hist
        statuses = self.statuses
        feed = ResponseParser.feed
        timeout = self.timeout
        batch = self.request_batch
        batch_len = len(batch)
        k = self.k
        # Closed-loop keep-alive without a budget sends the next batch inline.
        inline_next = not self.open_loop and not self.new_conn and self.budget is None

        now = start
        while True:
            now = perf()
            if warm_end is not None and now >= warm_end:
                warm_end = None
                self._reset_stats(now)
                hist = self.hist
                statuses = self.statuses
            if now >= hard_stop:
                break
            if now >= next_scan:
                self._expire(now)
                next_scan = now + scan_every
            if self.dead:
                self._revive(now)
            wait = min(next_scan, hard_stop) - now
            if self.open_loop:
                wait = min(wait, self._dispatch_due(now) - now)
            if self.dead:
                wait = min(wait, min(c.retry_at for c in self.dead) - now)
            if self.budget == 0 and self._drained():
                break
            if precise_wait and wait > 0:
                # epoll's timeout is whole milliseconds, rounded up: an open
                # loop would send up to 1 ms late and charge that to the
                # server. select() on the epoll fd itself waits to the µs.
                select.select(ep_fd, (), (), wait)
                wait = 0.0
            for fd, ev in poll(max(wait, 0.0)):
                c = by_fd.get(fd)
                if c is None:
                    continue
                if c.connecting:
                    self._on_connect(c, perf())
                    continue
                if ev & _EPOLLOUT and c.out is not None:
                    self._flush(c)
                    if c.sock is None or not ev & _READABLE:
                        continue
                sock = c.sock
                try:
                    n = sock.recv_into(buf)
                except BlockingIOError:
                    continue
                except OSError:
                    self._fail(c, "read")
                    continue
                t = perf()
                if not n:
                    self._on_eof(c, t)
                    continue
                self.bytes_read += n
                c.deadline = t + timeout
                if c.pending:
                    data: bytes | bytearray = c.pending + view[:n]
                    c.pending = b""
                    end = len(data)
                else:
                    data = buf
                    end = n
                try:
                    done = feed(c, data, end, statuses)
                except ProtocolError as exc:
                    log.debug("bad response: %s", exc)
                    self._fail(c, "read")
                    continue
                if not done:
                    continue
                left = c.outstanding - done
                if left < 0:
                    log.debug("more responses than requests on fd %d", fd)
                    self._fail(c, "read")
                    continue
                hist.record(int((t - c.started) * 1_000_000), done)
                self.completed += done
                c.outstanding = left
                if left:
                    continue
                if inline_next and not c.closing and c.out is None:
                    c.started = t
                    c.outstanding = k
                    self.sent += k
                    try:
                        written = sock.send(batch)
                    except BlockingIOError:
                        written = 0
                    except OSError:
                        self._fail(c, "read")
                        continue
                    if written != batch_len:
                        self._hold(c, batch, written)
                else:
                    self._after_response(c, t)

        self.measure_end = now
        self.cpu_seconds = time.thread_time() - self.cpu_start
        self.running = False
        for c in self.slots:
            self._close(c)
        self.ep.close()

    def partial(self) -> dict[str, Any]:
        """This process's counters, in a JSON-able form the parent merges."""
        scheduled = None
        if self.rate is not None:
            scheduled = int((self.measure_end - self.t0) * self.rate) - int((self.measure_start - self.t0) * self.rate)
        return {
            "completed": self.completed,
            "sent": self.sent,
            "bytes_read": self.bytes_read,
            "errors": dict(self.errors),
            "statuses": {code: n for code, n in enumerate(self.statuses) if n},
            "connections_opened": self.connections_opened,
            "histogram": self.hist.to_dict(),
            "start": self.measure_start,
            "end": self.measure_end,
            "scheduled": scheduled,
            "cpu_seconds": self.cpu_seconds,
        }


# ---------------------------------------------------------------------------
# Running: one process or several
# ---------------------------------------------------------------------------


def _cpu_set(cpu: int | Sequence[int] | None) -> set[int] | None:
    if cpu is None:
        return None
    return {cpu} if isinstance(cpu, int) else set(cpu)


@contextlib.contextmanager
def _pinned(cpus: set[int] | None) -> Iterator[None]:
    """Pin this process to ``cpus`` for the block, then restore the old mask."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _split(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def _worker_main() -> int:
    """Body of one generator process (``python -m comparisons.loadgen --worker``).

    A tiny line protocol on stdin/stdout keeps the processes in step: the
    parent sends the job as one JSON line; the worker connects and answers
    ``ready``; the parent, once every worker is ready, sends ``go``; the
    worker runs and answers with its counters as one JSON line. A closed
    stdin before ``go`` means the parent is gone, and the worker exits.
    """
    logging.basicConfig(level=logging.WARNING, format="loadgen worker: %(message)s")
    try:
        job = json.loads(sys.stdin.readline())
        fields_ = dict(job["cfg"])
        fields_["body"] = base64.b64decode(fields_["body"])
        cfg = LoadConfig(**fields_)
        if job["cpus"]:
            os.sched_setaffinity(0, set(job["cpus"]))
        engine = _Engine(cfg, job["concurrency"], job["budget"], job["rate"])
        engine.prepare()
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 1
        engine.run()
        print(json.dumps(engine.partial()), flush=True)
    except Exception as exc:  # report to the parent rather than die silently
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    return 0


class _Worker:
    """The parent's handle on one worker process: start it, and read its stdout lines with a deadline."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "comparisons.loadgen", "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(),
        )
        self._buf = b""
        self.send(json.dumps(job))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def read_line(self, deadline: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError(f"generator process {self.proc.pid} did not report in time")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"generator process {self.proc.pid} exited (code {self.proc.wait()})")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _run_processes(cfg: LoadConfig) -> list[dict[str, Any]]:
    """Run ``cfg.processes`` worker processes, started together, and collect their counters.

    Workers are fresh interpreters (``-m comparisons.loadgen --worker``), not
    forks: the caller may have threads running (a test server, a
    ``Slowloris``), and unlike multiprocessing's "spawn" nothing requires the
    caller's script to guard its main module.
    """
    procs_n = cfg.processes
    cpu_list = sorted(_cpu_set(cfg.cpu) or ())
    cfg_fields = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    cfg_fields.update(body=base64.b64encode(cfg.body).decode(), cpu=None, processes=1)
    workers: list[_Worker] = []
    try:
        for i in range(procs_n):
            # One CPU per process when there are enough, else all share the set.
            cpus = [cpu_list[i]] if len(cpu_list) >= procs_n else cpu_list
            workers.append(_Worker({
                "cfg": cfg_fields,
                "concurrency": _split(cfg.concurrency, procs_n, i),
                "budget": _split(cfg.requests, procs_n, i) if cfg.requests is not None else None,
                "rate": cfg.rate / procs_n if cfg.rate is not None else None,
                "cpus": cpus,
            }))
        start_deadline = time.monotonic() + 60 + cfg.timeout
        for worker in workers:
            line = worker.read_line(start_deadline)
            if line != "ready":
                raise RuntimeError(f"generator process failed: {line}")
        for worker in workers:
            worker.send("go")  # all processes start measuring together
        run_time = cfg.warmup + (cfg.duration if cfg.duration is not None else cfg.time_limit)
        deadline = time.monotonic() + min(run_time, cfg.time_limit) + cfg.timeout + 30
        partials = [json.loads(worker.read_line(deadline)) for worker in workers]
    finally:
        for worker in workers:
            worker.close()
    for partial in partials:
        if "error" in partial:
            raise RuntimeError(f"generator process failed: {partial['error']}")
    return partials


def _combine(cfg: LoadConfig, partials: list[dict[str, Any]]) -> LoadResult:
    hist = Histogram.merged(Histogram.from_dict(p["histogram"]) for p in partials)
    statuses: dict[int, int] = {}
    errors = dict.fromkeys(ERROR_KINDS, 0)
    for p in partials:
        for code, count in p["statuses"].items():
            statuses[int(code)] = statuses.get(int(code), 0) + count
        for kind, count in p["errors"].items():
            errors[kind] += count
    errors["status"] = sum(count for code, count in statuses.items() if not 200 <= code < 300)
    requests = sum(p["completed"] for p in partials)
    duration = max(p["end"] for p in partials) - min(p["start"] for p in partials)
    duration = max(duration, 1e-9)
    scheduled = None
    if cfg.rate is not None:
        scheduled = sum(p["scheduled"] for p in partials)
    cpu = sum(p["cpu_seconds"] for p in partials) / (duration * len(partials))
    return LoadResult(
        url=cfg.url,
        mode=cfg.mode,
        concurrency=cfg.concurrency,
        requests=requests,
        duration=duration,
        rps=requests / duration,
        bytes_read=sum(p["bytes_read"] for p in partials),
        latency_ms=hist.summary_ms(),
        errors=errors,
        status_counts=dict(sorted(statuses.items())),
        connections_opened=sum(p["connections_opened"] for p in partials),
        sent=sum(p["sent"] for p in partials),
        tool="flash",
        processes=cfg.processes,
        pipeline=cfg.pipeline,
        rate=cfg.rate,
        scheduled=scheduled,
        generator_cpu=round(min(cpu, 1.0), 3),
        histogram=hist,
    )


def run(cfg: LoadConfig) -> LoadResult:
    """Run our generator as ``cfg`` says (in this process, or in ``cfg.processes`` processes)."""
    cfg.validate()
    log.info("load %s mode=%s c=%d processes=%d", cfg.url, cfg.mode, cfg.concurrency, cfg.processes)
    if cfg.processes == 1:
        with _pinned(_cpu_set(cfg.cpu)):
            engine = _Engine(cfg, cfg.concurrency, cfg.requests, cfg.rate)
            engine.prepare()
            engine.run()
        partials = [engine.partial()]
    else:
        partials = _run_processes(cfg)
    result = _combine(cfg, partials)
    log.info("load %s: %d requests, %.0f req/s, errors %s", cfg.url, result.requests, result.rps, result.errors)
    return result


def run_load(
    url: str,
    *,
    concurrency: int = 50,
    duration: float | None = 10.0,
    requests: int | None = None,
    warmup: float = 0.0,
    pipeline: int = 1,
    new_conn: bool = False,
    rate: float | None = None,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 5.0,
    processes: int = 1,
    cpu: int | Sequence[int] | None = None,
    prefer_wrk: bool = True,
) -> LoadResult:
    """Measure ``url``: with wrk when it is installed and can do the job, otherwise with ours.

    wrk is chosen only for plain closed-loop keep-alive runs bounded by
    duration (wrk cannot open a connection per request, run open-loop,
    pipeline without a script, or stop after N requests). ``processes``
    becomes wrk's thread count. See ``LoadConfig`` for the other knobs.
    """
    cpu_tuple = None if cpu is None else ((cpu,) if isinstance(cpu, int) else tuple(cpu))
    cfg = LoadConfig(
        url=url, concurrency=concurrency, duration=duration, requests=requests, warmup=warmup,
        pipeline=pipeline, new_conn=new_conn, rate=rate, method=method, headers=dict(headers or {}),
        body=body, timeout=timeout, processes=processes, cpu=cpu_tuple,
    )
    cfg.validate()
    if prefer_wrk and wrk_can_run(cfg):
        from comparisons import wrk

        assert cfg.duration is not None
        return wrk.run(
            url, connections=concurrency, duration=cfg.duration, threads=processes, warmup=warmup,
            method=method, headers=headers, body=body, timeout=timeout, cpu=cpu_tuple,
        )
    return run(cfg)


def wrk_can_run(cfg: LoadConfig) -> bool:
    """True if wrk is installed and ``cfg`` is a run wrk can do (closed-loop keep-alive, by duration)."""
    from comparisons import wrk

    return (
        wrk.available()
        and not cfg.new_conn
        and cfg.rate is None
        and cfg.pipeline == 1
        and cfg.requests is None
        and cfg.duration is not None
    )


def ceiling(
    concurrency: int = 50,
    duration: float = 3.0,
    *,
    pipeline: int = 1,
    new_conn: bool = False,
    processes: int = 1,
    warmup: float = 0.5,
    cpu: int | Sequence[int] | None = None,
    server_cpu: int | Sequence[int] | None = None,
    server_processes: int = 1,
    use_wrk: bool = False,
) -> LoadResult:
    """The generator's own limit: load ``comparisons.canned`` (a do-nothing server) and report.

    Compare a server's result against the ceiling measured with the same
    concurrency, pipelining, processes and pinning: near the ceiling, the
    generator (or the CPU it shares with the server) is what was measured.
    The canned server is Python too and costs about as much CPU per request
    as the generator, so with one process each the ceiling is the lower of
    the two: look at ``generator_cpu`` (near 1.0: the generator was the
    limit), and give the canned server ``server_processes`` if cores allow.
    ``use_wrk=True`` measures wrk's ceiling instead.
    """
    from comparisons.canned import CannedServer

    with CannedServer(processes=server_processes, cpu=server_cpu) as server:
        return run_load(
            server.url, concurrency=concurrency, duration=duration, warmup=warmup, pipeline=pipeline,
            new_conn=new_conn, processes=processes, cpu=cpu, prefer_wrk=use_wrk,
        )


# ---------------------------------------------------------------------------
# Adversarial clients: slowloris and idle connections
# ---------------------------------------------------------------------------


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
        self._ep.register(self._wake_r, _EPOLLIN)
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
        self._ep.register(fd, _EPOLLOUT)

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
            self._ep.modify(fd, _EPOLLIN)
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
        statuses = _new_statuses()
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
                    ep.register(sock.fileno(), _EPOLLOUT)
                now = perf()
                for fd in [fd for fd, (_, _, dl) in live.items() if dl[0] <= now]:
                    finish(fd, "timeout")
                for fd, ev in ep.poll(0.05):
                    sock, parser, deadline = live[fd]
                    deadline[0] = perf() + self.timeout
                    if ev & _EPOLLOUT:
                        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            finish(fd, "connect")
                            continue
                        ep.modify(fd, _EPOLLIN)
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


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m comparisons.loadgen URL -c 100 -d 5 [...]``; ``--ceiling`` measures the generator."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--worker"]:  # internal: one process of a processes=N run
        return _worker_main()
    parser = argparse.ArgumentParser(prog="python -m comparisons.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="http://host:port/path (omit with --ceiling)")
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds measured (0: no limit, use -n)")
    parser.add_argument("-n", "--requests", type=int, help="stop after this many requests")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds of unmeasured load first")
    parser.add_argument("--pipeline", type=int, default=1, metavar="K", help="requests per write")
    parser.add_argument("--new-conn", action="store_true", help="a new connection per request")
    parser.add_argument("--rate", type=float, help="open loop: total requests per second")
    parser.add_argument("--processes", type=int, default=1, help="generator processes (wrk: threads)")
    parser.add_argument("-X", "--method", default="GET")
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value' (repeatable)")
    parser.add_argument("--body-size", type=int, default=0, help="send a body of this many bytes")
    parser.add_argument("--timeout", type=float, default=5.0, help="per socket operation, seconds")
    parser.add_argument("--cpu", help="pin the generator to these CPUs, e.g. 0 or 0,1")
    parser.add_argument("--wrk", action="store_true", help="use wrk when installed and the mode allows")
    parser.add_argument("--ceiling", action="store_true", help="measure against comparisons.canned")
    parser.add_argument("--server-cpu", help="with --ceiling: pin the canned server")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(name)s: %(message)s")

    def cpus(text: str | None) -> tuple[int, ...] | None:
        return tuple(int(part) for part in text.split(",")) if text else None

    if args.ceiling:
        result = ceiling(
            args.concurrency, args.duration or 3.0, pipeline=args.pipeline, new_conn=args.new_conn,
            processes=args.processes, warmup=args.warmup, cpu=cpus(args.cpu), server_cpu=cpus(args.server_cpu),
            use_wrk=args.wrk,
        )
    else:
        if not args.url:
            parser.error("a URL is required (or --ceiling)")
        headers = {}
        for header in args.header:
            name, sep, value = header.partition(":")
            if not sep:
                parser.error(f"bad header {header!r}, expected 'Name: value'")
            headers[name.strip()] = value.strip()
        result = run_load(
            args.url, concurrency=args.concurrency, duration=args.duration or None, requests=args.requests,
            warmup=args.warmup, pipeline=args.pipeline, new_conn=args.new_conn, rate=args.rate,
            method=args.method, headers=headers, body=b"x" * args.body_size, timeout=args.timeout,
            processes=args.processes, cpu=cpus(args.cpu), prefer_wrk=args.wrk,
        )
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
