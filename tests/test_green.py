"""Green threads beyond the cross-engine suite: the hand-written hub
(`greenhub`) unit by unit, then the greenlet, gevent and eventlet
engines as real processes - cooperative I/O overlaps, a blocking call stalls
the hub, monkey-patching (in subprocesses only), the connection bound, a
prompt graceful stop, `--workers`, and a missing package in one line."""

from __future__ import annotations

import errno
import logging
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import greenhub
from greenhub import CooperativeSocket, Event, Hub, HubError

from .conftest import SUITE_ARGS
from .httpclient import Client
from .serverproc import ROOT, ServerProcess
from .test_tasklets_engine import GatedUpstream

pytestmark = pytest.mark.timeout(120)

GREEN_ENGINES = ["greenlet", "gevent", "eventlet"]


# -- the hub, in this process ---------------------------------------------------

def run_hub(main, *args):
    hub = Hub()
    try:
        return hub, hub.run(main, hub, *args)
    finally:
        hub.close()


def test_greenlets_take_turns_on_a_socketpair():
    """Two greenlets ping-pong: each recv parks its greenlet until the other sends."""
    trace = []

    def main(hub):
        a, b = socket.socketpair()
        left, right = CooperativeSocket(a, hub), CooperativeSocket(b, hub)

        def responder():
            for _ in range(3):
                data = right.recv(16)
                trace.append(("got", data))
                right.sendall(data.upper())

        hub.spawn(responder)
        for word in (b"a", b"b", b"c"):
            left.sendall(word)
            trace.append(("reply", left.recv(16)))
        left.close()
        right.close()

    run_hub(main)
    assert trace == [("got", b"a"), ("reply", b"A"), ("got", b"b"), ("reply", b"B"),
                     ("got", b"c"), ("reply", b"C")]


def test_sleepers_wake_in_deadline_order():
    woke = []

    def main(hub):
        done = Event(hub)

        def sleeper(name, seconds):
            hub.sleep(seconds)
            woke.append(name)
            if len(woke) == 3:
                done.set()

        for name, seconds in (("slow", 0.06), ("fast", 0.02), ("middle", 0.04)):
            hub.spawn(sleeper, name, seconds)
        done.wait()

    run_hub(main)
    assert woke == ["fast", "middle", "slow"]


def test_recv_timeout_raises_socket_timeout():
    def main(hub):
        a, b = socket.socketpair()
        sock = CooperativeSocket(a, hub)
        sock.settimeout(0.05)
        with pytest.raises(socket.timeout):
            sock.recv(1)
        sock.close()
        b.close()

    run_hub(main)


def test_closing_a_socket_wakes_its_waiter_with_an_error():
    seen = []

    def main(hub):
        a, b = socket.socketpair()
        sock = CooperativeSocket(a, hub)
        finished = Event(hub)

        def reader():
            try:
                sock.recv(1)
            except OSError as exc:
                seen.append(exc.errno)
            finished.set()

        hub.spawn(reader)
        hub.sleep(0)  # the reader runs and parks in recv
        sock.close()
        finished.wait()
        b.close()

    run_hub(main)
    assert seen == [errno.EBADF]


def test_a_second_waiter_on_one_fd_is_an_error():
    errors = []

    def main(hub):
        a, b = socket.socketpair()
        sock = CooperativeSocket(a, hub)
        hub.spawn(sock.recv, 1)
        hub.sleep(0)  # the first reader parks in recv
        try:
            hub.wait_readable(sock.fileno())
        except HubError as exc:
            errors.append(str(exc))
        b.sendall(b"x")  # let the first reader finish
        hub.sleep(0.01)
        sock.close()
        b.close()

    run_hub(main)
    assert errors and "already has a waiting greenlet" in errors[0]


def test_everyone_waiting_on_nothing_is_reported_as_deadlock():
    def main(hub):
        Event(hub).wait()  # nobody will ever set it

    with pytest.raises(HubError, match="deadlock"):
        run_hub(main)


def test_a_failing_greenlet_is_logged_and_the_hub_goes_on(caplog):
    def main(hub):
        def broken():
            raise ValueError("boom")

        hub.spawn(broken)
        hub.sleep(0.01)
        return "still running"

    with caplog.at_level(logging.ERROR, logger="flash.greenhub"):
        _, result = run_hub(main)
    assert result == "still running"
    assert any("broken" in record.getMessage() for record in caplog.records)


def test_keep_alive_waits_cost_no_epoll_ctl_after_the_first():
    """Lazy registration: the fd stays in epoll between waits on it."""
    def main(hub):
        a, b = socket.socketpair()
        left, right = CooperativeSocket(a, hub), CooperativeSocket(b, hub)

        def echo():
            while data := right.recv(16):
                right.sendall(data)

        hub.spawn(echo)
        for _ in range(200):
            left.sendall(b"ping")
            assert left.recv(16) == b"ping"
        left.close()
        hub.sleep(0.01)
        right.close()

    hub, _ = run_hub(main)
    assert hub.stats.switches_in >= 400
    assert hub.stats.epoll_ctl <= 6  # register each end once, unregister at close


