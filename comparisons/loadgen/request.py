"""The request side of a load run: the target resolved from a URL, and the request bytes.

Everything here is done once per run, before the clock starts: the hot loop
only resends the bytes ``build_request`` made.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Target:
    """Where to connect and what to ask for, resolved once from a URL."""

    host: str
    port: int
    path: str
    family: int
    sockaddr: tuple[Any, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """Resolve an ``http://host:port/path?query`` URL; only that host is ever contacted."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {url!r}")
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    family, _, _, _, sockaddr = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)[0]
    return Target(parts.hostname, port, path, family, sockaddr)


def build_request(
    target: Target,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    close: bool = False,
) -> bytes:
    """Serialise one request. Built once per run; the hot loop only resends the bytes.

    ``Host`` and ``Content-Length`` are added unless given; ``close`` adds
    ``Connection: close`` (the new-connection mode's request).
    """
    given = {name.lower() for name in (headers or {})}
    lines = [f"{method} {target.path} HTTP/1.1"]
    if "host" not in given:
        lines.append(f"Host: {target.host_header}")
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    if "content-length" not in given and (body or method.upper() in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(body)}")
    if close and "connection" not in given:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
