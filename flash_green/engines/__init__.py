"""The engine registry: a short name -> the class of one concurrency model.

An engine joins the study by adding one line here (in study order: v1 -> v5,
then tasklets, greenlet, gevent, eventlet, asyncio, then the process models).
Modules are imported only when asked for, so a missing optional dependency
breaks only its own engine, with one clear line. Only a package named in
OPTIONAL_PACKAGES counts as "missing": any other ImportError - a bug in one
of our own modules, a name that moved - propagates, so a broken engine
fails loudly instead of looking merely unavailable.
"""

from __future__ import annotations

import importlib

from .base import Capabilities, Engine

REGISTRY: dict[str, str] = {
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
    "prefork": "flash_green.engines.prefork:PreforkEngine",
    "worker": "flash_green.engines.worker:WorkerEngine",
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


__all__ = ["Capabilities", "Engine", "EngineUnavailable", "OPTIONAL_PACKAGES", "REGISTRY", "get",
           "missing_optional_package", "names"]
