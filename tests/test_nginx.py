"""Flash behind a real nginx (TLS at nginx, a unix socket to Flash), where nginx is installed."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import tempfile

import pytest

from comparisons import nginx

from .serverproc import ServerProcess

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(nginx.unavailable() is not None, reason=nginx.unavailable() or ""),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is not installed"),
]


@pytest.fixture(scope="module")
def front():
    """nginx on 127.0.0.1 with TLS, in front of an epoll instance on a unix socket."""
    with tempfile.TemporaryDirectory(prefix="flash-nginx-test-") as directory:
        socket_path = os.path.join(directory, "flash.sock")
        # No TCP peer is trusted: only nginx, on the unix socket, may speak for the client.
        server = ServerProcess("epoll", args=["-b", f"unix:{socket_path}", "--forwarded-allow-ips", ""]).start()
        try:
            with nginx.Nginx([f"unix:{socket_path}"], tls=nginx.self_signed_certificate(directory)) as proxy:
                yield proxy
        finally:
            assert server.stop() == 0, server.log()


def get(front: nginx.Nginx, path: str, headers: dict | None = None, requests: int = 1) -> list:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(front.host, front.port, context=context, timeout=15)
    try:
        out = []
        for _ in range(requests):
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            out.append((response.status, response.read()))
        return out
    finally:
        conn.close()


def test_hello_through_nginx_over_a_unix_socket(front: nginx.Nginx) -> None:
    assert get(front, "/", requests=3) == [(200, b"Hello, World!")] * 3


def test_the_app_sees_the_client_as_nginx_saw_it(front: nginx.Nginx) -> None:
    [(status, body)] = get(front, "/environ", headers={"X-Forwarded-For": "6.6.6.6"})
    seen = json.loads(body)
    assert status == 200
    assert seen["wsgi.url_scheme"] == "https", "X-Forwarded-Proto from nginx's TLS listener"
    # nginx appended the real peer to the client's forged list; only the
    # right-most untrusted address counts.
    assert seen["REMOTE_ADDR"] == "127.0.0.1"
    assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("127.0.0.1", str(front.port)), "X-Forwarded-Host/-Port"
