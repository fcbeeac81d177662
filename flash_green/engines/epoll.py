"""v4 - epoll: one thread, non-blocking sockets, a state machine per connection.

What changed from v3 (threaded)
    No thread waits for a client any more. Every socket is non-blocking, and
    one loop asks the kernel (`select.epoll`) which sockets are ready. Each
    connection is an explicit state machine, a `Channel`, whose callbacks
    (`on_readable`, `on_writable`, `on_timeout`) advance it as far as they
    can without waiting and then return to the loop. An idle keep-alive
    connection is now under a kilobyte of Python objects plus the kernel's
    socket, not a thread: 10,000 idle clients are cheap, and slowloris
    clients cost only the bytes they trickled.

The state machine (each arrow is one callback's work)
    READING   --recv, parse: a whole request, body included-->  app runs inline
              --> WRITING
    WRITING   --send; socket full-->  wait for EPOLLOUT  --> WRITING
    WRITING   --response done, keep-alive-->  READING (pipelined bytes
              already buffered are parsed at once, in order)
    READING   --bad input-->  REJECTING (error response)  --> LINGERING
              (half-closed, input drained)  --> CLOSED
    any state --timeout, socket error, Connection: close-->  CLOSED

    In v3 the same sequence was a plain loop of blocking calls
    (`serve_connection`), and the "state" lived in the thread's stack. Here
    every wait is a return to the loop, so the state must be saved by hand
    in the Channel's fields. Tasklets, greenlets and asyncio exist to hide
    exactly this machine; read it once to see what they do for you.

    The READING part of the machine - feed the parser, collect the body,
    dispatch a whole request, choose a timeout when it needs more bytes,
    reject bad input - is the same for every callback-style engine, so it
    lives in `_pump.RequestPump` (asyncio's Protocol uses it too). The
    rest - the loop, accepting, sending, timers (one lazy deadline per
    connection), lingering, closing - is v5's too, so it lives in
    `_reactor` (the `Channel` and the `Reactor` loop). This module is v4's
    one decision: `InlineChannel.dispatch` runs the app right there, on
    the loop thread.

Back-pressure
    The next piece of a response is pulled from the app's iterable only
    when the previous piece has gone to the kernel, so a client that stops
    reading a 10 MB download pins one 64 KB piece, not 10 MB. Input is not
    read while a response is being written, so a client that pipelines
    without reading is throttled by its own TCP window. Request bodies are
    read whole before the app runs (bounded by --max-body-size), because
    `wsgi.input.read()` is a blocking call: it could only wait for the
    socket by blocking the loop. 100-continue is answered when the body is
    due. Bytes an app passes to `write()` are sent at once (PEP 3333), and
    what the socket does not take waits in memory, ahead of the next piece:
    the app holds the loop while it writes, so it cannot wait for the client.

TLS: one more state
    A connection of a TLS listener begins in HANDSHAKING, whose waits go
    both ways (`_reactor.TLSHandshake`), bounded by --header-timeout as a
    head is. The price is CPU on the one loop thread: 0.84 ms per
    handshake, during which every other connection waits (a burst of new
    TLS clients is a blocking handler of its own), and 24 us per
    keep-alive request for the records (`python -m comparisons.bench_tls`).

What it costs per connection
    About 0.7 KB of RSS per idle keep-alive connection (Channel,
    ServerConnection, socket object, peer address, a timer entry), measured
    with 10,000 of them held open by comparisons/bench_inprocess.py, plus
    the kernel's socket buffers (not in RSS). No thread, no stack, no
    switch: per request one recv, the parse, the app, one send.

What breaks it (the seed's lesson)
    One slow handler blocks every connection. The app runs on the loop
    thread, so a `/sleep`, a blocking upstream call, a slow query or a CPU
    burn stops the whole server for its duration (the cross-engine suite
    asserts it: `blocking_handler_stalls`). It also uses one core, and the
    code is inside out: every blocking call of v3 became a state and a
    callback.

When to use it
    Servers whose handlers never block: proxies, static files, chat and
    push servers holding many idle connections (nginx, HAProxy, Redis and
    Node are this model in C and JavaScript). For WSGI apps, which block,
    use v5 (event): the same loop, with the app on a thread pool.
"""

from __future__ import annotations

from ._reactor import WRITING, Channel, Reactor, TLSHandshake
from .base import Capabilities


class InlineChannel(Channel):
    """v4's connection: the app runs where the request was read."""

    __slots__ = ()

    def dispatch(self) -> None:
        """v4: run the app right here, on the loop thread; everyone else waits."""
        self.disarm()
        self.engine.counters.requests += 1
        self.state = WRITING
        # write() output goes straight to the socket; what it does not take
        # leaves with the response's next piece (Exchange.send_now).
        self.pending = iter(self.start_exchange(self.sock.send).run())
        self.flush()


class InlineTLSChannel(TLSHandshake, InlineChannel):
    __slots__ = ()


class EpollEngine(Reactor):
    name = "epoll"
    summary = ("v4: one thread, epoll and a state machine per connection; idle clients are "
               "cheap, one blocking handler stalls everyone")
    capabilities = Capabilities(concurrent=True, parallel=False, blocking_handler_stalls=True,
                                bounds_connections=True)
    channel_class = InlineChannel
    tls_channel_class = InlineTLSChannel
