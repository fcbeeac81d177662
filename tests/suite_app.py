"""The app the cross-engine suite serves: the demo app plus test-only routes.

    /v/...        the demo app wrapped in wsgiref.validate (PEP 3333 checks)
    /flask/...    a small Flask app
    /mis/...      apps that break PEP 3333 rules on purpose (tests/misbehaving_app.py)
    /hold?name=N  writes <dir>/N.started, then waits for <dir>/N.release
                  (polling, bounded to 20 s): a handler the test can keep
                  busy for exactly as long as it needs, with no sleeps in
                  the test itself. <dir> comes from FLASH_TEST_HOLD_DIR.
"""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

from flash_green.apps.demo import app as demo_app

from . import misbehaving_app

HOLD_DIR = os.environ.get("FLASH_TEST_HOLD_DIR", "/tmp")
_flask_app = None


def flask_app():
    """Flask, imported on first use: the cgi engine starts a fresh process per
    request, and importing Flask in every one of them would dominate the suite."""
    global _flask_app
    if _flask_app is None:
        from flask import Flask, request

        app = Flask("suite")
        app.add_url_rule("/flask/hello", "hello", lambda: "Hello from Flask")
        app.add_url_rule("/flask/echo", "echo", lambda: request.get_data(), methods=["POST"])
        _flask_app = app
    return _flask_app


_validated = validator(demo_app)


def hold(environ, start_response):
    name = parse_qs(environ.get("QUERY_STRING", "")).get("name", ["hold"])[0]
    name = "".join(c for c in name if c.isalnum() or c in "-_")
    started = os.path.join(HOLD_DIR, name + ".started")
    release = os.path.join(HOLD_DIR, name + ".release")
    with open(started, "w"):
        pass
    deadline = time.monotonic() + 20
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    body = f"released {name}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/v/"):
        environ["PATH_INFO"] = path[2:]
        return _validated(environ, start_response)
    if path.startswith("/flask/"):
        return flask_app()(environ, start_response)
    if path.startswith("/mis/"):
        return misbehaving_app.app(environ, start_response)
    if path == "/hold":
        return hold(environ, start_response)
    return demo_app(environ, start_response)
