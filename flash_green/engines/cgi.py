"""v2 - cgi: fork + exec a program for every request (RFC 3875).

The model
    The server keeps the connection (keep-alive, parsing, framing: a thread
    per connection, `_per_thread.ThreadPerConnection`, the base v3
    `threaded` stands on too), and for each request it forks and execs a CGI
    program: the request goes to the child as its environment
    (REQUEST_METHOD, PATH_INFO, QUERY_STRING, HTTP_* ...) plus the body on
    stdin; the child prints `Status:` and header lines, a blank line and the
    body on stdout, and exits. With `--cgi-dir DIR` the program is an
    executable in DIR named by the URL (any language; a shell script works);
    without it, the program is `python -m flash_green.cgi APP`, a gateway
    that runs the configured WSGI app under CGI, so the demo app and the
    whole cross-engine suite run through fork + exec too. Here the server is
    a thin bridge, `CGIApplication`: a WSGI app that answers by running a
    child.

What it costs per request
    A fork + exec and the program's whole start-up, every time: ~1 ms for
    a shell script, ~60 ms for a bare Python interpreter and several
    hundred ms once a framework is imported (the suite app imports Flask),
    while an in-process engine answers in tens of microseconds. Nothing is
    cached between requests: no connection pool, no warm import.

What it buys
    Isolation and simplicity: each request is a fresh process that cannot
    leak into the next, may be written in any language, and runs on any
    core (requests run truly in parallel). A crash costs one request.

What breaks it
    Request rate: the start-up cost is paid per request, so throughput is
    bounded by how fast the machine can start the program (compare
    `comparisons/bench_processes.py`: the server adds little to the bare
    fork + exec loop). Memory: N concurrent requests are N processes.

When to use it
    Rarely-called scripts, admin tools, programs in other languages; and
    to see why FastCGI, mod_python/mod_wsgi and then WSGI servers kept the
    program running between requests.

TLS is the server's, as on `threaded`: the request reaches the child
decrypted, and the child learns the scheme from `HTTPS=on`.

Safety (see `flash_green.cgi`): no shell, an argv list; the environment
comes only from the parsed request; a path that leaves DIR (`..`, a
symlink out) is 404, a file that is not executable 403; a child past
`--timeout` is killed with its process group (504, or a broken connection
once the head was sent); every child is reaped; malformed output is 502.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import unquote

from ..binds import Listener
from ..cgi import (MAX_RESPONSE_HEAD, CGIResponseError, ResponseHead, child_environment,
                   find_end_of_head, meta_variables, parse_response_head)
from ..config import Config
from ..http import ResponseError, status_line_text
from ..tracing import CHILD_PID_KEY
from ..wsgi import InputStream
from ._per_thread import ThreadPerConnection
from .base import Capabilities

log = logging.getLogger("flash.engine.cgi")

#: A body up to this size goes to the child through a pipe (it fits the
#: pipe buffer, so writing never waits for the child); larger ones through
#: an unlinked temporary file.
PIPE_BODY_LIMIT = 65536
#: Local redirects (RFC 3875 s.6.2.2) followed for one request.
MAX_LOCAL_REDIRECTS = 5
_READ_SIZE = 65536


class ProgramError(Exception):
    """The request maps to no program we may run: answer `status`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ChildTimeout(Exception):
    """The CGI child ran past --timeout."""


class ChildFailed(ResponseError):
    """The gateway child exited non-zero after its head: the body is broken
    (the WSGI adapter then closes the connection, with one log line)."""


@dataclass
class Program:
    """What to exec for one request, and how it is named to the child."""

    argv: list[str]
    cwd: str | None
    script_name: str
    path_info: str
    filename: str | None
    #: Variables the child inherits besides the meta-variables.
    inherited: Mapping[bytes, bytes]
    #: Pass every header on, Authorization included: the gateway runs the
    #: server's own app, which must see what it would see in-process.
    all_headers: bool
    #: A non-zero exit means a broken response (our gateway), rather than
    #: a script's incidental status.
    exit_status_matters: bool


