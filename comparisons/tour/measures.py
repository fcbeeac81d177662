"""The numbers of one run, from what its clients and its server's trace saw.

Latencies are the clients' (connect to last byte received, in ms), per
group of actors ("others", "sleepers", "cpu"...). From the trace come who
served the requests - how many processes, OS threads and tasks - and how
many requests were in service at once: overall, and at most in one OS
thread. Many requests in service at once in one thread is concurrency;
requests in service at once in several processes, each on its own core, is
parallelism. From the server's process tree: CPU used while the clients
played (100 % = one core busy) and, when idle connections were held, the
memory and threads each one cost.
"""

from __future__ import annotations

import statistics
from typing import Any

from .experiments import Run


def runner_of(record: dict[str, Any]) -> tuple:
    """The OS-level runner of a request: its CGI child, else its (process, thread)."""
    if record.get("child"):
        return ("child", record["child"])
    return ("thread", record["pid"], record["thread"])


def started(exchange: dict[str, Any]) -> float:
    """When a request began for its client: the connect for a connection's
    first request, the send for the ones after it on the same connection."""
    return exchange["send"] if exchange["index"] else exchange["connect"]


def latency_ms(exchange: dict[str, Any]) -> float | None:
    if exchange["error"] or exchange["done"] is None:
        return None
    return (exchange["done"] - started(exchange)) * 1000


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end at t closes before a start at t)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda e: (e[0], e[1]))
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def in_service(record: dict[str, Any]) -> tuple[float, float] | None:
    """While the app ran: the request held its runner (sending after it is
    left out: the event engine notes its last byte only back on the loop)."""
    start = record.get("app_start")
    if start is None:
        return None
    return start, record["app_end"]


def joined(run: Run) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Each client exchange with the server's record of it (None if not traced).

    The client's port is the server's peer port; on one connection the
    n-th request the client sent is the n-th the server answered.
    """
    by_port: dict[int, list[dict[str, Any]]] = {}
    for record in sorted(run.server, key=lambda r: r["first_byte"]):
        by_port.setdefault(int(record["peer"].rsplit(":", 1)[1]), []).append(record)
    pairs = []
    for exchange in run.client:
        records = by_port.get(exchange["port"], [])
        index = exchange["index"]
        pairs.append((exchange, records[index] if index < len(records) else None))
    return pairs


def measure(run: Run) -> dict[str, float]:
    """Every number of `run`, flat: ``<group>.p50_ms``, ``wall_ms``, ``peak_per_thread``..."""
    metrics: dict[str, float] = {}
    groups: dict[str, list[float]] = {}
    for exchange in run.client:
        value = latency_ms(exchange)
        if value is not None:
            groups.setdefault(exchange["group"], []).append(value)
    for group, values in groups.items():
        metrics[f"{group}.p50_ms"] = round(statistics.median(values), 1)
        metrics[f"{group}.max_ms"] = round(max(values), 1)
        metrics[f"{group}.n"] = len(values)
    unread: dict[str, list[float]] = {}
    for exchange, record in joined(run):
        if record is not None and not exchange["error"]:
            # Before the server read a byte: the listen backlog, or a socket buffer nobody read.
            waited = record["first_byte"] - started(exchange)
            unread.setdefault(exchange["group"], []).append(max(0.0, waited) * 1000)
    for group, values in unread.items():
        metrics[f"{group}.unread_p50_ms"] = round(statistics.median(values), 1)
    done = [e for e in run.client if latency_ms(e) is not None]
    metrics["ok"] = len(done)
    metrics["failed"] = len(run.client) - len(done)
    if done:
        wall = max(e["done"] for e in done) - min(started(e) for e in done)
        metrics["wall_ms"] = round(wall * 1000, 1)
        metrics["rps"] = round(len(done) / wall, 1) if wall > 0 else 0.0
    metrics.update(_who_served(run.server))
    metrics["cpu_percent"] = run.resources.get("cpu_percent", 0.0)
    idle = run.idle
    if idle.get("held"):
        metrics["idle_held"] = idle["held"]
        metrics["kb_per_idle_conn"] = round((idle["rss_after"] - idle["rss_before"]) / idle["held"] / 1024, 1)
        metrics["threads_idle"] = idle["threads_after"]
    return metrics


def _who_served(records: list[dict[str, Any]]) -> dict[str, float]:
    spans = {}
    for record in records:
        span = in_service(record)
        if span is not None:
            spans.setdefault(runner_of(record), []).append(span)
    all_spans = [s for per_runner in spans.values() for s in per_runner]
    return {
        "traced": len(records),
        "processes": len({r["child"] or r["pid"] for r in records}),
        "threads": len({(r["pid"], r["thread"]) for r in records}),
        "tasks": len({(r["pid"], r["task"]) for r in records if r["task"]}),
        "children": len({r["child"] for r in records if r["child"]}),
        "peak_in_service": peak_overlap(all_spans) if all_spans else 0,
        "peak_per_thread": max((peak_overlap(s) for s in spans.values()), default=0),
        "peak_processes": _peak_processes(records),
    }


def _peak_processes(records: list[dict[str, Any]]) -> int:
    """Most processes running the app at one instant (a CGI child counts as one)."""
    per_process: dict[Any, list[tuple[float, float]]] = {}
    for record in records:
        span = in_service(record)
        if span is not None:
            per_process.setdefault(record["child"] or record["pid"], []).append(span)
    merged = []
    for spans in per_process.values():
        spans.sort()
        start, end = spans[0]
        for s, e in spans[1:]:
            if s > end:
                merged.append((start, end))
                start, end = s, e
            else:
                end = max(end, e)
        merged.append((start, end))
    return peak_overlap(merged) if merged else 0


def median_run(runs: list[Run], key: str) -> tuple[Run, dict[str, float]]:
    """The run whose `key` is the median of the repeats, and the median of every number."""
    measured = [(run, measure(run)) for run in runs]
    measured.sort(key=lambda rm: rm[1].get(key, 0.0))
    chosen = measured[(len(measured) - 1) // 2]
    keys = set().union(*(m for _, m in measured))
    medians = {k: round(statistics.median(m[k] for _, m in measured if k in m), 1) for k in keys}
    return chosen[0], medians
