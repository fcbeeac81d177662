"""A/B of source trees in one period: what a change to the hot path buys, measured.

    python -m comparisons.stages.ab main .                        # main against this checkout
    python -m comparisons.stages.ab --engine asyncio --extra=--uvloop HEAD~1 HEAD
    python -m comparisons.stages.ab --measure wrk,idle --rounds 7 before=/some/tree after=.
    python -m comparisons.stages.ab --kernel main .               # the kernel's read-wait wake-up alone

Each TREE is a directory or a git revision (exported with `git archive`
into a temporary directory), optionally labelled `label=TREE`. Every
server runs from its own tree (`python -P`, that tree alone on PYTHONPATH),
so trees are compared by the same harness in the same minutes.

The measures (`--measure`, comma-separated; all three by default):

* instructions: the server's user-space instructions per hello request,
  counted by valgrind's callgrind over an exact number of requests (ours
  at c=100, after a warm-up; `callgrind_control` zeroes the counters
  before and dumps them after). A neighbour's load moves timings by tens
  of percent on a shared machine; it does not move an instruction count.
  What still varies (1-2 % between runs of the same tree) is how many
  events each epoll wait returns. Valgrind is ~50x slower: a tree takes
  a minute or two.
* wrk: server CPU microseconds per request and req/s, `wrk -t1 -c100`,
  server on CPU 0, wrk on CPU 1, in rounds whose order alternates;
  medians (`bench_inprocess.wrk`, as `python -m comparisons.stages`).
* idle: RSS per idle keep-alive connection, N held
  (`bench_inprocess.idle_cost`), rounds interleaved.

`--kernel` instead counts the tasklets kernel's own instructions per I/O
wake-up: 100 readers on socket pairs, a pump writes one byte to each, every
reader is woken, reads and waits again; the difference between runs of
300 and 100 rounds, per wake-up (so start-up cancels out).
"""

from __future__ import annotations

import argparse
import atexit
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from comparisons.bench_inprocess import APP, SERVER_CPU, Running, Server, idle_cost, pinned, wrk
from comparisons.childproc import LISTENING, ROOT, raise_fd_limit, read_announcement, stop_child
from comparisons.loadgen.runner import run_load

MEASURES = ("instructions", "wrk", "idle")
#: Valgrind starts Python in 10-20 s on a busy machine.
START_TIMEOUT = 120


@dataclass(frozen=True)
class Tree:
    label: str
    path: str


def resolve(spec: str) -> Tree:
    """`label=TREE` or `TREE`: a directory as is, else a git revision exported to a temporary one."""
    label, _, tree = spec.rpartition("=")
    label = label or tree
    if os.path.isdir(tree):
        return Tree(label, os.path.abspath(tree))
    path = tempfile.mkdtemp(prefix="ab-tree-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    archive = subprocess.run(["git", "-C", ROOT, "archive", tree], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", path], input=archive, check=True)
    return Tree(label, path)


def server(tree: Tree, engine: str, extra: Sequence[str], prefix: Sequence[str] = ()) -> Server:
    """The hello server of `tree`, with room for many idle connections (as `idle_options`)."""
    return Server(tree.label, ("env", f"PYTHONPATH={tree.path}", *prefix, sys.executable, "-P",
                               "-m", "flash_green", "serve", APP, "--engine", engine, "-b", "127.0.0.1:0",
                               "--log-level", "warning", "--keep-alive", "600",
                               "--max-connections", "20100", "--backlog", "4096", *extra))


