"""A test app whose response iterable blocks between two pieces.

    /held-body?name=N&bytes=B  yields B bytes, then writes <dir>/N.started
                               and waits (polling, bounded to 20 s) for
                               <dir>/N.release before its last piece, b"end"
    anything else              the suite app

<dir> comes from FLASH_TEST_HOLD_DIR, as for the suite app's /hold: the test
decides when the iterator may go on, with no sleeps in the test itself.
"""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qs

from .suite_app import HOLD_DIR
from .suite_app import app as suite_app


def held_body(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    name = "".join(c for c in query.get("name", ["held"])[0] if c.isalnum())
    size = int(query.get("bytes", ["65536"])[0])
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size + 3))])

    def body():
        yield b"x" * size
        with open(os.path.join(HOLD_DIR, name + ".started"), "w"):
            pass
        release = os.path.join(HOLD_DIR, name + ".release")
        deadline = time.monotonic() + 20
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield b"end"
    return body()


def app(environ, start_response):
    if environ["PATH_INFO"] == "/held-body":
        return held_body(environ, start_response)
    return suite_app(environ, start_response)
