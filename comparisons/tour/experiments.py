"""The tour's experiments: small scripted workloads, each run on a traced server.

An `Experiment` is the one situation that breaks a model: one client that
trickles its request, a burst of requests that each fork, 2,000 idle
keep-alive connections, handlers that block or burn CPU. `run_experiment`
starts the target as `comparisons.servers` starts every server under test,
with `--trace-requests`, optionally holds idle connections
(`comparisons.loadgen.idle_connections`), plays the actors
(`comparisons.tour.client`), samples the server's CPU and memory
(`ResourceSampler`), stops it, and keeps what both sides saw - on one clock,
relative to the experiment's start - in a `Run`.

Sizes come from a `Scale`: `smoke` (seconds, for the test suite), `quick`
(the tour in minutes) and `full` (the sizes the issue names, repeated).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from comparisons import loadgen
from comparisons.servers import ResourceSampler, ServerUnderTest, Target

from .client import Actor, play_all

log = logging.getLogger(__name__)

CLIENT_TIMES = ("connect", "send", "sent", "response", "done")
SERVER_TIMES = ("first_byte", "app_start", "app_end", "last_byte")
#: Seconds an idle keep-alive connection is kept by the servers of the tour:
#: longer than any experiment, so the held connections stay idle, not closed.
KEEP_ALIVE = 30.0


@dataclass(frozen=True)
class Scale:
    """How big each experiment is."""

    name: str
    repeats: int
    trickle: float
    others: int
    fork_clients: int
    fork_requests: int
    idle: int
    idle_clients: int
    sleepers: int
    sleep_ms: int
    blockers: int
    block_ms: int
    cpu_clients: int
    cpu_n: int

    @classmethod
    def named(cls, name: str) -> Scale:
        return SCALES[name]


SCALES = {
    "smoke": Scale("smoke", repeats=1, trickle=0.3, others=2, fork_clients=2, fork_requests=1,
                   idle=50, idle_clients=2, sleepers=4, sleep_ms=50, blockers=2, block_ms=50,
                   cpu_clients=2, cpu_n=20),
    "quick": Scale("quick", repeats=1, trickle=1.0, others=3, fork_clients=4, fork_requests=3,
                   idle=2000, idle_clients=4, sleepers=16, sleep_ms=100, blockers=4, block_ms=200,
                   cpu_clients=4, cpu_n=28),
    "full": Scale("full", repeats=5, trickle=2.0, others=4, fork_clients=4, fork_requests=5,
                  idle=2000, idle_clients=4, sleepers=24, sleep_ms=200, blockers=4, block_ms=300,
                  cpu_clients=6, cpu_n=29),
}


@dataclass(frozen=True)
class Experiment:
    """One situation, played by scripted clients against each target."""

    name: str
    #: What it is, in a few words ("one slow client").
    title: str
    #: What the clients do, in a sentence.
    story: str
    actors: tuple[Actor, ...]
    #: Idle keep-alive connections held open while the actors play.
    idle: int = 0


def build_experiments(scale: Scale) -> dict[str, Experiment]:
    """Every experiment of the tour, sized by `scale`."""
    s = scale
    others = tuple(Actor(f"client {i + 1}", "others", "/", start=0.1 * (i + 1)) for i in range(s.others))
    slow = Actor("slow client", "slow", "/", trickle=s.trickle)
    sleep = f"/sleep?ms={s.sleep_ms}"
    cpu = f"/cpu?n={s.cpu_n}"
    experiments = [
        Experiment(
            "slow-client", "one slow client",
            f"One client trickles its request over {s.trickle:g} s; {s.others} others arrive "
            f"0.1 s apart just after it, each asking GET /.",
            (slow, *others)),
        Experiment(
            "fork-per-request", "a fork per request",
            f"{s.fork_clients} clients at once, each sending {s.fork_requests} GET / one after "
            f"another on its keep-alive connection.",
            tuple(Actor(f"client {i + 1}", "clients", "/", requests=s.fork_requests)
                  for i in range(s.fork_clients))),
        Experiment(
            "idle-connections", f"{s.idle:,} idle keep-alive connections",
            f"{s.idle:,} connections each make one request and stay open, idle; while they are "
            f"held, {s.idle_clients} clients send 5 GET / each.",
            tuple(Actor(f"client {i + 1}", "clients", "/", requests=5) for i in range(s.idle_clients)),
            idle=s.idle),
        Experiment(
            "blocking-handler", "a blocking handler",
            f"{s.blockers} clients ask for a handler that blocks {s.block_ms} ms in time.sleep; "
            f"{s.blockers} more ask GET / 50 ms later.",
            tuple(Actor(f"sleeper {i + 1}", "sleepers", f"/sleep?ms={s.block_ms}")
                  for i in range(s.blockers))
            + tuple(Actor(f"hello {i + 1}", "hello", "/", start=0.05) for i in range(s.blockers))),
        Experiment(
            "many-waits", f"{s.sleepers} requests that wait",
            f"{s.sleepers} clients at once, each asking for a handler that waits {s.sleep_ms} ms "
            f"(GET {sleep}: time.sleep in the plain app, a cooperative sleep in a tasklet or "
            f"async handler).",
            tuple(Actor(f"client {i + 1}", "sleepers", sleep) for i in range(s.sleepers))),
        Experiment(
            "idle-and-waits", f"{s.idle:,} idle connections and {s.sleepers} waits",
            f"{s.idle:,} idle keep-alive connections held open while {s.sleepers} clients each ask "
            f"for a handler that waits {s.sleep_ms} ms.",
            tuple(Actor(f"client {i + 1}", "sleepers", sleep) for i in range(s.sleepers)),
            idle=s.idle),
        Experiment(
            "cpu-bound", "a CPU-bound handler on 2 cores",
            f"{s.cpu_clients} clients at once ask GET {cpu}: pure-Python work, no waiting.",
            tuple(Actor(f"client {i + 1}", "cpu", cpu) for i in range(s.cpu_clients))),
        Experiment(
            "slow-and-cpu", "slow clients and CPU work",
            f"2 clients trickle their requests over {s.trickle:g} s; 0.1 s later {s.cpu_clients} "
            f"clients ask GET {cpu}.",
            tuple(Actor(f"slow {i + 1}", "slow", "/", trickle=s.trickle) for i in range(2))
            + tuple(Actor(f"cpu {i + 1}", "cpu", cpu, start=0.1) for i in range(s.cpu_clients))),
    ]
    return {e.name: e for e in experiments}


@dataclass
class Run:
    """What one experiment on one target saw; times in seconds from its start."""

    experiment: str
    target: str
    repeat: int
    command: list[str]
    client: list[dict[str, Any]]
    server: list[dict[str, Any]]
    idle: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        return cls(**data)


def tree_threads(server: ServerUnderTest) -> int:
    """OS threads in the server's whole process tree."""
    total = 0
    for proc in server.processes():
        try:
            total += proc.num_threads()
        except psutil.NoSuchProcess:
            pass
    return total


