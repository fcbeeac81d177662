"""CGI (RFC 3875), both sides: meta-variables and responses, and a WSGI gateway.

A CGI program gets one request as its process environment (the
"meta-variables": REQUEST_METHOD, PATH_INFO, HTTP_* ...) plus the body on
stdin, and answers on stdout with header lines (`Status:`, `Content-Type`,
`Location`, others), a blank line and the body. This module holds that
format once:

* server side (the `cgi` engine): `meta_variables` turns the PEP 3333
  environ our core built from the parsed request into the child's
  environment, and `parse_response_head` reads what the child printed;
* program side: `python -m flash_green.cgi APP` is a CGI program that runs
  a WSGI app, like wsgiref's CGIHandler. It rebuilds a PEP 3333 environ from
  the meta-variables and runs the app through the same `Exchange` as every
  engine, with a "connection" that frames the response in CGI's format.

Security: the environment is built only from the parsed request. For a
script, a header becomes `HTTP_<NAME>` only if its name maps to [A-Z0-9_]
(names with `_` are already dropped by the WSGI adapter, so `X_A` cannot
pose as `X-A`), and Authorization is kept back (RFC 3875 s.4.1.18); our own
gateway gets every header the adapter passes, to give the app the environ it
would have in-process. A value can never become a variable name, and values
cannot hold NUL, CR or LF (the core refuses them). `Proxy:` is always
dropped (httpoxy: HTTP_PROXY would become the child's outgoing proxy): the
one header an app under `cgi` does not see. No shell is involved anywhere.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .http import ResponseError, ResponseWriter, status_line_text
from .loader import AppLoadError, load_app
from .wsgi import Exchange, InputStream, WSGIContext

log = logging.getLogger("flash.cgi")

GATEWAY_INTERFACE = "CGI/1.1"
#: Largest header section a CGI program may print (502 beyond).
MAX_RESPONSE_HEAD = 65536
_READ_SIZE = 65536

#: Meta-variables the server sets from the request (RFC 3875 s.4.1), plus
#: the customary REMOTE_PORT, REQUEST_URI, SCRIPT_FILENAME and HTTPS ("on"
#: for an https request, as a WSGI environ says with wsgi.url_scheme).
META_VARIABLES = frozenset((
    "AUTH_TYPE", "CONTENT_LENGTH", "CONTENT_TYPE", "GATEWAY_INTERFACE", "PATH_INFO",
    "PATH_TRANSLATED", "QUERY_STRING", "REMOTE_ADDR", "REMOTE_HOST", "REMOTE_IDENT",
    "REMOTE_USER", "REQUEST_METHOD", "SCRIPT_NAME", "SERVER_NAME", "SERVER_PORT",
    "SERVER_PROTOCOL", "SERVER_SOFTWARE", "REMOTE_PORT", "REQUEST_URI", "SCRIPT_FILENAME",
    "HTTPS",
))
_HEADER_VARIABLE = re.compile(r"HTTP_[A-Z0-9_]+")
_AUTH_VARIABLES = frozenset(("HTTP_AUTHORIZATION", "HTTP_PROXY_AUTHORIZATION"))
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
_STATUS = re.compile(r"([1-5][0-9][0-9])(?: (.*))?")
#: Response fields the server writes itself: a CGI program's copy is dropped.
_SERVER_FIELDS = frozenset(("status", "date", "server"))


# -- server side ----------------------------------------------------------------

def meta_variables(environ: Mapping[str, object], script_name: str, path_info: str,
                   content_length: int, *, all_headers: bool = False,
                   script_filename: str | None = None) -> dict[str, str]:
    """The RFC 3875 meta-variables for one request, from its WSGI environ.

    `content_length` is the body's real size (a chunked body was de-chunked
    and counted by the server: CGI has no chunked input). CONTENT_LENGTH is
    set whenever the request has a body, an empty one (`Content-Length: 0`)
    included, as RFC 3875 s.4.1.2 asks.

    `all_headers` passes every header the WSGI adapter passes: Authorization
    and names beyond [A-Z0-9_] (`X.Dotted` -> `HTTP_X.DOTTED`, a harmless
    variable name for execve). It is for our own gateway, which rebuilds
    the app's PEP 3333 environ from them; a script gets only names a shell
    can use, and no credentials (RFC 3875 s.4.1.18).
    """
    meta = {
        "GATEWAY_INTERFACE": GATEWAY_INTERFACE,
        "SERVER_SOFTWARE": environ["SERVER_SOFTWARE"],
        "SERVER_NAME": environ["SERVER_NAME"],
        "SERVER_PORT": environ["SERVER_PORT"],
        "SERVER_PROTOCOL": environ["SERVER_PROTOCOL"],
        "REQUEST_METHOD": environ["REQUEST_METHOD"],
        "QUERY_STRING": environ.get("QUERY_STRING", ""),
        "SCRIPT_NAME": script_name,
        "REMOTE_ADDR": environ["REMOTE_ADDR"],
        # RFC 3875 s.4.1.9: REMOTE_ADDR stands in when names are not looked up.
        "REMOTE_HOST": environ["REMOTE_ADDR"],
        "REQUEST_URI": environ.get("REQUEST_URI", ""),
    }
    if "REMOTE_PORT" in environ:  # a proxy may name the client without a port
        meta["REMOTE_PORT"] = environ["REMOTE_PORT"]
    if path_info:
        meta["PATH_INFO"] = path_info
    if script_filename:
        meta["SCRIPT_FILENAME"] = script_filename
    if content_length or "CONTENT_LENGTH" in environ:
        meta["CONTENT_LENGTH"] = str(content_length)
    if environ.get("CONTENT_TYPE"):
        meta["CONTENT_TYPE"] = environ["CONTENT_TYPE"]
    if environ.get("wsgi.url_scheme") == "https":  # behind a trusted proxy (flash_green.proxy)
        meta["HTTPS"] = "on"
    for key, value in environ.items():
        if not key.startswith("HTTP_") or key == "HTTP_PROXY":
            continue
        if not all_headers and (key in _AUTH_VARIABLES or not _HEADER_VARIABLE.fullmatch(key)):
            continue
        meta[key] = value
    return meta


def child_environment(meta: Mapping[str, str], inherited: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    """`meta` over the `inherited` variables, as the exact bytes of the request.

    Values are latin-1 strings (PEP 3333 "bytes as str"), so they are encoded
    back to the octets that arrived. Inherited variables that look like
    request data (HTTP_*, or a meta-variable name) are dropped: only the
    request decides those.
    """
    env = {name: value for name, value in inherited.items()
           if not name.startswith(b"HTTP_") and name.decode("latin-1") not in META_VARIABLES}
    for name, value in meta.items():
        env[name.encode("ascii")] = value.encode("latin-1")
    return env


class CGIResponseError(Exception):
    """The CGI program's output is not a valid CGI response (502)."""


