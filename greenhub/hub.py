"""A hub for greenlets, by hand: what gevent and eventlet do, in a few hundred lines.

A greenlet is a function with its own stack that can be paused anywhere and
resumed later with `switch()`. That is all the `greenlet` package provides:
no scheduler, no I/O, no timers. This module (the `greenhub` package, a
runtime beside `tasklets` that imports nothing of the server) adds the rest.

The hub
    One greenlet, the hub, runs the event loop: `epoll` for file descriptors
    and a heap of timers. Every other greenlet runs plain blocking-style code.
    When that code would block (a `recv` with no data, a full send buffer, an
    `accept` with nobody waiting) the cooperative socket registers the
    greenlet as the fd's waiter and switches to the hub. The hub polls, and
    when epoll reports the fd ready it switches straight back into the waiter,
    which retries the system call. From the waiter's point of view `recv`
    simply returned: no callbacks, no `yield`, no `await`. That is "no
    function colour": the same `serve_connection` that runs in a thread runs
    here in a greenlet, and becomes concurrent.

One pass of the loop (curio's kernel is the model):

    1. run the greenlets that were ready when the pass began (not the ones
       they make ready: no starvation by a greenlet that keeps rescheduling);
    2. epoll.poll(0 if anything is ready, else until the next timer, else
       forever);
    3. switch into the waiter of every ready fd;
    4. run the timers that are due (timeouts, sleeps).

Discussion: the rules that keep it correct
    * One waiter per fd and direction. A second reader on the same fd is a
      bug (who would get the bytes?), so it raises instead of silently
      replacing the first waiter, which would never be woken (a lost wake-up).
    * Every wait is inside a retry loop: a wake-up only means "try again".
      That makes spurious wake-ups harmless, and they happen: an fd closed and
      reused within one batch of epoll events can deliver a stale event to
      the new socket's waiter, which just gets EAGAIN and waits again.
    * Closing a socket wakes its waiters with an error and removes the fd
      from epoll before the fd number can be reused.
    * Registration is lazy (curio's trick): after a wake-up the fd stays in
      epoll, because a keep-alive connection will wait on it again in a
      moment; the interest is dropped only when epoll reports an event nobody
      waits for. In steady state a request costs no `epoll_ctl` at all.
    * Cancelled timers stay in the heap and are skipped when popped; when
      they are more than half the heap, it is rebuilt (asyncio does the same).
      Each wait with a timeout creates one timer, so this matters.

TLS
    `CooperativeTLSSocket` is the same idea over OpenSSL: each call tries
    first, and OpenSSL's "I need more of the client's bytes"
    (SSLWantReadError) or "I need room to send" (SSLWantWriteError) becomes
    a wait in the hub for that direction - the handshake needs both.
    Because every call tries OpenSSL first, bytes it already decrypted and
    holds (`pending()`, which epoll cannot see) are returned at once,
    never waited for.

What the hub cannot do
    It only knows about waits that go through it. `time.sleep`, a C library
    doing its own blocking I/O, or a plain `socket.socket` in the app block
    the whole OS thread, and with it every greenlet. gevent and eventlet
    answer with monkey-patching (replace `time.sleep`, `socket` ... with
    cooperative versions); here the app calls `greenhub.sleep` and
    `greenhub.create_connection` explicitly.
"""

from __future__ import annotations

import errno
import heapq
import logging
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from greenlet import getcurrent, greenlet

if TYPE_CHECKING:
    from typing import Self

log = logging.getLogger("flash.greenhub")

_READ = select.EPOLLIN
_WRITE = select.EPOLLOUT
#: Errors and hang-ups wake both directions: the retried call reports them.
_FAILED = select.EPOLLERR | select.EPOLLHUP

#: Rebuild the timer heap when cancelled entries are more than this share of
#: it (and more than _MIN_CANCELLED_REBUILD of them).
_CANCELLED_SHARE = 0.5
_MIN_CANCELLED_REBUILD = 64


class HubError(RuntimeError):
    """Misuse of the hub: a second waiter on one fd, a deadlock, a wait in the hub."""


@dataclass
class HubStats:
    """What the loop did; `--stats` shows it."""

    switches_in: int = 0
    polls: int = 0
    epoll_ctl: int = 0
    timers_run: int = 0
    spawned: int = 0


class Timer:
    """A callback due at `deadline` (time.monotonic). Cancel is lazy."""

    __slots__ = ("_hub", "args", "callback", "cancelled", "deadline")

    def __init__(self, hub: Hub, deadline: float, callback: Callable, args: tuple) -> None:
        self._hub = hub
        self.deadline = deadline
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._hub._timer_cancelled()

    def __lt__(self, other: Timer) -> bool:
        return self.deadline < other.deadline


