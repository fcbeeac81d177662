"""The epoll engine (v4) beyond the cross-engine suite: back-pressure and many connections."""

from __future__ import annotations

import resource
import selectors
import socket

import psutil
import pytest

from comparisons.childproc import raise_fd_limit
from flash_green import binds
from flash_green.config import Config
from flash_green.engines.epoll import EpollEngine

from .conftest import Target, start_server
from .httpclient import Client, build_request
from .serverproc import ServerProcess

pytestmark = pytest.mark.timeout(90)

EPOLL = Target("epoll")
CONCURRENT_CONNECTIONS = 2000
#: Descriptors the test process and the server each need: the connections,
#: plus the interpreter's own files, the listener, epoll, logs.
FDS_NEEDED = CONCURRENT_CONNECTIONS + 256
#: Big enough that materialising it would show plainly in the server's RSS.
DOWNLOAD_BYTES = 64 * 1024 * 1024
#: The server's RSS may grow by this much while it streams DOWNLOAD_BYTES.
RSS_GROWTH_BOUND = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def enough_fds():
    """Raise the soft RLIMIT_NOFILE (inherited by the server) to FDS_NEEDED
    for this module; restored afterwards. Many systems default to 1024."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    if raise_fd_limit(FDS_NEEDED) < FDS_NEEDED:
        pytest.skip(f"the hard limit on open files ({before[1]}) is below the {FDS_NEEDED} this module needs")
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, before)


@pytest.fixture(scope="module")
def epoll_server(hold_dir, enough_fds):
    proc = start_server(EPOLL, hold_dir, "--timeout", "60", "--debug-blocking", "100")
    yield proc
    assert proc.stop() == 0, proc.log()


def fresh_pieces_app(environ, start_response):
    """`/?bytes=N`: N bytes as newly allocated 64 KB pieces (a server that
    buffered them would grow by N); any other path: hello."""
    query = environ.get("QUERY_STRING", "")
    if not query.startswith("bytes="):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
        return [b"Hello, World!"]
    size = int(query[len("bytes="):])
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size))])
    return (b"x" * min(65536, size - sent) for sent in range(0, size, 65536))


@pytest.fixture
def streaming_server(hold_dir):
    proc = ServerProcess("epoll", app="tests.test_epoll:fresh_pieces_app",
                         args=["--timeout", "60", "--log-level", "warning"]).start()
    yield proc
    assert proc.stop() == 0, proc.log()


def rss(server) -> int:
    return psutil.Process(server.proc.pid).memory_info().rss


def test_client_that_stops_reading_does_not_stall_others(streaming_server):
    server = streaming_server
    before = rss(server)
    with Client(server.address, timeout=60) as stalled:
        stalled.send(build_request("GET", f"/?bytes={DOWNLOAD_BYTES}"))
        stalled._read_until(b"\r\n\r\n")  # the response has begun; now we stop reading
        with Client(server.address, timeout=10) as other:
            for _ in range(20):
                assert other.request("GET", "/hello").body == b"Hello, World!"
        # The stalled response waits in the loop as one piece, not 64 MB.
        assert rss(server) - before < RSS_GROWTH_BOUND
        assert count_until(stalled, DOWNLOAD_BYTES) == DOWNLOAD_BYTES  # and it resumes


def count_until(client: Client, total: int) -> int:
    """Read and count `total` bytes (buffered ones included) without keeping them."""
    received = len(client.buf)
    client.buf = b""
    while received < total:
        data = client.sock.recv(1 << 20)
        if not data:
            break
        received += len(data)
    return received


def test_two_thousand_concurrent_connections_all_answered(epoll_server):
    socks = []
    try:
        for _ in range(CONCURRENT_CONNECTIONS):
            sock = socket.create_connection(epoll_server.address, timeout=30)
            socks.append(sock)
        request = build_request("GET", "/")
        for sock in socks:
            sock.sendall(request)
        answered = read_one_response_each(socks, timeout=60)
    finally:
        for sock in socks:
            sock.close()
    assert answered == CONCURRENT_CONNECTIONS


def read_one_response_each(socks: list[socket.socket], timeout: float) -> int:
    """Wait for a complete hello response on every socket (all still open)."""
    expected = b"Hello, World!"
    selector = selectors.DefaultSelector()
    buffers = {}
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        buffers[sock] = b""
    answered = 0
    while answered < len(socks):
        ready = selector.select(timeout)
        assert ready, f"only {answered} of {len(socks)} connections answered"
        for key, _ in ready:
            data = key.fileobj.recv(65536)
            assert data, "the server closed a connection before answering"
            buffers[key.fileobj] += data
            if buffers[key.fileobj].endswith(expected):
                assert buffers[key.fileobj].startswith(b"HTTP/1.1 200 ")
                selector.unregister(key.fileobj)
                answered += 1
    selector.close()
    return answered


def test_a_thousand_pipelined_requests_in_one_packet(epoll_server):
    with Client(epoll_server.address) as c:
        c.send(build_request("GET", "/") * 1000)
        for _ in range(1000):
            assert c.read_response().body == b"Hello, World!"


def test_debug_blocking_shows_where_the_loop_is_stuck(epoll_server):
    assert get_body(epoll_server, "/sleep?ms=400") == b"slept 400 ms\n"
    log = epoll_server.log()
    assert "the loop has been held for over 100 ms" in log
    assert "time.sleep(ms / 1000)" in log  # the stack names the blocking call


def get_body(server, path: str) -> bytes:
    with Client(server.address) as c:
        return c.request("GET", path).body


@pytest.fixture
def loop_engine():
    """An epoll engine over a real listener, not serving: its timers are
    driven by hand (`expire_timers(now)`), so no test waits for a clock."""
    listener = binds.open_listener(binds.parse_bind("127.0.0.1:0"), 16)
    engine = EpollEngine(Config(keep_alive=5.0), fresh_pieces_app, [listener])
    yield engine
    engine.shut_down()
    listener.close()


def adopt_socketpair(engine: EpollEngine):
    """A connection the engine serves (its channel) and the client's end of it."""
    ours, theirs = socket.socketpair()
    engine.add_channel(ours, "peer", engine.endpoints[0])
    return engine.channels[ours.fileno()], theirs


def test_moving_a_deadline_later_pushes_no_timer_and_is_looked_at_again(loop_engine):
    """The lazy keep-alive timer: each request moves the connection's deadline
    later without touching the heap; when the old entry comes due, the loop
    pushes it again for the rest instead of timing the connection out."""
    engine = loop_engine
    channel, theirs = adopt_socketpair(engine)
    with theirs:
        first_due = channel.due
        for _ in range(100):  # what the keep-alive requests do to the timer
            channel.disarm()
            channel.arm_idle()
        assert engine.timers == [(first_due, channel.fd)]
        moved = channel.deadline
        assert moved > first_due

        engine.expire_timers(first_due)
        assert engine.channels.get(channel.fd) is channel, "timed out at the deadline it had left"
        assert engine.timers == [(moved, channel.fd)]

        engine.expire_timers(moved)
        assert channel.fd not in engine.channels
        assert theirs.recv(16) == b""  # closed: the client reads the end of the stream


def test_a_closed_connections_timer_entry_is_dropped_when_it_surfaces(loop_engine):
    engine = loop_engine
    channel, theirs = adopt_socketpair(engine)
    with theirs:
        due = channel.due
        channel.close()
        engine.expire_timers(due)
        assert engine.timers == []
