"""prefork: N processes, each serving one connection at a time.

The model
    The supervisor (`flash_green.supervisor`) binds the socket and forks N
    workers; each worker is exactly v1 (`sequential`): an accept loop that
    serves one connection to its end with the blocking connection loop,
    then accepts the next. The kernel gives each new connection to a worker
    that is waiting in accept, so N clients are served at once, by N
    interpreters on N cores. This is Apache's prefork MPM and gunicorn's
    `sync` worker (`--workers 2` by default here).

What forking buys
    Parallelism past the GIL: CPU-bound handlers really run side by side.
    Isolation: a worker that crashes, leaks or loops forever takes down one
    connection; the supervisor replaces it (after `--timeout` without a
    heartbeat it first has the stuck request answered 500 and its stack
    logged), the others never notice.

What it costs
    A whole interpreter and a copy of the app per connection served at once
    (tens of MB each for a real app; copy-on-write shares only what stays
    untouched), and no shared state: an in-memory cache, a counter or a
    session lives in one worker only. A worker's heartbeat stops while it
    serves a request, so `--timeout` bounds how long one request may run.

What breaks it
    More simultaneous clients than workers. Every slow client, slow upload,
    blocking handler or idle keep-alive connection pins a whole process; the
    N+1th client waits in the listen backlog. A slowloris with N connections
    stops the server. So it sits behind a buffering proxy (nginx), which
    absorbs slow clients and keep-alive and talks to it over fast loopback.

When to use it
    CPU-bound or not thread-safe apps behind a proxy, when robustness
    matters more than connection count: the gunicorn default for good
    reasons. For many waiting clients use threads (`worker`) or an event
    loop under `--workers N`.
"""

from __future__ import annotations

from ..supervisor import DEFAULT_WORKERS, supervised_capabilities
from .sequential import SequentialEngine


class PreforkEngine(SequentialEngine):
    """Each worker process runs this: sequential, marked as supervised."""

    name = "prefork"
    summary = (f"supervisor x sequential: N processes (default {DEFAULT_WORKERS}), one "
               "connection each; parallel and crash-isolated, one process per client")
    capabilities = supervised_capabilities(SequentialEngine.capabilities, DEFAULT_WORKERS)
