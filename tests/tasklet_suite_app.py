"""A tasklet handler for the tasklets engine's own tests.

    /hold?name=N        writes <dir>/N.started, then waits (cooperatively,
                        tasklets.sleep polling) for <dir>/N.release
    /upstream?port=P    one call to an upstream over a tasklets socket
    everything else     the tasklet demo app
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs

import tasklets

from flash_green.apps.tasklet_demo import app as demo_app
from flash_green.engines.tasklets import tasklet_app

HOLD_DIR = os.environ.get("FLASH_TEST_HOLD_DIR", "/tmp")


def hold(environ, start_response):
    name = parse_qs(environ.get("QUERY_STRING", "")).get("name", ["hold"])[0]
    name = "".join(c for c in name if c.isalnum() or c in "-_")
    with open(os.path.join(HOLD_DIR, name + ".started"), "w"):
        pass
    release = os.path.join(HOLD_DIR, name + ".release")
    for _ in range(2000):  # bounded: 20 s
        if os.path.exists(release):
            break
        yield from tasklets.sleep(0.01)
    body = f"released {name}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@tasklet_app
def app(environ, start_response):
    if environ["PATH_INFO"] == "/hold":
        return (yield from hold(environ, start_response))
    return (yield from demo_app(environ, start_response))