class Hub:
    """The event loop greenlet. Use `run(main)` from the thread's main greenlet."""

    def __init__(self, poller: select.epoll | None = None) -> None:
        #: What the loop waits in: a new epoll, or one an engine passes in
        #: (the greenlet engine's is counted for --stats).
        self._epoll = select.epoll() if poller is None else poller
        self._readers: dict[int, greenlet] = {}
        self._writers: dict[int, greenlet] = {}
        #: What each fd is registered for in epoll (lazy: may exceed waiters).
        self._interest: dict[int, int] = {}
        self._timers: list[Timer] = []
        self._cancelled_timers = 0
        self._ready: deque[tuple[greenlet, object]] = deque()
        self._running = False
        self.greenlet: greenlet | None = None
        self.stats = HubStats()

    # -- running ---------------------------------------------------------------

    def run(self, main: Callable, *args) -> object:
        """Run `main(*args)` in a greenlet, and the loop until it returns."""
        if self.greenlet is not None:
            raise HubError("the hub is already running")
        outcome: list = []

        def main_task():
            try:
                outcome.append((True, main(*args)))
            except BaseException as exc:  # noqa: BLE001 - re-raised by run() in the caller
                outcome.append((False, exc))
            finally:
                self._running = False

        self._running = True
        self.greenlet = greenlet(self._loop)
        self.spawn(main_task, _log_errors=False)
        try:
            self.greenlet.switch()
        finally:
            self.greenlet = None
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def spawn(self, function: Callable, *args, _log_errors: bool = True) -> greenlet:
        """Start `function(*args)` in a new greenlet at the hub's next pass.

        An exception that escapes a spawned greenlet is logged: letting it
        propagate would raise it in the hub (the parent) and stop everything.
        """
        def task():
            try:
                function(*args)
            except Exception:
                log.exception("greenlet %s failed", getattr(function, "__name__", function))

        child = greenlet(task if _log_errors else function, parent=self.greenlet)
        self.stats.spawned += 1
        self._ready.append((child, None))
        return child

    def schedule(self, target: greenlet, value: object = None) -> None:
        """Resume `target` with `value` at the next pass (an exception is raised there)."""
        self._ready.append((target, value))

    def _loop(self) -> None:
        poll = self._epoll.poll
        stats = self.stats
        while self._running:
            self._run_ready()
            if not self._running:
                break
            events = poll(self._poll_timeout())
            stats.polls += 1
            for fd, mask in events:
                self._dispatch(fd, mask)
            if self._timers:
                self._run_timers()

    def _run_ready(self) -> None:
        ready = self._ready
        for _ in range(len(ready)):
            target, value = ready.popleft()
            if not target.dead:
                self.stats.switches_in += 1
                # A greenlet's first switch passes its arguments to its function.
                if value is None:
                    target.switch()
                else:
                    target.switch(value)

    def _poll_timeout(self) -> float:
        if self._ready:
            return 0
        timers = self._timers
        while timers and timers[0].cancelled:
            heapq.heappop(timers)
            self._cancelled_timers -= 1
        if timers:
            return max(0.0, timers[0].deadline - time.monotonic())
        if not self._readers and not self._writers:
            raise HubError("deadlock: every greenlet waits, and nothing can wake any of them")
        return -1

    def _dispatch(self, fd: int, mask: int) -> None:
        woken = 0
        if mask & (_READ | _FAILED):
            reader = self._readers.pop(fd, None)
            if reader is not None:
                woken |= _READ
                self.stats.switches_in += 1
                reader.switch()
        if mask & (_WRITE | _FAILED):
            writer = self._writers.pop(fd, None)
            if writer is not None:
                woken |= _WRITE
                self.stats.switches_in += 1
                writer.switch()
        if not woken:
            # An event nobody waits for: drop the interest now (lazy removal).
            self._set_interest(fd, self._wanted(fd))

    def _run_timers(self) -> None:
        timers = self._timers
        now = time.monotonic()
        while timers and timers[0].deadline <= now:
            timer = heapq.heappop(timers)
            if timer.cancelled:
                self._cancelled_timers -= 1
                continue
            timer.cancelled = True
            self.stats.timers_run += 1
            try:
                timer.callback(*timer.args)
            except Exception:
                log.exception("timer callback %r failed", timer.callback)

    # -- waiting for file descriptors ------------------------------------------

    def wait_readable(self, fd: int, timeout: float | None = None) -> None:
        """Suspend this greenlet until `fd` is readable; socket.timeout after `timeout`."""
        self._wait(fd, self._readers, timeout)

    def wait_writable(self, fd: int, timeout: float | None = None) -> None:
        self._wait(fd, self._writers, timeout)

    def _wait(self, fd: int, waiters: dict[int, greenlet], timeout: float | None) -> None:
        current = getcurrent()
        if current is self.greenlet:
            raise HubError("the hub cannot wait: it is the one that wakes everybody")
        if fd in waiters:
            raise HubError(f"fd {fd} already has a waiting greenlet in that direction")
        waiters[fd] = current
        wanted = self._wanted(fd)
        if self._interest.get(fd, 0) & wanted != wanted:
            self._set_interest(fd, self._interest.get(fd, 0) | wanted)
        timer = None
        if timeout is not None:
            timer = self.call_later(timeout, self._expire, fd, waiters, current)
        try:
            outcome = self.greenlet.switch()
        finally:
            if waiters.get(fd) is current:
                del waiters[fd]
            if timer is not None:
                timer.cancel()
        if isinstance(outcome, BaseException):
            raise outcome

    def _wanted(self, fd: int) -> int:
        return (_READ if fd in self._readers else 0) | (_WRITE if fd in self._writers else 0)

    def _set_interest(self, fd: int, mask: int) -> None:
        current = self._interest.get(fd, 0)
        if mask == current:
            return
        self.stats.epoll_ctl += 1
        if not mask:
            del self._interest[fd]
            self._epoll.unregister(fd)
        elif current:
            self._interest[fd] = mask
            self._epoll.modify(fd, mask)
        else:
            self._interest[fd] = mask
            self._epoll.register(fd, mask)

    def _expire(self, fd: int, waiters: dict[int, greenlet], waiter: greenlet) -> None:
        if waiters.get(fd) is waiter:
            del waiters[fd]
            self.stats.switches_in += 1
            waiter.switch(TimeoutError("timed out"))

    def forget_fd(self, fd: int) -> None:
        """`fd` is about to be closed: wake its waiters with an error, leave epoll.

        Must run before the close, so the number cannot be reused while a
        registration or a waiter still points at it.
        """
        for waiters in (self._readers, self._writers):
            waiter = waiters.pop(fd, None)
            if waiter is not None:
                self.schedule(waiter, OSError(errno.EBADF, "socket closed while waiting on it"))
        if fd in self._interest:
            self._set_interest(fd, 0)

    # -- time ------------------------------------------------------------------

    def call_later(self, delay: float, callback: Callable, *args) -> Timer:
        """Run `callback(*args)` in the hub after `delay` seconds."""
        timer = Timer(self, time.monotonic() + delay, callback, args)
        heapq.heappush(self._timers, timer)
        return timer

    def _timer_cancelled(self) -> None:
        self._cancelled_timers += 1
        timers = self._timers
        if (self._cancelled_timers > _MIN_CANCELLED_REBUILD
                and self._cancelled_timers > _CANCELLED_SHARE * len(timers)):
            self._timers = [t for t in timers if not t.cancelled]
            heapq.heapify(self._timers)
            self._cancelled_timers = 0

    def sleep(self, seconds: float) -> None:
        """Suspend the calling greenlet for `seconds`; 0 just lets others run."""
        current = getcurrent()
        if seconds <= 0:
            self.schedule(current)
            self.greenlet.switch()
            return
        timer = self.call_later(seconds, current.switch)
        try:
            self.greenlet.switch()
        finally:
            timer.cancel()

    def close(self) -> None:
        self._epoll.close()


