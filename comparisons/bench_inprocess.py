"""The in-process models side by side: hello keep-alive req/s, and RSS per idle connection.

    python -m comparisons.bench_inprocess                 # everything, ~3 minutes
    python -m comparisons.bench_inprocess --skip-idle --rounds 5
    python -m comparisons.bench_inprocess --skip-throughput --idle 10000

Throughput. Every server answers `GET /` with the demo app's 13-byte hello:
Flash's threaded, epoll, event (`--threads 4`) and tasklets engines through
the CLI, and two reference servers with the same thread budget or model:
waitress serving the same WSGI app with 4 threads (event runs with 4 too),
and http.server's ThreadingHTTPServer (a thread per connection, like
threaded) with a minimal HTTP/1.1 keep-alive handler - not WSGI, so it does
less per request than we do - and `disable_nagle_algorithm` (TCP_NODELAY:
without it every response pays a 40 ms Nagle/delayed-ACK stall and the
comparison would measure a socket option). Each server runs in its own
process pinned to CPU 0, wrk (`-t1 -c100 -d5s` by default) on CPU 1.
Servers are measured in interleaved rounds so that a noisy neighbour hits
them all alike; the table gives every round and the median, and the ratios
are medians of the same run. Next to req/s, the server's CPU time (user +
system, all threads) per request served, and the share of the server's CPU
that the rest of the machine took meanwhile: on a shared machine req/s
follows that share (and a server with more threads gets more of the CPU
from the scheduler), while CPU time per request moves far less. Nothing
here is a test: numbers depend on the machine, only the ratios are quoted.

Idle connections. For each engine: open N keep-alive connections, make one
request on each (all answered), keep them all open, and read the server's
RSS (all threads) before and after: the difference divided by N is what
one idle keep-alive client costs the server, beyond the kernel's socket
buffers (kernel memory, not in RSS).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil

from comparisons.childproc import (
    LISTENING,
    ROOT,
    child_env,
    read_announcement,
    stop_child,
)

APP = "flash_green.apps.demo:app"
HELLO = b"Hello, World!"
_REQUESTS_PER_SEC = re.compile(r"Requests/sec:\s+([0-9.]+)")
_REQUEST_COUNT = re.compile(r"(\d+) requests in")
_ERRORS = re.compile(r"(Socket errors:.*|Non-2xx or 3xx responses:.*)")


@dataclass(frozen=True)
class Server:
    """One server under test: a label and the command that starts it on port 0
    (`connections`: the wrk concurrency it is run at, when not the run's)."""

    label: str
    argv: tuple[str, ...]
    connections: int | None = None


def flash_server(engine: str, *options: str) -> Server:
    label = engine + (" " + " ".join(options) if options else "")
    return Server(label, (sys.executable, "-m", "flash_green", "serve", APP, "--engine", engine,
                          "-b", "127.0.0.1:0", "--log-level", "warning", *options))


def peer_server(name: str) -> Server:
    return Server(name, (sys.executable, "-m", "comparisons.bench_inprocess", "--serve-peer", name))


#: (numerator, denominator, the ratio the study aims at)
TARGETS = [
    ("epoll", "tasklets", 0.9),
    ("event --threads 4", "waitress (4 threads)", 1.5),
    ("threaded", "ThreadingHTTPServer+NODELAY", 1.2),
]


def throughput_servers() -> list[Server]:
    from flash_green import engines

    servers = [flash_server("threaded"), flash_server("epoll"), flash_server("event", "--threads", "4")]
    if "tasklets" in engines.REGISTRY:
        servers.append(flash_server("tasklets"))
    servers += [peer_server("waitress (4 threads)"), peer_server("ThreadingHTTPServer+NODELAY")]
    return servers


# -- the reference servers, run as `--serve-peer NAME` in a child process ------------

class HelloHandler(BaseHTTPRequestHandler):
    """The smallest correct HTTP/1.1 keep-alive hello for http.server."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(HELLO)))
        self.end_headers()
        self.wfile.write(HELLO)

    def log_message(self, format: str, *args) -> None:
        """Access logs off, as for every other server here."""


def serve_peer(name: str) -> None:
    if name.startswith("ThreadingHTTPServer"):
        ThreadingHTTPServer.daemon_threads = True
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), HelloHandler)
        announce(httpd.server_address[1])
        httpd.serve_forever()
    elif name == "raw epoll canned":
        from comparisons import canned

        sock = listener()
        sock.setblocking(False)
        announce(sock.getsockname()[1])
        canned.serve(sock)
    elif name.startswith("waitress"):
        import waitress

        from flash_green.apps.demo import app

        sock = listener(backlog=2048)
        announce(sock.getsockname()[1])
        # connection_limit: waitress's default (100) would sit exactly at c=100.
        waitress.serve(app, sockets=[sock], threads=4, connection_limit=2000, _quiet=True)
    else:
        raise SystemExit(f"unknown peer {name!r}")


def listener(backlog: int = 4096) -> socket.socket:
    """A peer's listening socket on an ephemeral port, with TCP_NODELAY (which
    Linux copies to every accepted socket)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


