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

Discussion: speed. Every engine pays this parser on every request, so its
common case is one dictionary lookup: a client that repeats its whole head
byte for byte (wrk, health checks, API clients on keep-alive) gets the
Request parsed the first time, shared and read-only (`_HEADS`), after the
limits of this connection are checked against it. Otherwise the head is
decoded and split into lines once; the request line is two `partition`s
and dictionary lookups; each field line is looked up in a bounded cache of
lines already parsed and checked, because clients repeat the same lines on
every request. Only a new line costs more: the head's control characters
are then checked in one `bytes.translate`, and the line is partitioned, its
name checked and lower-cased, its value trimmed. Regular expressions only
explain errors or handle rare forms. `comparisons/bench_parser.py` measures
it against h11 and httptools, with the caches warm and cold.

Where the rest lives: the patterns and tables of RFC 9110/9112 are in
`grammar.py`, the error explanations (run only once a head is refused) in
`explain.py`, the limits in `limits.py`, the response side in `response.py`.
This module is the state machine.

Discussion: safety. Framing values are checked as plain ASCII digits
(Python's `int` would accept `+5`, `0_5` and ` 5 `), and only SP and HTAB
are ever stripped (`bytes.strip()` would also eat VT and FF). Any split of
the same bytes gives the same events (tests/test_http_properties.py). Where
RFC 9112 lets a server choose (bare LF, obs-fold, Content-Length with
Transfer-Encoding...), the core refuses what a front end could read another
way: a refused request is never a smuggled one. docs/http-differences.md lists
where h11 chooses otherwise, and why; tests/corpus/ holds the cases by section.
"""

from __future__ import annotations

from .errors import HTTPError
from .explain import reject_controls, reject_field_line, reject_request_line
from .grammar import (
    CHUNK_LINE,
    COMMON_METHODS,
    EMPTY_LINES,
    FORBIDDEN_TRAILERS,
    FRAMING_FIELDS,
    METHOD,
    NOT_CONTROL,
    TOKEN_TEXT,
    TRANSFER_CODING,
    VERSIONS,
    line_length,
    split_lines,
    valid_host,
)
from .limits import Limits
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

#: Field lines already parsed, by their text -> (lower-case name, trimmed
#: value). Clients repeat most lines on every request (Host, User-Agent,
#: Accept...), so one dict lookup replaces a partition, a name check, a
#: lower() and a strip(). Bounded: only short lines are kept, and the dict is
#: emptied once it holds more than _FIELD_LINES_MAX (checked per request, so
#: it may pass that by one request's fields), keeping what recent traffic sent.
_FIELD_LINES: dict[str, tuple[str, str]] = {}
_FIELD_LINES_MAX = 1024
_FIELD_LINE_CACHEABLE = 200
#: Whole request heads already parsed and checked, by their exact bytes ->
#: (the shared Request, its longest field line, its number of field lines).
#: A client repeats its head byte for byte (wrk, health checks, API clients
#: on keep-alive), and one dict lookup then replaces the split, the request
#: line, the field loop and the framing checks. Only heads whose Request is
#: the same whatever the limits are kept: no body (so no body state, no
#: max_body_size), an origin-form target (no authority to rewrite Host
#: with), a Host field or HTTP/1.0 (so require_host cannot matter), at most
#: _HEAD_CACHEABLE bytes. The limits the head touches are checked again on
#: every hit: the two line-length ones and the head size by the caller,
#: field size and count from the entry. Bounded like _FIELD_LINES.
#: What it bought: a 57-byte keep-alive GET, its END, PAUSED and the next
#: cycle went from 30,500 to 8,800 instructions (`python -m
#: comparisons.bench_parser --instructions`, stage "parse").
#: A head enters it the second time it is parsed (`_HEADS_SEEN` holds the
#: heads parsed once): a head never repeated (a new cookie value each time)
#: then costs a set entry, not a shared Request built and dropped.
_HEADS: dict[bytes, tuple[Request, int, int]] = {}
_HEADS_SEEN: set[bytes] = set()
_HEADS_MAX = 256
_HEAD_CACHEABLE = 1024
#: A field name as sent -> lower case, for names already checked to be tokens
#: (the lines not in _FIELD_LINES: a new Cookie value, a long line). Bounded;
#: a name seen once it is full is checked every time instead.
_FIELD_NAMES: dict[str, str] = {}
_FIELD_NAMES_MAX = 2048
# Parser states (small ints: compared on every call).
_IDLE, _BODY_LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _END_PENDING, _DONE, _CLOSED = range(9)


class Request:
    """A validated request head. Field names are lower-cased, values trimmed.

    Read-only for everyone: a `shared` Request comes from the head cache
    (_HEADS) and is the same object for every connection that sends the
    same head bytes, its fields a `SharedFields`; what a consumer changed
    would reach them all. (The consumers: the WSGI environ, which copies,
    the engines and `Exchange`, which read `method`, `has_body` and
    `expect_continue`; the proxy module, the tracer and the access log
    see only the environ.)
    """

    __slots__ = ("method", "target", "path", "query", "version", "headers",
                 "keep_alive", "chunked", "content_length", "has_body", "expect_continue", "shared")

    def __init__(self, method: str, target: str, path: str, query: str, version: str,
                 headers: list[tuple[str, str]], keep_alive: bool, chunked: bool,
                 content_length: int | None, expect_continue: bool, shared: bool = False) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.chunked = chunked
        self.content_length = content_length
        #: Set once: every engine asks per request, and as a property it was
        #: a call (callgrind per hello request: tasklets 49,789 -> 49,469).
        self.has_body = chunked or bool(content_length)
        self.expect_continue = expect_continue
        #: From the head cache: the same object for every identical head.
        self.shared = shared

    def header(self, name: str) -> str | None:
        """The first value of `name` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} {self.version}>"