class Event:
    """Wait until something happened: `set()` wakes every `wait()`er."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._flag = False
        self._waiters: list[greenlet] = []

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._hub.schedule(waiter)

    def clear(self) -> None:
        self._flag = False

    def wait(self) -> None:
        if self._flag:
            return
        self._waiters.append(getcurrent())
        self._hub.greenlet.switch()


class CooperativeSocket:
    """A socket whose blocking calls switch to the hub instead of blocking.

    It offers what blocking-style code uses (`recv`, `sendall`, `accept`,
    `connect`, `settimeout` ...) with the usual semantics, including
    `socket.timeout`. Underneath the OS socket is non-blocking: each call
    tries the system call first and waits in the hub only on EAGAIN.
    """

    __slots__ = ("_fd", "_hub", "_recv", "_send", "_sock", "_timeout")

    def __init__(self, sock: socket.socket, hub: Hub) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._hub = hub
        self._timeout: float | None = None
        self._recv = sock.recv
        self._send = sock.send

    # the blocking calls, made cooperative

    def recv(self, size: int) -> bytes:
        while True:
            try:
                return self._recv(size)
            except BlockingIOError:
                self._hub.wait_readable(self._fd, self._timeout)

    def send(self, data: bytes) -> int:
        while True:
            try:
                return self._send(data)
            except BlockingIOError:
                self._hub.wait_writable(self._fd, self._timeout)

    def sendall(self, data: bytes) -> None:
        try:
            sent = self._send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        while view:
            self._hub.wait_writable(self._fd, self._timeout)
            try:
                sent = self._send(view)
            except BlockingIOError:
                continue
            view = view[sent:]

    def accept(self) -> tuple[CooperativeSocket, object]:
        while True:
            try:
                sock, peer = self._sock.accept()
            except BlockingIOError:
                self._hub.wait_readable(self._fd, self._timeout)
                continue
            return CooperativeSocket(sock, self._hub), peer

    def connect(self, address) -> None:
        while True:
            code = self._sock.connect_ex(address)
            if code in (0, errno.EISCONN):
                return
            if code not in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
                raise OSError(code, errno.errorcode.get(code, "connect failed"))
            self._hub.wait_writable(self._fd, self._timeout)

    def start_tls(self, context: ssl.SSLContext) -> CooperativeTLSSocket:
        """This accepted connection from now on speaks TLS, as the server; the
        handshake is the caller's next step (`do_handshake`). Use the
        returned socket, not this one."""
        tls_sock = context.wrap_socket(self._sock, server_side=True, do_handshake_on_connect=False)
        return CooperativeTLSSocket(tls_sock, self._hub)

    # the rest is the plain socket's

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        if self._fd >= 0:
            self._hub.forget_fd(self._fd)
            self._fd = -1
        self._sock.close()

    def fileno(self) -> int:
        return self._fd

    def getsockname(self):
        return self._sock.getsockname()

    def getpeername(self):
        return self._sock.getpeername()

    def setsockopt(self, *args) -> None:
        self._sock.setsockopt(*args)

    def getsockopt(self, *args):
        return self._sock.getsockopt(*args)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CooperativeTLSSocket(CooperativeSocket):
    """A `CooperativeSocket` over a non-blocking `ssl.SSLSocket`.

    Each call tries OpenSSL first and waits in the hub in the direction
    OpenSSL names (after `shutdown`, the socket reads and writes raw bytes,
    and an empty one says EAGAIN as a plain one does).
    """

    __slots__ = ()

    def _cooperate(self, call, *args):
        """`call(*args)` until it neither wants to read nor to write."""
        wait_readable, wait_writable = self._hub.wait_readable, self._hub.wait_writable
        while True:
            try:
                return call(*args)
            except ssl.SSLWantReadError:
                wait_readable(self._fd, self._timeout)
            except ssl.SSLWantWriteError:
                wait_writable(self._fd, self._timeout)

    def do_handshake(self) -> None:
        self._cooperate(self._sock.do_handshake)

    def recv(self, size: int) -> bytes:
        while True:
            try:
                return self._cooperate(self._recv, size)
            except BlockingIOError:
                self._hub.wait_readable(self._fd, self._timeout)

    def send(self, data: bytes) -> int:
        while True:
            try:
                return self._cooperate(self._send, data)
            except BlockingIOError:
                self._hub.wait_writable(self._fd, self._timeout)

    def sendall(self, data: bytes) -> None:
        """OpenSSL takes a whole buffer or, after a wait, the same one again:
        `send` returns only once all of it is taken."""
        view = memoryview(data)
        while view:
            view = view[self.send(view):]

    def unwrap(self) -> None:
        """Send close_notify: one attempt, never a wait for the client's
        answer (SSLWantReadError then says it is not there yet)."""
        self._sock.unwrap()


# -- the hub of this thread, for application code ------------------------------

_current_hub: Hub | None = None


def install(hub: Hub | None) -> None:
    """Make `hub` the one `sleep` and `create_connection` use (None: none)."""
    global _current_hub
    _current_hub = hub


def get_hub() -> Hub | None:
    return _current_hub


def sleep(seconds: float) -> None:
    """A sleep that lets other greenlets run; outside a running hub, time.sleep."""
    hub = _current_hub
    if hub is None or hub.greenlet is None or getcurrent() is hub.greenlet:
        time.sleep(seconds)
    else:
        hub.sleep(seconds)


def create_connection(address: tuple[str, int], timeout: float | None = None):
    """Connect a TCP socket; cooperative inside a running hub, plain outside."""
    hub = _current_hub
    if hub is None or hub.greenlet is None:
        return socket.create_connection(address, timeout)
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = CooperativeSocket(socket.socket(family, socket.SOCK_STREAM), hub)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock
