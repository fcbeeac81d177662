"""``python -m flash_green compare``: run the scenario matrix and write the report.

Every registered engine (plus a hybrid row and green-thread variants, and
the peers with ``--peers``) runs every scenario. The order is interleaved so
that ratios are fair on a noisy machine: the outer loop is the repeat, then
the scenario, then the targets, rotated by one place each repeat. Within a
scenario the targets are measured minutes apart at most, and no target is
always first or last. Each (scenario, target) gets a fresh server process,
pinned to its own cores, away from the load generator's.

Results go to ``--out``: ``results.json`` (the source of truth),
``results.csv``, PNG plots and ``report.md``; see ``comparisons/report.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flash_green import engines

from . import loadgen, report, scaleout, wrk
from .childproc import raise_fd_limit
from .peers import available_peers
from .scenarios import BY_NAME, Measurement, Scenario, Settings, run_scenario, select_scenarios
from .servers import ServerUnderTest, Target, engine_target, peer_target
from .upstream import UpstreamService

log = logging.getLogger("comparisons.compare")

#: In-process engines, in order of preference, for the automatic hybrid row
#: (N worker processes of one engine under the supervisor).
HYBRID_CANDIDATES = ("tasklets", "gevent", "epoll", "asyncio", "greenlet", "threaded")
#: Engines that also get a monkey-patched row (blocking calls in the app cooperate).
PATCH_VARIANTS = ("gevent", "eventlet")
#: Engines that also get a row serving the demo app in their own colour: the
#: same endpoints written as tasklet handlers or against the green hub.
APP_VARIANTS = {
    "tasklets": "flash_green.apps.tasklet_demo:app",
    "greenlet": "flash_green.apps.green_demo:app",
    "asyncio": "flash_green.apps.async_demo:app",
}
#: Where an app serves the scenarios' blocking endpoints, when not at the demo's paths.
APP_PATHS = {
    "flash_green.apps.green_demo:app": {"/sleep": "/green/sleep", "/upstream": "/green/upstream"},
}


#: Terminal tables are made to fit this many columns.
TABLE_WIDTH = 100
#: Descriptors a process needs besides the connections of a scenario (the
#: interpreter's files, pipes, epoll, the server's listener and logs).
DESCRIPTOR_MARGIN = 256


@dataclass
class Plan:
    """What one compare run will do."""

    targets: list[Target]
    scenarios: list[Scenario]
    settings: Settings
    repeats: int
    skipped: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m flash_green compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", help="comma-separated engine specs, e.g. 'sequential,threaded --workers 2' "
                                     "(default: every registered engine plus a hybrid and patched rows)")
    p.add_argument("--scenarios", help="comma-separated scenario names (default: all); "
                                       f"'{scaleout.NAME}' runs nginx in front of N instances (only when named)")
    p.add_argument("--scale-out-engine", default=scaleout.DEFAULT_ENGINE, help=f"engine of the {scaleout.NAME} study")
    p.add_argument("--scale-out-instances", type=int, default=0,
                   help="instances behind nginx (default: the server CPUs, at least 2)")
    p.add_argument("--concurrency", help="hello keep-alive levels, e.g. 1,10,100")
    p.add_argument("--duration", type=float, help="seconds per measurement")
    p.add_argument("--repeat", type=int, help="repeats of the whole matrix (median and spread reported)")
    p.add_argument("--peers", nargs="?", const="all", default=None,
                   help="add reference servers (all, or a comma-separated list of names)")
    p.add_argument("--quick", action="store_true", help="short runs, fewer levels: the matrix in minutes")
    p.add_argument("--idle", type=int, help="idle keep-alive connections to hold")
    p.add_argument("--timeout", type=float, help="per socket operation of the load generator, seconds")
    p.add_argument("--no-wrk", action="store_true", help="use the built-in generator even if wrk is installed")
    p.add_argument("--no-ceiling", action="store_true", help="skip measuring the generator's own ceiling")
    p.add_argument("--out", help="output directory (default results/<date-time>)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------


def supervisor_available() -> bool:
    return importlib.util.find_spec("flash_green.supervisor") is not None


def default_engine_specs() -> list[str]:
    """Every registered engine, then the patched, own-colour-handler and hybrid variants."""
    names = engines.names()
    specs = list(names)
    for name in PATCH_VARIANTS:
        if name in names:
            specs.append(f"{name} --patch")
    for name, app in APP_VARIANTS.items():
        if name in names:
            specs.append(f"{name} {app}")
    if supervisor_available():
        hybrid = next((n for n in HYBRID_CANDIDATES if n in names), None)
        if hybrid is not None:
            # The hybrid runs as the model is meant to be used: green engines
            # patched (as gunicorn's gevent worker), loops with their own handlers.
            patch = " --patch" if hybrid in PATCH_VARIANTS else ""
            app = f" {APP_VARIANTS[hybrid]}" if hybrid in APP_VARIANTS else ""
            specs.append(f"{hybrid}{app}{patch} --workers {max(2, os.cpu_count() or 2)}")
    return specs


def build_targets(specs: list[str], peers: str | None) -> tuple[list[Target], list[str]]:
    """Targets that can run here, and one line for each one skipped."""
    targets, skipped = [], []
    for spec in specs:
        app = next((w for w in spec.split() if ":" in w and not w.startswith("-")), None)
        label = spec.replace(app, "+" + app.split(":")[0].rsplit(".", 1)[-1]) if app else spec
        try:
            targets.append(engine_target(spec, label=label, paths=APP_PATHS.get(app or "")))
        except engines.EngineUnavailable as exc:
            skipped.append(f"engine {spec!r} skipped: {exc}")
        except KeyError as exc:
            skipped.append(f"engine {spec!r} skipped: {exc.args[0]}")
    if peers:
        names = None if peers == "all" else [n.strip() for n in peers.split(",") if n.strip()]
        runnable, peer_skips = available_peers(names)
        targets.extend(peer_target(peer) for peer in runnable)
        skipped.extend(peer_skips)
    return targets, skipped


def build_settings(args: argparse.Namespace) -> Settings:
    settings = Settings.quick() if args.quick else Settings.full()
    if args.duration:
        settings.duration = args.duration
        settings.timeout = min(settings.timeout, max(args.duration, 1.0))
    if args.timeout:
        settings.timeout = args.timeout
    if args.concurrency:
        settings.concurrency = tuple(int(c) for c in args.concurrency.split(","))
    if args.idle:
        settings.idle_connections = args.idle
    settings.prefer_wrk = not args.no_wrk
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        # The generator (and the upstream service) get the first core, the
        # server the rest; the CPU scenario gives the server every core.
        settings.generator_cpus = (cpus[0],)
        settings.server_cpus = tuple(cpus[1:])
        settings.all_cpus = tuple(cpus)
    return settings


def make_plan(args: argparse.Namespace) -> Plan:
    specs = ([s.strip() for s in args.engines.split(",") if s.strip()] if args.engines
             else default_engine_specs())
    targets, skipped = build_targets(specs, args.peers)
    settings = build_settings(args)
    if settings.prefer_wrk and not wrk.available():
        skipped.append("wrk not installed (Debian: apt-get install wrk): using the built-in generator")
    if settings.generator_cpus is None:
        skipped.append("fewer than 2 CPUs: server and generator are not pinned apart")
    repeats = args.repeat or (1 if args.quick else 3)
    return Plan(targets, select_scenarios(args.scenarios.split(",") if args.scenarios else None),
                settings, repeats, skipped)


def descriptors_needed(plan: Plan) -> int:
    """Sockets one process - the generator or the server - holds at the plan's peak, plus a margin."""
    s = plan.settings
    held = {"hello": max(s.concurrency), "idle": s.idle_connections,
            "slowloris": s.slowloris_connections + s.slowloris_normal_clients}
    peak = max((held.get(scenario.name, s.handler_concurrency) for scenario in plan.scenarios), default=0)
    return peak + DESCRIPTOR_MARGIN


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


