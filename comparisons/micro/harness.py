"""The harness: the parent/child protocol that runs each runtime in a fresh interpreter.

The parent (``run_child``, called by ``comparisons.internals``) starts
``python -m comparisons.micro --child RUNTIME BENCH=SIZE[,...] REPEATS
BUDGET`` with a bounded timeout; the child (``child_main``) runs those
benchmarks of that one runtime (``run_bench``, sizes calibrated to the
budget by ``calibrate``) and prints one JSON list of measurements as its last
line. A child that crashes or overruns comes back as a ``ChildFailure``,
shown in the report, never hidden.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from comparisons.childproc import ROOT, child_env
from comparisons.micro.measurement import SWITCHES_PER_ROUND, TIMER_SPREAD, Measurement
from comparisons.micro.pollers import POLLERS, SELECT_FD_LIMIT, poller_wait_cost
from comparisons.micro.runtimes import RUNTIMES, Runtime


def calibrate(run: Callable[[int], float], start: int, budget: float, cap: int | None) -> int:
    """The count for which `run(count)` lasts about `budget` seconds."""
    count = start
    while True:
        if cap is not None and count >= cap:
            return cap
        elapsed = run(count)
        if elapsed >= budget / 4:
            wanted = int(count * budget / elapsed)
            return max(1, min(wanted, cap) if cap is not None else wanted)
        count *= 4


def run_bench(runtime: Runtime, bench: str, size: int, repeats: int, budget: float,
              seed: int = 1) -> Measurement:
    """One benchmark of one runtime, `repeats` times; in this process."""
    if bench in ("switch", "io"):
        method = getattr(runtime, bench)
        rounds = size or calibrate(method, runtime.start_count, budget, runtime.caps.get(bench))
        per = SWITCHES_PER_ROUND if bench == "switch" else 1
        samples = [method(rounds) / (rounds * per) * 1e6 for _ in range(repeats)]
        return Measurement(bench, runtime.name, rounds, samples)
    if bench == "spawn":
        count = size or calibrate(runtime.spawn, runtime.start_count, budget, runtime.caps.get(bench))
        count = runtime.cap(bench, count)
        return Measurement(bench, runtime.name, count,
                           [runtime.spawn(count) / count * 1e6 for _ in range(repeats)])
    if bench == "timers":
        count = runtime.cap(bench, size)
        rng = random.Random(seed)
        samples = []
        for _ in range(repeats):
            deadlines = [rng.random() * TIMER_SPREAD for _ in range(count)]
            samples.append(runtime.timers(deadlines) / count * 1e6)
        return Measurement(bench, runtime.name, count, samples,
                           note=f"deadlines uniform in [0, {TIMER_SPREAD * 1000:g} ms)")
    if bench == "memory":
        count = runtime.cap(bench, size)
        samples = [runtime.memory(count) for _ in range(repeats)]
        note = "USS per idle child" if runtime.name == "processes" else "RSS growth per parked task"
        return Measurement(bench, runtime.name, count, samples, note=note)
    raise ValueError(f"unknown benchmark {bench!r}")


def parse_plan(spec: str) -> list[tuple[str, str]]:
    """`switch=0,timers=100000` -> [("switch", "0"), ("timers", "100000")]."""
    return [tuple(item.split("=", 1)) for item in spec.split(",")]  # type: ignore[misc]


def child_main(argv: list[str]) -> int:
    """`--child RUNTIME BENCH=SIZE[,BENCH=SIZE...] REPEATS BUDGET`: print one JSON list.

    SIZE 0 means "calibrate to BUDGET seconds". RUNTIME `pollers` runs the
    epoll benchmark for every mechanism, at the fd counts given as
    `epoll=10:1000:10000`.
    """
    runtime_name, spec, repeats, budget = argv[:4]
    repeats_n, budget_s = int(repeats), float(budget)
    results = []
    for bench, size in parse_plan(spec):
        if runtime_name == "pollers":
            for nfds in (int(n) for n in size.split(":")):
                for mechanism in POLLERS:
                    if mechanism == "select" and nfds + 16 >= SELECT_FD_LIMIT:
                        continue
                    samples = [poller_wait_cost(mechanism, nfds, budget_s) * 1e6
                               for _ in range(repeats_n)]
                    results.append(Measurement("epoll", mechanism, nfds, samples).to_json())
        else:
            results.append(run_bench(RUNTIMES[runtime_name], bench, int(size), repeats_n,
                                     budget_s).to_json())
    sys.stdout.write(json.dumps(results) + "\n")
    sys.stdout.flush()
    # Skip the teardown of a million parked tasks: the numbers are out.
    os._exit(0)


@dataclass
class ChildFailure:
    """A child that crashed or overran its time: shown in the report, never hidden."""

    runtime: str
    plan: str
    reason: str


@dataclass
class ChildResult:
    measurements: list[Measurement] = field(default_factory=list)
    failure: ChildFailure | None = None


def run_child(runtime: str, plan: dict[str, int | str], repeats: int, budget: float,
              timeout: float) -> ChildResult:
    """Run benchmarks of one runtime in a fresh interpreter; bounded by `timeout` seconds.

    `plan` maps each benchmark to its size (0 = calibrate).
    """
    spec = ",".join(f"{bench}={size}" for bench, size in plan.items())
    cmd = [sys.executable, "-m", "comparisons.micro", "--child", runtime, spec, str(repeats),
           str(budget)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env=child_env(PYTHONWARNINGS="ignore"), check=False)
    except subprocess.TimeoutExpired:
        return ChildResult(failure=ChildFailure(runtime, spec, f"timed out after {timeout:g}s"))
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return ChildResult(failure=ChildFailure(runtime, spec, tail))
    rows = json.loads(lines[-1])
    return ChildResult([Measurement(**{k: row[k] for k in ("bench", "runtime", "size", "samples",
                                                           "unit", "note")}) for row in rows])