class Child:
    """One running CGI program: its stdout read against a deadline."""

    def __init__(self, proc: subprocess.Popen, deadline: float, program: Program) -> None:
        self.proc = proc
        self.deadline = deadline
        self.program = program
        self.stdout = proc.stdout.fileno()
        self.poller = select.poll()
        self.poller.register(self.stdout, select.POLLIN)
        # Readable when the child exits: waiting for the exit with a deadline
        # is one poll, not Popen.wait(timeout)'s sleep-and-retry loop.
        self.pidfd = os.pidfd_open(proc.pid)

    def read(self) -> bytes:
        """The next piece of stdout (b"" at its end); ChildTimeout past the deadline."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or not self.poller.poll(remaining * 1000):
            raise ChildTimeout()
        return os.read(self.stdout, _READ_SIZE)

    def read_head(self) -> tuple[ResponseHead, bytes]:
        """Parse the header section; return it and the body bytes read past it."""
        buffer = b""
        while True:
            piece = self.read()
            if not piece:
                raise CGIResponseError("no blank line after the headers" if buffer else "no output")
            buffer += piece
            end = find_end_of_head(buffer)
            if end is not None:
                return parse_response_head(buffer[:end[0]]), buffer[end[1]:]
            if len(buffer) > MAX_RESPONSE_HEAD:
                raise CGIResponseError("header section too large")

    def finish(self) -> int | None:
        """Wait for the exit (bounded by the deadline); kill if it overstays."""
        remaining = self.deadline - time.monotonic()
        exited = select.poll()
        exited.register(self.pidfd, select.POLLIN)
        if remaining > 0 and exited.poll(remaining * 1000):
            return self.proc.wait()
        log.error("%s still running after --timeout; killed", self.program.argv[-1])
        self.kill()
        return None

    def kill(self) -> None:
        """Kill the child and everything it started (its own process group), reap it."""
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.kill()  # in case it left its group
        self.proc.wait()

    def close(self) -> None:
        self.proc.stdout.close()
        os.close(self.pidfd)


class CGIBody:
    """The response body: the child's stdout after its head, streamed.

    `close()` (called by the WSGI adapter in every case, the client gone
    included) makes sure the child is finished and reaped.
    """

    def __init__(self, child: Child, first: bytes, start_response: Callable) -> None:
        self.child = child
        self.first = first
        self.start_response = start_response
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        child = self.child
        sent = bool(self.first)
        if sent:
            yield self.first
        try:
            while True:
                piece = child.read()
                if not piece:
                    break
                sent = True
                yield piece
        except ChildTimeout:
            log.error("%s exceeded --timeout before its body ended; killed", child.program.argv[-1])
            child.kill()
            if sent:
                raise  # the head is out: only a broken connection can tell
            # Nothing sent yet, so the status may still change (PEP 3333 exc_info).
            yield from _error(self.start_response, 504, "the CGI program timed out", sys.exc_info())
            return
        code = child.finish()
        if code:
            if child.program.exit_status_matters:
                raise ChildFailed(f"the CGI gateway exited with {code}")
            log.warning("%s exited with status %s", child.program.argv[-1], code)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.child.proc.poll() is None:
            self.child.kill()
        self.child.close()

    def __del__(self) -> None:
        # Never leave a zombie, even if nobody iterated or closed us.
        self.close()


def spool_body(environ: dict) -> tuple[int | BinaryIO, int]:
    """The request body as the child's stdin, and its exact length.

    CGI has no chunked input: the body is read whole (the core has already
    bounded it by --max-body-size) and its real length goes in CONTENT_LENGTH.
    """
    stream: InputStream = environ["wsgi.input"]
    head = stream.read(PIPE_BODY_LIMIT)
    if not head:
        return subprocess.DEVNULL, 0
    if len(head) < PIPE_BODY_LIMIT:
        pipe = _pipe_holding(head)
        if pipe is not None:
            return pipe, len(head)
    spool = tempfile.TemporaryFile()
    spool.write(head)
    length = len(head)
    while True:
        piece = stream.read(_READ_SIZE)
        if not piece:
            break
        spool.write(piece)
        length += len(piece)
    spool.seek(0)
    return spool, length


def _pipe_holding(data: bytes) -> int | None:
    """A pipe's read end already holding `data`, or None if it does not fit."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    fcntl.fcntl(write_end, fcntl.F_SETFL, os.O_NONBLOCK)  # the write end only
    try:
        written = os.write(write_end, data)
    except BlockingIOError:
        written = 0
    os.close(write_end)
    if written == len(data):
        return read_end
    os.close(read_end)
    return None


def _error(start_response, status: int, reason: str, exc_info=None) -> list[bytes]:
    body = f"{status_line_text(status)}: {reason}\n".encode("latin-1", "replace")
    start_response(status_line_text(status), [("Content-Type", "text/plain; charset=utf-8"),
                                              ("Content-Length", str(len(body)))], exc_info)
    return [body]


