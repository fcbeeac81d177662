"""Response serialisation: the status line and head, then body framing.

`ResponseWriter` is created per response by `ServerConnection.respond`.
It decides the framing once, from the request and the app's headers:

* the app gave Content-Length      -> length-delimited, checked byte-exact;
* no body allowed (HEAD, 204, 304)   -> nothing is sent after the head;
* HTTP/1.1 and no length            -> chunked;
* HTTP/1.0 and no length            -> close-delimited (the connection ends).

An app answers a route with the same head every time, so a head built once
is kept whole (`_HEADS`) for the second its Date names.
"""

from __future__ import annotations

import re

from .dates import http_date
from .errors import status_line_text

#: One field line an app may send: a token name, ": ", and a value with no
#: control character but HTAB (RFC 9110 s.5.5: CR, LF and NUL would split or
#: cut the head; VT, FF, DEL and the rest are read differently by each client).
_APP_FIELD_LINE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+: [^\x00-\x08\x0a-\x1f\x7f]*\r\n")

#: A status as start_response takes it: three digits from 200, then SP and a
#: reason phrase (HTAB, SP, visible ASCII, obs-text), or nothing. No 1xx: an
#: interim response is the server's (100 Continue); a 101 from an app would
#: switch protocols with no upgrade mechanism to carry on, and any other 1xx
#: would be taken as the final answer by the adapter.
_STATUS_LINE = re.compile(r"[2-5][0-9][0-9](?: [\t\x20-\x7e\x80-\xff]*)?")

#: Hop-by-hop fields are the server's business (PEP 3333): the framing and
#: persistence fields an app sends are dropped (Connection: close is honoured).
_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
     "proxy-authenticate", "proxy-authorization")
)

#: Validated app fields -> their line: an app sends the same (name, value)
#: pairs on every response (Content-Type: text/plain...), so one dict lookup
#: replaces a lower(), two set tests, a format and a regex. Framing and
#: hop-by-hop fields never enter it. Emptied when full (apps that send a new
#: ETag or cookie each time only churn it).
_APP_LINES: dict[tuple[str, str], str] = {}
_APP_LINES_MAX = 1024
#: Validated status lines -> their code ("200 OK" -> 200).
_STATUS_CODES: dict[str, int] = {}
_STATUS_CODES_MAX = 256
#: Whole response heads already built, by everything `build_head` builds
#: them from -> (the Date they carry, the bytes, the writer's arguments).
#: An app answers a route with the same status and fields every time, so one
#: tuple, one hash and one dict lookup replace the field loop, the format
#: and the encode. An entry serves only the second its Date names (it is
#: rebuilt in the next one), and only heads whose every field line was
#: already in _APP_LINES enter it: an app that sends a new ETag or cookie
#: each time pays the lookup, never the churn. Emptied when full.
_HEADS: dict[tuple, tuple] = {}
_HEADS_MAX = 256


class ResponseError(Exception):
    """The application broke the response rules (bad header, wrong length)."""


class ResponseWriter:
    """Frames one response. Create it through `ServerConnection.respond`."""

    __slots__ = ("keep_alive", "chunked", "remaining", "has_body", "sent_body", "status")

    def __init__(self, keep_alive: bool, chunked: bool, remaining: int | None,
                 has_body: bool, status: int = 0) -> None:
        self.keep_alive = keep_alive
        self.chunked = chunked
        #: Bytes still owed under Content-Length; None when not length-framed.
        self.remaining = remaining
        self.has_body = has_body
        self.sent_body = 0
        #: The response's status code (0 when the writer was built elsewhere).
        self.status = status

    def body(self, data: bytes) -> bytes:
        """Frame one piece of body. Raises ResponseError past Content-Length."""
        if not self.has_body or not data:
            return b""
        n = len(data)
        self.sent_body += n
        if self.chunked:
            return b"%x\r\n%b\r\n" % (n, data)
        if self.remaining is not None:
            if n > self.remaining:
                raise ResponseError(
                    f"app sent more than its Content-Length ({self.sent_body} bytes so far)"
                )
            self.remaining -= n
        return data

    def end(self) -> bytes:
        """The bytes that end the body; ResponseError if it came up short."""
        if self.chunked:
            return b"0\r\n\r\n"
        if self.has_body and self.remaining:
            raise ResponseError(
                f"app sent {self.sent_body} bytes, {self.remaining} short of its Content-Length"
            )
        return b""


