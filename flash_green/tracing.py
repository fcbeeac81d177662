"""Request tracing: who served which request, and when (`--trace-requests FILE`).

Every engine, with or without `--workers`, writes the same record per
answered request, one JSON object per line:

    {"conn": 3, "pid": 4120, "thread": 4121, "task": "tasklet-7", "child": null,
     "engine": "tasklets", "peer": "127.0.0.1:51234", "method": "GET",
     "path": "/sleep", "status": 200, "first_byte": 8123.004512,
     "app_start": 8123.004601, "app_end": 8123.104977, "last_byte": 8123.105030}

`conn` numbers the connections of one process (`pid`), in accept order.
The four times are `time.monotonic()` seconds (CLOCK_MONOTONIC, one clock
for every process of the machine, so records of several workers - and a
client's own log - line up):

* `first_byte`: the first byte of the request was received (for a request
  that arrived pipelined behind another: the receive that brought it);
* `app_start`, `app_end`: the app was called and returned its body (null if
  the server answered without calling it); a streamed body is produced
  while it is sent, so only `last_byte` ends it;
* `last_byte`: the last byte of the response left for the kernel (the event
  engine notes it when the pool thread hands the connection back).

They are ordered: first_byte <= app_start <= app_end <= last_byte. *Who ran
it*: the process (`pid`), the OS thread (`thread`, the native id, as `top
-H` shows it), the task of the runtime where there is one (`task`: the
tasklet, the greenlet or the asyncio task that called the app; null for
OS-thread engines and for a plain WSGI app run inline by asyncio's
callbacks) and, on the cgi engine, the child process that ran the request
(`child`). `peer` is the client's address: a client that logs its own port
can join its send and receive times to the server's (the tour does, to show
the wait in the listen backlog that no server can see).

How it hooks in, and what it costs
    Nothing of this runs unless asked: with the option off, each request
    pays one `is None` check (after its last byte, next to the counters).
    On, three things change for the process: connections are
    `TracedConnection`s (a `ServerConnection` that notes when a request's
    first byte arrives); the app is wrapped to note when it starts and ends,
    and who runs it (the wrapper keeps the app's colour: a tasklet handler
    stays a generator, an async app a coroutine function); and after each
    response `Tracer.record` appends a tuple to a deque. A thread formats
    and writes the records every `FLUSH_INTERVAL` seconds and at exit, so
    the request path never formats JSON nor writes to the file.

Files and processes
    The file is opened with O_APPEND in each process that serves (after
    fork, so every worker has its own descriptor) and every write is one
    `os.write` of whole lines: workers share one file without interleaving
    their lines. Like an access log, the file is appended to, never
    truncated. Records still buffered when a process is killed (SIGKILL,
    or the graceful timeout's forced exit) are lost: at most one interval.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from json.encoder import encode_basestring

from .colour import ASYNC, TASKLET, app_colour, tasklet_app
from .http import ServerConnection

log = logging.getLogger("flash.tracing")

CLOCK = time.monotonic
#: Seconds between two writes of the buffered records.
FLUSH_INTERVAL = 0.5
#: Where the app wrapper leaves its times for `Tracer.record` (environ key).
TIMING_KEY = "flash.trace"
#: Where the cgi engine notes the pid of the child that runs the request.
CHILD_PID_KEY = "flash.child_pid"

#: One record, one line (one %-format: the cheapest way to build it).
RECORD = ('{"conn": %d, "pid": %d, "thread": %d, "task": %s, "child": %s, "engine": "%s", '
          '"peer": "%s:%s", "method": "%s", "path": %s, "status": %d, "first_byte": %.6f, '
          '"app_start": %s, "app_end": %s, "last_byte": %.6f}\n')

_connection_ids = itertools.count(1)
# Called directly, not through super(): this is the per-request path.
_receive_data = ServerConnection.receive_data
_start_next_cycle = ServerConnection.start_next_cycle


class TracedConnection(ServerConnection):
    """A `ServerConnection` that notes when each request's first byte arrived."""

    __slots__ = ("first_byte", "last_receive", "trace_id")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.trace_id = next(_connection_ids)
        self.first_byte = 0.0
        self.last_receive = 0.0

    def receive_data(self, data: bytes) -> None:
        now = self.last_receive = CLOCK()
        if data and self.request is None and not self.buffered:
            self.first_byte = now
        _receive_data(self, data)

    def start_next_cycle(self) -> bool:
        ready = _start_next_cycle(self)
        if self.buffered:
            # Pipelined: the next request is already here; it came with the
            # last receive at the latest.
            self.first_byte = self.last_receive
        return ready


# -- who ran it, per runtime ---------------------------------------------------------


