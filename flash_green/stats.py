"""Live counters for every engine: a log line, an opt-in endpoint, workers summed up.

What is counted
    Every engine keeps the same `Counters` (connections open and total,
    requests, bytes sent, 4xx/5xx) and adds its scheduler's own numbers in
    `Engine.stats()`: the tasklets kernel's loop iterations, epoll waits,
    switches and traps; the greenlet hub's switches and polls; the pools'
    queue length and busy threads. `snapshot(engine)` adds what the process
    itself can tell (pid, RSS, threads, uptime) and, for engines whose loop
    polls through `metered_poller`, the loop's iterations and the time it
    spent waiting in epoll - the rest of the time it was running handlers.

Where it shows (nothing of it unless asked)
    `--stats SECONDS` logs one line per interval (`snapshot` flattened, with
    the request rate since the previous line). `--stats-path PATH` answers
    GET PATH on the same listener with the snapshot as JSON (`?ps` gives a
    text dump: the tasklets kernel's `ps`, or every thread's stack). The
    endpoint is a WSGI middleware in front of the app, so it is served by
    the engine's own connection code, and it does not exist unless the
    option is given: a public server must not publish its internals.

Under the supervisor (`--workers N`)
    The master creates a directory before forking; each worker writes its
    snapshot there (`<pid>.json`, replaced atomically) once per interval.
    The master logs the sum over its live workers every interval, and a
    worker's endpoint answers with its own figures, its siblings' (at most
    one interval old) and the sum. A file costs no coordination: the master
    never waits for a worker, and a dead worker's file is simply dropped.

Blocking detection (`--debug-blocking MS`)
    Lives with each loop (`engines._loop.LoopWatchdog` for epoll and the
    greenlet hub, asyncio's slow-callback log, the tasklets kernel's
    `longblock_ms`). `metered_poller` can drive a LoopWatchdog: it tells it
    when the loop goes back to its poller and when it leaves it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .colour import TASKLET, app_colour, tasklet_app

log = logging.getLogger("flash.stats")

#: How often a supervised worker publishes its snapshot when only the
#: endpoint (not the log line) was asked for, in seconds.
PUBLISH_INTERVAL = 1.0
#: Fields that describe one process and make no sense summed over workers.
NOT_ADDITIVE = frozenset({"pid", "started", "uptime_s", "engine"})
#: Left out of the log line (the uptime says it better).
NOT_LOGGED = frozenset({"engine", "started"})

#: Set by the supervisor's master before it forks: the directory where its
#: workers publish their snapshots (inherited by every worker).
_workers_dir: str | None = None


def enabled(config) -> bool:
    """Whether any of --stats, --stats-path, --debug-blocking is on."""
    return bool(config.stats_interval or config.stats_path or config.debug_blocking_ms)


# =============================================================================
# The loop meter
# =============================================================================

@dataclass
class LoopMeter:
    """What a poll loop did: iterations, time waiting in the poller, events."""

    iterations: int = 0
    poll_seconds: float = 0.0
    events: int = 0

    def figures(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "poll_seconds": round(self.poll_seconds, 6),
                "events": self.events}


class MeteredPoller:
    """An epoll (or poll) object whose `poll` is counted and timed; the rest passes through.

    With a `watchdog` (`engines._loop.LoopWatchdog`), it also tells it when
    the loop goes back to waiting (`idle`) and when it leaves (`busy`).
    """

    def __init__(self, poller: Any, meter: LoopMeter, watchdog: Any = None) -> None:
        self._poller = poller
        self._poll = poller.poll
        self._meter = meter
        self._watchdog = watchdog

    def poll(self, *args: Any) -> list:
        meter = self._meter
        watchdog = self._watchdog
        if watchdog is not None:
            watchdog.idle()
        started = time.perf_counter()
        try:
            events = self._poll(*args)
        finally:
            meter.iterations += 1
            meter.poll_seconds += time.perf_counter() - started
            if watchdog is not None:
                watchdog.busy()
        meter.events += len(events)
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._poller, name)


def metered_poller(engine: Any, poller: Any, watchdog: Any = None) -> Any:
    """`poller`, counted if --stats/--stats-path/--debug-blocking are on, else unchanged.

    An engine calls this once on the poller its loop waits in; the counts
    go to `engine.loop_meter` and into every snapshot as `loop`.
    """
    if not enabled(engine.config):
        return poller
    engine.loop_meter = LoopMeter()
    return MeteredPoller(poller, engine.loop_meter, watchdog)


# =============================================================================
# Snapshots, lines, sums
# =============================================================================

def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGESIZE")
    except OSError:
        return 0


def snapshot(engine: Any) -> dict[str, Any]:
    """Everything `--stats` knows about this engine process, as plain JSON-able data."""
    data: dict[str, Any] = {"engine": engine.name, "pid": os.getpid()}
    data.update(engine.stats())
    data["uptime_s"] = round(time.time() - engine.counters.started, 3)
    data["rss_bytes"] = _rss_bytes()
    data["threads"] = threading.active_count()
    meter = getattr(engine, "loop_meter", None)
    if meter is not None:
        data["loop"] = meter.figures()
    return data


def aggregate(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The sum over workers of every number (nested dicts too), except per-process fields."""
    total: dict[str, Any] = {}
    count = 0
    for snap in snapshots:
        count += 1
        _add_into(total, snap)
    total["workers"] = count
    return total


