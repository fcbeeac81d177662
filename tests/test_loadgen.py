"""Tests for comparisons/: the load generator, its histogram, the canned server and the wrk wrapper.

They check counting and classification, never speed. Two servers are used:
the canned server in a subprocess (the generator's own ceiling server) and a
tiny thread-per-connection server in this process whose behaviour is chosen
by the request path (chunked, close-delimited, 404, reset, silent, ...).
"""

from __future__ import annotations

import json
import math
import random
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

import pytest

from comparisons import wrk
from comparisons.canned import RESPONSE, CannedServer
from comparisons.histogram import Histogram
from comparisons.loadgen import (
    IdleConnections,
    LoadConfig,
    LoadResult,
    ProtocolError,
    ResponseParser,
    Slowloris,
    ceiling,
    idle_connections,
    parse_head,
    run,
    run_load,
)

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def canned() -> Iterator[CannedServer]:
    with CannedServer() as server:
        yield server


class BehaviourServer:
    """Thread-per-connection HTTP server; the request path picks the behaviour.

    /chunked   chunked body with a chunk extension and a trailer (keep-alive)
    /close     body delimited by closing the connection
    /missing   404 with Content-Length (keep-alive)
    /reset     read the request, then reset the connection (RST)
    /silent    read the request, never answer
    /head      Content-Length: 100 but no body (answers HEAD)
    /upload    read the Content-Length body, answer with its size
    other      200 "ok" (keep-alive); `served(path)` counts the answers
    A request head not complete within HEAD_TIMEOUT closes the connection,
    as a server defending itself against slowloris would.
    """

    HEAD_TIMEOUT = 0.5

    def __init__(self) -> None:
        self._served: dict[bytes, int] = {}
        self._lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def served(self, path: str) -> int:
        """Requests for `path` answered so far."""
        with self._lock:
            return self._served.get(path.encode(), 0)

    def close(self) -> None:
        self.sock.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_head(self, conn: socket.socket, buf: bytes) -> tuple[bytes, bytes] | None:
        deadline = time.monotonic() + self.HEAD_TIMEOUT
        while b"\r\n\r\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            conn.settimeout(remaining)
            try:
                data = conn.recv(65536)
            except (socket.timeout, OSError):
                return None
            if not data:
                return None
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        return head, rest

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while True:
                got = self._read_head(conn, buf)
                if got is None:
                    return
                head, buf = got
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                conn.settimeout(5)
                while len(buf) < length:
                    data = conn.recv(1 << 20)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                if path == b"/chunked":
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5\r\nHello\r\n7;ext=1\r\n, World\r\n0\r\nX-Trailer: yes\r\n\r\n"
                    )
                elif path == b"/close":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nthe body runs to EOF")
                    return
                elif path == b"/missing":
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
                elif path == b"/reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                elif path == b"/silent":
                    conn.settimeout(None)
                    while conn.recv(65536):
                        pass
                    return
                elif path == b"/head":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                elif path == b"/upload":
                    size = str(len(body)).encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(size)).encode() + b"\r\n\r\n" + size)
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                with self._lock:
                    self._served[path] = self._served.get(path, 0) + 1


@pytest.fixture(scope="module")
def behaviour() -> Iterator[BehaviourServer]:
    server = BehaviourServer()
    yield server
    server.close()


def load(url: str, **kwargs: Any) -> LoadResult:
    """Our generator, count-bounded, never wrk."""
    kwargs.setdefault("duration", None)
    kwargs.setdefault("prefer_wrk", False)
    return run_load(url, **kwargs)


def no_errors(result: LoadResult) -> bool:
    return all(count == 0 for count in result.errors.values())


# ---------------------------------------------------------------------------
# Histogram
# ---------------------------------------------------------------------------


def test_histogram_percentiles_are_monotonic_and_accurate() -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(7, 1.5)) for _ in range(20_000)]
    hist = Histogram()
    for value in values:
        hist.record(value)
    values.sort()
    previous = -1
    for pct in (0, 1, 10, 50, 90, 99, 99.9, 99.99, 100):
        got = hist.percentile(pct)
        assert got >= previous
        previous = got
        exact = values[max(1, math.ceil(round(pct / 100 * len(values), 6))) - 1]
        assert abs(got - exact) <= exact * 0.01 + 1
    assert hist.percentile(100) == hist.max_us == values[-1]
    assert hist.mean_us == pytest.approx(sum(values) / len(values))
    summary = hist.summary_ms()
    assert list(summary) == ["p50", "p90", "p99", "p99.9", "max", "mean"]
    assert summary["p50"] <= summary["p90"] <= summary["p99"] <= summary["p99.9"] <= summary["max"]


