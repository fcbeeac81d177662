"""The protocol core's one error type, and the bytes of an error response."""

from __future__ import annotations

from http import HTTPStatus

from .dates import http_date


class HTTPError(Exception):
    """The client broke the protocol (or a limit); answer `status` and close.

    Every problem the core detects in client input is raised as this one type,
    so an engine needs a single `except HTTPError` around its read path.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def status_line_text(status: int) -> str:
    """`404` -> `404 Not Found` (the standard phrase, or `Unknown`)."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def render_error(status: int, reason: str, server: str = "flash") -> bytes:
    """A complete, self-contained error response that closes the connection.

    The body is the short reason in plain text so that a human with curl sees
    what was wrong, e.g. `400 Bad Request: whitespace before colon`.
    """
    body = f"{status_line_text(status)}: {reason}\n".encode("latin-1", "replace")
    head = (
        f"HTTP/1.1 {status_line_text(status)}\r\n"
        f"Date: {http_date()}\r\n"
        f"Server: {server}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
