"""A canned-response HTTP server: the fastest "server" Python can be, to measure the load generator.

A load generator is a program too, and it has a ceiling: past some request
rate it, not the server under test, is the bottleneck. This module finds that
ceiling. It answers every request head it sees with the same fixed
``Hello, World!`` response, doing no parsing at all beyond counting the
``\\r\\n\\r\\n`` that end request heads. Whatever rate the generator reaches
against it is the most it can measure; ``comparisons.loadgen.ceiling()`` runs
exactly that experiment.

It is Python too, and costs roughly as much CPU per request as the
generator does, so on a small machine the "ceiling" is the lower of the
two; ``LoadResult.generator_cpu`` says which (near 1.0: the generator), and
``--processes`` gives the canned server more cores when there are some.

**Reading results:** if a server's measured rate is close to (say within
20 % of) the generator's ceiling measured with the same concurrency, pipelining
and CPU pinning, the number says more about the generator than the server; use
more generator processes, wrk, or another machine before drawing conclusions.

What it does and deliberately does not do:

* one ``select.epoll`` loop per process, non-blocking sockets, keep-alive;
* pipelining-aware: a read holding K request heads gets K responses in one
  ``send`` (a head split across two reads is still counted once, because the
  last 3 bytes of each read are carried over);
* a request carrying ``Connection: close`` (as the generator's
  new-connection mode sends) is answered with ``Connection: close`` and the
  socket is closed after the response is written;
* request bodies are NOT understood (a body containing ``\\r\\n\\r\\n`` would
  be counted as a request) and HEAD still gets a body: use it for GETs only.

Run it as ``python -m comparisons.canned --port 0``; the first line on stdout
is the bound port. ``--exit-on-stdin-eof`` makes it exit when its parent goes
away, which is how ``CannedServer`` guarantees it never outlives a test.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import select
import signal
import socket
import sys
from typing import Sequence

from comparisons.childproc import HelperService

log = logging.getLogger(__name__)

BODY = b"Hello, World!"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"\r\n" + BODY
)
CLOSE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"Connection: close\r\n"
    b"\r\n" + BODY
)

_HEAD_END = b"\r\n\r\n"
_RECV_SIZE = 256 * 1024


def bind(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """A non-blocking listening socket (``SO_REUSEADDR`` so restarts do not wait)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def serve(listener: socket.socket, stop_fd: int | None = None) -> None:
    """Run the canned-response loop on ``listener`` until ``stop_fd`` is readable or at EOF.

    Per connection the loop keeps only a 3-byte tail (to catch a request
    terminator split across two reads) and, rarely, unsent output.
    """
    ep = select.epoll()
    lfd = listener.fileno()
    # EPOLLEXCLUSIVE: when several processes share the listener, wake one.
    ep.register(lfd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
    if stop_fd is not None:
        ep.register(stop_fd, select.EPOLLIN)
    socks: dict[int, socket.socket] = {}
    tails: dict[int, bytes] = {}
    unsent: dict[int, memoryview] = {}
    closing: set[int] = set()
    buf = bytearray(_RECV_SIZE)
    view = memoryview(buf)
    resp, close_resp = RESPONSE, CLOSE_RESPONSE

    def drop(fd: int) -> None:
        sock = socks.pop(fd)
        tails.pop(fd, None)
        unsent.pop(fd, None)
        closing.discard(fd)
        ep.unregister(fd)
        sock.close()

    def write(fd: int, data: bytes | memoryview) -> None:
        try:
            sent = socks[fd].send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            drop(fd)
            return
        if sent < len(data):
            # The client is not reading; keep the rest until it is writable.
            unsent[fd] = memoryview(data)[sent:]
            ep.modify(fd, select.EPOLLIN | select.EPOLLOUT)
        elif fd in unsent:
            del unsent[fd]
            ep.modify(fd, select.EPOLLIN)
            if fd in closing:
                drop(fd)
        elif fd in closing:
            drop(fd)

    try:
        while True:
            for fd, events in ep.poll():
                if fd == lfd:
                    while True:
                        try:
                            conn, _ = listener.accept()
                        except BlockingIOError:
                            break
                        except OSError as exc:
                            # EMFILE and friends: log and keep serving the
                            # connections we already have.
                            log.warning("accept failed: %s", exc)
                            break
                        conn.setblocking(False)
                        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        socks[conn.fileno()] = conn
                        ep.register(conn.fileno(), select.EPOLLIN)
                    continue
                if fd == stop_fd:
                    return
                if events & select.EPOLLOUT and fd in unsent:
                    write(fd, unsent[fd])
                    if fd not in socks or not events & select.EPOLLIN:
                        continue
                try:
                    n = socks[fd].recv_into(buf)
                except BlockingIOError:
                    continue
                except OSError:
                    drop(fd)
                    continue
                if not n:
                    drop(fd)
                    continue
                tail = tails.get(fd)
                data = tail + view[:n] if tail else buf
                end = len(data) if tail else n
                count = data.count(_HEAD_END, 0, end)
                if data.endswith(_HEAD_END, 0, end):
                    # The usual case: the read ended on a head boundary.
                    if tail:
                        del tails[fd]
                else:
                    # Carry 3 bytes: a terminator cannot fit in them, so
                    # nothing is counted twice, yet a split one is found.
                    tails[fd] = bytes(data[max(0, end - 3) : end])
                if not count:
                    continue
                if data.find(b"onnection: close", 0, end) >= 0 or data.find(b"onnection: Close", 0, end) >= 0:
                    closing.add(fd)
                    write(fd, resp * (count - 1) + close_resp)
                else:
                    write(fd, resp if count == 1 else resp * count)
    finally:
        for fd in list(socks):
            drop(fd)
        ep.close()


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: bind, print the port, serve (optionally in several forked processes)."""
    parser = argparse.ArgumentParser(prog="python -m comparisons.canned", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--processes", type=int, default=1, help="forked processes sharing the listener")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when stdin closes (parent gone)")
    args = parser.parse_args(argv)

    listener = bind(args.host, args.port)
    print(listener.getsockname()[1], flush=True)
    stop_fd = sys.stdin.fileno() if args.exit_on_stdin_eof else None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    children: list[int] = []
    for _ in range(max(0, args.processes - 1)):
        pid = os.fork()
        if pid == 0:
            try:
                serve(listener, stop_fd)
            finally:
                os._exit(0)
        children.append(pid)
    try:
        serve(listener, stop_fd)
    except KeyboardInterrupt:
        pass
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except OSError as exc:
                if exc.errno not in (errno.ESRCH, errno.ECHILD):
                    raise


class CannedServer(HelperService):
    """Run the canned server in a subprocess for the duration of a ``with`` block.

    ``cpu`` pins the server to those CPUs (so it and the generator do not
    fight over one core while measuring the ceiling). The subprocess exits on
    ``__exit__``, and also by itself if this process dies, because its stdin
    is a pipe from us.
    """

    module = "comparisons.canned"
    title = "canned server"

    def __init__(
        self,
        host: str = "127.0.0.1",
        processes: int = 1,
        cpu: int | Sequence[int] | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        super().__init__(host, cpu, start_timeout)
        self.processes = processes

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def arguments(self) -> list[str]:
        return ["--processes", str(self.processes)]


if __name__ == "__main__":
    main()