class SharedFields(list):
    """The field lines of a shared Request: a list that refuses to change.

    Equal to the same pairs in a plain list and read at the same speed;
    any edit raises instead of reaching every connection that sent the head.
    """

    __slots__ = ()

    def _read_only(self, *args, **kwargs):
        raise TypeError("the fields of a shared Request are read-only")

    append = extend = insert = remove = pop = clear = sort = reverse = _read_only
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only


#: Shared by every request without trailers (most of them): no list each.
_NO_TRAILERS: tuple = ()


class ServerConnection:
    """One connection's protocol state (see the module docstring)."""

    # Slots: a server holds one of these per open connection, idle ones too.
    __slots__ = ("limits", "server", "request", "trailers", "_buf", "_scan", "_eof", "_state",
                 "_remaining", "_body_size", "_continue_sent")

    def __init__(self, limits: Limits | None = None, server: str = "flash") -> None:
        self.limits = limits or Limits()
        self.server = server
        self.request: Request | None = None
        self.trailers: list[tuple[str, str]] | tuple = _NO_TRAILERS
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
            buf = self._buf = buf[EMPTY_LINES.match(buf).end():]
            self._scan = 0
        if not buf:
            if self._eof:
                self._state = _CLOSED
                return CLOSED
            return NEED_DATA
        limits = self.limits
        size = len(buf)
        if buf[-4:] == b"\r\n\r\n" and size <= limits.max_request_line and size <= limits.max_header_size:
            # The common case: the buffer is one head, too short to break a
            # head limit. Splitting it shows whether its blank line is the
            # first one, which saves searching for it.
            known = _HEADS.get(buf)
            if known is not None and known[1] <= limits.max_field_size and known[2] <= limits.max_header_fields:
                self._buf = b""
                self._scan = 0
                self._state = _END_PENDING
                return self._start(known[0])
            lines = split_lines(buf)
            if all(lines):
                self._buf = b""
                self._scan = 0
                return self._start(self._build_request(buf, lines))
        end = buf.find(b"\r\n\r\n", self._scan)
        if end < 0:
            self._check_incomplete_head(buf)
            return NEED_DATA
        if buf.find(b"\r\n") > limits.max_request_line:
            raise HTTPError(414, "request line too long")
        size = end + 4
        if size > limits.max_header_size:
            raise HTTPError(431, "header section too large")
        head = buf[:size]
        self._buf = buf[size:]
        self._scan = 0
        known = _HEADS.get(head)
        if known is not None and known[1] <= limits.max_field_size and known[2] <= limits.max_header_fields:
            self._state = _END_PENDING
            return self._start(known[0])
        return self._start(self._build_request(head, split_lines(head)))

    def _check_incomplete_head(self, buf: bytes) -> None:
        limits = self.limits
        if line_length(buf) > limits.max_request_line:
            raise HTTPError(414, "request line too long")
        if len(buf) > limits.max_header_size:
            raise HTTPError(431, "header section too large")
        if self._eof:
            raise HTTPError(400, "connection closed before the request head was complete")
        self._scan = max(0, len(buf) - 3)

    def _start(self, request: Request) -> Request:
        """`request` becomes the current one (its body, if any, comes next:
        `_build_request` or the caller has set the state for it)."""
        self.request = request
        self._body_size = 0
        self._continue_sent = False
        if self.trailers:
            self.trailers = _NO_TRAILERS
        return request

    def _build_request(self, head: bytes, lines: list[str]) -> Request:
        method, target, version = _parse_request_line(lines[0])
        headers = self._parse_fields(head, lines, 1)
        limits = self.limits

        content_length = None
        transfer_codings: list[str] = []
        hosts = 0
        content_types = 0
        connection = ""
        expect = ""
        for name, value in headers:
            if name not in FRAMING_FIELDS:
                continue
            if name == "host":
                hosts += 1
            elif name == "connection":
                connection = connection + "," + value if connection else value
            elif name == "content-length":
                if content_length is not None:
                    raise HTTPError(400, "repeated Content-Length")
                if not (value.isascii() and value.isdigit()):
                    raise HTTPError(400, "Content-Length is not a plain number")
                # int() refuses over 4300 digits (ValueError, not HTTPError):
                # any length of 20 digits or more is past every body limit.
                digits = value.lstrip("0")
                content_length = int(digits or "0") if len(digits) < 20 else 1 << 64
            elif name == "transfer-encoding":
                transfer_codings.extend(c.strip(" \t").lower() for c in value.split(","))
            elif name == "content-type":
                content_types += 1
            else:
                expect = value.lower()

        if hosts != 1:
            if hosts > 1:
                raise HTTPError(400, "repeated Host header")
            if version == "HTTP/1.1" and limits.require_host:
                raise HTTPError(400, "missing Host header")
        if content_types > 1:
            raise HTTPError(400, "repeated Content-Type")
        chunked = False
        if transfer_codings:
            chunked = self._check_transfer_codings(transfer_codings, content_length, version)
            content_length = None
            self._state = _CHUNK_SIZE
        elif content_length:
            if content_length > limits.max_body_size:
                raise HTTPError(413, "request body too large")
            self._state = _BODY_LENGTH
            self._remaining = content_length
        else:
            self._state = _END_PENDING
        keep_alive = _keep_alive(version, connection)
        expect_continue = expect == "100-continue" and version == "HTTP/1.1"
        if target[0] != "/":
            path, query, authority = _split_target(method, target)
            if authority is not None:
                _use_authority_as_host(headers, authority)
            return Request(method, target, path, query, version, headers, keep_alive,
                           chunked, content_length, expect_continue)
        path, _, query = target.partition("?")
        if self._state == _END_PENDING and len(head) <= _HEAD_CACHEABLE and (hosts or version == "HTTP/1.0"):
            if head in _HEADS_SEEN:
                request = Request(method, target, path, query, version, SharedFields(headers), keep_alive,
                                  chunked, content_length, expect_continue, True)
                _share(head, lines, request)
                return request
            if len(_HEADS_SEEN) >= _HEADS_MAX:
                _HEADS_SEEN.clear()
            _HEADS_SEEN.add(head)
        return Request(method, target, path, query, version, headers, keep_alive,
                       chunked, content_length, expect_continue)

    @staticmethod
    def _check_transfer_codings(codings: list[str], content_length: int | None,
                                version: str) -> bool:
        """Only a single `chunked` is decoded; why each refusal has its status:

        * 400 when the body's length cannot be known: chunked is not last
          (RFC 9112 s.6.3 item 4 says 400 and close), chunked is applied twice
          (s.6.1: a sender MUST NOT), or a coding is not even syntax (s.7);
        * 501 when the list is well formed and ends in one chunked, but holds
          a coding we do not decode (s.6.1: SHOULD 501). gzip or deflate are
          not passed through coded: the app would read the wrong bytes, and a
          front end that ignores the first line (`identity`) would frame the
          body differently (a TE.TE desync).
        """
        if content_length is not None:
            raise HTTPError(400, "both Content-Length and Transfer-Encoding")
        if version != "HTTP/1.1":
            raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if len(codings) == 1 and codings[0] == "chunked":
            return True
        names = []
        for coding in codings:
            if not TRANSFER_CODING.fullmatch(coding):
                raise HTTPError(400, "malformed Transfer-Encoding")
            names.append(coding.partition(";")[0].rstrip(" \t"))
        if names[-1] != "chunked":
            raise HTTPError(400, "Transfer-Encoding does not end in chunked")
        if names.count("chunked") > 1:
            raise HTTPError(400, "chunked applied more than once")
        unsupported = next(coding for coding in codings if coding != "chunked")
        raise HTTPError(501, f"unsupported transfer coding {unsupported!r}")

    def _parse_fields(self, section: bytes, lines: list[str], first: int) -> list[tuple[str, str]]:
        """`lines[first:]` of `section` as (lower-case name, trimmed value).

        A line found in _FIELD_LINES was checked when it entered it (a Host
        line's value too, RFC 9112 s.3.2); the first line that was not makes
        the whole section's control characters checked, before anything of it
        is parsed or remembered.
        """
        limits = self.limits
        if len(lines) - first > limits.max_header_fields:
            raise HTTPError(431, "too many header fields")
        max_field = limits.max_field_size
        if len(section) > max_field and max(map(len, lines[first:]), default=0) > max_field:
            raise HTTPError(431, "header field too large")
        cache = _FIELD_LINES
        if len(cache) > _FIELD_LINES_MAX:
            cache.clear()
        parsed = cache.get
        known = _FIELD_NAMES.get
        checked = False
        fields = []
        append = fields.append
        for line in lines[first:]:
            field = parsed(line)
            if field is None:
                if not checked:
                    _check_controls(section, lines, first)
                    checked = True
                name, colon, value = line.partition(":")
                lower = known(name)
                if lower is None or not colon:
                    lower = _field_name(line, name, colon)
                field = (lower, value.strip(" \t"))
                if lower == "host":
                    _check_host(field[1])
                if len(line) <= _FIELD_LINE_CACHEABLE:
                    cache[line] = field
            append(field)
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
            if line_length(buf) > self.limits.max_chunk_line:
                raise HTTPError(400, "chunk size line too long")
            if self._eof:
                raise HTTPError(400, "connection closed in a chunked body")
            return NEED_DATA
        if end > self.limits.max_chunk_line:
            raise HTTPError(400, "chunk size line too long")
        match = CHUNK_LINE.fullmatch(buf, 0, end)
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
        section = buf[:end + 4]
        trailers = self._parse_fields(section, split_lines(section), 0)
        for name, _ in trailers:
            if name in FORBIDDEN_TRAILERS:
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
                keep_alive: bool = True, body_length: int | None = None) -> tuple[bytes, ResponseWriter]:
        """Serialise the response head for the current request.

        Pass `keep_alive=False` to end the connection after this response
        (the server is shutting down, or the engine cannot drain the body),
        and `body_length` when the whole body is at hand: it is sent as the
        Content-Length unless the app gave one.
        """
        request = self.request
        # By position: keywords cost a tenth of a cached head's build.
        return build_head(request.version, status, headers, request.method == "HEAD",
                          keep_alive and request.keep_alive, self.server, body_length)

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


