"""Sockets whose blocking methods are tasklet operations.

``Socket`` wraps a ``socket.socket``, switches it to non-blocking mode, and
offers the familiar methods as generators: ``data = yield from sock.recv(4096)``.

Every operation follows the same pattern, the one gevent and eventlet use:

1. **Try the system call first.**  A socket with data already buffered
   answers immediately, and then the kernel is never involved - no trap, no
   epoll, no switch.  On a busy server this fast path is the common case.
2. On ``BlockingIOError`` (EAGAIN), **yield the fd's wait trap** and let
   other tasklets run until epoll says the fd is ready.
3. **Retry.**  A wake-up only means "worth trying again"; if it was
   spurious, the call blocks again and we wait again.

Each Socket keeps one prebuilt ``ReadWait`` trap for its fd, and its
``WriteWait`` once it first waits to write (traps are immutable), so even
the slow path allocates nothing after that.

Closing a Socket with ``close()`` first tells the running kernel
(``Kernel.forget_fd``), which wakes any tasklet still waiting on it with
``ClosedError`` and removes the fd from epoll *before* the number can be
reused by the next socket.  Timeouts per operation: wrap it,
``yield from timeout_after(5, sock.recv(100))``.
"""

from __future__ import annotations

import errno
import os
import socket
import types
from collections.abc import Generator
from typing import Any

from .kernel import running_kernel_or_none
from .traps import ReadWait, Trap, WriteWait


class Socket:
    """A non-blocking socket driven by tasklets.  Blocking methods are generators.

    Always ``close()`` it (or use ``with``): leaving the socket to the
    garbage collector closes the fd behind the kernel's back.
    """

    __slots__ = ("_sock", "_read_trap", "_write_trap")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        fd = sock.fileno()
        self._read_trap = ReadWait(fd)
        self._write_trap: WriteWait | None = None  # see write_trap
        # Discussion: no bound methods are cached here. A server holds one
        # Socket per idle connection, and three cached methods would cost
        # more memory (216 B) than the attribute lookup they save costs time.

    # --- plain (non-blocking) methods ---------------------------------------

    @property
    def socket(self) -> socket.socket:
        """The wrapped ``socket.socket`` (non-blocking)."""
        return self._sock

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def read_trap(self) -> ReadWait:
        """The prebuilt trap for "wake me when readable": ``yield sock.read_trap``
        waits without creating a helper generator (a server's hottest wait)."""
        return self._read_trap

    @property
    def write_trap(self) -> WriteWait:
        """The trap for "wake me when writable", made at the first wait for it.

        Discussion: most sockets never wait to write (a server's response
        usually fits the send buffer), and an idle server connection that
        carried one would pay 40 B for it.
        """
        trap = self._write_trap
        if trap is None:
            trap = self._write_trap = WriteWait(self._read_trap.fd)
        return trap

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def setsockopt(self, level: int, option: int, value: Any) -> None:
        self._sock.setsockopt(level, option, value)

    def getsockopt(self, level: int, option: int) -> int:
        return self._sock.getsockopt(level, option)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        """Close the socket, waking any tasklet blocked on it with ``ClosedError``.  Idempotent."""
        fd = self._sock.fileno()
        if fd < 0:
            return
        kernel = running_kernel_or_none()
        if kernel is not None:
            kernel.forget_fd(fd)
        self._sock.close()

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<tasklets.io.Socket fd={self._sock.fileno()} {self._sock.family.name}>"

    # --- tasklet operations ----------------------------------------------------

    @types.coroutine
    def accept(self) -> Generator[Trap, Any, tuple[Socket, Any]]:
        """Wait for a connection; return ``(Socket, address)``."""
        while True:
            try:
                conn, address = self._sock.accept()
            except BlockingIOError:
                yield self._read_trap
                continue
            return Socket(conn), address

    @types.coroutine
    def connect(self, address: Any) -> Generator[Trap, Any, None]:
        """Connect to ``address``.  (A host name is resolved by a blocking lookup first:
        resolve it with ``run_in_thread(socket.getaddrinfo, ...)`` if that matters.)"""
        err = self._sock.connect_ex(address)
        if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
            yield self.write_trap
            err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))

    @types.coroutine
    def recv(self, maxsize: int, flags: int = 0) -> Generator[Trap, Any, bytes]:
        """Receive up to ``maxsize`` bytes; ``b''`` means the peer closed."""
        while True:
            try:
                return self._sock.recv(maxsize, flags)
            except BlockingIOError:
                yield self._read_trap

    @types.coroutine
    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> Generator[Trap, Any, int]:
        """Receive into ``buffer`` (no new bytes object); return the byte count."""
        while True:
            try:
                return self._sock.recv_into(buffer, nbytes, flags)
            except BlockingIOError:
                yield self._read_trap

    @types.coroutine
    def send(self, data: Any, flags: int = 0) -> Generator[Trap, Any, int]:
        """Send some of ``data``; return how many bytes went out."""
        while True:
            try:
                return self._sock.send(data, flags)
            except BlockingIOError:
                yield self.write_trap

    @types.coroutine
    def sendall(self, data: Any, flags: int = 0) -> Generator[Trap, Any, None]:
        """Send all of ``data``, waiting for buffer space as needed.

        Discussion: after a partial send the rest is sent from a memoryview
        slice, which shares the original buffer: a 10 MB response is never
        copied, however many pieces it goes out in.
        """
        try:
            sent = self._sock.send(data, flags)
        except BlockingIOError:
            sent = 0
        if isinstance(data, (bytes, bytearray)) and sent == len(data):
            return  # the usual case: one system call and done
        with memoryview(data) as view, view.cast("B") as octets:
            total = len(octets)
            while sent < total:
                try:
                    sent += self._sock.send(octets[sent:], flags)
                except BlockingIOError:
                    yield self.write_trap

    @types.coroutine
    def sendfile(self, file: Any, offset: int = 0, count: int | None = None
                 ) -> Generator[Trap, Any, int]:
        """Send ``count`` bytes (default: to the end) of ``file`` from ``offset`` with
        ``os.sendfile``: the kernel copies file pages to the socket, Python never sees them.

        Returns the number of bytes sent; leaves the file position after them,
        as ``socket.sendfile`` does.
        """
        out_fd = self._sock.fileno()  # -1 once closed: then os.sendfile fails with EBADF
        in_fd = file.fileno()
        if count is None:
            count = os.fstat(in_fd).st_size - offset
        sent = 0
        while sent < count:
            try:
                n = os.sendfile(out_fd, in_fd, offset + sent, count - sent)
            except BlockingIOError:
                yield self.write_trap
                continue
            if n == 0:  # the file is shorter than promised
                break
            sent += n
        if hasattr(file, "seek"):
            file.seek(offset + sent)
        return sent


def create_server(address: tuple[str, int], *, backlog: int = socket.SOMAXCONN,
                  reuse_port: bool = False,
                  family: socket.AddressFamily = socket.AF_INET) -> Socket:
    """A listening TCP Socket bound to ``address`` (port 0 picks a free port)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return Socket(sock)


@types.coroutine
def create_connection(address: tuple[str, int], *, nodelay: bool = True
                    ) -> Generator[Trap, Any, Socket]:
    """Connect a new TCP Socket to ``address`` (TCP_NODELAY on by default) and return it."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = Socket(socket.socket(family, socket.SOCK_STREAM))
    try:
        if nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        yield from sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock
