"""Process fan-out: one load run split over N generator processes that start measuring together.

One Python process saturates one core; ``processes=N`` runs N load loops,
each in a fresh interpreter (``python -m comparisons.loadgen --worker``) with
its share of the connections, the request budget and the open-loop rate,
pinned to its own CPU when there are enough. The parent and its workers
speak a line protocol on stdin/stdout (``worker_main`` is the worker's side,
``run_processes`` the parent's); the parent merges the workers' counters
with ``runner.combine``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import time
from dataclasses import fields
from typing import Any

from comparisons.childproc import child_env, cpu_set
from comparisons.loadgen.config import LoadConfig
from comparisons.loadgen.loop import LoadLoop


def _split(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def worker_main() -> int:
    """Body of one generator process (``python -m comparisons.loadgen --worker``).

    A tiny line protocol on stdin/stdout keeps the processes in step: the
    parent sends the job as one JSON line; the worker connects and answers
    ``ready``; the parent, once every worker is ready, sends ``go``; the
    worker runs and answers with its counters as one JSON line. A closed
    stdin before ``go`` means the parent is gone, and the worker exits.
    """
    logging.basicConfig(level=logging.WARNING, format="loadgen worker: %(message)s")
    try:
        job = json.loads(sys.stdin.readline())
        fields_ = dict(job["cfg"])
        fields_["body"] = base64.b64decode(fields_["body"])
        cfg = LoadConfig(**fields_)
        if job["cpus"]:
            os.sched_setaffinity(0, set(job["cpus"]))
        loop = LoadLoop(cfg, job["concurrency"], job["budget"], job["rate"])
        loop.prepare()
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 1
        loop.run()
        print(json.dumps(loop.partial()), flush=True)
    except Exception as exc:  # report to the parent rather than die silently
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    return 0


class _Worker:
    """The parent's handle on one worker process: start it, and read its stdout lines with a deadline."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "comparisons.loadgen", "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(),
        )
        self._buf = b""
        self.send(json.dumps(job))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def read_line(self, deadline: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError(f"generator process {self.proc.pid} did not report in time")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"generator process {self.proc.pid} exited (code {self.proc.wait()})")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def run_processes(cfg: LoadConfig) -> list[dict[str, Any]]:
    """Run ``cfg.processes`` worker processes, started together, and collect their counters.

    Workers are fresh interpreters (``-m comparisons.loadgen --worker``), not
    forks: the caller may have threads running (a test server, a
    ``Slowloris``), and unlike multiprocessing's "spawn" nothing requires the
    caller's script to guard its main module.
    """
    procs_n = cfg.processes
    cpu_list = sorted(cpu_set(cfg.cpu))
    cfg_fields = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    cfg_fields.update(body=base64.b64encode(cfg.body).decode(), cpu=None, processes=1)
    workers: list[_Worker] = []
    try:
        for i in range(procs_n):
            # One CPU per process when there are enough, else all share the set.
            cpus = [cpu_list[i]] if len(cpu_list) >= procs_n else cpu_list
            workers.append(_Worker({
                "cfg": cfg_fields,
                "concurrency": _split(cfg.concurrency, procs_n, i),
                "budget": _split(cfg.requests, procs_n, i) if cfg.requests is not None else None,
                "rate": cfg.rate / procs_n if cfg.rate is not None else None,
                "cpus": cpus,
            }))
        start_deadline = time.monotonic() + 60 + cfg.timeout
        for worker in workers:
            line = worker.read_line(start_deadline)
            if line != "ready":
                raise RuntimeError(f"generator process failed: {line}")
        for worker in workers:
            worker.send("go")  # all processes start measuring together
        run_time = cfg.warmup + (cfg.duration if cfg.duration is not None else cfg.time_limit)
        deadline = time.monotonic() + min(run_time, cfg.time_limit) + cfg.timeout + 30
        partials = [json.loads(worker.read_line(deadline)) for worker in workers]
    finally:
        for worker in workers:
            worker.close()
    for partial in partials:
        if "error" in partial:
            raise RuntimeError(f"generator process failed: {partial['error']}")
    return partials
