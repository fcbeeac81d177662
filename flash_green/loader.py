"""Loading the WSGI app named on the command line.

Below the engines (which reload the app in place on HUP) and the start-up
path; it knows nothing of the CLI. A tool that must know what loading the
app imported - `--reload` watches those files - adds an observer to
`LOAD_OBSERVERS` instead of being called from here.
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
import traceback
from types import ModuleType
from typing import Callable

DEFAULT_APP = "flash_green.apps.demo:app"


class AppLoadError(Exception):
    """The app could not be imported or is not callable (exit code 4)."""


#: Called after every attempt to load the app, with the AppLoadError when it
#: failed (None when it loaded).
LOAD_OBSERVERS: list[Callable[[AppLoadError | None], None]] = []


def load_app(spec: str, factory: bool = False) -> Callable:
    """`module:callable` (or `module` -> `module:application`) -> the app.

    The callable part may be a call, as gunicorn accepts:
    `module:create_app()` or `module:create_app("prod", workers=2)` calls the
    factory with those arguments, which must be Python literals (the text is
    parsed with `ast`, never evaluated). With `factory`, a plain name is
    called with no arguments (Flask's create_app pattern).
    """
    try:
        app = _load(spec, factory)
    except AppLoadError as exc:
        _tell_observers(exc)
        raise
    _tell_observers(None)
    return app


def _tell_observers(error: AppLoadError | None) -> None:
    for observe in LOAD_OBSERVERS:
        observe(error)


def _load(spec: str, factory: bool) -> Callable:
    module_name, _, expression = spec.partition(":")
    name, call = parse_app_expression(expression or "application", spec)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = _import(module_name)
    try:
        app = getattr(module, name)
    except AttributeError:
        raise AppLoadError(f"module {module_name!r} has no attribute {name!r}") from None
    if call is None and factory:
        call = ((), {})
    if call is not None:
        args, kwargs = call
        if not callable(app):
            raise AppLoadError(f"{module_name}:{name} is not callable, so it cannot be a factory")
        try:
            app = app(*args, **kwargs)
        except Exception as exc:
            raise AppLoadError(f"factory {spec!r} failed: {_describe(exc)}") from exc
    if not callable(app):
        raise AppLoadError(f"{spec!r} is not callable (it is {type(app).__name__})")
    return app


def parse_app_expression(expression: str, spec: str) -> tuple[str, tuple[tuple, dict] | None]:
    """`name` -> (name, None); `name(args)` -> (name, (args, kwargs)) of literals."""
    try:
        tree = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        raise AppLoadError(f"{spec!r}: {expression!r} is neither a name nor a call "
                           "like create_app() or create_app('x', n=2)") from None
    if isinstance(tree, ast.Name):
        return tree.id, None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name)):
        raise AppLoadError(f"{spec!r}: after ':' give a name or a call of a name, like create_app()")
    try:
        args = tuple(ast.literal_eval(arg) for arg in tree.args)
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in tree.keywords if kw.arg}
    except ValueError:
        raise AppLoadError(f"{spec!r}: factory arguments must be literals (strings, numbers, "
                           "lists...), not names or expressions") from None
    if len(kwargs) != len(tree.keywords):
        raise AppLoadError(f"{spec!r}: **kwargs is not accepted in a factory call")
    return tree.func.id, (args, kwargs)


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            raise AppLoadError(f"cannot import {module_name!r}: no such module (looked in "
                               f"{os.getcwd()} and sys.path; see --chdir, --pythonpath)") from exc
        raise AppLoadError(f"cannot import {module_name!r}: {_describe(exc)}") from exc
    except Exception as exc:
        raise AppLoadError(f"cannot import {module_name!r}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    """`Type: message (file, line N)`: where the app's own code raised."""
    text = f"{exc.__class__.__name__}: {exc}"
    if isinstance(exc, SyntaxError):
        return text
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "importlib" not in f.filename and f.filename != __file__]
    if own:
        text += f" ({own[-1].filename}, line {own[-1].lineno})"
    return text
