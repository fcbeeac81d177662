"""The cross-engine suite: written once, run against every registered engine.

Each test talks to a real server process over TCP. Where a model cannot do
something (sequential serving two clients at once), the test asserts the
documented behaviour instead, read from the engine's `capabilities`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import uuid

from urllib.parse import urlencode

import psutil
import pytest

from .conftest import start_server
from .httpclient import Client, Response, assert_connections_bound, build_request, chunked, multipart

pytestmark = pytest.mark.timeout(90)


class Hold:
    """Keep a request of the suite app's /hold endpoint busy until released."""

    def __init__(self, hold_dir: str) -> None:
        self.name = uuid.uuid4().hex[:12]
        self.dir = hold_dir

    @property
    def path(self) -> str:
        return f"/hold?name={self.name}"

    def wait_started(self, timeout: float = 20.0) -> None:
        marker = os.path.join(self.dir, self.name + ".started")
        deadline = time.monotonic() + timeout
        while not os.path.exists(marker):
            assert time.monotonic() < deadline, "the held request never reached the app"
            time.sleep(0.01)

    def release(self) -> None:
        with open(os.path.join(self.dir, self.name + ".release"), "w"):
            pass


def get(server, path: str, **kw):
    with Client(server.address) as c:
        return c.request("GET", path, **kw)


def assert_still_serving(server) -> None:
    resp = get(server, "/")
    assert resp.status == 200 and resp.body == b"Hello, World!"


# -- plain requests -------------------------------------------------------------

def test_hello(server):
    resp = get(server, "/")
    assert resp.status == 200
    assert resp.body == b"Hello, World!"
    assert resp.header("Content-Length") == "13"
    assert resp.header("Content-Type") == "text/plain"
    assert resp.header("Server")
    assert resp.header("Date").endswith("GMT")


def test_head_has_no_body(server):
    with Client(server.address) as c:
        resp = c.request("HEAD", "/")
        assert resp.status == 200 and resp.header("Content-Length") == "13"
        again = c.request("GET", "/")  # the next response starts right after the head
        assert again.body == b"Hello, World!"


def test_json(server):
    resp = get(server, "/json")
    assert json.loads(resp.body) == {"message": "Hello, World!"}


def test_hundred_keep_alive_requests(server, target):
    # A fork-per-request model pays a process start per request: fewer here.
    count = 20 if target.capabilities().fork_per_request else 100
    with Client(server.address) as c:
        for i in range(count):
            resp = c.request("GET", "/")
            assert resp.status == 200 and resp.body == b"Hello, World!", i
            assert resp.header("Connection") is None


def test_ten_pipelined_requests_answered_in_order(server):
    with Client(server.address) as c:
        c.send(b"".join(build_request("POST", "/echo", b"request %d" % i) for i in range(10)))
        bodies = [c.read_response().body for _ in range(10)]
    assert bodies == [b"request %d" % i for i in range(10)]


def test_post_content_length_echo(server):
    with Client(server.address) as c:
        resp = c.request("POST", "/echo", b"hello world", {"Content-Type": "text/plain"})
    assert resp.status == 200 and resp.body == b"hello world"
    assert resp.header("Content-Type") == "text/plain"


def test_post_chunked_echo(server):
    with Client(server.address) as c:
        c.send(build_request("POST", "/echo", headers={"Transfer-Encoding": "chunked"})
               + chunked(b"hello", b" ", b"chunked world"))
        resp = c.read_response()
    assert resp.status == 200 and resp.body == b"hello chunked world"


def test_chunked_body_with_extensions_and_trailers(server):
    body = b"5;name=value\r\nhello\r\n0\r\nX-Trailer: yes\r\n\r\n"
    with Client(server.address) as c:
        c.send(build_request("POST", "/echo", headers={"Transfer-Encoding": "chunked"}) + body)
        assert c.read_response().body == b"hello"


def test_ten_megabyte_upload_and_download(server):
    payload = os.urandom(1024) * 10240
    with Client(server.address, timeout=60) as c:
        resp = c.request("POST", "/echo", payload)
        assert resp.status == 200 and resp.body == payload
        resp = c.request("GET", f"/download?bytes={10 * 1024 * 1024}")
        assert resp.status == 200 and len(resp.body) == 10 * 1024 * 1024


