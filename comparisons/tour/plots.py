"""The tour's pictures: who served whom, when (timelines), and one number per chapter (bars).

A timeline has one panel per server of the chapter, on one time axis (ms
since the experiment started, from 0) so that durations compare across
panels. One row per client connection; on it, per request:

* light grey - the client waited and the server had not read a byte yet
  (queued in the listen backlog or in a socket buffer nobody read: only
  the client's own log can show it);
* dark grey - the request was arriving or queued inside the server (a
  trickled head, a job waiting for a pool thread);
* a colour - the request was in service, from the app's start to its last
  byte, in the colour of the OS thread (or process) that served it.

Several bars of one colour at the same time are concurrency: one thread
interleaving requests. Bars of different processes at the same time are
parallelism: several cores at work. Every plot states its units, starts its
axes at 0, and has a legend only for what it shows.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.patches import Patch

from .experiments import Run
from .measures import joined, runner_of, started

WAITING = "#dcdcdc"
QUEUED = "#8c8c8c"
UNTRACED = "white"
#: Bars shorter than this share of the time axis are drawn this wide, or they would vanish.
MIN_WIDTH_SHARE = 0.004
#: Runners named one by one in a legend; more get one line in the panel's title.
MAX_RUNNER_LEGEND = 8
PROCESS_FAMILIES = ("Blues", "Oranges", "Greens", "Purples", "Reds")
#: How `flash_green.tracing` names tasks, and what they are called on the page.
TASK_WORDS = (("tasklet-", "tasklets"), ("greenlet-", "greenlets"), ("Task-", "asyncio tasks"))


def runner_colours(records: list[dict]) -> dict[tuple, tuple[tuple, str]]:
    """Runner -> (colour, name), in order of first service; processes get a hue each
    when several of them have several threads."""
    order: list[tuple] = []
    for record in sorted(records, key=lambda r: r.get("app_start") or r["first_byte"]):
        runner = runner_of(record)
        if runner not in order:
            order.append(runner)
    processes: list = []
    threads: dict = {}
    for runner in order:
        process = runner[1]
        if process not in processes:
            processes.append(process)
        threads.setdefault(process, []).append(runner)
    families = len(processes) > 1 and any(len(t) > 1 for t in threads.values())
    palette = _palette(len(order))
    colours = {}
    for i, runner in enumerate(order):
        p = processes.index(runner[1])
        t = threads[runner[1]].index(runner)
        if families:
            family = plt.get_cmap(PROCESS_FAMILIES[p % len(PROCESS_FAMILIES)])
            colour = family(0.85 - 0.5 * t / max(1, len(threads[runner[1]]) - 1))
        else:
            colour = palette[i % len(palette)]
        colours[runner] = (colour, _runner_name(runner, p, t, len(processes), len(threads[runner[1]])))
    return colours


def _palette(count: int) -> list:
    """Distinct colours, none of them grey (grey is for waiting)."""
    if count <= 9:
        return [plt.get_cmap("tab10")(i) for i in range(10) if i != 7]
    return [plt.get_cmap("tab20")(i) for i in range(20) if i not in (14, 15)]


def _runner_name(runner: tuple, process: int, thread: int, processes: int, threads: int) -> str:
    if runner[0] == "child":
        return f"child process {process + 1}"
    if processes == 1:
        return "the one thread" if threads == 1 else f"thread {thread + 1}"
    return f"process {process + 1}" if threads == 1 else f"process {process + 1} thread {thread + 1}"


def timeline(panels: list[tuple[str, Run]], path: str, title: str) -> None:
    """One panel per (label, run), stacked on one time axis; saved to `path` (PNG)."""
    fig = timeline_figure(panels, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def timeline_figure(panels: list[tuple[str, Run]], title: str):
    end = max([_run_end(run) for _, run in panels] + [0.001]) * 1000
    rows = [max(1, len(_actors(run))) for _, run in panels]
    heights = [1.2 + 0.24 * n for n in rows]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, sum(heights) + 0.9), sharex=True,
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    min_width = end * MIN_WIDTH_SHARE
    for ax, (label, run) in zip(axes[:, 0], panels):
        _panel(ax, label, run, min_width)
    ax = axes[-1, 0]
    ax.set_xlim(0, end * 1.02)
    ax.set_xlabel("time since the experiment started (ms)")
    fig.suptitle(title, x=0.01, ha="left", fontsize=12)
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / height))  # room for the title above the panels
    return fig


def _tasks_note(run: Run) -> str:
    """' · 16 greenlets' when the runtime named the tasks that ran the app."""
    tasks = {(r["pid"], r["task"]) for r in run.server if r.get("task")}
    if not tasks:
        return ""
    first = next(iter(tasks))[1]
    kind = next((word for prefix, word in TASK_WORDS if first.startswith(prefix)), "tasks")
    return f" · {len(tasks)} {kind}"


def _actors(run: Run) -> list[str]:
    names: list[str] = []
    for exchange in run.client:
        if exchange["actor"] not in names:
            names.append(exchange["actor"])
    return names


def _run_end(run: Run) -> float:
    ends = [e["done"] for e in run.client if e["done"]] + [r["last_byte"] for r in run.server]
    return max(ends, default=0.0)


def _panel(ax, label: str, run: Run, min_width: float) -> None:
    actors = _actors(run)
    colours = runner_colours(run.server)
    used = set()
    for exchange, record in joined(run):
        y = actors.index(exchange["actor"])
        start = started(exchange) * 1000
        if record is None:
            finish = (exchange["done"] or _run_end(run)) * 1000
            _bar(ax, y, start, finish, UNTRACED, min_width, edge="black")
            used.add("untraced")
            continue
        first, app, last = (record["first_byte"] * 1000, (record["app_start"] or record["first_byte"]) * 1000,
                            record["last_byte"] * 1000)
        if first > start:
            _bar(ax, y, start, first, WAITING, min_width)
            used.add("waiting")
        if app > first:
            _bar(ax, y, first, app, QUEUED, min_width)
            used.add("queued")
        _bar(ax, y, app, last, colours[runner_of(record)][0], min_width)
    ax.set_yticks(range(len(actors)))
    ax.set_yticklabels(actors, fontsize=8)
    ax.set_ylim(len(actors) - 0.4, -0.6)
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(facecolor=c, edgecolor="black" if k == "untraced" else c, label=text)
               for k, c, text in (("waiting", WAITING, "waiting, not read by the server yet"),
                                  ("queued", QUEUED, "arriving / queued in the server"),
                                  ("untraced", UNTRACED, "no server record (failed)")) if k in used]
    runners = sorted(colours.values(), key=lambda cn: cn[1])
    note = ""
    if len(runners) <= MAX_RUNNER_LEGEND:
        handles += [Patch(facecolor=c, label=f"served by {name}") for c, name in runners]
    else:
        kind = "processes" if runners[0][1].startswith("child") else "OS threads"
        note = f" - served by {len(runners)} {kind}, one colour each"
    ax.set_title(f"{label}{_tasks_note(run)}{note}", loc="left", fontsize=10)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)


def _bar(ax, y: int, start: float, end: float, colour, min_width: float, edge=None) -> None:
    ax.broken_barh([(start, max(end - start, min_width))], (y - 0.35, 0.7), facecolors=colour,
                   edgecolors=edge or colour, linewidth=0.6)


def bars(values: list[tuple[str, float]], path: str, xlabel: str, title: str) -> None:
    """A horizontal bar per (label, value), the value written at its end; x from 0."""
    fig = bars_figure(values, xlabel, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bars_figure(values: list[tuple[str, float]], xlabel: str, title: str):
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.45 * len(values)))
    labels = [label for label, _ in values]
    numbers = [value for _, value in values]
    ax.barh(range(len(values)), numbers, color="#4c72b0", height=0.6)
    ax.set_yticks(range(len(values)))
    ax.set_yticklabels(labels, fontsize=9)
    ax.invert_yaxis()
    top = max(numbers + [1e-9])
    ax.set_xlim(0, top * 1.18)
    for i, value in enumerate(numbers):
        ax.text(value + top * 0.01, i, f"{value:,.1f}" if value < 100 else f"{value:,.0f}", va="center", fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_title(title, loc="left", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
