"""``python -m flash_green internals``: scheduler micro-benchmarks across runtimes.

Runs the benchmarks of the ``comparisons/micro`` package - switch, spawn + join,
memory per idle task, timers, I/O wake-up through the poller, and the cost of
one epoll wait against poll and select - on every runtime installed here
(our tasklets kernel, raw greenlet, greenlet on our hub, gevent, eventlet,
asyncio, uvloop, OS threads, processes), each in fresh interpreters. Prints
one table per benchmark (median of the repeats, with min-max spread), and
writes ``results.json`` and PNG plots to ``--out``.

    python -m flash_green internals                  # the full run, a few minutes
    python -m flash_green internals --quick          # a minute, fewer repeats
    python -m flash_green internals --runtimes tasklets,asyncio --benchmarks switch,io

The figures are for reading as ratios between runtimes of the same run; the
README section "Scheduler internals" explains what they mean for the engines.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.table import Table

from . import report
from .micro import (
    BENCHMARKS,
    RUNTIMES,
    TIMER_SPREAD,
    UNITS,
    ChildFailure,
    Measurement,
    run_child,
)

log = logging.getLogger("comparisons.internals")

GIB = 1 << 30
#: Axis labels of the per-runtime plots, in words.
PLOT_WORDS = {
    "switch": "microseconds per switch between two tasks",
    "spawn": "microseconds to spawn and join one task",
    "timers": "microseconds per timer (spawn, sleep, wake)",
    "io": "microseconds per one-byte round trip through the poller",
}
#: Terminal tables are made to fit this many columns.
TABLE_WIDTH = 100
#: Runtimes in the order of the study (floor first, then ours, then peers).
ORDER = tuple(RUNTIMES)


@dataclass
class Sizes:
    """How big and how often: one preset per run mode, adjustable by options."""

    #: Seconds one repeat of a calibrated benchmark (switch, spawn, io) lasts.
    budget: float
    repeats: int
    #: Idle tasks per memory point; each point is `memory_repeats` fresh processes.
    memory: tuple[int, ...]
    memory_repeats: int
    #: Extra memory points for the runtimes light enough to hold them (the
    #: target: a million tasklets).
    memory_large: dict[str, int]
    timers: int
    #: Repeats of the timers benchmark (100k sleepers take seconds each).
    timer_repeats: int
    epoll_fds: tuple[int, ...]
    #: Seconds one child may run before it is stopped and reported as failed.
    timeout: float


PRESETS: dict[str, Sizes] = {
    "full": Sizes(budget=0.3, repeats=5, memory=(10_000, 100_000), memory_repeats=3,
                  memory_large={"generator": 1_000_000, "tasklets": 1_000_000},
                  timers=100_000, timer_repeats=3, epoll_fds=(10, 1_000, 10_000), timeout=300.0),
    "quick": Sizes(budget=0.05, repeats=3, memory=(10_000,), memory_repeats=1, memory_large={},
                   timers=20_000, timer_repeats=3, epoll_fds=(10, 1_000, 10_000), timeout=120.0),
    # For the test suite: every code path, sizes too small to mean anything.
    "tiny": Sizes(budget=0.002, repeats=2, memory=(300,), memory_repeats=1, memory_large={},
                  timers=300, timer_repeats=2, epoll_fds=(10, 100), timeout=60.0),
}


@dataclass
class Run:
    """Everything one run measured, and what it could not."""

    sizes: Sizes
    runtimes: list[str]
    benchmarks: list[str]
    measurements: list[Measurement] = field(default_factory=list)
    failures: list[ChildFailure] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)

    def of(self, bench: str) -> list[Measurement]:
        rows = [m for m in self.measurements if m.bench == bench]
        return sorted(rows, key=lambda m: (_rank(m.runtime), m.size))


def _rank(runtime: str) -> int:
    return ORDER.index(runtime) if runtime in ORDER else len(ORDER)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m flash_green internals",
                                description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer repeats and sizes: about a minute")
    mode.add_argument("--tiny", action="store_true", help="minimal sizes (the test suite's smoke run)")
    p.add_argument("--runtimes", help=f"comma-separated subset of: {', '.join(ORDER)}")
    p.add_argument("--benchmarks", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    p.add_argument("--repeat", type=int, help="repeats per figure (median and spread reported)")
    p.add_argument("--budget", type=float, help="seconds per repeat of switch/spawn/io")
    p.add_argument("--memory", help="idle tasks per memory point, comma-separated (e.g. 10000,100000)")
    p.add_argument("--timers", type=int, help="sleepers in the timers benchmark")
    p.add_argument("--out", help="output directory (default results/internals-<date-time>)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def _choose(spec: str | None, known: Sequence[str], what: str) -> list[str]:
    if not spec:
        return list(known)
    chosen = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


def plan_run(args: argparse.Namespace) -> Run:
    sizes = PRESETS["tiny" if args.tiny else "quick" if args.quick else "full"]
    overrides: dict[str, Any] = {}
    if args.repeat:
        overrides["repeats"] = overrides["memory_repeats"] = overrides["timer_repeats"] = args.repeat
    if args.budget:
        overrides["budget"] = args.budget
    if args.memory:
        overrides["memory"] = tuple(int(n) for n in args.memory.split(","))
        overrides["memory_large"] = {}
    if args.timers:
        overrides["timers"] = args.timers
    run = Run(replace(sizes, **overrides), _choose(args.runtimes, ORDER, "runtimes"),
              _choose(args.benchmarks, BENCHMARKS, "benchmarks"))
    for name in list(run.runtimes):
        reason = RUNTIMES[name].available()
        if reason:
            run.unavailable[name] = reason
            run.runtimes.remove(name)
    return run


# =============================================================================
# Running the children
# =============================================================================

def execute(run: Run, console: Console) -> None:
    """Run every child of the plan, one at a time (they must not share the CPU)."""
    sizes = run.sizes
    for name in run.runtimes:
        runtime = RUNTIMES[name]
        calibrated = {bench: 0 for bench in run.benchmarks
                      if bench in runtime.benches and bench in ("switch", "spawn", "io")}
        if calibrated:
            _collect(run, console, name, calibrated, sizes.repeats)
        if "timers" in run.benchmarks and "timers" in runtime.benches:
            _collect(run, console, name, {"timers": sizes.timers}, sizes.timer_repeats)
        if "memory" in run.benchmarks and "memory" in runtime.benches:
            wanted = (*sizes.memory, *([sizes.memory_large[name]] if name in sizes.memory_large else []))
            # A capped runtime (threads, processes) measures each real size once.
            for count in dict.fromkeys(runtime.cap("memory", count) for count in wanted):
                _memory_point(run, console, name, count)
    if "epoll" in run.benchmarks:
        _collect(run, console, "pollers", {"epoll": ":".join(map(str, sizes.epoll_fds))}, sizes.repeats)


def _collect(run: Run, console: Console, runtime: str, plan: dict[str, int | str], repeats: int) -> list[Measurement]:
    what = ", ".join(plan)
    with console.status(f"[bold]{runtime}[/]: {what}"):
        result = run_child(runtime, plan, repeats, run.sizes.budget, run.sizes.timeout)
    if result.failure:
        run.failures.append(result.failure)
        console.print(f"  [red]{runtime} {what}: failed: {result.failure.reason}[/]")
        return []
    for m in result.measurements:
        console.print(f"  {m.runtime:<10} {m.bench:<7} n={m.size:<8,} {_fmt(m.median)} {m.unit}")
    run.measurements.extend(result.measurements)
    return result.measurements


def _memory_point(run: Run, console: Console, runtime: str, count: int) -> None:
    """One memory point: `memory_repeats` fresh processes, merged into one measurement."""
    samples: list[Measurement] = []
    for _ in range(run.sizes.memory_repeats):
        samples += _collect(run, console, runtime, {"memory": count}, 1)
    for m in samples:
        run.measurements.remove(m)
    if samples:
        first = samples[0]
        run.measurements.append(Measurement("memory", runtime, first.size,
                                            [s for m in samples for s in m.samples], note=first.note))


# =============================================================================
# Tables
# =============================================================================

def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _spread(m: Measurement) -> str:
    return f"{_fmt(m.low)}-{_fmt(m.high)}"


def _per_second(us: float) -> str:
    return f"{1e6 / us:,.0f}" if us > 0 else "-"


def _label(runtime: str) -> str:
    return RUNTIMES[runtime].label if runtime in RUNTIMES else runtime


def fits_in_gib(run: Run) -> dict[str, int]:
    """Idle tasks that fit in 1 GiB, from each runtime's largest memory point."""
    largest: dict[str, Measurement] = {}
    for m in run.of("memory"):
        if m.runtime not in largest or m.size > largest[m.runtime].size:
            largest[m.runtime] = m
    return {name: int(GIB / m.median) for name, m in largest.items() if m.median > 0}


