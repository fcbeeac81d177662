"""The app the cross-engine suite serves: the demo app plus test-only routes.

    /v/...        the demo app wrapped in wsgiref.validate (PEP 3333 checks)
    /flask/...    a small Flask app
    /django/...   a small Django project (tests/django_project), mounted:
                  SCRIPT_NAME=/django, PATH_INFO=the rest
    /falcon/...   a small Falcon app (tests/falcon_app.py), mounted likewise
    /environ      the CGI/WSGI keys of the environ the server built, as JSON
    /mis/...      apps that break PEP 3333 rules on purpose (tests/misbehaving_app.py)
    /hold?name=N  writes <dir>/N.started, then waits for <dir>/N.release
                  (polling, bounded to 20 s): a handler the test can keep
                  busy for exactly as long as it needs, with no sleeps in
                  the test itself. <dir> comes from FLASH_TEST_HOLD_DIR.

The frameworks are imported on first use: the cgi engine starts a fresh
process per request, and importing them in every one would dominate the suite.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from urllib.parse import parse_qs
from wsgiref.validate import validator

from flash_green.apps.demo import app as demo_app

from . import misbehaving_app

HOLD_DIR = os.environ.get("FLASH_TEST_HOLD_DIR", "/tmp")
#: Polls of the release file before /hold gives up (20 s).
HOLD_POLLS = 2000
HOLD_POLL_SECONDS = 0.01

#: environ keys /environ reports.
ENVIRON_KEYS = ("REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL",
                "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "HTTP_HOST", "wsgi.url_scheme")


def _build_flask() -> Callable:
    from flask import Flask, request

    app = Flask("suite")
    app.add_url_rule("/flask/hello", "hello", lambda: "Hello from Flask")
    app.add_url_rule("/flask/echo", "echo", lambda: request.get_data(), methods=["POST"])
    return app


def _build_django() -> Callable:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def _build_falcon() -> Callable:
    from .falcon_app import make_app

    return make_app()


#: Mounted apps, built on their first request: prefix -> (builder, mount at SCRIPT_NAME).
_MOUNTS: dict[str, tuple[Callable[[], Callable], bool]] = {
    "/flask/": (_build_flask, False),
    "/django/": (_build_django, True),
    "/falcon/": (_build_falcon, True),
}
_built: dict[str, Callable] = {}


def mounted(prefix: str, environ: dict, start_response):
    app = _built.get(prefix)
    if app is None:
        app = _built[prefix] = _MOUNTS[prefix][0]()
    if _MOUNTS[prefix][1]:
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix.rstrip("/")
        environ["PATH_INFO"] = environ["PATH_INFO"][len(prefix) - 1:]
    return app(environ, start_response)


_validated = validator(demo_app)


def hold_begin(environ) -> tuple[str, str]:
    """/hold's first half: mark it started; its name and the release file to wait for."""
    name = parse_qs(environ.get("QUERY_STRING", "")).get("name", ["hold"])[0]
    name = "".join(c for c in name if c.isalnum() or c in "-_")
    with open(os.path.join(HOLD_DIR, name + ".started"), "w"):
        pass
    return name, os.path.join(HOLD_DIR, name + ".release")


def hold_end(name: str, start_response) -> list[bytes]:
    body = f"released {name}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def hold(environ, start_response):
    name, release = hold_begin(environ)
    for _ in range(HOLD_POLLS):
        if os.path.exists(release):
            break
        time.sleep(HOLD_POLL_SECONDS)
    return hold_end(name, start_response)


def environ_report(environ, start_response):
    body = json.dumps({key: environ.get(key) for key in ENVIRON_KEYS}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/v/"):
        environ["PATH_INFO"] = path[2:]
        return _validated(environ, start_response)
    for prefix in _MOUNTS:
        if path.startswith(prefix):
            return mounted(prefix, environ, start_response)
    if path.startswith("/mis/"):
        return misbehaving_app.app(environ, start_response)
    if path == "/hold":
        return hold(environ, start_response)
    if path == "/environ":
        return environ_report(environ, start_response)
    return demo_app(environ, start_response)
