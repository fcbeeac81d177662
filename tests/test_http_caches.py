"""The caches of the per-request path: each gives exactly what the work it
saves would give, for exactly the input (and limits) it was filled with.

* the whole-head cache of the parser (`connection._HEADS`, a head kept the
  second time it is parsed): a hit leaves the connection as a fresh parse
  does, under every limit, after any request;
* the head cache of the response (`response._HEADS`): the bytes and the
  writer a fresh build gives, with the Date of the current second;
* the environ templates of the WSGI adapter (`WSGIContext.templates`) and
  the shared empty `wsgi.input`: what an app does to its environ never
  reaches the next request's.
"""

from __future__ import annotations

import itertools
import types
from dataclasses import replace
from email.utils import formatdate

import pytest

from flash_green import proxy, wsgi
from flash_green.config import Limits
from flash_green.http import (
    END,
    NEED_DATA,
    PAUSED,
    HTTPError,
    Request,
    ResponseError,
    ServerConnection,
    build_head,
    dates,
    response,
)
from flash_green.http import connection as core

from .test_http_corpus import OWN_CASES, drive

GET = b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Pad: 1\r\n\r\n"
#: The slots a request leaves on its connection, all of them but the limits.
STATE = ("server", "trailers", "_buf", "_scan", "_eof", "_state", "_remaining", "_body_size",
         "_continue_sent")


@pytest.fixture(autouse=True)
def cold_caches():
    """Each test starts with the parser's and the response's caches empty."""
    forget_heads()
    core._FIELD_LINES.clear()
    core._FIELD_NAMES.clear()
    response._HEADS.clear()
    response._APP_LINES.clear()
    yield
    forget_heads()
    response._HEADS.clear()


def forget_heads() -> None:
    core._HEADS.clear()
    core._HEADS_SEEN.clear()


def head_of(request: Request) -> tuple:
    return (request.method, request.target, request.path, request.query, request.version,
            list(request.headers), request.keep_alive, request.chunked, request.content_length,
            request.expect_continue)


def outcome(data: bytes, limits: Limits | None = None, before: bytes = b"") -> tuple:
    """What a connection makes of `before` (served to its end) then `data`:
    the head, the events to PAUSED, and the connection's state after the head;
    or the error."""
    conn = ServerConnection(limits)
    try:
        if before:
            # The head first, so that a 100 Continue it asks for is sent.
            end = before.find(b"\r\n\r\n") + 4
            conn.receive_data(before[:end])
            conn.next_event()
            conn.send_continue()
            conn.receive_data(before[end:])
            while conn.next_event() is not PAUSED:
                pass
            assert conn.start_next_cycle()
        conn.receive_data(data)
        request = conn.next_event()
        if type(request) is not Request:
            return ("event", request)
        state = tuple(getattr(conn, name) for name in STATE)
        rest = []
        while (event := conn.next_event()) is not PAUSED and event is not NEED_DATA:
            rest.append(event)
        return head_of(request), state, rest
    except HTTPError as exc:
        return ("error", exc.status)


def cold(data: bytes, limits: Limits | None = None, before: bytes = b"") -> tuple:
    forget_heads()
    return outcome(data, limits, before)


def warm(data: bytes, limits: Limits | None = None) -> tuple:
    """`outcome` of the second parse of `data`, the one that caches it."""
    outcome(data, limits)
    return outcome(data, limits)


# -- the parser's whole-head cache ---------------------------------------------------

def test_a_repeated_head_is_one_shared_read_only_request() -> None:
    parses = []
    for _ in range(3):
        conn = ServerConnection()
        conn.receive_data(GET)
        parses.append(conn.next_event())
    first, request, hit = parses
    assert not first.shared and request.shared, "kept the second time it is parsed"
    assert hit is request, "the third parse is a hit"
    assert request.headers == [("host", "example.com"), ("accept", "*/*"), ("x-pad", "1")]
    for edit in (lambda h: h.append(("x", "y")), lambda h: h.__setitem__(0, ("host", "evil")),
                 lambda h: h.clear(), lambda h: h.__iadd__([("x", "y")]), lambda h: h.pop()):
        with pytest.raises(TypeError):
            edit(request.headers)
    assert request.header("host") == "example.com"