def announce(port: int) -> None:
    print(f"listening on http://127.0.0.1:{port}", flush=True)


# -- running servers ----------------------------------------------------------------

@dataclass
class Running:
    server: Server
    proc: subprocess.Popen
    port: int

    def stop(self) -> None:
        """SIGTERM our child (by its PID), then SIGKILL if it lingers."""
        stop_child(self.proc, grace=15)
        self.proc.stdout.close()


SERVER_CPU, CLIENT_CPU = 0, 1


def pinned(argv: list[str], cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu), *argv]
    return argv


def start(server: Server, *extra: str) -> Running:
    proc = subprocess.Popen(pinned([*server.argv, *extra], SERVER_CPU), cwd=ROOT, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    match, _ = read_announcement(proc, LISTENING, timeout=30)
    if match:
        return Running(server, proc, int(match.group(2)))
    proc.kill()
    raise RuntimeError(f"{server.label} did not start")


@dataclass
class Run:
    """One measured wrk run: its rate, the server's CPU time per request, and
    how much of the server's CPU other processes took meanwhile."""

    rate: float
    cpu_us_per_request: float
    neighbours: float
    errors: str


def cpu_busy_seconds(cpu: int) -> float:
    """Time CPU `cpu` has spent not idle since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                ticks = [int(v) for v in line.split()[1:]]
                idle = ticks[3] + ticks[4]  # idle + iowait
                return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    return 0.0


def server_cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) of the server and every process
    it forked: live workers, and the children it reaped (a CGI request)."""
    total = 0.0
    root = psutil.Process(pid)
    for proc in (root, *root.children(recursive=True)):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def wrk(port: int, connections: int, seconds: int, server_pid: int | None = None,
        timeout: int = 2) -> Run:
    """Run wrk against 127.0.0.1:port. With `server_pid`, also charge the
    server's CPU time (user + system, all threads) to the requests served,
    and measure what share of the server's CPU the rest of the machine
    (other processes, interrupt work) took during the run: on a shared
    machine that, not the server, can set the req/s. A request unanswered
    after `timeout` seconds counts as an error (wrk's default is 2)."""
    cpu_before = server_cpu_seconds(server_pid) if server_pid else 0.0
    busy_before = cpu_busy_seconds(SERVER_CPU)
    started = time.monotonic()
    out = subprocess.run(
        pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout}s",
                f"http://127.0.0.1:{port}/"], CLIENT_CPU),
        capture_output=True, text=True, timeout=seconds + timeout + 60, check=False,
    ).stdout
    elapsed = time.monotonic() - started
    cpu = server_cpu_seconds(server_pid) - cpu_before if server_pid else 0.0
    others = max(0.0, cpu_busy_seconds(SERVER_CPU) - busy_before - cpu)
    rate, count = _REQUESTS_PER_SEC.search(out), _REQUEST_COUNT.search(out)
    if not rate or not count:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    requests = max(1, int(count.group(1)))
    return Run(float(rate.group(1)), cpu / requests * 1e6, others / elapsed,
               "; ".join(_ERRORS.findall(out)))


# -- throughput --------------------------------------------------------------------

def measure_throughput(servers: list[Server], rounds: int, connections: int,
                       seconds: int, timeout: int = 2) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {s.label: [] for s in servers}
    for number in range(1, rounds + 1):
        for server in servers:
            running = start(server)
            clients = server.connections or connections
            try:
                wrk(running.port, clients, 1, timeout=timeout)  # warm-up: caches, first connections
                run = wrk(running.port, clients, seconds, running.proc.pid, timeout)
            finally:
                running.stop()
            runs[server.label].append(run)
            note = f"  ({run.errors})" if run.errors else ""
            print(f"  round {number}: {server.label:30} {run.rate:10.0f} req/s "
                  f"{run.cpu_us_per_request:7.1f} us CPU/request; the rest of the machine "
                  f"took {run.neighbours:4.0%} of CPU {SERVER_CPU}{note}", flush=True)
    return runs


