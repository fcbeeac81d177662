"""A test app whose request cannot be interrupted from Python.

    /deaf?name=N  blocks SIGABRT in its thread, writes <dir>/N.started and
                  waits (bounded to 20 s) for <dir>/N.release: the worker's
                  Python SIGABRT handler can never run, as when a C extension
                  holds the interpreter
    anything else the suite app
"""

from __future__ import annotations

import signal

from .suite_app import app as suite_app
from .suite_app import hold


def app(environ, start_response):
    if environ["PATH_INFO"] == "/deaf":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGABRT})
        return hold(environ, start_response)
    return suite_app(environ, start_response)
