"""``python -m flash_green tour [--quick] [--out DIR] [--open]``: run the course and write its page.

Plans every (experiment, server) pair the chosen chapters need - a pair
shared by two chapters (the previous model re-run as the next one's
baseline) runs once - and runs them, each in a fresh traced server,
`--repeat` times with the order rotated every round so that no server is
always first. Everything measured goes to ``DIR/tour.json``; the page
(``index.html`` and its PNG files) is built from that file alone, so
``--rebuild`` redraws it without running anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
import webbrowser
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from flash_green import engines

from .. import report
from ..childproc import raise_fd_limit
from ..servers import ServerFailed, Target, engine_target
from . import chapters
from .experiments import Run, Scale, build_experiments, run_experiment
from .page import write_page

log = logging.getLogger("comparisons.tour")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m flash_green tour", description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller experiments, one run each (minutes)")
    size.add_argument("--smoke", action="store_true", help="tiny experiments (seconds): checks the machinery")
    p.add_argument("--chapters", help=f"comma-separated chapters (default all): {', '.join(chapters.BY_KEY)}")
    p.add_argument("--out", help="output directory (default results/tour-<date-time>)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser when done")
    p.add_argument("--rebuild", action="store_true", help="only redraw the page from OUT/tour.json")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def plan(selected: list[chapters.Chapter], scale: Scale) -> tuple[list[tuple[str, Target]], list[str]]:
    """The (experiment, target) pairs to run, in course order, and why any target was left out."""
    pairs: list[tuple[str, Target]] = []
    skipped: list[str] = []
    seen = set()
    for chapter in selected:
        for tour_target in chapter.targets:
            if tour_target.full_only and scale.name != "full":
                continue
            key = (chapter.experiment, tour_target.label)
            if key in seen:
                continue
            seen.add(key)
            try:
                pairs.append((chapter.experiment, engine_target(tour_target.spec, label=tour_target.label,
                                                                paths=dict(tour_target.paths))))
            except (engines.EngineUnavailable, KeyError) as exc:
                skipped.append(f"{tour_target.label}: {exc.args[0]}")
    return pairs, skipped


def run_tour(selected: list[chapters.Chapter], scale: Scale, out_dir: str, command: str) -> dict[str, Any]:
    started = datetime.now(timezone.utc)
    began = time.monotonic()
    experiments = build_experiments(scale)
    pairs, skipped = plan(selected, scale)
    raise_fd_limit(max((e.idle for e in experiments.values()), default=0) + 1024)
    workdir = os.path.join(out_dir, "servers")
    os.makedirs(workdir, exist_ok=True)
    environment = report.environment(command, started)
    runs: list[Run] = []
    total = len(pairs) * scale.repeats
    done = 0
    for repeat in range(scale.repeats):
        shift = repeat % max(1, len(pairs))
        for experiment, target in pairs[shift:] + pairs[:shift]:
            done += 1
            t = time.monotonic()
            try:
                run = run_experiment(experiments[experiment], target, workdir, repeat)
            except (ServerFailed, OSError) as exc:
                # One failed run is reported on the page; the tour goes on.
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                skipped.append(f"{target.label} ({experiment}, run {repeat + 1}): {reason}")
                print(f"[{done}/{total}] {experiment} on {target.label}: failed: {reason}", flush=True)
                continue
            runs.append(run)
            status = f"  ({run.error})" if run.error else ""
            print(f"[{done}/{total}] {experiment} on {target.label}: {time.monotonic() - t:.1f} s{status}",
                  flush=True)
    return {
        "environment": environment,
        "scale": scale.name,
        "chapters": [c.key for c in selected],
        "runs": [run.to_dict() for run in runs],
        "skipped": skipped,
        "duration_s": round(time.monotonic() - began, 1),
        "loadavg_end": report.loadavg(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scale = Scale.named("smoke" if args.smoke else "quick" if args.quick else "full")
    out_dir = args.out or os.path.join("results", "tour-" + datetime.now().strftime("%Y%m%d-%H%M%S"))
    data_path = os.path.join(out_dir, "tour.json")
    try:
        selected = chapters.select([k.strip() for k in args.chapters.split(",")] if args.chapters else None)
    except KeyError as exc:
        print(f"tour: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.rebuild:
        with open(data_path) as handle:
            data = json.load(handle)
    else:
        os.makedirs(out_dir, exist_ok=True)
        command = "python -m flash_green tour " + " ".join(shlex.quote(a) for a in argv)
        data = run_tour(selected, scale, out_dir, command.strip())
        with open(data_path, "w") as handle:
            json.dump(data, handle)
    page = write_page(data, out_dir)
    print(f"tour: {len(data['runs'])} runs in {data['duration_s']:.0f} s; the page: {page}")
    if args.open:
        webbrowser.open("file://" + os.path.abspath(page))
    return 0
