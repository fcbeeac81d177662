"""Where the `serve` options come from: command line > FLASH_CMD_ARGS > config file > defaults.

A config file (`-c FILE`) is Python (`*.py`, run as a script: `bind =
"127.0.0.1:8000"`, `workers = 2`) or TOML (`*.toml`: `workers = 2`); its
names are the long options with `_` for `-` (`max_requests`, and `app` for
the positional app). `FLASH_CMD_ARGS` holds options as they would be typed,
shell-quoted, like GUNICORN_CMD_ARGS. Each layer is read by the same
argparse parser, so a value is checked and converted the same way wherever
it comes from, and a layer overrides only what it names: a list option
(`--reload-extra-file`) given on the command line replaces the file's list.
"""

from __future__ import annotations

import argparse
import difflib
import os
import runpy
import shlex
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

#: The environment variable holding extra command-line options.
ENV_ARGS = "FLASH_CMD_ARGS"
#: Names a config file may use for the positional app (gunicorn says wsgi_app).
APP_NAMES = ("app", "wsgi_app")
#: Options that make no sense inside a config file.
NOT_IN_FILES = frozenset({"help", "version", "config"})


class SettingsError(Exception):
    """A config file or FLASH_CMD_ARGS the operator must fix (one line)."""


def resolve(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The options of `argv` over those of FLASH_CMD_ARGS over the config file's."""
    given_cli = explicit(parser, argv, "the command line")
    try:
        env_argv = shlex.split(os.environ.get(ENV_ARGS, ""))
    except ValueError as exc:
        raise SettingsError(f"{ENV_ARGS}: {exc}") from None
    given_env = explicit(parser, env_argv, ENV_ARGS)
    path = given_cli.get("config") or given_env.get("config")
    given_file = explicit(parser, file_argv(parser, path), path) if path else {}
    with _raising(parser, "the command line"):
        merged = vars(parser.parse_args([]))
    merged.update(given_file)
    merged.update(given_env)
    merged.update(given_cli)
    return argparse.Namespace(**merged)


def explicit(parser: argparse.ArgumentParser, argv: list[str], source: str) -> dict[str, Any]:
    """Only the options `argv` names (no defaults), checked by `parser`."""
    saved = [(action, action.default) for action in parser._actions]
    for action, _ in saved:
        action.default = argparse.SUPPRESS
    try:
        with _raising(parser, source):
            return vars(parser.parse_args(argv))
    finally:
        for action, default in saved:
            action.default = default


@contextmanager
def _raising(parser: argparse.ArgumentParser, source: str) -> Iterator[None]:
    """Turn argparse's print-usage-and-exit into a SettingsError naming `source`."""
    def error(message: str):
        raise SettingsError(f"{source}: {message}")

    parser.error = error
    try:
        yield
    finally:
        del parser.error


def file_argv(parser: argparse.ArgumentParser, path: str) -> list[str]:
    """A config file's settings, written as the command line that says the same."""
    values = read_file(path)
    options = {_name(action): action for action in parser._actions if _name(action) not in NOT_IN_FILES}
    argv: list[str] = []
    for name, value in values.items():
        key = name.replace("-", "_")
        if key in APP_NAMES:
            argv.insert(0, str(value))
            continue
        action = options.get(key)
        if action is None:
            hint = difflib.get_close_matches(key, [*options, *APP_NAMES], n=1)
            raise SettingsError(f"{path}: unknown setting {name!r}"
                                + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        argv += _as_arguments(action, value, path, name)
    return argv


def _name(action: argparse.Action) -> str:
    longs = [s for s in action.option_strings if s.startswith("--")]
    return longs[0][2:].replace("-", "_") if longs else action.dest


def _as_arguments(action: argparse.Action, value: Any, path: str, name: str) -> list[str]:
    option = next(s for s in action.option_strings if s.startswith("--"))
    if value is None:
        return []
    if action.nargs == 0:
        if not isinstance(value, bool):
            raise SettingsError(f"{path}: {name} takes true or false, not {value!r}")
        if isinstance(action, argparse.BooleanOptionalAction):
            return [option if value else "--no-" + option[2:]]
        return [option] if value == action.const else []
    values = value if isinstance(value, (list, tuple)) else [value]
    if isinstance(action, argparse._AppendAction):
        return [f"{option}={v}" for v in values]
    if action.nargs in ("*", "+") or isinstance(action.nargs, int):
        return [option, *map(str, values)]
    return [f"{option}={value}"]


def read_file(path: str) -> dict[str, Any]:
    """The settings of a TOML or Python config file, by name."""
    if not os.path.isfile(path):
        raise SettingsError(f"config file {path!r} not found")
    if path.endswith(".toml"):
        try:
            with open(path, "rb") as handle:
                return tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: {exc}") from None
    try:
        namespace = runpy.run_path(path, run_name="flash_config")
    except SyntaxError as exc:
        raise SettingsError(f"{path}, line {exc.lineno}: {exc.msg}") from None
    except Exception as exc:
        raise SettingsError(f"{path}: {exc.__class__.__name__}: {exc}") from None
    return {name: value for name, value in namespace.items() if _is_setting(name, value)}


def _is_setting(name: str, value: Any) -> bool:
    """Skip what a Python config file uses to compute its settings: private
    names, modules, and functions or classes it imported."""
    if name.startswith("_") or isinstance(value, types.ModuleType):
        return False
    if callable(value):
        return getattr(value, "__module__", None) == "flash_config"
    return True
