"""Running a load: pick the generator (wrk or ours), run ours in one process or several, merge.

``run_load`` is the entry point the scenarios use: wrk when it is installed
and can do the job, our generator otherwise. ``run`` runs ours - one
``LoadLoop`` in this process, or ``processes`` of them through ``fanout`` -
and ``combine`` merges the loops' counters and histograms into one
``LoadResult``. ``ceiling`` measures the generator itself against
``comparisons.canned``, a server that does nothing but send a fixed response:
if a server under test scores near that ceiling, the generator was the
bottleneck, not the server.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Mapping, Sequence

from comparisons import wrk
from comparisons.canned import CannedServer
from comparisons.childproc import cpu_set
from comparisons.histogram import Histogram
from comparisons.load_result import ERROR_KINDS, LoadResult
from comparisons.loadgen.config import LoadConfig
from comparisons.loadgen.fanout import run_processes
from comparisons.loadgen.loop import LoadLoop

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _pinned(cpus: set[int]) -> Iterator[None]:
    """Pin this process to ``cpus`` for the block, then restore the old mask."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def combine(cfg: LoadConfig, partials: list[dict[str, Any]]) -> LoadResult:
    """One ``LoadResult`` from the ``LoadLoop.partial()`` counters of one or more processes."""
    hist = Histogram.merged(Histogram.from_dict(p["histogram"]) for p in partials)
    statuses: dict[int, int] = {}
    errors = dict.fromkeys(ERROR_KINDS, 0)
    for p in partials:
        for code, count in p["statuses"].items():
            statuses[int(code)] = statuses.get(int(code), 0) + count
        for kind, count in p["errors"].items():
            errors[kind] += count
    errors["status"] = sum(count for code, count in statuses.items() if not 200 <= code < 300)
    requests = sum(p["completed"] for p in partials)
    duration = max(p["end"] for p in partials) - min(p["start"] for p in partials)
    duration = max(duration, 1e-9)
    scheduled = None
    if cfg.rate is not None:
        scheduled = sum(p["scheduled"] for p in partials)
    cpu = sum(p["cpu_seconds"] for p in partials) / (duration * len(partials))
    return LoadResult(
        url=cfg.url,
        mode=cfg.mode,
        concurrency=cfg.concurrency,
        requests=requests,
        duration=duration,
        rps=requests / duration,
        bytes_read=sum(p["bytes_read"] for p in partials),
        latency_ms=hist.summary_ms(),
        errors=errors,
        status_counts=dict(sorted(statuses.items())),
        connections_opened=sum(p["connections_opened"] for p in partials),
        sent=sum(p["sent"] for p in partials),
        tool="flash",
        processes=cfg.processes,
        pipeline=cfg.pipeline,
        rate=cfg.rate,
        scheduled=scheduled,
        generator_cpu=round(min(cpu, 1.0), 3),
        histogram=hist,
    )


def run(cfg: LoadConfig) -> LoadResult:
    """Run our generator as ``cfg`` says (in this process, or in ``cfg.processes`` processes)."""
    cfg.validate()
    log.info("load %s mode=%s c=%d processes=%d", cfg.url, cfg.mode, cfg.concurrency, cfg.processes)
    if cfg.processes == 1:
        with _pinned(cpu_set(cfg.cpu)):
            loop = LoadLoop(cfg, cfg.concurrency, cfg.requests, cfg.rate)
            loop.prepare()
            loop.run()
        partials = [loop.partial()]
    else:
        partials = run_processes(cfg)
    result = combine(cfg, partials)
    log.info("load %s: %d requests, %.0f req/s, errors %s", cfg.url, result.requests, result.rps, result.errors)
    return result


def run_load(
    url: str,
    *,
    concurrency: int = 50,
    duration: float | None = 10.0,
    requests: int | None = None,
    warmup: float = 0.0,
    pipeline: int = 1,
    new_conn: bool = False,
    rate: float | None = None,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 5.0,
    processes: int = 1,
    cpu: int | Sequence[int] | None = None,
    prefer_wrk: bool = True,
) -> LoadResult:
    """Measure ``url``: with wrk when it is installed and can do the job, otherwise with ours.

    wrk is chosen only for plain closed-loop keep-alive runs bounded by
    duration (wrk cannot open a connection per request, run open-loop,
    pipeline without a script, or stop after N requests). ``processes``
    becomes wrk's thread count. See ``LoadConfig`` for the other knobs.
    """
    cpu_tuple = None if cpu is None else ((cpu,) if isinstance(cpu, int) else tuple(cpu))
    cfg = LoadConfig(
        url=url, concurrency=concurrency, duration=duration, requests=requests, warmup=warmup,
        pipeline=pipeline, new_conn=new_conn, rate=rate, method=method, headers=dict(headers or {}),
        body=body, timeout=timeout, processes=processes, cpu=cpu_tuple,
    )
    cfg.validate()
    if prefer_wrk and wrk_can_run(cfg):
        assert cfg.duration is not None
        return wrk.run(
            url, connections=concurrency, duration=cfg.duration, threads=processes, warmup=warmup,
            method=method, headers=headers, body=body, timeout=timeout, cpu=cpu_tuple,
        )
    return run(cfg)


def wrk_can_run(cfg: LoadConfig) -> bool:
    """True if wrk is installed and ``cfg`` is a run wrk can do (closed-loop keep-alive, by duration)."""
    return (
        wrk.available()
        and not cfg.new_conn
        and cfg.rate is None
        and cfg.pipeline == 1
        and cfg.requests is None
        and cfg.duration is not None
    )


def ceiling(
    concurrency: int = 50,
    duration: float = 3.0,
    *,
    pipeline: int = 1,
    new_conn: bool = False,
    processes: int = 1,
    warmup: float = 0.5,
    cpu: int | Sequence[int] | None = None,
    server_cpu: int | Sequence[int] | None = None,
    server_processes: int = 1,
    use_wrk: bool = False,
) -> LoadResult:
    """The generator's own limit: load ``comparisons.canned`` (a do-nothing server) and report.

    Compare a server's result against the ceiling measured with the same
    concurrency, pipelining, processes and pinning: near the ceiling, the
    generator (or the CPU it shares with the server) is what was measured.
    The canned server is Python too and costs about as much CPU per request
    as the generator, so with one process each the ceiling is the lower of
    the two: look at ``generator_cpu`` (near 1.0: the generator was the
    limit), and give the canned server ``server_processes`` if cores allow.
    ``use_wrk=True`` measures wrk's ceiling instead.
    """
    with CannedServer(processes=server_processes, cpu=server_cpu) as server:
        return run_load(
            server.url, concurrency=concurrency, duration=duration, warmup=warmup, pipeline=pipeline,
            new_conn=new_conn, processes=processes, cpu=cpu, prefer_wrk=use_wrk,
        )