@pytest.mark.parametrize("data", [
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",       # a body follows
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET http://b/x HTTP/1.1\r\nHost: a\r\n\r\n",                     # Host rewritten from the target
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 1024 + b"\r\n\r\n",   # too long to keep
])
def test_heads_that_are_not_kept(data: bytes) -> None:
    for _ in range(3):
        conn = ServerConnection()
        conn.receive_data(data)
        assert not conn.next_event().shared
    assert not core._HEADS


def test_a_hostless_head_is_kept_only_where_no_limit_decides() -> None:
    hostless_11 = b"GET / HTTP/1.1\r\n\r\n"
    hostless_10 = b"GET / HTTP/1.0\r\n\r\n"
    lenient = Limits(require_host=False)
    assert warm(hostless_11, lenient)[0][0] == "GET"
    assert outcome(hostless_11) == ("error", 400), "require_host is not bypassed by the cache"
    expected = cold(hostless_10)
    warm(hostless_10, lenient)
    assert list(core._HEADS) == [hostless_10]
    assert outcome(hostless_10) == outcome(hostless_10, lenient) == expected


@pytest.mark.parametrize("limits, status", [
    (Limits(max_header_fields=2), 431),
    (Limits(max_field_size=len("Host: example.com") - 1), 431),
    (Limits(max_request_line=len("GET /a?b=c HTTP/1.1") - 1), 414),
    (Limits(max_header_size=len(GET) - 1), 431),
])
def test_a_cached_head_is_checked_against_each_connections_limits(limits: Limits, status: int) -> None:
    assert warm(GET)[0][0] == "GET" and GET in core._HEADS
    assert outcome(GET, limits) == ("error", status)
    assert outcome(GET, limits) == cold(GET, limits)
    assert outcome(GET)[0][0] == "GET", "accepted again under the roomier limits"


def test_the_same_bytes_at_each_limit_give_what_a_fresh_parse_gives() -> None:
    """Filled under one limit, read under another: every combination near
    the head's own sizes agrees with the cold parse."""
    longest_field = len("Host: example.com")
    base = Limits()
    variants = [replace(base, max_header_fields=n) for n in (2, 3, 4)]
    variants += [replace(base, max_field_size=n) for n in (longest_field - 1, longest_field)]
    variants += [replace(base, max_request_line=n) for n in (18, 19, len(GET))]
    variants += [replace(base, max_header_size=n) for n in (len(GET) - 1, len(GET))]
    expected = {id(limits): cold(GET, limits) for limits in variants}
    for filled_under in variants:
        forget_heads()
        warm(GET, filled_under)
        for limits in variants:
            assert outcome(GET, limits) == expected[id(limits)], (filled_under, limits)


def test_a_head_one_byte_away_from_a_cached_one_is_parsed_afresh() -> None:
    """Every position of a cached head, changed to each of a few bytes, gives
    what the cold parse of that head gives (a 400, another request...)."""
    for at in range(len(GET)):
        for byte in b"\x00\n a/:":
            changed = GET[:at] + bytes([byte]) + GET[at + 1:]
            if changed == GET:
                continue
            expected = cold(changed)
            warm(GET)                        # the original is cached...
            for _ in range(3):               # ...and so may the changed one be
                assert outcome(changed) == expected, changed


@pytest.mark.parametrize("before", [
    b"",
    GET,
    b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    (b"POST /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"),
    b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
])
def test_a_hit_leaves_the_connection_as_a_fresh_parse_does(before: bytes) -> None:
    """After any earlier request on the connection: the same head, the same
    state (trailers, body counters, 100-continue), the same events."""
    expected = cold(GET, before=before)
    warm(GET)
    assert GET in core._HEADS
    assert outcome(GET, before=before) == expected


#: Limits tight enough that many corpus heads break one of them.
TIGHT = Limits(max_request_line=40, max_field_size=30, max_header_fields=3, max_header_size=120,
               require_host=False)