def test_cancelled_timers_do_not_pile_up():
    """Every wait with a timeout makes a timer; cancelled ones are swept."""
    def main(hub):
        a, b = socket.socketpair()
        left, right = CooperativeSocket(a, hub), CooperativeSocket(b, hub)
        right.settimeout(60)

        def echo():
            while data := right.recv(16):
                right.sendall(data)

        hub.spawn(echo)
        for _ in range(2000):
            left.sendall(b"x")
            left.recv(16)
        assert len(hub._timers) < 500
        left.close()
        hub.sleep(0.01)
        right.close()

    run_hub(main)


def test_cooperative_connect_and_sleep_outside_a_hub_fall_back_to_blocking():
    server = socket.create_server(("127.0.0.1", 0))
    try:
        with greenhub.create_connection(server.getsockname(), timeout=5) as sock:
            assert isinstance(sock, socket.socket)  # no hub running: a plain socket
        greenhub.sleep(0)
    finally:
        server.close()


def test_cooperative_connect_inside_the_hub():
    server = socket.create_server(("127.0.0.1", 0))

    def main(hub):
        greenhub.install(hub)
        try:
            sock = greenhub.create_connection(server.getsockname(), timeout=5)
            assert isinstance(sock, CooperativeSocket)
            sock.close()
        finally:
            greenhub.install(None)

    try:
        run_hub(main)
    finally:
        server.close()


# -- the engines, as processes --------------------------------------------------

def start(engine: str, *args: str, app: str = "flash_green.apps.green_demo:app") -> ServerProcess:
    return ServerProcess(engine, app=app, args=[*SUITE_ARGS, *args]).start()


def concurrent_gets(address, paths: list[str]) -> tuple[float, list]:
    """Send every request at once (one connection each); (seconds, responses)."""
    def fetch(path):
        with Client(address, timeout=60) as c:
            return c.request("GET", path)

    started = time.monotonic()
    with ThreadPoolExecutor(len(paths)) as pool:
        responses = list(pool.map(fetch, paths))
    return time.monotonic() - started, responses


#: Upstream calls a cooperative engine must hold in flight at once.
N_CALLS = 100


@pytest.mark.parametrize("engine,args,path", [
    pytest.param("greenlet", (), "/green/upstream", id="greenlet-hub-socket"),
    pytest.param("gevent", ("--patch",), "/upstream", id="gevent-patched"),
    pytest.param("eventlet", ("--patch",), "/upstream", id="eventlet-patched"),
])
def test_hundred_upstream_calls_are_in_flight_together(engine, args, path):
    """No clock: the upstream answers nobody until all hundred calls are
    connected, so every handler waits on it at the same time."""
    gate = GatedUpstream(N_CALLS)
    proc = start(engine, *args)
    try:
        _, responses = concurrent_gets(proc.address, [f"{path}?port={gate.port}&ms=0"] * N_CALLS)
        assert all(r.body == b"upstream says hi" for r in responses)
    finally:
        assert proc.stop() == 0, proc.log()
    gate.thread.join(10)


@pytest.mark.parametrize("engine,path", [
    ("greenlet", "/sleep?ms=200"),        # time.sleep: the hub never hears of it
    ("gevent", "/sleep?ms=200"),          # without --patch, the same
    ("eventlet", "/sleep?ms=200"),
])
def test_a_blocking_call_stalls_the_whole_hub(engine, path):
    """Five 200 ms sleeps the hub does not know about run one after another:
    a lower bound (they cannot take less than 5 x 200 ms), not a speed claim."""
    proc = start(engine)
    try:
        elapsed, responses = concurrent_gets(proc.address, [path] * 5)
        assert all(r.status == 200 for r in responses)
        assert elapsed >= 5 * 0.2
    finally:
        assert proc.stop() == 0, proc.log()


def test_the_hubs_own_sleep_cooperates():
    proc = start("greenlet")
    try:
        gate = GatedUpstream(5)
        # Five sleepers and five upstream calls in flight together.
        _, responses = concurrent_gets(
            proc.address, ["/green/sleep?ms=100"] * 5 + [f"/green/upstream?port={gate.port}"] * 5)
        assert all(r.status == 200 for r in responses)
        gate.thread.join(10)
    finally:
        assert proc.stop() == 0, proc.log()


