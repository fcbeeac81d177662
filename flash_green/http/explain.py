"""Why a request head was refused: the error path of the parser only.

The fast path (`connection.py`) learns only *that* a line is invalid, with
as few checks as it can; these functions run after that, once per refused
request, and find the exact rule it broke, so that the 400 carries a reason
a human can act on ("whitespace before colon", "method must be upper case").
"""

from __future__ import annotations

import re
from typing import NoReturn

from .errors import HTTPError
from .grammar import CONTROL, NOT_TARGET, TOKEN_TEXT


def reject_request_line(line: str) -> NoReturn:
    """Explain why a request line was refused (error path only)."""
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise HTTPError(400, "malformed request line")
    method, target, version = parts
    if not TOKEN_TEXT.fullmatch(method):
        raise HTTPError(400, "invalid method")
    if method.upper() != method:
        raise HTTPError(400, "method must be upper case")
    if NOT_TARGET.search(target):
        raise HTTPError(400, "invalid request target (controls and non-ASCII octets "
                             "must be percent-encoded)")
    if "#" in target:
        raise HTTPError(400, "fragment in the request target")
    if re.fullmatch(r"HTTP/[0-9]\.[0-9]", version):
        raise HTTPError(505, "HTTP version not supported")
    raise HTTPError(400, "invalid HTTP version")


def reject_field_line(line: str) -> NoReturn:
    """Explain why a field line was refused (error path only)."""
    if line[:1] in (" ", "\t"):
        raise HTTPError(400, "obsolete line folding is not accepted")
    name, colon, _ = line.partition(":")
    if not colon:
        raise HTTPError(400, "header line without a colon")
    if name[-1:] in (" ", "\t"):
        raise HTTPError(400, "whitespace before colon")
    raise HTTPError(400, "invalid character in header name")


def reject_controls(lines: list[str], fields_from: int) -> NoReturn:
    """Explain where a control character sits in a head (error path only)."""
    for index, line in enumerate(lines):
        if not CONTROL.search(line):
            continue
        if "\r" in line or "\n" in line:
            raise HTTPError(400, "bare CR or LF in the header section")
        if index < fields_from:
            raise HTTPError(400, "control character in the request line")
        name, colon, _ = line.partition(":")
        where = "value" if colon and not CONTROL.search(name) else "name"
        raise HTTPError(400, f"invalid character in header {where}")
    raise HTTPError(400, "invalid character in the request head")
