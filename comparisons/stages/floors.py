"""The stage floors: each stage of a hello request timed alone, in this process, on the real objects.

One keep-alive connection of an engine, minus the loop: a `ServerConnection`
parses wrk's request, a `WSGIContext` built as `Engine.wsgi_context` builds
it (with the proxy-header hook the default `--forwarded-allow-ips` installs)
makes the environ, an `Exchange` runs the demo app's hello, and
`ServerConnection.respond` builds the head. The socket calls are real
syscalls on a TCP loopback connection (the kernel path the servers use, not
a Unix socketpair):

* send: the server sends the hello response `SEND_BATCH` times, then the
  client drains them all at once; only the sends are timed;
* recv: the client sends wrk's request and the server receives it, per
  iteration; that is one small send plus one recv, so recv = (that) - send.

Each stage is timed in batches with `time.process_time` (this process's CPU
time: time descheduled by a busy neighbour does not count), in interleaved
rounds (bench_parser's `interleaved`), and the figure is the median of the
rounds in microseconds per request. These are floors: hot caches, one
connection, no wake-ups. Under load the same code runs colder, which is
why the load table samples the real servers too (`sampling`).
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from comparisons.bench_parser import interleaved
from flash_green import proxy
from flash_green.apps.demo import app as demo_app
from flash_green.config import Config
from flash_green.http import END, NEED_DATA, Request, ServerConnection
from flash_green.wsgi import Exchange, WSGIContext, input_from_pieces, peer_keys

#: What `wrk -t1 -c100 http://127.0.0.1:PORT/` sends on every request.
WRK_GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
PEER = ("127.0.0.1", 40000)
#: The demo app's hello, as it calls start_response (a fresh list each time).
HELLO_STATUS = "200 OK"
HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "13")]
RECV_SIZE = 65536
SEND_BATCH = 32

#: The pure stages, in the order a request meets them (the table's columns).
PURE_STAGES = ("parse", "environ", "app", "head")
IO_STAGES = ("recv", "send")


def engine_context(config: Config) -> WSGIContext:
    """The WSGIContext an engine serving the demo app on 127.0.0.1 builds (see Engine.wsgi_context)."""
    return WSGIContext(demo_app, "127.0.0.1", 8080, server_header=config.server_header,
                       front=proxy.front_for(socket.AF_INET, config.forwarded_allow_ips))


class HelloConnection:
    """One steady keep-alive connection's objects, each stage a method."""

    def __init__(self) -> None:
        config = Config()
        self.ctx = engine_context(config)
        self.conn = ServerConnection(config.limits, config.server_header)
        # A second connection stays mid-request, as the app and head stages
        # see it (the first is cycled back to idle by every parse).
        self.answering = ServerConnection(config.limits, config.server_header)
        self.answering.receive_data(WRK_GET)
        self.request: Request = self.answering.next_event()
        self.environ = self.make_environ()
        self.response = b"".join(self.exchange())

    def parse(self) -> Request:
        """What the pump does per request: head, END, and back to idle."""
        conn = self.conn
        conn.receive_data(WRK_GET)
        request = conn.next_event()
        if conn.next_event() is not END or not conn.start_next_cycle() or conn.next_event() is not NEED_DATA:
            raise AssertionError("wrk's request did not parse as one whole request")
        return request

    def make_environ(self) -> dict:
        ctx = self.ctx
        return ctx.environ(peer_keys(PEER), self.request, input_from_pieces(None))

    def exchange(self) -> list[bytes]:
        """The app through Exchange: start_response, the head, framing."""
        return Exchange(self.ctx, self.answering, self.environ).run()

    def head(self) -> bytes:
        return self.answering.respond(HELLO_STATUS, list(HELLO_HEADERS), True, 13)[0]


@dataclass
class LoopbackPair:
    """A connected TCP pair on 127.0.0.1, the server end non-blocking as in the engines."""

    client: socket.socket
    server: socket.socket

    @classmethod
    def open(cls) -> LoopbackPair:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.setblocking(False)
        return cls(client, server)

    def close(self) -> None:
        self.client.close()
        self.server.close()

    def sends(self, response: bytes) -> float:
        """CPU seconds of SEND_BATCH server sends (the client's drain not counted)."""
        send = self.server.send
        started = time.process_time()
        for _ in range(SEND_BATCH):
            send(response)
        spent = time.process_time() - started
        self.drain(len(response) * SEND_BATCH)
        return spent

    def drain(self, size: int) -> None:
        got = 0
        while got < size:
            got += len(self.client.recv(RECV_SIZE))

    def round_trip(self) -> None:
        """One small send (the client's request) and the server's recv of it."""
        self.client.send(WRK_GET)
        while True:
            try:
                self.server.recv(RECV_SIZE)
                return
            except BlockingIOError:
                continue  # not yet queued on our side: loopback delivery is synchronous, rare


def send_us(pair: LoopbackPair, response: bytes, budget: float) -> float:
    """Microseconds of CPU per server send, median of batches filling `budget` seconds."""
    samples = []
    deadline = time.process_time() + budget
    while not samples or time.process_time() < deadline:
        samples.append(pair.sends(response) / SEND_BATCH * 1e6)
    return statistics.median(samples)


@dataclass
class Floors:
    """Microseconds of CPU per hello request, per stage."""

    us: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.us.values())


def measure(rounds: int = 5, budget: float = 0.2) -> Floors:
    """Every stage, in `rounds` interleaved rounds of about `budget` seconds each."""
    hello = HelloConnection()
    pair = LoopbackPair.open()
    try:
        cases: dict[str, Callable[[], object]] = {
            "parse": hello.parse,
            "environ": hello.make_environ,
            "exchange": hello.exchange,
            "head": hello.head,
            "send+recv": pair.round_trip,
        }
        median = interleaved(cases, rounds, budget)
        median["send"] = statistics.median(send_us(pair, hello.response, budget) for _ in range(rounds))
    finally:
        pair.close()
    return Floors({
        "parse": median["parse"],
        "environ": median["environ"],
        "app": max(0.0, median["exchange"] - median["head"]),
        "head": median["head"],
        "recv": max(0.0, median["send+recv"] - median["send"]),
        "send": median["send"],
    })
