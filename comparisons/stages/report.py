"""The stage tool's results: one JSON document, rich tables for the terminal, Markdown for the README."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.table import Table

from comparisons.bench_inprocess import Run

from .floors import IO_STAGES, PURE_STAGES
from .sampling import STAGES

FLOOR_LABEL = "in-process floor (hot loop, no wake-ups)"
#: (ours, reference, the ratio issue 17 aims at), read on req/s and per CPU-second.
AIMS = (
    ("tasklets", "uvicorn httptools uvloop", 1.5),
    ("tasklets", "raw epoll canned", 0.4),
    ("epoll", "tasklets", 0.9),
    ("asyncio", "tasklets", 0.9),
    ("asyncio --uvloop", "tasklets", 0.9),
)


@dataclass
class Level:
    """Every round of every server at one wrk concurrency (servers may override it)."""

    connections: int
    runs: dict[str, list[dict]] = field(default_factory=dict)

    @classmethod
    def from_runs(cls, connections: int, runs: dict[str, list[Run]],
                  server_connections: dict[str, int]) -> Level:
        return cls(connections, {label: [dict(asdict(r), connections=server_connections.get(label, connections))
                                         for r in values] for label, values in runs.items()})

    def median(self, label: str, key: str) -> float:
        return statistics.median(r[key] for r in self.runs[label])

    def spread(self, label: str, key: str) -> tuple[float, float]:
        values = [r[key] for r in self.runs[label]]
        return min(values), max(values)

    def errors(self, label: str) -> list[str]:
        return [r["errors"] for r in self.runs[label]]


@dataclass
class Split:
    """One server's CPU per request by stage (sampled shares x the unprofiled total)."""

    total_us: float
    stages: dict[str, float]
    errors_us: dict[str, float]
    #: py-spy's samples (Python) and perf's (on-CPU).
    samples: int
    cpu_samples: int
    #: perf's division of the total: python, recv, send, poll, kernel (us).
    cpu_us: dict[str, float]
    #: epoll_wait and the lines calling it, a part of scheduling.
    poll_us: float
    #: The innermost functions by self time: (function (file), us per request, stage).
    hot: list[tuple[str, float, str]]
    #: The same by line: (function (file:line), us per request, stage).
    hot_lines: list[tuple[str, float, str]]


@dataclass
class Results:
    command: str
    machine: str
    floors: dict[str, float]
    levels: dict[str, Level] = field(default_factory=dict)
    splits: dict[str, Split] = field(default_factory=dict)
    no_split: dict[str, str] = field(default_factory=dict)
    peers: list[str] = field(default_factory=list)
    idle_kb: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    # -- derived figures -------------------------------------------------------------

    def base_level(self) -> Level | None:
        return next(iter(self.levels.values()), None)

    def check(self) -> dict[str, dict]:
        """Does each split add up? Sampled stages must sum to the measured
        total (by construction, to rounding) and the in-process floors of the
        pure stages must not exceed what the server spent under load by more
        than its spread plus twice the sampling error."""
        out = {}
        level = self.base_level()
        floor_pure = sum(self.floors[s] for s in PURE_STAGES)
        for label, split in self.splits.items():
            low, high = level.spread(label, "cpu_us_per_request") if level and label in level.runs else (0, 0)
            sampled_pure = sum(split.stages[s] for s in PURE_STAGES)
            margin = (high - low) + 2 * sum(split.errors_us[s] for s in PURE_STAGES)
            out[label] = {
                "sum_us": sum(split.stages.values()), "total_us": split.total_us,
                "adds_up": abs(sum(split.stages.values()) - split.total_us) <= 0.01 * split.total_us + 0.01,
                "floor_pure_us": floor_pure, "sampled_pure_us": sampled_pure,
                "floor_within_total": label in self.peers or floor_pure <= split.total_us + margin,
            }
        return out

    def ratios(self) -> list[dict]:
        """The aims of issue 17, as ratios of medians of one run, per level."""
        out = []
        for key, level in self.levels.items():
            for ours, ref, aim in AIMS:
                if ours in level.runs and ref in level.runs:
                    rate = level.median(ours, "rate") / level.median(ref, "rate")
                    per_cpu = level.median(ref, "cpu_us_per_request") / level.median(ours, "cpu_us_per_request")
                    out.append({"level": key, "ours": ours, "reference": ref, "aim": aim,
                                "rate_ratio": rate, "per_cpu_ratio": per_cpu})
        return out


def _us(value: float) -> str:
    return f"{value:.1f}"


