"""Fixtures of the cross-engine suite: every registered engine, as a real process.

A new engine joins the suite by registering itself in
`flash_green.engines.REGISTRY`; `suite_targets()` then runs every test of
`test_engines.py` against it. Extra targets run an engine the ways people
deploy it: a hybrid (N worker processes of an in-process engine), a patched
green engine, the tasklets engine serving tasklet handlers, asyncio serving
an async app.

Only a missing optional third-party package (`engines.OPTIONAL_PACKAGES`)
skips a target, with its reason; an engine that fails to import for any
other reason errors in every test that uses it.

Every server started here has its stderr read after each test: a traceback,
a wsgiref.validate warning, an unclosed iterator or an ERROR line fails the
test unless the test declares it with `@pytest.mark.expected_log(regex, ...)`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from comparisons.nginx import self_signed_certificate
from flash_green import engines

from .serverproc import ServerProcess

SUITE_APP = "tests.suite_app:app"


@dataclass(frozen=True)
class Target:
    """One way of running the suite's server: an engine, its options and its app."""

    engine: str
    args: tuple[str, ...] = field(default=())
    app: str = SUITE_APP
    #: Names the app variant in the test id ("tasklet-app").
    variant: str = ""
    #: Optional packages this way of running needs besides the engine's own.
    needs: tuple[str, ...] = field(default=())
    #: The app's /hold waits cooperatively (tasklet or async handler): it does
    #: not hold the loop even where a blocking handler would.
    cooperative_hold: bool = False

    @property
    def id(self) -> str:
        extras = [*self.args, *([self.variant] if self.variant else [])]
        return self.engine + ("[" + " ".join(extras) + "]" if extras else "")

    def require(self) -> None:
        """Skip, with the reason, when an optional package is missing; any
        other failure to import the engine propagates and fails the test."""
        for package in self.needs:
            if importlib.util.find_spec(package) is None:
                pytest.skip(f"{self.id} needs the package {package!r}: pip install {package}")
        require_engine(self.engine)

    def capabilities(self) -> engines.Capabilities:
        caps = engines.get(self.engine).capabilities
        return caps.supervised(self.workers) if self.hybrid else caps

    def handler_stalls(self) -> bool:
        """A request busy in /hold keeps every other client of its process waiting."""
        return self.capabilities().blocking_handler_stalls and not self.cooperative_hold

    @property
    def hybrid(self) -> bool:
        return "--workers" in self.args

    @property
    def workers(self) -> int:
        """Processes serving requests (1 for an in-process engine)."""
        if self.hybrid:
            return int(self.args[self.args.index("--workers") + 1])
        return engines.get(self.engine).processes or 1


def require_engine(name: str) -> type[engines.Engine]:
    """The engine class; a visible skip if an optional package is missing."""
    try:
        return engines.get(name)
    except engines.EngineUnavailable as exc:
        pytest.skip(str(exc))


def engine_params(select=lambda caps: True) -> list:
    """One pytest param per registered engine whose capabilities pass `select`.

    An engine missing an optional package is a skip with its reason. One
    that fails to import for another reason is kept whatever `select` says:
    the test's own `require_engine` then raises the import error, so the
    breakage fails that test instead of stopping the collection.
    """
    params = []
    for name in engines.names():
        try:
            cls = engines.get(name)
        except engines.EngineUnavailable as exc:
            params.append(pytest.param(name, marks=pytest.mark.skip(reason=str(exc)), id=name))
            continue
        except ImportError:
            params.append(pytest.param(name, id=name))
            continue
        if select(cls.capabilities):
            params.append(pytest.param(name, id=name))
    return params


#: Options every suite server gets. The idle keep-alive is long on purpose:
#: a test that expects the server to close a connection at once reads the
#: close within CLOSE_BOUND, long before an idle timeout could close it for
#: an engine that ignored the reason to close. The body limit lies between
#: the 10 MB upload test and the 413 test.
SUITE_ARGS = ("--keep-alive", "20", "--header-timeout", "2", "--graceful-timeout", "10",
              "--max-body-size", str(16 * 1024 * 1024), "--log-level", "info")

#: Seconds a client waits for a close the server owes at once (after
#: `Connection: close`, HTTP/1.0, a 4xx): far below the suite's keep-alive.
CLOSE_BOUND = 5.0

#: Ways people deploy an engine, run through the whole suite besides the
#: plain engines.
EXTRA_TARGETS: list[Target] = [
    Target("sequential", ("--workers", "2")),
    Target("tasklets", ("--workers", "2")),
    # The asyncio engine on uvloop: another loop, other transports.
    Target("asyncio", ("--uvloop",), needs=("uvloop",)),
    # Monkey-patched: the app's blocking calls become cooperative.
    Target("gevent", ("--patch",), cooperative_hold=True),
    Target("eventlet", ("--patch",), cooperative_hold=True),
    # Function-coloured apps: some routes are tasklet handlers / coroutines.
    Target("tasklets", app="tests.tasklet_suite_app:suite_app", variant="tasklet-app",
           cooperative_hold=True),
    Target("asyncio", app="tests.async_suite_app:app", variant="async-app",
           cooperative_hold=True),
]


