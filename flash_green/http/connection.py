"""The server side of one HTTP/1.1 connection, as a pure state machine.

Feed it bytes with `receive_data` (b"" means the peer closed its side) and
pull events with `next_event`:

* a `Request`                  the head of the next request, fully validated;
* `bytes`                      a piece of request body (already de-chunked);
* `END`                        the request body is complete (trailers in
                               `conn.trailers`);
* `NEED_DATA`                  feed more bytes, then ask again;
* `PAUSED`                     a whole request was read; answer it and call
                               `start_next_cycle()` before the next one
                               (pipelined bytes stay buffered meanwhile);
* `CLOSED`                     the peer closed cleanly between requests.

Anything the client got wrong raises `HTTPError(status, reason)`: answer it
with `render_error` and close. No sockets, no threads, no clocks here: the
same object is driven by a blocking loop, a generator tasklet, an epoll
callback or an asyncio protocol.

Discussion: the parser works on bytes and validates a whole header section
with one compiled regex before splitting it, so the common case costs one C
pass plus a short Python loop. Framing values are checked as plain ASCII
digits (Python's `int` would accept `+5`, `0_5` and ` 5 `), and only SP and
HTAB are ever stripped (`bytes.strip()` would also eat VT and FF).
"""

from __future__ import annotations

import re

from ..config import Limits
from .errors import HTTPError
from .response import ResponseWriter, build_head, continue_response


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")
PAUSED = _Sentinel("PAUSED")
END = _Sentinel("END")
CLOSED = _Sentinel("CLOSED")

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_EMPTY_LINES = re.compile(rb"(?:\r\n)*")
#: Methods are tokens; like gunicorn we refuse lower case (a typo, or a probe).
_REQUEST_LINE = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Z]+) ([^\x00-\x20\x7f]+) HTTP/([0-9])\.([0-9])"
)
#: A whole header section: field lines of token ":" field-value CRLF, where a
#: value is visible ASCII, obs-text, SP and HTAB (no CR, LF, NUL or other CTL).
_FIELD_LINES = re.compile(rb"(?:" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n)*")
_QUOTED = rb'"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]+)((?:[ \t]*;[ \t]*" + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*)"
)

#: Transfer codings we can pass through undecoded before a final `chunked`.
_KNOWN_CODINGS = frozenset(("chunked", "identity", "gzip", "x-gzip", "deflate", "compress"))
_FRAMING_FIELDS = frozenset(
    ("content-length", "transfer-encoding", "host", "connection", "expect", "content-type")
)
#: Fields that must not arrive late in a trailer (RFC 9110 s.6.5.1): framing,
#: routing and authentication are decided by the head.
_FORBIDDEN_TRAILERS = frozenset(
    ("content-length", "transfer-encoding", "host", "content-type", "content-encoding",
     "content-range", "trailer", "authorization", "expect", "connection", "te")
)

# Parser states (small ints: compared on every call).
_IDLE, _BODY_LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _END_PENDING, _DONE, _CLOSED = range(9)


