"""The workloads of the study (DESIGN.md's table), each a function of one running server.

Every scenario asks one question of a concurrency model and answers it
with numbers. Each runs against a fresh server process (started by
`compare`), so no scenario inherits another's memory, threads or stuck
connections, and returns `Measurement`s: a level (the concurrency, or the
scenario's own knob), its metrics, the load generator's raw result and
what the server used (CPU, RSS).

=============== =============================================================
hello           keep-alive ``GET /`` at c = 1, 10, 100, 1000, 10,000 (capped at
                1000 for one-connection-at-a-time models and at 100 for a
                process per request, see `servers.engine_target`): overhead
                per request and how it scales with connections
new-conn        a new TCP connection per request: accept + setup cost
blocking        ``/sleep?ms=50`` at c=10: who stalls on a blocking handler;
                the ideal is c / 50 ms = 200 req/s
upstream        ``/upstream`` (a TCP call to comparisons/upstream.py that
                takes 50 ms): the seed's "fetch third-party data" case
cpu             ``/cpu?n=24`` at c=4 with every core given to the server:
                the GIL; threads versus processes
slowloris       N clients trickle a never-ending request head while 10
                normal clients are measured: are they still served?
idle            N idle keep-alive connections held open: RSS per connection
upload          ``POST /echo`` of a large body (request streaming)
download        ``GET /download?bytes=N`` (response streaming, back-pressure)
=============== =============================================================

Metrics are plain dicts of numbers so that they go straight to JSON, CSV and
the report; `Scenario.metric` names the one each table is sorted by.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from comparisons import loadgen
from comparisons.servers import ResourceSampler, ServerUnderTest, Target

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """Every knob of a comparison run; `quick()` and `full()` are the two presets."""

    duration: float = 5.0
    concurrency: tuple[int, ...] = (1, 10, 100, 1000, 10_000)
    #: Per socket operation; a server that makes a client wait longer fails it.
    timeout: float = 2.0
    prefer_wrk: bool = True
    #: Generator (and upstream service) CPUs, and the server's; None = unpinned.
    generator_cpus: tuple[int, ...] | None = None
    server_cpus: tuple[int, ...] | None = None
    #: Given to the server in the CPU scenario (the generator barely works there).
    all_cpus: tuple[int, ...] | None = None
    handler_concurrency: int = 10
    sleep_ms: int = 50
    cpu_n: int = 24
    cpu_concurrency: int = 4
    slowloris_connections: int = 200
    slowloris_normal_clients: int = 10
    idle_connections: int = 10_000
    transfer_concurrency: int = 4
    upload_bytes: int = 8 << 20
    download_bytes: int = 16 << 20
    upstream_port: int = 0

    @classmethod
    def quick(cls) -> "Settings":
        """The whole matrix in minutes: 1 s runs, fewer levels, 1000 idle connections."""
        return cls(duration=1.0, concurrency=(1, 10, 100, 1000), timeout=1.0, slowloris_connections=50,
                   idle_connections=1000, upload_bytes=1 << 20, download_bytes=8 << 20)

    @classmethod
    def full(cls) -> "Settings":
        return cls()


@dataclass
class Measurement:
    """One measured point of one scenario on one target."""

    level: int
    metrics: dict[str, float]
    load: dict[str, Any] | None = None
    server: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class Context:
    """What a scenario function gets: the running server, its target, the settings."""

    server: ServerUnderTest
    target: Target
    settings: Settings

    def load(self, path: str, concurrency: int, **kwargs: Any) -> tuple[loadgen.LoadResult, dict[str, float]]:
        """Run the generator against ``path`` (pinned) while sampling the server."""
        s = self.settings
        options: dict[str, Any] = dict(duration=s.duration, timeout=s.timeout, cpu=s.generator_cpus,
                                       prefer_wrk=s.prefer_wrk)
        options.update(kwargs)
        with ResourceSampler(self.server) as sampler:
            result = loadgen.run_load(self.server.url(self.target.path(path)), concurrency=concurrency, **options)
        return result, sampler.stats.to_dict()


def load_metrics(result: loadgen.LoadResult) -> dict[str, float]:
    """The metrics every load run reports: rate, latency percentiles, errors.

    ``ok_rps`` counts only successful (2xx) responses; ``error_pct`` is the
    share of attempts that failed in any way (refused, reset, timed out or
    answered with an error status).

    ``served_conns`` is Little's law, L = lambda * W: completed requests per
    second times their mean latency is how many connections were actually
    being served at once. In a closed loop a fair server serves all c of
    them; a server that serves one connection at a time shows ~1, however
    high its request rate (the latencies of the starved clients are never
    recorded, because their requests never complete).
    """
    errors = result.errors
    failed = errors.get("connect", 0) + errors.get("read", 0) + errors.get("timeout", 0)
    bad_status = errors.get("status", 0)
    attempts = result.requests + failed
    ok = max(0, result.requests - bad_status)
    lat = result.latency_ms
    metrics = {
        "rps": round(result.rps, 1),
        "ok_rps": round(ok / result.duration, 1),
        "p50_ms": round(lat.get("p50", 0.0), 3),
        "p90_ms": round(lat.get("p90", 0.0), 3),
        "p99_ms": round(lat.get("p99", 0.0), 3),
        "max_ms": round(lat.get("max", 0.0), 3),
        "served_conns": round(result.rps * lat.get("mean", 0.0) / 1000, 1),
        "errors": failed + bad_status,
    }
    if attempts:  # none at all (a response slower than the run) is no error rate
        metrics["error_pct"] = round(100 * (failed + bad_status) / attempts, 2)
    return metrics


def _measure(ctx: Context, level: int, path: str, concurrency: int, **kwargs: Any) -> Measurement:
    result, server = ctx.load(path, concurrency, **kwargs)
    return Measurement(level, load_metrics(result), result.to_dict(), server)


# ---------------------------------------------------------------------------
# The scenarios
# ---------------------------------------------------------------------------


def hello(ctx: Context) -> list[Measurement]:
    """Keep-alive GET / at each concurrency level, lowest first, on one server."""
    out = []
    cap = ctx.target.level_cap
    for c in ctx.settings.concurrency:
        if cap is not None and c > cap:
            out.append(Measurement(c, {}, note=f"not run: {ctx.target.cap_reason}"))
            continue
        m = _measure(ctx, c, "/", c)
        m.metrics["served_conns_pct"] = round(100 * min(m.metrics["served_conns"], c) / c, 1)
        out.append(m)
    return out


def new_connection(ctx: Context) -> list[Measurement]:
    c = ctx.settings.handler_concurrency
    return [_measure(ctx, c, "/", c, new_conn=True)]


def _handler_rate(ctx: Context, path: str, per_request_ms: float) -> list[Measurement]:
    """A handler that waits ``per_request_ms``: measured rate against the ideal c / wait."""
    c = ctx.settings.handler_concurrency
    m = _measure(ctx, c, path, c)
    ideal = c * 1000 / per_request_ms
    m.metrics["ideal_rps"] = round(ideal, 1)
    m.metrics["efficiency_pct"] = round(100 * m.metrics["ok_rps"] / ideal, 1)
    return [m]


def blocking(ctx: Context) -> list[Measurement]:
    ms = ctx.settings.sleep_ms
    return _handler_rate(ctx, f"/sleep?ms={ms}", ms)


def upstream(ctx: Context) -> list[Measurement]:
    s = ctx.settings
    if not s.upstream_port:
        raise RuntimeError("the upstream scenario needs the upstream service (settings.upstream_port)")
    return _handler_rate(ctx, f"/upstream?port={s.upstream_port}&ms={s.sleep_ms}", s.sleep_ms)


def cpu(ctx: Context) -> list[Measurement]:
    s = ctx.settings
    return [_measure(ctx, s.cpu_concurrency, f"/cpu?n={s.cpu_n}", s.cpu_concurrency)]


def slowloris(ctx: Context) -> list[Measurement]:
    """Normal clients alone, then again while N slow clients trickle request heads."""
    s = ctx.settings
    n = s.slowloris_connections
    normal = s.slowloris_normal_clients
    baseline, _ = ctx.load("/", normal)
    attack = loadgen.Slowloris(ctx.server.url("/"), connections=n, interval=0.5,
                               duration=s.duration * 4 + s.timeout * 2 + 10, connect_timeout=s.timeout)
    with attack:
        m = _measure(ctx, n, "/", normal)
        still_open = attack.open_count
    base = load_metrics(baseline)
    m.metrics["baseline_ok_rps"] = base["ok_rps"]
    m.metrics["served_pct"] = round(100 * m.metrics["ok_rps"] / base["ok_rps"], 1) if base["ok_rps"] else 0.0
    m.metrics["slow_held"] = still_open
    m.metrics["slow_opened"] = attack.stats.opened
    return [m]


def idle(ctx: Context) -> list[Measurement]:
    """RSS before and while holding N idle keep-alive connections; then is anyone served?"""
    s = ctx.settings
    n = s.idle_connections
    if ctx.target.fork_per_request:
        # Each held connection's first request would start an interpreter: N
        # processes at once. Between requests the connection costs what the
        # model's connection layer costs (see its own row).
        return [Measurement(n, {}, note="not run: a process per request would start one per connection")]
    # A few requests first, so the baseline includes what the first request allocates.
    loadgen.run_load(ctx.server.url("/"), concurrency=1, requests=20, duration=None,
                     timeout=s.timeout, cpu=s.generator_cpus, prefer_wrk=False)
    rss_before = ctx.server.rss()
    with ResourceSampler(ctx.server) as sampler:
        with loadgen.idle_connections(ctx.server.url("/"), n, timeout=s.timeout * 2,
                                      batch=min(n, 1024)) as held:
            rss_after = ctx.server.rss()
            probe = loadgen.run_load(ctx.server.url("/"), concurrency=1, requests=10, duration=s.duration,
                                     timeout=s.timeout, cpu=s.generator_cpus, prefer_wrk=False)
            count = len(held)
            failed = sum(held.errors.values())
    metrics = {
        "held": count,
        "held_pct": round(100 * count / n, 1),
        "failed": failed,
        "rss_before_mb": round(rss_before / 2**20, 2),
        "rss_after_mb": round(rss_after / 2**20, 2),
        "served_while_held": probe.requests - probe.errors.get("status", 0),
    }
    if count:
        metrics["kb_per_conn"] = round((rss_after - rss_before) / count / 1024, 2)
    return [Measurement(n, metrics, probe.to_dict(), sampler.stats.to_dict())]


def upload(ctx: Context) -> list[Measurement]:
    s = ctx.settings
    c = s.transfer_concurrency
    m = _measure(ctx, s.upload_bytes, "/echo", c, method="POST", body=b"x" * s.upload_bytes)
    m.metrics["mb_s"] = round(m.metrics["ok_rps"] * s.upload_bytes / 1e6, 1)
    return [m]


def download(ctx: Context) -> list[Measurement]:
    s = ctx.settings
    m = _measure(ctx, s.download_bytes, f"/download?bytes={s.download_bytes}", s.transfer_concurrency)
    assert m.load is not None
    m.metrics["mb_s"] = round(m.load["bytes_read"] / max(m.load["duration"], 1e-9) / 1e6, 1)
    return [m]


# ---------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of a scenario's table: a metric key, its header and format."""

    key: str
    header: str
    fmt: str = "{:,.0f}"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    shows: str
    run: Callable[[Context], list[Measurement]]
    #: The metric tables are sorted by (higher is better unless ``lower_is_better``).
    metric: str
    unit: str
    columns: tuple[Column, ...]
    lower_is_better: bool = False
    #: The server's keep-alive timeout (long where connections must stay idle).
    keep_alive: float = 5.0
    #: Give the server every core (the generator is nearly idle in this scenario).
    all_cores: bool = False
    #: What the level number means in this scenario.
    level_name: str = "c"


