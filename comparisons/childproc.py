"""Child processes of the comparisons and the tests, started and stopped in one way.

Every server the comparisons (and the test suite) measure runs as a child
process: started with this checkout importable, on port 0, announcing the
port it bound on stdout, and stopped by its PID - never by name. This
module is that boilerplate, written once: `child_env`, `read_announcement`,
`stop_child`, `pin`, `raise_fd_limit` (the descriptors a process needs for
many connections or children), and `HelperService` for our own helper
servers (the canned server, the slow upstream).
"""

from __future__ import annotations

import logging
import os
import re
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import TracebackType

import psutil

log = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Flash's start-up line (and the peers' imitation of it): the first address,
#: `http://HOST:PORT` or `https://HOST:PORT` (groups 1, 2) or `unix:PATH` (group 3).
LISTENING = re.compile(r"listening on (?:https?://(\[[^\]]+\]|[^:/\s]+):(\d+)|unix:([^\s,]+))")
#: The whole list of addresses of Flash's start-up line (several joined by ", ").
LISTENING_ALL = re.compile(r"listening on (\S+(?:, \S+)*) pid=")
#: A helper service's start-up line: the port alone.
PORT_LINE = re.compile(r"^(\d+)\r?\n")


def child_env(**extra: str) -> dict[str, str]:
    """This environment plus `extra`, with this checkout first on PYTHONPATH (whatever the caller's cwd)."""
    return dict(os.environ, **extra, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def raise_fd_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit if `needed` exceeds it; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new_soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if new_soft > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            log.info("raised RLIMIT_NOFILE soft limit %d -> %d", soft, new_soft)
            soft = new_soft
        if soft < needed:
            log.warning("RLIMIT_NOFILE hard limit %d < %d descriptors needed", hard, needed)
    return soft


def read_announcement(proc: subprocess.Popen, pattern: re.Pattern[str],
                      timeout: float) -> tuple[re.Match[str] | None, bytes]:
    """Read the child's stdout until `pattern` matches what it printed so far.

    Returns the match - None if the child closed stdout or exited, or
    `timeout` seconds passed, first - and the bytes read (for the error).
    Reads the raw fd, never the buffered file: select() must see every byte.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], min(0.2, remaining))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
            match = pattern.search(seen.decode(errors="replace"))
            if match:
                return match, seen
        elif proc.poll() is not None:
            break
    return None, seen


def stop_child(proc: subprocess.Popen, grace: float, session: bool = False) -> bool:
    """SIGTERM our child (by its PID) and give it `grace` seconds, then SIGKILL.

    With `session` (a child started with ``start_new_session=True``) the
    SIGKILL goes to its whole session - the workers it forked - and is sent
    even after a clean exit, to reap stray workers. True if the child had
    exited by the end of the grace period.
    """
    exited = True
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            exited = False
            if not session:
                proc.kill()
    if session:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait(10)
    return exited


def process_tree(proc: subprocess.Popen | None) -> list[psutil.Process]:
    """Our child and every process it forked (a supervisor's workers, nginx's)."""
    if proc is None:
        return []
    try:
        root = psutil.Process(proc.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def total_rss(processes: Sequence[psutil.Process]) -> int:
    """Resident memory of `processes` together, in bytes (the ones gone since count 0)."""
    total = 0
    for proc in processes:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def cpu_set(cpu: int | Sequence[int] | None) -> set[int]:
    """The CPUs `cpu` names: one, several, or none (None or empty)."""
    return {cpu} if isinstance(cpu, int) else set(cpu or ())


def pin(pid: int, cpu: int | Sequence[int] | None) -> None:
    """Restrict a process to the CPU(s) `cpu` (None or empty: leave it be)."""
    cpus = cpu_set(cpu)
    if cpus:
        os.sched_setaffinity(pid, cpus)


class HelperService:
    """One of our helper servers in a subprocess for the duration of a ``with`` block.

    Runs ``python -m MODULE --host HOST --port 0 --exit-on-stdin-eof ARGS``:
    the service prints its port as its first line, and exits by itself if
    this process dies, because its stdin is a pipe from us. ``cpu`` pins it
    (so that it does not compete with what it serves for a core).
    """

    #: The ``python -m`` module of the service (set by subclasses).
    module = ""
    #: How it is called in logs and errors.
    title = "helper service"

    def __init__(self, host: str = "127.0.0.1", cpu: int | Sequence[int] | None = None,
                 start_timeout: float = 15.0) -> None:
        self.host = host
        self.cpu = cpu
        self.start_timeout = start_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def arguments(self) -> list[str]:
        """The service's own command-line options."""
        return []

    def __enter__(self) -> "HelperService":
        cmd = [sys.executable, "-m", self.module, "--host", self.host, "--port", "0",
               "--exit-on-stdin-eof", *self.arguments()]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=child_env())
        match, seen = read_announcement(self.proc, PORT_LINE, self.start_timeout)
        if match is None:
            self.close()
            raise RuntimeError(f"{self.title} did not report its port: {seen!r}")
        self.port = int(match.group(1))
        pin(self.proc.pid, self.cpu)
        log.info("%s pid %d on port %d", self.title, self.proc.pid, self.port)
        return self

    def close(self) -> None:
        """Stop the subprocess (SIGTERM, then SIGKILL after 5 s); only our own child."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        stop_child(proc, grace=5)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
