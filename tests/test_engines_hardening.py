"""Hostile clients and a starved process, on every engine (the cross-engine suite).

Slow clients must be cut by the timeouts as documented (`engines/_read_timeouts`):
the whole head by --header-timeout however it trickles, a stalled body by
--body-timeout, a trickled body by --min-body-rate, each with a 408 and no
traceback; a reset mid-upload is one INFO line. A client still sending after
its 4xx is lingered on, not reset (`engines/_linger`). Out of file
descriptors, an engine must pause accepting instead of spinning, and recover
(`engines/_accept`).
"""

from __future__ import annotations

import logging
import os
import re
import select
import signal
import socket
import struct
import time

import psutil
import pytest

from flash_green.config import Config
from flash_green.engines._accept import MAX_PAUSE, AcceptBackoff
from flash_green.engines._linger import LINGER_BYTES, still_to_drop
from flash_green.engines._read_timeouts import UploadPace
from flash_green.http import HTTPError

from .conftest import start_server
from .httpclient import Client, build_request

pytestmark = pytest.mark.timeout(90)

#: Short body timeouts, distinct from the suite's --header-timeout 2 and far
#: below its --keep-alive 20, so each test sees the timeout it is about.
BODY_TIMEOUT = 1.0
MIN_BODY_RATE = 1000
#: Added to the suite's options for this module's `server` (conftest).
SERVER_ARGS = ("--body-timeout", str(BODY_TIMEOUT), "--min-body-rate", str(MIN_BODY_RATE))
HEADER_TIMEOUT = 2.0  # the suite's
#: How long a trickling client keeps going before the test gives up: far
#: above every timeout, far below what trickling would reach unchecked.
TRICKLE_BOUND = 10.0
TRICKLE_INTERVAL = 0.25


# -- helpers ----------------------------------------------------------------------

def wait_for_log(proc, offset: int, pattern: str, timeout: float = 10.0) -> str:
    """The log written since `offset`, once it contains `pattern` (a regex)."""
    deadline = time.monotonic() + timeout
    while True:
        text = proc.log_since(offset)
        if re.search(pattern, text):
            return text
        assert time.monotonic() < deadline, f"no {pattern!r} in the log:\n{text}"
        time.sleep(0.02)


def trickle(sock: socket.socket, data: bytes) -> tuple[bytes, float]:
    """Send `data` one TRICKLE_INTERVAL-spaced piece at a time until the server
    answers or hangs up; (what it sent back, seconds it took). Gives up after
    TRICKLE_BOUND seconds with what it has."""
    start = time.monotonic()
    reply = b""
    for piece in data:
        if time.monotonic() - start > TRICKLE_BOUND:
            break
        try:
            sock.send(piece)
        except OSError:
            break
        readable, _, _ = select.select([sock], [], [], TRICKLE_INTERVAL)
        if readable:
            reply = read_to_close(sock)
            break
    return reply, time.monotonic() - start


def read_to_close(sock: socket.socket) -> bytes:
    data = b""
    sock.settimeout(10)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def assert_still_serving(server) -> None:
    with Client(server.address) as c:
        assert c.request("GET", "/").status == 200


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and "[ERROR]" not in text, text


# -- slow clients -------------------------------------------------------------------

def test_trickled_head_is_cut_at_the_header_timeout(server):
    """One byte every 0.25 s: progress must not move the head's deadline."""
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Trickle: " + b"a" * 1000
    with Client(server.address) as c:
        reply, took = trickle(c.sock, [head[i:i + 1] for i in range(len(head))])
    assert took < TRICKLE_BOUND, "the trickling client was never cut off"
    assert took >= HEADER_TIMEOUT - 0.1
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    assert b"\r\nConnection: close\r\n" in reply
    assert_still_serving(server)


def test_stalled_body_gets_408_without_traceback(server):
    offset = server.log_size()
    with Client(server.address) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npart of it")
        start = time.monotonic()
        resp = c.read_response()
        took = time.monotonic() - start
        assert resp.status == 408 and resp.header("Connection") == "close"
        assert c.closed_by_server()
    assert took >= BODY_TIMEOUT - 0.1  # the body's timeout, not the keep-alive one
    text = wait_for_log(server, offset, r"408 no request body bytes")
    assert len(re.findall(r"\[INFO\].*408", text)) == 1, text
    assert_no_traceback(text)
    assert_still_serving(server)


def test_body_slower_than_the_minimum_rate_gets_408(server):
    """Ten bytes every 0.25 s never leaves the body idle for --body-timeout,
    but is far below --min-body-rate: cut once the grace has passed."""
    offset = server.log_size()
    with Client(server.address) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        reply, took = trickle(c.sock, [b"0123456789"] * 10000)
    assert took < TRICKLE_BOUND, "the trickled body was never cut off"
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    text = wait_for_log(server, offset, r"408 request body slower than")
    assert_no_traceback(text)
    assert_still_serving(server)


