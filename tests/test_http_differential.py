"""Our sans-IO core against h11, over a generated corpus of requests.

The corpus is deterministic: hand-written cases, one list per kind of input
(framing conflicts, coding lists, chunk lines, line endings, whitespace,
obs-fold, control bytes, Host and target forms, versions, methods, long lines,
pipelining, Expect, Connection, trailers), plus seeded mutations of valid
requests. Each case is fed whole to `ServerConnection` and to
`h11.Connection(h11.SERVER)`, then EOF; the outcome is the requests each
accepted (method, target, version, fields, body, trailers) and whether it
refused the input in the end.

Where the two differ, the case's class must be a row of the table in
docs/http-differences.md, and the row's columns must say which side refuses:
a difference the table does not explain fails, and so does a row that no case
exercises any more. Hand-written cases carry their class; a mutation knows
which part of the request it edited (request line, field line, line ending,
chunk line...), and takes the first row that part could fall under whose
direction matches (`classify`).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

import h11
import pytest

from flash_green.http import CLOSED, END, PAUSED, HTTPError, Request, ServerConnection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, "docs", "http-differences.md")
SEED = 9112
MUTATIONS = 320


# -- building requests ----------------------------------------------------------

def request(method: str = "GET", target: str = "/", version: str = "HTTP/1.1",
            fields: tuple[tuple[str, str], ...] = (("Host", "example.com"),),
            body: bytes = b"") -> bytes:
    lines = [f"{method} {target} {version}", *(f"{name}: {value}" for name, value in fields)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def head(*lines: str | bytes, body: bytes = b"") -> bytes:
    """A head from raw lines (str as latin-1), CRLF after each, then a blank line."""
    raw = [line.encode("latin-1") if isinstance(line, str) else line for line in lines]
    return b"".join(line + b"\r\n" for line in raw) + b"\r\n" + body


def post(*fields: str | bytes, body: bytes = b"") -> bytes:
    return head("POST /upload HTTP/1.1", "Host: example.com", *fields, body=body)


def chunked(body: bytes, *fields: str | bytes) -> bytes:
    return post("Transfer-Encoding: chunked", *fields, body=body)


HELLO_CHUNKS = b"5\r\nhello\r\n0\r\n\r\n"


# -- the hand-written corpus ----------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    data: bytes
    #: A mutated case's edited pieces (see `mutations`).
    edits: tuple = ()


def cases(kind: str, *inputs: bytes, name: str = "") -> list[Case]:
    """Cases of one kind, with ids `name/0`, `name/1`... (`name` defaults to the kind)."""
    return [Case(f"{name or kind}/{i}", kind, data) for i, data in enumerate(inputs)]


def valid_requests() -> list[Case]:
    return cases(
        "valid",
        request(),
        request("HEAD", "/index.html"),
        request("GET", "/search?q=a+b&x=%20y"),
        request("GET", "/a/b/c/", fields=(("Host", "example.com:8080"), ("Accept", "*/*"))),
        request("POST", "/form", fields=(("Host", "h"), ("Content-Length", "3")), body=b"a=b"),
        request("PUT", "/x", fields=(("Host", "h"), ("Content-Length", "0"))),
        request("DELETE", "/x/1"),
        request("OPTIONS", "*"),
        request("GET", "/", "HTTP/1.0", fields=()),
        request("GET", "/", "HTTP/1.0", fields=(("Host", "h"),)),
        request("POST", "/", "HTTP/1.0", fields=(("Content-Length", "2"),), body=b"hi"),
        request(fields=(("Host", "h"), ("X-Empty", ""))),
        request(fields=(("Host", "h"), ("X-Pad", " \t padded \t "))),
        request(fields=(("Host", "h"), ("X-Inner", "a \t b"))),
        request(fields=(("Host", "h"), ("X-Latin", "caf\xe9 \xff"))),
        request(fields=(("Host", "h"), ("Cookie", "a=1"), ("Cookie", "b=2"))),
        request(fields=(("HOST", "h"), ("x-MiXeD", "v"))),
        request("GET", "/" + "a" * 2000),
        request(fields=(("Host", "h"), ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"),
                        ("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"),
                        ("Accept-Encoding", "gzip, deflate, br"), ("Referer", "https://e.com/"))),
        chunked(HELLO_CHUNKS),
        chunked(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        chunked(b"0\r\n\r\n"),
        request("POST", "/", fields=(("Host", "h"), ("Content-Type", "text/plain"),
                                     ("Content-Length", "5")), body=b"hello"),
        request("GET", "/", fields=(("Host", "h"), ("Content-Length", "0"))),
    )


def framing_conflicts() -> list[Case]:
    te, cl = "Transfer-Encoding: chunked", "Content-Length: 5"
    return [
        *cases("cl-and-te",
               post(cl, te, body=HELLO_CHUNKS),
               post(te, cl, body=HELLO_CHUNKS),
               post("Content-Length: 0", te, body=b"0\r\n\r\n"),
               post("Content-Length: 100", te, body=HELLO_CHUNKS),
               post("Content-Length: 5, 5", te, body=HELLO_CHUNKS)),
        *cases("cl-repeated-equal",
               post(cl, cl, body=b"hello"),
               post("Content-Length: 5, 5", body=b"hello"),
               post("Content-Length: 5,5", body=b"hello"),
               post("Content-Length: 5 , 5", body=b"hello")),
        *cases("cl-invalid",
               post("Content-Length: 5", "Content-Length: 6", body=b"hello!"),
               post("Content-Length: 5, 6", body=b"hello!"),
               post("Content-Length: +5", body=b"hello"),
               post("Content-Length: -5", body=b"hello"),
               post("Content-Length: 0x5", body=b"hello"),
               post("Content-Length: 5.0", body=b"hello"),
               post("Content-Length: 5 5", body=b"hello"),
               post("Content-Length:", body=b""),
               post("Content-Length: five", body=b"hello"),
               post("Content-Length: 1_0", body=b"hello"),
               post(b"Content-Length: \xd9\xa5", body=b"hello"),
               post("Content-Length: 5\x0b", body=b"hello"),
               post("Content-Length: " + "9" * 30, body=b"hello")),
        *cases("content-type-repeated",
               post("Content-Type: text/plain", "Content-Type: text/html", cl, body=b"hello"),
               post("Content-Type: text/plain", "Content-Type: text/plain", cl, body=b"hello")),
        *cases("cl-valid",
               post("Content-Length: 005", body=b"hello"),
               post("Content-Length:5", body=b"hello"),
               post("Content-Length:   5   ", body=b"hello"),
               post("content-length: 5", body=b"hello"),
               post("Content-Length: 0"),
               post("Content-Length: 3", body=b"hello")),   # the rest is a bad next request
        *cases("body-short-at-eof",
               post(cl, body=b"hel"),
               chunked(b"5\r\nhel"),
               chunked(b"5\r\nhello\r\n"),
               chunked(b"5\r\nhello\r\n0\r\n"),
               chunked(b"5\r\nhello\r\n0\r\nX: 1\r\n")),
    ]


def transfer_codings() -> list[Case]:
    te = "Transfer-Encoding: "
    return [
        *cases("te-chunked",
               chunked(HELLO_CHUNKS),
               post(te + "Chunked", body=HELLO_CHUNKS),
               post(te + "CHUNKED", body=HELLO_CHUNKS),
               post(te + "  chunked  ", body=HELLO_CHUNKS),
               post(te + "\tchunked", body=HELLO_CHUNKS)),
        *cases("te-coding-list",
               post(te + "gzip, chunked", body=HELLO_CHUNKS),
               post(te + "deflate, chunked", body=HELLO_CHUNKS),
               post(te + "identity, chunked", body=HELLO_CHUNKS),
               post(te + "compress, chunked", body=HELLO_CHUNKS),
               post(te + "x-gzip,chunked", body=HELLO_CHUNKS),
               post(te + "br, chunked", body=HELLO_CHUNKS),
               post(te + "foo, chunked", body=HELLO_CHUNKS),
               post(te + "gzip", te + "chunked", body=HELLO_CHUNKS),
               post(te + "deflate", te + "chunked", body=HELLO_CHUNKS),
               post(te + "identity", te + "chunked", body=HELLO_CHUNKS),
               post(te + "chunked;x=1", body=HELLO_CHUNKS),
               post(te + 'x;a="b c", chunked', body=HELLO_CHUNKS)),
        *cases("te-not-chunked-last",
               post(te + "chunked, gzip", body=HELLO_CHUNKS),
               post(te + "gzip", body=b"hello"),
               post(te + "identity", body=b"hello"),
               post(te + "deflate"),
               post(te + "chunked", te + "gzip", body=HELLO_CHUNKS),
               post(te + "chunked", te + "identity", body=HELLO_CHUNKS)),
        *cases("te-chunked-twice",
               post(te + "chunked, chunked", body=HELLO_CHUNKS),
               post(te + "chunked", te + "chunked", body=HELLO_CHUNKS),
               post(te + "gzip, chunked, chunked", body=HELLO_CHUNKS)),
        *cases("te-malformed",
               post(te.rstrip(), body=HELLO_CHUNKS),
               post(te + ", chunked", body=HELLO_CHUNKS),
               post(te + "chunked,", body=HELLO_CHUNKS),
               post(te + "chunked;", body=HELLO_CHUNKS),
               post(te + "chun ked", body=HELLO_CHUNKS),
               post(te + '"chunked"', body=HELLO_CHUNKS),
               post(te + "chunked\x0b", body=HELLO_CHUNKS),
               post(te + "g(zip), chunked", body=HELLO_CHUNKS)),
        *cases("te-in-http10",
               head("POST / HTTP/1.0", te + "chunked", body=HELLO_CHUNKS),
               head("POST / HTTP/1.0", "Host: h", te + "chunked", "Content-Length: 5",
                    body=HELLO_CHUNKS)),
    ]


def chunk_lines() -> list[Case]:
    return [
        *cases("chunk-size-valid",
               chunked(b"005\r\nhello\r\n0\r\n\r\n"),
               chunked(b"A\r\n0123456789\r\n0\r\n\r\n"),
               chunked(b"a\r\n0123456789\r\n0\r\n\r\n"),
               chunked(b"5\r\nhello\r\n000\r\n\r\n"),
               chunked(b"0000000000000005\r\nhello\r\n0\r\n\r\n"),
               chunked(b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n")),
        *cases("chunk-size-invalid",
               chunked(b"\r\nhello\r\n0\r\n\r\n"),
               chunked(b"x\r\nhello\r\n0\r\n\r\n"),
               chunked(b"0x5\r\nhello\r\n0\r\n\r\n"),
               chunked(b"+5\r\nhello\r\n0\r\n\r\n"),
               chunked(b"-5\r\nhello\r\n0\r\n\r\n"),
               chunked(b"5_0\r\nhello\r\n0\r\n\r\n"),
               chunked(b" 5\r\nhello\r\n0\r\n\r\n"),
               chunked(b"5\x00\r\nhello\r\n0\r\n\r\n"),
               chunked(b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n")),
        *cases("chunk-size-whitespace",
               chunked(b"5 \r\nhello\r\n0\r\n\r\n"),
               chunked(b"5\t\r\nhello\r\n0\r\n\r\n"),
               chunked(b"5\r\nhello\r\n0  \r\n\r\n")),
        *cases("chunk-ext-valid",
               chunked(b"5;a\r\nhello\r\n0\r\n\r\n"),
               chunked(b"5;a=b\r\nhello\r\n0\r\n\r\n"),
               chunked(b'5;a="b c"\r\nhello\r\n0\r\n\r\n'),
               chunked(b'5;a="b \\" c"\r\nhello\r\n0\r\n\r\n'),
               chunked(b"5;a=b;c=d;e\r\nhello\r\n0;last\r\n\r\n"),
               chunked(b"5; a = b\r\nhello\r\n0\r\n\r\n")),
        *cases("chunk-ext-bws",
               chunked(b"5 ;a=b\r\nhello\r\n0\r\n\r\n"),
               chunked(b"5\t; a\r\nhello\r\n0\r\n\r\n")),
        *cases("chunk-ext-invalid",
               chunked(b"5;\r\nhello\r\n0\r\n\r\n"),
               chunked(b"5;=b\r\nhello\r\n0\r\n\r\n"),
               chunked(b"5;a=\r\nhello\r\n0\r\n\r\n"),
               chunked(b"5;a=b c\r\nhello\r\n0\r\n\r\n"),
               chunked(b'5;a="b\r\nhello\r\n0\r\n\r\n'),
               chunked(b"5;a(b)\r\nhello\r\n0\r\n\r\n"),
               chunked(b"5;a=b\x01\r\nhello\r\n0\r\n\r\n"),
               chunked(b"5;a=\xff\r\nhello\r\n0\r\n\r\n"),
               chunked(b"5;a;\r\nhello\r\n0\r\n\r\n"),
               chunked(b"5;a=b\rc\r\nhello\r\n0\r\n\r\n"),
               chunked(b"5 junk\r\nhello\r\n0\r\n\r\n")),
        *cases("chunk-data-framing",
               chunked(b"5\r\nhelloXX0\r\n\r\n"),
               chunked(b"5\r\nhello\n0\r\n\r\n"),
               chunked(b"5\r\nhello\r0\r\n\r\n"),
               chunked(b"5\r\nhello0\r\n\r\n"),
               chunked(b"5\r\nhell\r\n0\r\n\r\n")),
        *cases("chunk-bare-lf",
               chunked(b"5\nhello\r\n0\r\n\r\n"),
               chunked(b"5\r\nhello\r\n0\n\r\n")),
    ]


def trailers() -> list[Case]:
    return [
        *cases("trailers-valid",
               chunked(b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n"),
               chunked(b"0\r\nX-A: 1\r\nX-B: two words\r\n\r\n"),
               chunked(b"0\r\nServer-Timing: db;dur=53\r\n\r\n")),
        *cases("trailers-forbidden",
               *(chunked(b"5\r\nhello\r\n0\r\n" + name + b": 1\r\n\r\n") for name in (
                   b"Content-Length", b"Transfer-Encoding", b"Host", b"Content-Type",
                   b"Authorization", b"Trailer", b"Expect", b"Connection", b"TE",
                   b"Content-Encoding", b"Content-Range"))),
        *cases("trailers-malformed",
               chunked(b"0\r\nNoColon\r\n\r\n"),
               chunked(b"0\r\nX : 1\r\n\r\n"),
               chunked(b"0\r\nX: a\x00b\r\n\r\n"),
               chunked(b"0\r\nBad Name: 1\r\n\r\n")),
        *cases("bare-lf",
               chunked(b"5\r\nhello\r\n0\r\n\n"),
               chunked(b"0\r\nX-A: 1\n\r\n"), name="trailers-bare-lf"),
        *cases("obs-fold", chunked(b"0\r\nX-A: 1\r\n  more\r\n\r\n"), name="trailers-obs-fold"),
        *cases("ctl-in-value",
               chunked(b"0\r\nX-A: a\x07b\r\n\r\n"),
               chunked(b"0\r\nX-A: a\x7fb\r\n\r\n"), name="trailers-ctl-in-value"),
    ]


def line_endings() -> list[Case]:
    return [
        *cases("bare-lf",
               b"GET / HTTP/1.1\nHost: h\n\n",
               b"GET / HTTP/1.1\r\nHost: h\n\r\n",
               b"GET / HTTP/1.1\r\nHost: h\r\n\n",
               b"GET / HTTP/1.1\nHost: h\r\n\r\n",
               b"GET / HTTP/1.1\r\nHost: h\r\nX: 1\nY: 2\r\n\r\n",
               b"GET / HTTP/1.1\r\nHost: h\r\nX: 1\r\r\n\r\n",
               b"GET / HTTP/1.1\r\nHost: h\r\n\r\r\n"),
        *cases("bare-cr",
               b"GET / HTTP/1.1\rHost: h\r\n\r\n",
               b"GET / HTTP/1.1\r\nHost: h\rX: 1\r\n\r\n",
               b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
               b"GET /\r HTTP/1.1\r\nHost: h\r\n\r\n"),
        *cases("leading-empty-lines",
               b"\r\n" + request(),
               b"\r\n\r\n" + request()),
        *cases("leading-bare-lf",
               b"\n" + request(),
               b"\r\n\n" + request()),
        *cases("lf-in-value",
               b"GET / HTTP/1.1\r\nHost: h\r\nX: a\nb\r\n\r\n"),
    ]


def whitespace() -> list[Case]:
    return [
        *cases("ws-before-colon",
               head("GET / HTTP/1.1", "Host: h", "X-A : 1"),
               head("GET / HTTP/1.1", "Host: h", "X-A\t: 1"),
               head("GET / HTTP/1.1", "Host : h"),
               head("POST / HTTP/1.1", "Host: h", "Content-Length : 5", body=b"hello")),
        *cases("ws-in-name",
               head("GET / HTTP/1.1", "Host: h", "X A: 1"),
               head("GET / HTTP/1.1", "Host: h", ": empty name")),
        *cases("request-line-whitespace",
               b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
               b"GET /  HTTP/1.1\r\nHost: h\r\n\r\n",
               b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
               b" GET / HTTP/1.1\r\nHost: h\r\n\r\n",
               b"GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n",
               b"GET /\tHTTP/1.1\r\nHost: h\r\n\r\n",
               b"GET / HTTP/1.1\t\r\nHost: h\r\n\r\n",
               b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
               b"GET\r\nHost: h\r\n\r\n",
               b"GET /\r\nHost: h\r\n\r\n"),
        *cases("ows-in-values",
               head("GET / HTTP/1.1", "Host: h", "X:v"),
               head("GET / HTTP/1.1", "Host: h", "X:\tv\t"),
               head("GET / HTTP/1.1", "Host: h", "X:    "),
               head("GET / HTTP/1.1", "Host:h")),
        *cases("ws-before-first-field",
               head("GET / HTTP/1.1", " Host: h"),
               head("GET / HTTP/1.1", "\tHost: h")),
    ]


def obs_fold() -> list[Case]:
    return cases(
        "obs-fold",
        head("GET / HTTP/1.1", "Host: h", "X-A: 1", " 2"),
        head("GET / HTTP/1.1", "Host: h", "X-A: 1", "\t2"),
        head("GET / HTTP/1.1", "Host: h", "X-A: 1", "   "),
        head("GET / HTTP/1.1", "Host: h", "X-A:", " folded"),
        head("GET / HTTP/1.1", "Host: h", "User-Agent: a", "  b", "  c"),
    )


def control_bytes() -> list[Case]:
    controls = [*range(0x01, 0x09), 0x0b, 0x0c, *range(0x0e, 0x20), 0x7f]
    return [
        *cases("ctl-in-value",
               *(head("GET / HTTP/1.1", "Host: h", f"X: a{chr(c)}b") for c in controls)),
        *cases("ctl-at-value-edge",
               head("GET / HTTP/1.1", "Host: h", "X: \x0bab"),
               head("GET / HTTP/1.1", "Host: h", "X: ab\x0c")),
        *cases("nul",
               head("GET / HTTP/1.1", "Host: h", "X: a\x00b"),
               head("GET / HTTP/1.1", "Host: h", "X\x00: 1"),
               b"GET /\x00 HTTP/1.1\r\nHost: h\r\n\r\n",
               b"G\x00T / HTTP/1.1\r\nHost: h\r\n\r\n"),
        *cases("ctl-in-name",
               *(head("GET / HTTP/1.1", "Host: h", f"X{chr(c)}Y: 1") for c in (0x01, 0x09, 0x0b, 0x7f))),
        *cases("ctl-in-target",
               *(f"GET /a{chr(c)}b HTTP/1.1\r\nHost: h\r\n\r\n".encode("latin-1")
                 for c in (0x01, 0x09, 0x0b, 0x1b, 0x7f))),
        *cases("ctl-in-method",
               b"G\x01T / HTTP/1.1\r\nHost: h\r\n\r\n",
               b"GET\x7f / HTTP/1.1\r\nHost: h\r\n\r\n"),
        *cases("obs-text-in-value",
               head("GET / HTTP/1.1", "Host: h", b"X: caf\xc3\xa9"),
               head("GET / HTTP/1.1", "Host: h", b"X: \x80\xff")),
        *cases("obs-text-in-name",
               head("GET / HTTP/1.1", "Host: h", b"X\xe9: 1")),
    ]


def hosts() -> list[Case]:
    def get(*fields: str | bytes, version: str = "HTTP/1.1") -> bytes:
        return head(f"GET / {version}", *fields)

    return [
        *cases("host-valid",
               get("Host: example.com:8080"),
               get("Host: 127.0.0.1"),
               get("Host: [::1]:8080"),
               get("Host: a_b.example"),
               get("Host: xn--caf-dma.example"),
               get("Host: "),
               get("HoSt: h")),
        *cases("host-missing",
               get(),
               get("X: 1"),
               get("Hosts: h")),
        *cases("host-repeated",
               get("Host: a", "Host: b"),
               get("Host: a", "Host: a"),
               get("Host: a", "Host: b", version="HTTP/1.0")),
        *cases("host-invalid",
               get("Host: exa mple.com"),
               get("Host: a/b"),
               get("Host: user@a"),
               get("Host: a:b"),
               get("Host: a:80:80"),
               get("Host: [::1"),
               get(b"Host: caf\xc3\xa9.example"),
               get('Host: a"b'),
               get("Host: a\\b"),
               get("Host: a?b"),
               get("Host: a#b"),
               get("Host: a{b}", version="HTTP/1.0")),
        *cases("http10-no-host",
               get(version="HTTP/1.0")),
    ]


def targets() -> list[Case]:
    def get(target: str | bytes, method: str = "GET", host: str = "example.com") -> bytes:
        raw = target.encode("latin-1") if isinstance(target, str) else target
        return method.encode() + b" " + raw + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n"

    return [
        *cases("target-origin",
               get("/"), get("/a/b?c=d&e"), get("//double//slash"), get("/a?b?c"),
               get("/%7Euser/%E2%82%AC"), get("/100%"), get("/%zz"), get("/a;p=1"),
               get("/!$&'()*+,;=:@-._~"), get("/?"), get("/a/./b/../c")),
        *cases("target-unusual-ascii",
               get('/a"b'), get("/a<b>"), get("/a{b}"), get("/a|b"), get("/a\\b"),
               get("/a^b"), get("/a`b"), get("/a[b]")),
        *cases("target-absolute-same-host",
               get("http://example.com/p?q=1"),
               get("https://example.com/"),
               get("http://example.com")),
        *cases("target-absolute-host",
               get("http://other.example/p"),
               get("http://other.example:8080/p?q"),
               get("HTTP://other.example/"),
               get("http://[::1]:81/"),
               get("http://other.example?q")),
        *cases("target-form-valid",
               get("*", "OPTIONS"),
               get("example.com:443", "CONNECT"),
               get("[::1]:443", "CONNECT"),
               get("/p", "CONNECT")),
        *cases("target-form",
               get("a/b"), get("?q"), get("."), get("a"),
               get("*"), get("*", "POST"),
               get("example.com:443"), get("example.com", "CONNECT"),
               get("http:///p"), get("http://:80/p"), get("http://a^b/"),
               get("ftp://example.com/"), get("http:/example.com/"), get("urn:isbn:123")),
        *cases("target-userinfo",
               get("http://user:pw@example.com/"), get("http://user@example.com/")),
        *cases("target-non-ascii",
               get(b"/caf\xc3\xa9"), get(b"/\xff"), get(b"/a?q=\xe9"), get(b"http://a/\x80")),
        *cases("target-fragment",
               get("/page#top"), get("/p?q=1#frag"), get("/#"), get("http://example.com/p#f")),
    ]


def versions() -> list[Case]:
    def line(version: str) -> bytes:
        return f"GET / {version}\r\nHost: h\r\n\r\n".encode()

    return [
        *cases("version-1x", line("HTTP/1.1"), line("HTTP/1.0")),
        *cases("version-minor", line("HTTP/1.2"), line("HTTP/1.9")),
        *cases("version-unsupported", line("HTTP/2.0"), line("HTTP/0.9"), line("HTTP/3.7"),
               line("HTTP/9.9")),
        *cases("version-malformed",
               line("HTTP/1.10"), line("HTTP/01.1"), line("HTTP/1"), line("HTTP/11"),
               line("HTTP/1.1.1"), line("HTTP/1.x"), line("http/1.1"), line("HTTPS/1.1"),
               line("HTTP/ 1.1"), line("HTTP 1.1"), line("HTTP/1.1a"), line("HTTP/2")),
        *cases("version-missing", b"GET /\r\n\r\n"),
    ]


def methods() -> list[Case]:
    def line(method: str | bytes, body: bytes = b"") -> bytes:
        raw = method.encode("latin-1") if isinstance(method, str) else method
        return raw + b" / HTTP/1.1\r\nHost: h\r\n\r\n" + body

    return [
        *cases("method-token",
               *(line(m) for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
                                   "TRACE", "PROPFIND", "MKCOL", "M-SEARCH", "X_CUSTOM",
                                   "A!#$%&'*+.^_`|~1", "X" * 64))),
        *cases("method-lower-case", line("get"), line("Get"), line("post")),
        *cases("method-invalid",
               line("G(T"), line("GE/T"), line("GET,"), line('G"T'), line("G@T"),
               line(b"G\xc3\x89T"), line("[GET]")),
    ]


def long_lines() -> list[Case]:
    def target_of(size: int) -> bytes:     # a request line of exactly `size` octets
        return b"GET /" + b"a" * (size - len(b"GET / HTTP/1.1")) + b" HTTP/1.1\r\nHost: h\r\n\r\n"

    def field_of(size: int) -> bytes:      # a field line of exactly `size` octets
        return head("GET / HTTP/1.1", "Host: h", "X: " + "v" * (size - 3))

    many = tuple(f"X-{i}: {i}" for i in range(100))
    return [
        *cases("long-lines-within-both", target_of(8000), field_of(8000)),
        *cases("long-lines",
               target_of(8191), target_of(20000), field_of(8191), field_of(20000),
               head("GET / HTTP/1.1", "Host: h", *many)),
        *cases("many-fields-within-ours", head("GET / HTTP/1.1", "Host: h", *many[:99])),
    ]


def pipelining() -> list[Case]:
    get, get_close = request(), request(fields=(("Host", "h"), ("Connection", "close")))
    return [
        *cases("pipelining",
               get + get,
               get + get + get,
               get_close + get,
               request(version="HTTP/1.0", fields=()) + get,
               post("Content-Length: 5", body=b"hello") + get,
               chunked(HELLO_CHUNKS) + get,
               chunked(b"0\r\nX-T: 1\r\n\r\n") + get,
               get + b"GARBAGE\r\n\r\n",
               get + get[:20],
               request("HEAD") + get),
        *cases("empty-line-between-requests", get + b"\r\n" + get, get + b"\r\n\r\n" + get),
        *cases("http10-keep-alive",
               request(version="HTTP/1.0", fields=(("Connection", "keep-alive"),)) + get,
               request(version="HTTP/1.0", fields=(("Connection", "Keep-Alive"),)) + get,
               request(version="HTTP/1.0", fields=(("Connection", "foo, keep-alive"),)) + get),
    ]


def expect_and_connection() -> list[Case]:
    return [
        *cases("expect",
               post("Expect: 100-continue", "Content-Length: 5", body=b"hello"),
               post("Expect: 100-Continue", "Content-Length: 5", body=b"hello"),
               post("Expect: 100-continue", "Transfer-Encoding: chunked", body=HELLO_CHUNKS),
               head("GET / HTTP/1.1", "Host: h", "Expect: 100-continue"),
               head("POST / HTTP/1.0", "Expect: 100-continue", "Content-Length: 2", body=b"hi"),
               post("Expect: something-else", "Content-Length: 5", body=b"hello")),
        *cases("connection",
               request(fields=(("Host", "h"), ("Connection", "close"))) + request(),
               request(fields=(("Host", "h"), ("Connection", "Close"))) + request(),
               request(fields=(("Host", "h"), ("Connection", "keep-alive, close"))) + request(),
               request(fields=(("Host", "h"), ("Connection", "foo"), ("Connection", "close")))
               + request(),
               request(fields=(("Host", "h"), ("Connection", "keep-alive"))) + request(),
               request(version="HTTP/1.0", fields=(("Connection", "close"),)) + request(),
               request(fields=(("Host", "h"), ("Connection", "upgrade"), ("Upgrade", "websocket")))
               + request(),
               request(fields=(("Host", "h"), ("Connection", ""))) + request()),
    ]


def hand_written() -> list[Case]:
    return [*valid_requests(), *framing_conflicts(), *transfer_codings(), *chunk_lines(),
            *trailers(), *line_endings(), *whitespace(), *obs_fold(), *control_bytes(),
            *hosts(), *targets(), *versions(), *methods(), *long_lines(), *pipelining(),
            *expect_and_connection()]


# -- seeded mutations -----------------------------------------------------------

@dataclass(frozen=True)
class Piece:
    """A part of a request as a mutation sees it: its region, then its bytes."""

    region: str   # request-line, field, eol, body, chunk-line, chunk-data, trailer
    data: bytes


CRLF = Piece("eol", b"\r\n")


def message(line: str, fields: list[str], body: bytes = b"",
            chunks: list[tuple[str, bytes]] | None = None, trailers: list[str] = ()) -> list[Piece]:
    out = [Piece("request-line", line.encode()), CRLF]
    for field in fields:
        out += [Piece("field", field.encode("latin-1")), CRLF]
    out.append(CRLF)
    if chunks is None:
        return out + ([Piece("body", body)] if body else [])
    for size_line, data in chunks:
        out += [Piece("chunk-line", size_line.encode()), CRLF, Piece("chunk-data", data), CRLF]
    out += [Piece("chunk-line", b"0"), CRLF]
    for field in trailers:
        out += [Piece("trailer", field.encode("latin-1")), CRLF]
    return out + [CRLF]


MUTATION_BASES = [
    message("GET /a/b?x=1&y=2 HTTP/1.1", ["Host: example.com", "User-Agent: t/1.0", "Accept: */*"]),
    message("POST /form HTTP/1.1", ["Host: h", "Content-Type: text/plain", "Content-Length: 11"],
            b"hello world"),
    message("POST /upload HTTP/1.1", ["Host: example.com", "Transfer-Encoding: chunked"],
            chunks=[("5;n=v", b"hello"), ("6", b" world")], trailers=["X-Sum: 11"]),
    message("HEAD / HTTP/1.1", ["Host: h"]) + message("DELETE /x HTTP/1.1", ["Host: h", "X-A: 1"]),
    message("GET / HTTP/1.0", ["Accept: */*"]),
    message("OPTIONS * HTTP/1.1", ["Host: h", "Connection: close"]),
    message("GET http://example.com/p HTTP/1.1", ["Host: example.com"]),
]
#: Bytes a mutation inserts or writes: syntax bytes, controls, whitespace,
#: obs-text, digits and letters.
MUTATION_BYTES = b"\r\n\t :;,=\"#?/@\\()[]{}\x00\x01\x0b\x0c\x1b\x7f\x80\xe9\xff05aAzZ-_.%*"
#: What a line ending may become.
EOL_VARIANTS = [b"\n", b"\r", b"\r\r\n", b"\n\r", b" \r\n", b"\r\n\r\n", b"\r\n "]


def mutate_piece(piece: Piece, rng: random.Random) -> list[Piece]:
    """`piece` after one random edit (a duplicated line comes with its CRLF)."""
    if piece.region == "eol":
        return [Piece("eol", rng.choice(EOL_VARIANTS))]
    data = bytearray(piece.data)
    action = rng.choice(("insert", "replace", "delete", "swap-case", "duplicate"))
    at = rng.randrange(len(data) + 1)
    if action == "duplicate" and piece.region in ("field", "trailer"):
        return [piece, CRLF, piece]
    if action in ("insert", "duplicate") or at == len(data):
        data[at:at] = bytes([rng.choice(MUTATION_BYTES)])
    elif action == "replace":
        data[at] = rng.choice(MUTATION_BYTES)
    elif action == "delete":
        del data[at]
    elif data[at] < 0x80:
        data[at] = ord(chr(data[at]).swapcase())
    return [Piece(piece.region, bytes(data))]


def mutations() -> list[Case]:
    rng = random.Random(SEED)
    out = []
    for i in range(MUTATIONS):
        pieces = list(rng.choice(MUTATION_BASES))
        edits = []
        for _ in range(rng.randint(1, 2)):
            at = rng.randrange(len(pieces))
            edited = mutate_piece(pieces[at], rng)
            pieces[at:at + 1] = edited
            edits.append(edited[-1])
        out.append(Case(f"mutation/{i}", "mutation", b"".join(p.data for p in pieces), tuple(edits)))
    return out


# -- what a mutated case's difference is about ----------------------------------

CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def request_line_kinds(line: bytes) -> list[str]:
    parts = line.split(b" ")
    if len(parts) != 3:
        return []
    method, target, version = parts
    kinds = []
    if TOKEN.fullmatch(method) and method != method.upper():
        kinds.append("method-lower-case")
    if b"#" in target:
        kinds.append("target-fragment")
    if b"://" in target and b"@" in target:
        kinds.append("target-userinfo")
    if not target.startswith(b"/"):
        kinds += ["target-form", "target-absolute-host"]
    if re.fullmatch(rb"HTTP/1\.[2-9]", version):
        kinds.append("version-minor")
    if re.fullmatch(rb"HTTP/[02-9]\.[0-9]", version):
        kinds.append("version-unsupported")
    return kinds


def field_kinds(line: bytes) -> list[str]:
    if line[:1] in (b" ", b"\t"):
        return ["obs-fold"]
    name, _, value = line.partition(b":")
    kinds = []
    if name[-1:] in (b" ", b"\t"):
        kinds.append("ws-before-colon")
    if CTL.search(value.strip(b" \t")):
        kinds.append("ctl-in-value")
    name = name.lower()
    if name == b"host":
        kinds += ["host-invalid", "target-absolute-host"]
    elif name == b"content-length":
        kinds.append("cl-repeated-equal")
    elif name == b"content-type":
        kinds.append("content-type-repeated")
    return kinds


def chunk_line_kinds(line: bytes) -> list[str]:
    size = re.match(rb"[0-9A-Fa-f]+", line)
    if size is None:
        return []
    rest = line[size.end():]
    if rest and not rest.strip(b" \t"):
        return ["chunk-size-whitespace"]
    return ["chunk-ext-invalid", "chunk-ext-bws"] if b";" in rest else []


def edit_kinds(edit: Piece) -> list[str]:
    """The table rows an edited piece could fall under."""
    if edit.region == "request-line":
        return request_line_kinds(edit.data)
    if edit.region == "field":
        return field_kinds(edit.data)
    if edit.region == "trailer":
        return ["trailers-forbidden", *field_kinds(edit.data)]
    if edit.region == "chunk-line":
        return chunk_line_kinds(edit.data)
    if edit.region == "eol":
        kinds = {b" \r\n": ["chunk-size-whitespace"], b"\r\n ": ["obs-fold"],
                 b"\r\n\r\n": ["empty-line-between-requests"]}.get(edit.data, [])
        return kinds + (["bare-lf"] if re.search(rb"(?<!\r)\n", edit.data) else [])
    return []


def classify(case: Case, ours: Outcome, theirs: Outcome, known: dict[str, Row]) -> str:
    """A hand-written case's kind; for a mutation, the first row that fits one
    of its edits and says which side refuses as the outcomes do."""
    if case.kind != "mutation":
        return case.kind
    for edit in case.edits:
        for kind in edit_kinds(edit):
            if kind in known and known[kind].explains(ours, theirs):
                return kind
    return "mutation"


CORPUS = [*hand_written(), *mutations()]


# -- running both parsers --------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    #: Per request read to its end: (method, target, version, fields, body,
    #: trailers). A request cut short by a refusal is not listed.
    requests: tuple[tuple, ...]
    refused: bool


def comparable(fields) -> tuple[tuple[str, str], ...]:
    """Fields as text; h11 lower-cases a Transfer-Encoding value, so both do."""
    pairs = [(name.decode("latin-1"), value.decode("latin-1")) if type(name) is bytes
             else (name, value) for name, value in fields]
    return tuple((name, value.lower() if name == "transfer-encoding" else value)
                 for name, value in pairs)


def collect(events: Iterator[tuple], refusal: type[Exception]) -> Outcome:
    """The outcome of one parser's ("head", (method, target, version, fields)),
    ("data", bytes) and ("end", trailers) events, until it stops or refuses."""
    requests: list[tuple] = []
    current: list = []
    try:
        for kind, value in events:
            if kind == "head":
                current = [*value, b""]
            elif kind == "data":
                current[4] += value
            else:
                requests.append((*current, comparable(value)))
    except refusal:
        return Outcome(tuple(requests), True)
    return Outcome(tuple(requests), False)


def our_events(data: bytes) -> Iterator[tuple]:
    conn = ServerConnection()
    conn.receive_data(data)
    conn.receive_data(b"")
    while True:
        event = conn.next_event()
        if type(event) is Request:
            yield "head", (event.method, event.target, event.version, comparable(event.headers))
        elif type(event) is bytes:
            yield "data", event
        elif event is END:
            yield "end", conn.trailers
        elif event is PAUSED:
            if not (conn.request.keep_alive and conn.start_next_cycle()):
                return
        else:
            assert event is CLOSED, f"{event!r} after EOF"
            return


def h11_events(data: bytes) -> Iterator[tuple]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")
    while True:
        event = conn.next_event()
        if type(event) is h11.Request:
            yield "head", (event.method.decode("latin-1"), event.target.decode("latin-1"),
                           "HTTP/" + event.http_version.decode(), comparable(event.headers))
        elif type(event) is h11.Data:
            yield "data", bytes(event.data)
        elif type(event) is h11.EndOfMessage:
            yield "end", event.headers
            if conn.their_state is h11.MUST_CLOSE:
                return   # the rest is never read, as ours does after a last request
        elif event is h11.PAUSED:
            # Answer without accepting any protocol switch, then go on.
            conn.send(h11.Response(status_code=404, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            if conn.our_state is not h11.DONE:
                return
            conn.start_next_cycle()
        else:
            assert type(event) is h11.ConnectionClosed, f"{event!r} after EOF"
            return


def ours(data: bytes) -> Outcome:
    return collect(our_events(data), HTTPError)


def theirs(data: bytes) -> Outcome:
    return collect(h11_events(data), h11.RemoteProtocolError)


# -- the table of known differences ----------------------------------------------

@dataclass(frozen=True)
class Row:
    kind: str
    we_refuse: bool
    h11_refuses: bool

    def explains(self, ours: Outcome, theirs: Outcome) -> bool:
        """Does this row say who refused where the two outcomes part?"""
        return (self.we_refuse, self.h11_refuses) == who_refuses(ours, theirs)


def who_refuses(ours: Outcome, theirs: Outcome) -> tuple[bool, bool]:
    """(we refuse, h11 refuses) at the first request the two do not share.

    Both accepted it but parsed it apart, or one stopped reading (no
    keep-alive) where the other went on: (False, False). One refused where the
    other accepted it, or went on to EOF: that side alone refuses.
    """
    shared = 0
    for mine, other in zip(ours.requests, theirs.requests):
        if mine != other:
            return False, False
        shared += 1
    mine_ended = len(ours.requests) == shared
    other_ended = len(theirs.requests) == shared
    if mine_ended and other_ended:
        return ours.refused, theirs.refused
    if mine_ended:
        return ours.refused, False
    return False, theirs.refused


def refuses(cell: str) -> bool:
    """A table cell says `400 ...`, `501 ...` or `refuses ...` for a refusal."""
    return re.match(r"\s*(?:[45][0-9][0-9]\b|refuses)", cell) is not None


def known_differences() -> dict[str, Row]:
    """The rows of docs/http-differences.md's table: | `id` | input | Flash | h11 | why |."""
    rows = {}
    with open(TABLE, encoding="utf-8") as f:
        for line in f:
            match = re.match(r"\|\s*`([a-z0-9-]+)`\s*\|([^|]*)\|([^|]*)\|([^|]*)\|", line)
            if match:
                kind, _, flash, h11_cell = match.groups()
                assert kind not in rows, f"{kind} twice in the table"
                rows[kind] = Row(kind, refuses(flash), refuses(h11_cell))
    assert rows, f"no table rows found in {TABLE}"
    return rows


