"""The asyncio engine beyond the cross-engine suite: async apps cooperate
(upstream calls and sleeps overlap), a WSGI app blocks the loop, writes
honour back-pressure without stalling others, a stop is prompt, uvloop is
optional and its absence is one clear line."""

from __future__ import annotations

import signal
import socket

import psutil
import pytest

from .conftest import SUITE_ARGS
from .httpclient import Client, build_request
from .serverproc import ServerProcess
from .test_green import BLOCKED_IMPORT, N_CALLS, concurrent_gets, run_python
from .test_tasklets_engine import GatedUpstream

pytestmark = pytest.mark.timeout(120)

ASYNC_APP = "flash_green.apps.async_demo:app"
LOOPS = [pytest.param((), id="asyncio"), pytest.param(("--uvloop",), id="uvloop")]


def start(*args: str, app: str = ASYNC_APP) -> ServerProcess:
    return ServerProcess("asyncio", app=app, args=[*SUITE_ARGS, *args]).start()


@pytest.fixture(scope="module", params=LOOPS)
def server(request):
    if request.param:
        pytest.importorskip("uvloop")
    proc = start(*request.param)
    yield proc
    assert proc.stop() == 0, proc.log()


def test_hundred_awaited_upstream_calls_are_in_flight_together(server):
    """No clock: the upstream answers nobody until all hundred calls are connected."""
    gate = GatedUpstream(N_CALLS)
    _, responses = concurrent_gets(server.address, [f"/upstream?port={gate.port}&ms=0"] * N_CALLS)
    assert all(r.status == 200 and r.body == b"upstream says hi" for r in responses)
    gate.thread.join(10)


def test_async_handlers_are_in_flight_together(server):
    """No clock: the upstream answers nobody until all ten calls are connected,
    and meanwhile the loop serves others."""
    gate = GatedUpstream(10)
    clients = [Client(server.address, timeout=30) for _ in range(10)]
    try:
        for i, client in enumerate(clients):
            client.send(build_request("GET", f"/upstream?port={gate.port}&ms=0"))
            if i == 4:
                assert Client(server.address).request("GET", "/").status == 200
        for client in clients:
            assert client.read_response().body == b"upstream says hi"
    finally:
        for client in clients:
            client.close()
    gate.thread.join(10)


def test_pipelined_requests_to_an_async_app_stay_in_order(server):
    with Client(server.address) as c:
        c.send(build_request("GET", "/sleep?ms=50") + build_request("GET", "/")
               + build_request("POST", "/echo", b"third"))
        assert c.read_response().body == b"slept 50 ms (cooperatively)\n"
        assert c.read_response().body == b"Hello, World!"
        assert c.read_response().body == b"third"


def test_async_app_exception_gives_500_and_server_goes_on(server):
    with Client(server.address) as c:
        assert c.request("GET", "/error").status == 500
    with Client(server.address) as c:
        assert c.request("GET", "/").status == 200


def test_a_client_that_does_not_read_stalls_nobody_and_is_not_buffered(server):
    """A 64 MB download to a client that reads nothing: the transport pauses
    the response (back-pressure) instead of buffering all of it in the
    server, and other clients are served meanwhile."""
    size = 64 * 1024 * 1024
    server_process = psutil.Process(server.proc.pid)
    before = server_process.memory_info().rss
    with Client(server.address, timeout=60) as slow:
        slow.send(build_request("GET", f"/download?bytes={size}"))
        for _ in range(3):  # one after another: by now the download was dispatched
            with Client(server.address) as fast:
                assert fast.request("GET", "/").status == 200
        grown = server_process.memory_info().rss - before
        assert grown < size / 4, f"the server buffered {grown >> 20} MB"
        slow._read_until(b"\r\n\r\n")
        received = len(slow.buf)
        while received < size:
            chunk = slow.sock.recv(1 << 20)
            assert chunk, "server closed before the end of the download"
            received += len(chunk)
        assert received == size


@pytest.mark.parametrize("loop", LOOPS)
def test_a_wsgi_app_blocks_the_loop(loop):
    """The plain demo app's /sleep runs inline: five 200 ms sleeps serialise.
    A lower bound (they cannot take less), not a speed claim."""
    if loop:
        pytest.importorskip("uvloop")
    proc = start(*loop, app="flash_green.apps.demo:app")
    try:
        elapsed, responses = concurrent_gets(proc.address, ["/sleep?ms=200"] * 5)
        assert all(r.status == 200 for r in responses)
        assert elapsed >= 5 * 0.2
    finally:
        assert proc.stop() == 0, proc.log()


def test_sigterm_lets_an_awaiting_handler_finish_and_exits_promptly():
    """SIGTERM while an async handler awaits its upstream: the idle connection
    is closed at once, the busy one gets its answer, then the process exits
    by itself (the --graceful-timeout deadline is far beyond the wait)."""
    upstream = socket.create_server(("127.0.0.1", 0))
    upstream.settimeout(30)
    proc = start("--keep-alive", "60", "--graceful-timeout", "90")
    try:
        with Client(proc.address, timeout=30) as idle, Client(proc.address, timeout=30) as busy:
            assert idle.request("GET", "/").status == 200
            busy.send(build_request("GET", f"/upstream?port={upstream.getsockname()[1]}&ms=0"))
            call, _ = upstream.accept()  # the handler now awaits our answer
            with call:
                call.settimeout(30)
                call.recv(4096)
                proc.signal(signal.SIGTERM)
                assert idle.closed_by_server()
                call.sendall(b"HTTP/1.0 200 OK\r\n\r\nupstream says hi")
            resp = busy.read_response()
            assert resp.status == 200 and resp.body == b"upstream says hi"
            assert busy.closed_by_server()
        assert proc.wait(30) == 0
        assert "all connections finished" in proc.log()
    finally:
        proc.stop()
        upstream.close()


def test_under_the_supervisor():
    proc = start("--workers", "2")
    try:
        for _ in range(4):
            with Client(proc.address) as c:
                assert c.request("GET", "/sleep?ms=1").status == 200
    finally:
        assert proc.stop() == 0, proc.log()


def test_async_app_is_refused_by_other_engines():
    proc = ServerProcess("threaded", app=ASYNC_APP, start_timeout=10)
    with pytest.raises(RuntimeError, match="only --engine asyncio can run it"):
        proc.start()


def test_an_object_with_an_async_call_is_awaited():
    """`async def __call__` is an async app too (`flash_green.colour`): run as
    plain WSGI, its body would be a coroutine and the answer a 500."""
    proc = start(app="tests.async_suite_app:callable_app")
    try:
        with Client(proc.address) as c:
            response = c.request("POST", "/echo", b"awaited")
            assert (response.status, response.body) == (200, b"awaited")
    finally:
        assert proc.stop() == 0, proc.log()


def test_missing_uvloop_is_one_clear_line():
    cmd = ["serve", "--engine", "asyncio", "--uvloop", "-b", "127.0.0.1:0"]
    result = run_python(BLOCKED_IMPORT.format(package="uvloop", argv=cmd))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "flash: --uvloop needs the package 'uvloop': pip install uvloop"]
