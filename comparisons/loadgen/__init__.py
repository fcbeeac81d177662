"""Flash's own HTTP/1.1 load generator: one epoll loop per process, many keep-alive connections.

Why write one when wrk exists? wrk may not be installed, it cannot open a
new connection per request, it cannot run open-loop (that needs wrk2), and
its results do not merge with ours. This generator does all of that in
plain Python, fast enough to saturate most of the Python servers it measures
(``ceiling()`` tells you how fast it is on your machine; see below).

How it works
------------
Each process runs ONE ``select.epoll`` loop over ``concurrency`` connection
"slots"; a slot owns at most one socket plus an incremental response parser
that counts responses without copying bodies. ``processes=N`` starts N such
loops in worker processes (fresh interpreters that connect, then start
measuring together on the parent's signal) and merges their histograms and
counters. One module per idea, each importing only those above it here:

=============== ==========================================================
``request``     the target resolved from a URL, the request bytes
``framing``     where each response ends: ``parse_head``, ``ResponseParser``
``config``      ``LoadConfig``, the settings of one run, validated
``loop``        ``LoadLoop``, the epoll load loop of one process
``fanout``      N generator processes started together, their protocol
``runner``      ``run_load``/``run``/``ceiling``: wrk or ours, one process
                or N, counters merged into one ``LoadResult``
``adversaries`` ``Slowloris`` and ``IdleConnections``
``cli``         ``python -m comparisons.loadgen``
=============== ==========================================================

``LoadResult`` lives in ``comparisons.load_result``, shared with the wrk
wrapper (``comparisons.wrk``), so neither generator imports the other's
package to build one.

Modes
-----
* **closed-loop keep-alive** (default): each connection sends its next
  request the moment the previous response completes. The rate you measure
  is the server's throughput at that concurrency. A server that closes
  after each response (``Connection: close``) makes the slot reconnect:
  the handshake then costs throughput but is outside the latency.
* **pipelining** (``pipeline=K``): each write carries K requests; the next
  write happens once all K responses are in. It shows per-request overhead
  once syscalls and wake-ups are amortised.
* **new connection per request** (``new_conn=True``): connect, send with
  ``Connection: close``, read to the end of the framed response (or to EOF
  if unframed), close. Latency includes the TCP handshake and ``accept``.
* **open loop** (``rate=R``): requests are *scheduled* at fixed intended send
  times (R per second in total) whatever the server does. A request waits for
  a free connection if necessary, and its latency is measured from its
  intended send time, not from when it could actually be written. A closed
  loop under-reports latency when the server stalls, because the stalled
  clients stop sending and the requests they *would* have sent are never
  measured ("coordinated omission", Gil Tene); the open loop does not. If
  ``sent`` falls well short of ``scheduled`` the server (or ``concurrency``)
  cannot keep up with R and the latencies say by how much.

Errors
------
``connect`` (refused, unreachable, no file descriptors), ``read`` (the
connection broke after it was established: reset, EOF in the middle of a
response, a write that failed, a malformed response), ``timeout`` (no
progress on a socket operation for ``timeout`` seconds, connect included),
and ``status`` (completed responses whose code is not 2xx; the codes are in
``status_counts``). Errors are counted per request lost, so with pipelining
one reset may count K.

Bounds
------
A run stops at ``warmup + duration`` seconds, or once ``requests`` requests
have been attempted and answered (or failed), whichever comes first; a run
with neither stops at ``time_limit``. Every socket operation is bounded by
``timeout``. Requests still in flight at the end are not counted.

The ceiling
-----------
``ceiling()`` runs the generator against ``comparisons.canned``, a server
that does nothing but send a fixed response. If a server under test scores
near that ceiling, the generator was the bottleneck, not the server: add
``processes``, use wrk (``prefer_wrk``), or pin the generator and server to
different CPUs (``cpu=`` / ``server_cpu=``).

CLI::

    python -m comparisons.loadgen http://127.0.0.1:8000/ -c 100 -d 5 \\
        [--pipeline K] [--new-conn] [--rate R] [--processes N] [--json]
"""

from __future__ import annotations

from comparisons.load_result import ERROR_KINDS, LoadResult
from comparisons.loadgen.adversaries import IdleConnections, Slowloris, SlowlorisStats, idle_connections
from comparisons.loadgen.config import LoadConfig
from comparisons.loadgen.framing import ProtocolError, ResponseParser, parse_head
from comparisons.loadgen.request import Target, build_request, parse_url
from comparisons.loadgen.runner import ceiling, run, run_load, wrk_can_run

__all__ = [
    "ERROR_KINDS",
    "IdleConnections",
    "LoadConfig",
    "LoadResult",
    "ProtocolError",
    "ResponseParser",
    "Slowloris",
    "SlowlorisStats",
    "Target",
    "build_request",
    "ceiling",
    "idle_connections",
    "parse_head",
    "parse_url",
    "run",
    "run_load",
    "wrk_can_run",
]
