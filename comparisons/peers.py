"""Reference servers ("peers"): what Flash's engines are measured against.

A peer is a well-known Python WSGI server serving the same demo app under
the same scenarios. Peers are reference rows, labelled as such in every
table; they are not part of the study, they keep it honest.

Fairness rules, applied to every peer:

* The listening socket is created by the comparison harness with
  ``TCP_NODELAY`` set (Linux copies it to every accepted socket) and handed
  to the peer as an inherited file descriptor. Without it, a server that
  writes the response head and body separately pays Nagle + delayed ACK
  (~40 ms per keep-alive request) and would be measured for a kernel
  setting, not for its design.
* Access logs are off (Flash's engines do not log by default either).
* Connection limits that would refuse the c=1000 and idle-connection
  scenarios outright are raised, and said so in ``settings``.
* Green servers run monkey-patched, as they are deployed.

``python -m comparisons.peers NAME --fd N --app MODULE:CALLABLE`` runs the
peers that have no CLI of their own (gevent.pywsgi, eventlet.wsgi,
waitress) on an inherited socket; gunicorn and uvicorn are run through
their own command lines.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Peer:
    """One reference server and how to start it on an inherited listening socket."""

    name: str
    #: Top-level package that must be importable.
    package: str
    #: The settings, as the report shows them.
    settings: str
    #: Serves several clients at once (decides the c=10,000 level, as for engines).
    concurrent: bool
    #: Uses several processes (the CPU scenario's "processes" side).
    parallel: bool
    #: (fd, app, keep_alive seconds) -> argv.
    build: Callable[[int, str, float], list[str]]

    @property
    def label(self) -> str:
        return f"peer:{self.name}"

    def available(self) -> str | None:
        """None if it can run here, else why not (one line)."""
        if importlib.util.find_spec(self.package) is None:
            return f"peer {self.name} skipped: package {self.package!r} is not installed"
        return None

    def command(self, fd: int, app: str, keep_alive: float) -> list[str]:
        return self.build(fd, app, keep_alive)


def _runner(name: str) -> Callable[[int, str, float], list[str]]:
    def build(fd: int, app: str, keep_alive: float) -> list[str]:
        return [sys.executable, "-m", "comparisons.peers", name, "--fd", str(fd), "--app", app,
                "--keep-alive", str(keep_alive)]
    return build


def _gunicorn(*worker_args: str) -> Callable[[int, str, float], list[str]]:
    def build(fd: int, app: str, keep_alive: float) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "--bind", f"fd://{fd}", *worker_args,
                "--keep-alive", str(max(1, round(keep_alive))), "--log-level", "warning",
                "--graceful-timeout", "1", app]
    return build


def _uvicorn(fd: int, app: str, keep_alive: float) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "--fd", str(fd), "--interface", "wsgi",
            "--timeout-keep-alive", str(max(1, round(keep_alive))), "--log-level", "warning",
            "--no-access-log", "--limit-concurrency", "100000", app]


PEERS: tuple[Peer, ...] = (
    Peer("gevent.pywsgi", "gevent", "1 process, monkey-patched, no access log", True, False,
         _runner("gevent.pywsgi")),
    Peer("eventlet.wsgi", "eventlet", "1 process, monkey-patched, no access log", True, False,
         _runner("eventlet.wsgi")),
    Peer("gunicorn-sync", "gunicorn", "-k sync -w 2 (one request at a time per worker, no keep-alive)",
         False, True, _gunicorn("-k", "sync", "-w", "2")),
    Peer("gunicorn-gthread", "gunicorn", "-k gthread -w 2 --threads 4", True, True,
         _gunicorn("-k", "gthread", "-w", "2", "--threads", "4", "--worker-connections", "10000")),
    Peer("gunicorn-gevent", "gunicorn", "-k gevent -w 1 --worker-connections 10000", True, False,
         _gunicorn("-k", "gevent", "-w", "1", "--worker-connections", "10000")),
    Peer("waitress", "waitress", "threads=4, connection_limit=10000, poll (not select)", True, False,
         _runner("waitress")),
    Peer("uvicorn-wsgi", "uvicorn", "--interface wsgi (handlers in a thread pool), uvloop if installed",
         True, False, _uvicorn),
)


def available_peers(names: Sequence[str] | None = None) -> tuple[list[Peer], list[str]]:
    """The peers that can run here (optionally only ``names``) and one skip line per other."""
    chosen = [p for p in PEERS if names is None or p.name in names]
    if names is not None:
        unknown = set(names) - {p.name for p in PEERS}
        if unknown:
            raise ValueError(f"unknown peers {sorted(unknown)}; known: {[p.name for p in PEERS]}")
    runnable, skipped = [], []
    for peer in chosen:
        reason = peer.available()
        if reason is None and peer.package in ("gunicorn", "uvicorn") and not _has_console(peer.package):
            reason = f"peer {peer.name} skipped: {peer.package} cannot run as a module"
        (skipped.append(reason) if reason else runnable.append(peer))
    return runnable, skipped


def _has_console(package: str) -> bool:
    return importlib.util.find_spec(f"{package}.__main__") is not None or shutil.which(package) is not None


# ---------------------------------------------------------------------------
# The runner for peers without a CLI of their own
# ---------------------------------------------------------------------------


def _announce(sock: socket.socket, name: str) -> None:
    host, port = sock.getsockname()[:2]
    print(f"peer: {name} listening on http://{host}:{port} pid={os.getpid()}", flush=True)


def _serve_gevent(sock: socket.socket, app_spec: str, keep_alive: float) -> None:
    from gevent import monkey

    monkey.patch_all()
    from gevent.pywsgi import WSGIServer

    app = _load(app_spec)  # after patching, so the app's blocking calls cooperate
    _announce(sock, "gevent.pywsgi")
    WSGIServer(socket.socket(fileno=sock.detach()), app, log=None).serve_forever()


def _serve_eventlet(sock: socket.socket, app_spec: str, keep_alive: float) -> None:
    import eventlet

    eventlet.monkey_patch()
    import eventlet.wsgi

    app = _load(app_spec)  # after patching, so the app's blocking calls cooperate
    _announce(sock, "eventlet.wsgi")
    eventlet.wsgi.server(socket.socket(fileno=sock.detach()), app, log_output=False,
                         keepalive=keep_alive, max_size=100_000)


def _serve_waitress(sock: socket.socket, app_spec: str, keep_alive: float) -> None:
    import waitress

    app = _load(app_spec)
    _announce(sock, "waitress")
    waitress.serve(app, sockets=[sock], threads=4, connection_limit=10_000, asyncore_use_poll=True,
                   channel_timeout=max(1, round(keep_alive)), _quiet=True)


_RUNNERS: dict[str, Callable[[socket.socket, str, float], None]] = {
    "gevent.pywsgi": _serve_gevent,
    "eventlet.wsgi": _serve_eventlet,
    "waitress": _serve_waitress,
}


def _load(spec: str) -> Callable:
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return getattr(importlib.import_module(module_name), attr or "application")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comparisons.peers", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(_RUNNERS))
    parser.add_argument("--fd", type=int, required=True, help="inherited listening socket")
    parser.add_argument("--app", default="flash_green.apps.demo:app")
    parser.add_argument("--keep-alive", type=float, default=5.0, help="idle keep-alive seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        _RUNNERS[args.name](socket.socket(fileno=args.fd), args.app, args.keep_alive)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
