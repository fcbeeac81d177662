"""A tiny raw HTTP/1.1 client for tests: exact bytes out, framed responses in."""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    version: str = "HTTP/1.1"

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def cookie(self, name: str) -> str | None:
        """The value a Set-Cookie field of this response gives `name`."""
        for key, value in self.headers:
            if key.lower() == "set-cookie" and value.startswith(name + "="):
                return value[len(name) + 1:].split(";", 1)[0]
        return None


class Client:
    """One connection. `send` raw bytes, `read_response` parses one response."""

    def __init__(self, address, timeout: float = 15.0) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def abort(self) -> None:
        """Close with a reset (SO_LINGER 0), as a client that was killed does."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> bytes:
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("server closed the connection")
        self.buf += data
        return data

    def _read_until(self, mark: bytes) -> bytes:
        while True:
            at = self.buf.find(mark)
            if at >= 0:
                out, self.buf = self.buf[:at], self.buf[at + len(mark):]
                return out
            self._more()

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, head_request: bool = False) -> Response:
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
        resp = Response(int(status), reason, headers, b"", version)
        if head_request or resp.status in (204, 304) or 100 <= resp.status < 200:
            return resp
        te = resp.header("transfer-encoding")
        length = resp.header("content-length")
        if te and "chunked" in te.lower():
            resp.body = self._read_chunked()
        elif length is not None:
            resp.body = self._read_exact(int(length))
        else:
            resp.body = self.read_to_eof()
        return resp

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self._read_until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._read_until(b"\r\n")
                return b"".join(parts)
            parts.append(self._read_exact(size))
            assert self._read_exact(2) == b"\r\n"

    def read_to_eof(self) -> bytes:
        while self._more_or_eof():
            pass
        out, self.buf = self.buf, b""
        return out

    def _more_or_eof(self) -> bool:
        try:
            self._more()
            return True
        except EOFError:
            return False

    def closed_by_server(self, within: float = 5.0) -> bool:
        """True when the server closes its side (EOF or reset) within `within`
        seconds. The default suits a close the server owes at once; a test of
        a timeout passes a bound between the option's value and its default."""
        deadline = time.monotonic() + within
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
            return False
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(self.timeout)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
                version: str = "HTTP/1.1") -> Response:
        self.send(build_request(method, path, body, headers, version))
        return self.read_response(head_request=method == "HEAD")


def build_request(method: str, path: str, body: bytes = b"", headers: dict | None = None,
                  version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {path} {version}", "Host: localhost"]
    headers = dict(headers or {})
    if body and "Transfer-Encoding" not in headers:
        headers.setdefault("Content-Length", str(len(body)))
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type: `files` maps a field
    to (file name, content)."""
    boundary = "flash-suite-boundary-7d1e"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
             + value.encode() + b"\r\n" for name, value in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
              f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n"
              for name, (filename, content) in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def assert_connections_bound(address, slots: int) -> None:
    """For a server bounded to `slots` connections in all: `slots` clients
    hold them mid-head, one more is not served until one of them finishes."""
    import pytest

    holders = [Client(address) for _ in range(slots)]
    try:
        for c in holders:
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # every slot held mid-head
        with Client(address, timeout=10) as extra:
            extra.send(build_request("GET", "/"))
            extra.sock.settimeout(0.5)
            with pytest.raises(socket.timeout):
                extra.sock.recv(1)  # not served: the bound holds
            holders[0].send(b"Connection: close\r\n\r\n")
            assert holders[0].read_response().status == 200
            extra.sock.settimeout(10)
            assert extra.read_response().status == 200
    finally:
        for c in holders:
            c.close()


def assert_two_connections_bound(address) -> None:
    """For a server run with --max-connections 2 (one process)."""
    assert_connections_bound(address, 2)
