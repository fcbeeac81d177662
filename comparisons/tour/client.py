"""The experiments' clients: scripted connections that log their own times.

A server can only say when bytes reached it. How long a client waited
before that - its connection queued in the listen backlog, its request
sitting in a socket buffer nobody reads - only the client knows. So each
`Actor` is one client connection, run on its own thread: it connects at
its start time, sends its requests one after another on that connection
(trickling the first one when it plays a slow client), and logs, per
request, when it connected, began and finished sending, and when the
response began and ended - on `time.monotonic()`, the clock the server's
trace uses (`flash_green.tracing`), so both logs share one time axis.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import asdict, dataclass

from comparisons.loadgen.framing import ProtocolError, ResponseParser, new_statuses

#: Pieces a trickled request head is cut into.
TRICKLE_PIECES = 10


@dataclass(frozen=True)
class Actor:
    """One client connection of an experiment."""

    name: str
    #: Actors of one group are summed up together ("slow client", "others").
    group: str
    path: str
    #: Seconds after the experiment's start at which it connects.
    start: float = 0.0
    #: Requests sent one after another on the connection (keep-alive).
    requests: int = 1
    #: Seconds over which the first request's head is trickled (0: at once).
    trickle: float = 0.0


@dataclass
class Exchange:
    """What one request of an actor saw (seconds on the monotonic clock)."""

    actor: str
    group: str
    path: str
    index: int
    port: int = 0
    connect: float = 0.0
    send: float = 0.0
    sent: float = 0.0
    response: float = 0.0
    done: float = 0.0
    status: int = 0
    error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def request_bytes(path: str, host: str, last: bool) -> bytes:
    close = "Connection: close\r\n" if last else ""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: flash-tour\r\n{close}\r\n".encode()


def play(actor: Actor, address: tuple[str, int], t0: float, timeout: float) -> list[Exchange]:
    """Run `actor` against `address`, its start counted from `t0`; one Exchange per request."""
    delay = t0 + actor.start - time.monotonic()
    if delay > 0:
        time.sleep(delay)  # the experiment's script: this client arrives now
    log = [Exchange(actor.name, actor.group, actor.path, i) for i in range(actor.requests)]
    first = log[0]
    first.connect = time.monotonic()
    try:
        sock = socket.create_connection(address, timeout=timeout)
    except OSError as exc:
        first.error = f"connect: {exc}"
        return log[:1]
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        port = sock.getsockname()[1]
        parser = ResponseParser()
        for i, entry in enumerate(log):
            entry.port = port
            entry.connect = entry.connect or first.connect
            data = request_bytes(actor.path, address[0], last=i == actor.requests - 1)
            try:
                _send(sock, data, actor.trickle if i == 0 else 0.0, entry)
                _receive(sock, parser, entry)
            except (OSError, ProtocolError) as exc:
                entry.error = f"{type(exc).__name__}: {exc}"
                return log[:i + 1]
    return log


def _send(sock: socket.socket, data: bytes, trickle: float, entry: Exchange) -> None:
    entry.send = time.monotonic()
    if trickle <= 0:
        sock.sendall(data)
    else:
        size = max(1, len(data) // TRICKLE_PIECES)
        pieces = [data[i:i + size] for i in range(0, len(data), size)]
        for i, piece in enumerate(pieces):
            sock.sendall(piece)
            if i < len(pieces) - 1:
                time.sleep(trickle / (len(pieces) - 1))  # the slow client's pace
    entry.sent = time.monotonic()


def _receive(sock: socket.socket, parser: ResponseParser, entry: Exchange) -> None:
    statuses = new_statuses()
    pending = b""
    while True:
        data = sock.recv(65536)
        if not entry.response:
            entry.response = time.monotonic()
        if not data:
            if parser.finish_at_eof(statuses):
                break
            raise ProtocolError("the server closed the connection before the response ended")
        data = pending + data
        parser.pending = b""
        if parser.feed(data, len(data), statuses):
            break
        pending = parser.pending
    entry.done = time.monotonic()
    entry.status = next(code for code, count in enumerate(statuses) if count)


def play_all(actors: list[Actor], address: tuple[str, int], t0: float,
             timeout: float = 30.0) -> list[Exchange]:
    """Run every actor on its own thread; return all their exchanges."""
    results: list[list[Exchange]] = [[] for _ in actors]

    def run(i: int, actor: Actor) -> None:
        results[i] = play(actor, address, t0, timeout)

    threads = [threading.Thread(target=run, args=(i, a), name=f"actor-{a.name}", daemon=True)
               for i, a in enumerate(actors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + max(a.start + a.trickle for a in actors) + 5)
    return [entry for log in results for entry in log]