def _share(head: bytes, lines: list[str], request: Request) -> None:
    """Keep `request` in _HEADS for the next `head` like it, with what the
    limits of the connection that sends it are checked against."""
    if len(_HEADS) >= _HEADS_MAX:
        _HEADS.clear()
    _HEADS[head] = (request, max(map(len, lines[1:]), default=0), len(lines) - 1)


def _keep_alive(version: str, connection: str) -> bool:
    """May the connection carry another request (RFC 9112 s.9.3)?"""
    if not connection:
        return version == "HTTP/1.1"
    lowered = connection.lower()
    if lowered == "keep-alive":
        return True
    tokens = {token.strip(" \t") for token in lowered.split(",")}
    if "close" in tokens:
        return False
    return version == "HTTP/1.1" or "keep-alive" in tokens


def _split_target(method: str, target: str) -> tuple[str, str, str | None]:
    """(path, query, authority) from absolute-, authority- or asterisk-form.

    The authority is that of an absolute-form target, the one the Host field
    must then give way to (RFC 9112 s.3.2.2); None for the other forms.
    """
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        if not (host and port.isdigit() and valid_host(target)):
            raise HTTPError(400, "CONNECT needs a host:port target")
        return "", "", None
    if target == "*":
        if method != "OPTIONS":
            raise HTTPError(400, "asterisk target outside OPTIONS")
        return "*", "", None
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or rest[0] in "/?":
        raise HTTPError(400, "invalid request target")
    end = len(rest)
    for mark in "/?":
        at = rest.find(mark)
        if 0 <= at < end:
            end = at
    authority = rest[:end]
    if "@" in authority:
        # RFC 9110 s.4.2.4: userinfo in an http(s) URI is to be treated as an
        # error (it hides the real authority from a reader, a phishing trick).
        raise HTTPError(400, "userinfo in the request target")
    if not valid_host(authority) or authority[0] == ":":
        raise HTTPError(400, "invalid authority in the request target")
    path, _, query = rest[end:].partition("?")
    return path or "/", query, authority