def run_experiment(experiment: Experiment, target: Target, workdir: str, repeat: int = 0) -> Run:
    """Start `target` traced, play `experiment` on it, stop it; return what both sides saw."""
    slug = f"{experiment.name}--{_slug(target.label)}--{repeat}"
    trace_path = os.path.join(workdir, f"{slug}.trace.jsonl")
    if os.path.exists(trace_path):
        os.unlink(trace_path)  # the trace is appended to, like an access log
    traced = dataclasses.replace(target, args=(*target.args, "--trace-requests", trace_path))
    server = ServerUnderTest(traced, keep_alive=KEEP_ALIVE, log_path=os.path.join(workdir, f"{slug}.log"))
    run = Run(experiment.name, target.label, repeat, [], [], [])
    server.start()
    run.command = server.command
    try:
        actors = [dataclasses.replace(a, path=target.path(a.path)) for a in experiment.actors]
        run.idle, t0, exchanges, run.resources = _play(experiment, actors, server)
    finally:
        server.stop(timeout=15.0)
    ports = {e["port"] for e in exchanges if e["port"]}
    run.client = [_relative(e, t0, CLIENT_TIMES) for e in exchanges]
    run.server = [_relative(r, t0, SERVER_TIMES)
                  for r in _read_trace(trace_path) if int(r["peer"].rsplit(":", 1)[1]) in ports]
    failed = [e for e in run.client if e["error"]]
    if failed:
        run.error = f"{len(failed)} of {len(run.client)} requests failed: {failed[0]['error']}"
    return run


def _play(experiment: Experiment, actors: list[Actor], server: ServerUnderTest):
    """Hold the idle connections (if any), then play the actors.

    Returns what the idle connections cost, the start time, every exchange
    and the server's resources while the actors played.
    """
    idle: dict[str, Any] = {}
    held = loadgen.idle_connections(server.url("/"), experiment.idle, timeout=20.0,
                                    batch=min(experiment.idle, 512)) if experiment.idle else None
    try:
        if held is not None:
            rss_before, threads_before = server.rss(), tree_threads(server)
            held.open()
            idle = {"wanted": experiment.idle, "held": len(held), "rss_before": rss_before,
                    "rss_after": server.rss(), "threads_before": threads_before,
                    "threads_after": tree_threads(server)}
        with ResourceSampler(server, interval=0.1) as sampler:
            t0 = time.monotonic()
            exchanges = play_all(actors, (server.host, server.port), t0)
        resources = sampler.stats.to_dict()
    finally:
        if held is not None:
            held.close()
    return idle, t0, [e.to_dict() for e in exchanges], resources


def _relative(record: dict, t0: float, keys: tuple[str, ...]) -> dict:
    """`record` with its times counted from `t0`; a time never reached is None."""
    out = dict(record)
    for key in keys:
        value = out.get(key)
        out[key] = round(value - t0, 6) if value else None
    return out


def _read_trace(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")