class _SmallNames:
    """Short stable names ("greenlet-3") for objects without a name of their own."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.count = itertools.count(1)

    def __call__(self, obj) -> str:
        name = self.names.get(obj)
        if name is None:
            name = self.names[obj] = f"{self.prefix}-{next(self.count)}"
        return name


def _tasklet_namer(engine) -> Callable[[], str | None]:
    kernel = engine.kernel

    def current() -> str | None:
        task = kernel.current
        return None if task is None else f"tasklet-{task.id}"
    return current


def _greenlet_namer(engine) -> Callable[[], str | None]:
    import greenlet

    names = _SmallNames("greenlet")
    return lambda: names(greenlet.getcurrent())


def _asyncio_namer(engine) -> Callable[[], str | None]:
    def current() -> str | None:
        task = asyncio.current_task()
        return None if task is None else task.get_name()
    return current


#: Engine name -> how to name the task that runs the app (engines absent
#: here run it on an OS thread, which the record names anyway).
TASK_NAMERS: dict[str, Callable] = {
    "tasklets": _tasklet_namer,
    "greenlet": _greenlet_namer,
    "gevent": _greenlet_namer,
    "eventlet": _greenlet_namer,
    "asyncio": _asyncio_namer,
}


def _no_task() -> None:
    return None


# -- the recorder ----------------------------------------------------------------------


class Tracer:
    """Buffers one tuple per answered request; a thread writes them as JSON lines."""

    def __init__(self, path: str, engine_name: str, task_name: Callable[[], str | None] = _no_task) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.engine_name = engine_name
        self.task_name = task_name
        self.pid = os.getpid()
        self.pending: deque[tuple] = deque()
        self.write_lock = threading.Lock()
        self.closed = threading.Event()
        self.flusher: threading.Thread | None = None

    # -- on the request path -------------------------------------------------------

    def wrap_app(self, app: Callable) -> Callable:
        """`app`, noting in environ when it starts and ends and who runs it.

        The wrapper has the app's colour, so the engine runs it as it would
        have run the app.
        """
        task_name = self.task_name
        get_thread = threading.get_native_id

        def note(environ: dict, started: float) -> None:
            environ[TIMING_KEY] = (started, CLOCK(), get_thread(), task_name(),
                                   environ.get(CHILD_PID_KEY))

        colour = app_colour(app)
        if colour == TASKLET:
            @tasklet_app
            def traced_tasklet_app(environ, start_response):
                started = CLOCK()
                try:
                    return (yield from app(environ, start_response))
                finally:
                    note(environ, started)
            return traced_tasklet_app

        if colour == ASYNC:
            async def traced_async_app(environ, start_response):
                started = CLOCK()
                try:
                    result = app(environ, start_response)
                    if inspect.isawaitable(result):
                        result = await result
                    return result
                finally:
                    note(environ, started)
            return traced_async_app

        def traced_app(environ, start_response):
            started = CLOCK()
            try:
                return app(environ, start_response)
            finally:
                note(environ, started)
        return traced_app

    def record(self, exchange) -> None:
        """The response of `exchange` is out: keep its record for the next write."""
        conn = exchange.conn
        environ = exchange.environ
        # No timing: the server answered without calling the app (CONNECT).
        timing = environ.get(TIMING_KEY) or (None, None, threading.get_native_id(), None, None)
        self.pending.append((
            CLOCK(), conn.trace_id, conn.first_byte, timing, exchange.status,
            environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT"), environ.get("REQUEST_METHOD"),
            environ.get("PATH_INFO"),
        ))

    # -- off the request path ------------------------------------------------------

    def start(self) -> None:
        self.flusher = threading.Thread(target=self._flush_periodically, name="trace-writer",
                                        daemon=True)
        self.flusher.start()

    def _flush_periodically(self) -> None:
        while not self.closed.wait(FLUSH_INTERVAL):
            self.flush()

    def flush(self) -> None:
        """Format what is buffered and write it with one write (whole lines)."""
        with self.write_lock:
            pending = self.pending
            lines = []
            while pending:
                lines.append(self._format(pending.popleft()))
            if lines:
                self._write("".join(lines).encode())

    def _format(self, item: tuple) -> str:
        last_byte, conn, first_byte, timing, status, addr, port, method, path = item
        started, ended, thread, task, child = timing
        # The address, port and method need no escaping: the socket and the
        # protocol core made them (an IP, digits, a token).
        return RECORD % (
            conn, self.pid, thread, _json_string(task), "null" if child is None else child,
            self.engine_name, addr, port, method, _json_string(path), status, first_byte,
            _seconds(started), _seconds(ended), last_byte)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def close(self) -> None:
        """Stop the writer thread, write what is left, close the file."""
        self.closed.set()
        if self.flusher is not None and self.flusher is not threading.current_thread():
            self.flusher.join(FLUSH_INTERVAL * 4)
        try:
            self.flush()
        except OSError as exc:
            log.error("could not write the request trace: %s", exc)
        os.close(self.fd)


def _json_string(value: str | None) -> str:
    """json.dumps' own string encoder, without json.dumps' set-up per call."""
    return "null" if value is None else encode_basestring(value)


def _seconds(value: float | None) -> str:
    return "null" if value is None else f"{value:.6f}"


def install(engine) -> Tracer | None:
    """Turn tracing on for `engine` if `--trace-requests` asks (from `Engine.run`, before `serve`).

    Returns the tracer to close when serving ends, or None when tracing is off.
    """
    path = engine.config.trace_requests
    if not path:
        return None
    namer = TASK_NAMERS.get(engine.name)
    tracer = Tracer(path, engine.name, namer(engine) if namer else _no_task)
    engine.tracer = tracer
    engine.connection_class = TracedConnection
    engine.app = tracer.wrap_app(engine.app)
    engine.wsgi.app = tracer.wrap_app(engine.wsgi.app)
    tracer.start()
    return tracer
