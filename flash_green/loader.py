"""Loading the WSGI app named on the command line, and binding listeners."""

from __future__ import annotations

import importlib
import os
import socket
import sys
from typing import Callable

DEFAULT_APP = "flash_green.apps.demo:app"


class AppLoadError(Exception):
    """The app could not be imported or is not callable (exit code 4)."""


def load_app(spec: str, factory: bool = False) -> Callable:
    """`module:callable` (or `module` -> `module:application`) -> the app.

    With `factory`, the named callable is called with no arguments and its
    return value is the app (Flask's create_app pattern).
    """
    module_name, _, attr = spec.partition(":")
    attr = attr or "application"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppLoadError(f"cannot import {module_name!r}: {exc.__class__.__name__}: {exc}") from exc
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if factory:
        try:
            app = app()
        except Exception as exc:
            raise AppLoadError(f"factory {spec!r} failed: {exc}") from exc
    if not callable(app):
        raise AppLoadError(f"{spec!r} is not callable")
    return app


def bind_listener(host: str, port: int, backlog: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket with TCP_NODELAY set.

    Linux copies TCP_NODELAY from a listening socket to the sockets accept()
    returns, so every connection sends its small writes at once (no Nagle +
    delayed-ACK 40 ms stall on keep-alive).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock
