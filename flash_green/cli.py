"""The runner: `python -m flash_green serve | engines | compare | internals`.

`serve` loads the app, binds the listener, and hands both to an engine (or,
with `--workers N`, to the supervisor that forks N copies of the engine):
`flash_green.startup`, the path every worker takes too. The entry point that
runs this module, after patching if asked, is `flash_green.console`.
`serve`'s options come from the command line over FLASH_CMD_ARGS over a
config file (`flash_green.settings`); with `--reload` this process only
watches and a child serves (`flash_green.reload`). An operator's mistake
ends in one line on stderr and a non-zero exit, never a traceback.
`compare` and `internals` belong to the `comparisons` package; they are
dispatched to it with the rest of the command line.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import logging
import logging.config
import os
import sys

from . import accesslog, binds, engines, proxy, reload, settings, startup, supervisor
from .config import Config, Limits
from .loader import DEFAULT_APP, AppLoadError
from .startup import DEFAULT_ENGINE, EXIT_APP_LOAD, EXIT_BIND, AppRefused, announce

log = logging.getLogger("flash")

#: The loggers Flash configures (never the root logger: that is the app's).
FLASH_LOGGERS = ("flash", "tasklets")
LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"

#: Subcommands implemented outside flash_green: name -> "module:function(argv)".
EXTERNAL_COMMANDS = {
    "compare": ("comparisons.compare:main", "run the scenario matrix and write a report"),
    "internals": ("comparisons.internals:main", "scheduler micro-benchmarks across runtimes"),
    "tour": ("comparisons.tour.cli:main", "the course, live: each chapter's experiment, traced, drawn as a page"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flash_green", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=version_line())
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
    p.add_argument("--engine", "-e", default=DEFAULT_ENGINE, help="concurrency model (see `engines`)")
    p.add_argument("--factory", action="store_true", help="APP is a factory returning the app")
    p.add_argument("-b", "--bind", action="append", default=None,
                   help="HOST:PORT, [::1]:PORT, HOST, unix:PATH or fd://N; repeatable; port 0 = any "
                        f"(default {d.bind[0]}; systemd socket activation replaces it)")
    p.add_argument("--unix-socket-mode", type=lambda text: int(text, 8), default=d.unix_socket_mode,
                   metavar="OCTAL", help="permission bits of a unix:PATH socket file, e.g. 660")
    p.add_argument("--forwarded-allow-ips", default=os.environ.get("FORWARDED_ALLOW_IPS", d.forwarded_allow_ips),
                   help="peers whose X-Forwarded-*/Forwarded headers are believed: addresses, CIDR "
                        f"networks, '*' (default {d.forwarded_allow_ips}; unix-socket peers always)")
    p.add_argument("--backlog", type=int, default=d.backlog)
    add_tls_arguments(p)
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
    p.add_argument("--trace-requests", default=None, metavar="FILE",
                   help="append a JSON line per request: when it arrived, ran, ended, and who ran it")
    p.add_argument("--patch", action="store_true", help="monkey-patch the stdlib (gevent, eventlet)")
    p.add_argument("--uvloop", action="store_true", help="asyncio engine: run on uvloop")
    p.add_argument("--cgi-dir", default=None, help="directory of CGI programs (cgi engine)")
    add_operation_arguments(p)


def add_tls_arguments(p: argparse.ArgumentParser) -> None:
    """TLS on every TCP listener (gunicorn's names; `flash_green/tls.py`)."""
    group = p.add_argument_group("TLS (every TCP bind; unix sockets stay plain)")
    group.add_argument("--certfile", metavar="FILE", help="certificate chain (PEM): serve https")
    group.add_argument("--keyfile", metavar="FILE", help="its private key (PEM), if not in --certfile")
    group.add_argument("--ca-certs", metavar="FILE", help="CA certificates (PEM) for client certificates")
    group.add_argument("--cert-reqs", type=int, default=Config().cert_reqs, choices=(0, 1, 2),
                       help="client certificates: 0 not asked for, 1 optional, 2 required")
    group.add_argument("--ciphers", metavar="LIST", help="OpenSSL cipher list (TLS 1.2)")


def add_operation_arguments(p: argparse.ArgumentParser) -> None:
    """Running it as one runs gunicorn: config file, reload, paths, logging."""
    run = p.add_argument_group("running it")
    run.add_argument("--version", action="version", version=version_line())
    run.add_argument("-c", "--config", metavar="FILE",
                     help="settings from a Python or TOML file, names as the long options "
                          f"(command line > ${settings.ENV_ARGS} > FILE > defaults)")
    run.add_argument("--chdir", metavar="DIR", help="change to DIR before loading the app")
    run.add_argument("--pythonpath", metavar="DIRS", help="comma-separated directories put first on sys.path")
    run.add_argument("--reload", action="store_true",
                     help="restart the server when the app's files change (development)")
    run.add_argument("--reload-extra-file", action="append", default=[], metavar="FILE",
                     help="also restart when FILE changes (repeatable)")
    logs = p.add_argument_group("logging")
    logs.add_argument("--log-config", metavar="FILE",
                      help="logging configuration: dictConfig as .json or .toml, fileConfig as .ini")
    logs.add_argument("--access-log-format", default=accesslog.DEFAULT_FORMAT, metavar="FORMAT",
                      help="gunicorn's atoms: h l u t r s b B f a T D L M p m U q H, "
                           "%%({header}i)s, %%({header}o)s (default: combined)")


def version_line() -> str:
    try:
        version = importlib.metadata.version("flash-green")
    except importlib.metadata.PackageNotFoundError:
        version = "(not installed)"
    return f"flash-green {version} (Python {sys.version.split()[0]})"


def config_from_args(args: argparse.Namespace) -> Config:
    limits = Limits(
        max_request_line=args.max_request_line,
        max_field_size=args.max_field_size,
        max_header_fields=args.max_header_fields,
        max_header_size=args.max_header_size,
        max_body_size=args.max_body_size,
    )
    return Config(
        bind=args.bind or Config().bind, unix_socket_mode=args.unix_socket_mode,
        forwarded_allow_ips=args.forwarded_allow_ips,
        certfile=args.certfile, keyfile=args.keyfile, ca_certs=args.ca_certs,
        cert_reqs=args.cert_reqs, ciphers=args.ciphers,
        backlog=args.backlog, workers=args.workers, threads=args.threads,
        keep_alive=args.keep_alive, header_timeout=args.header_timeout, timeout=args.timeout,
        body_timeout=args.body_timeout, min_body_rate=args.min_body_rate,
        graceful_timeout=args.graceful_timeout, max_connections=args.max_connections,
        max_requests=args.max_requests, max_requests_jitter=args.max_requests_jitter,
        reuse_port=args.reuse_port, access_log=args.access_log, log_level=args.log_level,
        stats_interval=args.stats, stats_path=args.stats_path,
        debug_blocking_ms=args.debug_blocking, trace=args.trace, patch=args.patch,
        trace_requests=args.trace_requests,
        uvloop=args.uvloop, cgi_dir=args.cgi_dir,
        app=args.app, factory=args.factory,
        limits=limits,
    )


def setup_logging(config: Config, log_config: str | None = None) -> None:
    """Flash's own loggers, or the operator's --log-config; the root logger is left to the app.

    An app that configures logging (Django's LOGGING) would otherwise print
    each of its records twice: once by its handler, once by ours on root.
    """
    if log_config:
        apply_log_config(log_config)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        for name in FLASH_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers = [handler]
            logger.setLevel(getattr(logging, config.log_level.upper()))
            logger.propagate = False
    access = logging.getLogger("flash.access")
    access.propagate = False
    if config.access_log:
        handler = (logging.StreamHandler(sys.stderr) if config.access_log == "-"
                   else logging.FileHandler(config.access_log))
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)


