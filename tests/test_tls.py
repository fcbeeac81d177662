"""TLS options and the non-blocking SSL socket (flash_green/tls.py, engines/_tls.py).

What every engine does with TLS is tested once, in test_engines_tls.py; here
are the parts that are one function: the context, the refusal of unusable
options at start-up, client certificates, and `NonBlockingTLS.recv`.
"""

from __future__ import annotations

import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading

import pytest

from comparisons.childproc import ROOT, child_env
from comparisons.nginx import self_signed_certificate
from flash_green import tls
from flash_green.config import Config
from flash_green.engines._tls import NonBlockingTLS

from .serverproc import ServerProcess
from .test_engines_tls import TLSClient

pytestmark = pytest.mark.timeout(60)


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flash_green", "serve", "-b", "127.0.0.1:0", *args],
                          capture_output=True, text=True, timeout=30, cwd=ROOT, env=child_env())


@pytest.fixture(scope="module")
def other_certificate(tmp_path_factory, certificate) -> tuple[str, str]:
    return self_signed_certificate(str(tmp_path_factory.mktemp("other")))


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_unusable_tls_options_are_one_line_before_anything_listens(workers, certificate, other_certificate):
    certfile, keyfile = certificate
    cases = [
        (["--certfile", "/nonexistent/cert.pem"], "flash: --certfile/--keyfile: /nonexistent/cert.pem: no such file"),
        (["--certfile", certfile, "--keyfile", other_certificate[1]],
         f"flash: --certfile/--keyfile {certfile} {other_certificate[1]}: the key does not belong to the certificate"),
        (["--keyfile", keyfile], "flash: --keyfile is given without --certfile: TLS needs a certificate"),
        (["--certfile", certfile, "--keyfile", keyfile, "--cert-reqs", "2"],
         "flash: --cert-reqs 2 needs --ca-certs: the CAs client certificates are checked against"),
        (["--certfile", certfile, "--keyfile", keyfile, "--ciphers", "NO-SUCH-CIPHER"],
         "flash: --ciphers 'NO-SUCH-CIPHER': OpenSSL knows no cipher in that list"),
    ]
    for args, line in cases:
        done = serve("--engine", "epoll", *workers, *args)
        assert (done.returncode, done.stderr.strip().splitlines()[-1]) == (2, line), done.stderr
        assert "Traceback" not in done.stderr and "listening on" not in done.stdout


def test_client_certificates_when_required(certificate):
    """--cert-reqs 2 --ca-certs: a client without a certificate the CAs signed is refused."""
    certfile, keyfile = certificate
    server = ServerProcess("epoll", args=["--certfile", certfile, "--keyfile", keyfile,
                                          "--ca-certs", certfile, "--cert-reqs", "2"]).start()
    try:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with TLSClient(server.address, certfile) as anonymous:
                anonymous.request("GET", "/")  # TLS 1.3: the refusal comes with the first read
        client = TLSClient.__new__(TLSClient)
        context = ssl.create_default_context(cafile=certfile)
        context.check_hostname = False
        context.load_cert_chain(certfile, keyfile)
        client.sock = context.wrap_socket(socket.create_connection(server.address, timeout=15))
        client.timeout, client.buf = 15.0, b""
        with client:
            environ = json.loads(client.request("GET", "/environ").body)
        assert environ["wsgi.url_scheme"] == "https"
    finally:
        assert server.stop() == 0, server.log()


def test_nonblocking_tls_recv_takes_what_openssl_already_decrypted(certificate):
    """A recv smaller than the record leaves the rest decrypted inside OpenSSL,
    where epoll cannot see it: `recv` must take it along, or a level-triggered
    loop would wait for bytes that already arrived."""
    certfile, keyfile = certificate
    context = tls.server_context(Config(certfile=certfile, keyfile=keyfile))
    ours, theirs = socket.socketpair()
    payload = os.urandom(1000)

    def client() -> None:
        client_context = ssl.create_default_context(cafile=certfile)
        client_context.check_hostname = False
        with client_context.wrap_socket(theirs) as sock:
            sock.sendall(payload)  # one record
            sock.recv(1)  # until the server closes

    thread = threading.Thread(target=client)
    thread.start()
    server = NonBlockingTLS(tls.wrap(context, ours))
    fd = server.fileno()
    try:
        while wanted := server.handshake():
            readable, writable, _ = select.select([fd] if wanted == select.EPOLLIN else [],
                                                  [fd] if wanted == select.EPOLLOUT else [], [], 10)
            assert readable or writable, "the handshake stalled"
        assert select.select([fd], [], [], 10)[0]
        assert server.recv(10) == payload
    finally:
        server.close()
        thread.join(10)
