"""A TCP socket as an asyncio transport on the standard loop, without the fat.

The asyncio engine's Protocol needs a transport: something that calls
`data_received` when bytes arrive, takes `write`s, says `pause_writing`
when the client reads too slowly, half-closes with `write_eof` and reports
`connection_lost` once. On uvloop that is libuv's transport, in C. On the
standard loop it would be `_SelectorSocketTransport`, made by
`loop.connect_accepted_socket`, whose generality (sendfile, buffered
protocols, start_tls, the server's bookkeeping, a write path that checks
six things before its send) costs more per request than the whole tasklets
kernel: a canned-reply Protocol server does 22.2k instructions per request
on it, the same server with `loop.add_reader` and its own recv/send 14.4k
(callgrind, c=100; docs/hot-path.md). So on the standard loop the engine
brings this one: the same loop (`add_reader`, `add_writer`, `call_soon`),
the same contract with the Protocol, only what an HTTP server uses.

The contract, as the standard transport keeps it:
* reading starts after `connection_made`; `pause_reading` and
  `resume_reading` remove and restore the reader;
* `write` sends at once what the socket takes and buffers the rest,
  writing it on EPOLLOUT; past `HIGH_WATER` buffered bytes the Protocol
  gets `pause_writing`, below `LOW_WATER` again `resume_writing`;
* at the client's end of file `eof_received` decides: True keeps the
  transport for writing (reading stops), False closes it;
* `write_eof` half-closes once the buffer is out; `close` stops reading
  and closes once the buffer is out; a failed send or recv drops the
  buffer and closes at once;
* `connection_lost` comes exactly once, from a later loop pass (never from
  inside a call the Protocol made), and the socket is closed after it;
* a Protocol that raises from `data_received` or `eof_received` is logged
  and its connection closed (the loop would otherwise call it again and
  again with the reader still registered).
"""

from __future__ import annotations

import asyncio
import logging
import socket

from .base import RECV_SIZE

log = logging.getLogger("flash.engine.asyncio")

#: Buffered bytes above which the Protocol is asked to stop writing, and
#: below which it may go on: the standard transport's defaults (64 KiB, 1/4).
HIGH_WATER = 64 * 1024
LOW_WATER = HIGH_WATER // 4


class SocketTransport(asyncio.Transport):
    """One accepted TCP socket (non-blocking) driving one Protocol."""

    __slots__ = ("_loop", "_sock", "_fd", "_protocol", "_buffer", "_peer", "_closing", "_lost",
                 "_eof_wanted", "_eof_sent", "_reading", "_at_eof", "_protocol_paused")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 protocol: asyncio.Protocol) -> None:
        super().__init__()
        sock.setblocking(False)
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        #: What the socket did not take yet (empty: nothing waits for EPOLLOUT).
        self._buffer = bytearray()
        try:
            self._peer = sock.getpeername()
        except OSError:  # reset before we looked: an unnamed peer
            self._peer = None
        self._closing = False
        #: connection_lost is scheduled (or done): nothing more happens.
        self._lost = False
        self._eof_wanted = False
        self._eof_sent = False
        #: The reader is registered.
        self._reading = True
        #: The client's end of file was read: reading is over for good.
        self._at_eof = False
        self._protocol_paused = False
        protocol.connection_made(self)
        if self._reading and not self._closing:
            loop.add_reader(self._fd, self._read_ready)

    # -- reading --------------------------------------------------------------------

    def _read_ready(self) -> None:
        try:
            data = self._sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        try:
            if data:
                self._protocol.data_received(data)
                return
            self._loop.remove_reader(self._fd)
            self._reading = False
            self._at_eof = True
            if not self._protocol.eof_received():
                self.close()
        except Exception as exc:  # a bug above us: as the standard transport does, say it and close
            log.exception("protocol failed on input from %s", self._peer)
            self._fail(exc)

    def pause_reading(self) -> None:
        if self._reading and not self._closing:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not (self._reading or self._closing or self._at_eof):
            self._reading = True
            self._loop.add_reader(self._fd, self._read_ready)

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    # -- writing --------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._lost or self._eof_wanted or not data:
            return
        if not self._buffer:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._fail(exc)
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
            self._loop.add_writer(self._fd, self._write_ready)
        self._buffer += data
        if not self._protocol_paused and len(self._buffer) > HIGH_WATER:
            self._protocol_paused = True
            self._protocol.pause_writing()

    def _write_ready(self) -> None:
        try:
            sent = self._sock.send(self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        del self._buffer[:sent]
        if not self._buffer:
            # First: a writer is registered exactly while bytes wait, and
            # resume_writing may close the connection (its socket is closed
            # a pass later; a writer left on that fd would outlive it).
            self._loop.remove_writer(self._fd)
        if self._protocol_paused and len(self._buffer) <= LOW_WATER:
            self._protocol_paused = False
            self._protocol.resume_writing()  # may write more, or close
        if self._buffer or self._lost:
            return
        if self._closing:
            self._lose(None)
        elif self._eof_wanted:
            self._shut_write()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof_wanted:
            return
        self._eof_wanted = True
        if not self._buffer:
            self._shut_write()

    def _shut_write(self) -> None:
        if self._eof_sent:  # (write_eof from inside resume_writing, then _write_ready)
            return
        self._eof_sent = True
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._fail(exc)

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    # -- closing --------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; close once what is buffered is out."""
        if self._closing:
            return
        self._closing = True
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)
        if not self._buffer:
            self._lose(None)

    def abort(self) -> None:
        self._fail(None)

    def _fail(self, exc: Exception | None) -> None:
        """The socket broke (or abort): drop what is buffered, close now."""
        if self._buffer:
            self._buffer.clear()
            self._loop.remove_writer(self._fd)
        self._closing = True
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)
        self._lose(exc)

    def _lose(self, exc: Exception | None) -> None:
        if not self._lost:
            self._lost = True
            self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()
            # The Protocol holds us: without this the pair is a cycle that
            # only the cyclic GC would free, for every closed connection.
            self._protocol = None

    # -- what the Protocol may ask ----------------------------------------------------

    def get_extra_info(self, name: str, default=None):
        if name == "peername":
            return self._peer
        if name == "socket":
            return self._sock
        if name == "sockname":
            try:
                return self._sock.getsockname()
            except OSError:
                return default
        return default
