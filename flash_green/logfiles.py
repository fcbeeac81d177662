"""USR1: reopen every log file, after logrotate moved it away.

Every logger counts, not only Flash's own: `--log-config` may give any
logger a FileHandler. The new file is opened first and swapped in; the old
stream is dropped, not closed, so a record being written when the signal
arrived finishes into the old file (CPython closes it with its last
reference). So it is safe to call from a signal handler.
"""

from __future__ import annotations

import logging


def file_handlers() -> list[logging.FileHandler]:
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    return [handler for logger in loggers for handler in logger.handlers
            if isinstance(handler, logging.FileHandler)]


def reopen_log_files() -> None:
    for handler in file_handlers():
        if handler.stream is not None:
            handler.stream = handler._open()