def test_reset_mid_upload_is_one_info_line(server):
    """The client resets while its body is being read (the 100 Continue says
    so): the app must not be blamed - no 500 log, no traceback."""
    offset = server.log_size()
    sock = socket.create_connection(server.address, timeout=10)
    try:
        sock.sendall(build_request("POST", "/echo", headers={
            "Content-Length": "100000", "Expect": "100-continue"}))
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"x" * 1000)
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
    disconnect = r"client disconnected mid-body|closed in the middle of the body"
    wait_for_log(server, offset, disconnect)
    assert_still_serving(server)
    text = server.log_since(offset)
    assert len(re.findall(disconnect, text)) == 1, text
    assert_no_traceback(text)


# -- lingering after an error response -------------------------------------------------

def test_a_client_still_sending_after_its_4xx_gets_a_clean_close(server):
    """The body of a request refused at its head (413) is still on its way:
    the server reads and drops it (lingers) until the client's end of
    stream, then closes - a FIN, where closing under unread input would
    answer the client's bytes with a reset."""
    with Client(server.address) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 413, resp
        try:
            c.send(b"x" * 100_000)  # well within the linger's byte bound
            c.sock.shutdown(socket.SHUT_WR)
            end = c.sock.recv(1024)
        except OSError as exc:
            pytest.fail(f"the server reset a client still sending after its 413: {exc!r}")
        assert end == b""
    assert_still_serving(server)


# -- out of file descriptors ------------------------------------------------------------

def accepting_processes(proc, target) -> list[psutil.Process]:
    """The processes that accept, each seen answering a request (so it is in
    its loop, with every fd it needs open): the server, or its workers."""
    main = psutil.Process(proc.proc.pid)
    if target.workers == 1:
        processes = [main]
    else:
        deadline = time.monotonic() + 10
        while len(main.children()) < target.workers:
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.02)
        processes = main.children()
    unseen = set(processes)
    held = []  # a worker busy with one of these leaves the next to the others
    try:
        while unseen:
            assert len(held) < 50, f"no request reached {unseen}"
            client = Client(proc.address)
            held.append(client)
            assert client.request("GET", "/").status == 200
            port = client.sock.getsockname()[1]
            unseen -= {p for p in unseen
                       if any(c.raddr and c.raddr[1] == port for c in p.net_connections("tcp"))}
    finally:
        for client in held:
            client.close()
    return processes


def wait_until_no_connections(process: psutil.Process) -> None:
    """Until `process` holds no TCP socket but its listener (fds it closed are free)."""
    deadline = time.monotonic() + 10
    while any(c.status != psutil.CONN_LISTEN for c in process.net_connections("tcp")):
        assert time.monotonic() < deadline, process.net_connections("tcp")
        time.sleep(0.02)


def starve(process: psutil.Process) -> tuple[int, int]:
    """Lower the fd limit to the lowest free fd number: the next socket,
    pipe or file the process opens fails with EMFILE. Returns the old limits."""
    wait_until_no_connections(process)
    used = {int(fd) for fd in os.listdir(f"/proc/{process.pid}/fd")}
    lowest_free = next(n for n in range(len(used) + 1) if n not in used)
    old = process.rlimit(psutil.RLIMIT_NOFILE)
    process.rlimit(psutil.RLIMIT_NOFILE, (lowest_free, old[1]))
    return old


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def test_out_of_file_descriptors_pauses_accepting_and_recovers(target, hold_dir):
    proc = start_server(target, hold_dir)
    clients: list[Client] = []
    try:
        servers = accepting_processes(proc, target)
        limits = [starve(p) for p in servers]
        offset = proc.log_size()
        first = Client(proc.address)  # the kernel completes it; accept() fails
        clients.append(first)
        wait_for_log(proc, offset, r"accept failed \(out of resources\)")
        busy_before = cpu_seconds(servers)
        window_start = time.monotonic()
        first.send(build_request("GET", "/", headers={"Connection": "close"}))
        first.sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            first.sock.recv(1)  # documented: it waits in the backlog meanwhile
        window = time.monotonic() - window_start
        busy = cpu_seconds(servers) - busy_before
        assert busy < 0.1 * window, f"{busy:.2f} s of CPU in {window:.2f} s: a busy loop?"
        text = proc.log_since(offset)
        assert text.count("accept failed") <= len(servers), text

        for process, limit in zip(servers, limits):  # fds are free again
            process.rlimit(psutil.RLIMIT_NOFILE, limit)
        first.sock.settimeout(2 * MAX_PAUSE + 10)
        assert first.read_response().status == 200
        assert first.closed_by_server()
        assert "accepting again after" in proc.log_since(offset)

        for process in servers:  # starved again: a stop must get through
            starve(process)
        second = Client(proc.address)
        clients.append(second)
        second.send(build_request("GET", "/"))
        second.sock.settimeout(0.3)
        with pytest.raises(socket.timeout):
            second.sock.recv(1)
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.log()
    finally:
        for client in clients:
            client.close()
        proc.stop()


