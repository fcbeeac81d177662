"""The threaded engine (v3) beyond the cross-engine suite: concurrency and its bound."""

from __future__ import annotations

import os
import socket

import pytest

from .conftest import Target, start_server
from .httpclient import Client, build_request
from .test_engines import Hold

pytestmark = pytest.mark.timeout(60)

THREADED = Target("threaded")
SLOW_REQUESTS = 8


@pytest.fixture
def threaded_server(hold_dir):
    proc = start_server(THREADED, hold_dir)
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture
def bounded_server(hold_dir):
    proc = start_server(THREADED, hold_dir, "--max-connections", "2")
    yield proc
    assert proc.stop() == 0, proc.log()


def started(hold: Hold) -> bool:
    return os.path.exists(os.path.join(hold.dir, hold.name + ".started"))


def test_slow_requests_run_concurrently(threaded_server, hold_dir):
    """N handlers are inside the app at the same moment, each on its thread."""
    holds = [Hold(hold_dir) for _ in range(SLOW_REQUESTS)]
    clients = [Client(threaded_server.address, timeout=30) for _ in holds]
    try:
        for client, hold in zip(clients, holds):
            client.send(build_request("GET", hold.path))
        for hold in holds:
            hold.wait_started()  # all N are held at once: none waits for another
        for hold in holds:
            hold.release()
        for client, hold in zip(clients, holds):
            assert client.read_response().body == f"released {hold.name}\n".encode()
    finally:
        for client in clients:
            client.close()


def test_max_connections_bound_holds(bounded_server, hold_dir):
    """At --max-connections 2, a third client waits (in the backlog) for a free thread."""
    first, second, third = Hold(hold_dir), Hold(hold_dir), Hold(hold_dir)
    with Client(bounded_server.address, timeout=30) as a, \
            Client(bounded_server.address, timeout=30) as b, \
            Client(bounded_server.address, timeout=30) as c:
        a.send(build_request("GET", first.path, headers={"Connection": "close"}))
        b.send(build_request("GET", second.path, headers={"Connection": "close"}))
        first.wait_started()
        second.wait_started()
        c.send(build_request("GET", third.path))
        c.sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            c.sock.recv(1)  # not served while both threads are busy...
        assert not started(third)  # ...and its request never reached the app
        c.sock.settimeout(30)
        first.release()
        assert a.read_response().status == 200
        third.wait_started()  # the freed thread took the waiting connection
        third.release()
        second.release()
        assert c.read_response().body == f"released {third.name}\n".encode()
        assert b.read_response().status == 200