def test_expect_100_continue(server):
    with Client(server.address) as c:
        c.send(build_request("POST", "/echo", headers={"Content-Length": "5", "Expect": "100-continue"}))
        interim = c.read_response()
        assert interim.status == 100
        c.send(b"hello")
        resp = c.read_response()
    assert resp.status == 200 and resp.body == b"hello"


def test_streaming_response_is_chunked(server):
    with Client(server.address) as c:
        resp = c.request("GET", "/stream?chunks=5")
        assert resp.header("Transfer-Encoding") == "chunked"
        assert resp.body == b"".join(b"chunk %d\n" % i for i in range(5))
        assert c.request("GET", "/").status == 200  # still usable after the stream


def test_http10_without_keep_alive_closes(server):
    with Client(server.address) as c:
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 200 and resp.body == b"Hello, World!"
        assert c.closed_by_server()


def test_http10_keep_alive(server):
    with Client(server.address) as c:
        for _ in range(2):
            c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            resp = c.read_response()
            assert resp.status == 200 and resp.header("Connection") == "keep-alive"


def test_http10_stream_is_close_delimited(server):
    with Client(server.address) as c:
        c.send(b"GET /stream?chunks=3 HTTP/1.0\r\n\r\n")
        resp = c.read_response()
    assert resp.header("Transfer-Encoding") is None
    assert resp.body == b"chunk 0\nchunk 1\nchunk 2\n"


def test_connection_close_is_honoured(server):
    with Client(server.address) as c:
        resp = c.request("GET", "/", headers={"Connection": "close"})
        assert resp.status == 200 and resp.header("Connection") == "close"
        assert c.closed_by_server()


def test_static_file_and_traversal(server):
    resp = get(server, "/static/hello.txt")
    assert resp.status == 200 and resp.body == b"Hello from a static file.\n"
    assert get(server, "/static/../demo.py").status == 404
    assert get(server, "/static/%2e%2e/demo.py").status == 404


def test_request_headers_reach_the_app(server):
    resp = get(server, "/headers", headers={"X-One": "1", "X_Sneaky": "no", "Cookie": "a=1"})
    seen = json.loads(resp.body)
    assert seen["x-one"] == "1" and seen["cookie"] == "a=1"
    assert "x-sneaky" not in seen  # `_` names are dropped: they could alias `-` names


# -- bad input: a 4xx, the connection closed, the server still serving ----------

