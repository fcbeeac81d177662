"""An SSL socket for the loops that wait in epoll themselves (epoll, event, tasklets).

A non-blocking `ssl.SSLSocket` does not say "would block" the way a plain
socket does: it raises SSLWantReadError or SSLWantWriteError, which are
OSErrors, not BlockingIOErrors, so a loop written for plain sockets would
take an empty TLS socket for a broken one. `NonBlockingTLS` translates: a
recv that finds no whole record, or a send that finds the socket full,
raises BlockingIOError, and the loop waits exactly as it waits for a plain
socket (the direction is the call's own: see `flash_green.tls` for why a
read never waits to write here). The handshake, which waits both ways,
says which way.

The trap it also closes: OpenSSL may hold decrypted bytes that the kernel
no longer reports readable (`pending()`). A level-triggered loop that
waited then would wait for ever, so `recv` takes them along.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl

from .. import tls


class NonBlockingTLS:
    """`recv`/`send`/`shutdown`/`close`/`fileno` of a non-blocking SSL socket,
    with plain-socket manners (a `tasklets.io.Socket` can wrap it)."""

    __slots__ = ("tls", "fileno", "close", "setblocking")

    def __init__(self, tls_sock: ssl.SSLSocket) -> None:
        tls_sock.setblocking(False)
        self.tls = tls_sock
        self.fileno = tls_sock.fileno
        self.close = tls_sock.close
        self.setblocking = tls_sock.setblocking

    def handshake(self) -> int:
        """Advance the handshake: 0 once done, else the epoll event it waits for."""
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            return select.EPOLLIN
        except ssl.SSLWantWriteError:
            return select.EPOLLOUT
        return 0

    def recv(self, size: int, flags: int = 0) -> bytes:
        sock = self.tls
        try:
            data = sock.recv(size, flags)
        except ssl.SSLWantReadError:
            raise BlockingIOError(errno.EAGAIN, "no whole TLS record yet") from None
        left = sock.pending()
        while left:
            data += sock.recv(left)
            left = sock.pending()
        return data

    def send(self, data, flags: int = 0) -> int:
        """All of `data`, or BlockingIOError having taken none of it for the
        caller: OpenSSL keeps what it began, and the caller sends the same
        bytes again (more may follow them), as after a plain EAGAIN."""
        try:
            return self.tls.send(data, flags)
        except ssl.SSLWantWriteError:
            raise BlockingIOError(errno.EAGAIN, "the socket is full") from None

    def shutdown(self, how: int) -> None:
        """Writes end with close_notify, then FIN; afterwards `recv` reads raw bytes."""
        if how != socket.SHUT_RD:
            tls.send_close_notify(self.tls)
        self.tls.shutdown(how)