def test_histogram_merge_and_transport_are_exact() -> None:
    a, b, both = Histogram(), Histogram(), Histogram()
    for value in range(0, 50_000, 7):
        a.record(value)
        both.record(value)
    for value in range(1_000_000, 2_000_000, 997):
        b.record(value, 3)
        both.record(value, 3)
    merged = Histogram.merged([Histogram.from_dict(a.to_dict()), Histogram.from_dict(json.loads(json.dumps(b.to_dict())))])
    assert merged.counts == both.counts
    assert (merged.total, merged.sum_us, merged.min_us, merged.max_us) == (both.total, both.sum_us, both.min_us, both.max_us)
    assert merged.summary_ms() == both.summary_ms()
    assert Histogram().percentile(99) == 0
    with pytest.raises(ValueError):
        Histogram(precision_bits=8).merge(Histogram(precision_bits=7))


# ---------------------------------------------------------------------------
# Response framing
# ---------------------------------------------------------------------------


def _feed_in_pieces(parser: ResponseParser, stream: bytes, sizes: list[int]) -> tuple[int, list[int]]:
    statuses = [0] * 1000
    done = 0
    pos = 0
    for size in sizes:
        piece = stream[pos : pos + size]
        pos += size
        data = parser.pending + piece if parser.pending else piece
        parser.pending = b""
        done += parser.feed(data, len(data), statuses)
    assert pos >= len(stream)
    return done, statuses


STREAM = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    b"3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: 1\r\n\r\n"
    b"HTTP/1.1 204 No Content\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64, len(STREAM)])
