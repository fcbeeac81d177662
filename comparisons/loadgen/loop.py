"""The load loop of one generator process: one epoll loop over many connection slots.

Each process runs ONE ``select.epoll`` loop over ``concurrency`` connection
"slots". A slot owns at most one socket plus an incremental response parser
(``ResponseParser``, see ``framing``). Everything is non-blocking and
level-triggered; the loop reads with ``recv_into`` into one preallocated
buffer and lets the parser find response boundaries. ``LoadLoop.prepare()``
connects (keep-alive modes connect before the clock starts), ``run()``
measures until the duration, the request budget or the time limit runs out,
and ``partial()`` reports this process's counters in the JSON form that
``runner.combine`` merges - for one process or for the ``processes=N`` that
``fanout`` starts.

The hot path (a response arrives, the next request goes out) lives inline in
``run()`` with its lookups in locals; the rare paths (connect, EOF, a full
send buffer, timeouts, the open-loop schedule) are methods.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import select
import socket
import time
from typing import Any

from comparisons.childproc import raise_fd_limit
from comparisons.histogram import Histogram
from comparisons.load_result import ERROR_KINDS
from comparisons.loadgen.config import LoadConfig
from comparisons.loadgen.framing import ProtocolError, ResponseParser, new_statuses
from comparisons.loadgen.request import build_request, parse_url

log = logging.getLogger(__name__)

_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_READABLE = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP

#: Pause before re-dialling after a failed connect, so that a closed port
#: produces a few hundred errors a second per slot rather than a busy loop.
_CONNECT_RETRY_DELAY = 0.01
_RECV_SIZE = 256 * 1024


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


class LoadLoop:
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
        self.statuses = new_statuses()
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
