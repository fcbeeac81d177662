"""The sans-IO HTTP/1.1 core, event by event: parsing, limits, response framing."""

from __future__ import annotations

import re
from dataclasses import replace
from email.utils import parsedate_to_datetime

import pytest

from flash_green.config import Limits
from flash_green.http import (
    CLOSED,
    END,
    NEED_DATA,
    PAUSED,
    HTTPError,
    Request,
    ResponseError,
    ServerConnection,
    render_error,
)

HOST = b"Host: example.com\r\n"


def connection(data: bytes = b"", limits: Limits | None = None, eof: bool = False) -> ServerConnection:
    conn = ServerConnection(limits)
    if data:
        conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    return conn


def events(conn: ServerConnection) -> list:
    """Pull events until the core needs data, pauses or closes (body joined)."""
    out: list = []
    while True:
        event = conn.next_event()
        if type(event) is bytes and out and type(out[-1]) is bytes:
            out[-1] += event
        else:
            out.append(event)
        if event is NEED_DATA or event is PAUSED or event is CLOSED:
            return out


def parse(data: bytes, limits: Limits | None = None) -> Request:
    request = connection(data, limits).next_event()
    assert type(request) is Request, request
    return request


def rejects(data: bytes, limits: Limits | None = None, eof: bool = False) -> HTTPError:
    conn = connection(data, limits, eof)
    with pytest.raises(HTTPError) as info:
        for _ in range(100):
            if conn.next_event() is PAUSED:
                conn.start_next_cycle()
    return info.value


def get(target: bytes = b"/", version: bytes = b"1.1", extra: bytes = b"") -> bytes:
    return b"GET " + target + b" HTTP/" + version + b"\r\n" + HOST + extra + b"\r\n"


# -- events -----------------------------------------------------------------------

def test_a_get_is_request_end_paused() -> None:
    conn = connection(get(b"/a?b=c"))
    request, *rest = events(conn)
    assert (request.method, request.target, request.path, request.query) == ("GET", "/a?b=c", "/a", "b=c")
    assert request.version == "HTTP/1.1" and request.headers == [("host", "example.com")]
    assert rest == [END, PAUSED]
    assert conn.next_event() is PAUSED, "PAUSED until start_next_cycle"
    assert conn.start_next_cycle()
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED


def test_head_arrives_in_pieces() -> None:
    conn = connection(b"GET / HT")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"TP/1.1\r\nHost: a\r\n\r")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"\n")
    assert type(conn.next_event()) is Request


def test_empty_lines_before_a_request_are_ignored() -> None:
    assert parse(b"\r\n\r\n" + get()).path == "/"


def test_body_by_content_length_comes_in_pieces() -> None:
    conn = connection(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
    request = conn.next_event()
    assert request.content_length == 10 and request.has_body and not request.chunked
    assert conn.next_event() == b"01234"
    assert conn.body_unread
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"56789GET")
    assert conn.next_event() == b"56789"
    assert conn.next_event() is END
    assert not conn.body_unread
    assert conn.next_event() is PAUSED
    assert conn.buffered == 3, "the pipelined bytes stay buffered"


def test_field_values_are_trimmed_and_names_lower_cased() -> None:
    request = parse(b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: \t v a l \t \r\nEmpty:\r\n\r\n")
    assert request.headers == [("host", "a"), ("x-pad", "v a l"), ("empty", "")]
    assert request.header("x-pad") == "v a l" and request.header("absent") is None


def test_obs_text_in_values_is_decoded_as_latin1() -> None:
    request = parse(b"GET /caf%C3%A9 HTTP/1.1\r\nHost: a\r\nX: \xe9t\xe9\r\n\r\n")
    assert request.header("x") == "\xe9t\xe9" and request.path == "/caf%C3%A9"


def test_repeated_fields_are_kept_in_order() -> None:
    request = parse(get(extra=b"Accept: a\r\nAccept: b\r\n"))
    assert [v for n, v in request.headers if n == "accept"] == ["a", "b"]


def test_eof_between_requests_is_closed_not_an_error() -> None:
    assert connection(b"", eof=True).next_event() is CLOSED


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: a\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n",
])
def test_eof_inside_a_request_is_400(data: bytes) -> None:
    assert rejects(data, eof=True).status == 400


