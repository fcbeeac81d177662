"""Monkey-patching the standard library for gevent and eventlet, done first.

What patching does
    gevent's `monkey.patch_all()` and eventlet's `monkey_patch()` replace
    attributes of standard modules (`socket.socket`, `time.sleep`,
    `threading.Lock`, `select.select` ...) with cooperative versions, so that
    unmodified blocking code - the demo app's `/sleep` and `/upstream`, a
    database driver written in Python - switches to the hub instead of
    blocking the thread.

Why it must come first
    Patching rebinds module attributes; it cannot reach objects that were
    already taken from them. A module that ran `from time import sleep`, a
    lock created by `threading.Lock()`, a `socket.socket` subclass defined
    at import: all keep the blocking originals. So both entry points,
    `python -m flash_green` and the `flash-green` script, go through
    `flash_green.console.main`, which calls `patch_from_argv` before
    importing the CLI and everything behind it, when only the interpreter's
    start-up modules are loaded. This module imports nothing of Flash, so
    the entry point can import it first.

Under the supervisor (`--workers N`)
    The master itself stays unpatched (it only forks, waits and sends
    signals, like gunicorn's arbiter); each worker calls `apply` right after
    fork, before it imports the app. The engine's `run()` calls
    `ensure_patched` as a safety net for any other way of starting it (an
    embedding program): that comes after the app was imported, and the log
    says so.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import warnings

log = logging.getLogger("flash.patching")

#: Engines that know how to patch, and the package each one needs.
PATCHABLE = {"gevent": "gevent", "eventlet": "eventlet"}

_patched_by: str | None = None


def requested(argv: list[str]) -> tuple[str | None, bool, int]:
    """(engine, --patch given, --workers) read from a `serve` command line and
    FLASH_CMD_ARGS. A config file is read later, by the CLI: `patch = true`
    there is applied by the engine's `ensure_patched`, which says so."""
    if not argv or argv[0] != "serve":
        return None, False, 0
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--engine", "-e")
    parser.add_argument("--patch", action="store_true")
    parser.add_argument("--workers", "-w", type=int, default=0)
    try:
        # FLASH_CMD_ARGS first, so that the command line wins (as in settings.resolve).
        args, _ = parser.parse_known_args(shlex.split(os.environ.get("FLASH_CMD_ARGS", "")) + argv[1:])
    except (SystemExit, ValueError):
        # A malformed option: leave the real parser to report it.
        return None, False, 0
    return args.engine, args.patch, args.workers


def patch_from_argv(argv: list[str]) -> None:
    """Patch now if the command line asks for a patched engine in this process."""
    engine, patch, workers = requested(argv)
    if not patch or engine not in PATCHABLE or workers:
        return
    try:
        apply(engine)
    except ImportError:
        # The registry reports the missing package in one clear line.
        return


def apply(engine: str) -> None:
    """Patch the standard library with `engine`'s cooperative versions."""
    global _patched_by
    if engine == "gevent":
        from gevent import monkey

        monkey.patch_all()
    elif engine == "eventlet":
        eventlet = import_eventlet()
        eventlet.monkey_patch()
    else:
        raise ValueError(f"engine {engine!r} does not monkey-patch")
    _patched_by = engine


def ensure_patched(engine: str) -> None:
    """Called by a patching engine when `--patch` is on: patch if not done yet."""
    if _patched_by == engine:
        return
    if _patched_by is not None:
        raise RuntimeError(f"already patched by {_patched_by}, cannot patch for {engine}")
    log.warning("patching the standard library for %s after start-up: objects the app "
                "created at import keep their blocking originals", engine)
    apply(engine)


def patched_by() -> str | None:
    """The engine that patched this process, or None."""
    return _patched_by


def import_eventlet():
    """Import eventlet without its multi-line deprecation banner (we say it once)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import eventlet
    return eventlet
