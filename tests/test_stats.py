"""Live counters (`--stats`, `--stats-path`), dumps, traces and blocking detection.

The counters must say exactly what a test did: N requests -> N, the bytes
the client received -> bytes_sent, one 404 -> one 4xx; in every registered
engine, and summed over workers under the supervisor. The blocking detectors
must fire on a handler that sleeps and stay quiet otherwise.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import threading
import time

import pytest

from flash_green import engines, stats
from flash_green.config import Config

from .conftest import engine_params, require_engine
from .serverproc import ServerProcess

pytestmark = pytest.mark.timeout(90)

DEMO = "flash_green.apps.demo:app"
BASE_ARGS = ["--keep-alive", "1", "--header-timeout", "2", "--graceful-timeout", "5"]


# -- helpers ----------------------------------------------------------------------

def fetch(address, path: str) -> bytes:
    """One request on its own connection (Connection: close); the raw response bytes."""
    with socket.create_connection(address, timeout=20) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def body_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1]


def wait_for(predicate, timeout: float = 20.0, every: float = 0.05):
    """Poll `predicate` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(every)


def full_log(server: ServerProcess) -> str:
    with open(server.stderr_path, "rb") as handle:
        return handle.read().decode(errors="replace")


def start(engine: str, *args: str, app: str = DEMO) -> ServerProcess:
    return ServerProcess(engine, app=app, args=[*BASE_ARGS, *args]).start()


@pytest.fixture
def servers():
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


# -- every engine: the counters match what the test did ------------------------------

@pytest.mark.parametrize("engine", engine_params())
def test_counters_match_what_the_client_did(engine, servers):
    require_engine(engine)
    server = start(engine, "--stats", "0.2", "--stats-path", "/_stats")
    servers.append(server)
    responses = [fetch(server.address, path) for path in ("/", "/json", "/", "/nope", "/", "/json")]
    assert [r.split(b" ", 2)[1] for r in responses] == [b"200", b"200", b"200", b"404", b"200", b"200"]
    supervised = engines.get(engine).capabilities.multiprocess
    # Each read of the endpoint is itself a request (counted before the app
    # runs) whose bytes count once it is sent, i.e. from the next read on.
    polls: list[bytes] = []

    def converged():
        raw = fetch(server.address, "/_stats")
        polls.append(raw)
        report = json.loads(body_of(raw))
        figures = report["all_workers"] if supervised else report
        expected_bytes = sum(map(len, responses)) + sum(map(len, polls[:-1]))
        every_worker_seen = not supervised or len(report["workers"]) >= 2
        return (every_worker_seen and figures["requests"] == len(responses) + len(polls)
                and figures["connections_total"] == len(responses) + len(polls)
                and figures["bytes_sent"] == expected_bytes
                and figures["errors_4xx"] == 1 and figures["errors_5xx"] == 0) and report

    report = wait_for(converged, every=0.5 if supervised else 0.05)
    if supervised:
        assert report["all_workers"]["workers"] == len(report["workers"]) >= 2
        assert str(report["this_worker"]["pid"]) in report["workers"]
        wait_for(lambda: "stats (all workers)" in full_log(server))
    else:
        assert report["engine"] == engine and report["rss_bytes"] > 0
    # The periodic line, from the engine process itself.
    wait_for(lambda: f"stats engine={engine}" in full_log(server) and "requests=" in full_log(server))


def test_the_endpoint_does_not_exist_unless_asked(servers):
    server = start("epoll", "--stats", "0.2")
    servers.append(server)
    assert fetch(server.address, "/_stats").startswith(b"HTTP/1.1 404")
    assert fetch(server.address, "/stats").startswith(b"HTTP/1.1 404")


# -- the scheduler's own numbers --------------------------------------------------------

@pytest.mark.parametrize("engine, section, key", [
    ("tasklets", "kernel", "steps"),
    ("greenlet", "hub", "switches_in"),
    ("epoll", "loop", "iterations"),
    ("greenlet", "loop", "iterations"),
    ("asyncio", "loop", "iterations"),
    ("event", "pool", "threads"),
    ("threaded", "pool", "limit"),
])
def test_scheduler_numbers_are_exposed(engine, section, key, servers):
    require_engine(engine)
    server = start(engine, "--stats-path", "/_stats")
    servers.append(server)
    for _ in range(3):
        fetch(server.address, "/")
    report = json.loads(body_of(fetch(server.address, "/_stats")))
    assert report[section][key] > 0
    if section == "loop":
        assert report["loop"]["poll_seconds"] > 0 and report["loop"]["events"] > 0


