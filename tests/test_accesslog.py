"""The access log: gunicorn's format atoms, body bytes (not head or framing), the Basic-auth user."""

from __future__ import annotations

import base64
import logging
import re

import pytest

from flash_green import accesslog
from flash_green.http import ServerConnection
from flash_green.wsgi import Exchange, InputStream, WSGIContext, peer_keys

from .serverproc import ServerProcess
from .test_cli import get, wait_for

PEER = ("10.1.2.3", 5555)
HELLO = b"Hello, World!"


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Trace", "t-1")])
    return [HELLO]


def streamed(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"abc"
    yield b""
    yield b"defgh"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access():
    """A logger that keeps its lines; the default format restored afterwards."""
    logger = logging.getLogger("flash.test.accesslog")
    handler = Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, handler.lines
    logger.removeHandler(handler)
    accesslog.configure(accesslog.DEFAULT_FORMAT)


def serve_one(app, raw: bytes, logger) -> bytes:
    conn = ServerConnection()
    conn.receive_data(raw)
    request = conn.next_event()
    ctx = WSGIContext(app, "s", 1, access_log=logger)
    environ = ctx.environ(peer_keys(PEER), request, InputStream(None))
    return b"".join(Exchange(ctx, conn, environ).run())


GET = b"GET /path?q=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: tester/1\r\nReferer: http://r/\r\n\r\n"


def test_default_is_the_combined_format_with_body_bytes(access):
    logger, lines = access
    out = serve_one(hello, GET, logger)
    assert len(out) > 100, "the head is on the wire too"
    assert re.fullmatch(r'10\.1\.2\.3 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                        r'"GET /path\?q=1 HTTP/1\.1" 200 13 "http://r/" "tester/1"', lines[0]), lines


def test_body_bytes_of_a_chunked_response_exclude_the_framing(access):
    logger, lines = access
    out = serve_one(streamed, GET, logger)
    assert b"Transfer-Encoding: chunked" in out
    assert '" 200 8 "' in lines[0], lines


def test_a_head_request_sends_no_body_bytes(access):
    logger, lines = access
    accesslog.configure("%(b)s %(B)s")
    serve_one(hello, b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", logger)
    assert lines == ["- 0"]


def test_user_is_the_basic_auth_user(access):
    logger, lines = access
    token = base64.b64encode(b"alice:s3cret").decode()
    accesslog.configure("%(u)s")
    serve_one(hello, b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic " + token.encode() + b"\r\n\r\n", logger)
    serve_one(hello, b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer xyz\r\n\r\n", logger)
    serve_one(hello, b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic !!notbase64\r\n\r\n", logger)
    assert lines == ["alice", "-", "-"]
    assert "s3cret" not in "".join(lines)


def test_every_atom_and_headers(access, monkeypatch):
    logger, lines = access
    monkeypatch.setenv("FLASH_TEST_ATOM", "from-env")
    accesslog.configure("%(h)s|%(l)s|%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(p)s|%(T)s|%(M)s|%(D)s|%(L)s|"
                        "%({user-agent}i)s|%({X-Missing}i)s|%({x-trace}o)s|%({FLASH_TEST_ATOM}e)s|%(r)s")
    serve_one(hello, GET, logger)
    fields = lines[0].split("|")
    assert fields[:9] == ["10.1.2.3", "-", "GET", "/path", "q=1", "HTTP/1.1", "200", "13", f"<{__import__('os').getpid()}>"]
    assert fields[9] == "0" and fields[10].isdigit() and fields[11].isdigit()
    assert re.fullmatch(r"\d+\.\d{6}", fields[12])
    assert fields[13:] == ["tester/1", "-", "t-1", "from-env", "GET /path?q=1 HTTP/1.1"]


@pytest.mark.parametrize("fmt, words", [("%(zz)s", "unknown atom %(zz)s"), ("%(h)d", "--access-log-format")])
def test_a_bad_format_is_refused_with_its_reason(fmt, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        accesslog.AccessFormat(fmt)


def test_nothing_runs_when_the_log_is_off(monkeypatch):
    def fail(*args):
        raise AssertionError("the access log ran while off")

    monkeypatch.setattr(accesslog, "write", fail)
    assert serve_one(hello, GET, None).endswith(HELLO)
    assert serve_one(streamed, GET, None).endswith(b"0\r\n\r\n")


@pytest.mark.parametrize("engine", ["sequential", "epoll"])
def test_served_requests_are_logged_with_the_given_format(tmp_path, engine):
    log_path = tmp_path / "access.log"
    server = ServerProcess(engine, args=["--access-log", str(log_path),
                                         "--access-log-format", '%(s)s %(b)s "%(r)s" %({x-test}i)s']).start()
    try:
        get(server, "/")
        wait_for(lambda: log_path.exists() and log_path.read_text(), what="an access log line")
    finally:
        server.stop()
    assert log_path.read_text().splitlines()[0] == '200 13 "GET / HTTP/1.1" -'
