"""Sans-IO HTTP/1.1, server side: bytes in, events out; response in, bytes out.

No sockets, no threads, no engines: every engine drives this same core.
"""

from .connection import CLOSED, END, NEED_DATA, PAUSED, Request, ServerConnection
from .dates import http_date
from .errors import HTTPError, render_error, status_line_text
from .limits import Limits
from .response import ResponseError, ResponseWriter, build_head

__all__ = [
    "CLOSED",
    "END",
    "HTTPError",
    "Limits",
    "NEED_DATA",
    "PAUSED",
    "Request",
    "ResponseError",
    "ResponseWriter",
    "ServerConnection",
    "build_head",
    "http_date",
    "render_error",
    "status_line_text",
]
