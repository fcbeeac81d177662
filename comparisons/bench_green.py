"""Green threads and coroutines side by side: hello keep-alive req/s, and RSS per idle connection.

    python -m comparisons.bench_green                  # everything, ~4 minutes
    python -m comparisons.bench_green --skip-idle --rounds 5
    python -m comparisons.bench_green --skip-throughput --idle 5000

Throughput. Every server answers `GET /` with a 13-byte hello: Flash's
greenlet, gevent, eventlet and asyncio engines (the last also on uvloop)
through the CLI, serving the demo app; and the reference server of each
model, in a child process of this script:

* gevent.pywsgi and eventlet.wsgi serving the same demo app. Their
  listening socket has TCP_NODELAY, which Linux copies to every accepted
  socket: both write the response head and body separately, and without it
  each keep-alive response would wait 40 ms for a delayed ACK (Nagle), so
  the comparison would measure a socket option.
* uvicorn with httptools, on the asyncio loop and on uvloop, serving an
  ASGI hello (uvicorn's WSGI mode is deprecated and runs the app in a
  thread pool: not the same model).

No server is monkey-patched (hello does no I/O of its own; patching is what
makes an app's blocking calls cooperate, see tests/test_green.py). Access
logs are off everywhere. Each server is pinned to CPU 0 and wrk
(`-t1 -c100 -d5s` by default) to CPU 1; servers are measured in interleaved
rounds, and the ratios are of medians from the same run. Numbers depend on
the machine; only the ratios are quoted.

Idle connections. For each server: open N keep-alive connections with one
answered request each, hold them, and compare the server's RSS before and
after: the difference over N is what an idle keep-alive client costs it
beyond the kernel's socket buffers.
"""

from __future__ import annotations

import importlib.util
import sys

from comparisons.bench_inprocess import (
    HELLO,
    Server,
    announce,
    bench_arguments,
    flash_server,
    idle_cost,
    listener,
    measure_throughput,
    report_throughput,
)

#: (ours, peer, the ratio the study aims at)
TARGETS = [
    ("greenlet", "gevent.pywsgi", 2.0),
    ("gevent", "gevent.pywsgi", 1.5),
    ("eventlet", "eventlet.wsgi", 1.2),
    ("asyncio", "uvicorn httptools asyncio", 1.0),
    ("asyncio --uvloop", "uvicorn httptools uvloop", 1.0),
    # The tasklets engine's aims (issue 3), against the same peers.
    ("tasklets", "gevent.pywsgi", 4.0),
    ("tasklets", "uvicorn httptools uvloop", 1.2),
]

#: Peers: label -> the packages each needs.
PEERS = {
    "gevent.pywsgi": ("gevent",),
    "eventlet.wsgi": ("eventlet",),
    "uvicorn httptools asyncio": ("uvicorn", "httptools"),
    "uvicorn httptools uvloop": ("uvicorn", "httptools", "uvloop"),
}


def peer_server(name: str) -> Server:
    return Server(name, (sys.executable, "-m", "comparisons.bench_green", "--serve-peer", name))


def servers() -> list[Server]:
    chosen = [flash_server("tasklets"), flash_server("greenlet"), flash_server("gevent"),
              flash_server("eventlet"), flash_server("asyncio")]
    if importlib.util.find_spec("uvloop"):
        chosen.append(flash_server("asyncio", "--uvloop"))
    for name, packages in PEERS.items():
        missing = [p for p in packages if importlib.util.find_spec(p) is None]
        if missing:
            print(f"peer {name} skipped: {', '.join(missing)} not installed", file=sys.stderr)
        else:
            chosen.append(peer_server(name))
    return chosen


# -- the reference servers, run as `--serve-peer NAME` in a child process ------------

async def asgi_hello(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": HELLO})


def serve_peer(name: str) -> None:
    sock = listener()
    if name == "gevent.pywsgi":
        import gevent.socket
        from gevent.pywsgi import WSGIServer

        from flash_green.apps.demo import app

        announce(sock.getsockname()[1])
        WSGIServer(gevent.socket.socket(fileno=sock.detach()), app, log=None).serve_forever()
    elif name == "eventlet.wsgi":
        from flash_green.patching import import_eventlet

        import_eventlet()
        import eventlet.wsgi

        from flash_green.apps.demo import app

        announce(sock.getsockname()[1])
        eventlet.wsgi.server(eventlet.greenio.GreenSocket(sock), app, log_output=False,
                             max_size=100_000)
    elif name.startswith("uvicorn"):
        import uvicorn

        loop = "uvloop" if name.endswith("uvloop") else "asyncio"
        config = uvicorn.Config(asgi_hello, http="httptools", loop=loop, lifespan="off",
                                access_log=False, log_level="warning", timeout_keep_alive=600)
        announce(sock.getsockname()[1])
        uvicorn.Server(config).run(sockets=[sock])
    else:
        raise SystemExit(f"unknown peer {name!r}")


def chosen(labels: list[str] | None) -> list[Server]:
    candidates = servers()
    if not labels:
        return candidates
    unknown = set(labels) - {s.label for s in candidates}
    if unknown:
        raise SystemExit(f"unknown servers {sorted(unknown)}; known: {[s.label for s in candidates]}")
    return [s for s in candidates if s.label in labels]


# -- idle connections ----------------------------------------------------------------

def report_idle(count: int, labels: list[str] | None) -> None:
    print(f"\nRSS per idle keep-alive connection ({count} connections, one request each, held open):")
    for server in chosen(labels):
        if not labels and "uvicorn" in server.label and "asyncio" not in server.label:
            continue  # one uvicorn row is enough here
        print(f"  {server.label:28} {idle_cost(server, count) / 1024:7.2f} KB", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = bench_arguments(__doc__)
    parser.add_argument("--only", nargs="+", metavar="LABEL",
                        help="measure only these servers (labels as printed, e.g. asyncio "
                             "'uvicorn httptools asyncio')")
    args = parser.parse_args(argv)
    if args.serve_peer:
        serve_peer(args.serve_peer)
        return 0
    if not args.skip_throughput:
        from comparisons import wrk

        if not wrk.available():
            print("wrk is not installed: skipping the throughput part", file=sys.stderr)
        else:
            runs = measure_throughput(chosen(args.only), args.rounds, args.connections,
                                      args.duration)
            report_throughput(runs, args.connections, args.duration, TARGETS)
    if not args.skip_idle:
        report_idle(args.idle, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