def test_the_whole_corpus_gives_the_same_outcomes_with_the_caches_warm() -> None:
    """Every case of tests/corpus, parsed cold and then again with every
    head of the corpus in the cache (filled under other limits), under its
    own limits, the defaults and tight ones."""
    cases = [(case.id, case.data, limits) for case in OWN_CASES
             for limits in (case.limits, Limits(), TIGHT)]
    cold_outcomes = []
    for _, data, limits in cases:
        forget_heads()
        cold_outcomes.append(drive([data], limits).summary())
    forget_heads()
    for _, data, limits in cases * 2:
        drive([data], limits)
    assert len(core._HEADS) > 20, "the corpus fills the cache"
    for (name, data, limits), cold_outcome in zip(cases, cold_outcomes):
        assert drive([data], limits).summary() == cold_outcome, (name, limits)


def test_pipelined_heads_hit_and_miss_in_order() -> None:
    post = b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
    other = GET.replace(b"/a?b=c", b"/z")
    warm(GET)
    conn = ServerConnection()
    conn.receive_data(GET + post + GET + other + GET)
    seen = []
    for _ in range(5):
        request = conn.next_event()
        body = b""
        while (event := conn.next_event()) is not PAUSED:
            if type(event) is bytes:
                body += event
            else:
                assert event is END
        seen.append((request.method, request.target, request.shared, body))
        assert conn.start_next_cycle()
    assert seen == [("GET", "/a?b=c", True, b""), ("POST", "/u", False, b"abc"),
                    ("GET", "/a?b=c", True, b""), ("GET", "/z", False, b""),
                    ("GET", "/a?b=c", True, b"")]
    assert conn.next_event() is NEED_DATA and conn.buffered == 0


