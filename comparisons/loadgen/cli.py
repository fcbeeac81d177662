"""The command line of the load generator: ``python -m comparisons.loadgen URL -c 100 -d 5 [...]``.

``--ceiling`` measures the generator against ``comparisons.canned``;
``--worker`` (internal) is one process of a ``processes=N`` run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from comparisons import loadgen
from comparisons.loadgen.fanout import worker_main
from comparisons.loadgen.runner import ceiling, run_load


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m comparisons.loadgen URL -c 100 -d 5 [...]``; ``--ceiling`` measures the generator."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--worker"]:  # internal: one process of a processes=N run
        return worker_main()
    parser = argparse.ArgumentParser(prog="python -m comparisons.loadgen", description=loadgen.__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="http://host:port/path (omit with --ceiling)")
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds measured (0: no limit, use -n)")
    parser.add_argument("-n", "--requests", type=int, help="stop after this many requests")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds of unmeasured load first")
    parser.add_argument("--pipeline", type=int, default=1, metavar="K", help="requests per write")
    parser.add_argument("--new-conn", action="store_true", help="a new connection per request")
    parser.add_argument("--rate", type=float, help="open loop: total requests per second")
    parser.add_argument("--processes", type=int, default=1, help="generator processes (wrk: threads)")
    parser.add_argument("-X", "--method", default="GET")
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value' (repeatable)")
    parser.add_argument("--body-size", type=int, default=0, help="send a body of this many bytes")
    parser.add_argument("--timeout", type=float, default=5.0, help="per socket operation, seconds")
    parser.add_argument("--cpu", help="pin the generator to these CPUs, e.g. 0 or 0,1")
    parser.add_argument("--wrk", action="store_true", help="use wrk when installed and the mode allows")
    parser.add_argument("--ceiling", action="store_true", help="measure against comparisons.canned")
    parser.add_argument("--server-cpu", help="with --ceiling: pin the canned server")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(name)s: %(message)s")

    def cpus(text: str | None) -> tuple[int, ...] | None:
        return tuple(int(part) for part in text.split(",")) if text else None

    if args.ceiling:
        result = ceiling(
            args.concurrency, args.duration or 3.0, pipeline=args.pipeline, new_conn=args.new_conn,
            processes=args.processes, warmup=args.warmup, cpu=cpus(args.cpu), server_cpu=cpus(args.server_cpu),
            use_wrk=args.wrk,
        )
    else:
        if not args.url:
            parser.error("a URL is required (or --ceiling)")
        headers = {}
        for header in args.header:
            name, sep, value = header.partition(":")
            if not sep:
                parser.error(f"bad header {header!r}, expected 'Name: value'")
            headers[name.strip()] = value.strip()
        result = run_load(
            args.url, concurrency=args.concurrency, duration=args.duration or None, requests=args.requests,
            warmup=args.warmup, pipeline=args.pipeline, new_conn=args.new_conn, rate=args.rate,
            method=args.method, headers=headers, body=b"x" * args.body_size, timeout=args.timeout,
            processes=args.processes, cpu=cpus(args.cpu), prefer_wrk=args.wrk,
        )
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format())
    return 0