def report_throughput(runs: dict[str, list[Run]], connections: int, seconds: int,
                      targets: list[tuple[str, str, float]]) -> None:
    """The medians of the rounds, then (ours, peer, aim) `targets` as ratios of medians."""
    print(f"\nhello, keep-alive, wrk -t1 -c{connections} -d{seconds}s "
          f"(server on CPU {SERVER_CPU}, wrk on CPU {CLIENT_CPU}), medians of the rounds:")
    rates = {label: statistics.median(r.rate for r in values) for label, values in runs.items()}
    costs = {label: statistics.median(r.cpu_us_per_request for r in values)
             for label, values in runs.items()}
    width = max(map(len, runs), default=0) + 2
    for label, values in runs.items():
        rounds = " ".join(f"{r.rate:7.0f}" for r in values)
        taken = statistics.median(r.neighbours for r in values)
        print(f"  {label:{width}} {rates[label]:7.0f} req/s {costs[label]:6.1f} us CPU/request"
              f"  others took {taken:4.0%} of CPU {SERVER_CPU}   rounds: {rounds}")
    print("\nratios of medians from this run: req/s, and requests per CPU-second of the")
    print("server (= peer's CPU/request over ours: what the req/s ratio becomes when both")
    print(f"saturate a core; it holds when other load shares CPU {SERVER_CPU}):")
    for ours, peer, aim in targets:
        if ours in rates and peer in rates:
            ratio = rates[ours] / rates[peer]
            per_cpu = costs[peer] / costs[ours]
            print(f"  {ours:18} / {peer:28} req/s {ratio:5.2f} ({verdict(ratio, aim)}), "
                  f"per CPU-second {per_cpu:5.2f} ({verdict(per_cpu, aim)})   aim >= {aim}")


def verdict(ratio: float, aim: float) -> str:
    return "meets" if ratio >= aim else "MISSES"


# -- idle connections ----------------------------------------------------------------

def open_idle_connections(port: int, count: int) -> list[socket.socket]:
    """`count` keep-alive connections, each with one answered request."""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(request)
        data = b""
        while not data.endswith(HELLO):
            piece = sock.recv(4096)
            if not piece:
                raise RuntimeError("server closed a connection before answering")
            data += piece
        socks.append(sock)
    return socks


def idle_options(server: Server, count: int) -> tuple[str, ...]:
    """The CLI options that let a Flash engine hold `count` idle keep-alive
    connections (its defaults would time them out or refuse them); peers take none."""
    if server.argv[1:3] != ("-m", "flash_green"):
        return ()
    return ("--keep-alive", "600", "--max-connections", str(count + 100), "--backlog", "4096")


def idle_cost(server: Server, count: int) -> float:
    """Server RSS per idle keep-alive connection, in bytes."""
    running = start(server, *idle_options(server, count))
    process = psutil.Process(running.proc.pid)
    try:
        for sock in open_idle_connections(running.port, 200):  # warm up allocators
            sock.close()
        time.sleep(0.5)  # let the server finish closing them before the baseline
        before = process.memory_info().rss
        socks = open_idle_connections(running.port, count)
        after = process.memory_info().rss
        for sock in socks:
            sock.close()
    finally:
        running.stop()
    return (after - before) / count


def report_idle(count: int) -> None:
    print(f"\nRSS per idle keep-alive connection ({count} connections, one request each, held open):")
    for engine, options in (("threaded", ()), ("epoll", ()), ("event", ("--threads", "4"))):
        server = flash_server(engine, *options)
        print(f"  {server.label:20} {idle_cost(server, count) / 1024:7.2f} KB", flush=True)


def bench_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every in-process benchmark takes (its docstring's first paragraph as description)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--idle", type=int, default=5000, help="idle connections to hold")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--serve-peer", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = bench_arguments(__doc__).parse_args(argv)
    if args.serve_peer:
        serve_peer(args.serve_peer)
        return 0
    if not args.skip_throughput:
        if not shutil.which("wrk"):
            print("wrk is not installed: skipping the throughput part", file=sys.stderr)
        else:
            runs = measure_throughput(throughput_servers(), args.rounds, args.connections,
                                      args.duration)
            report_throughput(runs, args.connections, args.duration, TARGETS)
    if not args.skip_idle:
        report_idle(args.idle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