@dataclass
class ResponseHead:
    """What a CGI program's header section says."""

    status: str
    headers: list[tuple[str, str]]
    #: An abs-path Location with no Status: the server must serve that path
    #: itself (RFC 3875 s.6.2.2 local redirect).
    local_redirect: str | None = None


def find_end_of_head(buffer: bytes) -> tuple[int, int] | None:
    """(end of the header lines, start of the body) once the blank line is in."""
    if buffer[:2] == b"\r\n":
        return 0, 2
    if buffer[:1] == b"\n":
        return 0, 1
    match = _END_OF_HEAD.search(buffer)
    return (match.start(), match.end()) if match else None


def parse_response_head(block: bytes) -> ResponseHead:
    """Parse the header lines (without the blank line) of a CGI response."""
    status = None
    location = None
    headers = []
    for line in block.split(b"\n") if block else ():
        line = line[:-1] if line.endswith(b"\r") else line
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if not colon or not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise CGIResponseError(f"malformed header line {line[:80]!r}")
        text_name, text_value = name.decode("ascii"), value.decode("latin-1")
        lower = text_name.lower()
        if lower == "status":
            if status is not None:
                raise CGIResponseError("more than one Status field")
            status = _parse_status(text_value)
        elif lower == "location":
            location = text_value
        if lower not in _SERVER_FIELDS:
            headers.append((text_name, text_value))
    if status is None and location is not None:
        if location.startswith("/"):
            return ResponseHead("200 OK", headers, local_redirect=location)
        status = "302 Found"
    return ResponseHead(status or "200 OK", headers)


def _parse_status(value: str) -> str:
    match = _STATUS.fullmatch(value)
    if match is None:
        raise CGIResponseError(f"malformed Status {value[:40]!r}")
    return value if match.group(2) else status_line_text(int(match.group(1)))


# -- program side: a WSGI app run as a CGI program ----------------------------------

def render_response_head(status: str, headers: list[tuple[str, str]]) -> bytes:
    """A CGI header section: `Status:`, the app's fields, a blank line."""
    lines = [f"Status: {status}\r\n"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name.encode("latin-1", "replace")) or \
                any(c in value for c in "\r\n\x00"):
            raise ResponseError(f"invalid response header {name!r}")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ResponseError(f"response header is not latin-1: {exc}") from None


@dataclass
class GatewayRequest:
    """The little of a request `Exchange` asks its connection about."""

    method: str
    target: str


class GatewayConnection:
    """Stands in for `ServerConnection` in `Exchange`: frames in CGI format.

    The server in front does the HTTP framing (length, chunks, keep-alive),
    so here a response is only a CGI head and the raw body; Content-Length,
    when the app gives it, is passed on and checked.
    """

    def __init__(self, method: str, target: str) -> None:
        self.request = GatewayRequest(method, target)

    def respond(self, status: str, headers: list[tuple[str, str]],
                keep_alive: bool) -> tuple[bytes, ResponseWriter]:
        code = int(status[:3]) if status[:3].isdigit() else 0
        if not 100 <= code <= 599:
            raise ResponseError(f"invalid status {status!r}")
        length = None
        for name, value in headers:
            if name.lower() == "content-length":
                if not (value.isascii() and value.isdigit()):
                    raise ResponseError(f"invalid Content-Length {value!r}")
                length = int(value)
        has_body = self.request.method != "HEAD" and code >= 200 and code not in (204, 304)
        writer = ResponseWriter(False, False, length if has_body else None, has_body)
        return render_response_head(status, headers), writer


