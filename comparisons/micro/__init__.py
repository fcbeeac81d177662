"""Scheduler micro-benchmarks: what a switch, a spawn, an idle task, a timer and a wake-up cost.

Every engine of Flash is, underneath, one of a handful of runtimes: plain
generators driven by our `tasklets` kernel, greenlets (raw, on our own hub
`greenhub`, in gevent, in eventlet), asyncio coroutines (on the
standard loop or uvloop), OS threads, or processes. This module measures the
primitives those runtimes are made of, with the same small programs on each:

switch   two tasks take turns, each yielding to the scheduler (`sleep(0)`,
         `schedule()`, a greenlet switch, a lock hand-off between two
         threads, a pipe ping-pong between two processes). Unit: microseconds
         per switch, i.e. per hand-over from one task to the other.
spawn    start N tasks that return at once, then join them all. Unit:
         microseconds per task (its creation, first run, end and join).
memory   N tasks, each started and parked on an event; the growth of the
         process's resident set divided by N. Unit: bytes per idle task. For
         processes: the USS (pages only that process owns) of each idle
         child after fork. Each point is a fresh interpreter.
timers   N tasks sleep with random deadlines in [0, TIMER_SPREAD); the wall
         time from the first spawn to the last wake-up, divided by N.
         Unit: microseconds per timer (spawn and wake-up included).
io       two tasks bounce one byte across a socketpair, each waiting for
         its socket through its scheduler's poller (epoll for everybody here
         except threads and processes, which the OS scheduler wakes from a
         blocking recv). Unit: microseconds per round trip (two wake-ups).
epoll    one wait with timeout 0 on N registered fds, one of them ready:
         epoll against poll and select. Unit: microseconds per wait.

Isolation
    Every runtime runs in a fresh interpreter (`python -m comparisons.micro
    --child ...`): gevent and eventlet patch and hook globals, the memory
    figures need a clean heap, and one runtime's garbage must not slow the
    next. A child prints one JSON line; `comparisons.internals` starts the
    children, collects the lines, and draws the tables and plots.

Sizes
    switch, spawn and io calibrate their count so that one repeat lasts
    about `budget` seconds; memory and timers use the sizes asked for, capped
    per runtime where a runtime cannot hold that many (threads, processes).
    Nothing here asserts a speed: the figures are for reading, as ratios
    between runtimes measured in the same run.

Modules
    `runtimes` (a package: the shared base and one adapter module per family
    of runtimes), `pollers` (the epoll benchmark), `measurement` (the
    benchmarks, their units, one `Measurement`), `harness` (the parent/child
    protocol: `run_child`, `child_main`).
"""

from comparisons.micro.harness import ChildFailure, ChildResult, calibrate, child_main, parse_plan, run_bench, run_child
from comparisons.micro.measurement import BENCHMARKS, SWITCHES_PER_ROUND, TIMER_SPREAD, UNITS, Measurement
from comparisons.micro.pollers import POLLERS, SELECT_FD_LIMIT, poller_wait_cost
from comparisons.micro.runtimes import RUNTIMES, Runtime, rss_bytes

__all__ = [
    "BENCHMARKS",
    "POLLERS",
    "RUNTIMES",
    "SELECT_FD_LIMIT",
    "SWITCHES_PER_ROUND",
    "TIMER_SPREAD",
    "UNITS",
    "ChildFailure",
    "ChildResult",
    "Measurement",
    "Runtime",
    "calibrate",
    "child_main",
    "parse_plan",
    "poller_wait_cost",
    "rss_bytes",
    "run_bench",
    "run_child",
]
