"""Run wrk (when installed) and read its results into the same ``LoadResult`` as our generator.

wrk is a C load generator (epoll, one event loop per thread) and usually
several times faster than ours, so when it is on PATH it is the better tool
for plain closed-loop keep-alive runs; ``loadgen.run_load(prefer_wrk=True)``
picks it then. It cannot open a connection per request, run open-loop (that
is wrk2), or stop after N requests, so those modes always use ours.

Results come out through a generated Lua script whose ``done()`` hook prints
one ``FLASH-WRK-RESULT {...}`` line with the request count, bytes, error
counters and latency percentiles (wrk measures in microseconds). What wrk
does not give us, and how the ``LoadResult`` says so:

* no histogram (``histogram=None``), so wrk results cannot be merged;
* no per-status counts (``status_counts`` is empty); ``errors["status"]`` is
  wrk's own counter of responses with status > 399 (ours counts non-2xx);
* no "sent" count separate from completed requests (``sent == requests``);
* no connection count (``connections_opened`` is the connection count asked for).

Durations and timeouts are whole seconds for wrk, so they are rounded up.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
from typing import Mapping, Sequence

from comparisons.load_result import LoadResult

log = logging.getLogger(__name__)

_MARKER = "FLASH-WRK-RESULT"

_DONE_HOOK = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write("FLASH-WRK-RESULT {")
  io.write(string.format('"requests": %d, "duration_us": %d, "bytes": %d, ',
    summary.requests, summary.duration, summary.bytes))
  io.write(string.format('"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ',
    e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format('"min_us": %d, "max_us": %d, "mean_us": %f, ',
    latency.min, latency.max, latency.mean))
  io.write(string.format('"p50_us": %d, "p90_us": %d, "p99_us": %d, "p99.9_us": %d}\n',
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
"""

# `"key": number` pairs; wrk prints nan/inf for the mean of zero requests.
_PAIR = re.compile(r'"([\w.]+)": (-?(?:[0-9.]+(?:e[+-]?\d+)?|nan|inf))', re.IGNORECASE)


def available() -> bool:
    """True if a ``wrk`` binary is on PATH."""
    return shutil.which("wrk") is not None


def _lua_string(data: bytes) -> str:
    """A Lua string literal holding exactly ``data`` (non-printables as decimal escapes)."""
    out = []
    for byte in data:
        char = chr(byte)
        if char in '"\\' or not 32 <= byte < 127:
            out.append(f"\\{byte:03d}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def lua_script(method: str = "GET", headers: Mapping[str, str] | None = None, body: bytes = b"") -> str:
    """The script wrk runs: the request shape, then the ``done()`` hook that reports."""
    lines = [f"wrk.method = {_lua_string(method.encode('latin-1'))}"]
    if body:
        lines.append(f"wrk.body = {_lua_string(body)}")
    for name, value in (headers or {}).items():
        lines.append(f"wrk.headers[{_lua_string(name.encode('latin-1'))}] = {_lua_string(value.encode('latin-1'))}")
    return "\n".join(lines) + "\n" + _DONE_HOOK


def parse_output(stdout: str) -> dict[str, float]:
    """The numbers of the ``FLASH-WRK-RESULT`` line (``ValueError`` if wrk printed none)."""
    for line in stdout.splitlines():
        if line.startswith(_MARKER):
            return {key: float(value) for key, value in _PAIR.findall(line)}
    raise ValueError(f"no {_MARKER} line in wrk output:\n{stdout[-2000:]}")


def _command(
    url: str, connections: int, seconds: int, threads: int, timeout: int, script: str, cpu: Sequence[int] | None
) -> list[str]:
    cmd = ["wrk", "-c", str(connections), "-t", str(threads), "-d", f"{seconds}s", "--timeout", f"{timeout}s", "-s", script, url]
    if cpu:
        taskset = shutil.which("taskset")
        if taskset is None:
            raise RuntimeError("cpu pinning for wrk needs taskset (util-linux)")
        cmd = [taskset, "-c", ",".join(str(c) for c in cpu)] + cmd
    return cmd


def _run_once(cmd: list[str], seconds: int, timeout: int) -> str:
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout + 30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def run(
    url: str,
    *,
    connections: int = 50,
    duration: float = 10.0,
    threads: int = 1,
    warmup: float = 0.0,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 5.0,
    cpu: int | Sequence[int] | None = None,
) -> LoadResult:
    """Run wrk against ``url`` (after an unmeasured warm-up run, if asked) and return a ``LoadResult``."""
    if not available():
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    threads = max(1, min(threads, connections))  # wrk needs connections >= threads
    seconds = max(1, math.ceil(duration))
    timeout_s = max(1, math.ceil(timeout))
    cpus = None if cpu is None else ([cpu] if isinstance(cpu, int) else list(cpu))
    fd, script = tempfile.mkstemp(prefix="flash-wrk-", suffix=".lua")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(lua_script(method, headers, body))
        if warmup > 0:
            warm = max(1, math.ceil(warmup))
            _run_once(_command(url, connections, warm, threads, timeout_s, script, cpus), warm, timeout_s)
        stdout = _run_once(_command(url, connections, seconds, threads, timeout_s, script, cpus), seconds, timeout_s)
    finally:
        os.unlink(script)

    numbers = parse_output(stdout)
    requests = int(numbers["requests"])
    elapsed = max(numbers["duration_us"] / 1e6, 1e-9)
    mean = numbers.get("mean_us", 0.0)
    latency_ms = {
        "p50": numbers["p50_us"] / 1000.0,
        "p90": numbers["p90_us"] / 1000.0,
        "p99": numbers["p99_us"] / 1000.0,
        "p99.9": numbers["p99.9_us"] / 1000.0,
        "max": numbers["max_us"] / 1000.0,
        "mean": mean / 1000.0 if math.isfinite(mean) else 0.0,
    }
    errors = {
        "connect": int(numbers["connect"]),
        "read": int(numbers["read"] + numbers["write"]),
        "timeout": int(numbers["timeout"]),
        "status": int(numbers["status"]),
    }
    return LoadResult(
        url=url,
        mode="keepalive",
        concurrency=connections,
        requests=requests,
        duration=elapsed,
        rps=requests / elapsed,
        bytes_read=int(numbers["bytes"]),
        latency_ms=latency_ms,
        errors=errors,
        status_counts={},
        connections_opened=connections,
        sent=requests,
        tool="wrk",
        processes=threads,
    )