@dataclass
class Figures:
    """One benchmark's table, drawn in the terminal (rich) and in report.md."""

    title: str
    headers: list[str]
    rows: list[list[str]]

    def rich(self) -> Table:
        table = Table(title=self.title, title_justify="left")
        for i, header in enumerate(self.headers):
            table.add_column(header, justify="left" if i == 0 else "right")
        for row in self.rows:
            table.add_row(*row)
        return table

    def markdown(self) -> list[str]:
        return ([f"### {self.title}", "", "| " + " | ".join(self.headers) + " |",
                 "|" + "---|" * len(self.headers)]
                + ["| " + " | ".join(row) + " |" for row in self.rows] + [""])


def tables(run: Run) -> list[Figures]:
    """One table per benchmark that has figures."""
    built = []
    simple = {
        "switch": ("switch: two tasks take turns", "switches/s"),
        "spawn": ("spawn + join: N tasks that return at once", "tasks/s"),
        "timers": (f"timers: N sleepers, random deadlines in [0, {TIMER_SPREAD * 1000:g} ms), spawn included",
                   "timers/s"),
        "io": ("I/O wake-up: one byte bounced across a socketpair", "round trips/s"),
    }
    for bench, (title, rate) in simple.items():
        rows = run.of(bench)
        if rows:
            built.append(Figures(title, ["runtime", "n", UNITS[bench] + " (median)", "spread (min-max)", rate],
                                 [[_label(m.runtime), f"{m.size:,}", _fmt(m.median), _spread(m),
                                   _per_second(m.median)] for m in rows]))
    if run.of("memory"):
        built.append(_memory_table(run))
    if run.of("epoll"):
        built.append(_epoll_table(run))
    return built