def _add_into(total: dict[str, Any], snap: dict[str, Any]) -> None:
    for key, value in snap.items():
        if key in NOT_ADDITIVE or isinstance(value, bool):
            continue
        if isinstance(value, dict):
            _add_into(total.setdefault(key, {}), value)
        elif isinstance(value, (int, float)):
            total[key] = total.get(key, 0) + value


def format_line(snap: dict[str, Any], rate: float | None = None, title: str = "stats") -> str:
    """One log line: the top-level figures always, nested ones when not zero."""
    parts = []
    nested = []
    for key, value in snap.items():
        if isinstance(value, dict):
            nested.extend(_flatten(key, value))
        elif key not in NOT_LOGGED:
            parts.append(f"{key}={_number(value)}")
            if key == "requests" and rate is not None:
                parts.append(f"requests_per_s={rate:.1f}")
    if "engine" in snap:
        title += f" engine={snap['engine']}"
    return title + " " + " ".join(parts + [f"{k}={_number(v)}" for k, v in nested if v])


def _flatten(prefix: str, data: dict[str, Any]) -> list[tuple[str, Any]]:
    items = []
    for key, value in data.items():
        if isinstance(value, dict):
            items.extend(_flatten(f"{prefix}.{key}", value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            items.append((f"{prefix}.{key}", value))
    return items


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value)


def thread_stacks() -> str:
    """Every thread's current stack: the dump of engines without a scheduler of their own."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"thread {names.get(ident, ident)}:\n" + "".join(traceback.format_stack(frame)))
    return "\n".join(parts)


def dump(engine: Any) -> str:
    """The `?ps` text: the engine's own task table if it has one, else thread stacks."""
    own = getattr(engine, "ps", None)
    return own() if callable(own) else thread_stacks()


# =============================================================================
# Workers under the supervisor: one file each
# =============================================================================

def _publish(directory: str, snap: dict[str, Any]) -> None:
    path = os.path.join(directory, f"{snap['pid']}.json")
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(snap, handle)
    os.replace(temporary, path)


def read_workers(directory: str, pids: Iterable[int] | None = None) -> dict[int, dict[str, Any]]:
    """The published snapshots, by pid: of `pids`, or of every worker still alive."""
    found: dict[int, dict[str, Any]] = {}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return found
    wanted = None if pids is None else set(pids)
    for name in names:
        if not name.endswith(".json"):
            continue
        pid = int(name[:-5])
        if (wanted is not None and pid not in wanted) or (wanted is None and not _alive(pid)):
            continue
        try:
            with open(os.path.join(directory, name)) as handle:
                found[pid] = json.load(handle)
        except (OSError, ValueError):
            continue  # replaced or removed while we read: next time
    return found


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


class SupervisorStats:
    """The master's side: the directory, and the summed line every interval."""

    def __init__(self, interval: float) -> None:
        global _workers_dir
        self.interval = interval
        self.directory = tempfile.mkdtemp(prefix="flash-stats-")
        self.next_line = time.monotonic() + interval
        _workers_dir = self.directory

    @classmethod
    def start(cls, config) -> SupervisorStats | None:
        """Called by the master before it forks; None when no stats were asked for."""
        if not (config.stats_interval or config.stats_path):
            return None
        return cls(config.stats_interval)

    def tick(self, live_pids: Iterable[int]) -> None:
        """From the master's loop: drop dead workers' files; log the sum when due."""
        live = set(live_pids)
        for name in os.listdir(self.directory):
            pid = name.split(".", 1)[0]
            if pid.isdigit() and int(pid) not in live:
                try:
                    os.unlink(os.path.join(self.directory, name))
                except FileNotFoundError:
                    pass
        if not self.interval or time.monotonic() < self.next_line:
            return
        self.next_line = time.monotonic() + self.interval
        workers = read_workers(self.directory, live)
        log.info("%s", format_line(aggregate(workers.values()), title="stats (all workers)"))

    def close(self) -> None:
        global _workers_dir
        # A worker killed mid-write may leave a temporary file: remove all.
        shutil.rmtree(self.directory, ignore_errors=True)
        _workers_dir = None


# =============================================================================
# The endpoint
# =============================================================================

class StatsEndpoint:
    """Answers GET `path` with the snapshot as JSON (`?ps`: the text dump)."""

    def __init__(self, engine: Any, path: str) -> None:
        self.engine = engine
        self.path = path

    def matches(self, environ: dict) -> bool:
        return environ.get("PATH_INFO") == self.path

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"),
                                                      ("Content-Type", "text/plain")])
            return [b"GET only\n"]
        if environ.get("QUERY_STRING") == "ps":
            body = dump(self.engine).encode() + b"\n"
            content_type = "text/plain; charset=utf-8"
        else:
            body = json.dumps(self.report(), indent=1).encode() + b"\n"
            content_type = "application/json"
        start_response("200 OK", [("Content-Type", content_type), ("Cache-Control", "no-store")])
        return [body]

    def report(self) -> dict[str, Any]:
        own = snapshot(self.engine)
        if _workers_dir is None:
            return own
        workers = read_workers(_workers_dir)
        workers[own["pid"]] = own  # our own figures are fresher than our file
        return {"this_worker": own, "workers": {str(pid): snap for pid, snap in sorted(workers.items())},
                "all_workers": aggregate(workers.values())}