class GatewayExchange(Exchange):
    """`Exchange` whose error responses are CGI responses, and which
    remembers an abort so the program can exit non-zero (the server then
    breaks the connection instead of ending the body cleanly).

    An error response says `Connection: close`, so the server in front
    closes the connection after it, as every in-process engine does after
    an app error."""

    __slots__ = ("aborted",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.aborted = False

    def _error(self, status: int, reason: str) -> list[bytes]:
        self.keep_alive = False
        self.status = status
        body = f"{status_line_text(status)}: {reason}\n".encode("latin-1", "replace")
        out = render_response_head(status_line_text(status), [
            ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
            ("Connection", "close")])
        self.sent = len(out) + len(body)
        return [out + body]

    def _abort(self, why: str, exc: BaseException | None = None, level: int = logging.ERROR) -> None:
        self.aborted = True
        super()._abort(why, exc, level)


def stdin_source(fd: int, length: int) -> Callable[[], bytes] | None:
    """An InputStream source reading exactly `length` bytes of body from `fd`."""
    if length <= 0:
        return None
    left = length

    def source() -> bytes:
        nonlocal left
        if left <= 0:
            return b""
        data = os.read(fd, min(left, _READ_SIZE))
        left = left - len(data) if data else 0
        return data
    return source


def gateway_environ(ctx: WSGIContext, variables: Mapping[str, str], stdin_fd: int = 0) -> dict:
    """A PEP 3333 environ from CGI meta-variables (latin-1 decoded).

    The same request gives the app the same environ as in-process
    (`WSGIContext.environ`). The wsgi.* keys come from the `WSGIContext`
    every engine uses; the request's keys are the meta-variables, which
    RFC 3875 and PEP 3333 name alike, and only they: the rest of the
    process environment (PATH, HOME, the app's own settings) stays in
    `os.environ`, where an in-process app finds it too. Two RFC 3875
    variables come on top, GATEWAY_INTERFACE and REMOTE_HOST. A chunked
    body reaches CGI with its de-chunked length (CGI has no chunked input),
    but a WSGI app sees it as in-process: no CONTENT_LENGTH, read to the end.
    """
    environ = ctx.base_environ.copy()
    environ.update((name, value) for name, value in variables.items()
                   if name in META_VARIABLES or name.startswith("HTTP_"))
    length = variables.get("CONTENT_LENGTH", "")
    if "HTTP_TRANSFER_ENCODING" in variables:
        environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input"] = InputStream(stdin_source(stdin_fd, int(length) if length.isdigit() else 0))
    environ["wsgi.run_once"] = True
    if environ.pop("HTTPS", "off").lower() in ("on", "1"):
        environ["wsgi.url_scheme"] = "https"
    environ.setdefault("PATH_INFO", "")
    environ.setdefault("QUERY_STRING", "")
    environ["RAW_URI"] = environ.setdefault("REQUEST_URI", "")
    return environ


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def run_gateway(app: Callable, variables: Mapping[bytes, bytes], stdin_fd: int = 0,
                stdout_fd: int = 1) -> int:
    """Run `app` for the one request in `variables`; write the CGI response.

    Returns the exit code: 0, or 1 when the response broke after its head.
    """
    strings = {name.decode("latin-1"): value.decode("latin-1") for name, value in variables.items()}
    port = strings.get("SERVER_PORT", "")
    ctx = WSGIContext(app, strings.get("SERVER_NAME", "localhost"), int(port) if port.isdigit() else 0,
                      server_header=strings.get("SERVER_SOFTWARE", "flash"), multiprocess=True)
    environ = gateway_environ(ctx, strings, stdin_fd)
    conn = GatewayConnection(environ.get("REQUEST_METHOD", "GET"), environ.get("REQUEST_URI", ""))
    exchange = GatewayExchange(ctx, conn, environ, keep_alive=False,
                               send_now=lambda data: _write_all(stdout_fd, data))
    for data in exchange.run():
        _write_all(stdout_fd, data)
    return 1 if exchange.aborted else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m flash_green.cgi APP [--factory]`: serve one CGI request."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        print("usage: python -m flash_green.cgi module:callable [--factory]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="[cgi %(process)d] %(levelname)s %(name)s: %(message)s")
    try:
        app = load_app(args[0], "--factory" in args[1:])
    except AppLoadError as exc:
        log.error("%s", exc)
        # A complete (error) response: exit 0, non-zero would mean a broken one.
        _write_all(1, b"Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                      b"Connection: close\r\n\r\nthe application could not be loaded\n")
        return 0
    return run_gateway(app, os.environb)


if __name__ == "__main__":
    raise SystemExit(main())
