"""What TLS costs, engine by engine: per request, and per handshake.

    python -m comparisons.bench_tls [--engines tasklets,epoll,asyncio,threaded,gevent]
                                    [--connections 100] [--duration 5] [--repeat 3]

For each engine, four wrk runs (`wrk -t1 -cN -dS`, wrk pinned to CPU 1, the
server to CPU 0) against the demo app's `/` (13 bytes): plain HTTP and TLS
(a throw-away self-signed RSA-2048 certificate, made with the openssl
command), each with keep-alive and with a new connection per request
(`Connection: close`, so wrk reconnects: a TCP handshake per request, and
a TLS handshake too). The server's CPU time (user + system, read from
/proc) over the requests it answered is its CPU per request. Then:

* TLS per request = TLS keep-alive - plain keep-alive (encrypting a
  request and its response on a warm connection);
* TLS per handshake = (TLS new connection - plain new connection) - TLS per
  request (what a new TLS connection costs beyond a new TCP one).

A 1 s run before each measured one warms the server up. With --repeat N
each cell is the median of N runs (the rows of the four runs interleaved,
so a passing load on a shared machine spreads over all of them).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from comparisons import wrk
from comparisons.childproc import LISTENING, child_env, pin, process_tree, read_announcement, stop_child
from comparisons.nginx import self_signed_certificate

DEFAULT_ENGINES = ("tasklets", "epoll", "asyncio", "threaded", "gevent")
SERVER_CPU = 0
CLIENT_CPU = 1
WARMUP_SECONDS = 1.0


@dataclass
class Run:
    """One wrk run against one server: its rate and the server's CPU per request."""

    rps: float
    cpu_us: float
    errors: int


def cpu_seconds(proc: subprocess.Popen) -> float:
    """User + system CPU time of the server (and any process it forked)."""
    times = [process.cpu_times() for process in process_tree(proc)]
    return sum(t.user + t.system for t in times)


def measure(engine: str, tls_files: tuple[str, str] | None, new_connections: bool,
            connections: int, duration: float) -> Run:
    """Start `engine` (plain, or TLS with `tls_files`), load it with wrk, stop it."""
    cmd = [sys.executable, "-m", "flash_green", "serve", "flash_green.apps.demo:app", "--engine", engine,
           "-b", "127.0.0.1:0", "--log-level", "warning", "--max-connections", str(connections * 4)]
    if tls_files is not None:
        cmd += ["--certfile", tls_files[0], "--keyfile", tls_files[1]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=child_env(), start_new_session=True)
    try:
        match, seen = read_announcement(proc, LISTENING, 30)
        if match is None:
            raise RuntimeError(f"{engine} did not start: {seen!r}")
        pin(proc.pid, SERVER_CPU)
        scheme = "https" if tls_files is not None else "http"
        url = f"{scheme}://127.0.0.1:{match.group(2)}/"
        headers = {"Connection": "close"} if new_connections else None
        wrk.run(url, connections=connections, duration=WARMUP_SECONDS, headers=headers, cpu=CLIENT_CPU)
        before = cpu_seconds(proc)
        result = wrk.run(url, connections=connections, duration=duration, headers=headers, cpu=CLIENT_CPU)
        used = cpu_seconds(proc) - before
    finally:
        stop_child(proc, 10, session=True)
        proc.stdout.close()
    return Run(result.rps, used / max(result.requests, 1) * 1e6, sum(result.errors.values()))


def median_run(runs: list[Run]) -> Run:
    return Run(statistics.median(r.rps for r in runs), statistics.median(r.cpu_us for r in runs),
               sum(r.errors for r in runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(DEFAULT_ENGINES))
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=1, help="median of this many runs per cell")
    args = parser.parse_args(argv)
    if not wrk.available():
        print("bench_tls needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    print(f"wrk -t1 -c{args.connections} -d{args.duration:g}s, server on CPU {SERVER_CPU}, wrk on CPU "
          f"{CLIENT_CPU}; CPU = server CPU time per request, us; median of {args.repeat}\n")
    print("| engine | plain keep-alive: req/s, CPU | TLS keep-alive: req/s, CPU | plain new conn.: req/s, CPU "
          "| TLS new conn.: req/s, CPU | TLS per request | TLS per handshake |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="flash-bench-tls-") as directory:
        tls_files = self_signed_certificate(directory)
        for engine in args.engines.split(","):
            cells = [(secure, fresh) for fresh in (False, True) for secure in (False, True)]
            samples: dict[tuple[bool, bool], list[Run]] = {cell: [] for cell in cells}
            for _ in range(args.repeat):
                for secure, fresh in cells:
                    samples[secure, fresh].append(measure(engine, tls_files if secure else None, fresh,
                                                          args.connections, args.duration))
            runs = {cell: median_run(found) for cell, found in samples.items()}
            per_request = runs[True, False].cpu_us - runs[False, False].cpu_us
            per_handshake = runs[True, True].cpu_us - runs[False, True].cpu_us - per_request
            shown = [f"{run.rps:,.0f}, {run.cpu_us:.0f}" + (f" ({run.errors} errors)" if run.errors else "")
                     for run in (runs[False, False], runs[True, False], runs[False, True], runs[True, True])]
            print(f"| {engine} | " + " | ".join(shown) + f" | +{per_request:.0f} us | +{per_handshake:.0f} us |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