def measure_ceiling(settings: Settings) -> dict[str, Any]:
    """The load generator's own limit against the canned server, pinned like the real runs."""
    out: dict[str, Any] = {}
    shapes = {"keepalive c=100": dict(concurrency=100, use_wrk=settings.prefer_wrk),
              "new-conn c=10": dict(concurrency=settings.handler_concurrency, new_conn=True)}
    for label, shape in shapes.items():
        result = loadgen.ceiling(duration=max(settings.duration, 1.0), warmup=0.0,
                                 cpu=settings.generator_cpus, server_cpu=settings.server_cpus, **shape)
        out[label] = {"tool": result.tool, "rps": round(result.rps, 1),
                      "p99_ms": round(result.latency_ms.get("p99", 0.0), 3)}
    return out


def run_one(scenario: Scenario, target: Target, settings: Settings, log_dir: str) -> tuple[list[Measurement], str]:
    """Start a fresh server for ``target``, run ``scenario`` on it, stop it; return (measurements, command)."""
    cpus = settings.all_cpus if scenario.all_cores else settings.server_cpus
    log_path = os.path.join(log_dir, target.label.replace(" ", "_").replace(":", "-").replace("/", "-") + ".log")
    server = ServerUnderTest(target, cpus=cpus, keep_alive=scenario.keep_alive, log_path=log_path)
    server.start()
    try:
        measurements = run_scenario(scenario, server, target, settings)
        if not server.alive():
            for m in measurements:
                m.note = (m.note + "; " if m.note else "") + "the server process died during the scenario"
    finally:
        server.stop()
    shown = ["python" if arg == sys.executable else arg for arg in server.command]
    return measurements, shlex.join(shown)


