"""`python -m comparisons.stages`: run the stage table (see the package docstring)."""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import shlex
import sys
import threading
import time

from comparisons import bench_inprocess, wrk
from comparisons.bench_inprocess import CLIENT_CPU, Server
from comparisons.childproc import ROOT, process_tree, raise_fd_limit

from . import __doc__ as DOC
from . import floors, oncpu, report, sampling, targets
from .report import Level, Results, Split, markdown, print_tables
from .targets import Target


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comparisons.stages", description=DOC.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=DOC.split("\n\n", 1)[1])
    parser.add_argument("--engines", nargs="+", metavar="NAME", help="only these engines (names or labels)")
    parser.add_argument("--no-peers", action="store_true", help="no canned loop, uvicorn, gevent.pywsgi")
    parser.add_argument("--levels", default="100,1000",
                        help="wrk concurrencies, comma-separated; the first gives the stage table")
    parser.add_argument("--many", type=int, default=10000,
                        help="the zero-error check at this many keep-alive connections (0: skip)")
    parser.add_argument("--many-engines", default="tasklets,epoll,asyncio")
    parser.add_argument("--many-duration", type=int, default=10,
                        help="seconds per run at --many connections (opening them takes seconds)")
    parser.add_argument("--many-timeout", type=int, default=10,
                        help="wrk --timeout at --many connections: a request's fair latency there is "
                             "c / req/s, about a second on one busy core, not wrk's 2 s default")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per level")
    parser.add_argument("--duration", type=int, default=3, help="seconds per measured wrk run")
    parser.add_argument("--profile-seconds", type=int, default=6, help="py-spy seconds per server (0: no split)")
    parser.add_argument("--rate", type=int, default=400, help="py-spy samples per second")
    parser.add_argument("--floor-rounds", type=int, default=5)
    parser.add_argument("--floor-budget", type=float, default=0.2, help="seconds per stage per round")
    parser.add_argument("--idle", type=int, default=5000, help="idle connections per engine (0: skip)")
    parser.add_argument("--tiny", action="store_true",
                        help="seconds, not minutes: one round, 1 s runs, no c=1000/many/idle (for tests)")
    parser.add_argument("--render", metavar="JSON", help="print the tables of an earlier run's stages.json "
                        "and rewrite the stages.md beside it; nothing is measured")
    parser.add_argument("--out", default=os.path.join(ROOT, "results", time.strftime("stages-%Y%m%d-%H%M%S")))
    return parser


def apply_tiny(args: argparse.Namespace) -> None:
    args.levels = args.levels.split(",")[0]
    args.many = args.idle = 0
    args.rounds = args.duration = args.floor_rounds = 1
    args.profile_seconds = min(args.profile_seconds, 1)
    args.floor_budget = 0.02


def machine() -> str:
    model = ""
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
            f"CPython {platform.python_version()}, load average {load}")


def measure_level(chosen: list[Target], connections: int, args: argparse.Namespace,
                  seconds: int, timeout: int = 2) -> Level:
    print(f"\n-- hello keep-alive, c={connections} (servers with their own c say so) --", flush=True)
    servers = [t.server for t in chosen]
    runs = bench_inprocess.measure_throughput(servers, args.rounds, connections, seconds, timeout)
    return Level.from_runs(connections, runs, {s.label: s.connections for s in servers if s.connections})


def profile(target: Target, connections: int, args: argparse.Namespace) -> tuple[sampling.Profile, oncpu.CpuSamples]:
    """py-spy (Python stacks) and perf (on-CPU samples) on the server while
    wrk loads it, after a warm-up; both pinned to wrk's CPU."""
    running = bench_inprocess.start(target.server)
    clients = target.server.connections or connections
    pid = running.proc.pid
    try:
        bench_inprocess.wrk(running.port, clients, 1)
        load = threading.Thread(target=bench_inprocess.wrk, args=(running.port, clients, args.profile_seconds + 2))
        load.start()
        try:
            pids = [p.pid for p in process_tree(running.proc)]
            spy = sampling.record(pid, args.profile_seconds, args.rate, target.children, CLIENT_CPU)
            perf = oncpu.record(pids, args.profile_seconds, CLIENT_CPU)
            timeout = args.profile_seconds + 60
            return sampling.collect(spy, timeout), oncpu.collect(perf, timeout)
        finally:
            load.join()
    finally:
        running.stop()