def suite_targets() -> list:
    targets = [Target(name) for name in engines.names()]
    targets += [t for t in EXTRA_TARGETS if t.engine in engines.REGISTRY]
    return [pytest.param(t, id=t.id) for t in targets]


@pytest.fixture(scope="session")
def certificate() -> Iterator[tuple[str, str]]:
    """(certfile, keyfile) of a throw-away self-signed certificate for
    127.0.0.1, made once per session with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command (a system tool) is needed to make the test certificate")
    with tempfile.TemporaryDirectory(prefix="flash-tls-") as directory:
        yield self_signed_certificate(directory)


@pytest.fixture(scope="session")
def hold_dir():
    with tempfile.TemporaryDirectory(prefix="flash-hold-") as path:
        yield path


#: Servers started by `start_server` whose logs are still to be checked.
_watched: list[ServerProcess] = []


def start_server(target: Target, hold_dir: str, *extra: str) -> ServerProcess:
    """Start `target` with the suite's options (then `extra`); its log is checked after each test."""
    os.environ["FLASH_TEST_HOLD_DIR"] = hold_dir
    proc = ServerProcess(target.engine, app=target.app, args=[*SUITE_ARGS, *target.args, *extra])
    _watched.append(proc)
    return proc.start()


@pytest.fixture(scope="module", params=suite_targets())
def target(request) -> Target:
    request.param.require()
    return request.param


@pytest.fixture(scope="module")
def server_args(request) -> tuple[str, ...]:
    """A test module's options for its servers: its SERVER_ARGS, or what its
    own `server_args` fixture computes (options naming files made by fixtures)."""
    return tuple(getattr(request.module, "SERVER_ARGS", ()))


@pytest.fixture(scope="module")
def server(target, hold_dir, server_args):
    """One server per engine per test module (plus the module's `server_args`);
    stopped (and checked) at the end."""
    proc = start_server(target, hold_dir, *server_args)
    yield proc
    code = proc.stop()
    assert code == 0, f"server exited with {code}\n{proc.log()}"
    problems = log_problems(proc, [])
    assert not problems, "the server logged, after the module's last test:\n" + problems


# -- server logs --------------------------------------------------------------------

#: What fails a test when found in its server's log.
_ALARMS = re.compile(
    r"Traceback \(most recent call last\)|WSGIWarning|Exception ignored in"
    r"|iterator (?:was )?not closed|without being closed|\[(?:ERROR|CRITICAL)\]"
)
#: The first line of a log record (the CLI's format); other lines continue one.
_RECORD_START = re.compile(r"^\[\d{4}-\d\d-\d\d [^\]]*\] \[\d+\] \[[A-Z]+\] ", re.M)


def log_records(text: str) -> list[str]:
    """Split a server log into records: a logging line with its traceback,
    or a run of raw stderr lines (an excepthook's traceback, a warning)."""
    starts = [m.start() for m in _RECORD_START.finditer(text)]
    bounds = [0, *starts, len(text)] if not starts or starts[0] else [*starts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:]) if text[a:b].strip()]


def log_problems(proc: ServerProcess, expected: list[re.Pattern]) -> str:
    """The records of `proc`'s log written since the last check that raise an
    alarm and match none of `expected`; advances the checked mark."""
    end = proc.log_size()
    text = proc.log_since(proc.log_checked, end)
    proc.log_checked = end
    bad = [record for record in log_records(text)
           if _ALARMS.search(record) and not any(p.search(record) for p in expected)]
    return "".join(bad)[-8000:]


@pytest.fixture(autouse=True)
def server_log_is_clean(request):
    """Fail a cross-engine test (one using `target`) whose servers logged a
    traceback, a WSGI warning or an error it did not declare with
    `@pytest.mark.expected_log(regex, ...)`."""
    yield
    cross_engine = "target" in request.fixturenames
    expected = [re.compile(pattern) for marker in request.node.iter_markers("expected_log")
                for pattern in marker.args]
    report = []
    for proc in list(_watched):
        problems = log_problems(proc, expected)
        if problems and cross_engine:
            report.append(f"--- {proc.engine} {' '.join(proc.args)}\n{problems}")
        if proc.proc is not None and not proc.running:
            _watched.remove(proc)
    if report:
        pytest.fail("unexpected lines in the server log during this test:\n" + "\n".join(report),
                    pytrace=False)