class Request:
    """A validated request head. Field names are lower-cased, values trimmed."""

    __slots__ = ("method", "target", "path", "query", "version", "headers",
                 "keep_alive", "chunked", "content_length", "expect_continue")

    def __init__(self, method: str, target: str, path: str, query: str, version: str,
                 headers: list[tuple[str, str]], keep_alive: bool, chunked: bool,
                 content_length: int | None, expect_continue: bool) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.content_length = content_length
        self.expect_continue = expect_continue

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def header(self, name: str) -> str | None:
        """The first value of `name` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} {self.version}>"


class ServerConnection:
    """One connection's protocol state (see the module docstring)."""

    def __init__(self, limits: Limits | None = None, server: str = "flash") -> None:
        self.limits = limits or Limits()
        self.server = server
        self.request: Request | None = None
        self.trailers: list[tuple[str, str]] = []
        self._buf = b""
        self._scan = 0
        self._eof = False
        self._state = _IDLE
        self._remaining = 0
        self._body_size = 0
        self._continue_sent = False

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Append bytes from the peer; b"" records that the peer closed."""
        if not data:
            self._eof = True
        elif self._buf:
            self._buf += data
        else:
            self._buf = data if type(data) is bytes else bytes(data)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet parsed (pipelined requests, body)."""
        return len(self._buf)

    @property
    def their_eof(self) -> bool:
        return self._eof

    def next_event(self):
        """The next event; raises HTTPError on invalid input (then close)."""
        state = self._state
        if state == _IDLE:
            return self._parse_head()
        if state == _BODY_LENGTH or state == _CHUNK_DATA:
            return self._read_body_bytes()
        if state == _END_PENDING:
            self._state = _DONE
            return END
        if state == _DONE:
            return PAUSED
        if state == _CHUNK_SIZE:
            return self._parse_chunk_size()
        if state == _CHUNK_CRLF:
            return self._parse_chunk_crlf()
        if state == _TRAILERS:
            return self._parse_trailers()
        return CLOSED

    # -- the request head ------------------------------------------------------

    def _parse_head(self):
        buf = self._buf
        if buf[:2] == b"\r\n":
            # RFC 9112 s.2.2: ignore empty lines before a request line. Whole
            # CRLF pairs only (not lstrip): a lone CR or LF is an error however
            # the bytes were split.
            buf = self._buf = buf[_EMPTY_LINES.match(buf).end():]
            self._scan = 0
        if not buf:
            if self._eof:
                self._state = _CLOSED
                return CLOSED
            return NEED_DATA
        end = buf.find(b"\r\n\r\n", self._scan)
        if end < 0:
            self._check_incomplete_head(buf)
            return NEED_DATA
        limits = self.limits
        line_end = buf.find(b"\r\n")
        if line_end > limits.max_request_line:
            raise HTTPError(414, "request line too long")
        if end + 4 > limits.max_header_size:
            raise HTTPError(431, "header section too large")
        self._buf = buf[end + 4:]
        self._scan = 0
        request = self._build_request(buf[:line_end], buf[line_end + 2:end + 2])
        self.request = request
        self._body_size = 0
        self._continue_sent = False
        self.trailers = []
        return request

    def _check_incomplete_head(self, buf: bytes) -> None:
        limits = self.limits
        line_end = buf.find(b"\r\n")
        if (line_end < 0 and len(buf) > limits.max_request_line) or line_end > limits.max_request_line:
            raise HTTPError(414, "request line too long")
        if len(buf) > limits.max_header_size:
            raise HTTPError(431, "header section too large")
        if self._eof:
            raise HTTPError(400, "connection closed before the request head was complete")
        self._scan = max(0, len(buf) - 3)

    def _build_request(self, line: bytes, block: bytes) -> Request:
        match = _REQUEST_LINE.fullmatch(line)
        if match is None:
            _reject_request_line(line)
        if match.group(3) != b"1":
            raise HTTPError(505, "only HTTP/1.x is supported")
        method = match.group(1).decode("ascii")
        target = match.group(2).decode("latin-1")
        version = "HTTP/1.0" if match.group(4) == b"0" else "HTTP/1.1"
        headers = self._parse_fields(block, self.limits.max_header_fields)

        content_length = None
        transfer_codings: list[str] = []
        hosts = 0
        content_types = 0
        connection = ""
        expect = ""
        for name, value in headers:
            if name not in _FRAMING_FIELDS:
                continue
            if name == "content-length":
                if content_length is not None:
                    raise HTTPError(400, "repeated Content-Length")
                if not (value.isascii() and value.isdigit()):
                    raise HTTPError(400, "Content-Length is not a plain number")
                content_length = int(value)
            elif name == "transfer-encoding":
                transfer_codings.extend(c.strip(" \t").lower() for c in value.split(","))
            elif name == "host":
                hosts += 1
            elif name == "connection":
                connection += "," + value.lower()
            elif name == "content-type":
                content_types += 1
            else:
                expect = value.lower()

        if hosts > 1:
            raise HTTPError(400, "repeated Host header")
        if content_types > 1:
            raise HTTPError(400, "repeated Content-Type")
        if hosts == 0 and version == "HTTP/1.1" and self.limits.require_host:
            raise HTTPError(400, "missing Host header")
        chunked = False
        if transfer_codings:
            chunked = self._check_transfer_codings(transfer_codings, content_length, version)
            content_length = None
        elif content_length is not None and content_length > self.limits.max_body_size:
            raise HTTPError(413, "request body too large")
        path, query = _split_target(method, target)

        tokens = {t.strip(" \t") for t in connection.split(",")} if connection else ()
        if version == "HTTP/1.1":
            keep_alive = "close" not in tokens
        else:
            keep_alive = "keep-alive" in tokens and "close" not in tokens
        if chunked:
            self._state = _CHUNK_SIZE
        elif content_length:
            self._state = _BODY_LENGTH
            self._remaining = content_length
        else:
            self._state = _END_PENDING
        return Request(method, target, path, query, version, headers, keep_alive,
                       chunked, content_length, expect == "100-continue" and version == "HTTP/1.1")

    @staticmethod
    def _check_transfer_codings(codings: list[str], content_length: int | None,
                                version: str) -> bool:
        if content_length is not None:
            raise HTTPError(400, "both Content-Length and Transfer-Encoding")
        if version != "HTTP/1.1":
            raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if codings[-1] != "chunked":
            raise HTTPError(400, "Transfer-Encoding does not end in chunked")
        if codings.count("chunked") > 1:
            raise HTTPError(400, "chunked applied more than once")
        for coding in codings:
            if coding not in _KNOWN_CODINGS:
                if not coding or not re.fullmatch(_TOKEN.decode(), coding):
                    raise HTTPError(400, "malformed Transfer-Encoding")
                raise HTTPError(501, f"unsupported transfer coding {coding!r}")
        return True

    def _parse_fields(self, block: bytes, max_fields: int) -> list[tuple[str, str]]:
        """Validate and split a field section (headers or trailers)."""
        if not block:
            return []
        if _FIELD_LINES.fullmatch(block) is None:
            _reject_field_block(block)
        lines = block.decode("latin-1").split("\r\n")
        lines.pop()
        if len(lines) > max_fields:
            raise HTTPError(431, "too many header fields")
        max_field = self.limits.max_field_size
        fields = []
        append = fields.append
        for line in lines:
            if len(line) > max_field:
                raise HTTPError(431, "header field too large")
            name, _, value = line.partition(":")
            append((name.lower(), value.strip(" \t")))
        return fields

    # -- the request body ------------------------------------------------------

    def _read_body_bytes(self):
        buf = self._buf
        if not buf:
            if self._eof:
                raise HTTPError(400, "connection closed in the middle of the body")
            return NEED_DATA
        remaining = self._remaining
        if len(buf) <= remaining:
            data = buf
            self._buf = b""
        else:
            data = buf[:remaining]
            self._buf = buf[remaining:]
        remaining -= len(data)
        self._remaining = remaining
        if remaining == 0:
            self._state = _END_PENDING if self._state == _BODY_LENGTH else _CHUNK_CRLF
        return data

    def _parse_chunk_size(self):
        buf = self._buf
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) > self.limits.max_chunk_line:
                raise HTTPError(400, "chunk size line too long")
            if self._eof:
                raise HTTPError(400, "connection closed in a chunked body")
            return NEED_DATA
        if end > self.limits.max_chunk_line:
            raise HTTPError(400, "chunk size line too long")
        match = _CHUNK_LINE.fullmatch(buf, 0, end)
        if match is None or len(match.group(1)) > 16:
            raise HTTPError(400, "invalid chunk size line")
        size = int(match.group(1), 16)
        self._buf = buf[end + 2:]
        self._body_size += size
        if self._body_size > self.limits.max_body_size:
            raise HTTPError(413, "request body too large")
        if size == 0:
            self._state = _TRAILERS
            return self._parse_trailers()
        self._remaining = size
        self._state = _CHUNK_DATA
        return self._read_body_bytes()

    def _parse_chunk_crlf(self):
        buf = self._buf
        if len(buf) < 2:
            if buf not in (b"", b"\r"):
                raise HTTPError(400, "chunk data not followed by CRLF")
            if self._eof:
                raise HTTPError(400, "connection closed in a chunked body")
            return NEED_DATA
        if buf[:2] != b"\r\n":
            raise HTTPError(400, "chunk data not followed by CRLF")
        self._buf = buf[2:]
        self._state = _CHUNK_SIZE
        return self._parse_chunk_size()

    def _parse_trailers(self):
        buf = self._buf
        if buf[:2] == b"\r\n":
            self._buf = buf[2:]
            self._state = _DONE
            return END
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.limits.max_trailer_size:
                raise HTTPError(431, "trailer section too large")
            if self._eof or (len(buf) >= 2 and buf[:1] == b"\r" and buf[1:2] != b"\n"):
                raise HTTPError(400, "malformed chunked body end")
            return NEED_DATA
        if end + 4 > self.limits.max_trailer_size:
            raise HTTPError(431, "trailer section too large")
        trailers = self._parse_fields(buf[:end + 2], self.limits.max_header_fields)
        for name, _ in trailers:
            if name in _FORBIDDEN_TRAILERS:
                raise HTTPError(400, f"{name} is not allowed in a trailer")
        self.trailers = trailers
        self._buf = buf[end + 4:]
        self._state = _DONE
        return END

    # -- the response ----------------------------------------------------------

    def send_continue(self) -> bytes:
        """`100 Continue` once, if the client is waiting for it; else b""."""
        request = self.request
        if (request is not None and request.expect_continue and not self._continue_sent
                and self._state in (_BODY_LENGTH, _CHUNK_SIZE) and not self._buf):
            self._continue_sent = True
            return continue_response()
        return b""

    def respond(self, status: str, headers: list[tuple[str, str]],
                keep_alive: bool = True) -> tuple[bytes, ResponseWriter]:
        """Serialise the response head for the current request.

        Pass `keep_alive=False` to end the connection after this response
        (the server is shutting down, or the engine cannot drain the body).
        """
        request = self.request
        return build_head(
            request.version, status, headers,
            head_request=request.method == "HEAD",
            keep_alive=keep_alive and request.keep_alive,
            server=self.server,
        )

    @property
    def body_unread(self) -> bool:
        """True while part of the current request body has not been parsed."""
        return _BODY_LENGTH <= self._state < _END_PENDING

    @property
    def continue_pending(self) -> bool:
        """The client waits for 100 Continue that was never sent: its body
        will not come, so the connection cannot be reused."""
        request = self.request
        return request is not None and request.expect_continue and not self._continue_sent

    def start_next_cycle(self) -> bool:
        """After a complete response: get ready for the next request.

        Returns False (and the connection must close) if the request was not
        read to its end.
        """
        if self._state != _DONE and self._state != _END_PENDING:
            self._state = _CLOSED
            return False
        self._state = _IDLE
        self.request = None
        return True

    def close(self) -> None:
        self._state = _CLOSED


