"""The demo WSGI app: one endpoint per scenario of the study.

    /                   hello (TechEmpower plaintext style)
    /json               a small JSON document
    /echo               the request body, echoed (POST/PUT)
    /sleep?ms=N         blocks N ms in time.sleep (the blocking handler)
    /cpu?n=N            pure-Python CPU work (the GIL scenario)
    /upstream?port=P&ms=N  calls the slow upstream (comparisons/upstream.py) on
                        127.0.0.1:P with a plain blocking socket (I/O-bound)
    /stream?chunks=N    a generator body with no length (chunked on 1.1)
    /download?bytes=N   N bytes with a length (large download)
    /static/<path>      files under STATIC_ROOT (traversal -> 404)
    /headers            the request headers as JSON
    /error              raises, to show the 500 path
    /error-late         raises after the first body chunk (connection closed)

Everything is plain PEP 3333, so every engine can serve it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from urllib.parse import parse_qs

HELLO = b"Hello, World!"
_HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]
STATIC_ROOT = os.environ.get("FLASH_STATIC_ROOT", os.path.join(os.path.dirname(__file__), "static"))
_CHUNK = b"x" * 65536


def _int_arg(environ, name: str, default: int, upper: int) -> int:
    values = parse_qs(environ.get("QUERY_STRING", "")).get(name)
    if not values or not values[0].isascii() or not values[0].isdigit():
        return default
    return min(int(values[0]), upper)


def hello(environ, start_response):
    start_response("200 OK", list(_HELLO_HEADERS))
    return [HELLO]


def as_json(environ, start_response):
    body = json.dumps({"message": "Hello, World!"}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def read_body(environ) -> bytes:
    """The whole request body, the PEP 3333 way (read(CONTENT_LENGTH)), or to
    its end for chunked bodies when the server sets wsgi.input_terminated."""
    length = environ.get("CONTENT_LENGTH", "")
    if length.isdigit():
        return environ["wsgi.input"].read(int(length))
    if environ.get("wsgi.input_terminated"):
        return environ["wsgi.input"].read()
    return b""


def echo(environ, start_response):
    body = read_body(environ)
    start_response("200 OK", [("Content-Type", environ.get("CONTENT_TYPE") or "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]


def sleep(environ, start_response):
    ms = _int_arg(environ, "ms", 100, 60_000)
    time.sleep(ms / 1000)
    body = f"slept {ms} ms\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def upstream(environ, start_response):
    """Fetch from a slow third party: one HTTP/1.0 call over a plain socket.

    Plain blocking code on purpose: a thread waits, a patched green thread
    switches out, a single-threaded loop stalls.
    """
    port = _int_arg(environ, "port", 0, 65535)
    ms = _int_arg(environ, "ms", 50, 60_000)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET /?ms={ms} HTTP/1.0\r\nHost: upstream\r\n\r\n".encode())
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    body = reply.partition(b"\r\n\r\n")[2]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def cpu(environ, start_response):
    n = _int_arg(environ, "n", 20, 32)
    body = f"fib({n}) = {fib(n)}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def stream(environ, start_response):
    chunks = _int_arg(environ, "chunks", 10, 100_000)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return (f"chunk {i}\n".encode() for i in range(chunks))


def download(environ, start_response):
    size = _int_arg(environ, "bytes", 1 << 20, 1 << 30)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size))])

    def body():
        left = size
        while left > 0:
            piece = _CHUNK[:min(left, len(_CHUNK))]
            left -= len(piece)
            yield piece
    return body()


def static(environ, start_response):
    relative = environ["PATH_INFO"][len("/static/"):]
    root = os.path.realpath(STATIC_ROOT)
    path = os.path.realpath(os.path.join(root, relative))
    if not path.startswith(root + os.sep) or not os.path.isfile(path):
        return not_found(environ, start_response)
    size = os.path.getsize(path)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size))])
    return environ["wsgi.file_wrapper"](open(path, "rb"), 65536)


def headers(environ, start_response):
    found = {key[5:].replace("_", "-").lower(): value
             for key, value in environ.items() if key.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if key in environ:
            found[key.replace("_", "-").lower()] = environ[key]
    body = json.dumps(found, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def error(environ, start_response):
    raise RuntimeError("the /error endpoint always fails")


def error_late(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def body():
        yield b"first chunk\n"
        raise RuntimeError("the /error-late endpoint fails mid-body")
    return body()


def not_found(environ, start_response):
    body = b"Not Found\n"
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


ROUTES = {
    "/": hello,
    "/json": as_json,
    "/echo": echo,
    "/sleep": sleep,
    "/cpu": cpu,
    "/upstream": upstream,
    "/stream": stream,
    "/download": download,
    "/headers": headers,
    "/error": error,
    "/error-late": error_late,
}


def app(environ, start_response):
    """Dispatch on PATH_INFO (a dict lookup: the hot path stays short)."""
    path = environ["PATH_INFO"]
    handler = ROUTES.get(path)
    if handler is None:
        handler = static if path.startswith("/static/") else not_found
    return handler(environ, start_response)