# -- keep-alive -------------------------------------------------------------------

@pytest.mark.parametrize("version, connection_header, keep_alive", [
    (b"1.1", b"", True),
    (b"1.1", b"Connection: close\r\n", False),
    (b"1.1", b"Connection: keep-alive, Close\r\n", False),
    (b"1.1", b"Connection: Upgrade\r\nConnection: close\r\n", False),
    (b"1.1", b"Connection: keep-alive\r\n", True),
    (b"1.0", b"", False),
    (b"1.0", b"Connection: Keep-Alive\r\n", True),
    (b"1.0", b"Connection: keep-alive, close\r\n", False),
    (b"1.0", b"Connection: keep-alive-not\r\n", False),
])
def test_keep_alive_rules(version: bytes, connection_header: bytes, keep_alive: bool) -> None:
    assert parse(get(version=version, extra=connection_header)).keep_alive is keep_alive


def test_http10_needs_no_host() -> None:
    assert parse(b"GET / HTTP/1.0\r\n\r\n").version == "HTTP/1.0"


# -- pipelining -------------------------------------------------------------------

def test_pipelined_requests_wait_for_start_next_cycle() -> None:
    conn = connection(get(b"/1") + b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi" + get(b"/3"))
    first = events(conn)
    assert first[0].target == "/1" and first[1:] == [END, PAUSED]
    assert conn.request.target == "/1", "the current request stays until the next cycle"
    assert conn.start_next_cycle()
    second = events(conn)
    assert second[0].target == "/2" and second[1:] == [b"hi", END, PAUSED]
    assert conn.start_next_cycle()
    assert events(conn)[0].target == "/3"


def test_next_cycle_refused_while_the_body_is_unread() -> None:
    conn = connection(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
    conn.next_event()
    assert conn.body_unread
    assert conn.start_next_cycle() is False
    assert conn.next_event() is CLOSED


def test_next_cycle_allowed_once_the_body_is_read_before_end() -> None:
    conn = connection(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab")
    assert [conn.next_event() for _ in range(2)][1] == b"ab"
    assert not conn.body_unread
    assert conn.start_next_cycle()


# -- 100-continue -----------------------------------------------------------------

EXPECTING = b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"


def test_continue_is_sent_once_when_the_body_is_wanted() -> None:
    conn = connection(EXPECTING)
    request = conn.next_event()
    assert request.expect_continue and conn.continue_pending
    assert conn.next_event() is NEED_DATA
    assert conn.send_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert conn.send_continue() == b"", "only once"
    assert not conn.continue_pending
    conn.receive_data(b"abc")
    assert events(conn) == [b"abc", END, PAUSED]


def test_no_continue_when_the_body_already_came() -> None:
    conn = connection(EXPECTING + b"abc")
    conn.next_event()
    assert conn.send_continue() == b""


def test_no_continue_for_http10_or_without_a_body() -> None:
    assert not parse(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").expect_continue
    conn = connection(get(extra=b"Expect: 100-continue\r\n"))
    conn.next_event()
    assert conn.send_continue() == b""


# -- request targets --------------------------------------------------------------

@pytest.mark.parametrize("method, target, path, query", [
    (b"GET", b"http://example.com/a/b?x=1", "/a/b", "x=1"),
    (b"GET", b"https://example.com:8080/p", "/p", ""),
    (b"GET", b"http://example.com", "/", ""),
    (b"GET", b"http://example.com?q", "/", "q"),
    (b"GET", b"http://[::1]:8080/v6", "/v6", ""),
    (b"OPTIONS", b"*", "*", ""),
    (b"CONNECT", b"example.com:443", "", ""),
    (b"GET", b"//double//slash", "//double//slash", ""),
])
def test_target_forms(method: bytes, target: bytes, path: str, query: str) -> None:
    request = parse(method + b" " + target + b" HTTP/1.1\r\n" + HOST + b"\r\n")
    assert (request.path, request.query, request.target) == (path, query, target.decode())


@pytest.mark.parametrize("method, target", [
    (b"GET", b"*"),
    (b"GET", b"example.com:443"),
    (b"GET", b"relative/path"),
    (b"GET", b"ftp://example.com/"),
    (b"GET", b"http:///nohost"),
    (b"GET", b"http://:80/nohost"),
    (b"GET", b"https://user:pw@example.com/"),     # userinfo (RFC 9110 s.4.2.4)
    (b"GET", b"http://exa mple.com/"),
    (b"GET", b"http://a/b\xc3\xa9"),
    (b"GET", b"/caf\xc3\xa9"),                       # raw octets >= 0x80
    (b"GET", b"/caf\xe9"),
    (b"GET", b"/page#section"),                      # a fragment is no part of a target
    (b"GET", b"http://a/page?q#f"),
    (b"CONNECT", b"example.com"),                    # authority-form needs a port
    (b"CONNECT", b"example.com:"),
    (b"CONNECT", b":443"),
    (b"CONNECT", b"http://example.com:443"),
])
def test_bad_target_forms_are_400(method: bytes, target: bytes) -> None:
    assert rejects(method + b" " + target + b" HTTP/1.1\r\n" + HOST + b"\r\n").status == 400


@pytest.mark.parametrize("request_head, host", [
    (b"GET http://target.example:81/p HTTP/1.1\r\nHost: other\r\nX: 1\r\n\r\n", "target.example:81"),
    (b"GET http://[::1]/p HTTP/1.1\r\nHost: other\r\n\r\n", "[::1]"),
    (b"GET http://target.example/p HTTP/1.0\r\n\r\n", "target.example"),
    (b"GET /p HTTP/1.1\r\nHost: other\r\n\r\n", "other"),
])
def test_an_absolute_form_authority_replaces_the_host_field(request_head: bytes, host: str) -> None:
    request = parse(request_head)
    assert [value for name, value in request.headers if name == "host"] == [host]
    assert request.path == "/p"


@pytest.mark.parametrize("host, ok", [
    (b"example.com", True), (b"example.com:8080", True), (b"127.0.0.1:1", True),
    (b"[::1]:80", True), (b"xn--caf-dma.example", True), (b"a_b.example", True),
    (b"%41.example", True), (b"", True), (b"a:", True),
    (b"exa mple.com", False), (b"a/b", False), (b"user@a", False), (b"a:b", False),
    (b"a:80:80", False), (b"[::1", False), (b"caf\xc3\xa9.example", False), (b"%4", False),
    (b"a\"b", False), (b"a,b", True),
    (b"a" * 250, True), (b"a" * 250 + b"/", False),   # too long for the field-line cache
])
def test_host_field_values_follow_the_uri_host_grammar(host: bytes, ok: bool) -> None:
    data = b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    for _ in range(2):   # the second time the value may come from the cache
        if ok:
            assert parse(data).header("host") == host.decode("latin-1")
        else:
            assert "invalid Host" in rejects(data).reason


# -- chunked bodies ---------------------------------------------------------------

def chunked(body: bytes, extra: bytes = b"") -> bytes:
    return b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n" + extra + b"\r\n" + body


def test_chunked_with_extensions_and_trailers() -> None:
    conn = connection(chunked(b'5;name=value;q="a \\" b"\r\nhello\r\n'
                              b"00A ; x\r\n0123456789\r\n0\r\nX-Sum: 1\r\nX-Other: two\r\n\r\n"))
    request, *rest = events(conn)
    assert request.chunked and request.content_length is None
    assert rest == [b"hello0123456789", END, PAUSED]
    assert conn.trailers == [("x-sum", "1"), ("x-other", "two")]


def test_chunked_arrives_byte_by_byte() -> None:
    data = chunked(b"3\r\nabc\r\n1;e=1\r\nd\r\n0\r\nT: v\r\n\r\n") + get()
    conn = ServerConnection()
    got = []
    for i in range(len(data)):
        conn.receive_data(data[i:i + 1])
        for event in events(conn):
            if event is not NEED_DATA:
                got.append(event)
        if got and got[-1] is PAUSED:
            break
    assert b"".join(e for e in got if type(e) is bytes) == b"abcd"
    assert got[-2:] == [END, PAUSED] and conn.trailers == [("t", "v")]


@pytest.mark.parametrize("name", [
    b"Content-Length", b"Transfer-Encoding", b"Host", b"Content-Type", b"Authorization",
    b"Trailer", b"Expect", b"Connection", b"TE", b"Content-Encoding", b"Content-Range",
])
def test_forbidden_trailers_are_400(name: bytes) -> None:
    assert rejects(chunked(b"0\r\n" + name + b": x\r\n\r\n")).status == 400


@pytest.mark.parametrize("body", [
    b"5 \r\nhello\r\n0\r\n\r\n",       # whitespace after the size, no extension
    b" 5\r\nhello\r\n0\r\n\r\n",       # whitespace before it
    b"+5\r\nhello\r\n0\r\n\r\n",
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"5_0\r\nhello\r\n0\r\n\r\n",
    b";e=1\r\nhello\r\n0\r\n\r\n",
    b"\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhelloXX0\r\n\r\n",           # data not followed by CRLF
    b"5;e=\r\nhello\r\n0\r\n\r\n",      # extension with an empty value
    b"5;e=\x0d1\r\nhello\r\n0\r\n\r\n",  # bare CR in an extension
    b"11111111111111111\r\n",           # 17 hex digits: would overflow 64 bits
    b"0\r\n\rX",                        # garbage where the last CRLF goes
])
def test_malformed_chunks_are_400(body: bytes) -> None:
    assert rejects(chunked(body), eof=True).status == 400


@pytest.mark.parametrize("coding, status", [
    (b"chunked", None),
    (b"Chunked", None),
    (b" chunked\t", None),
    (b"gzip, chunked", 501),           # a coding we do not decode (RFC 9112 s.6.1)
    (b"identity, chunked", 501),       # not even registered any more
    (b"deflate,chunked", 501),
    (b"br, chunked", 501),
    (b"chunked;q=1", 501),             # chunked takes no parameters: not the one we decode
    (b'x;a="b c", chunked', 501),
    (b"chunked, gzip", 400),           # chunked not last: no length (s.6.3)
    (b"gzip", 400),
    (b"identity", 400),
    (b"chunked, chunked", 400),        # chunked twice (s.6.1)
    (b"gzip, chunked, chunked", 400),
    (b", chunked", 400),               # not a coding list
    (b"chunked,", 400),
    (b"", 400),
    (b"chunked;", 400),
    (b"g(zip), chunked", 400),
])
def test_transfer_codings(coding: bytes, status: int | None) -> None:
    data = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + coding + b"\r\n\r\n0\r\n\r\n"
    if status is None:
        assert parse(data).chunked
    else:
        assert rejects(data).status == status


@pytest.mark.parametrize("lines, status", [
    ([b"gzip", b"chunked"], 501),
    ([b"deflate", b"chunked"], 501),
    ([b"identity", b"chunked"], 501),
    ([b"chunked", b"chunked"], 400),
    ([b"chunked", b"identity"], 400),
])
def test_transfer_codings_across_fields(lines: list[bytes], status: int) -> None:
    fields = b"".join(b"Transfer-Encoding: " + line + b"\r\n" for line in lines)
    data = b"POST / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n0\r\n\r\n"
    assert rejects(data).status == status


# -- framing the head -------------------------------------------------------------

@pytest.mark.parametrize("extra", [
    b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n",
    b"Content-Length: 1\r\nContent-Length: 1\r\n",
    b"Content-Length: 1, 1\r\n",
    b"Content-Length: +1\r\n",
    b"Content-Length: 0x1\r\n",
    b"Content-Length: \xd9\xa1\r\n",   # Arabic-Indic digit one in latin-1 bytes
    b"Content-Length: 1 1\r\n",
    b"Host: b\r\n",
    b"Content-Type: a\r\nContent-Type: b\r\n",
])
def test_ambiguous_framing_and_singletons_are_400(extra: bytes) -> None:
    assert rejects(b"POST / HTTP/1.1\r\n" + HOST + extra + b"\r\n").status == 400


def test_transfer_encoding_in_http10_is_400() -> None:
    assert rejects(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").status == 400


def test_missing_host_is_400_unless_allowed() -> None:
    assert rejects(b"GET / HTTP/1.1\r\n\r\n").status == 400
    assert parse(b"GET / HTTP/1.1\r\n\r\n", Limits(require_host=False)).path == "/"


@pytest.mark.parametrize("line, status", [
    (b"GET / HTTP/2.0", 505),
    (b"GET / HTTP/0.9", 505),
    (b"GET / HTTP/3.7", 505),
    (b"GET / HTTP/1.10", 400),   # one digit each side (RFC 9112 s.2.3): malformed, not 1.x
    (b"GET / HTTP/01.1", 400),
    (b"GET / HTTP/1", 400),
    (b"GET / HTTP/11", 400),
    (b"GET / HTTP/1.1.1", 400),
    (b"GET / HTTP/1.x", 400),
    (b"GET / HTTP/2", 400),
    (b"GET / HTTPS/1.1", 400),
    (b"GET / HTTP/1.1 ", 400),
    (b"GET  / HTTP/1.1", 400),
    (b"GET /\x7f HTTP/1.1", 400),
    (b"GET / http/1.1", 400),
    (b"get / HTTP/1.1", 400),
    (b"G(T / HTTP/1.1", 400),
    (b"GET\t/ HTTP/1.1", 400),
    (b"GET / HTTP/1.1\rX", 400),
    (b"GET /", 400),
])
def test_bad_request_lines(line: bytes, status: int) -> None:
    assert rejects(line + b"\r\n" + HOST + b"\r\n").status == status


@pytest.mark.parametrize("field", [
    b"Bad Name: x", b"Bad\x00: x", b"Name : x", b" folded", b"\tfolded", b"NoColon",
    b": empty-name", b"X: a\x00b", b"X: a\x07b", b"X: a\x7fb", b"X: a\rb", b"X: a\nb",
    b"X(y): z", b"\xc3\xa9: x",
])
def test_bad_field_lines_are_400(field: bytes) -> None:
    assert rejects(b"GET / HTTP/1.1\r\n" + HOST + field + b"\r\n\r\n").status == 400


def test_bare_lf_line_ends_are_400() -> None:
    assert rejects(b"GET / HTTP/1.1\nHost: a\n\n", eof=True).status == 400


# -- limits -------------------------------------------------------------------------

SMALL = Limits(max_request_line=40, max_field_size=30, max_header_fields=3,
               max_header_size=80, max_body_size=10, max_chunk_line=20, max_trailer_size=40)


@pytest.mark.parametrize("data, status, reason", [
    (b"GET /" + b"a" * 40 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414, "request line"),
    (b"GET /" + b"a" * 40, 414, "request line"),   # the line is not even complete yet
    (get(extra=b"X: " + b"v" * 28 + b"\r\n"), 431, "field too large"),
    (get(extra=b"A: 1\r\nB: 2\r\nC: 3\r\n"), 431, "too many"),
    (b"GET / HTTP/1.1\r\nHost: " + b"h" * 25 + b"\r\nX: " + b"v" * 25 + b"\r\n\r\n", 431,
     "header section"),
    (b"GET / HTTP/1.1\r\nHost: " + b"h" * 25 + b"\r\nX: " + b"v" * 40, 431,
     "header section"),   # an incomplete head, already too large
    (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 11\r\n\r\n", 413, "body"),
    (chunked(b"6\r\nabcdef\r\n5\r\nabcde\r\n"), 413, "body"),
    (chunked(b"1;" + b"e" * 20 + b"\r\na\r\n"), 400, "chunk size line"),
    (chunked(b"1;" + b"e" * 30), 400, "chunk size line"),   # incomplete and too long
    (chunked(b"0\r\nX-T: " + b"t" * 40 + b"\r\n\r\n"), 431, "trailer"),
    (chunked(b"0\r\nX-T: " + b"t" * 40), 431, "trailer"),   # incomplete and too large
])
def test_every_limit_has_its_status(data: bytes, status: int, reason: str) -> None:
    error = rejects(data, SMALL)
    assert error.status == status and reason in error.reason, error


def test_limits_are_inclusive() -> None:
    line = b"GET /" + b"a" * 25 + b" HTTP/1.1"
    assert len(line) == 39
    exact = replace(SMALL, max_request_line=len(line), max_header_size=1000)
    assert parse(line + b"\r\n" + HOST + b"\r\n", exact).path.startswith("/a")
    field = b"X: " + b"v" * 27
    assert parse(get(extra=field + b"\r\n"), replace(SMALL, max_field_size=len(field), max_header_size=1000))
    body = b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\n" + b"x" * 10
    assert events(connection(body, SMALL))[1] == b"x" * 10


@pytest.mark.parametrize("limit, data", [
    ("max_request_line", b"GET /" + b"a" * 25 + b" HTTP/1.1\r\n" + HOST + b"\r\n"),
    ("max_chunk_line", chunked(b"5;" + b"e" * 18 + b"\r\nhello\r\n0\r\n\r\n")),
])
def test_a_line_at_its_limit_passes_however_it_is_split(limit: str, data: bytes) -> None:
    """A CR that arrives before its LF is not part of the line's length."""
    limits = replace(SMALL, max_header_size=1000, max_body_size=1000, **{limit: 39 if limit ==
                     "max_request_line" else 20})
    for cut in range(1, len(data)):
        conn = connection(data[:cut], limits)
        events(conn)
        conn.receive_data(data[cut:])
        assert events(conn)[-1] is PAUSED, cut
    too_small = replace(limits, **{limit: getattr(limits, limit) - 1})
    assert rejects(data, too_small).status in (400, 414)


def test_too_many_trailer_fields_is_431() -> None:
    limits = Limits(max_header_fields=2)
    assert rejects(chunked(b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), limits).status == 431


# -- the response -------------------------------------------------------------------

def answered(request: bytes, status: str = "200 OK", headers=None, keep_alive: bool = True):
    conn = connection(request)
    events(conn)
    return conn.respond(status, headers if headers is not None else [], keep_alive)


def head_fields(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")
    assert lines[-2:] == ["", ""]
    return dict(line.split(": ", 1) for line in lines[1:-2])


def test_response_with_content_length() -> None:
    head, writer = answered(get(), headers=[("Content-Type", "text/plain"), ("Content-Length", "5")])
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    fields = head_fields(head)
    assert fields["Content-Length"] == "5" and fields["Content-Type"] == "text/plain"
    assert "Transfer-Encoding" not in fields and "Connection" not in fields
    assert writer.keep_alive and writer.body(b"abc") == b"abc" and writer.body(b"de") == b"de"
    assert writer.end() == b""


def test_response_longer_or_shorter_than_its_length_is_an_error() -> None:
    _, writer = answered(get(), headers=[("Content-Length", "3")])
    with pytest.raises(ResponseError):
        writer.body(b"abcd")
    _, writer = answered(get(), headers=[("Content-Length", "3")])
    writer.body(b"ab")
    with pytest.raises(ResponseError):
        writer.end()


def test_response_without_length_is_chunked_on_http11() -> None:
    head, writer = answered(get())
    assert head_fields(head)["Transfer-Encoding"] == "chunked"
    assert writer.body(b"hello") == b"5\r\nhello\r\n"
    assert writer.body(b"") == b"", "an empty piece must not end the body"
    assert writer.body(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert writer.end() == b"0\r\n\r\n" and writer.keep_alive


def test_response_without_length_is_close_delimited_on_http10() -> None:
    head, writer = answered(get(version=b"1.0", extra=b"Connection: keep-alive\r\n"))
    fields = head_fields(head)
    assert fields["Connection"] == "close" and "Transfer-Encoding" not in fields
    assert not writer.keep_alive
    assert writer.body(b"raw") == b"raw" and writer.end() == b""


def test_http10_keep_alive_is_announced() -> None:
    head, writer = answered(get(version=b"1.0", extra=b"Connection: keep-alive\r\n"),
                            headers=[("Content-Length", "0")])
    assert head_fields(head)["Connection"] == "keep-alive" and writer.keep_alive


def test_head_response_has_no_body_but_keeps_the_length() -> None:
    head, writer = answered(b"HEAD / HTTP/1.1\r\n" + HOST + b"\r\n", headers=[("Content-Length", "13")])
    assert head_fields(head)["Content-Length"] == "13"
    assert writer.body(b"Hello, World!") == b"" and writer.end() == b"" and writer.keep_alive


def test_head_response_without_length_is_not_chunked() -> None:
    head, writer = answered(b"HEAD / HTTP/1.1\r\n" + HOST + b"\r\n")
    assert "Transfer-Encoding" not in head_fields(head) and writer.end() == b""


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_statuses(status: str) -> None:
    head, writer = answered(get(), status)
    fields = head_fields(head)
    assert "Transfer-Encoding" not in fields and "Content-Length" not in fields
    assert writer.body(b"ignored") == b"" and writer.end() == b"" and writer.keep_alive


def test_date_and_server_headers() -> None:
    conn = ServerConnection(server="flash-test")
    conn.receive_data(get())
    events(conn)
    head, _ = conn.respond("200 OK", [("Content-Length", "0")])
    fields = head_fields(head)
    assert fields["Server"] == "flash-test"
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", fields["Date"])
    assert parsedate_to_datetime(fields["Date"]).tzinfo is not None


def test_close_requested_by_request_app_or_engine() -> None:
    head, writer = answered(get(extra=b"Connection: close\r\n"), headers=[("Content-Length", "0")])
    assert head_fields(head)["Connection"] == "close" and not writer.keep_alive
    head, writer = answered(get(), headers=[("Connection", "close"), ("Content-Length", "0")])
    assert head_fields(head)["Connection"] == "close" and not writer.keep_alive
    head, writer = answered(get(), headers=[("Content-Length", "0")], keep_alive=False)
    assert head_fields(head)["Connection"] == "close" and not writer.keep_alive


def test_hop_by_hop_fields_from_the_app_are_dropped() -> None:
    head, writer = answered(get(), headers=[("Transfer-Encoding", "gzip"), ("Keep-Alive", "5"),
                                            ("Connection", "upgrade"), ("Content-Length", "1")])
    fields = head_fields(head)
    assert "Keep-Alive" not in fields and "Transfer-Encoding" not in fields
    assert "Connection" not in fields and fields["Content-Length"] == "1"


@pytest.mark.parametrize("status, headers", [
    ("200 OK", [("Bad Name", "x")]),
    ("200 OK", [("X", "a\r\nInjected: yes")]),
    ("200 OK", [("X", "a\nb")]),
    ("200 OK", [("X", "a\x00b")]),
    *[("200 OK", [("X", f"a{chr(c)}b")]) for c in [*range(0x01, 0x09), *range(0x0a, 0x20), 0x7f]],
    ("200 OK", [("X:Y", "z")]),
    ("200 OK", [("", "z")]),
    ("200 OK", [("X", "\u20ac")]),
    ("200 OK", [("Content-Length", "1"), ("Content-Length", "1")]),
    ("200 OK", [("Content-Length", "-1")]),
    ("200 OK", [("Content-Length", "\u0661")]),
    ("20 OK", []),
    ("200OK", []),
    ("abc", []),
    ("600 Too High", []),
    ("099 Too Low", []),
    ("101 Switching Protocols", [("Upgrade", "websocket")]),   # no upgrade mechanism
    ("100 Continue", []),                                       # interim: the server's own
    ("103 Early Hints", []),
    ("\u0662\u0660\u0660 OK", []),
    ("200 OK\r\nInjected: yes", []),
    ("200 OK\n", []),
    (b"200 OK", []),
])
def test_invalid_app_responses_are_refused(status: str, headers) -> None:
    with pytest.raises(ResponseError):
        answered(get(), status, headers)


def test_body_length_becomes_the_content_length() -> None:
    conn = connection(get())
    events(conn)
    head, writer = conn.respond("200 OK", [], body_length=5)
    assert head_fields(head)["Content-Length"] == "5" and writer.remaining == 5
    assert writer.status == 200 and not writer.chunked
    head, writer = conn.respond("200 OK", [("Content-Length", "3")], body_length=5)
    assert head_fields(head)["Content-Length"] == "3", "the app's length wins (and is checked)"
    with pytest.raises(ResponseError):
        writer.body(b"12345")


def test_htab_and_obs_text_in_app_values_are_sent() -> None:
    head, _ = answered(get(), headers=[("X", "a\tb \xe9"), ("Content-Length", "0")])
    assert head_fields(head)["X"] == "a\tb \xe9"


@pytest.mark.parametrize("status, kept", [("204 No Content", False), ("304 Not Modified", True)])
def test_content_length_of_bodiless_statuses(status: str, kept: bool) -> None:
    head, writer = answered(get(), status, [("Content-Length", "10")])
    assert ("Content-Length" in head_fields(head)) is kept
    assert writer.end() == b""
    head, _ = answered(get(), status, [])
    assert "Content-Length" not in head_fields(head) and "Transfer-Encoding" not in head_fields(head)


def test_app_fields_as_lists_and_repeated_pairs() -> None:
    for _ in range(3):
        head, _ = answered(get(), headers=[["X-List", "v"], ("X-Tuple", "w"), ("Content-Length", "0")])
        fields = head_fields(head)
        assert fields["X-List"] == "v" and fields["X-Tuple"] == "w"
    with pytest.raises(ResponseError):
        answered(get(), headers=[("X-Tuple", "w\r\nEvil: 1")])


def test_status_without_reason_is_accepted() -> None:
    head, _ = answered(get(), "200", [("Content-Length", "0")])
    assert head.startswith(b"HTTP/1.1 200\r\n")


def test_render_error_is_a_complete_closing_response() -> None:
    data = render_error(431, "header field too large", "flash")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    fields = head_fields(head + b"\r\n\r\n")
    assert fields["Connection"] == "close" and int(fields["Content-Length"]) == len(body)
    assert body == b"431 Request Header Fields Too Large: header field too large\n"


# -- the parser's caches ------------------------------------------------------------

def test_cached_names_and_lines_are_still_checked() -> None:
    assert parse(get(extra=b"X-Seen: 1\r\n")).header("x-seen") == "1"
    assert rejects(get(extra=b"X-Seen\r\n")).status == 400, "a known name without its colon"
    assert rejects(get(extra=b"X-Seen: 1\x00\r\n")).status == 400, "a known line plus a NUL"
    assert rejects(get(extra=b"X-Seen : 1\r\n")).status == 400
    # Every field line cached, the request line still checked on its own.
    assert rejects(b"GET /a\x00b HTTP/1.1\r\n" + HOST + b"X-Seen: 1\r\n\r\n").status == 400
    assert rejects(b"GET /a\tb HTTP/1.1\r\n" + HOST + b"\r\n").status == 400
    assert rejects(b"GET / HTTP/1.1\nX-Seen: 1\r\n" + HOST + b"\r\n").status == 400
    assert rejects(b"GET /caf\xe9\x85 HTTP/1.1\r\n" + HOST + b"X-Seen: 1\r\n\r\n").status == 400
    assert rejects(b"GET /a#b HTTP/1.1\r\n" + HOST + b"X-Seen: 1\r\n\r\n").status == 400


def test_field_caches_stay_bounded() -> None:
    from flash_green.http import connection as core

    for i in range(core._FIELD_LINES_MAX + 300):
        parse(get(extra=b"X-Unique-%d: value %d\r\n" % (i, i)))
    assert len(core._FIELD_LINES) <= core._FIELD_LINES_MAX + Limits().max_header_fields
    assert len(core._FIELD_NAMES) <= core._FIELD_NAMES_MAX
    long_line = b"X-Long: " + b"v" * core._FIELD_LINE_CACHEABLE
    assert parse(get(extra=long_line + b"\r\n")).header("x-long").startswith("vvv")
    assert long_line.decode() not in core._FIELD_LINES, "long lines are not kept"


@pytest.mark.parametrize("value, status", [
    (b"1" * 5000, 413),           # past int()'s 4300-digit limit: no ValueError
    (b"0" * 5000 + b"7", None),   # leading zeros do not make it large
])
def test_a_content_length_of_thousands_of_digits(value: bytes, status: int | None) -> None:
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + value + b"\r\n\r\n1234567"
    if status is None:
        assert parse(data).content_length == 7
    else:
        assert rejects(data).status == status
