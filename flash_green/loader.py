"""Loading the WSGI app named on the command line."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable

DEFAULT_APP = "flash_green.apps.demo:app"


class AppLoadError(Exception):
    """The app could not be imported or is not callable (exit code 4)."""


def load_app(spec: str, factory: bool = False) -> Callable:
    """`module:callable` (or `module` -> `module:application`) -> the app.

    With `factory`, the named callable is called with no arguments and its
    return value is the app (Flask's create_app pattern).
    """
    module_name, _, attr = spec.partition(":")
    attr = attr or "application"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppLoadError(f"cannot import {module_name!r}: {exc.__class__.__name__}: {exc}") from exc
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if factory:
        try:
            app = app()
        except Exception as exc:
            raise AppLoadError(f"factory {spec!r} failed: {exc}") from exc
    if not callable(app):
        raise AppLoadError(f"{spec!r} is not callable")
    return app