class CGIApplication:
    """A WSGI app that answers every request by running a CGI program."""

    def __init__(self, config: Config) -> None:
        self.timeout = config.timeout
        self.root = os.path.realpath(config.cgi_dir) if config.cgi_dir else None
        if self.root is None:
            argv = [sys.executable, "-m", "flash_green.cgi", config.app]
            self.gateway_argv = argv + ["--factory"] if config.factory else argv
        # Scripts see PATH only; the gateway runs our own app and sees the
        # server's environment (minus anything posing as request data).
        self.script_environment = {b"PATH": os.environb.get(b"PATH", b"/usr/local/bin:/usr/bin:/bin")}

    def __call__(self, environ: dict, start_response: Callable) -> object:
        return self.serve(environ, start_response, redirects=0)

    def serve(self, environ: dict, start_response: Callable, redirects: int) -> object:
        try:
            program = self.program_for(environ.get("PATH_INFO", ""))
        except ProgramError as exc:
            return _error(start_response, exc.status, exc.reason)
        stdin, length = spool_body(environ)
        try:
            child = self.spawn(program, environ, stdin, length)
        except OSError as exc:
            log.error("cannot execute %s: %s", program.argv[-1], exc)
            return _error(start_response, 502, "the CGI program could not be executed")
        finally:
            _close_stdin(stdin)
        environ[CHILD_PID_KEY] = child.proc.pid
        try:
            head, first = child.read_head()
        except ChildTimeout:
            log.error("%s gave no response within --timeout (%ss); killed", program.argv[-1], self.timeout)
            self._discard(child)
            return _error(start_response, 504, "the CGI program timed out")
        except CGIResponseError as exc:
            log.error("%s: invalid CGI response: %s", program.argv[-1], exc)
            self._discard(child)
            return _error(start_response, 502, "invalid response from the CGI program")
        if head.local_redirect is not None:
            self._discard(child)
            if redirects >= MAX_LOCAL_REDIRECTS:
                return _error(start_response, 502, "too many local redirects")
            return self.serve(redirected(environ, head.local_redirect), start_response, redirects + 1)
        start_response(head.status, head.headers)
        return CGIBody(child, first, start_response)

    @staticmethod
    def _discard(child: Child) -> None:
        child.kill()
        child.close()

    def spawn(self, program: Program, environ: dict, stdin, length: int) -> Child:
        meta = meta_variables(environ, program.script_name, program.path_info, length,
                              all_headers=program.all_headers, script_filename=program.filename)
        proc = subprocess.Popen(
            program.argv, stdin=stdin, stdout=subprocess.PIPE, stderr=None,
            env=child_environment(meta, program.inherited), cwd=program.cwd,
            close_fds=True, start_new_session=True,
        )
        try:
            return Child(proc, time.monotonic() + self.timeout, program)
        except OSError:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            raise

    def program_for(self, path: str) -> Program:
        """The program for a URL path: the gateway, or a script under --cgi-dir."""
        if "\x00" in path:
            # %00 decodes to a NUL, which no environment variable can hold.
            raise ProgramError(400, "a NUL in the path cannot be passed to a CGI program")
        if self.root is None:
            return Program(self.gateway_argv, None, "", path, None, os.environb,
                           all_headers=True, exit_status_matters=True)
        return self.script_for(path)

    def script_for(self, path: str) -> Program:
        """Walk the path's segments under the CGI dir to the first file.

        `/env.sh/extra/path` runs DIR/env.sh with SCRIPT_NAME `/env.sh` and
        PATH_INFO `/extra/path` (RFC 3875 s.4.1.5, 4.1.13).
        """
        segments = path.split("/")
        if segments[0] != "" or any(s in ("", ".", "..") for s in segments[1:]):
            raise ProgramError(404, "no such CGI program")
        candidate = self.root
        for depth, segment in enumerate(segments[1:], start=1):
            candidate = os.path.join(candidate, segment)
            if os.path.isdir(candidate):
                continue
            if not os.path.isfile(candidate):
                break
            real = os.path.realpath(candidate)
            if os.path.commonpath((real, self.root)) != self.root:
                raise ProgramError(404, "no such CGI program")
            if not os.access(real, os.X_OK):
                raise ProgramError(403, "the CGI program is not executable")
            rest = segments[depth + 1:]
            return Program([real], os.path.dirname(real), "/".join(segments[:depth + 1]),
                           "/" + "/".join(rest) if rest else "", real, self.script_environment,
                           all_headers=False, exit_status_matters=False)
        raise ProgramError(404, "no such CGI program")


def _close_stdin(stdin) -> None:
    if isinstance(stdin, int) and stdin >= 0:
        os.close(stdin)
    elif hasattr(stdin, "close"):
        stdin.close()


def redirected(environ: dict, location: str) -> dict:
    """The environ of the GET a local redirect asks the server to serve."""
    path, _, query = location.partition("?")
    new = {key: value for key, value in environ.items()
           if key not in ("CONTENT_LENGTH", "CONTENT_TYPE")}
    new.update(REQUEST_METHOD="GET", PATH_INFO=unquote(path, encoding="latin-1"),
               QUERY_STRING=query, REQUEST_URI=location)
    new["wsgi.input"] = InputStream(None)
    return new


class CGIEngine(ThreadPerConnection):
    name = "cgi"
    summary = ("v2: fork + exec a CGI program per request (RFC 3875; the WSGI app via a "
               "gateway, or --cgi-dir scripts); a thread per connection")
    capabilities = Capabilities(concurrent=True, parallel=True, blocking_handler_stalls=False,
                                fork_per_request=True, bounds_connections=True)
    #: The app runs in a child that --timeout bounds by itself (504).
    app_off_loop = False
    reload_refusal = ("every request runs the app in a new process, which imports the code "
                      "as it is now: there is nothing to reload")

    @classmethod
    def validate(cls, config: Config) -> None:
        super().validate(config)
        if config.cgi_dir is not None and not os.path.isdir(config.cgi_dir):
            raise ValueError(f"--cgi-dir {config.cgi_dir!r} is not a directory")
        if config.cgi_dir is None and not config.app:
            raise ValueError("the cgi engine needs the app's module:callable to run it per request")

    def __init__(self, config: Config, app: Callable, listeners: Sequence[Listener]) -> None:
        # The app object loaded by the runner only proved that it imports;
        # each request runs it (or a script) in a fresh child.
        super().__init__(config, CGIApplication(config), listeners)
