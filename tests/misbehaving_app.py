"""Routes of the suite app that break PEP 3333 rules on purpose (tests/test_engines_apps.py).

    /mis/write-hold?name=N   write(b"first"), then wait for <dir>/N.release
                             (bounded to 20 s), then return the rest: the test
                             reads "first" before it releases the app
    /mis/length?declared=D&sent=S&via=write|iter|list
                             says Content-Length: D and sends S bytes
    /mis/str?after=B&length=L  yields B bytes (if B > 0), then a str; with
                             L > 0 the head says Content-Length: L
    /mis/raise?exc=E&where=call|iter|late|close&token=T
                             raises E (SystemExit, KeyboardInterrupt or
                             RuntimeError) in the call, before the first piece,
                             after it, or in close(); T ends its message
    /mis/environ[/...]       the environ as JSON (non-str values described),
                             and the body as read from wsgi.input

<dir> comes from FLASH_TEST_HOLD_DIR, as for the suite app's /hold.
"""

from __future__ import annotations

import json
import os
import time
from urllib.parse import parse_qs

HOLD_DIR = os.environ.get("FLASH_TEST_HOLD_DIR", "/tmp")
EXCEPTIONS = {"SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt,
              "RuntimeError": RuntimeError}


def _args(environ) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def write_hold(environ, start_response):
    name = "".join(c for c in _args(environ).get("name", "") if c.isalnum())
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"first")
    release = os.path.join(HOLD_DIR, name + ".release")
    deadline = time.monotonic() + 20
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return [b" and the rest"]


def wrong_length(environ, start_response):
    args = _args(environ)
    body = b"x" * int(args["sent"])
    write = start_response("200 OK", [("Content-Length", args["declared"])])
    via = args.get("via")
    if via == "write":
        write(body)
        return []
    if via == "iter":
        return iter([body[:3], body[3:]])
    return [body]


def str_piece(environ, start_response):
    args = _args(environ)
    before = b"b" * int(args.get("after", "0"))
    length = args.get("length")
    start_response("200 OK", [("Content-Length", length)] if length else [])

    def pieces():
        if before:
            yield before
        yield "a str"
        yield b"never sent"
    return pieces()


class Raising:
    """A body that raises where it is told to."""

    def __init__(self, exc: type[BaseException], where: str, token: str) -> None:
        self.exc = exc
        self.where = where
        self.token = token

    def __iter__(self):
        if self.where == "iter":
            raise self.exc(f"raised before the first piece {self.token}")
        yield b"first piece"
        if self.where == "late":
            raise self.exc(f"raised after the first piece {self.token}")
        yield b" and the last"

    def close(self) -> None:
        if self.where == "close":
            raise self.exc(f"raised in close() {self.token}")


def raising(environ, start_response):
    args = _args(environ)
    exc = EXCEPTIONS[args["exc"]]
    token = args.get("token", "")
    if args["where"] == "call":
        raise exc(f"raised in the call {token}")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Raising(exc, args["where"], token)


def _described(key: str, value: object) -> object:
    """An environ value as JSON: str and bool as they are, the objects by
    what PEP 3333 asks of them."""
    if isinstance(value, (str, bool)):
        return value
    if key == "wsgi.version":
        return list(value)
    if key == "wsgi.input":
        return "<input>" if all(hasattr(value, m) for m in ("read", "readline", "readlines", "__iter__")) else repr(value)
    if key == "wsgi.errors":
        return "<errors>" if all(hasattr(value, m) for m in ("write", "writelines", "flush")) else repr(value)
    return "<callable>" if callable(value) else repr(value)


def environ_dump(environ, start_response):
    body = environ["wsgi.input"].read()
    seen = {key: _described(key, value) for key, value in environ.items()}
    out = json.dumps({"environ": seen, "body": body.decode("latin-1")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


ROUTES = {
    "/mis/write-hold": write_hold,
    "/mis/length": wrong_length,
    "/mis/str": str_piece,
    "/mis/raise": raising,
    "/mis/environ": environ_dump,
}


def app(environ, start_response):
    route = "/".join(environ["PATH_INFO"].split("/")[:3])  # /mis/environ/any/path too
    return ROUTES[route](environ, start_response)

