"""v3 - threaded: one thread per connection, for the connection's whole life.

What changed from v1 (sequential)
    The accept loop no longer serves the connection itself: it starts a
    thread that runs the very same blocking connection loop
    (`_blocking.serve_connection`) and goes back to accepting.
    Nothing else changed, and that is the lesson: blocking code becomes
    concurrent when each wait happens on its own thread, because the kernel
    parks a thread blocked in recv/send/sleep and runs another. A slow
    client or a `/sleep` handler now stalls only its own thread.

The model
    accept -> thread(serve_connection) -> keep-alive requests -> close. The
    thread is held while the connection is open, including the idle time
    between keep-alive requests; `--keep-alive`, `--header-timeout` (the
    whole head from its first byte: the timeout shrinks at each read of a
    trickled head) and `--body-timeout` are socket timeouts that release
    threads held by idle or trickling clients (enforced by the kernel, see
    `_per_thread.KernelTimeoutSocket`: Python's own socket timeouts would
    add a poll() and a GIL round trip to every recv and send).
    `--max-connections N` bounds the threads: at N, the accept loop stops
    accepting until a thread ends, so new connections wait in the kernel's
    listen backlog (`--backlog`) instead of being refused (why waiting and
    not a 503: `_per_thread`).

    The code is `_per_thread.ThreadPerConnection`, which v2 (cgi) stands on
    too: this module adds only what v3 is (its name and capabilities). The
    thread per connection is the whole model.

What it costs per connection
    A thread: 25-28 KB of RSS here (its stack pages actually touched, the
    thread state, the socket; `comparisons/bench_inprocess.py` measures it
    per idle keep-alive connection) and an 8 MB *virtual* stack reservation
    (`ulimit -s`), so thousands of threads are fine for RSS but eat address
    space and scheduler time. Starting a thread per connection costs tens of
    microseconds; keep-alive amortises it.

The GIL
    Handlers do not run Python in parallel: only one thread holds the
    interpreter at a time. Threads overlap their *waiting* (sockets, sleep,
    upstream calls release the GIL), not their CPU work; `/cpu` requests on
    two threads take as long as on one. Use processes (`--workers`) for
    CPU-bound apps.

What breaks it
    Many idle keep-alive connections: each pins a thread until the
    keep-alive timeout, so 10,000 idle browsers mean 10,000 threads (or,
    with the bound, a full server that queues new clients behind idle
    ones). Slow clients pin threads the same way: a slowloris attacker with
    N connections takes N threads for up to `--header-timeout` each. v4
    (epoll) and v5 (event) fix exactly this by waiting without a thread.

Several listeners, and TLS
    The accept loop waits on every listener in one poll(). With TLS the
    handshake runs in the connection's own thread, bounded by
    --header-timeout, so a slow or silent client holds only its thread.
    The socket is the standard library's SSL socket with Python's own
    timeouts (a poll() before each blocking call, the cost
    `_per_thread.KernelTimeoutSocket` saves plain connections: beside the
    cipher it is noise). OpenSSL runs without the GIL, so the handshakes of several
    threads - 1.0 ms of CPU each here - use several cores: the one
    place where threads beat a single-threaded loop on CPU. TLS adds 28 us
    of CPU per keep-alive request (`python -m comparisons.bench_tls`).

When to use it
    Small and medium deployments with blocking handlers and a known number
    of clients (intranet apps, internal APIs), behind a proxy that absorbs
    slow clients and keep-alive. It is the model of
    `socketserver.ThreadingMixIn` / `http.server.ThreadingHTTPServer` and,
    with a bounded pool instead of a thread per accept, of cheroot and of
    Apache's worker MPM.
"""

from __future__ import annotations

from ._per_thread import ThreadPerConnection
from .base import Capabilities


class ThreadedEngine(ThreadPerConnection):
    name = "threaded"
    summary = ("v3: a thread per connection (keep-alive included); handlers overlap "
               "their waits, idle clients pin threads")
    capabilities = Capabilities(concurrent=True, parallel=False, blocking_handler_stalls=False,
                                bounds_connections=True)
    reload_refusal = ("requests run on many threads at once, and re-importing the app's "
                      "modules under them is not safe; with --workers N a HUP starts new "
                      "workers on the new code")
