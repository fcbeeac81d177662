"""Fixtures of the cross-engine suite: every registered engine, as a real process.

A new engine joins the suite by registering itself in
`flash_green.engines.REGISTRY`; `SUITE_TARGETS` then runs every test of
`test_engines.py` against it. Extra targets run an engine with options, e.g.
a hybrid (N worker processes of an in-process engine).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass, field

import pytest

from flash_green import engines

from .serverproc import ServerProcess


@dataclass(frozen=True)
class Target:
    """One way of running the suite's server: an engine plus its options."""

    engine: str
    args: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return self.engine + ("[" + " ".join(self.args) + "]" if self.args else "")

    def capabilities(self) -> engines.Capabilities:
        caps = engines.get(self.engine).capabilities
        if self.hybrid:
            from flash_green.supervisor import supervised_capabilities
            caps = supervised_capabilities(caps, int(self.args[self.args.index("--workers") + 1]))
        return caps

    @property
    def hybrid(self) -> bool:
        return "--workers" in self.args


#: Options every suite server gets: short timeouts keep the suite fast, a body
#: limit between the 10 MB upload test and the 413 test.
SUITE_ARGS = ("--keep-alive", "1", "--header-timeout", "2", "--graceful-timeout", "10",
              "--max-body-size", str(16 * 1024 * 1024), "--log-level", "info")

#: Hybrids: N processes of an in-process engine under the supervisor.
EXTRA_TARGETS: list[Target] = [
    Target("sequential", ("--workers", "2")),
    # The asyncio engine on uvloop: another loop, other transports (skipped
    # without uvloop: the engine then refuses --uvloop and fails to start).
    *([Target("asyncio", ("--uvloop",))] if importlib.util.find_spec("uvloop") else []),
]


def suite_targets() -> list:
    params = []
    for name in engines.names():
        try:
            engines.get(name)
        except engines.EngineUnavailable as exc:
            params.append(pytest.param(Target(name), marks=pytest.mark.skip(reason=str(exc)), id=name))
            continue
        params.append(pytest.param(Target(name), id=name))
    for target in EXTRA_TARGETS:
        if target.engine in engines.REGISTRY:
            params.append(pytest.param(target, id=target.id))
    return params


@pytest.fixture(scope="session")
def hold_dir():
    with tempfile.TemporaryDirectory(prefix="flash-hold-") as path:
        yield path


def start_server(target: Target, hold_dir: str, *extra: str) -> ServerProcess:
    os.environ["FLASH_TEST_HOLD_DIR"] = hold_dir
    return ServerProcess(target.engine, args=[*SUITE_ARGS, *target.args, *extra]).start()


@pytest.fixture(scope="module", params=suite_targets())
def target(request) -> Target:
    return request.param


@pytest.fixture(scope="module")
def server(target, hold_dir):
    """One server per engine per test module; stopped (and checked) at the end."""
    proc = start_server(target, hold_dir)
    yield proc
    code = proc.stop()
    assert code == 0, f"server exited with {code}\n{proc.log()}"
