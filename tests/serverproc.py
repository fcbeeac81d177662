"""Start and stop a real server process through the CLI, on an ephemeral port."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field

from comparisons.childproc import LISTENING_ALL, ROOT, child_env, read_announcement, stop_child


@dataclass
class ServerProcess:
    """`python -m flash_green serve APP --engine NAME -b 127.0.0.1:0 ARGS...`.

    With a `-b` in ARGS (e.g. `-b unix:PATH`) that bind replaces the default;
    `unix_path` is then the socket's path. `port` and `unix_path` are the
    first of their kind; `addresses` has every address of the start-up line
    (`http://HOST:PORT`, `https://HOST:PORT`, `unix:PATH`), in bind order.
    """

    engine: str
    app: str = "tests.suite_app:app"
    args: list[str] = field(default_factory=list)
    start_timeout: float = 30.0
    proc: subprocess.Popen | None = None
    host: str = "127.0.0.1"
    port: int = 0
    stderr_path: str = ""
    unix_path: str | None = None
    addresses: list[str] = field(default_factory=list)
    #: How much of the log the suite has already checked (conftest's log check).
    log_checked: int = 0

    def start(self) -> "ServerProcess":
        bind = [] if {"-b", "--bind"} & set(self.args) else ["-b", f"{self.host}:0"]
        cmd = [sys.executable, "-m", "flash_green", "serve", self.app, "--engine", self.engine,
               *bind, *self.args]
        self.stderr_path = f"/tmp/flash-test-{os.getpid()}-{id(self)}.log"
        self._stderr = open(self.stderr_path, "w+b")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, cwd=ROOT,
                                     env=child_env(), start_new_session=True)
        self.port = self._read_port()
        return self

    def _read_port(self) -> int:
        match, seen = read_announcement(self.proc, LISTENING_ALL, self.start_timeout)
        if not match:
            self.stop()
            raise RuntimeError(f"server {self.engine} did not start: {seen!r}\n{self.log()}")
        self.addresses = match.group(1).split(", ")
        paths = [a[len("unix:"):] for a in self.addresses if a.startswith("unix:")]
        self.unix_path = paths[0] if paths else None
        ports = [int(a.rpartition(":")[2]) for a in self.addresses if not a.startswith("unix:")]
        return ports[0] if ports else 0

    @property
    def scheme(self) -> str:
        """`https` if the first TCP address speaks TLS, else `http`."""
        tcp = [a for a in self.addresses if not a.startswith("unix:")]
        return tcp[0].partition("://")[0] if tcp else "http"

    def log(self) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")[-6000:]
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return os.path.getsize(self.stderr_path)
        except OSError:
            return 0

    def log_since(self, offset: int, end: int | None = None) -> str:
        """What the server wrote to stderr from byte `offset` (up to byte `end`)."""
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(offset)
                return f.read(-1 if end is None else max(0, end - offset)).decode(errors="replace")
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL the whole process group if needed."""
        if self.proc is None:
            return None
        stop_child(self.proc, timeout, session=True)
        self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode
