"""TLS and several listeners, on every engine (issue 12: `-b` repeatable, TLS).

Each engine's server here listens on three addresses at once: TLS on a TCP
port, plain HTTP on a unix socket, TLS on a second TCP port (`--certfile`
applies to every TCP listener, never to a unix socket). The certificate is
made once per session (conftest's `certificate`). The suite's autouse log
check fails any test whose server logged a traceback or an ERROR: a TLS
failure must be one INFO line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import tempfile
from collections.abc import Iterator

import pytest

from flash_green import engines

from .conftest import CLOSE_BOUND, Target, start_server
from .httpclient import Client, build_request
from .test_unix_socket import UnixClient

pytestmark = pytest.mark.timeout(90)

#: The suite's --header-timeout is 2 s and its keep-alive 20 s: a client that
#: never handshakes, cut within this bound, was cut by the header timer (the
#: default would be 10 s).
NEVER_HANDSHAKES_BOUND = 6.0


class TLSClient(Client):
    """The suite's raw client over TLS, trusting only the test certificate.

    `ragged_eofs=False` makes a close without close_notify an SSLEOFError
    instead of an ordinary end of stream.
    """

    def __init__(self, address, certfile: str, timeout: float = 15.0, ragged_eofs: bool = True) -> None:
        context = ssl.create_default_context(cafile=certfile)
        context.check_hostname = False  # the certificate names 127.0.0.1 in its CN only
        raw = socket.create_connection(address, timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(raw, suppress_ragged_eofs=ragged_eofs)
        self.timeout = timeout
        self.buf = b""


@pytest.fixture(scope="module")
def socket_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="flash-tls-") as directory:
        yield directory


@pytest.fixture(scope="module")
def server_args(certificate, socket_dir) -> tuple[str, ...]:
    certfile, keyfile = certificate
    return ("-b", "127.0.0.1:0", "-b", f"unix:{socket_dir}/flash.sock", "-b", "127.0.0.1:0",
            "--certfile", certfile, "--keyfile", keyfile)


def tcp_ports(server) -> list[int]:
    return [int(address.rpartition(":")[2]) for address in server.addresses if address.startswith("https://")]


def tls_client(server, certificate, port: int | None = None, **kw) -> TLSClient:
    return TLSClient(("127.0.0.1", port or server.port), certificate[0], **kw)


def still_open(client: Client) -> bool:
    """The server has not closed `client`'s connection (checked without waiting)."""
    client.sock.setblocking(False)
    try:
        return client.sock.recv(1) != b""
    except BlockingIOError:
        return True
    except ConnectionError:
        return False
    finally:
        client.sock.settimeout(client.timeout)


def assert_serves_tls(server, certificate) -> None:
    with tls_client(server, certificate) as client:
        resp = client.request("GET", "/")
    assert (resp.status, resp.body) == (200, b"Hello, World!")


# -- the TLS variant of the cross-engine basics -----------------------------------------

def test_hello_over_tls(server, certificate):
    assert server.addresses[0].startswith("https://127.0.0.1:")
    with tls_client(server, certificate) as client:
        resp = client.request("GET", "/")
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert (resp.status, resp.body) == (200, b"Hello, World!")
    assert resp.header("Content-Length") == "13"


def test_keep_alive_over_tls(server, target, certificate):
    count = 5 if target.capabilities().fork_per_request else 20
    with tls_client(server, certificate) as client:
        for i in range(count):
            resp = client.request("GET", "/")
            assert (resp.status, resp.body) == (200, b"Hello, World!"), i
            assert resp.header("Connection") is None


def test_ten_megabyte_upload_and_download_over_tls(server, certificate):
    payload = os.urandom(1024) * 10240
    with tls_client(server, certificate, timeout=60) as client:
        resp = client.request("POST", "/echo", payload)
        assert resp.status == 200 and resp.body == payload
        resp = client.request("GET", f"/download?bytes={10 * 1024 * 1024}")
        assert resp.status == 200 and len(resp.body) == 10 * 1024 * 1024


def test_eight_megabytes_passed_to_write_over_tls(server, certificate):
    """PEP 3333 write() sends before it returns: on a non-blocking TLS socket
    the socket fills, OpenSSL says SSLWantWriteError (not EAGAIN), and the
    rest must still leave, the same bytes first."""
    size = 8 * 1024 * 1024
    with tls_client(server, certificate, timeout=60) as client:
        resp = client.request("GET", f"/mis/length?declared={size}&sent={size}&via=write")
        assert resp.status == 200 and resp.body == b"x" * size
        assert client.request("GET", "/").body == b"Hello, World!"  # still in step


def test_a_bad_request_over_tls_gets_its_400_and_close(server, certificate):
    with tls_client(server, certificate) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy")
        assert client.read_response().status == 400
        assert client.closed_by_server(within=CLOSE_BOUND)
    assert_serves_tls(server, certificate)


def test_the_server_ends_a_tls_connection_with_close_notify(server, certificate):
    """A cut connection and the server's end of the stream look alike in TCP;
    TLS tells them apart, if the server says close_notify before its FIN."""
    with tls_client(server, certificate, ragged_eofs=False) as client:
        resp = client.request("GET", "/", headers={"Connection": "close"})
        assert resp.status == 200
        assert client.sock.recv(1) == b""  # not SSLEOFError: a close_notify came


