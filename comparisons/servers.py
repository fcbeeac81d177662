"""The server under test: what to run, in its own pinned process, and what it costs.

A `Target` is one row of the comparison tables: a registered engine (with
the options of a variant or a hybrid, e.g. ``threaded --workers 2``) or a
peer. `ServerUnderTest` starts it as a child process in its own session,
pinned to the server's CPUs (so it never competes with the load generator
for a core), waits until it answers, and stops it by its PID. While a
scenario runs, `ResourceSampler` samples the CPU time and RSS of the
server's whole process tree (supervisor and workers) with psutil.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

import psutil

from flash_green import engines
from flash_green.binds import TCPBind, bind_tcp

from .childproc import LISTENING, ROOT, child_env, process_tree, read_announcement, stop_child, total_rss
from .peers import Peer

log = logging.getLogger(__name__)

DEFAULT_APP = "flash_green.apps.demo:app"


@dataclass(frozen=True)
class Target:
    """One row of the tables: an engine (plus options) or a peer."""

    label: str
    engine: str | None = None
    args: tuple[str, ...] = ()
    peer: Peer | None = None
    #: Serves several clients at once (levels beyond 1000 run only if so).
    concurrent: bool = True
    #: Runs handlers on several cores (processes).
    parallel: bool = False
    summary: str = ""
    #: The WSGI app to serve, if not the demo app (e.g. its tasklet-handler version).
    app: str | None = None
    #: Scenario path -> the path this target's app serves it at (its cooperative variant).
    paths: tuple[tuple[str, str], ...] = ()
    #: Starts a process for every request (CGI).
    fork_per_request: bool = False
    #: Highest keep-alive concurrency worth running, and why (None = no cap).
    level_cap: int | None = None
    cap_reason: str = ""

    @property
    def kind(self) -> str:
        if self.peer is not None:
            return "peer"
        return "hybrid" if "--workers" in self.args else "engine"

    @property
    def is_peer(self) -> bool:
        return self.peer is not None

    def path(self, path: str) -> str:
        """Where this target's app serves ``path`` (query kept)."""
        route, sep, query = path.partition("?")
        return dict(self.paths).get(route, route) + sep + query


#: Keep-alive concurrency above which a process-per-request model would start
#: that many interpreters at once (gigabytes of RAM): not run.
FORK_PER_REQUEST_CAP = 100
#: Above this, a model serving one connection at a time has nothing to show.
ONE_AT_A_TIME_CAP = 1000


def engine_target(spec: str, label: str | None = None, paths: dict[str, str] | None = None) -> Target:
    """``"threaded"``, ``"threaded --workers 2"`` or ``"tasklets pkg.mod:app"`` -> a Target.

    A word with a colon that is not an option is the WSGI app to serve.
    Raises EngineUnavailable or KeyError as `engines.get` does.
    """
    name, *words = spec.split()
    app = next((w for w in words if ":" in w and not w.startswith("-")), None)
    args = tuple(w for w in words if w != app)
    cls = engines.get(name)
    caps = cls.capabilities
    workers = _option_value(args, "--workers", "-w")
    multiprocess = caps.multiprocess or (workers is not None and workers > 1)
    concurrent = caps.concurrent or multiprocess
    cap, reason = None, ""
    if caps.fork_per_request:
        cap, reason = FORK_PER_REQUEST_CAP, "a process per request: higher c would start that many interpreters"
    elif not concurrent:
        cap, reason = ONE_AT_A_TIME_CAP, "serves one connection at a time"
    return Target(
        label=label or spec.strip(), engine=name, args=args, concurrent=concurrent,
        parallel=caps.parallel or multiprocess, summary=cls.summary, app=app,
        paths=tuple((paths or {}).items()), fork_per_request=caps.fork_per_request,
        level_cap=cap, cap_reason=reason,
    )


def peer_target(peer: Peer) -> Target:
    if peer.concurrent:
        cap, reason = None, ""
    else:
        cap, reason = ONE_AT_A_TIME_CAP, "serves one request at a time per worker"
    return Target(label=peer.label, peer=peer, concurrent=peer.concurrent, parallel=peer.parallel,
                  summary=peer.settings, level_cap=cap, cap_reason=reason)


def _option_value(args: Sequence[str], *names: str) -> int | None:
    for i, arg in enumerate(args):
        if arg in names and i + 1 < len(args) and args[i + 1].isdigit():
            return int(args[i + 1])
        for name in names:
            if arg.startswith(name + "=") and arg[len(name) + 1:].isdigit():
                return int(arg[len(name) + 1:])
    return None


class ServerFailed(RuntimeError):
    """The server did not start or answer; the message carries its log tail."""


