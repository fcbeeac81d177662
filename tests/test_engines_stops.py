"""Stops, reloads and limits, on every engine (the cross-engine fixtures).

What a graceful stop promises (`Engine.request_stop`): every request that
reached the server is answered, with `Connection: close` once the stop
began; a new client is refused (or, where a handler holds the process,
answered once it is free) - never left waiting and then reset.

Each test starts its own server (it stops it) and synchronises on what the
server writes - its log lines, the held request's marker file - never on
sleeps.
"""

from __future__ import annotations

import signal
import socket
import time

import psutil
import pytest

from flash_green import engines

from .conftest import SUITE_ARGS, Target, start_server
from .httpclient import Client, build_request
from .serverproc import ServerProcess
from .test_engines import Hold

pytestmark = pytest.mark.timeout(90)

#: Long enough that no keep-alive or graceful deadline ends a test early:
#: whatever closes a connection here is the stop itself.
LONG = ("--keep-alive", "30", "--graceful-timeout", "60")


def one_process_is_concurrent(target: Target) -> bool:
    """One process serves several connections at once (prefork's do not)."""
    return target.engine != "prefork" and engines.get(target.engine).capabilities.concurrent


def one_process_stalls(target: Target) -> bool:
    """A held handler holds its whole process (loop or only thread), so that
    process reaches its stop - and closes its listener - only once released."""
    if target.cooperative_hold:
        return False  # the tasklet or async /hold waits without holding the loop
    if target.engine == "prefork":
        return True  # each process is v1 (sequential)
    return engines.get(target.engine).capabilities.blocking_handler_stalls


def full_log(proc) -> str:
    with open(proc.stderr_path, "rb") as f:
        return f.read().decode(errors="replace")


