"""Turn a compare run into results.json, results.csv, PNG plots and report.md.

``results.json`` is the source of truth: the environment, the plan, the
generator's ceiling, every raw measurement (with the load generator's own
result) and the summary (the median of the repeats, with their spread). The
CSV, the plots and the Markdown are views of it, and `write_all` can
regenerate them from the JSON alone (``python -m comparisons.report DIR``).

Every sentence of the report's "which model when" section is generated from
the summary and quotes the numbers of the tables above it, so the text can
never claim what the run did not measure.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import asdict
from datetime import datetime
from typing import Any, Iterable, Sequence

from . import scaleout
from .scenarios import BY_NAME, Scenario

log = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("greenlet", "gevent", "eventlet", "gunicorn", "waitress", "uvicorn", "uvloop", "httptools",
            "psutil", "rich", "matplotlib")
#: A row measuring at least this share of the generator's ceiling measured the generator too.
CEILING_SHARE = 0.8
#: Thresholds of the "which model when" verdicts (percent).
SURVIVES_PCT = 50.0
STALLS_PCT = 20.0
STARVED_PCT = 10.0
#: The idle scenario ranks only targets that held at least this share of the connections.
HELD_ENOUGH_PCT = 90.0
#: Axis labels of the ranking metrics, in words.
METRIC_WORDS = {
    "ok_rps": "successful requests per second",
    "served_pct": "normal clients' request rate, % of their own baseline",
    "kb_per_conn": "server memory per idle connection (KB)",
    "mb_s": "throughput (MB per second)",
}
#: Latency percentiles drawn side by side, one panel each.
PERCENTILES = (("p50_ms", "median (p50)"), ("p90_ms", "p90"), ("p99_ms", "p99"))
#: Share of connections served at once (Little's law) that counts as "all of them"
#: (short runs under-count: connection set-up falls inside the measured second).
FAIR_PCT = 75.0


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{rev}{' (with uncommitted changes)' if dirty else ''}" if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _wrk_version() -> str | None:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].split(" Copyright")[0] if out else None


def environment(command: str, started_at: datetime) -> dict[str, Any]:
    """Everything a reader needs to judge and reproduce the numbers."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions,
        "wrk": _wrk_version(),
        "git": _git_revision(),
        "command": command,
        "loadavg_start": loadavg(),
    }


# ---------------------------------------------------------------------------
# Summary: median of repeats, with spread
# ---------------------------------------------------------------------------


def _flat(run: dict[str, Any]) -> dict[str, float]:
    """A run's metrics plus what the server used, as one dict."""
    values = dict(run.get("metrics") or {})
    for key in ("cpu_percent", "rss_peak_mb", "processes"):
        if key in (run.get("server") or {}):
            values[key] = run["server"][key]
    return values


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, target, level): every metric's median over the repeats.

    ``spread_pct`` is (max - min) / median of the scenario's ranking metric:
    how much the repeats disagreed.
    """
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["scenario"], run["target"], run["level"]), []).append(run)
    rows = []
    for (scenario_name, target, level), group in groups.items():
        flats = [_flat(r) for r in group]
        keys = sorted({k for f in flats for k in f})
        medians = {k: round(statistics.median(f[k] for f in flats if k in f), 3) for k in keys}
        metric = BY_NAME[scenario_name].metric if scenario_name in BY_NAME else None
        samples = [f[metric] for f in flats if metric in f]
        spread = None
        if len(samples) > 1 and statistics.median(samples):
            spread = round(100 * (max(samples) - min(samples)) / statistics.median(samples), 1)
        notes = sorted({r["note"] for r in group if r.get("note")})
        rows.append({"scenario": scenario_name, "target": target, "kind": group[0]["kind"], "level": level,
                     "n": len(samples), "metrics": medians, "spread_pct": spread, "note": "; ".join(notes)})
    order = {name: i for i, name in enumerate(BY_NAME)}
    rows.sort(key=lambda r: (order.get(r["scenario"], 99), r["level"], r["target"]))
    return rows


def build_results(environment: dict[str, Any], plan: Any, ceiling: dict[str, Any],
                  raw: dict[str, Any]) -> dict[str, Any]:
    """The results.json document."""
    return {
        "environment": environment,
        "settings": asdict(plan.settings),
        "repeats": plan.repeats,
        "scenarios": [s.name for s in plan.scenarios],
        "targets": [{"label": t.label, "kind": t.kind, "engine": t.engine, "args": list(t.args),
                     "concurrent": t.concurrent, "parallel": t.parallel, "summary": t.summary,
                     "command": raw["commands"].get(t.label)} for t in plan.targets],
        "skipped": plan.skipped,
        "ceiling": ceiling,
        "runs": raw["runs"],
        "failures": raw["failures"],
        "summary": summarize(raw["runs"]),
    }


# ---------------------------------------------------------------------------
# Queries over the summary
# ---------------------------------------------------------------------------


def rows_of(data: dict[str, Any], scenario: str, level: int | None = None) -> list[dict[str, Any]]:
    return [r for r in data["summary"] if r["scenario"] == scenario and (level is None or r["level"] == level)]


def levels_of(data: dict[str, Any], scenario: str) -> list[int]:
    return sorted({r["level"] for r in rows_of(data, scenario)})


def main_level(data: dict[str, Any], scenario: str) -> int | None:
    """The level a scenario's bar and latency charts show (hello: c=100 if measured)."""
    levels = levels_of(data, scenario)
    if not levels:
        return None
    return 100 if scenario == "hello" and 100 in levels else levels[-1]


