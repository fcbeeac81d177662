"""The PEP 3333 adapter: environ, wsgi.input, start_response, write(), close()."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from flash_green.http import END, PAUSED, Request, ServerConnection
from flash_green.wsgi import (
    Exchange,
    FileWrapper,
    InputStream,
    WSGIContext,
    body_from_connection,
    body_from_pieces,
    peer_keys,
    peer_name,
)

PEER = ("10.1.2.3", 54321)


class Wire:
    """The client side: bytes the server may still receive, bytes it sent."""

    def __init__(self, later: list[bytes] | None = None) -> None:
        self.later = list(later or [])
        self.sent: list[bytes] = []

    def recv(self) -> bytes:
        return self.later.pop(0) if self.later else b""

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]


def start(data: bytes, app=hello, wire: Wire | None = None, *, keep_alive: bool = True):
    """Parse one request from `data` and prepare its Exchange (not run yet)."""
    wire = wire or Wire()
    conn = ServerConnection()
    conn.receive_data(data)
    request = conn.next_event()
    assert type(request) is Request, request
    ctx = WSGIContext(app, "server.example", 8080)
    source = body_from_connection(conn, wire.recv, wire.send) if request.has_body else None
    environ = ctx.environ(peer_keys(PEER), request, InputStream(source))
    return Exchange(ctx, conn, environ, keep_alive), conn, wire


def serve(data: bytes, app=hello, wire: Wire | None = None) -> tuple[bytes, Exchange, ServerConnection]:
    exchange, conn, wire = start(data, app, wire)
    return b"".join(exchange.run()), exchange, conn


def environ_of(data: bytes) -> dict:
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        environ["wsgi.input"].read()
        start_response("204 No Content", [])
        return []

    serve(data, app)
    return seen


def split_response(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], dict(line.split(": ", 1) for line in lines[1:]), body


# -- environ ------------------------------------------------------------------------

def test_environ_has_the_pep3333_keys() -> None:
    env = environ_of(b"POST /p/a%20th?x=1&y=%20 HTTP/1.1\r\nHost: h:1\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 3\r\n\r\nabc")
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/p/a th"
    assert env["QUERY_STRING"] == "x=1&y=%20", "the query string stays encoded"
    assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["SERVER_NAME"] == "server.example" and env["SERVER_PORT"] == "8080"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "10.1.2.3" and env["REMOTE_PORT"] == "54321"
    assert env["REQUEST_URI"] == env["RAW_URI"] == "/p/a%20th?x=1&y=%20"
    assert env["HTTP_HOST"] == "h:1"
    assert env["wsgi.version"] == (1, 0) and env["wsgi.url_scheme"] == "http"
    assert env["wsgi.errors"] is sys.stderr
    assert env["wsgi.multithread"] is False and env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.file_wrapper"] is FileWrapper
    for key, value in env.items():
        if key.isupper():
            assert type(value) is str, key   # CGI keys are native strings


def test_no_content_keys_without_those_fields() -> None:
    env = environ_of(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert "CONTENT_TYPE" not in env and "CONTENT_LENGTH" not in env
    assert env["QUERY_STRING"] == ""


@pytest.mark.parametrize("target, path_info", [
    (b"/caf%C3%A9", "/caf\xc3\xa9"),         # UTF-8 bytes, each decoded as latin-1
    (b"/%e9t%E9", "/\xe9t\xe9"),
    (b"/a%2Fb", "/a/b"),                     # like every WSGI server: %2F is decoded
    (b"/100%", "/100%"),                     # a lone % stays
    (b"/%zz", "/%zz"),
    (b"http://example.com/x%20y?q", "/x y"),
])
def test_path_info_is_percent_decoded_as_latin1(target: bytes, path_info: str) -> None:
    env = environ_of(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert env["PATH_INFO"] == path_info
    path_info.encode("latin-1")   # PEP 3333: bytes in a native string


def test_repeated_fields_are_joined() -> None:
    env = environ_of(b"GET / HTTP/1.1\r\nHost: h\r\nAccept: a\r\nX-Forwarded-For: 1\r\n"
                     b"accept: b\r\nX-Forwarded-For: 2\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n")
    assert env["HTTP_ACCEPT"] == "a, b"
    assert env["HTTP_X_FORWARDED_FOR"] == "1, 2"
    assert env["HTTP_COOKIE"] == "a=1; b=2", "RFC 6265 s.5.4: cookies join with ; "


def test_underscore_names_are_dropped() -> None:
    env = environ_of(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent_Length: 99\r\n"
                     b"X_Auth_User: admin\r\nX-Auth-User: alice\r\n\r\nok")
    assert env["CONTENT_LENGTH"] == "2"
    assert env["HTTP_X_AUTH_USER"] == "alice", "X_Auth_User must not pose as X-Auth-User"


def test_header_names_map_to_http_keys() -> None:
    env = environ_of(b"GET / HTTP/1.1\r\nHost: h\r\nx-lower-case: 1\r\nX.Dotted|Name: 2\r\n\r\n")
    assert env["HTTP_X_LOWER_CASE"] == "1" and env["HTTP_X.DOTTED|NAME"] == "2"


def test_peer_keys_without_a_tuple_peer() -> None:
    assert peer_keys("/tmp/unix.sock") == ("/tmp/unix.sock", "")
    assert peer_keys(None) == ("", "")
    assert peer_keys("") == ("", "")


def test_peer_keys_of_an_address_share_one_string() -> None:
    first = peer_keys((".".join(["10", "0", "0", "1"]), 5555))  # two equal strings, made at run time
    second = peer_keys((".".join(["10", "0", "0", "1"]), 5556))
    assert first == ("10.0.0.1", "5555") and second[1] == "5556"
    assert first[0] is second[0]
    assert peer_keys(("::1", 8080, 0, 0)) == ("::1", "8080")


def test_the_peer_lands_in_environ_shared_head_or_not() -> None:
    ctx = WSGIContext(hello, "s", 1)
    for _ in range(3):  # the third parse of a head is a shared Request (the head cache)
        conn = ServerConnection()
        conn.receive_data(b"GET /peer HTTP/1.1\r\nHost: h\r\n\r\n")
        environ = ctx.environ(peer_keys(("10.1.2.3", 4567)), conn.next_event(), InputStream(None))
        assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("10.1.2.3", "4567")
    assert conn.request.shared


def test_peer_name_for_log_lines() -> None:
    assert peer_name(peer_keys(("10.0.0.1", 5555))) == "10.0.0.1:5555"
    assert peer_name(peer_keys("/run/app.sock")) == "/run/app.sock"
    assert peer_name(peer_keys(None)) == "?" and peer_name(None) == "?"


def test_environ_is_fresh_per_request() -> None:
    ctx = WSGIContext(hello, "s", 1)
    base = peer_keys(PEER)
    conn = ServerConnection()
    conn.receive_data(b"GET /1 HTTP/1.1\r\nHost: h\r\nX-One: 1\r\n\r\n")
    first = ctx.environ(base, conn.next_event(), InputStream(None))
    first["mutated"] = True
    assert conn.next_event() is END and conn.next_event() is PAUSED and conn.start_next_cycle()
    conn.receive_data(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    second = ctx.environ(base, conn.next_event(), InputStream(None))
    assert "HTTP_X_ONE" not in second and "mutated" not in second


# -- wsgi.input ---------------------------------------------------------------------

BODY = b"line one\nline two\r\nthree\n\nlast without newline"


def stream(body: bytes, chunked: bool = False, pieces: int = 7) -> tuple[InputStream, "Reader"]:
    """An InputStream over a real connection; the body arrives in small pieces,
    followed by a pipelined request that the stream must not touch."""
    if chunked:
        framed = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 5]), body[i:i + 5])
                          for i in range(0, len(body), 5)) + b"0\r\n\r\n"
        head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    else:
        framed = body
        head = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)
    wire = framed + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    conn = ServerConnection()
    conn.receive_data(head)
    assert type(conn.next_event()) is Request
    later = Wire([wire[i:i + pieces] for i in range(0, len(wire), pieces)])
    return InputStream(body_from_connection(conn, later.recv, later.send)), Reader(conn, later)


class Reader:
    """The connection under a stream, and the wire bytes it did not receive yet."""

    def __init__(self, conn: ServerConnection, wire: Wire) -> None:
        self.conn = conn
        self.wire = wire


def assert_stopped_at_body_end(reader: Reader) -> None:
    conn = reader.conn
    assert not conn.body_unread
    assert conn.next_event() is PAUSED and conn.start_next_cycle()
    conn.receive_data(b"".join(reader.wire.later))
    assert conn.next_event().target == "/next", "the pipelined request is intact"


@pytest.mark.parametrize("chunked", [False, True])
def test_read_all(chunked: bool) -> None:
    body, conn = stream(BODY, chunked)
    assert body.read() == BODY
    assert body.read() == b"" and body.read(10) == b""
    assert_stopped_at_body_end(conn)


@pytest.mark.parametrize("chunked", [False, True])
def test_read_sized(chunked: bool) -> None:
    body, conn = stream(BODY, chunked)
    got = [body.read(4) for _ in range(20)]
    assert b"".join(got) == BODY
    assert [len(p) for p in got[:len(BODY) // 4]] == [4] * (len(BODY) // 4)
    assert body.read(0) == b"" and body.read(None) == b""
    assert_stopped_at_body_end(conn)


@pytest.mark.parametrize("chunked", [False, True])
def test_readline(chunked: bool) -> None:
    body, conn = stream(BODY, chunked)
    assert body.readline() == b"line one\n"
    assert body.readline(4) == b"line"
    assert body.readline(100) == b" two\r\n"
    assert body.readline() == b"three\n"
    assert body.readline() == b"\n"
    assert body.readline() == b"last without newline"
    assert body.readline() == b""
    assert_stopped_at_body_end(conn)


@pytest.mark.parametrize("chunked", [False, True])
def test_readlines_and_iteration(chunked: bool) -> None:
    expected = [b"line one\n", b"line two\r\n", b"three\n", b"\n", b"last without newline"]
    body, conn = stream(BODY, chunked)
    assert body.readlines() == expected
    assert_stopped_at_body_end(conn)
    body, conn = stream(BODY, chunked)
    assert list(body) == expected
    body, _ = stream(BODY, chunked)
    assert body.readlines(12) == expected[:2], "stop once the hint is reached"


def test_drain_reads_the_rest() -> None:
    body, conn = stream(BODY, chunked=True)
    assert body.read(3) == b"lin"
    body.drain()
    assert body.read() == b""
    assert_stopped_at_body_end(conn)


def test_empty_body_stream() -> None:
    body = InputStream(None)
    assert body.read() == b"" and body.readline() == b"" and list(body) == []
    assert body_from_pieces([]) is None


def test_body_from_pieces() -> None:
    body = InputStream(body_from_pieces([b"ab\nc", b"d\n", b"e"]))
    assert body.readline() == b"ab\n" and body.readline() == b"cd\n" and body.read() == b"e"


def test_continue_is_sent_on_first_read_only() -> None:
    wire = Wire([b"abc"])
    seen = []

    def app(environ, start_response):
        seen.append(list(wire.sent))
        seen.append(environ["wsgi.input"].read())
        start_response("200 OK", [("Content-Length", "0")])
        return []

    serve(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", app, wire)
    assert seen == [[], b"abc"], "no 100 Continue before the app asked for the body"
    assert wire.sent == [b"HTTP/1.1 100 Continue\r\n\r\n"]


def test_a_bad_chunked_body_read_by_the_app_is_a_400() -> None:
    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b"never"]

    out, exchange, _ = serve(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", app)
    assert out.startswith(b"HTTP/1.1 400 ") and not exchange.keep_alive


# -- start_response, write(), the result -------------------------------------------

def test_hello_is_one_bytes_object_with_its_length() -> None:
    exchange, conn, _ = start(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    chunks = list(exchange.run())
    assert len(chunks) == 1, "head and body leave in one send"
    status, fields, body = split_response(chunks[0])
    assert status == "HTTP/1.1 200 OK" and fields["Content-Length"] == "13" and body == b"Hello, World!"
    assert exchange.keep_alive and exchange.status == 200 and exchange.sent == len(chunks[0])


@pytest.mark.parametrize("result", [(b"Hello, ", b"World!"), (b"Hello, World!",), [b"Hello, ", b"World!"]])
def test_a_list_or_tuple_body_leaves_in_one_piece_with_its_length(result) -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    for version in (b"1.1", b"1.0"):
        exchange, _, _ = start(b"GET / HTTP/" + version + b"\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", app)
        chunks = list(exchange.run())
        assert len(chunks) == 1, "head and body leave in one send"
        _, fields, body = split_response(chunks[0])
        assert fields["Content-Length"] == "13" and "Transfer-Encoding" not in fields
        assert body == b"Hello, World!" and exchange.keep_alive


def test_a_tuple_with_a_str_is_500() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        return (b"abc", "text")

    out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    assert out.startswith(b"HTTP/1.1 500 ") and not exchange.keep_alive


def test_generator_body_is_chunked_and_write_comes_first() -> None:
    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"written ")

        def body():
            yield b"yielded"
            yield b""
            yield b" more"
        return body()

    out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    _, fields, body = split_response(out)
    assert fields["Transfer-Encoding"] == "chunked"
    assert body == b"8\r\nwritten \r\n7\r\nyielded\r\n5\r\n more\r\n0\r\n\r\n"
    assert exchange.keep_alive and exchange.sent == len(out)


def test_write_only_app() -> None:
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", "5")])
        write(b"ab")
        write(b"cde")
        return []

    out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    assert split_response(out)[2] == b"abcde" and exchange.keep_alive


def test_write_requires_bytes() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])("text")
        return []

    out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    assert out.startswith(b"HTTP/1.1 500 ") and not exchange.keep_alive


def test_start_response_twice_without_exc_info_is_an_error() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        start_response("201 Created", [])
        return [b"x"]

    out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    assert out.startswith(b"HTTP/1.1 500 ") and exchange.status == 500


def test_exc_info_before_the_head_replaces_the_response() -> None:
    def app(environ, start_response):
        start_response("200 OK", [("X-First", "1")])
        try:
            raise ValueError("boom")
        except ValueError:
            start_response("503 Service Unavailable", [("X-Second", "2")], sys.exc_info())
        return [b"sorry"]

    out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    status, fields, body = split_response(out)
    assert status == "HTTP/1.1 503 Service Unavailable" and "X-First" not in fields
    assert fields["X-Second"] == "2" and body == b"sorry" and exchange.status == 503


def test_exc_info_after_the_head_reraises_and_aborts() -> None:
    raised = []

    def app(environ, start_response):
        start_response("200 OK", [])

        def body():
            yield b"partial"
            try:
                raise ValueError("late")
            except ValueError:
                try:
                    start_response("500 Oops", [], sys.exc_info())
                except ValueError as exc:
                    raised.append(exc)
                    raise
        return body()

    out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    assert raised and str(raised[0]) == "late", "PEP 3333: re-raise when the head is out"
    assert out.startswith(b"HTTP/1.1 200 OK") and b"partial" in out
    assert not out.endswith(b"0\r\n\r\n"), "the body is not ended as if complete"
    assert not exchange.keep_alive


@pytest.mark.parametrize("status, headers", [
    (200, "not a list"), ("200 OK", [("Bad Name", "v")]), ("200 OK", [("X", "a\r\nY: b")]),
    ("200 OK", [("X",)]), ("200 OK", [("X", "v", "w")]), ("200 OK", [("X", b"bytes")]),
    ("200 OK", [(b"X", "v")]), ("200 OK\r\nInjected: yes", []), ("200 OK", [("X", 1)]),
])
def test_bad_start_response_arguments_are_500(status, headers) -> None:
    def app(environ, start_response):
        start_response(status, headers)
        return [b"x"]

    out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    assert out.startswith(b"HTTP/1.1 500 ") and not exchange.keep_alive


def test_app_that_never_calls_start_response_is_500() -> None:
    out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", lambda environ, start_response: [b"x"])
    assert out.startswith(b"HTTP/1.1 500 ") and not exchange.keep_alive
    out, _, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", lambda environ, start_response: iter([b"x"]))
    assert out.startswith(b"HTTP/1.1 500 ")


class Tracked:
    """An app result that records close()."""

    def __init__(self, items, fail_at: int | None = None) -> None:
        self.items = items
        self.fail_at = fail_at
        self.closed = 0

    def __iter__(self):
        for i, item in enumerate(self.items):
            if i == self.fail_at:
                raise RuntimeError("app failed while iterating")
            yield item

    def close(self) -> None:
        self.closed += 1


class TrackedList(list):
    closed = 0

    def close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize("headers, items, fail_at, ok", [
    ([], [b"a", b"b"], None, True),
    ([], [b"a", b"b"], 0, False),
    ([], [b"a", b"b"], 1, False),
    ([("Content-Length", "1")], [b"a", b"b"], None, False),
    ([("Content-Length", "5")], [b"a", b"b"], None, False),
])
def test_close_is_always_called(headers, items, fail_at, ok) -> None:
    result = Tracked(items, fail_at)

    def app(environ, start_response):
        start_response("200 OK", list(headers))
        return result

    _, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    assert result.closed == 1
    assert exchange.keep_alive is ok


@pytest.mark.parametrize("items, ok", [([b"abc"], True), ([b"abc", "text"], False)])
def test_close_is_called_on_a_list_subclass(items: list, ok: bool) -> None:
    result = TrackedList(items)

    def app(environ, start_response):
        start_response("200 OK", [])
        return result

    _, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    assert result.closed == 1 and exchange.keep_alive is ok


def test_a_plain_list_with_a_str_is_500() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"abc", "text"]

    out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    assert out.startswith(b"HTTP/1.1 500 ") and not exchange.keep_alive


def test_exception_before_the_head_is_500_and_logged(caplog) -> None:
    def app(environ, start_response):
        raise KeyError("missing")

    with caplog.at_level(logging.ERROR, logger="flash.wsgi"):
        out, exchange, _ = serve(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n", app)
    status, fields, _ = split_response(out)
    assert status.startswith("HTTP/1.1 500") and fields["Connection"] == "close"
    assert not exchange.keep_alive and exchange.status == 500
    assert "KeyError" in caplog.text


def test_exception_in_a_generator_before_any_body_is_500() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        raise_now = True
        if raise_now:
            raise RuntimeError("before the first item")
        yield b""

    out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    assert out.startswith(b"HTTP/1.1 500 ") and not exchange.keep_alive


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_statuses_get_no_length_of_their_own(status: str) -> None:
    def app(environ, start_response):
        start_response(status, [("X-A", "1")])
        return []

    out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    fields = split_response(out)[1]
    assert "Content-Length" not in fields and "Transfer-Encoding" not in fields
    assert exchange.keep_alive and exchange.status == int(status[:3])


def test_head_of_an_empty_body_claims_no_length() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        return []

    out, _, _ = serve(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    assert "Content-Length" not in split_response(out)[1]


def test_head_request_gets_no_body() -> None:
    out, exchange, _ = serve(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    _, fields, body = split_response(out)
    assert fields["Content-Length"] == "13" and body == b"" and exchange.keep_alive


def test_connect_is_501_without_calling_the_app() -> None:
    called = []
    out, exchange, _ = serve(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
                             lambda e, s: called.append(1) or [])
    assert out.startswith(b"HTTP/1.1 501 ") and not called and not exchange.keep_alive


def test_engine_refusing_keep_alive_sends_close() -> None:
    exchange, _, _ = start(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", keep_alive=False)
    out = b"".join(exchange.run())
    assert split_response(out)[1]["Connection"] == "close" and not exchange.keep_alive


def test_access_log_line(caplog) -> None:
    conn = ServerConnection()
    conn.receive_data(b"GET /logged?q HTTP/1.1\r\nHost: h\r\nUser-Agent: tester\r\n\r\n")
    request = conn.next_event()
    logger = logging.getLogger("flash.test.access")
    ctx = WSGIContext(hello, "s", 1, access_log=logger)
    environ = ctx.environ(peer_keys(PEER), request, InputStream(None))
    with caplog.at_level(logging.INFO, logger="flash.test.access"):
        b"".join(Exchange(ctx, conn, environ).run())
    assert '"GET /logged?q HTTP/1.1" 200' in caplog.text and '"tester"' in caplog.text


# -- wsgi.file_wrapper --------------------------------------------------------------

def test_file_wrapper_streams_blocks_and_closes() -> None:
    data = bytes(range(256)) * 40
    source = io.BytesIO(data)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return environ["wsgi.file_wrapper"](source, 1000)

    exchange, _, _ = start(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    chunks = list(exchange.run())
    assert len(chunks) == 11, "head with the first block, then one send per block"
    assert split_response(b"".join(chunks))[2] == data
    assert source.closed and exchange.keep_alive


def test_file_wrapper_without_close() -> None:
    class Reader:
        def __init__(self) -> None:
            self.parts = [b"ab", b"c"]

        def read(self, size: int) -> bytes:
            return self.parts.pop(0) if self.parts else b""

    wrapper = FileWrapper(Reader(), 2)
    assert list(wrapper) == [b"ab", b"c"] and not hasattr(wrapper, "close")


@pytest.mark.parametrize("items", [["text"], [1], [None], [b"", "text"]])
def test_a_first_piece_that_is_not_bytes_is_500(items, caplog) -> None:
    def app(environ, start_response):
        start_response("200 OK", [])
        return iter(items)

    with caplog.at_level(logging.ERROR, logger="flash.wsgi"):
        out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    assert out.startswith(b"HTTP/1.1 500 ") and not exchange.keep_alive
    assert exchange.status == 500
    assert "not bytes" in caplog.text and "Traceback" not in caplog.text, "one line, the reason"


# -- write(): sent before it returns (PEP 3333) ------------------------------------------

class Sender:
    """An engine's `send_now`: records what it took; `takes` limits each call
    (a non-blocking socket with little room), 0 = BlockingIOError."""

    def __init__(self, takes: list[int] | None = None, error: OSError | None = None) -> None:
        self.takes = list(takes or [])
        self.error = error
        self.sent: list[bytes] = []

    def __call__(self, data: bytes) -> int | None:
        if self.error is not None:
            raise self.error
        if not self.takes:
            self.sent.append(data)
            return None
        n = self.takes.pop(0)
        if n == 0:
            raise BlockingIOError
        self.sent.append(data[:n])
        return n


def exchange_with(app, send_now: Sender) -> Exchange:
    conn = ServerConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    ctx = WSGIContext(app, "s", 1)
    environ = ctx.environ(peer_keys(PEER), conn.next_event(), InputStream(None))
    return Exchange(ctx, conn, environ, send_now=send_now)


def test_write_sends_the_head_and_its_bytes_before_it_returns() -> None:
    sender = Sender()
    seen_by_the_app = []

    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"first")
        seen_by_the_app.append(b"".join(sender.sent))
        return [b" rest"]

    exchange = exchange_with(app, sender)
    rest = b"".join(exchange.run())
    status, fields, body = split_response(seen_by_the_app[0])
    assert status == "HTTP/1.1 200 OK" and fields["Transfer-Encoding"] == "chunked"
    assert body == b"5\r\nfirst\r\n", "written bytes left while the app still ran"
    assert rest == b"5\r\n rest\r\n0\r\n\r\n" and exchange.keep_alive
    assert exchange.sent == len(seen_by_the_app[0]) + len(rest)


def test_what_a_full_socket_did_not_take_leaves_ahead_of_the_next_piece() -> None:
    sender = Sender(takes=[20, 0, 0])

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", "9")])
        write(b"abc")
        write(b"def")
        write(b"g")
        return iter([b"hi"])

    exchange = exchange_with(app, sender)
    rest = b"".join(exchange.run())
    assert sender.sent[0].startswith(b"HTTP/1.1 200 OK") and len(sender.sent) == 1
    out = sender.sent[0] + rest
    assert split_response(out)[2] == b"abcdefghi" and exchange.keep_alive
    assert exchange.sent == len(out)


def test_a_full_socket_queues_written_pieces_without_copying_the_queue() -> None:
    tries = []

    def full_socket(data: bytes) -> int:
        tries.append(len(data))
        raise BlockingIOError

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", "100000")])
        for i in range(100):
            write(b"%03d" % i + b"x" * 997)
        return []

    exchange = exchange_with(app, full_socket)
    body = split_response(b"".join(exchange.run()))[2]
    assert body == b"".join(b"%03d" % i + b"x" * 997 for i in range(100)) and exchange.keep_alive
    assert max(tries) < 2000, "each try sends the first piece, never the whole queue again"


@pytest.mark.parametrize("where", ["call", "iter"])
def test_written_bytes_still_leave_when_the_app_then_fails(where, caplog) -> None:
    def app(environ, start_response):
        start_response("200 OK", [])(b"partial")
        if where == "call":
            raise SystemExit("the app quits")
        return Raising(SystemExit("the app quits"), "iter")

    exchange = exchange_with(app, Sender(takes=[0]))
    with caplog.at_level(logging.ERROR, logger="flash.wsgi"):
        out = b"".join(exchange.run())
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"7\r\npartial\r\n")
    assert not exchange.keep_alive and "SystemExit" in caplog.text


def test_a_failed_send_reaches_the_app_and_is_a_client_gone_line(caplog) -> None:
    def app(environ, start_response):
        start_response("200 OK", [])(b"to nobody")
        return [b"never"]

    exchange = exchange_with(app, Sender(error=BrokenPipeError(32, "Broken pipe")))
    with caplog.at_level(logging.INFO, logger="flash.wsgi"):
        assert list(exchange.run()) == []
    assert not exchange.keep_alive
    assert "client gone" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_write_without_send_now_waits_for_the_next_piece() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])(b"written")
        return iter([b"!"])

    exchange, _, _ = start(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    chunks = list(exchange.run())
    assert chunks[0].startswith(b"HTTP/1.1 200 OK") and chunks[0].endswith(b"7\r\nwritten\r\n1\r\n!\r\n")


# -- Content-Length: exactly that many bytes (PEP 3333), then close ------------------------

def length_app(declared: str, body: bytes, via: str):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", declared)])
        if via == "write":
            write(body)
            return []
        if via == "iter":
            return iter([body[:2], body[2:]])
        if via == "first-piece":
            return iter([body])
        if via == "tuple":
            return (body,)
        return [body]
    return app


@pytest.mark.parametrize("via", ["write", "iter", "first-piece", "list", "tuple"])
def test_a_body_past_its_content_length_is_cut_at_it_and_closed(via: str, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="flash.wsgi"):
        out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", length_app("9", b"0123456789", via))
    status, fields, body = split_response(out)
    assert status == "HTTP/1.1 200 OK" and fields["Content-Length"] == "9"
    assert body == b"012345678", "exactly Content-Length bytes, not one more"
    assert not exchange.keep_alive and exchange.status == 200
    assert exchange.body_sent == 9, "the access log counts what went out"
    assert "more than its Content-Length (9)" in caplog.text
    if via in ("list", "tuple", "first-piece"):
        assert fields["Connection"] == "close", "the head had not left: it says so"


@pytest.mark.parametrize("via", ["write", "iter", "first-piece", "list", "tuple"])
def test_a_body_short_of_its_content_length_is_sent_and_closed(via: str, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="flash.wsgi"):
        out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", length_app("9", b"01234", via))
    status, fields, body = split_response(out)
    assert status == "HTTP/1.1 200 OK" and fields["Content-Length"] == "9" and body == b"01234"
    assert not exchange.keep_alive and exchange.body_sent == 5
    assert "5 bytes, 4 short of its Content-Length (9)" in caplog.text


def test_an_empty_body_short_of_its_content_length_says_close() -> None:
    out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", length_app("5", b"", "iter"))
    status, fields, body = split_response(out)
    assert status == "HTTP/1.1 200 OK" and fields["Connection"] == "close" and body == b""
    assert not exchange.keep_alive


def test_past_its_content_length_the_app_is_not_iterated_further() -> None:
    result = Tracked([b"abc", b"def", b"never pulled"])

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "4")])
        return result

    result.items = iter(result.items)
    out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    assert split_response(out)[2] == b"abcd" and result.closed == 1
    assert next(result.items) == b"never pulled"


def test_writes_past_content_length_are_dropped_with_one_warning(caplog) -> None:
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", "3")])
        for piece in (b"ab", b"cd", b"ef"):
            write(piece)
        return [b"gh"]

    with caplog.at_level(logging.WARNING, logger="flash.wsgi"):
        out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    assert split_response(out)[2] == b"abc" and not exchange.keep_alive
    assert caplog.text.count("Content-Length") == 1


# -- pieces that are not bytes --------------------------------------------------------------

@pytest.mark.parametrize("declared", [None, "10"], ids=["chunked", "length-delimited"])
def test_a_str_after_bytes_aborts_and_never_reaches_the_engine(declared, caplog) -> None:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", declared)] if declared else [])
        return iter([b"bytes", "a str", b"never"])

    exchange, _, _ = start(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    with caplog.at_level(logging.ERROR, logger="flash.wsgi"):
        chunks = list(exchange.run())
    assert all(type(c) is bytes for c in chunks), "the engine only ever gets bytes"
    assert b"never" not in b"".join(chunks) and not b"".join(chunks).endswith(b"0\r\n\r\n")
    assert not exchange.keep_alive
    assert "the app yielded a str, not bytes" in caplog.text
    assert "Traceback" not in caplog.text


def test_bytearray_and_memoryview_pieces_are_accepted() -> None:
    def app(environ, start_response):
        start_response("200 OK", [])(bytearray(b"ab"))
        return iter([memoryview(b"cd"), bytearray(b"ef")])

    exchange, _, _ = start(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", app)
    chunks = list(exchange.run())
    assert all(type(c) is bytes for c in chunks)
    assert split_response(b"".join(chunks))[2] == b"2\r\nab\r\n2\r\ncd\r\n2\r\nef\r\n0\r\n\r\n"


# -- an app error ends its request, never the server ----------------------------------------

class Raising:
    def __init__(self, exc: BaseException, where: str) -> None:
        self.exc = exc
        self.where = where

    def __iter__(self):
        if self.where == "iter":
            raise self.exc
        yield b"first"
        if self.where == "late":
            raise self.exc
        yield b" last"

    def close(self) -> None:
        if self.where == "close":
            raise self.exc


def raising_app(exc: BaseException, where: str):
    def app(environ, start_response):
        if where == "call":
            raise exc
        start_response("200 OK", [])
        return Raising(exc, where)
    return app


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt(), RuntimeError("x")],
                         ids=["SystemExit", "KeyboardInterrupt", "RuntimeError"])
@pytest.mark.parametrize("where", ["call", "iter", "late", "close"])
def test_an_app_error_ends_only_its_request(exc, where, caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="flash.wsgi"):
        try:
            out, exchange, _ = serve(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", raising_app(exc, where))
        except BaseException as escaped:  # noqa: BLE001 - it would end pytest itself
            pytest.fail(f"{escaped!r} escaped the Exchange")
    assert type(exc).__name__ in caplog.text, "logged with its traceback"
    if where in ("call", "iter"):
        assert out.startswith(b"HTTP/1.1 500 ") and not exchange.keep_alive
    elif where == "late":
        assert out.endswith(b"5\r\nfirst\r\n") and not exchange.keep_alive
    else:
        assert out.endswith(b"0\r\n\r\n"), "the response was whole before close() raised"


def cancellations() -> list:
    import asyncio

    import greenlet
    import tasklets
    return [GeneratorExit(), tasklets.Cancelled(), greenlet.GreenletExit(), asyncio.CancelledError()]


@pytest.mark.parametrize("exc", cancellations(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("where", ["call", "iter", "late", "close"])
def test_a_cancellation_is_the_engines_and_goes_through(exc, where) -> None:
    # The contract with the engines: the Exchange catches APP_ERRORS only;
    # a cancellation must reach the engine that delivered it.
    exchange, _, _ = start(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", raising_app(exc, where))
    with pytest.raises(type(exc)):
        list(exchange.run())


def test_failed_is_a_500_before_the_head_and_an_abort_after() -> None:
    exchange, _, _ = start(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert exchange.failed(KeyboardInterrupt())[0].startswith(b"HTTP/1.1 500 ")
    exchange, _, _ = start(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    exchange.start_response("200 OK", [])(b"out")
    assert b"".join(exchange.failed(SystemExit())).endswith(b"3\r\nout\r\n")
    assert not exchange.keep_alive