def split(python: sampling.Profile, cpu: oncpu.CpuSamples, total_us: float) -> Split:
    """The total divided as perf divides the CPU (Python, recv, send, poll,
    other kernel work), and the Python part as py-spy divides it by stage."""
    python_us = cpu.share("python") * total_us
    kernel = {"recv": "recv", "send": "send", "poll": "scheduling", "kernel": "scheduling"}
    stages, errors = {}, {}
    for stage in sampling.STAGES:
        parts = [part for part, to in kernel.items() if to == stage]
        kernel_share = sum(cpu.share(part) for part in parts)
        stages[stage] = python_us * python.share(stage) + kernel_share * total_us
        perf_error = math.sqrt(kernel_share * (1 - kernel_share) / cpu.samples) if cpu.samples else 1.0
        errors[stage] = math.hypot(python_us * python.error(stage), total_us * perf_error)
    poll_us = (python.stages["poll"] / max(1, python.samples) * python_us + cpu.share("poll") * total_us)
    return Split(total_us=total_us, stages=stages, errors_us=errors, samples=python.samples,
                 cpu_samples=cpu.samples, cpu_us={part: cpu.share(part) * total_us for part in oncpu.PARTS},
                 poll_us=poll_us, hot=python.hot(python_us), hot_lines=python.hot(python_us, by_line=True))


def save_profiles(out: str, label: str, python: sampling.Profile, cpu: oncpu.CpuSamples) -> None:
    """py-spy's and perf's outputs, in OUT/profiles/ (for flame graphs or a second look)."""
    folder = os.path.join(out, "profiles")
    os.makedirs(folder, exist_ok=True)
    name = re.sub(r"[^\w.-]+", "_", label)
    for suffix, text in ((".py-spy.txt", python.raw), (".perf.txt", cpu.raw)):
        with open(os.path.join(folder, name + suffix), "w") as f:
            f.write(text)


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    if args.render:
        results = report.load(args.render)
        print_tables(results)
        write(results, os.path.dirname(args.render))
        return 0
    if args.tiny:
        apply_tiny(args)
    levels = [int(c) for c in args.levels.split(",") if c]
    raise_fd_limit(max([*levels, args.many]) + 1000)  # each of wrk and the server holds one end
    chosen, skipped = choose(args)
    command = "python -m comparisons.stages " + shlex.join(argv if argv is not None else sys.argv[1:])
    print(f"stage floors, in this process ({args.floor_rounds} rounds)...", flush=True)
    results = Results(command=command.strip(), machine=machine(),
                      floors=floors.measure(args.floor_rounds, args.floor_budget).us,
                      peers=[t.label for t in chosen if t.peer], skipped=skipped)
    if wrk.available():
        measure_levels(results, chosen, levels, args)
        if args.profile_seconds:
            measure_splits(results, chosen, levels[0], args)
    else:
        results.skipped.append("wrk is not installed: no load figures, floors only")
    if args.idle:
        measure_idle(results, chosen, args.idle)
    results.machine += f"; load average at the end {' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    print_tables(results)
    write(results, args.out)
    return 0


def choose(args: argparse.Namespace) -> tuple[list[Target], list[str]]:
    chosen, skipped = targets.engine_targets(args.engines)
    if not args.no_peers:
        peers, peers_skipped = targets.peer_targets()
        chosen += peers
        skipped += peers_skipped
    return chosen, skipped


def measure_levels(results: Results, chosen: list[Target], levels: list[int], args: argparse.Namespace) -> None:
    """Every level in turn; past the first, only the servers that take the run's concurrency."""
    for i, connections in enumerate(levels):
        level_targets = chosen if i == 0 else [t for t in chosen if t.server.connections is None]
        results.levels[str(connections)] = measure_level(level_targets, connections, args, args.duration)
    many = [targets.many_connections(t, args.many) for t in chosen if t.label in args.many_engines.split(",")]
    if args.many and many:
        results.levels[str(args.many)] = measure_level(many, args.many, args, args.many_duration,
                                                       args.many_timeout)


def measure_splits(results: Results, chosen: list[Target], connections: int, args: argparse.Namespace) -> None:
    if not (sampling.available() and oncpu.available()):
        results.skipped.append("the split needs py-spy (pip install py-spy) and perf "
                               "(Debian: apt-get install linux-perf): totals only")
        return
    base = results.base_level()
    for target in chosen:
        if target.no_split:
            results.no_split[target.label] = target.no_split
            continue
        print(f"sampling {target.label} under load ({args.profile_seconds} s)...", flush=True)
        python, cpu = profile(target, connections, args)
        results.splits[target.label] = split(python, cpu, base.median(target.label, "cpu_us_per_request"))
        save_profiles(args.out, target.label, python, cpu)


def measure_idle(results: Results, chosen: list[Target], count: int) -> None:
    """RSS per idle keep-alive connection of every engine that serves many at once."""
    for target in chosen:
        if not target.peer and target.server.connections is None:
            print(f"idle connections: {target.label} x {count}...", flush=True)
            server = Server(target.label, target.server.argv)
            results.idle_kb[target.label] = bench_inprocess.idle_cost(server, count) / 1024


def write(results: Results, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "stages.json"), "w") as f:
        f.write(results.to_json())
    with open(os.path.join(out, "stages.md"), "w") as f:
        f.write(markdown(results))
    print(f"\nwrote {out}/stages.json and stages.md")


if __name__ == "__main__":
    sys.exit(main())