@dataclass(frozen=True)
class Difference:
    case: Case
    kind: str
    ours: Outcome
    theirs: Outcome


def differences() -> Iterator[Difference]:
    known = known_differences()
    for case in CORPUS:
        mine, other = ours(case.data), theirs(case.data)
        if mine != other:
            yield Difference(case, classify(case, mine, other, known), mine, other)


def describe(diff: Difference) -> str:
    def side(outcome: Outcome) -> str:
        return f"{len(outcome.requests)} request(s){', then refused' if outcome.refused else ''}"

    detail = ""
    if diff.ours.requests != diff.theirs.requests:
        for mine, other in zip(diff.ours.requests, diff.theirs.requests):
            if mine != other:
                detail = f"\n      ours:   {mine!r:.300}\n      theirs: {other!r:.300}"
                break
    edits = f"\n    edits: {[(e.region, e.data) for e in diff.case.edits]}" if diff.case.edits else ""
    return (f"{diff.case.id} [{diff.kind}] {diff.case.data[:160]!r}{edits}\n"
            f"    flash: {side(diff.ours)}; h11: {side(diff.theirs)}{detail}")


# -- the tests --------------------------------------------------------------------

def test_the_corpus_is_large_and_its_ids_unique() -> None:
    assert len(CORPUS) >= 500
    assert len({case.id for case in CORPUS}) == len(CORPUS)
    assert len({case.data for case in mutations()}) > MUTATIONS * 0.9, "mutations repeat"


def test_every_difference_from_h11_is_in_the_table() -> None:
    known = known_differences()
    unexplained = [diff for diff in differences()
                   if diff.kind not in known or not known[diff.kind].explains(diff.ours, diff.theirs)]
    assert not unexplained, (
        f"{len(unexplained)} input(s) where Flash and h11 differ and docs/http-differences.md "
        "does not say why (or says the other side refuses):\n" + "\n".join(map(describe, unexplained)))


def test_every_row_of_the_table_still_differs() -> None:
    seen = {diff.kind for diff in differences()}
    stale = set(known_differences()) - seen
    assert not stale, f"rows of docs/http-differences.md no input exercises any more: {sorted(stale)}"


@pytest.mark.parametrize("kind", ["valid", "te-chunked", "chunk-size-valid", "chunk-ext-valid",
                                  "trailers-valid", "target-origin", "target-form-valid",
                                  "method-token", "pipelining", "connection", "expect"])
def test_both_accept_the_plain_valid_classes(kind: str) -> None:
    """A guard on the drivers: where both must accept, both do, alike."""
    for case in (c for c in CORPUS if c.kind == kind):
        mine = ours(case.data)
        assert mine == theirs(case.data), case.id
        assert mine.requests, case.id
