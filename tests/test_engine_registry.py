"""The engine registry tells "an optional package is missing" (a skip) from
"the engine is broken" (an error that must fail the suite)."""

from __future__ import annotations

import importlib

import pytest

from flash_green import engines


def importing_raises(monkeypatch, exc: ImportError) -> None:
    def import_module(name):
        raise exc
    monkeypatch.setattr(engines.importlib, "import_module", import_module)


@pytest.mark.parametrize("missing", ["greenlet", "gevent", "eventlet", "uvloop", "django.core"])
def test_a_missing_optional_package_makes_the_engine_unavailable(monkeypatch, missing):
    importing_raises(monkeypatch, ModuleNotFoundError(f"No module named {missing!r}", name=missing))
    with pytest.raises(engines.EngineUnavailable, match=f"pip install {missing.partition('.')[0]}"):
        engines.get("gevent")


@pytest.mark.parametrize("exc", [
    ModuleNotFoundError("No module named 'flash_green.engines.nope'", name="flash_green.engines.nope"),
    ModuleNotFoundError("No module named 'requests'", name="requests"),
    ImportError("cannot import name 'Nope' from 'flash_green.engines.base'", name="flash_green.engines.base"),
], ids=["our-module", "undeclared-package", "bad-name"])
def test_any_other_import_error_propagates(monkeypatch, exc):
    importing_raises(monkeypatch, exc)
    with pytest.raises(ImportError) as raised:
        engines.get("epoll")
    assert raised.value is exc and not isinstance(raised.value, engines.EngineUnavailable)


@pytest.mark.parametrize("name, engine, threads", [
    ("prefork", "flash_green.engines.sequential:SequentialEngine", False),
    ("worker", "flash_green.engines.pool:PoolEngine", True),
])
def test_a_composition_is_its_engine_under_the_supervisor(name, engine, threads):
    """prefork and worker are registry entries (supervisor x an engine), not
    modules: each process runs the engine's code under the composition's
    name, with its process count and what that many processes can do."""
    entry = engines.REGISTRY[name]
    assert isinstance(entry, engines.Supervised) and entry.engine == engine
    module, _, attr = engine.partition(":")
    composed, inner = engines.get(name), getattr(importlib.import_module(module), attr)
    assert issubclass(composed, inner) and composed.serve is inner.serve
    assert (composed.name, composed.processes) == (name, entry.processes)
    assert composed.capabilities == inner.capabilities.supervised(entry.processes)
    caps = composed.capabilities
    assert caps.multiprocess and caps.parallel and caps.concurrent and caps.threads is threads
    assert inner.processes == 0 and not inner.capabilities.multiprocess
    assert engines.get(name) is composed


def test_a_missing_engine_of_a_composition_is_named_by_the_composition(monkeypatch):
    importing_raises(monkeypatch, ModuleNotFoundError("No module named 'gevent'", name="gevent"))
    monkeypatch.setitem(engines.REGISTRY, "gevent-prefork",
                        engines.Supervised("flash_green.engines.gevent:GeventEngine", 2, "x"))
    with pytest.raises(engines.EngineUnavailable, match="engine 'gevent-prefork' needs the package 'gevent'"):
        engines.get("gevent-prefork")