def with_endpoint(app: Callable, endpoint: StatsEndpoint) -> Callable:
    """`app` with `endpoint` in front; a tasklet app stays a tasklet app."""
    if app_colour(app) == TASKLET:
        @tasklet_app
        def tasklet_wrapper(environ, start_response):
            if endpoint.matches(environ):
                return endpoint(environ, start_response)
            return (yield from app(environ, start_response))

        return tasklet_wrapper

    def wrapper(environ, start_response):
        if endpoint.matches(environ):
            return endpoint(environ, start_response)
        return app(environ, start_response)

    return wrapper


# =============================================================================
# Installing it all into an engine
# =============================================================================

class Reporter(threading.Thread):
    """Logs the line every interval; under the supervisor also publishes the snapshot."""

    def __init__(self, engine: Any, interval: float, log_line: bool, directory: str | None) -> None:
        super().__init__(name="stats", daemon=True)
        self.engine = engine
        self.interval = interval
        self.log_line = log_line
        self.directory = directory
        self._stop_event = threading.Event()
        self._last: tuple[float, int] | None = None

    def run(self) -> None:
        if self.directory is not None:
            _publish(self.directory, snapshot(self.engine))  # visible to siblings from the start
        while not self._stop_event.wait(self.interval):
            self.report_once()

    def report_once(self) -> None:
        snap = snapshot(self.engine)
        if self.directory is not None:
            _publish(self.directory, snap)
        if self.log_line:
            log.info("%s", format_line(snap, self._rate(snap)))

    def _rate(self, snap: dict[str, Any]) -> float | None:
        now, requests = time.monotonic(), snap.get("requests", 0)
        last, self._last = self._last, (now, requests)
        if last is None or now <= last[0]:
            return None
        return (requests - last[1]) / (now - last[0])

    def stop(self) -> None:
        self._stop_event.set()


@dataclass
class Monitor:
    """What `install` started, so that `close` can stop it."""

    engine: Any
    reporter: Reporter | None = None
    usr2_previous: Any = None

    def close(self) -> None:
        if self.reporter is not None:
            self.reporter.stop()
        if self.usr2_previous is not None:
            signal.signal(signal.SIGUSR2, self.usr2_previous)


def install(engine: Any) -> Monitor:
    """Wire --stats, --stats-path and SIGUSR2 into `engine` (from `Engine.run`, before `serve`)."""
    config = engine.config
    monitor = Monitor(engine)
    if config.stats_path:
        add_endpoint(engine)
        log.info("stats endpoint at %s (opt-in: --stats-path)", config.stats_path)
    if config.stats_interval or (config.stats_path and _workers_dir is not None):
        interval = config.stats_interval or PUBLISH_INTERVAL
        monitor.reporter = Reporter(engine, interval, bool(config.stats_interval), _workers_dir)
        monitor.reporter.start()
    _install_dump_signal(engine, monitor)
    return monitor


def add_endpoint(engine: Any) -> None:
    """Put the --stats-path endpoint in front of the engine's app (at start-up,
    and again after a HUP reloaded the app)."""
    endpoint = StatsEndpoint(engine, engine.config.stats_path)
    engine.app = with_endpoint(engine.app, endpoint)
    engine.wsgi.app = with_endpoint(engine.wsgi.app, endpoint)


def _install_dump_signal(engine: Any, monitor: Monitor) -> None:
    """SIGUSR2 dumps what the process is doing: the engine's own way, or every thread's stack.

    The stacks are formatted by a Python signal handler, in the main thread
    with the GIL held. Discussion: faulthandler's C-level dump of all threads
    reads frames that running threads are changing; under a threaded engine
    it was seen to stop mid-stack and take the process down. An engine with
    `request_dump` (tasklets) has the dump made by its own loop instead. Only
    in the main thread can signals be set.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    request_dump = getattr(engine, "request_dump", None)
    if not callable(request_dump):
        def request_dump() -> None:
            log.warning("thread stacks (SIGUSR2):\n%s", thread_stacks())
    monitor.usr2_previous = signal.signal(signal.SIGUSR2, lambda signum, frame: request_dump())