def _memory_table(run: Run) -> Figures:
    return Figures("memory per idle task (processes: USS per idle child)",
                   ["runtime", "idle tasks", "bytes/task (median)", "spread (min-max)", "1 GiB holds (est.)"],
                   [[_label(m.runtime), f"{m.size:,}", _fmt(m.median), _spread(m),
                     f"{int(GIB / m.median):,}" if m.median > 0 else "-"] for m in run.of("memory")])


def _epoll_table(run: Run) -> Figures:
    rows = run.of("epoll")
    counts = sorted({m.size for m in rows})
    table = Figures("one wait, timeout 0, N registered fds of which one is ready (us)",
                    ["mechanism", *(f"{count:,} fds" for count in counts)], [])
    for mechanism in dict.fromkeys(m.runtime for m in rows):
        cells = [mechanism]
        for count in counts:
            point = next((m for m in rows if m.runtime == mechanism and m.size == count), None)
            cells.append(f"{_fmt(point.median)} ({_spread(point)})" if point else "n/a (FD_SETSIZE)")
        table.rows.append(cells)
    return table


def markdown(run: Run, environment: dict[str, Any], plots: Sequence[str]) -> str:
    """report.md: how the run was made, every table, the plots."""
    sizes = run.sizes
    lines = [f"# Flash scheduler internals — {environment['date']}", "", "## Environment", "",
             *report.environment_lines(environment),
             f"- {sizes.repeats} repeats of {sizes.budget:g} s per calibrated figure; tables show the "
             "median and the min-max spread of the repeats", "",
             "Reproduce:", "", "```", environment["command"], "```", ""]
    if run.unavailable:
        lines += ["Not measured: " + "; ".join(f"{name} ({why})" for name, why in run.unavailable.items()), ""]
    lines += ["## Figures", ""]
    for table in tables(run):
        lines += table.markdown()
    if run.failures:
        lines += ["## Failures", ""] + [f"- {f.runtime} {f.plan}: {f.reason}" for f in run.failures] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


# =============================================================================
# JSON and plots
# =============================================================================

def to_json(run: Run, environment: dict[str, Any]) -> dict[str, Any]:
    return {
        "environment": environment,
        "sizes": asdict(run.sizes),
        "runtimes": {name: _label(name) for name in run.runtimes},
        "unavailable": run.unavailable,
        "measurements": [m.to_json() for m in run.measurements],
        "fits_in_1gib": fits_in_gib(run),
        "failures": [asdict(f) for f in run.failures],
    }


