"""Start-up: from the app's name to a serving engine, the one path of the CLI and of every worker.

The path, in order
    1. `load`: import the app (`flash_green.loader`) and refuse it if the
       engine cannot run its function colour (`Engine.refuse_app`);
    2. `serve`: build the engine over the listener it is given and run it
       until it stops.

Who takes it
    `python -m flash_green serve` takes it in its own process; under the
    supervisor (`--workers N`, `prefork`, `worker`) every worker takes it
    after fork. Only what surrounds the two steps differs: the CLI binds
    its listeners between them (once the app has loaded) and prints the
    start-up line; a worker inherits the master's listeners, patches the
    standard library first when asked, and wires its heartbeat into the
    engine before it runs.

The exit codes both report and the start-up line both print live here too,
where the CLI and the supervisor import them without importing each other.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from . import binds
from .config import Config
from .engines.base import Engine
from .loader import AppLoadError, load_app

log = logging.getLogger("flash")

#: Exit code when a --bind cannot be parsed or opened (port in use, unknown host...).
EXIT_BIND = 1
#: Exit code when the app cannot be loaded (same as gunicorn's APP_LOAD_ERROR):
#: the supervisor reads it as "do not respawn", `--reload` as "wait for a fix".
EXIT_APP_LOAD = 4
#: The engine `serve` uses when none is named.
DEFAULT_ENGINE = "sequential"


class AppRefused(AppLoadError):
    """The app loaded, but its colour is one the engine cannot run."""


def load(engine_cls: type[Engine], app_spec: str, factory: bool = False) -> Callable:
    """The app named `app_spec`, if `engine_cls` can run it (AppRefused if not)."""
    app = load_app(app_spec, factory)
    refusal = engine_cls.refuse_app(app)
    if refusal:
        raise AppRefused(f"{app_spec}: {refusal}")
    return app


def serve(engine_cls: type[Engine], config: Config, app: Callable, listeners: Sequence[binds.Listener],
          prepare: Callable[[Engine], None] | None = None) -> None:
    """Build the engine over `listeners` and run it until it stops;
    `prepare` sees the engine first."""
    engine = engine_cls(config, app, listeners)
    if prepare is not None:
        prepare(engine)
    engine.run()


def announce(engine: str, listeners: list[binds.Listener], app: str) -> None:
    """The start-up line; tests and scripts read the first address from it.

    `listening on http://HOST:PORT`, `https://HOST:PORT` or `unix:PATH`,
    several joined by ", " (comparisons/childproc.py's LISTENING pattern).
    """
    if engine == DEFAULT_ENGINE:
        log.info("using engine %s (the default; see `python -m flash_green engines`)", engine)
    print(f"flash: engine={engine} app={app} listening on {binds.describe(listeners)} pid={os.getpid()}",
          flush=True)