@dataclass
class ServerUnderTest:
    """A target running in a child process (its own session), pinned to ``cpus``."""

    target: Target
    cpus: Sequence[int] | None = None
    keep_alive: float = 5.0
    app: str = DEFAULT_APP
    log_path: str = os.devnull
    start_timeout: float = 20.0
    host: str = "127.0.0.1"
    port: int = 0
    command: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    # -- starting --------------------------------------------------------

    def start(self) -> "ServerUnderTest":
        self._log = open(self.log_path, "ab")
        app = self.target.app or self.app
        listener = None
        if self.target.peer is not None:
            # The harness binds (TCP_NODELAY, big backlog); the peer inherits the fd.
            listener = bind_tcp(TCPBind(self.host, 0), 4096)
            self.port = listener.getsockname()[1]
            self.command = self.target.peer.command(listener.fileno(), app, self.keep_alive)
            pass_fds: tuple[int, ...] = (listener.fileno(),)
        else:
            self.command = [sys.executable, "-m", "flash_green", "serve", app,
                            "--engine", self.target.engine or "", "-b", f"{self.host}:0",
                            "--keep-alive", str(self.keep_alive), "--log-level", "warning",
                            *self.target.args]
            pass_fds = ()
        argv = self._pinned(self.command)
        self._log.write(f"\n$ {' '.join(argv)}\n".encode())
        self._log.flush()
        try:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, cwd=ROOT, env=child_env(),
                                         pass_fds=pass_fds, start_new_session=True)
        finally:
            if listener is not None:
                listener.close()  # the child holds it now; a dead child must mean "refused"
        if self.cpus and not shutil.which("taskset"):
            os.sched_setaffinity(self.proc.pid, set(self.cpus))
        try:
            if self.target.peer is None:
                self.port = self._read_port()
            self._wait_ready()
        except ServerFailed:
            self.stop()
            raise
        return self

    def _pinned(self, argv: list[str]) -> list[str]:
        if not self.cpus:
            return argv
        taskset = shutil.which("taskset")
        # Without taskset the affinity is set right after spawn (before any worker forks).
        return [taskset, "-c", ",".join(map(str, self.cpus)), *argv] if taskset else argv

    def _read_port(self) -> int:
        assert self.proc is not None
        match, seen = read_announcement(self.proc, LISTENING, self.start_timeout)
        if match:
            return int(match.group(2))
        raise ServerFailed(f"{self.target.label} did not announce its port: {seen[-300:]!r}\n{self.log_tail()}")

    def _wait_ready(self) -> None:
        """Until GET / answers (workers may boot after the socket is bound)."""
        deadline = time.monotonic() + self.start_timeout
        request = f"GET / HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n\r\n".encode()
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as sock:
                    sock.sendall(request)
                    if sock.recv(16).startswith(b"HTTP/1."):
                        return
            except OSError:
                pass
            time.sleep(0.05)  # polling a child's start-up, not synchronising with it
        raise ServerFailed(f"{self.target.label} did not answer GET /\n{self.log_tail()}")

    # -- observing ---------------------------------------------------------

    def processes(self) -> list[psutil.Process]:
        """The server's process tree (the supervisor and its workers)."""
        return process_tree(self.proc)

    def rss(self) -> int:
        """Resident memory of the whole tree, in bytes."""
        return total_rss(self.processes())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, size: int = 3000) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - size))
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    # -- stopping ------------------------------------------------------------

    def stop(self, timeout: float = 2.0) -> None:
        """SIGTERM our child, then SIGKILL its session (our processes only) if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if not stop_child(proc, timeout, session=True):  # also reaps stray workers of its session
            log.warning("%s ignored SIGTERM for %ss; its process group was killed", self.target.label, timeout)
        if proc.stdout is not None:
            proc.stdout.close()
        self._log.close()

    def __enter__(self) -> "ServerUnderTest":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class ServerStats:
    """What the server used while a measurement ran."""

    cpu_percent: float = 0.0
    rss_peak_mb: float = 0.0
    processes: int = 0

    def to_dict(self) -> dict[str, float]:
        return {"cpu_percent": round(self.cpu_percent, 1), "rss_peak_mb": round(self.rss_peak_mb, 2),
                "processes": self.processes}


class ResourceSampler:
    """Samples a server's tree every ``interval`` s: CPU time used and peak RSS.

    CPU percent is CPU seconds over wall seconds (100 = one core busy), over
    every process seen in the tree, so a supervisor with two busy workers
    shows ~200.
    """

    def __init__(self, server: ServerUnderTest, interval: float = 0.2) -> None:
        self.server = server
        self.interval = interval
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._peak = 0
        self._procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._started = 0.0

    def _sample(self) -> None:
        rss = 0
        procs = self.server.processes()
        for proc in procs:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            used = times.user + times.system
            self._first.setdefault(proc.pid, used)
            self._last[proc.pid] = used
        self._peak = max(self._peak, rss)
        self._procs = max(self._procs, len(procs))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "ResourceSampler":
        self._sample()
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> ServerStats:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self._sample()
        wall = max(time.monotonic() - self._started, 1e-9)
        cpu = sum(self._last[pid] - self._first[pid] for pid in self._last)
        self.stats = ServerStats(cpu_percent=100 * cpu / wall, rss_peak_mb=self._peak / 2**20,
                                 processes=self._procs)
        return self.stats
