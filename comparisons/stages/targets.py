"""What the stage table runs: every engine at the concurrency its model can serve, and the peers.

Engines that serve many connections at once run at the run's concurrency
(c=100 by default). The others run at the concurrency their model serves,
said in their label: at c=100 wrk would hold 100 keep-alive connections and
all but the first few would wait in the backlog until wrk's timeout, so the
figure would be of timeouts, not of work.

The peers are the issue's reference points: the raw epoll loop with a
canned reply (comparisons/canned.py: no parsing, the ceiling of a Python
server), uvicorn with httptools on uvloop (ASGI hello) and gevent.pywsgi.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass

from comparisons import bench_green, bench_inprocess
from comparisons.bench_inprocess import Server
from flash_green import engines


@dataclass(frozen=True)
class Target:
    """One row: the server, whether its CPU splits into the stages, and why not."""

    server: Server
    #: Runs in one process that py-spy can sample (with its workers).
    children: bool = False
    #: None: split into stages; else why the row gives the total only.
    no_split: str | None = None
    peer: bool = False

    @property
    def label(self) -> str:
        return self.server.label


#: engine, options, its concurrency (None: the run's), why that one.
ENGINES: tuple[tuple[str, tuple[str, ...], int | None, str], ...] = (
    ("sequential", (), 1, "serves one connection at a time"),
    ("cgi", (), 2, "a Python interpreter starts per request"),
    ("threaded", (), None, ""),
    ("epoll", (), None, ""),
    ("event", ("--threads", "4"), None, ""),
    ("tasklets", (), None, ""),
    ("greenlet", (), None, ""),
    ("gevent", (), None, ""),
    ("eventlet", (), None, ""),
    ("asyncio", (), None, ""),
    ("asyncio", ("--uvloop",), None, ""),
    ("prefork", (), 2, "2 workers, one connection each"),
    ("worker", (), 8, "2 workers x 4 threads"),
)
CANNED = "raw epoll canned"
UVICORN = "uvicorn httptools uvloop"
GEVENT_PYWSGI = "gevent.pywsgi"
#: Why the peers other than the canned loop have no split.
PEER_NO_SPLIT = ("not our code: its parsing and socket calls run in C (httptools, uvloop, gevent's "
                 "compiled sockets), where Python stack samples cannot see them: total only")
#: Why CGI has no split: its stages run in a child that lives one request.
CGI_NO_SPLIT = ("fork + exec + interpreter start-up per request (milliseconds of CPU against "
                "tens of microseconds for all the stages): the split would be rounding error, "
                "and the stages run in a child too short-lived to sample")


def engine_targets(names: list[str] | None = None) -> tuple[list[Target], list[str]]:
    """The engine rows (only `names`, labels or engine names, if given) and a line per one skipped."""
    chosen, skipped = [], []
    for engine, options, connections, why in ENGINES:
        server = bench_inprocess.flash_server(engine, *options)
        if connections is not None:
            server = Server(f"{server.label} (c={connections}: {why})", server.argv, connections)
        if names and engine not in names and server.label not in names:
            continue
        try:
            caps = engines.get(engine).capabilities
        except engines.EngineUnavailable as exc:
            skipped.append(f"{server.label} skipped: {exc}")
            continue
        chosen.append(Target(server, children=caps.multiprocess or caps.fork_per_request,
                             no_split=CGI_NO_SPLIT if caps.fork_per_request else None))
    return chosen, skipped


def peer_targets() -> tuple[list[Target], list[str]]:
    chosen = [Target(bench_inprocess.peer_server(CANNED), peer=True)]
    skipped = []
    for name in (UVICORN, GEVENT_PYWSGI):
        missing = [p for p in bench_green.PEERS[name] if importlib.util.find_spec(p) is None]
        if missing:
            skipped.append(f"peer {name} skipped: {', '.join(missing)} not installed")
        else:
            chosen.append(Target(bench_green.peer_server(name), no_split=PEER_NO_SPLIT, peer=True))
    return chosen, skipped


def many_connections(target: Target, count: int) -> Target:
    """The same engine, able to hold `count` keep-alive connections at once."""
    server = target.server
    options = bench_inprocess.idle_options(server, count)
    return Target(Server(server.label, (*server.argv, *options), count), target.children,
                  target.no_split, target.peer)


def report_skipped(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)