def test_hybrid_workers_sum_their_kernels(servers):
    server = start("tasklets", "--workers", "2", "--stats", "0.3", "--stats-path", "/_stats")
    servers.append(server)
    for _ in range(4):
        fetch(server.address, "/")

    def both_published():
        report = json.loads(body_of(fetch(server.address, "/_stats")))
        workers = report["workers"].values()
        return len(workers) == 2 and all(snap["kernel"] for snap in workers) and report

    report = wait_for(both_published, every=0.3)
    steps = [snap["kernel"]["steps"] for snap in report["workers"].values()]
    assert report["all_workers"]["kernel"]["steps"] == sum(steps)
    assert report["all_workers"]["workers"] == 2
    wait_for(lambda: "stats (all workers)" in full_log(server) and "workers=2" in full_log(server))


# -- dumps and traces (tasklets) -------------------------------------------------------

def test_tasklets_ps_on_the_endpoint_and_on_sigusr2(servers):
    server = start("tasklets", "--stats-path", "/_stats")
    servers.append(server)
    table = body_of(fetch(server.address, "/_stats?ps")).decode()
    assert table.splitlines()[0].split() == ["ID", "NAME", "STATE", "STEPS", "WHERE"]
    assert "accept-" in table and "deadlines" in table and "conn-" in table  # this very connection
    server.signal(signal.SIGUSR2)
    text = wait_for(lambda: "tasklets (SIGUSR2):" in full_log(server) and full_log(server))
    assert "deadlines" in text.split("tasklets (SIGUSR2):", 1)[1]
    assert_still_serving(server)


def test_sigusr2_dumps_thread_stacks_in_other_engines(servers):
    server = start("threaded")
    servers.append(server)
    assert_still_serving(server)  # serving: the handlers were installed before serve()
    server.signal(signal.SIGUSR2)
    wait_for(lambda: "accept_loop" in full_log(server))  # the main thread's stack
    assert_still_serving(server)


def test_tasklets_trap_and_schedule_trace(servers):
    server = start("tasklets", "--trace", "all")
    servers.append(server)
    fetch(server.address, "/")
    # The listener's accept tasklet waits on it; the connection's tasklet runs.
    wait_for(lambda: re.search(r"trap accept-\d+: ReadWait", full_log(server)) and "run conn-" in full_log(server))


def test_trace_is_off_by_default(servers):
    server = start("tasklets", "--log-level", "debug")
    servers.append(server)
    fetch(server.address, "/")
    server.stop()
    assert "trap accept-" not in full_log(server) and "run conn-" not in full_log(server)


def assert_still_serving(server) -> None:
    assert fetch(server.address, "/").split(b"\r\n\r\n", 1)[1] == b"Hello, World!"


# -- blocking detection -------------------------------------------------------------------

#: The warning each single-threaded loop logs when a handler holds it.
BLOCKING_MARKERS = {
    "epoll": "the loop has been held for over",
    "greenlet": "the loop has been held for over",
    "tasklets": "without yielding",
    "asyncio": "the loop has been held for over",
}


@pytest.mark.parametrize("engine", sorted(BLOCKING_MARKERS))
def test_blocking_detector_fires_on_a_sleeping_handler_only(engine, servers):
    require_engine(engine)
    marker = BLOCKING_MARKERS[engine]
    server = start(engine, "--debug-blocking", "500")
    servers.append(server)
    for _ in range(20):
        assert_still_serving(server)
    fetch(server.address, "/sleep?ms=10")
    assert marker not in full_log(server)
    fetch(server.address, "/sleep?ms=2000")
    text = wait_for(lambda: marker in full_log(server) and full_log(server))
    if engine != "tasklets":
        # Caught in the act: the stack is the handler's, inside time.sleep.
        warning = text.split(marker, 1)[1]
        assert "demo.py" in warning and "def sleep" not in warning and "in sleep" in warning


# -- units ------------------------------------------------------------------------------

def test_aggregate_sums_numbers_at_every_depth_but_not_identities():
    a = {"engine": "x", "pid": 1, "started": 5.0, "requests": 2, "kernel": {"steps": 10, "traps": {"Sleep": 1}}}
    b = {"engine": "x", "pid": 2, "started": 6.0, "requests": 3, "kernel": {"steps": 5, "traps": {"Sleep": 4}}}
    total = stats.aggregate([a, b])
    assert total == {"requests": 5, "kernel": {"steps": 15, "traps": {"Sleep": 5}}, "workers": 2}