def _split_target(method: str, target: str) -> tuple[str, str]:
    """(path, query) from origin-, absolute-, authority- or asterisk-form."""
    if target[0] == "/":
        path, _, query = target.partition("?")
        return path, query
    if method == "CONNECT":
        return "", ""
    if target == "*":
        if method != "OPTIONS":
            raise HTTPError(400, "asterisk target outside OPTIONS")
        return "*", ""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or rest[0] in "/?":
        raise HTTPError(400, "invalid request target")
    slash = len(rest)
    for mark in "/?":
        at = rest.find(mark)
        if 0 <= at < slash:
            slash = at
    remainder = rest[slash:]
    path, _, query = remainder.partition("?")
    return path or "/", query


def _reject_request_line(line: bytes) -> None:
    """Explain why a request line failed the fast regex (error path only)."""
    parts = line.split(b" ")
    if len(parts) != 3 or not all(parts):
        raise HTTPError(400, "malformed request line")
    method, target, version = parts
    if not re.fullmatch(_TOKEN, method):
        raise HTTPError(400, "invalid method")
    if method.upper() != method:
        raise HTTPError(400, "method must be upper case")
    if re.fullmatch(rb"HTTP/[0-9]\.[0-9]", version):
        raise HTTPError(400, "invalid request target")
    if re.fullmatch(rb"HTTP/[0-9]+(\.[0-9]+)?", version):
        raise HTTPError(505, "HTTP version not supported")
    raise HTTPError(400, "invalid HTTP version")


def _reject_field_block(block: bytes) -> None:
    """Explain which field line failed the fast regex (error path only)."""
    for line in block.split(b"\r\n")[:-1]:
        if _FIELD_LINES.fullmatch(line + b"\r\n"):
            continue
        if line[:1] in (b" ", b"\t"):
            raise HTTPError(400, "obsolete line folding is not accepted")
        name, colon, _ = line.partition(b":")
        if not colon:
            raise HTTPError(400, "header line without a colon")
        if name[-1:] in (b" ", b"\t"):
            raise HTTPError(400, "whitespace before colon")
        if not re.fullmatch(_TOKEN, name):
            raise HTTPError(400, "invalid character in header name")
        raise HTTPError(400, "invalid character in header value")
    raise HTTPError(400, "bare CR or LF in the header section")