def launch(argv: Sequence[str]) -> Running:
    proc = subprocess.Popen(pinned(list(argv), SERVER_CPU), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    match, seen = read_announcement(proc, LISTENING, timeout=START_TIMEOUT)
    if not match:
        proc.kill()
        raise RuntimeError(f"{argv} did not start: {seen[-500:]!r}")
    return Running(Server("", tuple(argv)), proc, int(match.group(2)))


def callgrind_total(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {path}")


def instructions(tree: Tree, engine: str, extra: Sequence[str], requests: int) -> float:
    """User-space instructions per request of `tree`'s server (see the module docstring)."""
    out_dir = tempfile.mkdtemp(prefix="ab-callgrind-")
    try:
        prefix = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/cg.%p")
        running = launch(server(tree, engine, extra, prefix).argv)
        url = f"http://127.0.0.1:{running.port}/"
        try:
            run_load(url, concurrency=100, duration=None, requests=1000, prefer_wrk=False)
            subprocess.run(["callgrind_control", "-z", str(running.proc.pid)], capture_output=True, check=True)
            result = run_load(url, concurrency=100, duration=None, requests=requests, prefer_wrk=False)
            subprocess.run(["callgrind_control", "-d", str(running.proc.pid)], capture_output=True, check=True)
        finally:
            stop_child(running.proc, grace=60)
            running.proc.stdout.close()
        if any(result.errors.values()) or result.requests != requests:
            raise RuntimeError(f"{tree.label}: {result.requests} answered, errors {result.errors}")
        (dump,) = glob.glob(f"{out_dir}/cg.{running.proc.pid}.1")
        return callgrind_total(dump) / requests
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def kernel_instructions(tree: Tree) -> float:
    """The kernel's instructions per I/O wake-up (see the module docstring)."""
    totals = []
    out_dir = tempfile.mkdtemp(prefix="ab-callgrind-")
    try:
        for rounds in (100, 300):
            out = f"{out_dir}/cg.{rounds}"
            subprocess.run(["env", f"PYTHONPATH={tree.path}", "valgrind", "--tool=callgrind",
                            f"--callgrind-out-file={out}", sys.executable, "-P", "-c", WAKE_BENCH,
                            str(rounds)], cwd=ROOT, capture_output=True, check=True)
            totals.append(callgrind_total(out))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return (totals[1] - totals[0]) / (200 * WAKE_READERS)


WAKE_READERS = 100
#: Run as `python -c WAKE_BENCH ROUNDS` with the tree on PYTHONPATH.
WAKE_BENCH = f"""
import socket, sys
import tasklets
from tasklets.io import Socket

pairs = [socket.socketpair() for _ in range({WAKE_READERS})]

def reader(sock):
    raw, trap = sock.socket, sock.read_trap
    while True:
        yield trap
        raw.recv(64)

def main():
    for ours, _ in pairs:
        tasklets.spawn(reader, Socket(ours), daemon=True)
    for _ in range(int(sys.argv[1])):
        for _, theirs in pairs:
            theirs.send(b"x")
        yield from tasklets.sleep(0.000001)

tasklets.run(main)
"""


def wrk_rounds(trees: list[Tree], engine: str, extra: Sequence[str], rounds: int, seconds: int) -> None:
    runs: dict[str, list] = {tree.label: [] for tree in trees}
    for number in range(rounds):
        for tree in trees if number % 2 == 0 else trees[::-1]:
            running = launch(server(tree, engine, extra).argv)
            try:
                wrk(running.port, 100, 1)  # warm-up
                run = wrk(running.port, 100, seconds, running.proc.pid)
            finally:
                stop_child(running.proc, grace=15)
                running.proc.stdout.close()
            runs[tree.label].append(run)
            note = f"  ({run.errors})" if run.errors else ""
            print(f"  round {number + 1}: {tree.label:14} {run.rate:8.0f} req/s "
                  f"{run.cpu_us_per_request:6.1f} us CPU/request{note}", flush=True)
    print(f"wrk -t1 -c100 -d{seconds}s, medians of {rounds} interleaved rounds:")
    for label, values in runs.items():
        costs = " ".join(f"{r.cpu_us_per_request:.1f}" for r in values)
        print(f"  {label:14} {statistics.median(r.rate for r in values):8.0f} req/s "
              f"{statistics.median(r.cpu_us_per_request for r in values):6.1f} us CPU/request"
              f"   (rounds: {costs})", flush=True)


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comparisons.stages.ab",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("trees", nargs="+", metavar="TREE", help="[label=]directory or git revision")
    parser.add_argument("--engine", default="tasklets")
    parser.add_argument("--extra", default="", help="more `serve` options, e.g. --extra=--uvloop")
    parser.add_argument("--measure", default=",".join(MEASURES),
                        help=f"comma-separated subset of: {', '.join(MEASURES)}")
    parser.add_argument("--requests", type=int, default=3000, help="requests counted by callgrind")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved wrk rounds")
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    parser.add_argument("--idle", type=int, default=10000, help="idle connections held")
    parser.add_argument("--kernel", action="store_true", help="only the kernel's wake-up instructions")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    trees = [resolve(spec) for spec in args.trees]
    extra = args.extra.split()
    if args.kernel:
        if shutil.which("valgrind") is None:
            raise SystemExit("--kernel counts instructions with valgrind (apt-get install valgrind)")
        for tree in trees:
            print(f"  {tree.label:14} {kernel_instructions(tree):9,.0f} instructions per wake-up", flush=True)
        return 0
    measures = args.measure.split(",")
    unknown = set(measures) - set(MEASURES)
    if unknown:
        raise SystemExit(f"unknown measure(s): {', '.join(sorted(unknown))}")
    for measure, tool in (("instructions", "valgrind"), ("wrk", "wrk")):
        if measure in measures and shutil.which(tool) is None:
            raise SystemExit(f"--measure {measure} needs {tool} (apt-get install {tool}); "
                             f"the other measures run without it")
    label = f"{args.engine}{' ' + args.extra if args.extra else ''}"
    if "instructions" in measures:
        print(f"{label}: callgrind, user-space instructions per hello request "
              f"({args.requests} requests at c=100):")
        for tree in trees:
            count = instructions(tree, args.engine, extra, args.requests)
            print(f"  {tree.label:14} {count:9,.0f}", flush=True)
    if "wrk" in measures:
        wrk_rounds(trees, args.engine, extra, args.rounds, args.duration)
    if "idle" in measures:
        raise_fd_limit(args.idle + 1000)
        print(f"{label}: RSS per idle keep-alive connection ({args.idle} held), two interleaved rounds:")
        for _ in range(2):
            for tree in trees:
                cost = idle_cost(server(tree, args.engine, extra), args.idle)
                print(f"  {tree.label:14} {cost:7.0f} B", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