def rankable(scenario: Scenario, row: dict[str, Any]) -> bool:
    """A row competes for "best" if it has the metric (idle: and held enough connections)."""
    metrics = row["metrics"]
    if scenario.metric not in metrics:
        return False
    if scenario.name == "idle":
        return metrics.get("held_pct", 0) >= HELD_ENOUGH_PCT
    return True


def ranked(data: dict[str, Any], scenario: Scenario, level: int) -> list[dict[str, Any]]:
    """Rows of one table, best first; unrankable rows last."""
    rows = rows_of(data, scenario.name, level)
    good = [r for r in rows if rankable(scenario, r)]
    good.sort(key=lambda r: r["metrics"][scenario.metric], reverse=not scenario.lower_is_better)
    return good + sorted((r for r in rows if not rankable(scenario, r)), key=lambda r: r["target"])


def percent_of_best(scenario: Scenario, value: float, best: float) -> float:
    if scenario.lower_is_better:
        return 100.0 * best / value if value else 100.0
    return 100.0 * value / best if best else 0.0


def fmt(value: float | None, spec: str = "{:,.0f}") -> str:
    return "-" if value is None else spec.format(value)


def _names(rows: Iterable[dict[str, Any]], key: str, spec: str, unit: str = "") -> str:
    parts = [f"{r['target']} ({fmt(r['metrics'].get(key), spec)}{unit})" for r in rows]
    return ", ".join(parts) if parts else "none"


# ---------------------------------------------------------------------------
# CSV and JSON
# ---------------------------------------------------------------------------


def write_csv(data: dict[str, Any], path: str) -> None:
    rows = data["summary"]
    keys = sorted({k for r in rows for k in r["metrics"]})
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["scenario", "target", "kind", "level", "repeats", "spread_pct", *keys, "note"])
        for r in rows:
            writer.writerow([r["scenario"], r["target"], r["kind"], r["level"], r["n"],
                             "" if r["spread_pct"] is None else r["spread_pct"],
                             *(r["metrics"].get(k, "") for k in keys), r["note"]])


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


