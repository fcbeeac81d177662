"""Apps that break PEP 3333 rules, on every engine (the routes of tests/misbehaving_app.py).

A broken app ends its own request - a 500 when nothing was sent yet, a
closed connection once the head is out, one log line - and never the
server, whose exit code the `server` fixture checks at the end. Output
rules hold on every engine: write() sends before it returns, never more
than Content-Length goes out, and the app sees one environ for one request.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from .httpclient import Client, build_request, chunked
from .test_engines import Hold, assert_still_serving

pytestmark = pytest.mark.timeout(90)

#: What the server logs on purpose here (see conftest's log check): the
#: adapter's line for a piece that is not bytes, the traceback of an app's
#: SystemExit or KeyboardInterrupt, and under cgi the server's line for its
#: gateway child, which exits non-zero once a response broke after its head.
NOT_BYTES = r"the app yielded a str, not bytes"
APP_RAISED = r"(SystemExit|KeyboardInterrupt): raised "
GATEWAY_BROKE = r"the CGI gateway exited with \d+ on GET /mis/"


def read_head(c: Client) -> bytes:
    return c._read_until(b"\r\n\r\n")


def assert_closed_after_response(c: Client) -> None:
    """The server closed the connection after its response: a request sent
    now gets no answer. (A keep-alive timeout cannot pass this, as it could
    pass a plain wait for EOF: a kept connection would answer.)"""
    try:
        c.send(build_request("GET", "/"))
    except OSError:
        pass
    assert c.closed_by_server()
    assert c.buf == b"", "the connection was kept: the next request got an answer"


def wait_for_adapter_traceback(server, token: str, timeout: float = 10.0) -> None:
    """Wait (bounded) until the WSGI adapter has logged the error that ends
    with `token`: one record of flash.wsgi naming the request, with its
    traceback (not a thread, a loop or a process dying with it)."""
    record = re.compile(r"flash\.wsgi: [^\n]*" + token + r"[^\n]*\nTraceback \(most recent call last\):\n"
                        r"(?:[ \t][^\n]*\n)+\w+: [^\n]*" + token)
    deadline = time.monotonic() + timeout
    while not record.search(server.log()):
        assert time.monotonic() < deadline, f"no traceback from the adapter for {token}:\n{server.log()}"
        time.sleep(0.01)


# -- write() (PEP 3333: sent before it returns) --------------------------------

def test_write_reaches_the_client_before_the_app_returns(server, hold_dir):
    # The app writes b"first", then waits until the test releases it: the test
    # can only read "first" if write() sent it while the app still runs.
    hold = Hold(hold_dir)
    with Client(server.address, timeout=10) as c:
        c.send(build_request("GET", f"/mis/write-hold?name={hold.name}"))
        try:
            head = read_head(c)
            assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head
            assert c._read_until(b"\r\n") == b"5" and c._read_exact(5) == b"first"
        finally:
            hold.release()
        assert c._read_until(b"0\r\n\r\n") == b"\r\nd\r\n and the rest\r\n"
        assert c.request("GET", "/").status == 200  # the connection goes on


# -- Content-Length: exactly that many bytes, or a closed connection --------------

@pytest.mark.expected_log(GATEWAY_BROKE)
@pytest.mark.parametrize("via", ["write", "iter", "list"])
def test_body_past_content_length_is_cut_at_it_then_closed(server, via):
    with Client(server.address) as c:
        c.send(build_request("GET", f"/mis/length?declared=9&sent=10&via={via}"))
        resp = c.read_response()
        assert resp.status == 200 and resp.header("Content-Length") == "9"
        assert resp.body == b"x" * 9
        assert_closed_after_response(c)
    assert_still_serving(server)


@pytest.mark.expected_log(GATEWAY_BROKE)
@pytest.mark.parametrize("via", ["write", "iter", "list"])
def test_body_short_of_content_length_is_sent_then_closed(server, via):
    with Client(server.address) as c:
        c.send(build_request("GET", f"/mis/length?declared=9&sent=5&via={via}"))
        head = read_head(c)
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 9" in head
        assert c._read_exact(5) == b"x" * 5
        assert_closed_after_response(c)
    assert_still_serving(server)


# -- a piece of body that is not bytes -------------------------------------------

@pytest.mark.expected_log(NOT_BYTES, GATEWAY_BROKE)
@pytest.mark.parametrize("length", ["", "10"], ids=["chunked", "length-delimited"])
def test_str_after_bytes_aborts_the_connection(server, length):
    with Client(server.address) as c:
        c.send(build_request("GET", f"/mis/str?after=3&length={length}"))
        assert read_head(c).startswith(b"HTTP/1.1 200")
        rest = c.read_to_eof()
    assert b"never sent" not in rest and b"a str" not in rest
    if length:
        assert rest == b"bbb"  # 3 of 10: the client knows it broke
    else:
        assert rest == b"3\r\nbbb\r\n"  # no last chunk: the client knows it broke
    assert_still_serving(server)
    assert "yielded a str, not bytes" in server.log()


@pytest.mark.expected_log(NOT_BYTES)
def test_str_first_is_a_500(server):
    with Client(server.address) as c:
        resp = c.request("GET", "/mis/str?after=0")
        assert resp.status == 500 and resp.header("Connection") == "close"
        assert c.closed_by_server()
    assert_still_serving(server)


# -- SystemExit and KeyboardInterrupt end the request, not the server ---------------

@pytest.mark.expected_log(APP_RAISED, GATEWAY_BROKE)
@pytest.mark.parametrize("exc", ["SystemExit", "KeyboardInterrupt"])
@pytest.mark.parametrize("where", ["call", "iter", "late", "close"])
def test_app_raising_systemexit_ends_only_its_request(server, exc, where):
    token = uuid.uuid4().hex
    with Client(server.address) as c:
        c.send(build_request("GET", f"/mis/raise?exc={exc}&where={where}&token={token}"))
        if where in ("call", "iter"):
            resp = c.read_response()
            assert resp.status == 500 and resp.header("Connection") == "close"
        elif where == "late":
            assert read_head(c).startswith(b"HTTP/1.1 200")
            assert c.read_to_eof() == b"b\r\nfirst piece\r\n"  # and no clean end
        else:  # close(): the response was whole before it raised
            assert c.read_response().body == b"first piece and the last"
    wait_for_adapter_traceback(server, token)
    assert_still_serving(server)


# -- one request, one environ ----------------------------------------------------------

#: (request, what the app must see besides the keys every request has, None
#: for a key it must not see; the body it reads)
ENVIRON_CASES = {
    "get": (
        b"GET /mis/environ/caf%C3%A9%20x?b=%20&a=1 HTTP/1.1\r\nHost: localhost\r\n"
        b"X.Dotted: d\r\nAccept: a\r\naccept: b\r\nCookie: a=1\r\nCookie: b=2\r\n"
        b"Authorization: Basic dTpw\r\nX-Latin: caf\xe9\r\nX_Under: dropped\r\n\r\n",
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/mis/environ/caf\xc3\xa9 x",
         "QUERY_STRING": "b=%20&a=1", "REQUEST_URI": "/mis/environ/caf%C3%A9%20x?b=%20&a=1",
         "HTTP_X.DOTTED": "d", "HTTP_ACCEPT": "a, b", "HTTP_COOKIE": "a=1; b=2",
         "HTTP_AUTHORIZATION": "Basic dTpw", "HTTP_X_LATIN": "caf\xe9"},
        "",
    ),
    "empty-post": (
        build_request("POST", "/mis/environ", headers={"Content-Length": "0"}),
        {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "0"},
        "",
    ),
    "chunked-post": (
        build_request("POST", "/mis/environ", headers={"Transfer-Encoding": "chunked",
                                                       "Content-Type": "text/plain"})
        + chunked(b"hello", b" world"),
        {"REQUEST_METHOD": "POST", "CONTENT_TYPE": "text/plain", "HTTP_TRANSFER_ENCODING": "chunked"},
        "hello world",
    ),
    "post": (
        build_request("POST", "/mis/environ", b"abc", {"Content-Type": "text/plain"}),
        {"REQUEST_METHOD": "POST", "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "3"},
        "abc",
    ),
    # The suite's client is 127.0.0.1, a trusted proxy by default (flash_green.proxy).
    "proxied": (
        build_request("GET", "/mis/environ", headers={
            "X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "example.com"}),
        {"REQUEST_METHOD": "GET", "REMOTE_ADDR": "10.1.2.3", "REMOTE_PORT": None,
         "wsgi.url_scheme": "https", "HTTP_HOST": "example.com", "SERVER_NAME": "example.com",
         "SERVER_PORT": "443", "HTTP_X_FORWARDED_FOR": "10.1.2.3", "HTTP_X_FORWARDED_PROTO": "https",
         "HTTP_X_FORWARDED_HOST": "example.com"},
        "",
    ),
}



@pytest.mark.parametrize("case", ENVIRON_CASES)
def test_one_request_one_environ(server, target, case):
    raw, specific, body = ENVIRON_CASES[case]
    with Client(server.address) as c:
        c.send(raw)
        client_port = c.sock.getsockname()[1]
        resp = c.read_response()
    assert resp.status == 200, resp
    seen = json.loads(resp.body)
    caps = target.capabilities()
    environ = seen["environ"]
    flags = {key: environ.pop(key) for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once")}
    assert flags["wsgi.run_once"] is caps.fork_per_request
    assert flags["wsgi.multiprocess"] is (caps.multiprocess or caps.fork_per_request)
    assert type(flags["wsgi.multithread"]) is bool
    uri = specific.get("REQUEST_URI", "/mis/environ")
    expected = {
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(server.port), "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "flash", "SCRIPT_NAME": "", "PATH_INFO": "/mis/environ",
        "QUERY_STRING": "", "REQUEST_URI": uri, "RAW_URI": uri,
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": str(client_port), "HTTP_HOST": "localhost",
        "wsgi.version": [1, 0], "wsgi.url_scheme": "http", "wsgi.input": "<input>",
        "wsgi.errors": "<errors>", "wsgi.input_terminated": True, "wsgi.file_wrapper": "<callable>",
        **specific,
    }
    expected = {key: value for key, value in expected.items() if value is not None}
    if caps.fork_per_request:
        # The RFC 3875 variables a CGI gateway adds on top of PEP 3333's.
        expected.update(GATEWAY_INTERFACE="CGI/1.1", REMOTE_HOST=expected["REMOTE_ADDR"])
    assert environ == expected
    assert seen["body"] == body
