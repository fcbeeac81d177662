"""The engine registry: a short name -> the class of one concurrency model.

An engine joins the study by adding one line here (in study order: v1 -> v5,
then tasklets, greenlet, gevent, eventlet, asyncio, then the process models).
Modules are imported only when asked for, so a missing optional dependency
breaks only its own engine, with one clear line.
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


class EngineUnavailable(RuntimeError):
    """The engine exists but cannot run here (e.g. its package is missing)."""


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
    except ImportError as exc:
        missing = exc.name or str(exc)
        raise EngineUnavailable(
            f"engine {name!r} needs the package {missing!r}: pip install {missing}"
        ) from None
    return getattr(module, attr)


__all__ = ["Capabilities", "Engine", "EngineUnavailable", "REGISTRY", "get", "names"]