def wait_for_log(proc, text: str, count: int = 1, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while full_log(proc).count(text) < count:
        assert proc.proc.poll() is None or full_log(proc).count(text) >= count, full_log(proc)
        assert time.monotonic() < deadline, f"no {count} x {text!r} in the log:\n{full_log(proc)}"
        time.sleep(0.01)


#: Engines whose hub runs their signal handlers: while a handler holds the
#: hub, only the signal's delivery (its C handler wrote the hub's wake-up)
#: can be seen from outside, not their log line.
HUB_SIGNALLED = {"gevent", "eventlet"}


def supervised(target: Target) -> bool:
    return target.hybrid or target.capabilities().multiprocess


def serving_pids(proc, target: Target) -> list[int]:
    if not supervised(target):
        return [proc.proc.pid]
    return [child.pid for child in psutil.Process(proc.proc.pid).children()]


def pending(pid: int, signum: int) -> bool:
    """`signum` is pending for `pid` (sent, its handler not run yet)."""
    with open(f"/proc/{pid}/status") as status:
        masks = [int(line.split()[1], 16) for line in status
                 if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask & (1 << (signum - 1)) for mask in masks)


def wait_for_stop(proc, target: Target) -> None:
    """Until every serving process has begun its graceful stop (or, for a
    loop held by a handler, has been woken to begin it)."""
    if supervised(target):
        wait_for_log(proc, "stopping gracefully:")  # the master, after signalling them
    if target.engine in HUB_SIGNALLED:
        deadline = time.monotonic() + 20
        while any(pending(pid, signal.SIGTERM) for pid in serving_pids(proc, target)):
            assert time.monotonic() < deadline, "SIGTERM never delivered"
            time.sleep(0.01)
    else:
        wait_for_log(proc, "received SIGTERM, stopping gracefully", target.workers)  # each logs its stop


def wait_refused(address, timeout: float = 10.0) -> None:
    """Until a new connection is refused (the listener is closed)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe = socket.create_connection(address, timeout=5)
        except (ConnectionRefusedError, ConnectionResetError):
            return  # refused, or the listener closed under this very handshake
        probe.close()
        assert time.monotonic() < deadline, "the listener still accepts after the stop began"
        time.sleep(0.01)


def test_stop_answers_the_next_request_of_an_idle_keep_alive_connection(target, hold_dir):
    """Keep-alive connections idle when the stop begins get their next
    request answered, with Connection: close, instead of a closed socket:
    one whose request arrives while a handler holds the engine (it waits in
    the socket buffer), and one whose request comes once the stop is under
    way (the listener refuses new clients)."""
    # A connection holds a whole sequential process: room for `busy` only
    # with two of them, for `late` only where one process serves several.
    concurrent = target.capabilities().concurrent
    room_for_late = one_process_is_concurrent(target)
    proc = start_server(target, hold_dir, *LONG)
    clients = []
    try:
        early = Client(proc.address, timeout=30)
        clients.append(early)
        late = None
        if room_for_late:
            late = Client(proc.address, timeout=30)
            clients.append(late)
        for idle in clients:
            assert idle.request("GET", "/").status == 200
        if concurrent:
            hold = Hold(hold_dir)
            busy = Client(proc.address, timeout=30)
            clients.append(busy)
            busy.send(build_request("GET", hold.path, headers={"Connection": "close"}))
            hold.wait_started()
        proc.signal(signal.SIGTERM)
        wait_for_stop(proc, target)
        early.send(build_request("GET", "/"))
        if concurrent:
            hold.release()
            assert busy.read_response().status == 200
        if late is not None:
            wait_refused(proc.address)
            late.send(build_request("GET", "/"))
        for idle in (early, late) if late is not None else (early,):
            resp = idle.read_response()
            assert resp.status == 200 and resp.body == b"Hello, World!"
            assert resp.header("Connection") == "close"
            assert idle.closed_by_server()
        assert proc.wait(30) == 0, full_log(proc)
    finally:
        for client in clients:
            client.close()
        proc.stop()


def test_stop_refuses_new_connections_and_strands_none(target, hold_dir):
    """Once the stop began, a new client is refused at once where the engine
    is free to close its listener; where a held handler holds the process,
    a client that connects meanwhile is answered (Connection: close) once
    it is released. Never accepted by the kernel and then left to hang."""
    proc = start_server(target, hold_dir, *LONG)
    try:
        hold = Hold(hold_dir)
        with Client(proc.address, timeout=30) as busy:
            busy.send(build_request("GET", hold.path, headers={"Connection": "close"}))
            hold.wait_started()
            proc.signal(signal.SIGTERM)
            wait_for_stop(proc, target)
            if not one_process_stalls(target):
                wait_refused(proc.address)
            try:
                late = Client(proc.address, timeout=10)
            except ConnectionRefusedError:
                late = None
            if late is not None:
                late.send(build_request("GET", "/"))
            hold.release()
            assert busy.read_response().status == 200
            if late is not None:
                with late:
                    resp = late.read_response()  # a timeout here: stranded in the backlog
                    assert resp.status == 200 and resp.header("Connection") == "close"
        assert proc.wait(30) == 0, full_log(proc)
    finally:
        hold.release()
        proc.stop()


# -- --max-requests -------------------------------------------------------------------

def test_max_requests_is_exact(target, hold_dir):
    """--max-requests 5: the 5th request on a connection is answered with
    Connection: close and the process stops after it - recycled by its
    master, or (without --workers) exiting 0 for its process manager."""
    proc = start_server(target, hold_dir, "--max-requests", "5")
    try:
        with Client(proc.address) as c:
            for i in range(1, 6):
                resp = c.request("GET", "/")
                assert resp.status == 200, i
                assert resp.header("Connection") == ("close" if i == 5 else None), i
            assert c.closed_by_server()
        if supervised(target):
            wait_for_log(proc, "recycled itself; replacing it")
            with Client(proc.address) as c:
                assert c.request("GET", "/").status == 200
        else:
            assert proc.wait(30) == 0, full_log(proc)
            assert "served 5 requests (--max-requests): exiting for a restart" in full_log(proc)
    finally:
        proc.stop()


# -- HUP ---------------------------------------------------------------------------------

def answer(address) -> bytes:
    with Client(address, timeout=10) as c:
        resp = c.request("GET", "/", headers={"Connection": "close"})
        assert resp.status == 200
        return resp.body


def test_hup_serves_the_new_code_or_says_why_not(target, hold_dir, tmp_path, monkeypatch):
    """HUP reloads the app: under --workers through new workers, without
    them in place where the model allows it (between two requests). Where
    it does not, the server logs why and goes on serving - it never dies."""
    source = tmp_path / "answer.txt"
    source.write_bytes(b"old code")
    monkeypatch.setenv("FLASH_TEST_RELOAD_FILE", str(source))
    monkeypatch.setenv("FLASH_TEST_HOLD_DIR", hold_dir)
    proc = ServerProcess(target.engine, app="tests.reload_app:app",
                         args=[*SUITE_ARGS, *target.args]).start()
    try:
        assert answer(proc.address) == b"old code"
        source.write_bytes(b"new code")
        proc.signal(signal.SIGHUP)
        refusal = None if supervised(target) else engines.get(target.engine).reload_refusal
        if refusal:
            wait_for_log(proc, f"HUP ignored without --workers: {refusal}")
            expected = b"new code" if target.capabilities().fork_per_request else b"old code"
            assert answer(proc.address) == expected
        else:
            deadline = time.monotonic() + 20
            while answer(proc.address) != b"new code":
                assert time.monotonic() < deadline, full_log(proc)
                time.sleep(0.01)
        assert proc.proc.poll() is None
    finally:
        assert proc.stop() == 0, full_log(proc)


def test_hup_keeps_serving_when_the_new_code_does_not_load(hold_dir, tmp_path, monkeypatch):
    """A reload that fails (here the import raises) is logged; the old app
    goes on serving."""
    source = tmp_path / "answer.txt"
    source.write_bytes(b"old code")
    monkeypatch.setenv("FLASH_TEST_RELOAD_FILE", str(source))
    proc = ServerProcess("epoll", app="tests.reload_app:app", args=list(SUITE_ARGS)).start()
    try:
        assert answer(proc.address) == b"old code"  # serving: its signal handlers are in
        source.unlink()  # the next import fails: FileNotFoundError
        proc.signal(signal.SIGHUP)
        wait_for_log(proc, "still serving the previous app")
        assert answer(proc.address) == b"old code"
    finally:
        assert proc.stop() == 0, full_log(proc)