def stage_rows(results: Results) -> list[list[str]]:
    """The stage table: a header and one row per server, then the floor row."""
    header = ["server", "c", "req/s", "CPU us/req", *STAGES, "samples py-spy / perf"]
    rows = [header]
    level = results.base_level()
    if level is None:
        return rows
    for label in level.runs:
        c = str(level.runs[label][0]["connections"])
        rate = f"{level.median(label, 'rate'):,.0f}"
        low, high = level.spread(label, "cpu_us_per_request")
        cpu = f"{level.median(label, 'cpu_us_per_request'):.1f} ({low:.0f}-{high:.0f})"
        split = results.splits.get(label)
        if split is None:
            rows.append([label, c, rate, cpu, *["-"] * len(STAGES), "total only*"])
            continue
        cells = []
        for stage in STAGES:
            peer_stage = label in results.peers and stage in PURE_STAGES
            cells.append("-" if peer_stage else f"{_us(split.stages[stage])}±{split.errors_us[stage]:.1f}")
        rows.append([label, c, rate, cpu, *cells, f"{split.samples} / {split.cpu_samples}"])
    floors = results.floors
    rows.append([FLOOR_LABEL, "1", "", _us(sum(floors.values())),
                 *[_us(floors[s]) for s in (*PURE_STAGES, *IO_STAGES)], "-", ""])
    return rows


def level_rows(results: Results) -> list[list[str]]:
    """req/s and CPU per request of every server at every level (the ceiling table)."""
    keys = list(results.levels)
    header = ["server"] + [f"{part} c={key}" for key in keys for part in ("req/s", "us/req")] + ["errors"]
    labels: list[str] = []
    for level in results.levels.values():
        labels += [label for label in level.runs if label not in labels]
    rows = [header]
    for label in labels:
        cells, errors = [], []
        for key, level in results.levels.items():
            if label not in level.runs:
                cells += ["", ""]
                continue
            rounds = " ".join(f"{r['rate']:.0f}" for r in level.runs[label])
            cells += [f"{level.median(label, 'rate'):,.0f} ({rounds})",
                      f"{level.median(label, 'cpu_us_per_request'):.1f}"]
            errors += [f"c={key}: {e}" for e in level.errors(label) if e]
        rows.append([label, *cells, "; ".join(errors) or "none"])
    return rows


def ratio_rows(results: Results) -> list[list[str]]:
    rows = [["level", "ratio", "req/s", "per CPU-second", "aim"]]
    for r in results.ratios():
        verdict = "meets" if r["rate_ratio"] >= r["aim"] else "misses"
        rows.append([f"c={r['level']}", f"{r['ours']} / {r['reference']}", f"{r['rate_ratio']:.2f} ({verdict})",
                     f"{r['per_cpu_ratio']:.2f}", f">= {r['aim']}"])
    return rows


def idle_rows(results: Results) -> list[list[str]]:
    return [["server", "KB per idle keep-alive connection"]] + [
        [label, f"{kb:.2f}"] for label, kb in results.idle_kb.items()]


def hot_rows(split: Split, limit: int) -> list[list[str]]:
    return [["function (innermost frame)", "stage", "us/req"]] + [
        [where, stage, f"{us:.2f}"] for where, us, stage in split.hot[:limit]]


def tables(results: Results, hot_limit: int = 15) -> list[tuple[str, list[list[str]]]]:
    """(title, rows) of every table, header row first."""
    out = [("CPU microseconds per hello request by stage (sampled under load; ± one sampling error)",
            stage_rows(results))]
    if results.levels:
        out.append(("hello keep-alive: medians (rounds), one interleaved run", level_rows(results)))
    if results.ratios():
        out.append(("ratios of medians, same run", ratio_rows(results)))
    if results.idle_kb:
        out.append(("idle keep-alive connections", idle_rows(results)))
    for label in ("tasklets", "epoll"):
        if label in results.splits:
            out.append((f"{label}: where the CPU goes (self time, sampled)",
                        hot_rows(results.splits[label], hot_limit)))
    return out


def print_tables(results: Results, console: Console | None = None) -> None:
    console = console or Console(width=200)
    for title, rows in tables(results):
        table = Table(title=title, title_justify="left")
        for i, name in enumerate(rows[0]):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in rows[1:]:
            table.add_row(*row)
        console.print(table)
        if title.startswith("CPU microseconds"):
            for line in notes(results):
                console.print(line)
    for line in results.skipped:
        console.print(line)


def notes(results: Results) -> list[str]:
    """Why the rows marked "total only*" have no split."""
    return [f"* {label}: {why}" for label, why in results.no_split.items()]


def markdown(results: Results) -> str:
    """The tables as Markdown (the README snippet and the results file)."""
    parts = [f"`{results.command}` - {results.machine}\n"]
    for i, (title, rows) in enumerate(tables(results)):
        parts.append(f"**{title}**\n")
        parts.append("| " + " | ".join(rows[0]) + " |")
        parts.append("| --- |" + " ---: |" * (len(rows[0]) - 1))
        parts += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        parts.append("")
        if i == 0 and results.no_split:
            parts += [*notes(results), ""]
    return "\n".join(parts)


def load(path: str) -> Results:
    """Results read back from a stages.json."""
    with open(path) as f:
        data = json.load(f)
    return Results(**{**data, "levels": {k: Level(**v) for k, v in data["levels"].items()},
                      "splits": {k: Split(**v) for k, v in data["splits"].items()}})