_LATENCY = (Column("p50_ms", "p50 ms", "{:,.2f}"), Column("p99_ms", "p99 ms", "{:,.2f}"),
            Column("error_pct", "errors %", "{:,.1f}"))
_RATE = (Column("ok_rps", "req/s"),) + _LATENCY

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("hello", "hello, keep-alive", "raw overhead per request, and scaling with connections",
             hello, "ok_rps", "req/s",
             _RATE + (Column("served_conns_pct", "% of conns served", "{:,.0f}"),)),
    Scenario("new-conn", "new connection per request", "accept + connection setup cost (a fork for CGI)",
             new_connection, "ok_rps", "req/s", _RATE),
    Scenario("blocking", "blocking handler (/sleep?ms=50)",
             "who stalls when a handler blocks: single-threaded loops vs threads and green threads",
             blocking, "ok_rps", "req/s",
             (Column("ok_rps", "req/s"), Column("efficiency_pct", "% of ideal", "{:,.0f}")) + _LATENCY),
    Scenario("upstream", "I/O-bound handler (a 50 ms upstream call over TCP)",
             "the seed's 'fetch third-party data' case: waiting on a socket in the handler",
             upstream, "ok_rps", "req/s",
             (Column("ok_rps", "req/s"), Column("efficiency_pct", "% of ideal", "{:,.0f}")) + _LATENCY),
    Scenario("cpu", "CPU-bound handler (/cpu?n=24, every core to the server)",
             "the GIL: threads share one core's worth of Python, processes use them all",
             cpu, "ok_rps", "req/s", _RATE, all_cores=True),
    Scenario("slowloris", "slowloris + 10 normal clients",
             "who is starved by clients that trickle their request heads",
             slowloris, "served_pct", "% served",
             (Column("served_pct", "% of own baseline", "{:,.0f}"), Column("ok_rps", "req/s"),
              Column("baseline_ok_rps", "baseline req/s"), Column("p99_ms", "p99 ms", "{:,.2f}"),
              Column("error_pct", "errors %", "{:,.1f}")),
             level_name="slow clients"),
    Scenario("idle", "idle keep-alive connections", "memory per connection (the C10K question)",
             idle, "kb_per_conn", "KB/conn",
             (Column("kb_per_conn", "KB per conn", "{:,.1f}"), Column("held", "held"),
              Column("rss_before_mb", "RSS before MB", "{:,.1f}"), Column("rss_after_mb", "RSS after MB", "{:,.1f}"),
              Column("served_while_held", "served while held (of 10)")),
             lower_is_better=True, keep_alive=120.0, level_name="connections"),
    Scenario("upload", "large upload (POST /echo)", "request-body streaming",
             upload, "mb_s", "MB/s", (Column("mb_s", "MB/s up", "{:,.1f}"),) + _RATE, level_name="bytes"),
    Scenario("download", "large download (GET /download)", "response streaming and back-pressure",
             download, "mb_s", "MB/s", (Column("mb_s", "MB/s", "{:,.1f}"),) + _RATE, level_name="bytes"),
)

BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}


def select_scenarios(names: list[str] | None) -> list[Scenario]:
    if not names:
        return list(SCENARIOS)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; known: {', '.join(BY_NAME)}")
    return [BY_NAME[n] for n in names]


def run_scenario(scenario: Scenario, server: ServerUnderTest, target: Target, settings: Settings) -> list[Measurement]:
    started = time.monotonic()
    out = scenario.run(Context(server, target, settings))
    log.info("%s on %s took %.1fs", scenario.name, target.label, time.monotonic() - started)
    return out
