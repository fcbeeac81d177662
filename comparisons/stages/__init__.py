"""Where a hello request's server CPU goes: parse, environ, app, head, recv, send, scheduling - per engine.

    python -m comparisons.stages                       # everything, ~25 minutes on 2 cores
    python -m comparisons.stages --engines tasklets epoll --levels 100 --many 0 --idle 0
    python -m comparisons.stages --tiny --engines tasklets --no-peers   # seconds (the test)

The method, and why its numbers add up:

1. Total. Each server runs pinned to CPU 0 with wrk (`-t1`, keep-alive
   `GET /`) on CPU 1, in interleaved rounds (bench_inprocess's
   `measure_throughput`: a fresh server per round, 1 s warm-up, then the
   measured run). The total is the server's CPU time (user + system, all
   threads and worker processes, from /proc via psutil) over the requests
   wrk completed: microseconds of CPU per request, the median of the rounds,
   with their spread. CPU per request, unlike req/s, barely moves when a
   neighbour takes part of the core (bench_inprocess's docstring).

2. Split. In a separate run two samplers watch the loaded server from
   wrk's core. perf (`oncpu`) samples it only while it is on a CPU and
   divides its CPU by the kernel call chain: Python (user space), the recv,
   send and epoll_wait syscalls, other kernel work. py-spy (`sampling`,
   `--gil`: the thread running Python) divides the Python part by stack:
   the parser's frames are "parse", `build_head` is "head", the line making
   a socket call is that call... A stage's microseconds per request are
   its share of that part times the total, so the stages sum to the total
   by construction; what can be wrong is the attribution, and each figure
   carries its binomial sampling error (±). Two samplers because neither
   sees it all: py-spy samples a thread whenever it is runnable, so on a
   shared machine the wait for the CPU after a wake-up lands on the
   blocking call (for a blocking engine, half its "recv" in a test run),
   and perf sees C frames, not Python ones (CPython 3.11 has no perf
   trampoline). A profiler inside the process (cProfile) would cost more
   than the request itself.

3. Floors. The same stages timed alone in this process on the real objects
   (`floors`: ServerConnection parsing wrk's request, the WSGIContext an
   engine builds, Exchange running the demo hello, build_head, a real send
   and recv over a TCP loopback connection): the cost of each stage with hot
   caches, one connection and no wake-up. The gap between a floor and the
   sampled figure under load is what the load adds (cold caches across 100
   connections, waking wrk on the other core inside send). The check
   (`Results.check`): sampled stages sum to the total, and the floors of the
   pure stages fit within the total.

Reading it: "recv" of a blocking engine (sequential, threaded, prefork,
worker) includes going to sleep in recv and being woken: there the kernel's
scheduling is inside the call. uvloop reads in C, out of sight of Python
samples: asyncio --uvloop's recv counts as scheduling. Concurrency differs
where a model cannot serve c=100 (its label says why).

"scheduling" is everything that is not a stage: the loop or kernel, epoll
returning ready events, resuming a tasklet or greenlet, callbacks, timers,
counters. Peers (the raw epoll loop with a canned reply, uvicorn, gevent.pywsgi)
are split into recv, send and the rest only: their parsing is not ours to name.

Also measured, in the same run, for issue 17: req/s and CPU per request at
c=100 and c=1000 for every server, one interleaved run (the ratios are of
medians of that run); zero errors at c=10,000 keep-alive on tasklets, epoll
and asyncio (the fd limit is raised, the engines given room); and the RSS per
idle keep-alive connection of each engine (bench_inprocess's `idle_cost`).

Output: rich tables on the terminal, and `--out DIR` (default
results/stages-DATE) gets `stages.json` (every round) and `stages.md` (the
tables in Markdown, for the README and docs/hot-path.md).
"""
