"""The process models side by side: CGI against bare fork + exec, prefork and worker against gunicorn.

    python -m comparisons.bench_processes                   # everything, ~9 minutes
    python -m comparisons.bench_processes --only cgi --rounds 3 --seconds 5
    python -m comparisons.bench_processes --only prefork worker --json out.json

CGI. What does the server add to the cost of starting the program? For
the same child - `tests/cgi-bin/hello.sh` (a shell script) and the WSGI
gateway `python -m flash_green.cgi flash_green.apps.demo:app` - it measures
in one run: (a) the bare loop, fork + exec + read stdout + wait, one child
after another, with `subprocess.Popen` (the spawn path the engine uses) and
with `os.posix_spawn`; (b) the `cgi` engine serving it to one keep-alive
client (and to one client opening a connection per request); (c) for
reference, the standard library's `http.server --cgi` serving the same
script (HTTP/1.0, a connection per request). The ratio "bare / served" says
what our bridge costs on top of the fork + exec itself. Because rounds of
seconds each drift apart on a busy machine, (d) alternates one bare spawn
and one served request, `--pairs` times, and compares their median
latencies: at one client, requests per second are 1000 / milliseconds.

Processes. `prefork` (2 workers) beside gunicorn's sync worker (`-w 2`),
and `worker` (2 processes x 4 threads) beside gunicorn's gthread worker
(`-w 2 --threads 4`), on the demo app's `GET /` hello: keep-alive at as many
clients as the model has slots (2, and 8), a connection per request at the
same counts, and for worker/gthread also 32 keep-alive clients, more than
its 8 threads, measured with our generator (it counts every client left
waiting past 2 s): gthread parks idle connections in a selector, worker
pins a thread per connection, so 24 clients wait in the backlog.
gunicorn sync does not keep connections alive at all (it closes after each
response); wrk then reconnects, so its keep-alive row is really
reconnect-per-request, and the new-connection rows are the like-for-like
comparison.

Fairness. Every server runs pinned to CPU 0 (all its processes, CGI
children included), the load generator (wrk when installed, for keep-alive
runs; ours for a connection per request) on CPU 1, and the bare loops on
CPU 0 too. Servers are measured in interleaved rounds so that a noisy
neighbour hits them all alike; each table shows the median of the rounds,
and a ratio is the median of its per-round ratios. Nothing here is a
test: numbers depend on the machine, only ratios are quoted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from comparisons.childproc import child_env
from comparisons.loadgen import run_load
from comparisons.peers import PEERS
from comparisons.servers import ROOT, ServerUnderTest, Target, engine_target, peer_target

SERVER_CPU = 0
LOAD_CPU = 1
CGI_BIN = os.path.join(ROOT, "tests", "cgi-bin")
HELLO_SCRIPT = os.path.join(CGI_BIN, "hello.sh")
DEMO_APP = "flash_green.apps.demo:app"
GATEWAY_ARGV = [sys.executable, "-m", "flash_green.cgi", DEMO_APP]


@dataclass
class Row:
    """One measured configuration: a rate per round."""

    group: str
    label: str
    rates: list[float] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0


# -- bare fork + exec loops ----------------------------------------------------------

def _cgi_environment() -> dict[str, str]:
    """The meta-variables of a GET / (what the engine would pass)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GATEWAY_INTERFACE": "CGI/1.1",
            "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_SOFTWARE": "flash", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1"}


def spawn_with_popen(argv: list[str], env: dict[str, str]) -> bytes:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env,
                            close_fds=True, start_new_session=True)
    out = proc.stdout.read()
    proc.stdout.close()
    proc.wait()
    return out


def spawn_with_posix_spawn(argv: list[str], env: dict[str, str]) -> bytes:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(argv[0], argv, env, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, write_end, 1),
        ], setsid=True)
    finally:
        os.close(write_end)
    chunks = []
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return b"".join(chunks)