@pytest.mark.parametrize("engine", GREEN_ENGINES)
def test_sigterm_stops_promptly_with_an_idle_keep_alive_connection(engine):
    """The stop closes idle connections and the listener, then exits by itself
    (not by the --graceful-timeout deadline, set far beyond the wait here)."""
    proc = start(engine, "--keep-alive", "60", "--graceful-timeout", "90")
    try:
        with Client(proc.address) as idle:
            assert idle.request("GET", "/").status == 200
            proc.signal(signal.SIGTERM)
            assert idle.closed_by_server()
            assert proc.wait(30) == 0
        assert "all connections finished" in proc.log()
    finally:
        proc.stop()


@pytest.mark.parametrize("engine", GREEN_ENGINES)
def test_under_the_supervisor(engine):
    proc = start(engine, "--workers", "2")
    try:
        for _ in range(4):
            with Client(proc.address) as c:
                assert c.request("GET", "/").status == 200
    finally:
        assert proc.stop() == 0, proc.log()


def test_patched_workers_cooperate_under_the_supervisor():
    """Patching happens in each worker after fork; /sleep then cooperates."""
    gate = GatedUpstream(4)
    proc = start("gevent", "--workers", "1", "--patch")
    try:
        _, responses = concurrent_gets(proc.address, [f"/upstream?port={gate.port}"] * 4)
        assert all(r.body == b"upstream says hi" for r in responses)
    finally:
        assert proc.stop() == 0, proc.log()
    gate.thread.join(10)


def test_eventlet_says_once_that_it_is_deprecated():
    proc = start("eventlet", "--workers", "2")
    try:
        with Client(proc.address) as c:
            assert c.request("GET", "/").status == 200
    finally:
        assert proc.stop() == 0, proc.log()
    log = proc.log()
    assert log.count("eventlet is in maintenance mode") == 1
    assert "EventletDeprecationWarning" not in log


# -- patching and missing packages, each in a fresh interpreter -----------------

def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


PATCH_PROBE = """
import sys
from flash_green.patching import patch_from_argv, patched_by
patch_from_argv({argv!r})
import socket, time
print(patched_by(), socket.socket.__module__, time.sleep.__module__)
"""


@pytest.mark.parametrize("argv,expected", [
    (["serve", "--engine", "gevent", "--patch"], "gevent gevent._socket3 gevent.hub"),
    (["serve", "-e", "eventlet", "--patch"], "eventlet eventlet.greenio.base eventlet.greenthread"),
    (["serve", "--engine", "gevent"], "None socket time"),
    (["serve", "--engine", "threaded", "--patch"], "None socket time"),
    # Under the supervisor the master stays unpatched; workers patch after fork.
    (["serve", "--engine", "gevent", "--patch", "--workers", "2"], "None socket time"),
])
def test_patching_happens_first_and_only_when_asked(argv, expected):
    result = run_python(PATCH_PROBE.format(argv=argv))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected.split()


ENTRY_PROBE = """
import os, runpy, sys
from flash_green import patching

apply = patching.apply

def apply_and_say_when(engine):
    print("patched", engine, "before the CLI:", "flash_green.cli" not in sys.modules)
    apply(engine)

patching.apply = apply_and_say_when
os.environ["FLASH_CMD_ARGS"] = {env!r}
sys.argv = ["flash_green", *{argv!r}, "--version"]  # --version: the CLI exits once it parsed
try:
    runpy.run_module("flash_green", run_name="__main__")  # python -m flash_green
except SystemExit:
    pass
print(patching.patched_by())
"""


@pytest.mark.parametrize("argv,env", [
    (["serve", "--engine", "gevent", "--patch"], ""),
    (["serve"], "--engine gevent --patch"),
    (["serve", "--engine", "gevent"], "--patch"),
], ids=["argv", "FLASH_CMD_ARGS", "both"])
def test_the_entry_point_patches_before_it_imports_the_cli(argv, env):
    result = run_python(ENTRY_PROBE.format(argv=argv, env=env))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "patched gevent before the CLI: True", result.stdout
    assert lines[-1] == "gevent"


BLOCKED_IMPORT = """
import runpy, sys
sys.modules[{package!r}] = None  # as if it were not installed
sys.argv = ["flash_green", *{argv!r}]
runpy.run_module("flash_green", run_name="__main__")  # python -m flash_green, patching included
"""


@pytest.mark.parametrize("engine,package,argv", [
    ("greenlet", "greenlet", []),
    ("gevent", "gevent", []),
    ("eventlet", "eventlet", []),
    ("gevent", "gevent", ["--patch"]),
])
def test_a_missing_package_is_one_clear_line(engine, package, argv):
    cmd = ["serve", "--engine", engine, "-b", "127.0.0.1:0", *argv]
    result = run_python(BLOCKED_IMPORT.format(package=package, argv=cmd))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"flash: engine {engine!r} needs the package {package!r}: pip install {package}"]