# -- several listeners --------------------------------------------------------------------

def test_three_listeners_in_one_process_each_with_its_port_and_scheme(server, certificate):
    first, second = tcp_ports(server)
    assert first != second and server.unix_path
    seen = {}
    for port in (first, second):
        with tls_client(server, certificate, port=port) as client:
            seen[port] = json.loads(client.request("GET", "/environ").body)
    with UnixClient(server.unix_path) as client:
        seen["unix"] = json.loads(client.request("GET", "/environ").body)
    for port in (first, second):
        assert (seen[port]["SERVER_PORT"], seen[port]["wsgi.url_scheme"]) == (str(port), "https")
        assert seen[port]["SERVER_NAME"] == "127.0.0.1"
    # The unix socket is plain HTTP; its SERVER_NAME/PORT come from the Host header.
    assert (seen["unix"]["SERVER_PORT"], seen["unix"]["wsgi.url_scheme"]) == ("80", "http")


def test_a_unix_client_and_a_tls_client_are_served_side_by_side(server, target, certificate):
    """Where the model is concurrent both listeners serve at once; sequential
    serves one connection at a time (documented), so the TLS client waits
    until the unix client's keep-alive connection ends, then is served."""
    with UnixClient(server.unix_path) as plain:
        assert plain.request("GET", "/").body == b"Hello, World!"
        if target.capabilities().concurrent:
            with tls_client(server, certificate) as secure:
                for _ in range(3):
                    assert plain.request("GET", "/").body == b"Hello, World!"
                    assert secure.request("GET", "/").body == b"Hello, World!"
            return
        with pytest.raises(socket.timeout):  # no handshake while the unix client is served
            tls_client(server, certificate, timeout=0.5)
        plain.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert plain.read_response().status == 200
    with tls_client(server, certificate) as secure:
        assert secure.request("GET", "/").body == b"Hello, World!"


def reuse_port_targets() -> list:
    """Every engine under --workers 2 --reuse-port: each worker binds its own
    SO_REUSEPORT socket for each of two TCP listeners."""
    return [pytest.param(Target(name, ("--workers", "2", "--reuse-port")), id=name)
            for name in engines.names()]


@pytest.mark.parametrize("target", reuse_port_targets())
def test_workers_with_reuse_port_serve_two_tls_listeners_and_stop_with_close_notify(
        target: Target, hold_dir, certificate):
    """Both listeners of each worker serve; at a graceful stop a keep-alive
    TLS connection left idle is ended with a close_notify (each model's stop
    closes its idle connections its own way: a shutdown under a blocked
    reader, a timer, a drain queue)."""
    target.require()
    certfile, keyfile = certificate
    server = start_server(target, hold_dir, "-b", "127.0.0.1:0", "-b", "127.0.0.1:0",
                          "--certfile", certfile, "--keyfile", keyfile)
    try:
        for port in tcp_ports(server):
            with tls_client(server, certificate, port=port) as client:
                environ = json.loads(client.request("GET", "/environ").body)
            assert (environ["SERVER_PORT"], environ["wsgi.url_scheme"]) == (str(port), "https")
        with tls_client(server, certificate, ragged_eofs=False) as idle:
            assert idle.request("GET", "/").body == b"Hello, World!"
            server.signal(signal.SIGTERM)
            assert server.wait(CLOSE_BOUND + 10) == 0
            assert idle.sock.recv(1) == b""  # not SSLEOFError: a close_notify came
    finally:
        code = server.stop()
    assert code == 0, server.log()


# -- what a TLS port does with what is not TLS ---------------------------------------------

@pytest.mark.parametrize("garbage", [
    build_request("GET", "/"),
    b"\x00\xff\x13\x37" * 64 + b"\r\n\r\n",
], ids=["plain-http", "binary"])
def test_garbage_to_a_tls_port_closes_that_connection_only(server, target, certificate, garbage):
    concurrent = target.capabilities().concurrent
    mark = server.log_size()
    kept = tls_client(server, certificate) if concurrent else None
    try:
        if kept is not None:
            assert kept.request("GET", "/").status == 200
        with Client(server.address) as intruder:
            intruder.send(garbage)
            assert intruder.closed_by_server(within=CLOSE_BOUND)
            assert not intruder.buf.startswith(b"HTTP/"), "a TLS port answered in plain HTTP"
        if kept is not None:
            assert kept.request("GET", "/").status == 200  # the other connection went on
    finally:
        if kept is not None:
            kept.close()
    assert_serves_tls(server, certificate)
    assert "TLS handshake with" in server.log_since(mark)


def test_a_client_that_never_handshakes_is_cut_at_the_header_timeout(server, target, certificate):
    with Client(server.address) as silent:  # connected, and never a ClientHello
        if target.capabilities().concurrent:
            assert_serves_tls(server, certificate)
            assert still_open(silent), "cut before --header-timeout, or while serving the other"
        assert silent.closed_by_server(within=NEVER_HANDSHAKES_BOUND)
    assert_serves_tls(server, certificate)
