"""The runner: `python -m flash_green serve | engines | compare | internals`.

`serve` loads the app, binds the listener, and hands both to an engine (or,
with `--workers N`, to the supervisor that forks N copies of the engine).
`compare` and `internals` belong to the `comparisons` package; they are
dispatched to it with the rest of the command line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from . import engines
from .config import Config, Limits
from .loader import DEFAULT_APP, AppLoadError, bind_listener, load_app

log = logging.getLogger("flash")

#: Exit code when the app cannot be loaded (same as gunicorn's APP_LOAD_ERROR):
#: the supervisor reads it as "do not respawn".
EXIT_APP_LOAD = 4

#: Subcommands implemented outside flash_green: name -> "module:function(argv)".
EXTERNAL_COMMANDS = {
    "compare": ("comparisons.compare:main", "run the scenario matrix and write a report"),
    "internals": ("comparisons.internals:main", "scheduler micro-benchmarks across runtimes"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flash_green", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a WSGI app with one engine")
    add_serve_arguments(serve)
    sub.add_parser("engines", help="list the registered engines and their models")
    for name, (_, help_text) in EXTERNAL_COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    d = Config()
    lim = Limits()
    p.add_argument("app", nargs="?", default=DEFAULT_APP, help=f"module:callable (default {DEFAULT_APP})")
    p.add_argument("--engine", "-e", default="sequential", help="concurrency model (see `engines`)")
    p.add_argument("--factory", action="store_true", help="APP is a factory returning the app")
    p.add_argument("-b", "--bind", default=d.bind, help=f"HOST:PORT, port 0 = any (default {d.bind})")
    p.add_argument("--backlog", type=int, default=d.backlog)
    p.add_argument("--workers", "-w", type=int, default=d.workers,
                   help="fork N worker processes under a supervisor (0 = none)")
    p.add_argument("--threads", type=int, default=d.threads, help="threads per process (pool engines)")
    p.add_argument("--keep-alive", type=float, default=d.keep_alive, help="idle keep-alive seconds")
    p.add_argument("--header-timeout", type=float, default=d.header_timeout,
                   help="seconds to deliver a whole request head, first byte to last (then 408)")
    p.add_argument("--body-timeout", type=float, default=d.body_timeout,
                   help="seconds a request body may go without a byte (then 408)")
    p.add_argument("--min-body-rate", type=float, default=d.min_body_rate, metavar="BYTES_PER_S",
                   help="slowest upload: --body-timeout s plus 1 s per BYTES_PER_S received "
                        "(then 408; 0 = off)")
    p.add_argument("--timeout", type=float, default=d.timeout,
                   help="worker heartbeat / CGI child timeout in seconds")
    p.add_argument("--graceful-timeout", type=float, default=d.graceful_timeout)
    p.add_argument("--max-connections", type=int, default=d.max_connections)
    p.add_argument("--max-requests", type=int, default=d.max_requests)
    p.add_argument("--max-requests-jitter", type=int, default=d.max_requests_jitter)
    p.add_argument("--reuse-port", action="store_true", help="each worker binds SO_REUSEPORT")
    p.add_argument("--max-request-line", type=int, default=lim.max_request_line)
    p.add_argument("--max-field-size", type=int, default=lim.max_field_size)
    p.add_argument("--max-header-fields", type=int, default=lim.max_header_fields)
    p.add_argument("--max-header-size", type=int, default=lim.max_header_size)
    p.add_argument("--max-body-size", type=int, default=lim.max_body_size)
    p.add_argument("--access-log", default=None, metavar="FILE|-", help="combined log + request time")
    p.add_argument("--log-level", default=d.log_level, choices=["debug", "info", "warning", "error"])
    p.add_argument("--stats", type=float, default=0.0, metavar="SECONDS",
                   help="log the engine's counters every SECONDS")
    p.add_argument("--stats-path", default=None, help="serve counters as JSON at this path (opt-in)")
    p.add_argument("--debug-blocking", type=float, default=0.0, metavar="MS",
                   help="warn with a stack when the loop is held longer than MS")
    p.add_argument("--trace", choices=["traps", "sched", "all"], default=None,
                   help="tasklets engine: log every trap and/or every resumption (very verbose)")
    p.add_argument("--patch", action="store_true", help="monkey-patch the stdlib (gevent, eventlet)")
    p.add_argument("--uvloop", action="store_true", help="asyncio engine: run on uvloop")
    p.add_argument("--cgi-dir", default=None, help="directory of CGI programs (cgi engine)")


def config_from_args(args: argparse.Namespace) -> Config:
    limits = Limits(
        max_request_line=args.max_request_line,
        max_field_size=args.max_field_size,
        max_header_fields=args.max_header_fields,
        max_header_size=args.max_header_size,
        max_body_size=args.max_body_size,
    )
    return Config(
        bind=args.bind, backlog=args.backlog, workers=args.workers, threads=args.threads,
        keep_alive=args.keep_alive, header_timeout=args.header_timeout, timeout=args.timeout,
        body_timeout=args.body_timeout, min_body_rate=args.min_body_rate,
        graceful_timeout=args.graceful_timeout, max_connections=args.max_connections,
        max_requests=args.max_requests, max_requests_jitter=args.max_requests_jitter,
        reuse_port=args.reuse_port, access_log=args.access_log, log_level=args.log_level,
        stats_interval=args.stats, stats_path=args.stats_path,
        debug_blocking_ms=args.debug_blocking, trace=args.trace, patch=args.patch,
        uvloop=args.uvloop, cgi_dir=args.cgi_dir,
        app=args.app, factory=args.factory,
        limits=limits,
    )


def setup_logging(config: Config) -> None:
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper()),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    access = logging.getLogger("flash.access")
    access.propagate = False
    if config.access_log:
        handler = (logging.StreamHandler(sys.stderr) if config.access_log == "-"
                   else logging.FileHandler(config.access_log))
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)


def serve(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    setup_logging(config)
    try:
        engine_cls = engines.get(args.engine)
        engine_cls.validate(config)
    except (KeyError, ValueError, engines.EngineUnavailable) as exc:
        print(f"flash: {exc.args[0]}", file=sys.stderr)
        return 2
    if config.workers < 0:
        print("flash: --workers must be >= 0", file=sys.stderr)
        return 2
    if config.workers or engine_cls.capabilities.multiprocess:
        return _serve_supervised(engine_cls, config, args)
    try:
        app = load_app(args.app, args.factory)
    except AppLoadError as exc:
        print(f"flash: {exc}", file=sys.stderr)
        return EXIT_APP_LOAD
    refusal = engine_cls.refuse_app(app)
    if refusal:
        print(f"flash: {args.app}: {refusal}", file=sys.stderr)
        return 2
    host, port = config.host_port()
    listener = bind_listener(host, port, config.backlog, config.reuse_port)
    announce(engine_cls.name, listener, args.app)
    engine_cls(config, app, listener).run()
    log.info("stopped")
    return 0


def _serve_supervised(engine_cls, config: Config, args: argparse.Namespace) -> int:
    try:
        supervisor = importlib.import_module("flash_green.supervisor")
    except ImportError:
        print(f"flash: --workers is not available yet for engine {engine_cls.name!r}", file=sys.stderr)
        return 2
    return supervisor.run(engine_cls, config, args.app, args.factory)


def announce(engine: str, listener, app: str) -> None:
    """The start-up line; tests and scripts read the port from it."""
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"flash: engine={engine} app={app} listening on http://{shown}:{port} pid={os.getpid()}",
          flush=True)


def list_engines() -> int:
    for name in engines.names():
        try:
            cls = engines.get(name)
            print(f"{name:12} {cls.summary}")
        except engines.EngineUnavailable as exc:
            print(f"{name:12} (unavailable: {exc})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in EXTERNAL_COMMANDS:
        target = EXTERNAL_COMMANDS[argv[0]][0]
        module_name, _, func = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            print(f"flash: {argv[0]} is not available: {exc}", file=sys.stderr)
            return 2
        return getattr(module, func)(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    if args.command == "engines":
        return list_engines()
    return serve(args)