def build_head(
    version: str,
    status: str,
    headers: list[tuple[str, str]],
    head_request: bool,
    keep_alive: bool,
    server: str,
    body_length: int | None = None,
) -> tuple[bytes, ResponseWriter]:
    """Serialise the status line and header section; return it and its writer.

    `keep_alive` is what the request allows; it may turn off here (HTTP/1.0
    body without length, or the app asked for `Connection: close`).
    `body_length` is the size of a body the server already holds whole: it
    becomes the Content-Length when the app gave none.
    """
    # One function, cache and build: for a head that misses, a second call
    # would cost about what the lookup does.
    date = http_date()
    try:
        key = (version, status, tuple(headers), head_request, keep_alive, server, body_length)
        cached = _HEADS.get(key)
    except TypeError:
        # An unhashable field (a list, not a tuple): the build says what is wrong.
        key = cached = None
    if cached is not None and cached[0] is date:
        return cached[1], ResponseWriter(*cached[2])
    code = _STATUS_CODES.get(status) or _status_code(status)
    # RFC 9110 s.6.4.1: no content after 204, 304 or a HEAD's head; s.8.6: no
    # Content-Length in 204 (a 304 may repeat the app's). 1xx never get here.
    content_status = code != 204 and code != 304
    has_body = content_status and not head_request
    length_allowed = code != 204
    lines = []
    append = lines.append
    length: int | None = None
    known = _APP_LINES.get
    repeated = True
    for field in headers:
        line = known(field) if type(field) is tuple else None
        if line is None:
            name, value = field
            if type(name) is not str:
                raise ResponseError(f"header name {name!r} is not a str")
            lname = name.lower()
            if lname == "content-length":
                if not (type(value) is str and value.isascii() and value.isdigit()) or length is not None:
                    raise ResponseError(f"invalid Content-Length {value!r}")
                length = int(value)
                continue
            if lname in _HOP_BY_HOP:
                if lname == "connection" and "close" in str(value).lower():
                    keep_alive = False
                continue
            line = _app_line(field, name, value)
            repeated = False
        append(line)
    if length is None and body_length is not None and content_status and (body_length or has_body):
        # A HEAD of an empty body says nothing rather than "0".
        length = body_length
    chunked = False
    if length is not None and length_allowed:
        append(f"Content-Length: {length}\r\n")
    elif has_body:
        if version == "HTTP/1.1":
            chunked = True
            append("Transfer-Encoding: chunked\r\n")
        else:
            keep_alive = False
    if not keep_alive:
        append("Connection: close\r\n")
    elif version == "HTTP/1.0":
        append("Connection: keep-alive\r\n")
    head = f"HTTP/1.1 {status}\r\nDate: {date}\r\nServer: {server}\r\n{''.join(lines)}\r\n"
    try:
        data = head.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ResponseError(f"app header is not latin-1: {exc}") from None
    remaining = length if has_body and length is not None else None
    if repeated and key is not None:
        if len(_HEADS) >= _HEADS_MAX:
            _HEADS.clear()
        _HEADS[key] = (date, data, (keep_alive, chunked, remaining, has_body, code))
    return data, ResponseWriter(keep_alive, chunked, remaining, has_body, code)


def _status_code(status: str) -> int:
    """Validate a status line like `404 Not Found`; return its code."""
    if type(status) is not str or _STATUS_LINE.fullmatch(status) is None:
        if type(status) is str and status[:1] == "1":
            raise ResponseError(f"an app may not send the interim status {status!r} "
                                "(no protocol upgrade is possible)")
        raise ResponseError(f"invalid status {status!r}")
    code = int(status[:3])
    if len(_STATUS_CODES) < _STATUS_CODES_MAX:
        _STATUS_CODES[status] = code
    return code


def _app_line(field, name: str, value: str) -> str:
    """The validated line of an app's field (not framing, not hop-by-hop)."""
    if type(value) is not str:
        raise ResponseError(f"header {name!r} has a value that is not a str: {value!r}")
    line = f"{name}: {value}\r\n"
    if _APP_FIELD_LINE.fullmatch(line) is None:
        raise ResponseError(f"app header {name!r} has an invalid name or a control "
                            "character in its value")
    if type(field) is tuple:
        if len(_APP_LINES) >= _APP_LINES_MAX:
            _APP_LINES.clear()
        _APP_LINES[field] = line
    return line


def continue_response() -> bytes:
    """The interim `100 Continue` sent before reading an expecting body."""
    return b"HTTP/1.1 100 Continue\r\n\r\n"


__all__ = [
    "ResponseError",
    "ResponseWriter",
    "build_head",
    "continue_response",
    "http_date",
    "status_line_text",
]
