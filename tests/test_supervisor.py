"""The process layer under faults: real masters and workers on ephemeral ports.

Every test starts its own supervised server through the CLI, drives it from
the loopback only, and bounds every wait. Worker processes are found with
psutil as the master's children; "which worker holds this connection" is
read from the kernel's socket table, never guessed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from .conftest import SUITE_ARGS, Target, engine_params, require_engine, start_server
from .httpclient import Client, build_request
from .serverproc import ROOT, ServerProcess
from .test_engines import Hold

pytestmark = pytest.mark.timeout(90)


def wait_for(condition, timeout: float = 15.0, what: str = "condition"):
    """Poll `condition()` until it returns a true value (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def worker_pids(proc) -> set[int]:
    try:
        return {child.pid for child in psutil.Process(proc.proc.pid).children()
                if child.status() != psutil.STATUS_ZOMBIE}
    except psutil.NoSuchProcess:
        return set()


def worker_serving(proc, client: Client) -> int:
    """The pid of the worker holding `client`'s connection (socket table)."""
    local = client.sock.getsockname()
    for pid in worker_pids(proc):
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.raddr and tuple(conn.raddr) == local:
                return pid
    raise AssertionError(f"no worker holds the connection from {local}")


def get_ok(address) -> bool:
    with Client(address, timeout=10) as c:
        resp = c.request("GET", "/", headers={"Connection": "close"})
        return resp.status == 200 and resp.body == b"Hello, World!"


class Load:
    """Client threads sending requests (one connection each) until stopped.

    A new connection per request means every request goes through accept,
    so it lands on whichever worker is waiting: what a restart must handle.
    Bounded: at most `limit` requests per thread.
    """

    def __init__(self, address, threads: int = 2, limit: int = 20000) -> None:
        self.address = address
        self.limit = limit
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._drive, daemon=True) for _ in range(threads)]

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _drive(self) -> None:
        for _ in range(self.limit):
            if self.stop.is_set():
                return
            try:
                good = get_ok(self.address)
                error = "" if good else "bad response"
            except Exception as exc:  # noqa: BLE001 - every failure is a failed request, kept for the test
                good, error = False, repr(exc)
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failures.append(error)

    def wait_for_successes(self, count: int, timeout: float = 15.0) -> None:
        start = self.ok
        wait_for(lambda: self.ok >= start + count, timeout, f"{count} more successful requests")