#: --timeout of the stalled-reader test (the wait for a client to take a
#: response): short, but above the workers' heartbeat interval where it is
#: also their watchdog's; the download is far larger than any socket buffer.
WRITE_TIMEOUT = 1.0
WRITE_TIMEOUT_WORKERS = 2.0
#: How long the stalled client may be held: a few timeouts (asyncio's
#: transports had held it for ever).
LET_GO_BOUND = 10.0
DOWNLOAD_BYTES = 16 * 1024 * 1024


def holds_connection_from(proc, port: int) -> bool:
    """Does a process of the server (workers included) hold a connection
    whose other end is our client's `port`?"""
    root = psutil.Process(proc.proc.pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        if any(c.raddr and c.raddr.port == port for c in connections):
            return True
    return False


# A one-connection worker (prefork, sequential under --workers) blocked in
# that send is also a silent worker: the supervisor may replace it first
# (its stack logged, WorkerTimeout raised in the send), as gunicorn's
# arbiter does a sync worker (README, "--timeout").
@pytest.mark.expected_log(r"silent for [\d.]+s \(--timeout", r"the master found this worker stuck",
                          r"WorkerTimeout: the request ran past --timeout")
def test_a_client_that_reads_nothing_is_let_go_after_the_timeout(target, hold_dir):
    """A client that asks for a 16 MB download and reads none of it is
    disconnected once it has taken nothing for --timeout: its connection
    (and what the server buffered for it) does not stay for ever. Asyncio's
    transports, told to close, had waited for the client to read."""
    timeout = WRITE_TIMEOUT_WORKERS if "--workers" in target.args else WRITE_TIMEOUT
    # The blocking engines' sends keep the socket timeout of the wait before
    # them, --keep-alive (README, "--timeout"): the same value here.
    proc = start_server(target, hold_dir, "--timeout", str(timeout), "--keep-alive", str(timeout))
    client = socket.socket()
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(proc.address)
        client.sendall(build_request("GET", f"/download?bytes={DOWNLOAD_BYTES}"))
        port = client.getsockname()[1]
        while not holds_connection_from(proc, port):  # accepted (bounded by the test's timeout)
            time.sleep(0.02)
        started = time.monotonic()
        while holds_connection_from(proc, port):
            assert time.monotonic() - started < LET_GO_BOUND, "the stalled client is still held"
            time.sleep(0.05)
        client.settimeout(10)
        received = 0
        try:
            while chunk := client.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < DOWNLOAD_BYTES, "cut off, not served to the end"
    finally:
        client.close()
        proc.stop()


# -- the shared policies, unit by unit -----------------------------------------------

def test_accept_backoff_doubles_its_pause_and_reports_an_episode_once(caplog):
    backoff = AcceptBackoff(logging.getLogger("test.accept"))
    emfile = OSError(24, "Too many open files")
    with caplog.at_level(logging.INFO, logger="test.accept"):
        pauses = [backoff.failed(emfile) for _ in range(12)]
        backoff.accepted()
        backoff.accepted()
        assert backoff.failed(emfile) > 0  # a new episode within LOG_INTERVAL: counted, silent
        backoff.accepted()
    assert pauses[0] > 0 and pauses == sorted(pauses) and pauses[-1] == MAX_PAUSE
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert "12 accepts failed" in caplog.records[1].getMessage()
    assert backoff.failed(ConnectionAbortedError(103, "aborted")) == 0  # one dead connection


def test_lingering_drops_up_to_its_byte_bound_and_stops_at_end_of_stream():
    assert still_to_drop(LINGER_BYTES, b"x" * 10) == LINGER_BYTES - 10
    assert still_to_drop(10, b"x" * 10) == 0
    assert still_to_drop(5, b"x" * 10) == 0
    assert still_to_drop(LINGER_BYTES, b"") == 0


def test_upload_pace_allows_body_timeout_plus_a_second_per_min_rate_bytes():
    pace = UploadPace(Config(body_timeout=10, min_body_rate=100), now=0.0)
    pace.arrived(500, now=14.9)  # 10 s of grace + 5 s earned
    with pytest.raises(HTTPError) as exc:
        pace.arrived(0, now=15.1)
    assert exc.value.status == 408
    unlimited = UploadPace(Config(min_body_rate=0), now=0.0)
    unlimited.arrived(1, now=1e9)
