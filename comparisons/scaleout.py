"""``compare --scenarios scale-out``: Flash behind real nginx, one to N instances, and a rolling restart.

The other scenarios ask what one server process does; this one asks what
happens when the load outgrows it and a front end spreads it out, which is
how a site grows past one core and then past one machine. Four layouts
serve the same hello keep-alive load (the generator pinned to its own
CPUs, everything on the server side pinned to the server CPUs):

===================== ===================================================
direct                the client talks to one Flash instance over TCP
nginx -> 1            client -> nginx -> one instance on a unix socket:
                      the cost of the hop
nginx -> N            client -> nginx -> N instances, round robin
--workers N           one Flash master, N worker processes sharing one
                      socket (the kernel balances), no nginx
===================== ===================================================

Each row reports requests/s, latency and the **server-side CPU time per
request** (nginx and every Flash process, from psutil): on a machine with
fewer cores than processes the rate cannot grow, but the CPU per request
still shows what each layout costs, and it is what capacity planning needs
(docs/deploy.md, "past one box").

Then a **rolling restart under load**: behind nginx, each instance in turn
gets SIGTERM, is waited for until it exits, is started again and waited
for until it answers on its socket; meanwhile a closed-loop load runs
through nginx. nginx retries a request that failed on a stopping instance
on the next one (`proxy_next_upstream`), so the count of failed requests
should be 0; whatever is measured is reported, with the engine.

Last, **idle clients behind nginx**: N idle keep-alive connections held
open to nginx cost nginx some memory each, and the instance behind it only
the few upstream connections nginx keeps (`keepalive`).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from . import loadgen
from .childproc import LISTENING, ROOT, child_env, pin, process_tree, read_announcement, stop_child, total_rss
from .nginx import Nginx, unavailable
from .scenarios import Settings, load_metrics
from .servers import ResourceSampler

log = logging.getLogger(__name__)

NAME = "scale-out"
DEFAULT_ENGINE = "tasklets"
#: Keep-alive connections of the measured rows and of the rolling restart.
CONCURRENCY = 100
RESTART_CONCURRENCY = 20


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


@dataclass
class Instance:
    """One `python -m flash_green serve` process, pinned, started and stopped by its PID."""

    engine: str
    bind: str
    extra: tuple[str, ...] = ()
    cpus: Sequence[int] | None = None
    start_timeout: float = 30.0
    proc: subprocess.Popen | None = None
    port: int = 0

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "flash_green", "serve", "--engine", self.engine, "-b", self.bind,
                "--log-level", "warning", *self.extra]

    def start(self) -> "Instance":
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     cwd=ROOT, env=child_env(), start_new_session=True)
        pin(self.proc.pid, self.cpus)
        match, seen = read_announcement(self.proc, LISTENING, self.start_timeout)
        if match is None:
            self.stop()
            raise RuntimeError(f"{shlex.join(self.command)} did not start: {seen[-300:]!r}")
        if match.group(2):
            self.port = int(match.group(2))
        self.wait_serving()
        return self

    def wait_serving(self) -> None:
        """Until GET / answers (the supervisor announces once its workers booted)."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            conn = (UnixHTTPConnection(self.bind[5:]) if self.bind.startswith("unix:")
                    else http.client.HTTPConnection("127.0.0.1", self.port, timeout=5))
            try:
                conn.request("GET", "/")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.02)  # polling a child's start-up, not synchronising with it
            finally:
                conn.close()
        raise RuntimeError(f"{shlex.join(self.command)} did not answer GET /")

    def terminate_and_wait(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful stop) and wait until it has exited."""
        assert self.proc is not None
        self.proc.terminate()
        code = self.proc.wait(timeout)
        self.proc.stdout.close()
        self.proc = None
        return code

    def processes(self) -> list[psutil.Process]:
        return process_tree(self.proc)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_child(proc, 10, session=True)
            proc.stdout.close()


class ServerSide:
    """Every process on the server side of one layout, for ResourceSampler."""

    def __init__(self, *members: Any) -> None:
        self.members = members

    def processes(self) -> list[psutil.Process]:
        return [proc for member in self.members for proc in member.processes()]


def measure(url: str, side: ServerSide, settings: Settings) -> dict[str, Any]:
    with ResourceSampler(side) as sampler:
        result = loadgen.run_load(url, concurrency=CONCURRENCY, duration=settings.duration,
                                  timeout=settings.timeout, cpu=settings.generator_cpus,
                                  prefer_wrk=settings.prefer_wrk)
    server = sampler.stats.to_dict()
    metrics = load_metrics(result)
    if result.rps:
        metrics["cpu_us_per_req"] = round(server["cpu_percent"] / 100 / result.rps * 1e6, 1)
    return {"metrics": metrics, "server": server, "tool": result.tool}


def run(settings: Settings, engine: str = DEFAULT_ENGINE, instances: int = 0) -> dict[str, Any]:
    """Measure the four layouts and the rolling restart; the result goes to results.json."""
    why_not = unavailable()
    if why_not:
        return {"skipped": f"{NAME} skipped: {why_not}"}
    cpus = settings.server_cpus
    n = instances or max(2, len(cpus or ()))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="flash-scale-") as directory:
        sockets = [os.path.join(directory, f"flash-{i}.sock") for i in range(n)]

        def add(layout: str, url: str, side: ServerSide, command: str) -> None:
            row = measure(url, side, settings)
            rows.append({"layout": layout, "command": command, **row})
            log.info("%s: %s req/s", layout, row["metrics"].get("ok_rps"))

        with started(Instance(engine, "127.0.0.1:0", cpus=cpus)) as (direct,):
            add("direct", f"http://127.0.0.1:{direct.port}/", ServerSide(direct), _shown(direct.command))
        for count in sorted({1, n}):
            group = [Instance(engine, f"unix:{path}", cpus=cpus) for path in sockets[:count]]
            with started(*group), Nginx([i.bind for i in group], workers=1, cpus=cpus) as front:
                add(f"nginx -> {count}", front.url, ServerSide(front, *group),
                    f"nginx (comparisons/nginx.py) -> {count} x " + _shown(group[0].command))
        with started(Instance(engine, "127.0.0.1:0", extra=("--workers", str(n)), cpus=cpus)) as (workers,):
            add(f"--workers {n}", f"http://127.0.0.1:{workers.port}/", ServerSide(workers),
                _shown(workers.command))
        rolling = rolling_restart(engine, sockets, cpus, settings)
        idle = idle_behind_nginx(engine, sockets[0], cpus, settings)
    return {"engine": engine, "instances": n, "concurrency": CONCURRENCY, "rows": rows, "rolling": rolling,
            "idle": idle}


def idle_behind_nginx(engine: str, socket_path: str, cpus: Sequence[int] | None,
                      settings: Settings) -> dict[str, Any]:
    """Hold N idle keep-alive client connections to nginx: what they cost nginx, and the app.

    nginx keeps at most `keepalive` idle upstream connections per worker, so
    however many clients wait, the instance behind it holds a handful.
    """
    n = settings.idle_connections
    instance = Instance(engine, f"unix:{socket_path}", cpus=cpus)
    with started(instance), Nginx([instance.bind], cpus=cpus, worker_connections=n + 1024) as front:
        loadgen.run_load(front.url, concurrency=1, requests=20, duration=None, timeout=settings.timeout,
                         cpu=settings.generator_cpus, prefer_wrk=False)
        nginx_before, flash_before = total_rss(front.processes()), total_rss(instance.processes())
        fds_before = instance.processes()[0].num_fds()
        with loadgen.idle_connections(front.url, n, timeout=settings.timeout * 2, batch=min(n, 1024)) as held:
            nginx_after, flash_after = total_rss(front.processes()), total_rss(instance.processes())
            upstream = instance.processes()[0].num_fds() - fds_before
            count = len(held)
    out: dict[str, Any] = {"connections": n, "held": count, "upstream_connections": upstream,
                           "flash_rss_delta_kb": round((flash_after - flash_before) / 1024, 1)}
    if count:
        out["nginx_kb_per_conn"] = round((nginx_after - nginx_before) / count / 1024, 2)
    return out


def rolling_restart(engine: str, sockets: list[str], cpus: Sequence[int] | None,
                    settings: Settings) -> dict[str, Any]:
    """Restart every instance, one at a time, while a load runs through nginx; count failures."""
    group = [Instance(engine, f"unix:{path}", cpus=cpus) for path in sockets]
    # Long enough for every restart, with a second of steady load either side.
    duration = 2.0 + 5.0 * len(group)
    outcome: dict[str, Any] = {}
    with started(*group), Nginx([i.bind for i in group], workers=1, cpus=cpus) as front:
        load = threading.Thread(target=lambda: outcome.update(result=loadgen.run_load(
            front.url, concurrency=RESTART_CONCURRENCY, duration=duration, timeout=settings.timeout,
            cpu=settings.generator_cpus, prefer_wrk=False)), name="rolling-load")
        load.start()
        load_began = time.monotonic()
        time.sleep(1.0)  # steady load before the first restart (a measurement's shape, not a wait for an event)
        restarts = []
        for instance in group:
            began = time.monotonic()
            code = instance.terminate_and_wait()
            instance.start()
            restarts.append({"instance": instance.bind, "exit_code": code,
                             "seconds": round(time.monotonic() - began, 2)})
        finished_in_window = time.monotonic() - load_began < duration
        load.join()
    result: loadgen.LoadResult = outcome["result"]
    metrics = load_metrics(result)
    return {"requests": result.requests, "failed": metrics["errors"], "errors": result.errors,
            "status_counts": {str(k): v for k, v in result.status_counts.items()},
            "concurrency": RESTART_CONCURRENCY, "duration_s": duration, "restarts": restarts,
            "restarts_within_load": finished_in_window, "ok_rps": metrics["ok_rps"]}


@contextlib.contextmanager
def started(*instances: Instance) -> Iterator[tuple[Instance, ...]]:
    """Start every instance; stop them all (by PID) at the end, or if one fails to start."""
    try:
        for instance in instances:
            instance.start()
        yield instances
    finally:
        for instance in instances:
            instance.stop()


def _shown(command: list[str]) -> str:
    return shlex.join(["python" if arg == sys.executable else arg for arg in command])


# ---------------------------------------------------------------------------
# The report's section
# ---------------------------------------------------------------------------


def markdown_section(study: dict[str, Any] | None) -> list[str]:
    """report.md's "scale-out" section (empty if the study did not run)."""
    if not study:
        return []
    lines = ["## Scale-out: nginx in front of 1..N instances, and a rolling restart", ""]
    if "skipped" in study:
        return lines + [study["skipped"], ""]
    n = study["instances"]
    lines += [
        f"Engine `{study['engine']}`, hello keep-alive at c={study['concurrency']}; nginx and every Flash "
        "process pinned to the server CPUs, the generator to its own. *CPU us/req* is the server side's "
        "CPU time (nginx + Flash) per request: what each layout costs, whatever the core count.", "",
        "| layout | req/s | p50 ms | p99 ms | errors % | server CPU % | CPU us/req | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in study["rows"]:
        m, s = row["metrics"], row["server"]
        lines.append(f"| {row['layout']} | {m.get('ok_rps', 0):,.0f} | {m.get('p50_ms', 0):,.2f} | "
                     f"{m.get('p99_ms', 0):,.2f} | {m.get('error_pct', 0):,.1f} | {s.get('cpu_percent', 0):,.0f} | "
                     f"{m.get('cpu_us_per_req', 0):,.1f} | `{row['command']}` |")
    by_layout = {row["layout"]: row["metrics"] for row in study["rows"]}
    direct, hop = by_layout.get("direct", {}), by_layout.get("nginx -> 1", {})
    lines.append("")
    if direct.get("cpu_us_per_req") and hop.get("cpu_us_per_req"):
        lines.append(f"What it shows: the hop through nginx costs "
                     f"{hop['cpu_us_per_req'] - direct['cpu_us_per_req']:,.1f} us of CPU per request "
                     f"({direct['cpu_us_per_req']:,.1f} -> {hop['cpu_us_per_req']:,.1f}); nginx -> {n} spreads "
                     f"the load over {n} processes, which adds rate only where there are free cores for "
                     f"them; `--workers {n}` does the same without the hop, inside one machine. nginx earns "
                     "its hop by what one process cannot do: TLS, buffering slow clients, spreading over "
                     "machines, and restarting instances without losing requests.")
        lines.append("")
    rolling = study["rolling"]
    lines += [
        f"Rolling restart behind nginx ({len(rolling['restarts'])} instances restarted one at a time under "
        f"c={rolling['concurrency']} for {rolling['duration_s']:g} s): **{rolling['failed']} failed of "
        f"{rolling['requests']:,} requests**" + ("" if rolling["restarts_within_load"] else
                                                   " (the restarts outlasted the load window)") + ".",
        "Restarts (stop + start until it answers): "
        + ", ".join(f"{r['seconds']:g} s (exit {r['exit_code']})" for r in rolling["restarts"]) + ".", "",
    ]
    idle = study.get("idle")
    if idle:
        lines += [
            f"Idle keep-alive clients held by nginx: {idle['held']:,} of {idle['connections']:,}, "
            f"{idle.get('nginx_kb_per_conn', 0):,.2f} KB of nginx RSS each; the Flash instance behind it "
            f"held {idle['upstream_connections']} more connections for them ({idle['flash_rss_delta_kb']:,.0f} KB "
            "of RSS): the front end holds the clients, the app only a pool of upstream connections.", "",
        ]
    return lines