def _use_authority_as_host(headers: list[tuple[str, str]], authority: str) -> None:
    """The Host field of an absolute-form request becomes the target's
    authority (RFC 9112 s.3.2.2: the server MUST ignore the received Host),
    so that every reader of the fields (HTTP_HOST, the app) sees one host."""
    for index, (name, _) in enumerate(headers):
        if name == "host":
            headers[index] = ("host", authority)
            return
    headers.append(("host", authority))




def _check_host(host: str) -> None:
    """RFC 9112 s.3.2: a Host field with an invalid value MUST get a 400."""
    if not valid_host(host):
        raise HTTPError(400, "invalid Host header")






def _check_controls(section: bytes, lines: list[str], fields_from: int) -> None:
    """Refuse any control character but the CR LF pairs that end the lines
    (lines before `fields_from` are request lines, for the error message)."""
    if len(section.translate(None, NOT_CONTROL)) != 2 * len(lines) + 2:
        reject_controls(lines, fields_from)


def _parse_request_line(line: str) -> tuple[str, str, str]:
    """(method, target, version), each checked here: no control character
    gets past the method's token check, the version's lookup or the target's
    (printable ASCII without `#`: a fragment is not part of any request-target
    form, RFC 9112 s.3.2, and clients never send one)."""
    method, _, rest = line.partition(" ")
    target, _, version = rest.partition(" ")
    version = VERSIONS.get(version) or _other_version(line, version)
    if ((method not in COMMON_METHODS and not METHOD.fullmatch(method)) or not target
            or not (target.isascii() and target.isprintable()) or "#" in target):
        reject_request_line(line)
    return method, target, version


def _other_version(line: str, version: str) -> str:
    """HTTP/1.2 .. 1.9 are served as 1.1 (RFC 9110 s.2.5); the rest is refused:
    505 for another well-formed `HTTP/DIGIT.DIGIT`, 400 for a malformed one
    (RFC 9112 s.2.3: one digit each side, so `HTTP/1.10` is not a version)."""
    if len(version) == 8 and version[:7] == "HTTP/1." and version[7] in "23456789":
        return "HTTP/1.1"
    reject_request_line(line)


def _field_name(line: str, name: str, colon: str) -> str:
    """Check a field name not seen before (or a line without a colon)."""
    if not colon or not TOKEN_TEXT.fullmatch(name):
        reject_field_line(line)
    lower = name.lower()
    if len(_FIELD_NAMES) < _FIELD_NAMES_MAX:
        _FIELD_NAMES[name] = lower
    return lower





