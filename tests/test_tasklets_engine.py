"""The tasklets engine beyond the cross-engine suite: tasklet handlers
cooperate, slow clients do not starve others, the connection bound holds."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from .conftest import SUITE_ARGS
from .httpclient import Client, build_request
from .serverproc import ServerProcess
from .test_engines import Hold

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def hold_dir_env(hold_dir):
    os.environ["FLASH_TEST_HOLD_DIR"] = hold_dir
    return hold_dir


@pytest.fixture(scope="module")
def tasklet_server(hold_dir_env):
    proc = ServerProcess("tasklets", app="tests.tasklet_suite_app:app", args=list(SUITE_ARGS)).start()
    yield proc
    assert proc.stop() == 0, proc.log()


def test_tasklet_handlers_run_concurrently(tasklet_server, hold_dir_env):
    """Twenty held requests are all inside the app at once: no timing involved."""
    holds = [Hold(hold_dir_env) for _ in range(20)]
    clients = [Client(tasklet_server.address, timeout=30) for _ in holds]
    try:
        for client, hold in zip(clients, holds):
            client.send(build_request("GET", hold.path))
        for hold in holds:
            hold.wait_started()
        assert Client(tasklet_server.address).request("GET", "/").status == 200  # loop is free
        for hold in holds:
            hold.release()
        for client, hold in zip(clients, holds):
            assert client.read_response().body == f"released {hold.name}\n".encode()
    finally:
        for client in clients:
            client.close()


class GatedUpstream:
    """An upstream that answers nobody until `n` calls are connected at once."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.listener.settimeout(30)
        while len(self.conns) < self.n:
            conn, _ = self.listener.accept()
            conn.settimeout(30)
            conn.recv(4096)
            self.conns.append(conn)
        for conn in self.conns:
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nupstream says hi")
            conn.close()
        self.listener.close()


def test_upstream_calls_overlap(tasklet_server):
    upstream = GatedUpstream(10)
    clients = [Client(tasklet_server.address, timeout=30) for _ in range(10)]
    try:
        for client in clients:
            client.send(build_request("GET", f"/upstream?port={upstream.port}&ms=0"))
        for client in clients:
            resp = client.read_response()
            assert resp.status == 200 and resp.body == b"upstream says hi"
    finally:
        for client in clients:
            client.close()
    upstream.thread.join(10)


def test_offloaded_blocking_call_does_not_stall(tasklet_server):
    with Client(tasklet_server.address, timeout=30) as slow:
        slow.send(build_request("GET", "/offload-sleep?ms=2000"))
        # Answered while the blocking sleep runs in a pool thread.
        assert Client(tasklet_server.address).request("GET", "/").status == 200
        assert slow.read_response().body.startswith(b"slept 2000 ms")


def test_thousand_slowloris_clients_do_not_starve_a_normal_client(tasklet_server):
    slow = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(tasklet_server.address, timeout=10)
            sock.sendall(b"GET / HTTP/1.1\r\nHo")
            slow.append(sock)
        for _ in range(5):
            with Client(tasklet_server.address) as c:
                assert c.request("GET", "/").status == 200
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["alone", "supervised"])
def test_tasklet_app_is_refused_by_other_engines(workers):
    proc = ServerProcess("sequential", app="flash_green.apps.tasklet_demo:app",
                         args=list(workers), start_timeout=20)
    with pytest.raises(RuntimeError, match="only --engine tasklets can run it"):
        proc.start()
    assert proc.proc.returncode in (2, 4)  # a usage error alone; a boot error under the supervisor


def test_graceful_stop_answers_a_first_request_still_in_flight(hold_dir_env):
    """A connection accepted before SIGTERM, its request not yet sent, is
    owed an answer (a graceful restart must not drop it), as in the other
    engines; only connections idle between two requests are closed."""
    proc = ServerProcess("tasklets", args=[*SUITE_ARGS, "--keep-alive", "10"]).start()
    try:
        with Client(proc.address, timeout=10) as early:
            # Once a later connection is answered, `early` has been accepted
            # (the backlog is FIFO) and its tasklet waits for its first byte.
            with Client(proc.address) as later:
                assert later.request("GET", "/").status == 200
            proc.signal(signal.SIGTERM)
            time.sleep(0.5)
            early.send(build_request("GET", "/"))
            assert early.read_response().status == 200
        assert proc.wait(30) == 0, proc.log()
    finally:
        proc.stop()


def test_a_slow_upload_that_keeps_coming_is_not_cut_off(hold_dir_env):
    """--body-timeout bounds each wait for body bytes, not the whole upload:
    a body that takes longer than it but keeps arriving is served (the
    --min-body-rate floor, off here, is the cross-engine suite's business)."""
    proc = ServerProcess("tasklets", args=[*SUITE_ARGS, "--body-timeout", "1",
                                           "--min-body-rate", "0"]).start()
    try:
        with Client(proc.address, timeout=10) as c:
            pieces = [b"%02d" % i * 8 for i in range(12)]
            body = b"".join(pieces)
            c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
            for piece in pieces:   # about 3 s in all, never 1 s without a byte
                time.sleep(0.25)
                c.send(piece)
            resp = c.read_response()
            assert resp.status == 200 and resp.body == body
    finally:
        assert proc.stop() == 0, proc.log()


def test_a_long_download_to_a_client_that_keeps_reading_is_not_cut_off(hold_dir_env):
    """--timeout bounds each wait for the client to take more of the
    response, not the whole download (as the other engines' write timeout)."""
    proc = ServerProcess("tasklets", args=[*SUITE_ARGS, "--timeout", "1"]).start()
    size = 24 << 20
    pause_every = size // 12
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(10)
        sock.connect(proc.address)
        with sock:
            sock.sendall(b"GET /download?bytes=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
            got = 0
            pause_at = pause_every
            while got < size:
                data = sock.recv(256 * 1024)
                if not data:
                    break
                got += len(data)
                if got >= pause_at:
                    # A slow reader, by construction: twelve pauses of 0.25 s
                    # make the download last three times --timeout, while
                    # no single wait of the server comes near it.
                    time.sleep(0.25)
                    pause_at += pause_every
            assert got > size, "the whole response (head and body) arrives"
    finally:
        assert proc.stop() == 0, proc.log()
