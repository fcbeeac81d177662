"""The engine registry tells "an optional package is missing" (a skip) from
"the engine is broken" (an error that must fail the suite)."""

from __future__ import annotations

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