BAD_REQUESTS = [
    ("malformed request line", b"GET /\r\nHost: x\r\n\r\n", 400),
    ("lowercase method", b"get / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("invalid method token", b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("garbage version", b"GET / FTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("no colon", b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", 400),
    ("bare LF in value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\n2\r\n\r\n", 400),
    ("bare CR in value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r2\r\n\r\n", 400),
    ("NUL in value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\x002\r\n\r\n", 400),
    ("invalid header name", b"GET / HTTP/1.1\r\nHost: x\r\nX@A: 1\r\n\r\n", 400),
    ("missing Host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("repeated Host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("CL and TE", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("differing CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    ("repeated CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("CL with plus", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400),
    ("CL with underscore", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0_5\r\n\r\nhello", 400),
    ("TE not ending in chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("unknown TE", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo, chunked\r\n\r\n", 501),
    ("gzip then chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                          b"5\r\nhello\r\n0\r\n\r\n", 501),
    ("deflate then chunked on two lines", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: deflate\r\n"
                                          b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501),
    ("identity then chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501),
    ("chunked twice", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
                      b"0\r\n\r\n", 400),
    ("raw octets in target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("fragment in target", b"GET /page#top HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("userinfo in target", b"GET http://user:pw@x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("invalid Host", b"GET / HTTP/1.1\r\nHost: x/y\r\n\r\n", 400),
    ("HTTP/1.10", b"GET / HTTP/1.10\r\nHost: x\r\n\r\n", 400),
    ("HTTP/01.1", b"GET / HTTP/01.1\r\nHost: x\r\n\r\n", 400),
    ("HTTP/1", b"GET / HTTP/1\r\nHost: x\r\n\r\n", 400),
    ("bad chunk size", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk without CRLF", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
    ("request line too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("header field too large", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
    ("too many fields", b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431),
    ("body over the limit", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413),
]


@pytest.mark.parametrize("raw,status", [pytest.param(r, s, id=i) for i, r, s in BAD_REQUESTS])
def test_bad_input_gets_4xx_and_close(server, raw, status):
    with Client(server.address) as c:
        c.send(raw)
        resp = c.read_response()
        assert resp.status == status, resp
        assert resp.header("Connection") == "close"
        assert resp.body  # a short reason for humans
        assert c.closed_by_server()
    assert_still_serving(server)


def test_chunked_body_over_the_limit_gets_413(server):
    with Client(server.address) as c:
        c.send(build_request("POST", "/echo", headers={"Transfer-Encoding": "chunked"})
               + b"%x\r\n" % (17 * 1024 * 1024))
        resp = c.read_response()
        assert resp.status == 413
        assert c.closed_by_server()
    assert_still_serving(server)


@pytest.mark.expected_log(r"the /error endpoint always fails")
def test_app_exception_gives_500_and_server_goes_on(server):
    resp = get(server, "/error")
    assert resp.status == 500
    assert_still_serving(server)


@pytest.mark.expected_log(r"the /error-late endpoint fails mid-body",
                          # cgi: the server sees its gateway child fail mid-body.
                          r"the CGI gateway exited with \d+ on GET /error-late")
def test_app_exception_after_head_closes_connection(server):
    with Client(server.address) as c:
        c.send(build_request("GET", "/error-late"))
        head = c._read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert c.closed_by_server()
        assert not c.buf.endswith(b"0\r\n\r\n")  # no clean end: the client knows it broke
    assert_still_serving(server)


# -- PEP 3333 conformance and a real framework ----------------------------------

def test_wsgiref_validator_accepts_our_environ(server):
    for path in ("/v/", "/v/json", "/v/stream?chunks=3", "/v/headers"):
        resp = get(server, path)
        assert resp.status == 200, (path, server.log())
    with Client(server.address) as c:
        assert c.request("POST", "/v/echo", b"validated").body == b"validated"


def test_flask_app(server):
    assert get(server, "/flask/hello").body == b"Hello from Flask"
    with Client(server.address) as c:
        assert c.request("POST", "/flask/echo", b"to flask").body == b"to flask"
        c.send(build_request("POST", "/flask/echo", headers={"Transfer-Encoding": "chunked"})
               + chunked(b"chunked ", b"to flask"))
        assert c.read_response().body == b"chunked to flask"


# -- timeouts and concurrency ---------------------------------------------------

@pytest.fixture(scope="module")
def limited_server(target, hold_dir):
    """A second server per target, for the options the main one cannot
    have: --keep-alive 1 and --max-connections 1. Its header timeout is far
    above any bound below, so only the option under test can explain a close."""
    proc = start_server(target, hold_dir, "--keep-alive", "1", "--header-timeout", "20",
                        "--max-connections", "1")
    yield proc
    assert proc.stop() == 0, proc.log()


def test_keep_alive_timeout_closes_idle_connection(limited_server):
    with Client(limited_server.address) as c:
        assert c.request("GET", "/").status == 200
        assert c.request("GET", "/").status == 200  # kept alive between requests
        # Below the default keep-alive (5 s): an engine ignoring --keep-alive fails.
        assert c.closed_by_server(within=4.0)
    assert_still_serving(limited_server)


def test_slow_header_delivery_is_cut_off(server):
    # The suite's --header-timeout is 2 s and its keep-alive 20 s: a close
    # within 6 s is the header timer's (the default would be 10 s).
    with Client(server.address) as c:
        c.send(b"GET / HTTP/1.1\r\nHo")
        assert c.closed_by_server(within=6.0)
    assert_still_serving(server)


def test_slow_client_and_fast_client(server, target):
    """A client stalled mid-head must not hold up others, where the model allows."""
    with Client(server.address) as slow:
        slow.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        with Client(server.address, timeout=10) as fast:
            fast.send(build_request("GET", "/"))
            if target.capabilities().concurrent:
                assert fast.read_response().status == 200
                slow.send(b"\r\n")
                assert slow.read_response().status == 200
            else:
                fast.sock.settimeout(0.5)
                with pytest.raises(socket.timeout):
                    fast.sock.recv(1)  # documented: one connection at a time
                slow.send(b"Connection: close\r\n\r\n")
                assert slow.read_response().status == 200
                fast.sock.settimeout(10)
                assert fast.read_response().status == 200


def test_slow_handler_and_fast_request(server, target, hold_dir):
    """A handler busy in a blocking call: does it stall everybody else?"""
    hold = Hold(hold_dir)
    with Client(server.address, timeout=30) as slow:
        slow.send(build_request("GET", hold.path, headers={"Connection": "close"}))
        hold.wait_started()
        with Client(server.address, timeout=30) as fast:
            fast.send(build_request("GET", "/", headers={"Connection": "close"}))
            if target.handler_stalls():
                fast.sock.settimeout(0.5)
                with pytest.raises(socket.timeout):
                    fast.sock.recv(1)  # documented: the blocking handler holds the loop
                fast.sock.settimeout(30)
                hold.release()
                assert slow.read_response().status == 200
                assert fast.read_response().status == 200
            else:
                assert fast.read_response().status == 200  # answered while slow is held
                hold.release()
                assert slow.read_response().body.startswith(b"released")


def test_max_connections_bounds_the_clients_served_at_once(limited_server, target):
    if target.capabilities().bounds_connections:
        # One slot per process: a client beyond them waits in the backlog.
        assert_connections_bound(limited_server.address, slots=target.workers)
    else:
        assert_still_serving(limited_server)  # documented: accepted, not enforced


# -- what the app is told, and clients that go away ------------------------------

def test_environ_names_both_ends_of_the_connection(server):
    with Client(server.address) as c:
        resp = c.request("GET", "/environ?x=1")
        here = c.sock.getsockname()
    assert json.loads(resp.body) == {
        "REMOTE_ADDR": here[0], "REMOTE_PORT": str(here[1]),
        "SERVER_NAME": server.host, "SERVER_PORT": str(server.port),
        "SERVER_PROTOCOL": "HTTP/1.1", "SCRIPT_NAME": "", "PATH_INFO": "/environ",
        "QUERY_STRING": "x=1", "HTTP_HOST": "localhost", "wsgi.url_scheme": "http",
    }


def test_an_absolute_form_target_names_the_host_and_the_path(server):
    """RFC 9112 3.2.2: with an absolute-form target the server takes the
    authority from the target and ignores the Host field; the app sees only
    the path and query (what a client talking to a proxy sends)."""
    with Client(server.address) as c:
        c.send(b"GET http://example.org:8080/environ?x=1 HTTP/1.1\r\nHost: other.example\r\n\r\n")
        environ = json.loads(c.read_response().body)
        assert (environ["HTTP_HOST"], environ["PATH_INFO"], environ["QUERY_STRING"]) == \
            ("example.org:8080", "/environ", "x=1")
        assert c.request("GET", "/").body == b"Hello, World!"  # the same connection serves on


def test_head_on_a_streamed_response(server):
    with Client(server.address) as c:
        streamed = c.request("GET", "/v/stream?chunks=3")
        head = c.request("HEAD", "/v/stream?chunks=3")
        assert head.status == 200 and head.header("Content-Type") == streamed.header("Content-Type")
        assert head.header("Content-Length") in (None, str(len(streamed.body)))
        # No body went out after the head: the next response starts right there.
        assert c.request("GET", "/").body == b"Hello, World!"


def test_expect_100_continue_for_an_app_that_never_reads_the_body(server):
    """The client holds the body back until told: the server either says
    100 Continue (an engine that reads bodies before the app runs) or gives
    the final answer at once, and then closes or reads the body it did not
    refuse. A server that waits for the body without a word times out here."""
    with Client(server.address, timeout=8) as c:
        c.send(build_request("POST", "/", headers={"Content-Length": "5", "Expect": "100-continue"}))
        resp = c.read_response()
        body_sent = resp.status == 100
        if body_sent:
            c.send(b"hello")
            resp = c.read_response()
        assert resp.status == 200 and resp.body == b"Hello, World!"
        if resp.header("Connection") == "close":
            assert c.closed_by_server()
        else:
            if not body_sent:
                c.send(b"hello")  # the server said it reads on: the body, then a next request
            assert c.request("GET", "/").body == b"Hello, World!"


def open_fds(proc) -> int:
    """Descriptors open in the server: its process and every descendant."""
    root = psutil.Process(proc.proc.pid)
    total = 0
    for process in (root, *root.children(recursive=True)):
        try:
            total += process.num_fds()
        except psutil.NoSuchProcess:
            pass
    return total


def wait_until(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def settled_fds(proc) -> int:
    """The server's descriptor count once a served download has been let go
    (whatever the engine opens lazily for one is open by then)."""
    with Client(proc.address) as c:
        resp = c.request("GET", "/download?bytes=100000", headers={"Connection": "close"})
        assert len(resp.body) == 100000 and c.closed_by_server()
    samples = [open_fds(proc)]

    def steady() -> bool:
        samples.append(open_fds(proc))
        return len(samples) >= 3 and samples[-1] == samples[-2] == samples[-3]
    wait_until(steady, "a steady descriptor count")
    return samples[-1]


def test_client_gone_mid_response_leaks_nothing(server):
    baseline = settled_fds(server)
    c = Client(server.address)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.send(build_request("GET", f"/download?bytes={64 * 1024 * 1024}"))
    c._read_until(b"\r\n\r\n")
    c._more()  # the body is flowing
    c.abort()
    wait_until(lambda: open_fds(server) <= baseline, "the server to let the connection go")
    assert_still_serving(server)


def test_client_gone_mid_upload_leaks_nothing(server):
    baseline = settled_fds(server)
    c = Client(server.address)
    c.send(build_request("POST", "/echo", headers={"Content-Length": str(8 * 1024 * 1024)}))
    c.send(b"x" * 65536)
    c.abort()
    wait_until(lambda: open_fds(server) <= baseline, "the server to let the connection go")
    assert_still_serving(server)


# -- Django and Falcon, mounted under /django/ and /falcon/ -------------------------

UPLOAD = ("data.bin", bytes(range(256)) * 64)
UPLOADED = f"data.bin {len(UPLOAD[1])} {hashlib.sha256(UPLOAD[1]).hexdigest()} a note".encode()
SERVED_FILE = os.path.join(os.path.dirname(__file__), "django_project", "templates", "hello.html")


def post_form(c: Client, path: str, fields: dict, cookie: str = "") -> Response:
    body = urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", **({"Cookie": cookie} if cookie else {})}
    return c.request("POST", path, body, headers)


def check_framework(server, prefix: str, token_field: str) -> None:
    """Template page, CSRF-guarded form, multipart upload, streamed and file
    responses: each leans on a part of the WSGI contract."""
    with Client(server.address) as c:
        page = c.request("GET", f"{prefix}/hello?name=Ada")
        assert page.status == 200 and b"Hello, Ada, from a " in page.body

        form = c.request("GET", f"{prefix}/form")
        token = re.search(rb'name="%s" value="([^"]+)"' % token_field.encode(), form.body).group(1).decode()
        cookie = f"csrftoken={form.cookie('csrftoken')}"
        assert post_form(c, f"{prefix}/form", {token_field: token, "field": "yes"}, cookie).body == b"posted yes"
        assert post_form(c, f"{prefix}/form", {token_field: "forged", "field": "no"}, cookie).status == 403

        body, content_type = multipart({"note": "a note"}, {"file": UPLOAD})
        uploaded = c.request("POST", f"{prefix}/upload", body, {"Content-Type": content_type})
        assert uploaded.status == 200 and uploaded.body == UPLOADED

        streamed = c.request("GET", f"{prefix}/stream?chunks=3")
        assert streamed.header("Transfer-Encoding") == "chunked"
        name = prefix.strip("/")
        assert streamed.body == b"".join(b"%s chunk %d\n" % (name.encode(), i) for i in range(3))

        served = c.request("GET", f"{prefix}/file")
        with open(SERVED_FILE, "rb") as f:
            assert served.status == 200 and served.body == f.read()


def check_error_view(server, path: str, logged: str) -> None:
    assert get(server, path).status == 500
    assert logged in server.log_since(server.log_checked)  # the traceback, for the operator


def test_django_project(server):
    check_framework(server, "/django", "csrfmiddlewaretoken")


@pytest.mark.expected_log(r"the Django /error view always fails")
def test_django_error_view_is_a_500_with_the_traceback_logged(server):
    check_error_view(server, "/django/error", "RuntimeError: the Django /error view always fails")


def test_falcon_app(server):
    check_framework(server, "/falcon", "csrf")


@pytest.mark.expected_log(r"the Falcon /error resource always fails")
def test_falcon_error_is_a_500_with_the_traceback_logged(server):
    check_error_view(server, "/falcon/error", "RuntimeError: the Falcon /error resource always fails")


# -- stopping ---------------------------------------------------------------------
# The graceful stop (SIGTERM with a request in flight, the listener closed,
# idle keep-alive connections drained) is tests/test_engines_stops.py: it waits
# until every serving process has begun its stop before releasing the request,
# which proves the request outlived the signal on supervised targets too.