class LiveView:
    """A progress bar and a table of the latest measurements (plain lines when not a terminal)."""

    def __init__(self, console: Console, total: int, rows: int = 14) -> None:
        self.console = console
        self.rows = rows
        self.recent: list[tuple[str, ...]] = []
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console)
        self.task = self.progress.add_task("starting", total=total)
        self.live = Live(self._render(), console=console, refresh_per_second=4) if console.is_terminal else None

    def _render(self) -> Group:
        table = Table("scenario", "target", "level", "result", "p99 ms", "errors %", "CPU %", "RSS MB",
                      title="latest measurements", expand=False)
        for row in self.recent[-self.rows:]:
            table.add_row(*row)
        return Group(self.progress, table)

    def __enter__(self) -> "LiveView":
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def begin(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def add(self, scenario: Scenario, target: Target, m: Measurement) -> None:
        value = m.metrics.get(scenario.metric)
        shown = "-" if value is None else f"{value:,.1f} {scenario.unit}"
        row = (scenario.name, target.label, str(m.level), shown if not m.note else f"{shown} ({m.note})",
               f"{m.metrics.get('p99_ms', 0):,.2f}", f"{m.metrics.get('error_pct', 0):,.1f}",
               f"{m.server.get('cpu_percent', 0):,.0f}", f"{m.server.get('rss_peak_mb', 0):,.1f}")
        self.recent.append(row)
        if self.live is not None:
            self.live.update(self._render())
        else:
            self.console.print("  ".join(row))

    def failed(self, scenario: Scenario, target: Target, error: str) -> None:
        self.recent.append((scenario.name, target.label, "-", f"FAILED: {error.splitlines()[0][:60]}",
                            "", "", "", ""))
        if self.live is not None:
            self.live.update(self._render())
        else:
            self.console.print(f"{scenario.name}  {target.label}  FAILED: {error.splitlines()[0]}")

    def step(self) -> None:
        self.progress.advance(self.task)
        if self.live is not None:
            self.live.update(self._render())


def run_matrix(plan: Plan, out_dir: str, console: Console) -> dict[str, Any]:
    """Run every (repeat, scenario, target); return the raw runs and failures."""
    log_dir = os.path.join(out_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    runs: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    commands: dict[str, str] = {}
    total = plan.repeats * len(plan.scenarios) * len(plan.targets)
    sequence = 0
    with LiveView(console, total) as view:
        for repeat in range(plan.repeats):
            for scenario in plan.scenarios:
                shift = repeat % max(1, len(plan.targets))
                for target in plan.targets[shift:] + plan.targets[:shift]:
                    view.begin(f"[{repeat + 1}/{plan.repeats}] {scenario.name}: {target.label}")
                    started = time.time()
                    try:
                        measurements, command = run_one(scenario, target, plan.settings, log_dir)
                    except Exception as exc:  # one broken target must not end the whole matrix
                        log.debug("%s on %s failed", scenario.name, target.label, exc_info=True)
                        failures.append({"scenario": scenario.name, "target": target.label,
                                         "repeat": repeat, "error": str(exc)[-2000:]})
                        view.failed(scenario, target, str(exc))
                        view.step()
                        continue
                    commands.setdefault(target.label, command)
                    for m in measurements:
                        sequence += 1
                        runs.append({"scenario": scenario.name, "target": target.label, "kind": target.kind,
                                     "repeat": repeat, "sequence": sequence, "started": round(started, 3),
                                     **asdict(m)})
                        view.add(scenario, target, m)
                    view.step()
    return {"runs": runs, "failures": failures, "commands": commands}


def median_tables(data: dict[str, Any]) -> list[Table]:
    """One table per scenario and level: the median of the repeats, best first."""
    tables = []
    for name in data["scenarios"]:
        scenario = BY_NAME[name]
        for level in report.levels_of(data, name):
            rows = report.ranked(data, scenario, level)
            good = [r for r in rows if report.rankable(scenario, r)]
            best = good[0]["metrics"][scenario.metric] if good else None
            table = Table(title=f"{scenario.title}, {scenario.level_name}={level:,} (median of "
                                f"{data['repeats']} repeat{'s' * (data['repeats'] > 1)})",
                          title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
            table.add_column("target", overflow="fold", ratio=1)
            for header in (scenario.unit, "% of best", "p99 ms", "spread %", "CPU %", "RSS MB"):
                table.add_column(header, justify="right", no_wrap=True)
            for row in rows:
                m = row["metrics"]
                ranked_here = report.rankable(scenario, row) and best is not None
                table.add_row(row["target"], report.fmt(m.get(scenario.metric), _spec(m.get(scenario.metric))),
                              report.fmt(report.percent_of_best(scenario, m[scenario.metric], best)
                                         if ranked_here else None),
                              report.fmt(m.get("p99_ms"), "{:,.2f}"), report.fmt(row["spread_pct"]),
                              report.fmt(m.get("cpu_percent")), report.fmt(m.get("rss_peak_mb"), "{:,.1f}"))
            tables.append(table)
    return tables


def _spec(value: float | None) -> str:
    return "{:,.1f}" if value is not None and abs(value) < 100 else "{:,.0f}"


def default_out_dir() -> str:
    return os.path.join("results", datetime.now().strftime("%Y-%m-%d-%H%M%S"))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    console = Console()
    names = args.scenarios.split(",") if args.scenarios else []
    scale_out = scaleout.NAME in names
    args.scenarios = ",".join(n for n in names if n != scaleout.NAME) or None
    try:
        plan = make_plan(args)
    except ValueError as exc:
        console.print(f"compare: {exc}")
        return 2
    if scale_out and not args.scenarios:
        plan.scenarios, plan.targets = [], []  # the study runs alone
    for line in plan.skipped:
        console.print(line)
    if not plan.targets and not scale_out:
        console.print("compare: nothing to run (no engine or peer available)")
        return 2
    out_dir = args.out or default_out_dir()
    os.makedirs(out_dir, exist_ok=True)
    raise_fd_limit(descriptors_needed(plan))
    command = "python -m flash_green compare " + shlex.join(argv)
    console.print(f"{len(plan.targets)} targets x {len(plan.scenarios)} scenarios x {plan.repeats} repeat(s) "
                  f"-> {out_dir}")
    started = time.time()
    environment = report.environment(command, started_at=datetime.now(timezone.utc))
    ceiling = {} if args.no_ceiling else measure_ceiling(plan.settings)
    if any(s.name == "upstream" for s in plan.scenarios):
        with UpstreamService(cpu=plan.settings.generator_cpus) as service:
            plan.settings.upstream_port = service.port
            raw = run_matrix(plan, out_dir, console)
    else:
        raw = run_matrix(plan, out_dir, console)
    study = scaleout.run(plan.settings, args.scale_out_engine, args.scale_out_instances) if scale_out else None
    if study and "skipped" in study:
        console.print(study["skipped"])
    environment["elapsed_s"] = round(time.time() - started, 1)
    environment["loadavg_end"] = report.loadavg()
    data = report.build_results(environment, plan, ceiling, raw)
    if study:
        data[scaleout.NAME] = study
    written = report.write_all(data, out_dir, plots=not args.no_plots)
    for table in median_tables(data):
        console.print(table, width=min(console.width, TABLE_WIDTH))
    console.print(f"done in {environment['elapsed_s']:.0f} s; wrote " + ", ".join(written))
    return 0