class PlotFiles:
    """Saves matplotlib figures as PNG files in one folder and lists their names.

    Shared by this report and `comparisons.internals`; matplotlib is imported
    here, on first use, with the Agg backend (no display needed).
    """

    def __init__(self, out_dir: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.out_dir = out_dir
        self.written: list[str] = []

    def save(self, fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(os.path.join(self.out_dir, name), dpi=110)
        self.plt.close(fig)
        self.written.append(name)


def make_plots(data: dict[str, Any], out_dir: str) -> list[str]:
    """PNG files: throughput vs concurrency, latency per scenario, RSS per idle connection, a bar per scenario."""
    plots = PlotFiles(out_dir)
    plt, save, written = plots.plt, plots.save, plots.written

    hello = rows_of(data, "hello")
    if hello:
        fig, ax = plt.subplots(figsize=(11, 6))
        colors = plt.get_cmap("tab20").colors
        markers = "os^vD<>px*h"
        for i, target in enumerate(sorted({r["target"] for r in hello})):
            points = sorted((r["level"], r["metrics"]["ok_rps"]) for r in hello
                            if r["target"] == target and "ok_rps" in r["metrics"])
            if points:
                style = "--" if _is_peer(target) else "-"
                ax.plot([p[0] for p in points], [p[1] for p in points], style, color=colors[i % len(colors)],
                        marker=markers[i % len(markers)], label=target)
        levels = levels_of(data, "hello")
        ax.set_xscale("log")
        ax.set_xticks(levels, [f"{c:,}" for c in levels])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(_thousands())
        ax.set_xlabel("concurrent keep-alive connections (log scale)")
        ax.set_ylabel(METRIC_WORDS["ok_rps"])
        ax.set_title("hello, keep-alive: throughput vs concurrency" + _peer_note(hello, "peers dashed"))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        save(fig, "throughput_vs_concurrency.png")

    for name in data["scenarios"]:
        scenario = BY_NAME[name]
        level = main_level(data, name)
        if level is None:
            continue
        rows = [r for r in ranked(data, scenario, level) if rankable(scenario, r)]
        if not rows:
            continue
        labels = [r["target"] for r in rows][::-1]
        values = [r["metrics"][scenario.metric] for r in rows][::-1]
        colors = ["#999999" if _is_peer(label) else "#3b75af" for label in labels]
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
        ax.barh(labels, values, color=colors)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_formatter(_thousands())
        ax.set_xlabel(METRIC_WORDS.get(scenario.metric, f"{scenario.metric} ({scenario.unit})"))
        ax.set_title(f"{scenario.title} ({scenario.level_name}={level:,})" + _peer_note(rows, "peers grey"),
                     fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
        save(fig, f"bar-{name}.png")
        if name == "idle":
            continue
        with_latency = [r for r in rows if r["metrics"].get("p50_ms")]
        if with_latency:
            save(_latency_panels(plt, scenario, level, with_latency), f"latency-{name}.png")

    idle = [r for r in rows_of(data, "idle") if rankable(BY_NAME["idle"], r)]
    if idle:
        idle.sort(key=lambda r: r["metrics"]["kb_per_conn"])
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(idle) + 1.5))
        labels = [r["target"] for r in idle][::-1]
        ax.barh(labels, [r["metrics"]["kb_per_conn"] for r in idle][::-1],
                color=["#999999" if _is_peer(label) else "#6a51a3" for label in labels])
        ax.set_xlim(left=0)
        ax.set_xlabel("server memory (RSS) per idle keep-alive connection (KB)")
        ax.set_title(f"memory per idle connection ({idle[0]['level']:,} held open)"
                     + _peer_note(idle, "peers grey"), fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
        save(fig, "rss_per_idle_connection.png")
    return written


def _is_peer(label: str) -> bool:
    return label.startswith("peer:")


def _peer_note(rows: Iterable[Any], note: str) -> str:
    """`; peers grey` only when a peer is among the rows (labels or summary rows)."""
    labels = (r["target"] if isinstance(r, dict) else r for r in rows)
    return f" ({note})" if any(_is_peer(label) for label in labels) else ""


def _thousands() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:,.0f}")


def _latency_panels(plt: Any, scenario: Scenario, level: int, rows: list[dict[str, Any]]) -> Any:
    """One panel per percentile, each from 0 on its own linear scale, every bar labelled:
    a p50 of 0.2 ms stays readable next to a p99 of 200 ms."""
    labels = [r["target"] for r in rows][::-1]
    fig, axes = plt.subplots(1, len(PERCENTILES), sharey=True,
                             figsize=(12, 0.35 * len(rows) + 1.8))
    for ax, (key, words) in zip(axes, PERCENTILES):
        values = [r["metrics"].get(key, 0.0) for r in rows][::-1]
        bars = ax.barh(labels, values, color=["#999999" if _is_peer(t) else "#4292c6" for t in labels])
        ax.bar_label(bars, [f"{v:,.2f}" if v < 10 else f"{v:,.0f}" for v in values], padding=2, fontsize=7)
        ax.set_xlim(0, max(values + [1e-3]) * 1.3)
        ax.set_xlabel(f"{words}, ms")
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"{scenario.title}: latency ({scenario.level_name}={level:,})"
                 + _peer_note(labels, "peers grey"), fontsize=10)
    return fig


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------


