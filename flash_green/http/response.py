"""Response serialisation: the status line and head, then body framing.

`ResponseWriter` is created per response by `ServerConnection.start_response`.
It decides the framing once, from the request and the app's headers:

* the app gave Content-Length      -> length-delimited, checked byte-exact;
* no body allowed (HEAD, 1xx/204/304) -> nothing is sent after the head;
* HTTP/1.1 and no length            -> chunked;
* HTTP/1.0 and no length            -> close-delimited (the connection ends).
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate

from .errors import status_line_text

_date_cache: list = [0, ""]

#: What an app may put in a header: a token name and a value with no CR, LF
#: or NUL. Checked over all lines at once (one regex pass, not one per field).
_APP_HEADER_BLOCK = re.compile(
    r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+: [^\r\n\x00]*\r\n)*"
)

#: Hop-by-hop fields are the server's business (PEP 3333): the framing and
#: persistence fields an app sends are dropped (Connection: close is honoured).
_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
     "proxy-authenticate", "proxy-authorization")
)


def http_date() -> str:
    """The current IMF-fixdate, recomputed at most once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True)
    return _date_cache[1]


class ResponseError(Exception):
    """The application broke the response rules (bad header, wrong length)."""


class ResponseWriter:
    """Frames one response. Create it through `ServerConnection.start_response`."""

    __slots__ = ("keep_alive", "chunked", "remaining", "has_body", "sent_body")

    def __init__(self, keep_alive: bool, chunked: bool, remaining: int | None,
                 has_body: bool) -> None:
        self.keep_alive = keep_alive
        self.chunked = chunked
        #: Bytes still owed under Content-Length; None when not length-framed.
        self.remaining = remaining
        self.has_body = has_body
        self.sent_body = 0

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
    *,
    head_request: bool,
    keep_alive: bool,
    server: str,
) -> tuple[bytes, ResponseWriter]:
    """Serialise the status line and header section; return it and its writer.

    `keep_alive` is what the request allows; it may turn off here (HTTP/1.0
    body without length, or the app asked for `Connection: close`).
    """
    code = int(status[:3]) if status[:3].isdigit() and status[:3].isascii() else 0
    if not 100 <= code <= 599 or (len(status) > 3 and status[3] != " "):
        raise ResponseError(f"invalid status {status!r}")
    has_body = not (head_request or code < 200 or code == 204 or code == 304)
    lines = []
    length: int | None = None
    for name, value in headers:
        lname = name.lower()
        if lname == "content-length":
            if not (value.isascii() and value.isdigit()) or length is not None:
                raise ResponseError(f"invalid Content-Length {value!r}")
            length = int(value)
            continue
        if lname in _HOP_BY_HOP:
            if lname == "connection" and "close" in value.lower():
                keep_alive = False
            continue
        lines.append(f"{name}: {value}\r\n")
    block = "".join(lines)
    # The line count catches a value carrying a whole "\r\nName: v" of its
    # own, which the per-line pattern alone would take for a second field.
    if not _APP_HEADER_BLOCK.fullmatch(block) or block.count("\n") != len(lines):
        raise ResponseError("app header has an invalid name or a CR/LF/NUL in its value")
    chunked = False
    if length is not None:
        block += f"Content-Length: {length}\r\n"
    elif has_body:
        if version == "HTTP/1.1":
            chunked = True
            block += "Transfer-Encoding: chunked\r\n"
        else:
            keep_alive = False
    if not keep_alive:
        block += "Connection: close\r\n"
    elif version == "HTTP/1.0":
        block += "Connection: keep-alive\r\n"
    head = (
        f"HTTP/1.1 {status}\r\nDate: {http_date()}\r\nServer: {server}\r\n{block}\r\n"
    )
    try:
        data = head.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ResponseError(f"app header is not latin-1: {exc}") from None
    return data, ResponseWriter(keep_alive, chunked, length if has_body else None, has_body)


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