def test_format_line_shows_counters_and_nonzero_nested_figures():
    snap = {"engine": "tasklets", "pid": 7, "requests": 4, "started": 1.0, "uptime_s": 1.5,
            "kernel": {"steps": 9, "tasklets_crashed": 0, "traps": {"ReadWait": 3}}}
    line = stats.format_line(snap, rate=2.0)
    assert line.startswith("stats engine=tasklets pid=7 requests=4 requests_per_s=2.0 uptime_s=1.5")
    assert "kernel.steps=9" in line and "kernel.traps.ReadWait=3" in line
    assert "crashed" not in line and "started" not in line


def test_metered_poller_counts_and_drives_a_watchdog():
    class Watchdog:
        def __init__(self):
            self.calls = []

        def idle(self):
            self.calls.append("idle")

        def busy(self):
            self.calls.append("busy")

    class FakeEngine:
        config = Config(stats_interval=1.0)

    engine, watchdog = FakeEngine(), Watchdog()
    poller = stats.metered_poller(engine, select.epoll(), watchdog)
    r, w = os.pipe()
    try:
        poller.register(r, select.EPOLLIN)
        assert poller.poll(0) == []
        os.write(w, b"x")
        assert len(poller.poll(1)) == 1
    finally:
        poller.close()
        os.close(r)
        os.close(w)
    assert engine.loop_meter.figures()["iterations"] == 2
    assert engine.loop_meter.events == 1
    assert watchdog.calls == ["idle", "busy", "idle", "busy"]


def test_metered_poller_is_the_bare_poller_when_stats_are_off():
    class FakeEngine:
        config = Config()

    epoll = select.epoll()
    try:
        assert stats.metered_poller(FakeEngine(), epoll) is epoll
    finally:
        epoll.close()


def test_with_endpoint_keeps_a_tasklet_app_a_tasklet_app():
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"app"]
        yield

    app.__tasklet_app__ = True

    class FakeEndpoint:
        def matches(self, environ):
            return environ["PATH_INFO"] == "/_stats"

        def __call__(self, environ, start_response):
            return [b"stats"]

    wrapped = stats.with_endpoint(app, FakeEndpoint())
    assert wrapped.__tasklet_app__

    def result_of(path):
        gen = wrapped({"PATH_INFO": path}, lambda *a: None)
        with pytest.raises(StopIteration) as stop:
            next(gen)
        return stop.value.value

    assert result_of("/_stats") == [b"stats"] and result_of("/") == [b"app"]


def test_workers_publish_files_the_master_reads_and_drops(tmp_path, caplog):
    supervisor = stats.SupervisorStats(interval=0.0)
    try:
        assert stats._workers_dir == supervisor.directory
        stats._publish(supervisor.directory, {"pid": os.getpid(), "requests": 3})
        stats._publish(supervisor.directory, {"pid": 999_999_999, "requests": 5})  # no such process
        assert set(stats.read_workers(supervisor.directory)) == {os.getpid()}
        assert set(stats.read_workers(supervisor.directory, [999_999_999])) == {999_999_999}
        supervisor.tick([os.getpid()])
        assert os.listdir(supervisor.directory) == [f"{os.getpid()}.json"]
    finally:
        supervisor.close()
    assert stats._workers_dir is None and not os.path.exists(supervisor.directory)


def test_reporter_logs_a_rate_between_lines(caplog):
    class FakeCounters:
        started = time.time()

    class FakeEngine:
        name = "fake"
        counters = FakeCounters()
        requests = 0

        def stats(self):
            return {"requests": self.requests}

    engine = FakeEngine()
    reporter = stats.Reporter(engine, interval=60, log_line=True, directory=None)
    with caplog.at_level("INFO", logger="flash.stats"):
        reporter.report_once()
        engine.requests = 10
        reporter.report_once()
    first, second = [r.getMessage() for r in caplog.records]
    assert "requests_per_s" not in first
    assert "requests=10 requests_per_s=" in second


def test_thread_stacks_name_every_thread():
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="parked-for-the-dump")
    thread.start()
    try:
        dump = stats.thread_stacks()
    finally:
        release.set()
        thread.join()
    assert "thread parked-for-the-dump:" in dump and "thread MainThread:" in dump