def apply_log_config(path: str) -> None:
    """dictConfig from .json or .toml, fileConfig from anything else (.ini)."""
    if path.endswith((".json", ".toml")):
        with open(path, "rb") as handle:
            data = json.load(handle) if path.endswith(".json") else settings.tomllib.load(handle)
        data.setdefault("version", 1)
        data.setdefault("disable_existing_loggers", False)
        logging.config.dictConfig(data)
    else:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file: {path!r}")
        logging.config.fileConfig(path, disable_existing_loggers=False)


def change_directories(args: argparse.Namespace) -> None:
    """--chdir, then --pythonpath: before anything reads a relative path."""
    if args.chdir:
        os.chdir(args.chdir)
        sys.path.insert(0, os.getcwd())
    for directory in reversed((args.pythonpath or "").split(",")):
        if directory.strip():
            sys.path.insert(0, os.path.abspath(directory.strip()))


def serve(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    config = config_from_args(args)
    started_in = os.getcwd()
    try:
        change_directories(args)
        setup_logging(config, args.log_config)
        accesslog.configure(args.access_log_format)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        print(f"flash: {_one_line(exc)}", file=sys.stderr)
        return 2
    try:
        for text in config.bind:
            binds.parse_bind(text)
    except binds.BindError as exc:
        print(f"flash: {exc}", file=sys.stderr)
        return EXIT_BIND
    try:
        engine_cls = engines.get(args.engine)
        engine_cls.validate(config)
        proxy.TrustedPeers.parse(config.forwarded_allow_ips)
    except (KeyError, ValueError, engines.EngineUnavailable) as exc:
        print(f"flash: {exc.args[0]}", file=sys.stderr)
        return 2
    if config.workers < 0:
        print("flash: --workers must be >= 0", file=sys.stderr)
        return 2
    if args.reload and not reload.in_child():
        return _watch_and_restart(args, argv or [], config, started_in)
    reload.record_imports_on_load()
    if config.workers or engine_cls.capabilities.multiprocess:
        return _serve_supervised(engine_cls, config, args)
    try:
        app = startup.load(engine_cls, args.app, args.factory)
    except AppRefused as exc:
        print(f"flash: {exc}", file=sys.stderr)
        return 2
    except AppLoadError as exc:
        print(f"flash: {exc}", file=sys.stderr)
        return EXIT_APP_LOAD
    try:
        listeners = binds.listeners_for(config)
    except binds.BindError as exc:
        print(f"flash: {exc}", file=sys.stderr)
        return EXIT_BIND
    announce(engine_cls.name, listeners, args.app)
    try:
        startup.serve(engine_cls, config, app, listeners)
    finally:
        binds.close_all(listeners)
    log.info("stopped")
    return 0


def _watch_and_restart(args: argparse.Namespace, argv: list[str], config: Config, started_in: str) -> int:
    """--reload: this process watches; a child started from `started_in` serves."""
    files = [os.path.abspath(path) for path in args.reload_extra_file]
    if args.config:
        files.append(os.path.join(started_in, args.config))  # it was read before --chdir
    if config.reuse_port:
        print("flash: --reload hands every server it starts the sockets it opened once; "
              "--reuse-port (a socket per worker) cannot apply: drop one of them", file=sys.stderr)
        return 2
    try:
        listeners = binds.listeners_for(config)
    except binds.BindError as exc:
        print(f"flash: {exc}", file=sys.stderr)
        return EXIT_BIND
    return reload.Reloader(["serve", *argv], listeners, files, config.graceful_timeout, cwd=started_in).run()


def _serve_supervised(engine_cls, config: Config, args: argparse.Namespace) -> int:
    try:
        return supervisor.run(engine_cls, config, args.app, args.factory)
    except binds.BindError as exc:
        print(f"flash: {exc}", file=sys.stderr)
        return EXIT_BIND


def _one_line(exc: BaseException) -> str:
    """An operator's mistake as one line (a missing file names the file)."""
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__


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
    serve_argv = argv[argv.index(args.command) + 1:]
    serve_parser = argparse.ArgumentParser(prog="python -m flash_green serve")
    add_serve_arguments(serve_parser)
    try:
        args = settings.resolve(serve_parser, serve_argv)
    except settings.SettingsError as exc:
        print(f"flash: {exc}", file=sys.stderr)
        return 2
    return serve(args, serve_argv)