def _ceiling_rps(data: dict[str, Any]) -> float | None:
    entry = data.get("ceiling", {}).get("keepalive c=100")
    return entry["rps"] if entry else None


def scenario_table(data: dict[str, Any], scenario: Scenario, level: int) -> list[str]:
    rows = ranked(data, scenario, level)
    good = [r for r in rows if rankable(scenario, r)]
    best = good[0]["metrics"][scenario.metric] if good else None
    ceiling = _ceiling_rps(data)
    headers = ["#", "target"]
    for col in scenario.columns:
        headers.append(col.header)
        if col.key == scenario.metric:
            headers.append("% of best")
    headers += ["spread %", "server CPU %", "RSS MB", "note"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for i, row in enumerate(rows, 1):
        m = row["metrics"]
        label = row["target"]
        if (scenario.name == "hello" and ceiling and m.get("rps", 0) >= CEILING_SHARE * ceiling):
            label += " †"
        cells = [str(i) if rankable(scenario, row) else "-", label]
        for col in scenario.columns:
            cells.append(fmt(m.get(col.key), col.fmt))
            if col.key == scenario.metric:
                cells.append(fmt(percent_of_best(scenario, m[col.key], best))
                             if rankable(scenario, row) and best is not None else "-")
        cells += [fmt(row["spread_pct"], "{:,.0f}"), fmt(m.get("cpu_percent")), fmt(m.get("rss_peak_mb"), "{:,.1f}"),
                  row["note"] or ("" if rankable(scenario, row) else _unranked_reason(scenario, row))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _unranked_reason(scenario: Scenario, row: dict[str, Any]) -> str:
    if scenario.name == "idle":
        return f"held {fmt(row['metrics'].get('held'))} of {row['level']}: not ranked"
    return "no result"


def hello_pivot(data: dict[str, Any]) -> list[str]:
    """ok req/s per target (rows) and concurrency (columns); * = under half the connections served."""
    levels = levels_of(data, "hello")
    targets = sorted({r["target"] for r in rows_of(data, "hello")})
    by = {(r["target"], r["level"]): r for r in rows_of(data, "hello")}
    lines = ["| target | " + " | ".join(f"c={c}" for c in levels) + " |", "|---|" + "---|" * len(levels)]
    for target in targets:
        cells = []
        for c in levels:
            row = by.get((target, c))
            if row is None or "ok_rps" not in row["metrics"]:
                cells.append("-")
                continue
            mark = " *" if row["metrics"].get("served_conns_pct", 100) < 50 else ""
            cells.append(fmt(row["metrics"]["ok_rps"]) + mark)
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    return lines


def which_model_when(data: dict[str, Any]) -> list[str]:
    """Bullets generated from the summary; each quotes numbers of the tables."""
    out: list[str] = []
    s = data["settings"]

    level_1000 = max((c for c in levels_of(data, "hello") if c <= 1000), default=None)
    if level_1000 and level_1000 > 1:
        rows = [r for r in rows_of(data, "hello", level_1000) if "ok_rps" in r["metrics"]]
        fair = sorted((r for r in rows if r["metrics"].get("served_conns_pct", 0) >= FAIR_PCT),
                      key=lambda r: -r["metrics"]["ok_rps"])
        starved = [r for r in rows if r["metrics"].get("served_conns_pct", 100) < 50]
        if fair:
            out.append(f"**Many connections (hello, c={level_1000:,}).** Fastest of those that served most of the "
                       f"{level_1000:,} connections at once (Little's law, ≥ {FAIR_PCT:.0f} %): "
                       f"{_names(fair[:6], 'ok_rps', '{:,.0f}', ' req/s')}.")
        if starved:
            out.append(f"Left most of the {level_1000:,} connections waiting (under 50 % served at once, so "
                       f"their req/s is that of the few clients served): "
                       f"{_names(starved, 'served_conns_pct', '{:,.0f}', ' % of conns')}.")
        ceiling = _ceiling_rps(data)
        near = [r for r in rows_of(data, "hello") if ceiling and r["metrics"].get("rps", 0) >= CEILING_SHARE * ceiling]
        if near:
            out.append(f"Within {CEILING_SHARE:.0%} of the load generator's own ceiling ({fmt(ceiling)} req/s), "
                       f"so partly a measure of the generator (marked †): "
                       + ", ".join(f"{r['target']} at c={r['level']:,} ({fmt(r['metrics']['ok_rps'])} req/s)"
                                   for r in near) + ".")

    for name, what in (("blocking", f"a handler that blocks {s['sleep_ms']} ms in time.sleep"),
                       ("upstream", f"a handler that waits {s['sleep_ms']} ms on an upstream TCP call")):
        rows = [r for r in rows_of(data, name) if "efficiency_pct" in r["metrics"]]
        if not rows:
            continue
        ideal = rows[0]["metrics"].get("ideal_rps")
        ok = sorted((r for r in rows if r["metrics"]["efficiency_pct"] >= SURVIVES_PCT),
                    key=lambda r: -r["metrics"]["efficiency_pct"])
        stall = [r for r in rows if r["metrics"]["efficiency_pct"] < STALLS_PCT]
        out.append(f"**{BY_NAME[name].title}.** With {what} at c={s['handler_concurrency']} (ideal "
                   f"{fmt(ideal)} req/s), kept ≥ {SURVIVES_PCT:.0f} % of the ideal: "
                   f"{_names(ok, 'efficiency_pct', '{:,.0f}', ' %')}. Stalled below {STALLS_PCT:.0f} %, "
                   f"one wait at a time: {_names(stall, 'efficiency_pct', '{:,.0f}', ' %')}.")

    rows = [r for r in rows_of(data, "slowloris") if "served_pct" in r["metrics"]]
    if rows:
        n = rows[0]["level"]
        ok = sorted((r for r in rows if r["metrics"]["served_pct"] >= SURVIVES_PCT),
                    key=lambda r: -r["metrics"]["served_pct"])
        starved = [r for r in rows if r["metrics"]["served_pct"] < STARVED_PCT]
        out.append(f"**Slow clients.** With {n:,} slowloris connections open, normal clients still got "
                   f"≥ {SURVIVES_PCT:.0f} % of their own baseline rate on: "
                   f"{_names(ok, 'served_pct', '{:,.0f}', ' %')}. "
                   f"Starved (< {STARVED_PCT:.0f} %): {_names(starved, 'served_pct', '{:,.0f}', ' %')}.")

    rows = rows_of(data, "idle")
    if rows:
        n = rows[0]["level"]
        held = sorted((r for r in rows if rankable(BY_NAME["idle"], r)), key=lambda r: r["metrics"]["kb_per_conn"])
        short = [r for r in rows if "held" in r["metrics"] and not rankable(BY_NAME["idle"], r)]
        if held:
            out.append(f"**Memory per idle connection ({n:,} held).** Cheapest: "
                       f"{_names(held[:3], 'kb_per_conn', '{:,.1f}', ' KB')}; most expensive: "
                       f"{_names(held[-2:], 'kb_per_conn', '{:,.1f}', ' KB')}.")
        if short:
            out.append(f"Could not hold {n:,} idle connections (held): {_names(short, 'held', '{:,.0f}')}.")

    rows = [r for r in rows_of(data, "cpu") if "ok_rps" in r["metrics"]]
    parallel = {t["label"] for t in data["targets"] if t["parallel"]}
    if rows:
        multi = sorted((r for r in rows if r["target"] in parallel), key=lambda r: -r["metrics"]["ok_rps"])
        single = sorted((r for r in rows if r["target"] not in parallel), key=lambda r: -r["metrics"]["ok_rps"])
        cores = len(s.get("all_cpus") or []) or data["environment"].get("cores")
        if multi and single:
            a, b = multi[0], single[0]
            ratio = a["metrics"]["ok_rps"] / b["metrics"]["ok_rps"] if b["metrics"]["ok_rps"] else float("inf")
            verb = "beat" if ratio > 1.1 else "did not beat"
            out.append(f"**CPU-bound work ({cores} cores).** Processes {verb} one process: the best multi-process "
                       f"target, {a['target']}, did {fmt(a['metrics']['ok_rps'])} req/s at "
                       f"{fmt(a['metrics'].get('cpu_percent'))} % CPU; the best single process, {b['target']}, "
                       f"{fmt(b['metrics']['ok_rps'])} req/s at {fmt(b['metrics'].get('cpu_percent'))} % CPU "
                       f"(×{ratio:.2f}).")
        elif single:
            b = single[0]
            out.append(f"**CPU-bound work.** No multi-process target was measured; the best single process, "
                       f"{b['target']}, did {fmt(b['metrics']['ok_rps'])} req/s at "
                       f"{fmt(b['metrics'].get('cpu_percent'))} % CPU (one core's worth of Python under the GIL).")

    rows = sorted((r for r in rows_of(data, "new-conn") if r["metrics"].get("ok_rps")),
                  key=lambda r: -r["metrics"]["ok_rps"])
    if len(rows) >= 2:
        out.append(f"**New connection per request.** Cheapest: {_names(rows[:2], 'ok_rps', '{:,.0f}', ' req/s')}; "
                   f"dearest: {_names(rows[-2:], 'ok_rps', '{:,.0f}', ' req/s')}.")

    for name in ("download", "upload"):
        rows = sorted((r for r in rows_of(data, name) if r["metrics"].get("mb_s")), key=lambda r: -r["metrics"]["mb_s"])
        if rows:
            out.append(f"**{BY_NAME[name].title}.** Fastest: {_names(rows[:3], 'mb_s', '{:,.1f}', ' MB/s')}; "
                       f"slowest: {_names(rows[-1:], 'mb_s', '{:,.1f}', ' MB/s')}.")

    out.extend(_in_short(data))
    return out


def _in_short(data: dict[str, Any]) -> list[str]:
    """The closing advice: intersections of the verdicts above, each with its numbers."""
    def verdict(name: str, key: str, threshold: float) -> dict[str, float]:
        return {r["target"]: r["metrics"][key] for r in rows_of(data, name)
                if r["metrics"].get(key, -1) >= threshold}

    blocking = verdict("blocking", "efficiency_pct", SURVIVES_PCT)
    upstream = verdict("upstream", "efficiency_pct", SURVIVES_PCT)
    slow = verdict("slowloris", "served_pct", SURVIVES_PCT)
    lines = []
    if blocking and upstream and slow:
        robust = sorted(set(blocking) & set(upstream) & set(slow))
        if robust:
            lines.append("**In short.** Survived the blocking handler, the slow upstream and slowloris alike "
                         "(% of ideal, % of ideal, % of baseline): "
                         + ", ".join(f"{t} ({blocking[t]:,.0f}, {upstream[t]:,.0f}, {slow[t]:,.0f})" for t in robust)
                         + ". These are the safe defaults for ordinary WSGI apps that wait on I/O.")
    return lines


def environment_lines(env: dict[str, Any]) -> list[str]:
    """Machine, software, and revision with load: the Markdown bullets every report opens with."""
    took = f"run took {env['elapsed_s']:,.0f} s; " if "elapsed_s" in env else ""
    return [
        f"- machine: `{env['host']}`, {env['cpu']}, {env['cores']} cores, {env['kernel']}",
        f"- {env['python']}; packages: " + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v),
        f"- git {env['git']}; {took}load average at start {env['loadavg_start']}, at end "
        f"{env.get('loadavg_end')} (other work on the machine shows here)",
    ]


def markdown(data: dict[str, Any], plots: Sequence[str]) -> str:
    env = data["environment"]
    s = data["settings"]
    lines = [f"# Flash comparison — {env['date']}", ""]
    lines += [
        "## Environment", "",
        *environment_lines(env)[:2],
        f"- load generator: {env['wrk'] or 'built-in (wrk not installed)'}"
        + ("" if s["prefer_wrk"] else " (disabled with --no-wrk)")
        + "; wrk runs the closed-loop keep-alive measurements, the built-in generator the others",
        f"- pinning: generator and upstream on CPUs {s['generator_cpus']}, server on {s['server_cpus']} "
        f"(the CPU scenario gives the server {s['all_cpus']})" if s["generator_cpus"] else
        "- pinning: none (fewer than 2 CPUs)",
        environment_lines(env)[2],
        f"- {data['repeats']} repeat(s) of {s['duration']:g} s per measurement; per-operation timeout "
        f"{s['timeout']:g} s; tables show the median of the repeats and their spread",
        "", "Reproduce:", "", "```", env["command"], "```", "",
    ]
    if data.get("ceiling"):
        lines += ["## The load generator's ceiling", "",
                  "Measured against `comparisons/canned.py` (a server that only sends a fixed response), "
                  "pinned like the real runs. Rows within "
                  f"{CEILING_SHARE:.0%} of the keep-alive ceiling are marked † in the hello tables: they "
                  "measure the generator as much as the server.", "",
                  "| shape | tool | req/s | p99 ms |", "|---|---|---|---|"]
        for shape, c in data["ceiling"].items():
            lines.append(f"| {shape} | {c['tool']} | {fmt(c['rps'])} | {fmt(c['p99_ms'], '{:,.2f}')} |")
        lines.append("")
    lines += ["## Targets", "", "| target | kind | what it is | server command |", "|---|---|---|---|"]
    for t in data["targets"]:
        lines.append(f"| {t['label']} | {t['kind']} | {t['summary']} | "
                     f"`{t['command'] or '-'}` |")
    lines.append("")
    if data["skipped"]:
        lines += ["Skipped: " + "; ".join(data["skipped"]), ""]

    wmw = which_model_when(data)
    if wmw:
        lines += ["## Which model when", "",
                  "Generated from the tables below; every number here is in them.", ""]
        lines += [f"- {line}" for line in wmw] + [""]

    if "hello" in data["scenarios"] and rows_of(data, "hello"):
        lines += ["## hello, keep-alive: throughput by concurrency", "",
                  "Successful req/s; `*` = fewer than half of the connections were served (Little's law: "
                  "req/s × mean latency is the number of connections served at once).", ""]
        lines += hello_pivot(data) + [""]
    for name in data["scenarios"]:
        scenario = BY_NAME[name]
        for level in levels_of(data, name):
            lines += [f"## {scenario.title} — {scenario.level_name}={level:,}", "",
                      f"What it shows: {scenario.shows}.", ""]
            lines += scenario_table(data, scenario, level) + [""]
    lines += scaleout.markdown_section(data.get(scaleout.NAME))
    if data["failures"]:
        lines += ["## Failures", "", "| scenario | target | repeat | error |", "|---|---|---|---|"]
        for f in data["failures"]:
            error = f["error"].strip().splitlines()[0][:160].replace("|", "\\|") if f["error"].strip() else "?"
            lines.append(f"| {f['scenario']} | {f['target']} | {f['repeat'] + 1} | {error} |")
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def write_all(data: dict[str, Any], out_dir: str, plots: bool = True) -> list[str]:
    """results.json, results.csv, the plots and report.md in ``out_dir``; returns the file names."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as handle:
        json.dump(data, handle, indent=1, default=str)
    write_csv(data, os.path.join(out_dir, "results.csv"))
    pngs = make_plots(data, out_dir) if plots else []
    with open(os.path.join(out_dir, "report.md"), "w") as handle:
        handle.write(markdown(data, pngs))
    return ["results.json", "results.csv", *pngs, "report.md"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m comparisons.report DIR``: regenerate the CSV, plots and report from DIR/results.json."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m comparisons.report RESULTS_DIR", file=sys.stderr)
        return 2
    with open(os.path.join(args[0], "results.json")) as handle:
        data = json.load(handle)
    data["summary"] = summarize(data["runs"])
    print(", ".join(write_all(data, args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
