"""Every engine, with and without --workers, serving on a unix socket (`-b unix:PATH`)."""

from __future__ import annotations

import json
import os
import socket
import tempfile

import pytest

from .conftest import Target, start_server, suite_targets
from .httpclient import Client

pytestmark = pytest.mark.timeout(90)


class UnixClient(Client):
    """The suite's raw client over a unix stream socket."""

    def __init__(self, path: str, timeout: float = 15.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""


@pytest.mark.parametrize("target", suite_targets())
def test_every_engine_serves_a_unix_socket_and_removes_it_on_exit(target: Target, hold_dir: str) -> None:
    with tempfile.TemporaryDirectory(prefix="flash-unix-") as directory:
        path = os.path.join(directory, "flash.sock")
        server = start_server(target, hold_dir, "-b", f"unix:{path}")
        try:
            assert server.unix_path == path
            with UnixClient(path) as client:
                first = client.request("GET", "/")
                again = client.request("POST", "/echo", body=b"over a unix socket")
                seen = json.loads(client.request("GET", "/environ", headers={
                    "X-Forwarded-For": "203.0.113.9"}).body)
            assert (first.status, first.body) == (200, b"Hello, World!")
            assert again.body == b"over a unix socket"
            # A unix peer is a trusted proxy; the socket has no host or port of
            # its own, so SERVER_NAME/SERVER_PORT come from `Host: localhost`.
            assert seen["REMOTE_ADDR"] == "203.0.113.9"
            assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("localhost", "80")
        finally:
            code = server.stop()
        assert code == 0, server.log()
        assert not os.path.exists(path), "the socket file outlived the server"
