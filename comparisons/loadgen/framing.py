"""Response framing: find where each HTTP/1.1 response ends in a byte stream, without copying bodies.

The generator counts responses; it never looks inside them. ``parse_head``
reads a response head for its status and body framing (RFC 9112 section
6.3), and ``ResponseParser`` is the incremental framer every connection
slot carries: feed it what ``recv_into`` returned, it counts the responses
that completed and keeps only a partial head or chunk-size line. After the
first response on a connection, a head byte-for-byte equal to the previous
one (the common case for a fixed reply) is framed with one ``startswith``
call and no parsing at all.
"""

from __future__ import annotations

#: Longest a response head or chunk-size line may be before we call it garbage.
_MAX_HEAD = 64 * 1024
_MAX_CHUNK_LINE = 4 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not an HTTP/1.1 response we can frame."""


# Body framing of a parsed head: a length >= 0, or one of these.
_CHUNKED = -1
_UNTIL_CLOSE = -2

# Parser phases.
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _AT_EOF = range(6)


def parse_head(head: bytes, head_request: bool = False) -> tuple[int, int, bool]:
    """Frame a response from its head: ``(status, body_length, close)``.

    ``body_length`` is a byte count, ``_CHUNKED`` or ``_UNTIL_CLOSE``
    (RFC 9112 section 6.3: HEAD, 1xx, 204 and 304 have no body; then
    chunked; then Content-Length; otherwise the body runs to EOF).
    ``close`` says the server will close after this response.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise ProtocolError(f"bad status code {parts[1]!r}") from None
    if not 100 <= status <= 999:
        raise ProtocolError(f"bad status code {status}")
    length: int | None = None
    chunked = False
    close = parts[0] == b"HTTP/1.0"  # 1.0 closes unless it says keep-alive
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise ProtocolError(f"bad Content-Length {value!r}") from None
        elif name == b"transfer-encoding":
            chunked = value.split(b",")[-1].strip() == b"chunked"
        elif name == b"connection":
            tokens = {token.strip() for token in value.split(b",")}
            if b"close" in tokens:
                close = True
            elif b"keep-alive" in tokens:
                close = False
    if head_request or status < 200 or status in (204, 304):
        return status, 0, close
    if chunked:
        return status, _CHUNKED, close
    if length is not None:
        return status, length, close
    return status, _UNTIL_CLOSE, True


class ResponseParser:
    """Incremental response framer: feed it bytes, it counts complete responses.

    It keeps only what it must: a partial head or chunk-size line (in
    ``pending``, which the caller prepends to the next read) and how many
    body bytes remain to skip. Bodies are never copied, so a 1 GB download
    costs no memory.
    """

    __slots__ = ("head_request", "phase", "remaining", "pending", "status", "closing", "last_head", "last_info")

    def __init__(self, head_request: bool = False) -> None:
        self.head_request = head_request
        # The previous head and its framing: identical heads skip parsing.
        self.last_head = b""
        self.last_info: tuple[int, int, bool] = (0, 0, False)
        self.reset()

    def reset(self) -> None:
        """Forget any partial response (a new connection starts clean)."""
        self.phase = _HEAD
        self.remaining = 0
        self.pending = b""
        self.status = 0
        self.closing = False

    def feed(self, data: bytes | bytearray, end: int, statuses: list[int]) -> int:
        """Consume ``data[:end]``; return how many responses completed in it.

        Each completed response adds one to ``statuses[code]``. If the data
        stops inside a head or a chunk-size line, the partial bytes are kept
        in ``pending`` and the caller must pass ``pending + next_read`` next
        time. Raises ``ProtocolError`` on garbage.
        """
        pos = 0
        done = 0
        while pos < end:
            phase = self.phase
            if phase == _HEAD:
                last = self.last_head
                if last and data.startswith(last, pos, end):
                    pos += len(last)
                    status, length, close = self.last_info
                else:
                    i = data.find(b"\r\n\r\n", pos, end)
                    if i < 0:
                        if end - pos > _MAX_HEAD:
                            raise ProtocolError("response head too large")
                        self.pending = bytes(data[pos:end])
                        return done
                    head = bytes(data[pos : i + 4])
                    status, length, close = info = parse_head(head, self.head_request)
                    self.last_head = head
                    self.last_info = info
                    pos = i + 4
                if status < 200 and status != 101:
                    continue  # interim response (100 Continue): the real one follows
                if close:
                    self.closing = True
                if length > 0:
                    avail = end - pos
                    if avail >= length:
                        pos += length
                    else:
                        self.status = status
                        self.remaining = length - avail
                        self.phase = _BODY
                        return done
                elif length == _CHUNKED:
                    self.status = status
                    self.phase = _CHUNK_SIZE
                    continue
                elif length == _UNTIL_CLOSE:
                    self.status = status
                    self.phase = _AT_EOF
                    return done
                statuses[status] += 1
                done += 1
            elif phase == _BODY or phase == _CHUNK_DATA:
                avail = end - pos
                if avail < self.remaining:
                    self.remaining -= avail
                    return done
                pos += self.remaining
                self.remaining = 0
                if phase == _CHUNK_DATA:
                    self.phase = _CHUNK_SIZE
                else:
                    self.phase = _HEAD
                    statuses[self.status] += 1
                    done += 1
            elif phase == _CHUNK_SIZE:
                i = data.find(b"\r\n", pos, end)
                if i < 0:
                    if end - pos > _MAX_CHUNK_LINE:
                        raise ProtocolError("chunk-size line too long")
                    self.pending = bytes(data[pos:end])
                    return done
                size_field = bytes(data[pos:i]).split(b";", 1)[0].strip()
                try:
                    size = int(size_field, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size_field[:20]!r}") from None
                if size < 0:
                    raise ProtocolError("negative chunk size")
                pos = i + 2
                if size:
                    # The chunk data and its CRLF are skipped in one go.
                    self.remaining = size + 2
                    self.phase = _CHUNK_DATA
                else:
                    self.phase = _TRAILER
            elif phase == _TRAILER:
                i = data.find(b"\r\n", pos, end)
                if i < 0:
                    if end - pos > _MAX_HEAD:
                        raise ProtocolError("trailer too large")
                    self.pending = bytes(data[pos:end])
                    return done
                if i == pos:  # the empty line ends the chunked message
                    self.phase = _HEAD
                    statuses[self.status] += 1
                    done += 1
                pos = i + 2
            else:  # _AT_EOF: the body is everything until the server closes
                return done
        return done

    def finish_at_eof(self, statuses: list[int]) -> bool:
        """Called when the peer closes: completes a close-delimited response, if one is open."""
        if self.phase != _AT_EOF:
            return False
        self.phase = _HEAD
        statuses[self.status] += 1
        return True

    @property
    def between_responses(self) -> bool:
        """True if no response is partly received (an EOF here is a clean close)."""
        return self.phase == _HEAD and not self.pending


def new_statuses() -> list[int]:
    """A fresh per-status-code counter (index = code), the list `ResponseParser.feed` adds to."""
    return [0] * 1000