def test_parser_frames_responses_however_they_are_split(piece: int) -> None:
    parser = ResponseParser()
    done, statuses = _feed_in_pieces(parser, STREAM, [piece] * (len(STREAM) // piece + 1))
    assert done == 5
    assert statuses[200] == 3 and statuses[204] == 1 and statuses[503] == 1 and statuses[100] == 0
    assert parser.closing and parser.between_responses


def test_parser_head_requests_and_close_delimited_bodies() -> None:
    statuses = [0] * 1000
    head = ResponseParser(head_request=True)
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" * 3
    assert head.feed(data, len(data), statuses) == 3

    until_eof = ResponseParser()
    data = b"HTTP/1.0 200 OK\r\n\r\nsome body"
    assert until_eof.feed(data, len(data), statuses) == 0
    assert until_eof.feed(b"more body", 9, statuses) == 0
    assert until_eof.finish_at_eof(statuses)
    assert statuses[200] == 4


def test_parse_head_rules_and_garbage() -> None:
    assert parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n") == (200, 3, False)
    assert parse_head(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n") == (304, 0, False)
    assert parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n")[2] is True
    assert parse_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n")[2] is False
    for bad in (b"SMTP ready\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"):
        with pytest.raises(ProtocolError):
            parse_head(bad)


# ---------------------------------------------------------------------------
# The canned server and the generator against it
# ---------------------------------------------------------------------------


def test_canned_server_counts_pipelined_and_split_heads(canned: CannedServer) -> None:
    with socket.create_connection(("127.0.0.1", canned.port), timeout=5) as sock:
        head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(head[:-1])
        sock.sendall(head[-1:] + head + head)
        want = 3 * len(RESPONSE)
        got = b""
        while len(got) < want:
            data = sock.recv(65536)
            assert data
            got += data
        assert got == RESPONSE * 3


def test_keepalive_counts_are_consistent(canned: CannedServer) -> None:
    result = load(canned.url, concurrency=10, requests=2000)
    assert result.requests == result.sent == 2000
    assert result.status_counts == {200: 2000}
    assert no_errors(result)
    assert result.connections_opened == 10
    assert result.bytes_read == 2000 * len(RESPONSE)
    assert result.histogram is not None and result.histogram.total == 2000
    assert result.rps == pytest.approx(result.requests / result.duration)
    assert result.generator_cpu is not None and 0.0 <= result.generator_cpu <= 1.0
    data = result.to_dict()
    assert data["mode"] == "keepalive" and data["tool"] == "flash" and "histogram" not in data
    json.dumps(result.to_dict(include_histogram=True))


def test_pipelining_counts_every_response(canned: CannedServer) -> None:
    result = load(canned.url, concurrency=5, requests=1003, pipeline=10)
    assert result.requests == result.sent == 1003  # the last batches are cut to the budget
    assert result.mode == "pipeline" and result.pipeline == 10
    assert result.connections_opened == 5
    assert no_errors(result)


def test_new_connection_per_request(canned: CannedServer) -> None:
    result = load(canned.url, concurrency=4, requests=200, new_conn=True)
    assert result.requests == 200
    assert result.connections_opened == 200
    assert result.mode == "new-conn"
    assert no_errors(result)


def test_warmup_requests_are_served_but_not_measured(behaviour: BehaviourServer) -> None:
    before = behaviour.served("/counted")
    result = run_load(behaviour.url("/counted"), concurrency=1, duration=0.3, warmup=0.5, prefer_wrk=False)
    served = behaviour.served("/counted") - before
    assert result.requests > 0 and no_errors(result)
    # One connection, one request at a time: at most one request is in flight
    # when the window closes, so two or more uncounted ones were warm-up's.
    assert served >= result.requests + 2, (served, result.requests)


def test_processes_merge_their_results(canned: CannedServer) -> None:
    result = load(canned.url, concurrency=4, requests=1001, processes=2)
    assert result.processes == 2
    assert result.requests == result.sent == 1001
    assert result.histogram is not None and result.histogram.total == 1001
    assert result.connections_opened == 4
    assert no_errors(result)


def test_open_loop_never_sends_ahead_of_its_schedule(canned: CannedServer) -> None:
    result = run_load(canned.url, concurrency=4, duration=0.5, rate=200, prefer_wrk=False)
    assert result.mode == "open-loop"
    # The schedule is the rate over the measured window, whatever the machine's speed...
    assert result.scheduled == int(result.duration * 200)
    # ...and a request is never written before its intended send time.
    assert 0 < result.requests <= result.sent <= result.scheduled + 1
    assert no_errors(result)


def test_open_loop_with_new_connections(canned: CannedServer) -> None:
    result = run_load(canned.url, concurrency=4, duration=None, requests=30, rate=300, new_conn=True, prefer_wrk=False)
    assert result.mode == "open-loop-new-conn"
    assert result.requests == result.sent == result.connections_opened == 30


def test_invalid_combinations_are_rejected() -> None:
    for bad in (
        dict(pipeline=4, new_conn=True),
        dict(pipeline=4, rate=100.0),
        dict(concurrency=1, processes=2),
        dict(rate=0.0),
    ):
        with pytest.raises(ValueError):
            run(LoadConfig("http://127.0.0.1:1/", **bad))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        run(LoadConfig("https://127.0.0.1/"))


def test_ceiling_measures_against_the_canned_server() -> None:
    result = ceiling(concurrency=2, duration=0.3, warmup=0.0)
    assert result.tool == "flash" and result.requests > 0 and no_errors(result)


def test_cli_prints_json(canned: CannedServer) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "comparisons.loadgen", canned.url, "-c", "2", "-n", "100", "-d", "0", "--json"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    data = json.loads(out)
    assert data["requests"] == 100 and data["status_counts"] == {"200": 100}


# ---------------------------------------------------------------------------
# Framing and errors against the behaviour server
# ---------------------------------------------------------------------------


def test_chunked_responses(behaviour: BehaviourServer) -> None:
    result = load(behaviour.url("/chunked"), concurrency=2, requests=50)
    assert result.requests == 50 and no_errors(result)
    assert result.connections_opened == 2


def test_close_delimited_responses(behaviour: BehaviourServer) -> None:
    result = load(behaviour.url("/close"), concurrency=2, requests=20)
    assert result.requests == 20 and no_errors(result)
    assert result.connections_opened >= 20  # every response ends its connection


def test_non_2xx_is_counted_by_status(behaviour: BehaviourServer) -> None:
    result = load(behaviour.url("/missing"), concurrency=2, requests=30)
    assert result.requests == 30
    assert result.status_counts == {404: 30}
    assert result.errors == {"connect": 0, "read": 0, "timeout": 0, "status": 30}


def test_reset_is_a_read_error(behaviour: BehaviourServer) -> None:
    result = load(behaviour.url("/reset"), concurrency=1, requests=10)
    assert result.requests == 0
    assert result.errors["read"] == 10


def test_silent_server_is_a_timeout(behaviour: BehaviourServer) -> None:
    result = load(behaviour.url("/silent"), concurrency=2, requests=2, timeout=0.3)
    assert result.requests == 0
    assert result.errors["timeout"] == 2


def test_closed_port_is_a_connect_error() -> None:
    # Bound but not listening: the kernel refuses connections, and nobody
    # else can take the port while we hold it.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        result = load(f"http://127.0.0.1:{port}/", concurrency=2, requests=5)
    assert result.requests == 0
    assert result.errors["connect"] == 5


def test_head_requests_have_no_body(behaviour: BehaviourServer) -> None:
    result = load(behaviour.url("/head"), concurrency=2, requests=20, method="HEAD")
    assert result.requests == 20 and no_errors(result)


def test_upload_body_is_sent_whole(behaviour: BehaviourServer) -> None:
    body = b"x" * 3_000_000  # larger than the socket buffer: exercises partial writes
    result = load(behaviour.url("/upload"), concurrency=2, requests=4, method="POST", body=body)
    assert result.requests == 4 and no_errors(result)
    assert result.bytes_read == 4 * len(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n3000000")


# ---------------------------------------------------------------------------
# Slowloris and idle connections
# ---------------------------------------------------------------------------


def test_slowloris_trickles_within_its_bounds_and_closes(canned: CannedServer) -> None:
    slow = Slowloris(canned.url, connections=5, interval=0.005, max_bytes=8, duration=10)
    with slow:
        socks = list(slow.sockets.values())
        assert slow.wait(10)  # ends by itself once every connection sent max_bytes
        assert slow.open_count == 5
    assert slow.stats.opened == 5 and slow.stats.failed == 0
    assert slow.stats.bytes_sent == 5 * 8
    assert slow.stats.closed_by_server == 0
    assert slow.open_count == 0 and all(sock.fileno() == -1 for sock in socks)


def test_slowloris_sees_a_defending_server_close(behaviour: BehaviourServer) -> None:
    with Slowloris(behaviour.url("/"), connections=3, interval=0.01, duration=20) as slow:
        assert slow.wait(10)  # the server's head timeout closes all three
    assert slow.stats.opened == 3
    assert slow.stats.closed_by_server == 3


def test_normal_clients_are_served_during_slowloris(canned: CannedServer) -> None:
    with Slowloris(canned.url, connections=20, interval=0.01, duration=10) as slow:
        result = load(canned.url, concurrency=4, requests=300)
        assert slow.open_count == 20
    assert result.requests == 300 and no_errors(result)


def test_idle_connections_are_held_then_closed(canned: CannedServer) -> None:
    with idle_connections(canned.url, 20, batch=8) as held:
        socks = list(held.sockets)
        assert len(held) == 20
        assert held.status_counts == {200: 20}
        assert all(count == 0 for count in held.errors.values())
        readable, _, _ = select.select(socks, [], [], 0)
        assert readable == []  # open and quiet: nothing to read, no EOF
    assert len(held) == 0 and all(sock.fileno() == -1 for sock in socks)


def test_idle_connections_count_what_cannot_be_held(behaviour: BehaviourServer) -> None:
    with IdleConnections(behaviour.url("/close"), 3) as held:
        assert len(held) == 0
        assert held.errors["read"] == 3


# ---------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------


def test_wrk_script_and_output_parsing() -> None:
    script = wrk.lua_script("POST", {"X-A": 'q"uote'}, b"\x00ab\\")
    assert 'wrk.method = "POST"' in script
    assert 'wrk.body = "\\000ab\\092"' in script
    assert 'wrk.headers["X-A"] = "q\\034uote"' in script
    numbers = wrk.parse_output('noise\nFLASH-WRK-RESULT {"requests": 0, "mean_us": nan, "p99.9_us": 12}\n')
    assert numbers["requests"] == 0 and numbers["p99.9_us"] == 12


def test_new_conn_never_uses_wrk(canned: CannedServer) -> None:
    result = run_load(canned.url, concurrency=2, requests=10, duration=None, new_conn=True, prefer_wrk=True)
    assert result.tool == "flash"


@pytest.mark.skipif(not wrk.available(), reason="wrk is not installed")
def test_wrk_result_is_a_load_result(canned: CannedServer) -> None:
    result = run_load(canned.url, concurrency=4, duration=1, processes=1, prefer_wrk=True)
    assert result.tool == "wrk"
    assert result.requests > 0 and no_errors(result)
    lat = result.latency_ms
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert result.bytes_read == result.requests * len(RESPONSE)
