"""v1 - sequential: one loop, one connection at a time.

The model
    The process accepts a connection, serves every request on it until the
    client closes or the keep-alive timeout ends it, and only then accepts
    the next one. There is no concurrency at all: the code is the plain
    blocking connection loop (`_blocking.serve_connection`) called from the
    accept loop.

What it costs per connection
    Nothing beyond the socket and one `ServerConnection`: no thread, no
    process, no scheduler. Per request it is the cheapest model there is.

What breaks it
    Everything that waits. One slow client (a trickled header, a slow
    upload, a keep-alive connection left open: each bounded by its timeout,
    see `engines/_read_timeouts`) or one slow handler (`/sleep`, a slow
    upstream call) blocks every other client, who queue in the listen
    backlog. A keep-alive client holds the whole server until
    it goes idle for `--keep-alive` seconds. The cross-engine suite asserts
    this documented blocking rather than concurrency.

Several listeners, and TLS
    The accept loop waits on every listener in one poll(). With TLS the
    handshake runs inline too (`serve_connection`, bounded by
    --header-timeout): a client that connects and never says hello holds
    the whole server until it is cut, and each handshake - about a
    millisecond of CPU for an RSA-2048 certificate here - is time nobody else is served.

When to use it
    Tests, one-off tools, and as the baseline that shows what the other
    models buy. Run N of them under the supervisor (`prefork`) and you have
    Apache prefork / gunicorn sync: still one connection per process, but N
    at once and on all cores.
"""

from __future__ import annotations

from ._blocking import serve_connection
from .base import BlockingServer, Capabilities


class SequentialEngine(BlockingServer):
    name = "sequential"
    summary = "v1: one connection at a time in one thread; anything slow blocks everyone"
    capabilities = Capabilities(concurrent=False, parallel=False, blocking_handler_stalls=True)

    def serve(self) -> None:
        self.accept_loop(lambda sock, peer, endpoint:
                         serve_connection(self.secured(sock, endpoint), peer, self, endpoint))
