"""Stops and reloads under load: does SIGTERM or HUP lose a request?

    python -m comparisons.bench_stops [--engines E ...] [--signals term hup ...]

For each engine and case, a server serves the demo app's `/` while
`wrk -t1 -c50 -d10s` drives it; the signal is sent halfway. wrk then tells
what the clients saw:

* non-2xx responses and read/write/timeout socket errors are lost requests
  (a reset, an EOF where a response was due, a connection that hung);
* but wrk cannot tell a refused connection from a lost request: once a
  TERM closed the listener, each of its reconnects fails at its first
  write and counts as a write error. So a probe runs beside wrk - four
  keep-alive clients that behave as wrk's do (the next request as soon as
  a response is in, a new connection after `Connection: close`) - and
  classifies every failure: `refused` (connect refused: the wanted
  behaviour once a stop began) or `lost` (the request was sent and no
  complete 2xx came back: reset, EOF, or a hang past 10 s).

Cases: `term` (one process), `term-w2` and `hup-w2` (`--workers 2`), and
`hup-w2-reuse-port`. After a HUP the server is stopped once wrk is done.
Loopback only; every run is bounded by wrk's duration plus the graceful
timeout.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from comparisons.childproc import LISTENING, child_env, read_announcement, stop_child

ENGINES = ["sequential", "threaded", "epoll", "event", "tasklets", "greenlet", "gevent",
           "eventlet", "asyncio", "asyncio --uvloop", "prefork", "worker"]
CASES = {
    "term": (signal.SIGTERM, []),
    "term-w2": (signal.SIGTERM, ["--workers", "2"]),
    "hup-w2": (signal.SIGHUP, ["--workers", "2"]),
    "hup-w2-reuse-port": (signal.SIGHUP, ["--workers", "2", "--reuse-port"]),
}
#: Engines that are supervised by nature: "term" already has workers.
MULTIPROCESS = {"prefork", "worker"}
_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_REQUESTS = re.compile(r"(\d+) requests in")


REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
PROBE_CLIENTS = 4


class Probe:
    """Keep-alive clients beside wrk that tell a refused connection from a lost request."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.ok = self.refused = 0
        self.lost: list[str] = []
        self.threads = [threading.Thread(target=self._client, daemon=True)
                        for _ in range(PROBE_CLIENTS)]

    def __enter__(self) -> "Probe":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(15)

    def _client(self) -> None:
        while not self.done.is_set():
            try:
                sock = socket.create_connection(self.address, timeout=10)
            except ConnectionRefusedError:
                with self.lock:
                    self.refused += 1
                self.done.wait(0.001)
                continue
            except OSError as exc:
                self._lose(f"connect: {exc!r}")
                continue
            with sock:
                self._requests(sock)

    def _requests(self, sock: socket.socket) -> None:
        """Requests on one connection until it closes; the connection's end is
        the server's to announce (Connection: close), else a request was lost."""
        buffer = b""
        while not self.done.is_set():
            try:
                sock.sendall(REQUEST)
                head, buffer = self._read_until(sock, buffer, b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                while len(buffer) < length:
                    buffer += self._recv(sock)
                buffer = buffer[length:]
            except (OSError, EOFError) as exc:
                self._lose(repr(exc))
                return
            if not head.startswith(b"HTTP/1.1 200"):
                self._lose(head.split(b"\r\n", 1)[0].decode())
                return
            with self.lock:
                self.ok += 1
            if re.search(rb"(?i)\r\nconnection: *close", head):
                return

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        data = sock.recv(65536)
        if not data:
            raise EOFError("EOF where a response was due")
        return data

    def _read_until(self, sock: socket.socket, buffer: bytes, mark: bytes) -> tuple[bytes, bytes]:
        while mark not in buffer:
            buffer += self._recv(sock)
        head, _, rest = buffer.partition(mark)
        return head, rest

    def _lose(self, why: str) -> None:
        with self.lock:
            self.lost.append(why)


@dataclass
class Outcome:
    engine: str
    case: str
    requests: int
    non_2xx: int
    read: int
    write: int
    timeout: int
    connect: int
    probe_ok: int
    probe_refused: int
    probe_lost: list[str]
    exit_code: int | None

    def line(self) -> str:
        kinds = sorted(set(self.probe_lost))
        return (f"{self.engine:17} {self.case:18} wrk: {self.requests:6} requests, non-2xx "
                f"{self.non_2xx}, errors read {self.read} write {self.write} timeout "
                f"{self.timeout} connect {self.connect} | probe: ok {self.probe_ok} refused "
                f"{self.probe_refused} lost {len(self.probe_lost)}{' ' + str(kinds) if kinds else ''}"
                f" | exit {self.exit_code}")


def run_case(engine: str, case: str, duration: int, connections: int) -> Outcome:
    signum, extra = CASES[case]
    name, *options = engine.split()
    cmd = [sys.executable, "-m", "flash_green", "serve", "flash_green.apps.demo:app",
           "--engine", name, "-b", "127.0.0.1:0", "--log-level", "warning",
           "--graceful-timeout", "10", *options, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=child_env(), start_new_session=True)
    try:
        match, seen = read_announcement(proc, LISTENING, 30)
        if match is None:
            raise RuntimeError(f"{engine} did not start: {seen!r}")
        port = int(match.group(2))
        timer = threading.Timer(duration / 2, proc.send_signal, (signum,))
        with Probe(("127.0.0.1", port)) as probe:
            timer.start()
            wrk = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s",
                                  f"http://127.0.0.1:{port}/"],
                                 capture_output=True, text=True, timeout=duration + 60)
            timer.join()
        exit_code = None
        if signum == signal.SIGTERM:
            try:
                exit_code = proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
    finally:
        stop_child(proc, 30, session=True)
        proc.stdout.close()
    out = wrk.stdout
    errors = _ERRORS.search(out)
    connect, read, write, timeout = map(int, errors.groups()) if errors else (0, 0, 0, 0)
    non_2xx = _NON_2XX.search(out)
    requests = _REQUESTS.search(out)
    return Outcome(engine, case, int(requests.group(1)) if requests else 0,
                   int(non_2xx.group(1)) if non_2xx else 0, read, write, timeout, connect,
                   probe.ok, probe.refused, probe.lost, exit_code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", nargs="+", default=ENGINES,
                        help="engines, options after the name: 'asyncio --uvloop'")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--duration", type=int, default=10, help="wrk seconds (signal halfway)")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args(argv)
    for engine in args.engines:
        for case in args.cases:
            if case == "term-w2" and engine.split()[0] in MULTIPROCESS:
                continue  # the same as "term" for them
            print(run_case(engine, case, args.duration, args.connections).line(), flush=True)
            time.sleep(1)  # let TIME_WAIT and the CPU settle between runs
    return 0


if __name__ == "__main__":
    sys.exit(main())
