"""The event engine (v5) beyond the cross-engine suite: slow clients, one
request per connection at a time, pipelined order."""

from __future__ import annotations

import os
import socket

import pytest

from .conftest import SUITE_ARGS, Target, start_server
from .httpclient import Client, build_request
from .serverproc import ServerProcess
from .test_engines import Hold

pytestmark = pytest.mark.timeout(90)

EVENT = Target("event")
SLOWLORIS_CLIENTS = 1000
POOL_THREADS = 2


@pytest.fixture(scope="module")
def event_server(hold_dir):
    # A small pool makes the point: far more slow clients than threads. The
    # header timeout is long so that no slow client is cut off mid-test.
    proc = start_server(EVENT, hold_dir, "--threads", str(POOL_THREADS),
                        "--header-timeout", "60", "--log-level", "warning")
    yield proc
    assert proc.stop() == 0, proc.log()


def test_slowloris_clients_do_not_starve_a_normal_client(event_server):
    head = build_request("GET", "/")
    slow = []
    try:
        for _ in range(SLOWLORIS_CLIENTS):
            sock = socket.create_connection(event_server.address, timeout=30)
            sock.sendall(head[:1])
            slow.append(sock)
        for sock in slow:
            sock.sendall(head[1:2])  # one more byte each: trickling, not idle
        with Client(event_server.address, timeout=10) as normal:
            for _ in range(10):
                assert normal.request("GET", "/").body == b"Hello, World!"
        # The slow clients are still waited for, and served once they finish.
        slow[0].sendall(head[2:])
        slow[0].settimeout(10)
        assert slow[0].recv(65536).endswith(b"\r\n\r\nHello, World!")
    finally:
        for sock in slow:
            sock.close()


def started(hold: Hold) -> bool:
    return os.path.exists(os.path.join(hold.dir, hold.name + ".started"))


def test_pool_never_runs_two_requests_of_one_connection_at_once(event_server, hold_dir):
    first, second = Hold(hold_dir), Hold(hold_dir)
    with Client(event_server.address, timeout=30) as c:
        c.send(build_request("GET", first.path) + build_request("GET", second.path))
        first.wait_started()
        # A pool thread is free (another client is served at once), yet the
        # pipelined second request waits for the first one's response.
        with Client(event_server.address, timeout=10) as other:
            assert other.request("GET", "/").status == 200
        c.sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            c.sock.recv(1)
        assert not started(second)
        c.sock.settimeout(30)
        first.release()
        assert c.read_response().body == f"released {first.name}\n".encode()
        second.wait_started()
        second.release()
        assert c.read_response().body == f"released {second.name}\n".encode()


def test_pipelined_requests_keep_their_order(event_server):
    # Later requests are quicker: answered out of order, they would overtake.
    delays = [300, 200, 100, 0]
    with Client(event_server.address, timeout=30) as c:
        c.send(b"".join(build_request("GET", f"/sleep?ms={ms}") for ms in delays)
               + build_request("POST", "/echo", b"last"))
        bodies = [c.read_response().body for _ in range(len(delays) + 1)]
    assert bodies == [f"slept {ms} ms\n".encode() for ms in delays] + [b"last"]


# -- asynchronous write completion ------------------------------------------------------

def slow_reader(address, path: str) -> tuple[socket.socket, bytes]:
    """A client with a tiny receive window that asks for `path` and reads
    only the first bytes: the rest of the response waits on the server."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(address)
    sock.sendall(build_request("GET", path))
    first = sock.recv(4096)
    assert first.startswith(b"HTTP/1.1 200"), first
    return sock, first


def read_rest(sock: socket.socket, first: bytes) -> bytes:
    """The whole body, given the bytes read so far (a Content-Length response)."""
    head, _, body = first.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    chunks = [body]
    received = len(body)
    while received < length:
        data = sock.recv(1 << 20)
        assert data, "the response ended early"
        chunks.append(data)
        received += len(data)
    return b"".join(chunks)


def test_slow_readers_hold_no_pool_thread(event_server):
    """As many slow downloads as pool threads, none of them read: a pool
    thread only runs the app, so another client is still served (blocking
    sends would hold every thread until --timeout)."""
    size = 16 * 1024 * 1024  # far beyond what the socket buffers hold
    slow = [slow_reader(event_server.address, f"/download?bytes={size}")
            for _ in range(POOL_THREADS)]
    try:
        with Client(event_server.address, timeout=10) as other:
            assert other.request("GET", "/").body == b"Hello, World!"
        for sock, first in slow:
            assert read_rest(sock, first) == b"x" * size  # every piece, in order
    finally:
        for sock, _ in slow:
            sock.close()


def test_the_apps_iterator_is_pulled_on_a_pool_thread(hold_dir):
    """After the loop finished a piece the socket could not take, the next
    piece is pulled on a pool thread: an iterator that blocks there leaves
    the loop serving everyone else."""
    os.environ["FLASH_TEST_HOLD_DIR"] = hold_dir
    proc = ServerProcess("event", app="tests.held_body_app:app",
                         args=[*SUITE_ARGS, "--threads", str(POOL_THREADS)]).start()
    hold = Hold(hold_dir)
    try:
        size = 8 * 1024 * 1024
        sock, first = slow_reader(proc.address, f"/held-body?name={hold.name}&bytes={size}")
        with sock:
            body = first.partition(b"\r\n\r\n")[2]
            while len(body) < size:  # the first piece, through the loop's EPOLLOUT
                body += sock.recv(1 << 20)
            hold.wait_started()  # the iterator now blocks, between two pieces
            with Client(proc.address, timeout=10) as other:
                assert other.request("GET", "/").body == b"Hello, World!"
            hold.release()
            while len(body) < size + 3:
                data = sock.recv(1 << 20)
                assert data, "the response ended early"
                body += data
            assert body == b"x" * size + b"end"
    finally:
        hold.release()
        assert proc.stop() == 0, proc.log()
