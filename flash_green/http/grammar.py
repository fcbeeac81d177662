"""The grammar the parser checks requests against (RFC 9110, RFC 9112).

Compiled patterns and tables, and the few pure functions over them: what a
token, a method, a target, a field line, a chunk-size line, a transfer
coding and a Host value may hold. `connection.py` is the state machine that
applies them; `explain.py` says, on the error path only, which rule a
refused request broke. Nothing here keeps state.
"""

from __future__ import annotations

import re

TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
TOKEN_TEXT = re.compile(TOKEN.decode("ascii"))
EMPTY_LINES = re.compile(rb"(?:\r\n)*")
#: Every byte a head may hold except CR and LF: all but the controls (HTAB is
#: allowed in values). `head.translate(None, NOT_CONTROL)` keeps only the
#: controls, which in a valid head are exactly the CR LF pairs ending its lines.
NOT_CONTROL = bytes(b for b in range(256) if b == 0x09 or 0x20 <= b < 0x7f or b > 0x7f)
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: What a request target may not hold: controls, SP, and octets >= 0x80 (the
#: target is URI syntax, RFC 9112 s.3.2: non-ASCII must be percent-encoded).
NOT_TARGET = re.compile(r"[\x00-\x20\x7f-\xff]")
#: Methods are tokens; like gunicorn we refuse lower case (a typo, or a probe).
METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Z]+")
COMMON_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"))
VERSIONS = {"HTTP/1.1": "HTTP/1.1", "HTTP/1.0": "HTTP/1.0"}
QUOTED = rb'"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"'
CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]+)((?:[ \t]*;[ \t]*" + TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:" + TOKEN + rb"|" + QUOTED + rb"))?)*)"
)

#: One transfer coding as RFC 9112 s.7 writes it: a token, then parameters.
TRANSFER_CODING = re.compile((
    rb"%s(?:[ \t]*;[ \t]*%s[ \t]*=[ \t]*(?:%s|%s))*" % (TOKEN, TOKEN, TOKEN, QUOTED)
).decode("latin-1"))
#: uri-host [ ":" port ] (RFC 9112 s.3.2, RFC 3986 s.3.2.2): an IP literal or a
#: reg-name (unreserved, sub-delims, pct-encoded), then an optional port. One
#: character class, not an alternation per character (five times faster);
#: a `%` gets its two hex digits checked apart.
HOST = re.compile(r"(?:\[[0-9A-Za-z\-._~!$&'()*+,;=:]+\]|[0-9A-Za-z\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
FRAMING_FIELDS = frozenset(
    ("content-length", "transfer-encoding", "host", "connection", "expect", "content-type")
)
#: Fields that must not arrive late in a trailer (RFC 9110 s.6.5.1): framing,
#: routing and authentication are decided by the head.
FORBIDDEN_TRAILERS = frozenset(
    ("content-length", "transfer-encoding", "host", "content-type", "content-encoding",
     "content-range", "trailer", "authorization", "expect", "connection", "te")
)



def valid_host(host: str) -> bool:
    return HOST.fullmatch(host) is not None and ("%" not in host or not BAD_PERCENT.search(host))


def line_length(buf: bytes) -> int:
    """The length of the first line in `buf`, CRLF not counted, whether or
    not it has ended: a CR that came without its LF yet is not counted, so a
    line at its limit passes however the bytes were split."""
    end = buf.find(b"\r\n")
    if end >= 0:
        return end
    return len(buf) - 1 if buf[-1:] == b"\r" else len(buf)


def split_lines(section: bytes) -> list[str]:
    """A section ending in CRLF CRLF as text lines, without the blank line."""
    lines = section.decode("latin-1").split("\r\n")
    del lines[-2:]
    return lines