def test_the_head_cache_stays_bounded() -> None:
    for i in range(core._HEADS_MAX + 10):
        warm(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        assert len(core._HEADS) <= core._HEADS_MAX and len(core._HEADS_SEEN) <= core._HEADS_MAX


def test_a_head_parsed_once_keeps_no_request() -> None:
    """A head never repeated (a new cookie value each time) is remembered,
    not shared: no Request is kept for it."""
    for i in range(core._HEADS_MAX + 10):
        assert outcome(b"GET / HTTP/1.1\r\nHost: a\r\nCookie: %d\r\n\r\n" % i)[0][0] == "GET"
        assert not core._HEADS and len(core._HEADS_SEEN) <= core._HEADS_MAX


# -- the response's head cache -------------------------------------------------------

@pytest.fixture
def clock(monkeypatch):
    """The seconds http_date reads: [now], to be moved by the test."""
    now = [1_800_000_000.25]
    monkeypatch.setattr(dates, "time", types.SimpleNamespace(time=lambda: now[0]))
    return now


def test_the_date_is_the_one_of_the_seconds_the_clock_reads(clock) -> None:
    """Forward, at the edges of a second, and back (the clock may be set back)."""
    for now in (1_800_000_000.0, 1_800_000_000.999, 1_800_000_001.0, 1_800_000_000.5,
                1_799_999_999.999, 1_800_000_001.5):
        clock[0] = now
        assert dates.http_date() == formatdate(int(now), usegmt=True), now


HELLO_FIELDS = (("Content-Type", "text/plain"), ("Content-Length", "13"))


def built(version="HTTP/1.1", status="200 OK", headers=HELLO_FIELDS, head_request=False,
          keep_alive=True, server="flash", body_length=13) -> tuple:
    """What build_head gives (bytes and the writer's whole state), or its error."""
    try:
        data, writer = build_head(version, status, list(headers), head_request=head_request,
                                  keep_alive=keep_alive, server=server, body_length=body_length)
    except ResponseError as exc:
        return ("error", str(exc))
    return data, tuple(getattr(writer, name) for name in writer.__slots__)


def built_cold(**inputs) -> tuple:
    response._HEADS.clear()
    response._APP_LINES.clear()
    return built(**inputs)


#: Each input of build_head, with values that change the head.
RESPONSE_INPUTS = {
    "version": ("HTTP/1.1", "HTTP/1.0"),
    "status": ("200 OK", "204 No Content", "304 Not Modified", "404 Not Found"),
    "headers": (HELLO_FIELDS, (("Content-Type", "text/plain"),),
                (("Content-Type", "text/plain"), ("Connection", "close"))),
    "head_request": (False, True),
    "keep_alive": (True, False),
    "server": ("flash", "other"),
    "body_length": (13, 0, None),
}


def test_a_repeated_head_is_built_once_then_served_from_the_cache(clock) -> None:
    first = built()
    assert not response._HEADS, "a head with a line never seen is not kept"
    assert built() == first and len(response._HEADS) == 1
    a, b = (build_head("HTTP/1.1", "200 OK", list(HELLO_FIELDS), head_request=False,
                       keep_alive=True, server="flash", body_length=13)[1] for _ in range(2))
    assert a is not b, "each response gets its own writer"
    a.body(b"x" * 13)
    assert b.remaining == 13


def test_every_input_of_a_cached_head_is_part_of_its_key(clock, monkeypatch) -> None:
    """Filled with one combination of inputs, read with another: each read
    gives what a cold build of that combination gives."""
    monkeypatch.setattr(response, "_HEADS_MAX", 1024)
    names = list(RESPONSE_INPUTS)
    combos = [dict(zip(names, values)) for values in itertools.product(*RESPONSE_INPUTS.values())]
    expected = [built_cold(**combo) for combo in combos]
    for combo in combos:      # every combination seen twice: every one cached
        built(**combo)
        built(**combo)
    assert len(response._HEADS) == len(combos)
    for combo, answer in zip(combos, expected):
        assert built(**combo) == answer, combo


def test_a_cached_head_carries_the_date_of_the_current_second(clock) -> None:
    built()
    before = built()
    assert b"Date: Fri, 15 Jan 2027 08:00:00 GMT" in before[0]
    clock[0] += 1
    after = built()
    assert b"Date: Fri, 15 Jan 2027 08:00:01 GMT" in after[0]
    assert after == built_cold()


@pytest.mark.parametrize("headers, error", [
    ([["Content-Type", "text/plain"]], None),                 # a list, not a tuple: unhashable
    ([("Content-Type", "text/plain\r\nX: y")], "control character"),
    ([("Content-Type", "caf\u00e9\u20ac")], "not latin-1"),
    ([("Content-Length", "x")], "invalid Content-Length"),
])
def test_a_head_the_build_refuses_is_refused_every_time(clock, headers, error) -> None:
    for _ in range(3):
        outcome_of_build = built(headers=headers)
        if error is None:
            assert outcome_of_build[0].startswith(b"HTTP/1.1 200 OK")
        else:
            assert outcome_of_build[0] == "error" and error in outcome_of_build[1]
    assert not response._HEADS


def test_the_response_head_cache_stays_bounded(clock) -> None:
    for i in range(response._HEADS_MAX + 10):
        for _ in range(2):
            built(body_length=i)
        assert len(response._HEADS) <= response._HEADS_MAX


# -- the WSGI environ ----------------------------------------------------------------

PEER = ("10.1.2.3", 54321)
#: Every way a header reaches environ: a repeated field joined, cookies
#: joined with "; ", a name with "_" dropped, CONTENT_TYPE, a quoted path.
RICH_GET = (b"GET /a%20b?q=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\nCookie: a=1\r\n"
            b"Cookie: b=2\r\nX_Sneaky: 1\r\nContent-Type: text/plain\r\n\r\n")


def parsed(data: bytes) -> Request:
    conn = ServerConnection()
    conn.receive_data(data)
    return conn.next_event()


def environ_of(ctx: wsgi.WSGIContext, data: bytes, peer=PEER) -> dict:
    return ctx.environ(wsgi.peer_keys(peer), parsed(data), wsgi.input_from_pieces(None))


def test_a_repeated_heads_environ_is_the_one_a_fresh_build_gives() -> None:
    ctx = wsgi.WSGIContext(None, "s", 1)
    cold_environ = environ_of(ctx, RICH_GET)     # parsed once: not shared, no template
    assert not ctx.templates
    environ_of(ctx, RICH_GET)                    # shared: its template made
    assert parsed(RICH_GET) in ctx.templates
    for peer in (PEER, ("10.9.9.9", 1)):
        hit = environ_of(ctx, RICH_GET, peer)
        expected = dict(cold_environ, REMOTE_ADDR=peer[0], REMOTE_PORT=str(peer[1]))
        assert list(hit.items()) == list(expected.items()), "the same keys, values and order"
    assert list(cold_environ) == [*ctx.base_environ, "REMOTE_ADDR", "REMOTE_PORT", "REQUEST_METHOD",
                                  "PATH_INFO", "QUERY_STRING", "REQUEST_URI", "RAW_URI",
                                  "SERVER_PROTOCOL", "wsgi.input", "HTTP_HOST", "HTTP_X_A",
                                  "HTTP_COOKIE", "CONTENT_TYPE"]
    assert cold_environ["HTTP_X_A"] == "1, 2" and cold_environ["HTTP_COOKIE"] == "a=1; b=2"
    assert cold_environ["PATH_INFO"] == "/a b" and cold_environ["REMOTE_PORT"] == "54321"


def test_the_front_hook_sees_and_changes_each_request_alone() -> None:
    seen = []

    def front(environ: dict) -> None:
        seen.append((environ["REMOTE_ADDR"], environ.get("HTTP_COOKIE"), "added" in environ))
        environ["REMOTE_ADDR"] = "front:" + environ["REMOTE_ADDR"]
        del environ["HTTP_COOKIE"]
        environ["added"] = True

    ctx = wsgi.WSGIContext(None, "s", 1, front=front)
    peers = [PEER, ("10.9.9.9", 1), PEER, ("10.9.9.9", 2)]
    for peer in peers:
        assert environ_of(ctx, RICH_GET, peer)["REMOTE_ADDR"] == "front:" + peer[0]
    assert ctx.templates
    assert seen == [(peer[0], "a=1; b=2", False) for peer in peers]


class CountingFront(proxy.Front):
    """The real proxy hook, counting its calls."""

    __slots__ = ("calls",)

    def __call__(self, environ: dict) -> None:
        self.calls += 1
        super().__call__(environ)


def counting_front(unix: bool) -> CountingFront:
    front = CountingFront(proxy.TrustedPeers.parse("127.0.0.1"), unix)
    front.calls = 0
    return front


def test_a_kept_head_without_forwarding_headers_skips_the_front_hook() -> None:
    front = counting_front(unix=False)
    ctx = wsgi.WSGIContext(None, "s", 1, front=front)
    plain = b"GET /plain HTTP/1.1\r\nHost: h\r\n\r\n"
    for _ in range(2):
        environ_of(ctx, plain, ("127.0.0.1", 5000))
    calls = front.calls
    assert parsed(plain).shared
    for _ in range(3):
        assert environ_of(ctx, plain, ("127.0.0.1", 5000))["REMOTE_ADDR"] == "127.0.0.1"
    assert front.calls == calls, "a shared head the hook cannot concern is not passed to it"


@pytest.mark.parametrize("field", [b"X-Forwarded-For: 203.0.113.9", b"X-Forwarded-Proto: https",
                                   b"Forwarded: for=203.0.113.9", b"X-Forwarded-Host: example.com",
                                   b"X-Forwarded-Port: 8443", b"X-Forwarded-Ssl: on"])
def test_a_kept_head_with_any_forwarding_header_reaches_the_front_hook(field: bytes) -> None:
    front = counting_front(unix=False)
    ctx = wsgi.WSGIContext(None, "s", 1, front=front)
    head = b"GET /any HTTP/1.1\r\nHost: h\r\n" + field + b"\r\n\r\n"
    for _ in range(5):
        environ_of(ctx, head, ("127.0.0.1", 5000))
    assert parsed(head).shared and front.calls == 5


def test_a_kept_head_with_a_forwarding_header_always_reaches_the_front_hook() -> None:
    front = counting_front(unix=False)
    ctx = wsgi.WSGIContext(None, "s", 1, front=front)
    forwarded = b"GET /f HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n"
    for number in range(5):
        trusted = environ_of(ctx, forwarded, ("127.0.0.1", 5000 + number))
        untrusted = environ_of(ctx, forwarded, ("198.51.100.7", 5000 + number))
        assert trusted["REMOTE_ADDR"] == "203.0.113.9", number
        assert untrusted["REMOTE_ADDR"] == "198.51.100.7", number
    assert parsed(forwarded).shared and front.calls == 10


def test_a_kept_head_on_a_unix_listener_always_reaches_the_front_hook() -> None:
    front = counting_front(unix=True)
    ctx = wsgi.WSGIContext(None, "s", 1, front=front)
    head = b"GET /u HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"
    for number in range(4):
        environ = environ_of(ctx, head, "")
        assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("example.com", "8080"), number
    assert parsed(head).shared and front.calls == 4


def test_what_an_app_does_to_its_environ_never_reaches_the_next_request() -> None:
    ctx = wsgi.WSGIContext(None, "s", 1)
    expected = list(environ_of(ctx, RICH_GET).items())
    environ_of(ctx, RICH_GET)                   # shared from here: its template made
    first = environ_of(ctx, RICH_GET)
    assert first is not environ_of(ctx, RICH_GET), "each request its own dict"
    first["HTTP_HOST"] = "evil"
    first["PATH_INFO"] = "/admin"
    del first["HTTP_COOKIE"]
    first["mutated"] = True
    first.clear()
    assert list(environ_of(ctx, RICH_GET).items()) == expected


def test_heads_that_differ_get_their_own_environ() -> None:
    """Keyed by the request: two heads with the same target, and a head
    too long for the parser's cache (a new Request each time), each give
    their own."""
    ctx = wsgi.WSGIContext(None, "s", 1)
    long_get = b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + b"v" * 2000 + b"\r\n\r\n"
    other_long = long_get.replace(b"X-Long: v", b"X-Long: w")
    for _ in range(3):
        assert environ_of(ctx, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")["HTTP_HOST"] == "a"
        assert environ_of(ctx, b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")["HTTP_HOST"] == "b"
        assert environ_of(ctx, long_get)["HTTP_X_LONG"][0] == "v"
        assert environ_of(ctx, other_long)["HTTP_X_LONG"][0] == "w"
    assert len(ctx.templates) == 2, "only the shared Requests are kept"


def test_each_listener_keeps_its_own_static_environ() -> None:
    first = wsgi.WSGIContext(None, "s", 1)
    second = first.for_listener("t", 2, "https", None)
    for _ in range(3):
        assert environ_of(first, RICH_GET)["SERVER_PORT"] == "1"
        tls = environ_of(second, RICH_GET)
        assert (tls["SERVER_NAME"], tls["SERVER_PORT"], tls["wsgi.url_scheme"]) == ("t", "2", "https")
        assert tls["HTTP_X_A"] == "1, 2"


def test_the_environ_templates_stay_bounded() -> None:
    ctx = wsgi.WSGIContext(None, "s", 1)
    for i in range(wsgi._TEMPLATES_MAX + 10):
        for _ in range(2):
            environ_of(ctx, b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        assert 0 < len(ctx.templates) <= wsgi._TEMPLATES_MAX


def test_the_shared_empty_input_stays_empty_whatever_an_app_reads() -> None:
    stream = wsgi.input_from_pieces(None)
    assert stream is wsgi.input_from_pieces([]) is wsgi.NO_BODY
    for read in (lambda: stream.read(), lambda: stream.read(5), lambda: stream.readline(),
                 lambda: stream.readline(3), lambda: stream.readlines(), lambda: list(stream),
                 lambda: stream.drain()):
        assert not read()
    body = wsgi.input_from_pieces([b"ab\n", b"c"])
    assert body is not wsgi.NO_BODY and body.read() == b"ab\nc"
    assert wsgi.NO_BODY.read() == b""
