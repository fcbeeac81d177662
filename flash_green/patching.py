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
    at import: all keep the blocking originals. So `python -m flash_green`
    calls `patch_from_argv` before importing anything else of its own
    (`flash_green/__main__.py`), when only the interpreter's start-up modules
    are loaded.

Under the supervisor (`--workers N`)
    The supervisor itself stays unpatched (it only forks, waits and sends
    signals, like gunicorn's arbiter); each worker patches itself after fork,
    in the engine's `run()` through `ensure_patched`, before it loads any
    connection. That is later than ideal (the app is already imported), and
    the log says so.
"""

from __future__ import annotations

import argparse
import logging
import warnings

log = logging.getLogger("flash.patching")

#: Engines that know how to patch, and the package each one needs.
PATCHABLE = {"gevent": "gevent", "eventlet": "eventlet"}

_patched_by: str | None = None


def requested(argv: list[str]) -> tuple[str | None, bool, int]:
    """(engine, --patch given, --workers) read from a `serve` command line."""
    if not argv or argv[0] != "serve":
        return None, False, 0
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--engine", "-e")
    parser.add_argument("--patch", action="store_true")
    parser.add_argument("--workers", "-w", type=int, default=0)
    try:
        args, _ = parser.parse_known_args(argv[1:])
    except SystemExit:
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
    log.warning("patching the standard library for %s after start-up (a worker after fork): "
                "objects the app created at import keep their blocking originals", engine)
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