def make_plots(run: Run, out_dir: str) -> list[str]:
    """PNG files: a bar chart per benchmark (log scale, min-max whiskers), memory, epoll."""
    from comparisons.report import PlotFiles

    plots = PlotFiles(out_dir)
    plt, save, written = plots.plt, plots.save, plots.written

    for bench in ("switch", "spawn", "timers", "io"):
        rows = run.of(bench)
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.6))
        labels = [_label(m.runtime) for m in rows][::-1]
        medians = [m.median for m in rows][::-1]
        errors = [[m.median - m.low for m in rows][::-1], [m.high - m.median for m in rows][::-1]]
        ax.barh(labels, medians, xerr=errors, color="#3b75af", capsize=3)
        _plain_log_scale(ax, "x")
        ax.set_xlabel(f"{PLOT_WORDS[bench]} (median, whiskers min-max)")
        ax.set_title(f"{bench} (log scale: the runtimes differ by orders of magnitude)", fontsize=10)
        ax.grid(True, axis="x", which="both", alpha=0.3)
        save(fig, f"{bench}.png")

    memory = run.of("memory")
    if memory:
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(memory) + 1.6))
        labels = [f"{_label(m.runtime)}, {m.size:,}" for m in memory][::-1]
        medians = [m.median for m in memory][::-1]
        errors = [[m.median - m.low for m in memory][::-1], [m.high - m.median for m in memory][::-1]]
        ax.barh(labels, medians, xerr=errors, color="#6a51a3", capsize=3)
        _plain_log_scale(ax, "x")
        ax.set_xlabel("bytes per idle task (processes: USS per child)")
        ax.set_title("memory per idle task (runtime, tasks held); log scale: from ~100 bytes to megabytes",
                     fontsize=10)
        ax.grid(True, axis="x", which="both", alpha=0.3)
        save(fig, "memory.png")

    epoll = run.of("epoll")
    if epoll:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for mechanism in dict.fromkeys(m.runtime for m in epoll):
            points = sorted((m.size, m.median) for m in epoll if m.runtime == mechanism)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=mechanism)
        _plain_log_scale(ax, "x")
        _plain_log_scale(ax, "y")
        ax.set_xlabel("registered file descriptors, one of them ready (log scale)")
        ax.set_ylabel("microseconds per wait, timeout 0 (log scale)")
        ax.set_title("the cost of one wait: epoll is O(ready), poll and select O(registered)\n"
                     "(log-log: a straight line of slope 1 is linear cost)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        save(fig, "epoll.png")
    return written


def _plain_log_scale(ax: Any, which: str) -> None:
    """A log scale on axis `which` ("x" or "y") whose ticks read 0.5, 2, 1,000 rather than 5x10^-1."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.6g}"))
    axis.set_minor_formatter(FuncFormatter(lambda value, _: ""))


# =============================================================================
# main
# =============================================================================

def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    # Wide enough for the tables when the output is a file or a pipe.
    console = Console(width=min(Console().width, TABLE_WIDTH) if sys.stdout.isatty() else TABLE_WIDTH)
    run = plan_run(args)
    started = datetime.now(timezone.utc)
    command = "python -m flash_green internals " + shlex.join(argv if argv is not None else sys.argv[1:])
    environment = report.environment(command.strip(), started)
    for name, reason in run.unavailable.items():
        console.print(f"[yellow]{name}: skipped ({reason})[/]")
    console.print(f"[bold]internals[/]: {len(run.runtimes)} runtimes, benchmarks "
                  f"{', '.join(run.benchmarks)}; load average {environment['loadavg_start']}")
    execute(run, console)
    environment["loadavg_end"] = report.loadavg()
    for table in tables(run):
        console.print(table.rich())
    out_dir = args.out or os.path.join("results", "internals-" + started.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as handle:
        json.dump(to_json(run, environment), handle, indent=1)
    plots = [] if args.no_plots else make_plots(run, out_dir)
    with open(os.path.join(out_dir, "report.md"), "w") as handle:
        handle.write(markdown(run, environment, plots))
    written = ["results.json", *plots, "report.md"]
    console.print(f"wrote {', '.join(written)} to {out_dir}")
    for failure in run.failures:
        console.print(f"[red]failed: {failure.runtime} {failure.plan}: {failure.reason}[/]")
    return 1 if run.failures else 0
