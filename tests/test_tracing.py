"""`--trace-requests FILE`: the same record from every engine, with and without workers.

Each engine (and hybrids of each hook family: the blocking loop, the
callback pump, the tasklets loop) serves a few requests on two connections
- one of them pipelined - and the trace must hold one record per request,
with every field, times inside the client's own window and in order
(first byte <= app start <= app end <= last byte), joined to the client's
connection by its port. Nothing here measures speed.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from comparisons.childproc import child_env
from flash_green import engines, tracing
from flash_green.binds import Listener, TCPBind
from flash_green.colour import ASYNC, app_colour
from flash_green.config import Config
from flash_green.engines.base import Engine
from flash_green.http import ServerConnection
from flash_green.loader import load_app

from .conftest import Target, start_server, suite_targets
from .httpclient import Client
from .serverproc import ROOT, ServerProcess

pytestmark = pytest.mark.timeout(90)

FIELDS = {"conn", "pid", "thread", "task", "child", "engine", "peer", "method", "path", "status",
          "first_byte", "app_start", "app_end", "last_byte"}
#: Engines whose app runs in a task of their runtime, named in the record
#: (asyncio too, for an async app).
TASK_ENGINES = {"tasklets", "greenlet", "gevent", "eventlet"}
#: One hybrid per hook family: the callback pump's (sequential and tasklets
#: under --workers are suite targets already).
HYBRIDS = [Target("epoll", ("--workers", "2"))]


def traced_targets() -> list:
    return suite_targets() + [pytest.param(t, id=t.id) for t in HYBRIDS]


def read_trace(path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def client_port(client: Client) -> str:
    return str(client.sock.getsockname()[1])


def get(path: str, close: bool = False) -> bytes:
    extra = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode()


@pytest.fixture(params=traced_targets())
def traced(request, hold_dir, tmp_path):
    """A server of each target with --trace-requests; yields (target, server, trace path)."""
    target = request.param
    target.require()
    path = tmp_path / "trace.jsonl"
    server = start_server(target, hold_dir, "--trace-requests", str(path))
    try:
        yield target, server, path
    finally:
        server.stop()


def test_every_engine_traces_each_request_in_order(traced):
    target, server, path = traced
    began = time.monotonic()
    # The first connection ends with Connection: close, so that a model serving
    # one connection at a time (sequential, prefork) goes on to the second.
    with Client(server.address) as first:
        first.send(get("/"))
        assert first.read_response().status == 200
        first.send(get("/json") + get("/?pipelined", close=True))  # the second arrives behind the first
        assert [first.read_response().status for _ in range(2)] == [200, 200]
        ports = [client_port(first)]
    with Client(server.address) as second:
        second.send(get("/sleep?ms=20", close=True))
        assert second.read_response().status == 200
        ports.append(client_port(second))
    assert server.stop() == 0, server.log()
    ended = time.monotonic()  # a server may note its last byte after the client read it

    records = read_trace(path)
    assert len(records) == 4, records
    supervised = target.hybrid or engines.get(target.engine).capabilities.multiprocess
    expects_task = target.engine in TASK_ENGINES or app_colour(load_app(target.app)) == ASYNC
    by_port = {port: [r for r in records if r["peer"] == f"127.0.0.1:{port}"] for port in ports}
    assert [r["path"] for r in by_port[ports[0]]] == ["/", "/json", "/"]
    assert [r["path"] for r in by_port[ports[1]]] == ["/sleep"]
    for record in records:
        assert set(record) == FIELDS
        assert record["engine"] == target.engine and record["status"] == 200 and record["method"] == "GET"
        assert began <= record["first_byte"] <= record["app_start"] <= record["app_end"] \
            <= record["last_byte"] <= ended, record
        assert isinstance(record["thread"], int)
        assert (record["pid"] != server.proc.pid) == supervised, record
        assert (record["task"] is not None) == expects_task, record
        if target.engine == "cgi":
            assert record["child"] not in (None, record["pid"])
        else:
            assert record["child"] is None
    sleep = by_port[ports[1]][0]
    assert sleep["app_end"] - sleep["app_start"] >= 0.02
    one_connection = {(r["pid"], r["conn"]) for r in by_port[ports[0]]}
    assert len(one_connection) == 1
    assert one_connection != {(sleep["pid"], sleep["conn"])}


@pytest.mark.parametrize("engine, app", [
    ("tasklets", "flash_green.apps.tasklet_demo:app"),
    ("asyncio", "flash_green.apps.async_demo:app"),
])
def test_a_traced_handler_keeps_its_colour(engine, app, hold_dir, tmp_path):
    """A tasklet handler and an async app are still run as such: the app's
    time covers its cooperative sleep, and the record names its task."""
    path = tmp_path / "trace.jsonl"
    server = ServerProcess(engine, app=app, args=["--trace-requests", str(path)]).start()
    try:
        with Client(server.address) as client:
            client.send(get("/sleep?ms=50", close=True))
            response = client.read_response()
        assert response.status == 200 and b"slept 50 ms" in response.body
    finally:
        assert server.stop() == 0, server.log()
    (record,) = read_trace(path)
    assert record["app_end"] - record["app_start"] >= 0.05
    assert record["task"] is not None


def test_records_reach_the_file_while_the_server_runs(hold_dir, tmp_path):
    path = tmp_path / "trace.jsonl"
    server = start_server(Target("threaded"), hold_dir, "--trace-requests", str(path))
    try:
        with Client(server.address) as client:
            client.send(get("/", close=True))
            assert client.read_response().status == 200
        deadline = time.monotonic() + 10 * tracing.FLUSH_INTERVAL
        while not (path.exists() and path.stat().st_size):
            assert time.monotonic() < deadline, "the trace was not written while the server ran"
            time.sleep(0.05)  # polling a file another process writes
        assert read_trace(path)[0]["path"] == "/"
    finally:
        server.stop()


def test_first_byte_is_when_each_request_began_to_arrive(monkeypatch):
    """Unit: a head split over two receives counts from its first; body bytes do
    not move it; a request received while the previous one was being served
    counts from that receive, not from the previous request's."""
    ticks = iter(range(1, 100))
    monkeypatch.setattr(tracing, "CLOCK", lambda: float(next(ticks)))
    conn = tracing.TracedConnection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: t\r\n")               # t=1
    conn.receive_data(b"Content-Length: 4\r\n\r\n")                   # t=2
    assert type(conn.next_event()).__name__ == "Request"
    conn.receive_data(b"body")                                          # t=3
    assert conn.next_event() == b"body"
    conn.next_event()  # the end of the body
    assert conn.first_byte == 1.0
    conn.receive_data(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n")       # t=4, while serving
    assert conn.start_next_cycle()
    assert conn.first_byte == 4.0
    assert conn.next_event().path == "/next"
    conn.next_event()  # its end (no body)
    assert conn.start_next_cycle()
    conn.receive_data(b"GET /later HTTP/1.1\r\nHost: t\r\n\r\n")      # t=5, after a pause
    assert conn.first_byte == 5.0


def test_tracing_is_off_unless_asked(tmp_path):
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        engine = engines.get("sequential")(Config(), lambda e, s: [], [Listener(listener, TCPBind("127.0.0.1", 0))])
        assert tracing.install(engine) is None
        assert engine.tracer is None and engine.connection_class is ServerConnection
        assert Engine.tracer is None
        engine.waker.close()
    finally:
        listener.close()


WRITER = """
import sys
from flash_green import tracing
writer = tracing.Tracer(sys.argv[1], "test")
for i in range(2000):
    writer.pending.append((float(i), i, 0.0, (0.0, 0.0, 1, None, None), 200,
                           "127.0.0.1", "1", "GET", "/" + "x" * 300))
    if i % 100 == 0:
        writer.flush()
writer.close()
"""


def test_processes_append_whole_lines_to_one_file(tmp_path):
    """Two processes (as two workers) appending at once lose no record and split no line."""
    path = str(tmp_path / "trace.jsonl")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, path], cwd=ROOT, env=child_env())
               for _ in range(2)]
    assert [writer.wait(60) for writer in writers] == [0, 0]
    records = read_trace(path)
    assert len(records) == 4000
    assert {r["pid"] for r in records} == {writer.pid for writer in writers}
