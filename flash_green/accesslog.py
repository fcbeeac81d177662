"""The access log: one line per response, in gunicorn's format language.

A format is %-formatting over named atoms (`--access-log-format`):

    h remote address        l '-'                    u Basic-auth user (or REMOTE_USER)
    t [time of the line]    r request line           s status
    b body bytes, '-' if 0  B body bytes             f Referer
    a User-Agent            m method                 U path
    q query string          H protocol               p <pid>
    T seconds (int)         M milliseconds (int)     D microseconds (int)
    L seconds (decimal)     {Header}i request header {Header}o response header
    {NAME}e environment variable of the server process

The default is the combined log format, as gunicorn's. `b` and `B` count
the bytes of body sent, as gunicorn and Apache do: not the response head,
not chunked framing, nothing for a HEAD request.

A format is compiled once (`configure`): a line computes only the atoms
its format names. Engines hold the access logger only when the log is on,
so with it off nothing here runs.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

DEFAULT_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

#: Atoms whose value is a number (a format may say %(s)d).
_NUMBERS = frozenset("sBTMD")
_KEY = re.compile(r"%\(([^)]*)\)")
_HEADER_KEY = re.compile(r"\{([^}]+)\}([ioe])")

#: An atom's value from (exchange, environ, seconds since the request started).
Getter = Callable[[Any, dict, float], Any]


def _env(key: str) -> Getter:
    return lambda exchange, env, elapsed: env.get(key) or "-"


def _request_line(exchange, env: dict, elapsed: float) -> str:
    if "REQUEST_METHOD" not in env:
        return "-"
    return f"{env['REQUEST_METHOD']} {env.get('REQUEST_URI', '')} {env.get('SERVER_PROTOCOL', '')}"


def _user(exchange, env: dict, elapsed: float) -> str:
    """The Basic-auth user name, as gunicorn logs it (the password never)."""
    user = env.get("REMOTE_USER")
    if user:
        return user
    scheme, _, token = env.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return "-"
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return "-"
    return decoded.partition(":")[0] or "-"


class _Clock:
    """`[10/Oct/2000:13:55:36 +0000]`, formatted once per second."""

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def __call__(self, exchange, env: dict, elapsed: float) -> str:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.text = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(now))
        return self.text


ATOMS: dict[str, Getter] = {
    "h": _env("REMOTE_ADDR"),
    "l": lambda exchange, env, elapsed: "-",
    "u": _user,
    "t": _Clock(),
    "r": _request_line,
    "s": lambda exchange, env, elapsed: exchange.status,
    "b": lambda exchange, env, elapsed: exchange.body_sent or "-",
    "B": lambda exchange, env, elapsed: exchange.body_sent,
    "f": _env("HTTP_REFERER"),
    "a": _env("HTTP_USER_AGENT"),
    "m": _env("REQUEST_METHOD"),
    "U": _env("PATH_INFO"),
    "q": lambda exchange, env, elapsed: env.get("QUERY_STRING", ""),
    "H": _env("SERVER_PROTOCOL"),
    "p": lambda exchange, env, elapsed: f"<{os.getpid()}>",
    "T": lambda exchange, env, elapsed: int(elapsed),
    "M": lambda exchange, env, elapsed: int(elapsed * 1e3),
    "D": lambda exchange, env, elapsed: int(elapsed * 1e6),
    "L": lambda exchange, env, elapsed: f"{elapsed:.6f}",
}


def _header_getter(name: str, kind: str) -> Getter:
    if kind == "e":
        return lambda exchange, env, elapsed: os.environ.get(name, "-")
    if kind == "i":
        lower = name.lower()
        key = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}.get(
            lower, "HTTP_" + name.upper().replace("-", "_"))
        return _env(key)
    lower = name.lower()

    def response_header(exchange, env: dict, elapsed: float) -> str:
        for field, value in exchange._headers:
            if field.lower() == lower:
                return value
        return "-"
    return response_header


class AccessFormat:
    """One `--access-log-format`, checked and compiled."""

    def __init__(self, fmt: str) -> None:
        self.format = fmt
        self.getters: list[tuple[str, Getter]] = []
        for key in dict.fromkeys(_KEY.findall(fmt)):
            header = _HEADER_KEY.fullmatch(key)
            if header:
                self.getters.append((key, _header_getter(*header.groups())))
            elif key in ATOMS:
                self.getters.append((key, ATOMS[key]))
            else:
                raise ValueError(f"--access-log-format: unknown atom %({key})s "
                                 f"(known: {' '.join(ATOMS)}, {{Header}}i, {{Header}}o, {{NAME}}e)")
        try:
            fmt % {key: 0 if key in _NUMBERS else "-" for key, _ in self.getters}
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"--access-log-format {fmt!r}: {exc}") from None

    def line(self, exchange, elapsed: float) -> str:
        env = exchange.environ
        return self.format % {key: getter(exchange, env, elapsed) for key, getter in self.getters}


_active = AccessFormat(DEFAULT_FORMAT)


def configure(fmt: str) -> None:
    """Use `fmt` for every line from now on (ValueError naming a bad atom)."""
    global _active
    _active = AccessFormat(fmt)


def write(logger: logging.Logger, exchange) -> None:
    """Log the line of one finished `wsgi.Exchange`."""
    logger.info(_active.line(exchange, time.perf_counter() - exchange._started))