def bare_rate(spawn: Callable[[list[str], dict[str, str]], bytes], argv: list[str],
              env: dict[str, str], seconds: float) -> tuple[float, int]:
    """Children per second, one after another, on SERVER_CPU; and how many
    did not print the hello."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {SERVER_CPU})
    try:
        count = failed = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            failed += b"Hello, World!" not in spawn(argv, env)
            count += 1
        return count / elapsed, failed
    finally:
        os.sched_setaffinity(0, before)


# -- servers ---------------------------------------------------------------------------

class ReferenceServer:
    """`python -m http.server --cgi` in a scratch directory holding cgi-bin/hello.sh."""

    _PORT = re.compile(rb"port (\d+)")

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="flash-httpserver-cgi-")
        # Run as root, http.server drops to `nobody` before exec: it must reach the script.
        os.chmod(self.dir, 0o755)
        os.mkdir(os.path.join(self.dir, "cgi-bin"))
        shutil.copy2(HELLO_SCRIPT, os.path.join(self.dir, "cgi-bin", "hello.sh"))
        argv = [sys.executable, "-u", "-m", "http.server", "--cgi", "--bind", "127.0.0.1", "0"]
        self.proc = subprocess.Popen(argv, cwd=self.dir, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        os.sched_setaffinity(self.proc.pid, {SERVER_CPU})
        self.port = self._read_port()

    def _read_port(self) -> int:
        seen = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                seen += os.read(self.proc.stdout.fileno(), 4096)
                match = self._PORT.search(seen)
                if match:
                    return int(match.group(1))
        self.stop()
        raise RuntimeError(f"http.server did not start: {seen!r}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


#: The row with more keep-alive clients than `worker` has threads.
STARVED = "32 (ours)"

#: seconds -> (requests or children per second, errors)
Measurement = Callable[[float], tuple[float, int]]


@dataclass
class Item:
    row: Row
    measure: Measurement


def served(target: Target, path: str, clients: int, new_conn: bool, log_path: str,
           prefer_wrk: bool = True) -> Measurement:
    def measure(seconds: float) -> tuple[float, int]:
        with ServerUnderTest(target, cpus=[SERVER_CPU], log_path=log_path) as server:
            result = run_load(server.url(path), concurrency=clients, duration=seconds, warmup=0.5,
                              new_conn=new_conn, cpu=LOAD_CPU, timeout=2, prefer_wrk=prefer_wrk)
        return result.rps, result.error_total
    return measure


def served_by_http_server(path: str) -> Measurement:
    def measure(seconds: float) -> tuple[float, int]:
        server = ReferenceServer()
        try:
            result = run_load(server.url(path), concurrency=1, duration=seconds, warmup=0.5,
                              new_conn=True, cpu=LOAD_CPU, timeout=5)
        finally:
            server.stop()
        return result.rps, result.error_total
    return measure


def bare(spawn: Callable[[list[str], dict[str, str]], bytes], argv: list[str],
         env: dict[str, str]) -> Measurement:
    return lambda seconds: bare_rate(spawn, argv, env, seconds)


# -- CGI: bare and served, one request after the other ----------------------------------

def _request_on(sock: socket.socket, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    data = b""
    while b"Hello, World!" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError("the server closed the connection")
        data += piece
    return data


def paired_latency(target: Target, path: str, argv: list[str], env: dict[str, str], pairs: int,
                   log_path: str) -> tuple[float, float]:
    """Median ms of a bare spawn and of a served request, alternated one by one.

    Alternating cancels the drift of a busy machine, which throughput runs
    seconds apart do not; at one client, req/s is 1000 / these milliseconds.
    The client and the bare loop both live in this process: the bare spawn
    on SERVER_CPU (as the server's children), the request on LOAD_CPU.
    """
    bare_ms, served_ms = [], []
    before = os.sched_getaffinity(0)
    with ServerUnderTest(target, cpus=[SERVER_CPU], log_path=log_path) as server, \
            socket.create_connection((server.host, server.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for _ in range(pairs):
                os.sched_setaffinity(0, {SERVER_CPU})
                start = time.perf_counter()
                spawn_with_popen(argv, env)
                bare_ms.append((time.perf_counter() - start) * 1000)
                os.sched_setaffinity(0, {LOAD_CPU})
                start = time.perf_counter()
                _request_on(sock, path)
                served_ms.append((time.perf_counter() - start) * 1000)
        finally:
            os.sched_setaffinity(0, before)
    return statistics.median(bare_ms), statistics.median(served_ms)


def paired_report(pairs: int, log_path: str) -> list[str]:
    env = _cgi_environment()
    cases = [
        ("hello.sh", engine_target(f"cgi --cgi-dir {CGI_BIN}"), "/hello.sh", [HELLO_SCRIPT], env, pairs),
        ("gateway + demo app", engine_target("cgi"), "/", GATEWAY_ARGV,
         child_env(**env), max(10, pairs // 25)),
    ]
    lines = []
    for name, target, path, argv, spawn_env, count in cases:
        bare_ms, served_ms = paired_latency(target, path, argv, spawn_env, count, log_path)
        lines.append(f"{name}, {count} alternated pairs: bare fork+exec {bare_ms:.3f} ms "
                     f"({1000 / bare_ms:,.0f}/s), served by flash cgi {served_ms:.3f} ms "
                     f"({1000 / served_ms:,.0f}/s): served / bare = {served_ms / bare_ms:.2f}x")
    return lines


# -- the groups -------------------------------------------------------------------------

def cgi_group(log_path: str) -> list[Item]:
    env = _cgi_environment()
    gateway_env = child_env(**env)
    scripts = engine_target(f"cgi --cgi-dir {CGI_BIN}")
    gateway = engine_target("cgi")
    return [
        Item(Row("cgi", "bare loop: Popen(hello.sh)"), bare(spawn_with_popen, [HELLO_SCRIPT], env)),
        Item(Row("cgi", "bare loop: posix_spawn(hello.sh)"),
             bare(spawn_with_posix_spawn, [HELLO_SCRIPT], env)),
        Item(Row("cgi", "flash cgi: /hello.sh, 1 keep-alive client"),
             served(scripts, "/hello.sh", 1, False, log_path)),
        Item(Row("cgi", "flash cgi: /hello.sh, connection per request"),
             served(scripts, "/hello.sh", 1, True, log_path)),
        Item(Row("cgi", "http.server --cgi: /cgi-bin/hello.sh (HTTP/1.0)"),
             served_by_http_server("/cgi-bin/hello.sh")),
        Item(Row("cgi", "bare loop: Popen(gateway + demo app)"),
             bare(spawn_with_popen, GATEWAY_ARGV, gateway_env)),
        Item(Row("cgi", "flash cgi: gateway + demo app, 1 keep-alive client"),
             served(gateway, "/", 1, False, log_path)),
    ]


def process_group(models: Sequence[str], log_path: str) -> list[Item]:
    peers = {peer.name: peer for peer in PEERS}
    plan = []
    if "prefork" in models:
        ours, theirs = engine_target("prefork --workers 2"), peer_target(peers["gunicorn-sync"])
        for label, target in (("flash prefork -w 2", ours), ("gunicorn sync -w 2", theirs)):
            plan += [(f"{label}: 2 keep-alive clients", target, 2, False),
                     (f"{label}: connection per request, 2 clients", target, 2, True)]
    if "worker" in models:
        ours = engine_target("worker --workers 2 --threads 4")
        theirs = peer_target(peers["gunicorn-gthread"])
        for label, target in (("flash worker -w 2 x 4 threads", ours),
                              ("gunicorn gthread -w 2 --threads 4", theirs)):
            plan += [(f"{label}: 8 keep-alive clients", target, 8, False),
                     (f"{label}: connection per request, 8 clients", target, 8, True),
                     (f"{label}: {STARVED} keep-alive clients", target, 32, False)]
    # Our generator for the 32-client rows: it counts a client left waiting
    # past the 2 s timeout as an error, where wrk's count is unreliable.
    return [Item(Row("processes", label),
                 served(target, "/", clients, new_conn, log_path, prefer_wrk=STARVED not in label))
            for label, target, clients, new_conn in plan]


# -- running and reporting -------------------------------------------------------------

def run_rounds(items: list[Item], rounds: int, seconds: float) -> None:
    """Interleaved: round 1 of everything, then round 2, ..."""
    for number in range(1, rounds + 1):
        for item in items:
            rate, errors = item.measure(seconds)
            item.row.rates.append(rate)
            item.row.errors.append(errors)
            print(f"  round {number}: {item.row.label}: {rate:,.1f}/s"
                  + (f" ({errors} errors)" if errors else ""), flush=True)


def table(rows: list[Row]) -> str:
    lines = ["| configuration | req/s (median) | rounds | errors |", "| --- | ---: | --- | ---: |"]
    for row in rows:
        rounds = ", ".join(f"{r:,.0f}" for r in row.rates)
        lines.append(f"| {row.label} | {row.median:,.1f} | {rounds} | {sum(row.errors)} |")
    return "\n".join(lines)


def ratios(rows: list[Row]) -> list[str]:
    """Per round (the two rows were measured minutes apart at most), then the median."""
    by = {row.label: row.rates for row in rows}

    def ratio(a: str, b: str, text: str) -> str | None:
        pairs = [x / y for x, y in zip(by.get(a, []), by.get(b, [])) if y]
        if not pairs:
            return None
        spread = f" (rounds {min(pairs):.2f}-{max(pairs):.2f})" if len(pairs) > 1 else ""
        return f"{text}: {statistics.median(pairs):.2f}x{spread}"
    found = [
        ratio("bare loop: Popen(hello.sh)", "flash cgi: /hello.sh, 1 keep-alive client",
              "bare Popen loop / flash cgi (hello.sh, keep-alive)"),
        ratio("bare loop: Popen(hello.sh)", "flash cgi: /hello.sh, connection per request",
              "bare Popen loop / flash cgi (hello.sh, connection per request)"),
        ratio("bare loop: posix_spawn(hello.sh)", "flash cgi: /hello.sh, 1 keep-alive client",
              "bare posix_spawn loop / flash cgi (hello.sh, keep-alive)"),
        ratio("bare loop: Popen(gateway + demo app)", "flash cgi: gateway + demo app, 1 keep-alive client",
              "bare gateway loop / flash cgi (gateway, keep-alive)"),
        ratio("flash cgi: /hello.sh, connection per request",
              "http.server --cgi: /cgi-bin/hello.sh (HTTP/1.0)",
              "flash cgi / http.server --cgi (connection per request)"),
    ]
    for clients, mode in (("2", "keep-alive clients"), ("2", "connection per request, 2 clients")):
        suffix = f"{clients} {mode}" if mode == "keep-alive clients" else mode
        found.append(ratio(f"flash prefork -w 2: {suffix}", f"gunicorn sync -w 2: {suffix}",
                           f"flash prefork / gunicorn sync ({suffix})"))
    for suffix in ("8 keep-alive clients", "connection per request, 8 clients",
                   f"{STARVED} keep-alive clients"):
        found.append(ratio(f"flash worker -w 2 x 4 threads: {suffix}",
                           f"gunicorn gthread -w 2 --threads 4: {suffix}",
                           f"flash worker / gunicorn gthread ({suffix})"))
    return [line for line in found if line]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=["cgi", "prefork", "worker"],
                        default=["cgi", "prefork", "worker"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--pairs", type=int, default=500,
                        help="alternated bare/served CGI requests (0 = skip)")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--log", default=os.path.join(tempfile.gettempdir(), "flash-bench-processes.log"),
                        help="the servers' stderr")
    args = parser.parse_args(argv)
    if os.cpu_count() < 2:
        print("needs 2 CPUs (server on CPU 0, load on CPU 1)", file=sys.stderr)
        return 2
    items: list[Item] = []
    if "cgi" in args.only:
        items += cgi_group(args.log)
    models = [m for m in args.only if m in ("prefork", "worker")]
    if models:
        items += process_group(models, args.log)
    paired = paired_report(args.pairs, args.log) if "cgi" in args.only and args.pairs else []
    run_rounds(items, args.rounds, args.seconds)
    rows = [item.row for item in items]
    print()
    print(table(rows))
    print()
    for line in ratios(rows) + paired:
        print("- " + line)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([{"group": r.group, "label": r.label, "rates": r.rates, "median": r.median,
                        "errors": r.errors} for r in rows], handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