@pytest.fixture
def servers():
    """Servers a test starts; each stopped at the end even if the test failed."""
    started = []

    def start(engine: str, *args: str, hold_dir: str):
        proc = start_server(Target(engine), hold_dir, *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def send_hold(proc, hold: Hold) -> Client:
    client = Client(proc.address, timeout=30)
    client.send(build_request("GET", hold.path))
    hold.wait_started()
    return client


# -- faults -----------------------------------------------------------------------

def test_kill_9_fails_only_that_workers_request(servers, hold_dir):
    proc = servers("prefork", "--workers", "2", hold_dir=hold_dir)
    with Load(proc.address) as load:
        load.wait_for_successes(20)
        doomed = send_hold(proc, Hold(hold_dir))
        victim = worker_serving(proc, doomed)
        os.kill(victim, signal.SIGKILL)
        with pytest.raises((EOFError, ConnectionResetError)):
            doomed.read_response()  # the one request in flight in that worker

        # Hold two requests at once: only possible with two live workers,
        # and one of them must be the replacement.
        holds = [Hold(hold_dir), Hold(hold_dir)]
        survivors = [send_hold(proc, hold) for hold in holds]
        assert victim not in worker_pids(proc)
        for hold in holds:
            hold.release()
        for client in survivors:
            assert client.read_response().status == 200
            client.close()
        doomed.close()
        load.wait_for_successes(20)
    assert load.failures == []
    assert "died (signal SIGKILL); replacing it" in proc.log()


@pytest.mark.parametrize("engine", ["prefork", "worker"])
def test_sigterm_finishes_in_flight_requests_then_all_exit(servers, hold_dir, engine):
    proc = servers(engine, "--workers", "2", hold_dir=hold_dir)
    holds = [Hold(hold_dir), Hold(hold_dir)]
    clients = [send_hold(proc, hold) for hold in holds]
    pids = worker_pids(proc)
    assert len(pids) == 2
    proc.signal(signal.SIGTERM)
    for hold in holds:
        hold.release()
    for client in clients:
        resp = client.read_response()
        assert resp.status == 200 and resp.body.startswith(b"released")
        assert client.closed_by_server()  # no next request on a stopping worker
        client.close()
    assert proc.wait(30) == 0, proc.log()
    assert not [pid for pid in pids if psutil.pid_exists(pid)], "orphan workers"


def test_sigint_stops_at_once_without_waiting_for_requests(servers, hold_dir):
    proc = servers("prefork", "--workers", "2", hold_dir=hold_dir)
    hold = Hold(hold_dir)
    client = send_hold(proc, hold)
    pids = worker_pids(proc)
    proc.signal(signal.SIGINT)
    with pytest.raises((EOFError, ConnectionResetError)):
        client.read_response()  # cut off, not finished
    client.close()
    assert proc.wait(10) == 0, proc.log()
    assert not [pid for pid in pids if psutil.pid_exists(pid)], "orphan workers"
    hold.release()


def test_graceful_timeout_cuts_off_a_request_that_never_ends(servers, hold_dir):
    proc = servers("prefork", "--workers", "1", "--graceful-timeout", "1", hold_dir=hold_dir)
    hold = Hold(hold_dir)
    client = send_hold(proc, hold)  # not released before the deadline
    proc.signal(signal.SIGTERM)
    with pytest.raises((EOFError, ConnectionResetError)):
        client.read_response()
    client.close()
    assert proc.wait(15) == 0, proc.log()
    assert "graceful timeout" in proc.log()
    hold.release()


def test_hup_restarts_every_worker_without_a_failed_request(servers, hold_dir):
    proc = servers("prefork", "--workers", "2", hold_dir=hold_dir)
    old = worker_pids(proc)
    with Load(proc.address, threads=3) as load:
        load.wait_for_successes(30)
        proc.signal(signal.SIGHUP)
        wait_for(lambda: (lambda now: len(now) == 2 and not now & old)(worker_pids(proc)),
                 what="a new generation of workers replacing the old one")
        load.wait_for_successes(30)
    assert load.failures == []
    assert proc.proc.poll() is None and get_ok(proc.address)


def timeout_engines() -> list:
    """Every engine whose requests --timeout bounds through the heartbeat:
    all but cgi, whose CGI child is bounded by --timeout itself (504)."""
    return engine_params(lambda caps: not caps.fork_per_request)


@pytest.mark.parametrize("engine", timeout_engines())
def test_stuck_request_gets_500_its_stack_is_logged_and_the_worker_replaced(
        servers, hold_dir, engine):
    """--timeout: a request stuck in the app - holding the loop, or only its
    own thread - is answered 500, with every thread's stack in the log (the
    stuck frame among them), and its worker is replaced."""
    require_engine(engine)
    proc = servers(engine, "--workers", "1", "--timeout", "2", "--keep-alive", "1",
                   "--header-timeout", "1", hold_dir=hold_dir)
    (stuck,) = worker_pids(proc)
    hold = Hold(hold_dir)
    client = send_hold(proc, hold)  # never released
    try:
        resp = client.read_response()
        assert resp.status == 500, resp
        log = full_log(proc)
        assert f"worker {stuck} silent for" in log
        assert "every thread's stack" in log and "in hold" in log  # the stuck frame
        wait_for(lambda: stuck not in worker_pids(proc), what="the stuck worker to exit")
        assert get_ok(proc.address)
    finally:
        client.close()
        hold.release()


def test_a_worker_deaf_to_sigabrt_is_dumped_from_c_and_killed(servers, hold_dir, monkeypatch):
    """When the worker cannot run Python (here SIGABRT is blocked, as when a C
    extension holds the interpreter), the master has faulthandler dump its
    threads from C, then kills it."""
    monkeypatch.setenv("FLASH_TEST_HOLD_DIR", hold_dir)
    proc = ServerProcess("sequential", app="tests.deaf_app:app",
                         args=[*SUITE_ARGS, "--workers", "1", "--timeout", "2"]).start()
    try:
        (stuck,) = worker_pids(proc)
        hold = Hold(hold_dir)
        client = Client(proc.address, timeout=30)
        client.send(build_request("GET", f"/deaf?name={hold.name}"))
        hold.wait_started()
        with pytest.raises((EOFError, ConnectionResetError)):
            client.read_response()
        client.close()
        hold.release()
        log = full_log(proc)
        assert f"worker {stuck} did not recover from SIGABRT" in log
        assert "most recent call first" in log and "in hold" in log  # faulthandler's dump
        assert "every thread's stack" not in log  # the Python handler never ran
        wait_for(lambda: stuck not in worker_pids(proc), what="the deaf worker to be killed")
        assert get_ok(proc.address)
    finally:
        proc.stop()


def test_app_that_cannot_load_stops_the_master_with_code_4(tmp_path):
    cmd = [sys.executable, "-m", "flash_green", "serve", "tests.no_such_module:app",
           "--engine", "prefork", "--workers", "3", "-b", "127.0.0.1:0"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=60,
                            start_new_session=True)
    stderr = result.stderr.decode()
    assert result.returncode == 4, stderr
    assert b"listening" not in result.stdout
    assert "cannot import 'tests.no_such_module'" in stderr
    assert "not respawning" in stderr
    assert stderr.count("booted") == 0


# -- management signals ------------------------------------------------------------

def test_ttin_and_ttou_add_and_remove_a_worker(servers, hold_dir):
    proc = servers("prefork", "--workers", "2", hold_dir=hold_dir)
    proc.signal(signal.SIGTTIN)
    wait_for(lambda: len(worker_pids(proc)) == 3, what="a third worker")
    proc.signal(signal.SIGTTOU)
    wait_for(lambda: len(worker_pids(proc)) == 2, what="back to two workers")
    assert get_ok(proc.address)


def test_max_requests_recycles_the_worker(servers, hold_dir):
    proc = servers("prefork", "--workers", "1", "--max-requests", "3", hold_dir=hold_dir)
    seen = set()
    for _ in range(10):
        assert get_ok(proc.address)
        seen |= worker_pids(proc)
    assert len(seen) >= 3, seen
    assert "recycled itself" in proc.log()


def test_usr1_reopens_the_access_log(servers, hold_dir, tmp_path):
    log_path = tmp_path / "access.log"
    proc = servers("prefork", "--workers", "1", "--access-log", str(log_path), hold_dir=hold_dir)
    assert get_ok(proc.address)
    wait_for(log_path.exists, what="the access log")
    log_path.rename(tmp_path / "access.log.1")  # what logrotate does
    proc.signal(signal.SIGUSR1)
    # (The line is written after the response went out: wait for it, not
    # for the file alone.)
    wait_for(lambda: get_ok(proc.address) and log_path.exists()
             and '"GET / HTTP/1.1" 200' in log_path.read_text(), what="a request in a reopened access log")


def test_usr2_reaches_the_workers_and_the_master_survives(servers, hold_dir):
    proc = servers("tasklets", "--workers", "2", hold_dir=hold_dir)
    assert get_ok(proc.address)
    proc.signal(signal.SIGUSR2)
    wait_for(lambda: proc.log().count("STATE") >= 2, what="both workers' tasklet tables")
    assert proc.proc.poll() is None and get_ok(proc.address)


def test_master_killed_leaves_no_orphans(servers, hold_dir):
    proc = servers("prefork", "--workers", "2", hold_dir=hold_dir)
    pids = worker_pids(proc)
    proc.proc.kill()
    proc.proc.wait(10)
    wait_for(lambda: not [p for p in pids if psutil.pid_exists(p)
                          and psutil.Process(p).status() != psutil.STATUS_ZOMBIE],
             what="workers to exit after their master died")


# -- every in-process engine under the supervisor ------------------------------------

@pytest.mark.parametrize("engine", engine_params(lambda caps: not caps.multiprocess))
def test_workers_flag_works_with_every_in_process_engine(servers, hold_dir, engine):
    require_engine(engine)
    proc = servers(engine, "--workers", "2", hold_dir=hold_dir)
    assert len(worker_pids(proc)) == 2
    with Client(proc.address) as c:
        for _ in range(3):
            assert c.request("GET", "/").body == b"Hello, World!"
    assert proc.stop() == 0, proc.log()


def test_reuse_port_gives_each_worker_its_own_listener(servers, hold_dir):
    proc = servers("sequential", "--workers", "2", "--reuse-port", hold_dir=hold_dir)
    for _ in range(5):
        assert get_ok(proc.address)
    listening = {pid for pid in worker_pids(proc)
                 for conn in psutil.Process(pid).net_connections(kind="tcp")
                 if conn.status == psutil.CONN_LISTEN and conn.laddr.port == proc.port}
    assert listening == worker_pids(proc)
    master = psutil.Process(proc.proc.pid).net_connections(kind="tcp")
    assert not [c for c in master if c.status == psutil.CONN_LISTEN]


@pytest.mark.parametrize("engine", ["gevent", "eventlet"])
def test_patching_engines_patch_each_worker_before_the_app_loads(servers, hold_dir, engine):
    require_engine(engine)
    proc = servers(engine, "--workers", "1", "--patch", hold_dir=hold_dir)
    holds = [Hold(hold_dir), Hold(hold_dir)]
    # The hold handler waits with time.sleep: two at once in ONE worker only
    # if time.sleep is the patched, cooperative one.
    clients = [send_hold(proc, hold) for hold in holds]
    for hold in holds:
        hold.release()
    for client in clients:
        assert client.read_response().status == 200
        client.close()
    assert "after start-up" not in proc.log()  # patched before the app's imports


# -- zero-loss restarts ---------------------------------------------------------------

def wait_for_worker_log(proc, pid: int, text: str) -> None:
    wait_for(lambda: f"[{pid}] [INFO] flash.engine: {text}" in full_log(proc),
             what=f"worker {pid} to log {text!r}")


def full_log(proc) -> str:
    with open(proc.stderr_path, "rb") as f:
        return f.read().decode(errors="replace")


@pytest.mark.parametrize("engine", ["epoll", "threaded", "tasklets"])
def test_hup_answers_the_next_request_of_a_retiring_workers_idle_connection(
        servers, hold_dir, engine):
    """A keep-alive connection idle on a worker that a HUP retires is not
    closed under a request on its way: that request is answered, with
    Connection: close, and the client reconnects to the new generation."""
    proc = servers(engine, "--workers", "1", "--keep-alive", "30", hold_dir=hold_dir)
    with Client(proc.address, timeout=30) as idle:
        assert idle.request("GET", "/").status == 200
        old = worker_serving(proc, idle)
        proc.signal(signal.SIGHUP)
        wait_for_worker_log(proc, old, "received SIGTERM, stopping gracefully")
        resp = idle.request("GET", "/")
        assert resp.status == 200 and resp.header("Connection") == "close"
        assert idle.closed_by_server()
    assert get_ok(proc.address)
    wait_for(lambda: old not in worker_pids(proc), what="the old worker to exit")


def test_hup_with_reuse_port_serves_the_connections_queued_on_the_old_socket(servers, hold_dir):
    """With --reuse-port each worker has its own accept queue: a retiring
    worker takes its queue before closing the socket, so the clients that
    waited in it (here while a handler held the worker) are answered, not reset."""
    proc = servers("epoll", "--workers", "1", "--reuse-port", "--keep-alive", "30",
                   hold_dir=hold_dir)
    (old,) = worker_pids(proc)
    hold = Hold(hold_dir)
    busy = send_hold(proc, hold)  # the only worker's loop is held: nothing is accepted
    queued = [Client(proc.address, timeout=30) for _ in range(3)]
    try:
        for client in queued:
            client.send(build_request("GET", "/"))
        proc.signal(signal.SIGHUP)
        wait_for_worker_log(proc, old, "received SIGTERM, stopping gracefully")
        hold.release()
        assert busy.read_response().status == 200
        for client in queued:
            resp = client.read_response()
            assert resp.status == 200 and resp.header("Connection") == "close"
    finally:
        hold.release()
        busy.close()
        for client in queued:
            client.close()
    wait_for(lambda: old not in worker_pids(proc), what="the old worker to exit")
    assert get_ok(proc.address)


@pytest.mark.parametrize("wait", ["keep_alive", "header_timeout", "body_timeout"])
def test_a_timeout_not_above_a_client_wait_is_warned_about(wait, caplog):
    """A worker blocked on one client's wait does not beat; a --timeout not
    above that wait would have the master kill it as stuck."""
    from flash_green import engines
    from flash_green.config import Config
    from flash_green.supervisor import Supervisor

    config = Config(timeout=30.0, keep_alive=5.0, header_timeout=10.0, body_timeout=20.0)
    setattr(config, wait, 30.0)
    supervisor = Supervisor(engines.get("sequential"), config, "flash_green.apps.hello:app")
    with caplog.at_level("WARNING", logger="flash.supervisor"):
        supervisor._warn_about_timeouts()
        assert "may be killed as stuck" in caplog.text
        caplog.clear()
        setattr(config, wait, 29.0)
        supervisor._warn_about_timeouts()
        assert caplog.text == ""



@pytest.mark.parametrize("engine", engine_params())
def test_usr1_without_workers_reopens_the_access_log_and_serves_on(servers, hold_dir, tmp_path, engine):
    """logrotate's postrotate `kill -USR1` must not end a single-process server
    (SIGUSR1's default action is to terminate it)."""
    require_engine(engine)
    log_path = tmp_path / "access.log"
    proc = servers(engine, "--access-log", str(log_path), hold_dir=hold_dir)
    def logged_in_new_file() -> bool:
        # Under prefork the master passes USR1 on: a request may still reach
        # a worker that has not reopened yet, so each poll sends one.
        return get_ok(proc.address) and log_path.exists() and '"GET / HTTP/1.1" 200' in log_path.read_text()

    wait_for(logged_in_new_file, what="the access log")
    log_path.rename(tmp_path / "access.log.1")  # what logrotate does
    proc.signal(signal.SIGUSR1)
    wait_for(logged_in_new_file, what="a request logged in a reopened access log")
    assert proc.proc.poll() is None
