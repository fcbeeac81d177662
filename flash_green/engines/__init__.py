"""The engine registry: a short name -> the class of one concurrency model.

An engine joins the study by adding one line here (in study order: v1 -> v5,
then tasklets, greenlet, gevent, eventlet, asyncio, then the process models).
Modules are imported only when asked for, so a missing optional dependency
breaks only its own engine, with one clear line. Only a package named in
OPTIONAL_PACKAGES counts as "missing": any other ImportError - a bug in one
of our own modules, a name that moved - propagates, so a broken engine
fails loudly instead of looking merely unavailable.

The process models are not modules but compositions (`Supervised`): the
supervisor (`flash_green.supervisor`, a layer above this one) running N
processes of an in-process engine. `get` gives such an entry as the class
each of its processes runs: that engine under the composition's name, with
what N processes of it can do together (`Capabilities.supervised`).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

from .base import Capabilities, Engine


@dataclass(frozen=True)
class Supervised:
    """A registry entry made of processes: the supervisor x an in-process engine."""

    #: "module:Class" of the engine every process runs.
    engine: str
    #: Processes when --workers is not given.
    processes: int
    #: The line of `python -m flash_green engines`; `{processes}` and
    #: `{engine}` (the engine class) are filled in.
    summary: str


REGISTRY: dict[str, str | Supervised] = {
    "sequential": "flash_green.engines.sequential:SequentialEngine",
    "cgi": "flash_green.engines.cgi:CGIEngine",
    "threaded": "flash_green.engines.threaded:ThreadedEngine",
    "epoll": "flash_green.engines.epoll:EpollEngine",
    "event": "flash_green.engines.event:EventEngine",
    "tasklets": "flash_green.engines.tasklets:TaskletsEngine",
    "greenlet": "flash_green.engines.greenlet:GreenletEngine",
    "gevent": "flash_green.engines.gevent:GeventEngine",
    "eventlet": "flash_green.engines.eventlet:EventletEngine",
    "asyncio": "flash_green.engines.asyncio:AsyncioEngine",
    "prefork": Supervised(
        "flash_green.engines.sequential:SequentialEngine", processes=2,
        summary="supervisor x sequential: N processes (default {processes}), one connection each; "
                "parallel and crash-isolated, one process per client"),
    "worker": Supervised(
        "flash_green.engines.pool:PoolEngine", processes=2,
        summary="supervisor x thread pool: N processes (default {processes}) x T threads "
                "(default {engine.default_threads}); parallel, N x T connections at once"),
}


#: Third-party packages an engine (or a test target) may run without: their
#: absence makes the engine unavailable, not broken. greenlet, gevent and
#: eventlet are dependencies of the project but C extensions whose wheels can
#: be missing on a platform; uvloop and the peers are extras; Django and
#: Falcon serve only the test suite.
OPTIONAL_PACKAGES = frozenset({
    "greenlet", "gevent", "eventlet", "uvloop",
    "httptools", "uvicorn", "waitress", "gunicorn",
    "django", "falcon",
})


class EngineUnavailable(RuntimeError):
    """The engine exists but cannot run here: an optional package is missing."""


def missing_optional_package(exc: ImportError) -> str | None:
    """The optional package whose absence raised `exc`, or None for any other cause."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    package = exc.name.partition(".")[0]
    return package if package in OPTIONAL_PACKAGES else None


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str) -> type[Engine]:
    """The engine class for `name`; KeyError with the known names if unknown."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown engine {name!r}; known: {', '.join(REGISTRY)}") from None
    if isinstance(target, Supervised):
        return _composed(name, target, _load(name, target.engine))
    return _load(name, target)


@functools.cache
def _composed(name: str, entry: Supervised, engine: type[Engine]) -> type[Engine]:
    """The class each process of the composition `name` runs: `engine`'s code
    under the composition's name, summary, process count and capabilities."""
    return type(f"{name.capitalize()}Engine", (engine,), {
        "__module__": __name__,
        "__doc__": f"{name}: the supervisor x {engine.name} ({engine.__name__} in every process).",
        "name": name,
        "summary": entry.summary.format(processes=entry.processes, engine=engine),
        "processes": entry.processes,
        "capabilities": engine.capabilities.supervised(entry.processes),
    })


def _load(name: str, target: str) -> type[Engine]:
    """The class at "module:Class"; EngineUnavailable if an optional package is missing."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = missing_optional_package(exc)
        if missing is None:
            raise
        raise EngineUnavailable(
            f"engine {name!r} needs the package {missing!r}: pip install {missing}"
        ) from None
    return getattr(module, attr)


__all__ = ["Capabilities", "Engine", "EngineUnavailable", "OPTIONAL_PACKAGES", "REGISTRY", "Supervised",
           "get", "missing_optional_package", "names"]
