"""The asyncio engine's own transport on the standard loop (`engines._transport`):
the contract with a Protocol that `_SelectorSocketTransport` keeps, kept.

Each test drives a real selector loop over a socketpair; the other end is a
plain blocking socket the test reads and writes.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref

import pytest

from flash_green.engines._transport import HIGH_WATER, LOW_WATER, SocketTransport

pytestmark = pytest.mark.timeout(30)


class Recorder(asyncio.Protocol):
    """Records every callback; `keep_open` is its answer to eof_received."""

    def __init__(self, keep_open: bool = False) -> None:
        self.keep_open = keep_open
        self.events: list[tuple] = []
        self.transport: SocketTransport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.events.append(("made",))

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", data))

    def eof_received(self) -> bool:
        self.events.append(("eof",))
        return self.keep_open

    def pause_writing(self) -> None:
        self.events.append(("pause",))

    def resume_writing(self) -> None:
        self.events.append(("resume",))

    def connection_lost(self, exc) -> None:
        self.events.append(("lost", exc))
        self.lost.set_result(exc)

    def named(self, name: str) -> list[tuple]:
        return [event for event in self.events if event[0] == name]


async def until(predicate, loop_passes: int = 10_000) -> None:
    """Let the loop run until `predicate()` holds (bounded by the test's timeout)."""
    for _ in range(loop_passes):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


def connect(*, small_buffer: bool = False, keep_open: bool = False,
            blocking_peer: bool = True) -> tuple[socket.socket, Recorder, SocketTransport]:
    """Our end of a socketpair on a transport (in the running loop), and
    theirs: a plain socket (a 4 KB send buffer makes our writes back up)."""
    ours, theirs = socket.socketpair()
    if blocking_peer:
        theirs.settimeout(10)
    if small_buffer:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    protocol = Recorder(keep_open=keep_open)
    return theirs, protocol, SocketTransport(asyncio.get_running_loop(), ours, protocol)


async def read_all(sock: socket.socket, count: int | None = None) -> bytes:
    """Read until `count` bytes, or else the end of file, through the loop
    (a blocking read would stop the loop from writing the rest)."""
    sock.setblocking(False)
    received = bytearray()
    while count is None or len(received) < count:
        chunk = await asyncio.get_running_loop().sock_recv(sock, 65536)
        if not chunk:
            break
        received += chunk
    return bytes(received)


def run(coroutine) -> None:
    asyncio.run(coroutine)


def test_bytes_in_both_directions_and_the_peer_named() -> None:
    async def main() -> None:
        theirs, protocol, transport = connect()
        assert protocol.events == [("made",)]
        ours = transport.get_extra_info("socket")
        assert transport.get_extra_info("peername") == ours.getpeername() == theirs.getsockname()
        theirs.sendall(b"ping")
        await until(lambda: protocol.named("data"))
        assert protocol.named("data") == [("data", b"ping")]
        transport.write(b"pong")
        assert theirs.recv(10) == b"pong"
        transport.close()
        assert await protocol.lost is None
        theirs.close()

    run(main())


def test_a_write_the_socket_cannot_take_is_buffered_with_back_pressure() -> None:
    async def main() -> None:
        theirs, protocol, transport = connect(small_buffer=True)
        payload = bytes(range(256)) * (HIGH_WATER // 64)  # 4x the high-water mark
        transport.write(payload)
        assert transport.get_write_buffer_size() > HIGH_WATER
        assert protocol.named("pause") == [("pause",)], "paused once, above the high-water mark"
        received = await read_all(theirs, len(payload))
        await until(lambda: transport.get_write_buffer_size() == 0)
        assert received == payload, "every byte, in order"
        assert protocol.named("resume") == [("resume",)], "resumed once, below the low-water mark"
        assert LOW_WATER < HIGH_WATER
        transport.close()
        await protocol.lost
        theirs.close()

    run(main())


class ClosingOnResume(Recorder):
    """Ends the connection from inside resume_writing, as HTTPProtocol does
    when the response that had filled the buffer was its last."""

    def __init__(self, end: str) -> None:
        super().__init__()
        self.end = end

    def resume_writing(self) -> None:
        super().resume_writing()
        getattr(self.transport, self.end)()


@pytest.mark.parametrize("end", ["close", "abort", "write_eof"])
def test_ending_from_resume_writing_leaves_no_watch_on_the_fd(end: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        protocol = ClosingOnResume(end)
        transport = SocketTransport(loop, ours, protocol)
        fd = ours.fileno()
        # More than the socket takes at once, so it backs up; with the
        # socket's full buffer, the send that brings it under the low-water
        # mark takes all the rest: resume_writing finds the buffer empty.
        payload = b"r" * (HIGH_WATER * 8)
        transport.write(payload)
        if end == "abort":
            await read_all(theirs)  # what went out before the abort, then the end
        else:
            assert await read_all(theirs, len(payload)) == payload
        assert protocol.named("resume")
        if end == "write_eof":
            assert await read_all(theirs) == b"", "the FIN, once"
            transport.close()
        await protocol.lost
        with pytest.raises(KeyError):
            loop._selector.get_key(fd)  # neither reader nor writer left on the closed fd
        theirs.close()

    run(main())


def test_close_waits_for_the_buffer_then_loses_the_connection_once() -> None:
    async def main() -> None:
        theirs, protocol, transport = connect(small_buffer=True)
        payload = b"x" * (HIGH_WATER * 2)
        transport.write(payload)
        transport.close()
        transport.close()
        assert transport.is_closing() and not protocol.lost.done(), "not lost while bytes wait"
        received = await read_all(theirs)
        assert len(received) == len(payload)
        await protocol.lost
        assert protocol.named("lost") == [("lost", None)]
        assert transport.get_extra_info("socket").fileno() == -1, "the socket is closed after connection_lost"
        theirs.close()

    run(main())


def test_a_closed_transport_lets_go_of_its_protocol() -> None:
    async def main() -> None:
        theirs, protocol, transport = connect()
        reference = weakref.ref(protocol)
        transport.close()
        await protocol.lost
        del protocol
        assert reference() is None, "no cycle left for the garbage collector"
        theirs.close()

    gc.disable()
    try:
        run(main())
    finally:
        gc.enable()


def test_connection_lost_never_comes_from_inside_the_protocols_call() -> None:
    async def main() -> None:
        theirs, protocol, transport = connect()
        transport.close()
        assert not protocol.named("lost"), "scheduled, not called from close()"
        await protocol.lost
        theirs.close()

    run(main())


def test_eof_closes_unless_the_protocol_keeps_it_for_writing() -> None:
    async def main(keep_open: bool) -> None:
        theirs, protocol, transport = connect(keep_open=keep_open)
        theirs.sendall(b"last")
        theirs.shutdown(socket.SHUT_WR)
        await until(lambda: protocol.named("eof"))
        assert protocol.named("data") == [("data", b"last")]
        if keep_open:
            assert not transport.is_closing() and not transport.is_reading()
            transport.pause_reading()
            transport.resume_reading()
            for _ in range(20):
                await asyncio.sleep(0.001)
            assert len(protocol.named("eof")) == 1, "reading is over after the end of file"
            transport.write(b"answer")
            assert theirs.recv(10) == b"answer"
            transport.close()
        await protocol.lost
        assert theirs.recv(10) == b"", "closed after the answer"
        theirs.close()

    run(main(keep_open=False))
    run(main(keep_open=True))


def test_write_eof_half_closes_after_what_is_buffered() -> None:
    async def main() -> None:
        theirs, protocol, transport = connect(small_buffer=True)
        assert transport.can_write_eof()
        payload = b"y" * (HIGH_WATER * 2)
        transport.write(payload)
        transport.write_eof()
        transport.write(b"ignored after write_eof")
        received = await read_all(theirs)
        assert received == payload, "the buffer first, then the FIN, nothing after"
        theirs.sendall(b"still read")  # half-closed: our side still reads
        await until(lambda: protocol.named("data"))
        transport.close()
        await protocol.lost
        theirs.close()

    run(main())


def test_pause_and_resume_reading() -> None:
    async def main() -> None:
        theirs, protocol, transport = connect()
        transport.pause_reading()
        assert not transport.is_reading()
        theirs.sendall(b"waits")
        for _ in range(20):
            await asyncio.sleep(0.001)
        assert not protocol.named("data"), "nothing read while paused"
        transport.resume_reading()
        await until(lambda: protocol.named("data"))
        assert protocol.named("data") == [("data", b"waits")]
        transport.close()
        await protocol.lost
        theirs.close()

    run(main())


def test_a_broken_connection_drops_the_buffer_and_reports_the_error_once() -> None:
    async def main() -> None:
        theirs, protocol, transport = connect(small_buffer=True, blocking_peer=False)
        transport.write(b"z" * (HIGH_WATER * 2))
        theirs.close()  # the client is gone with our bytes unread
        await protocol.lost
        assert len(protocol.named("lost")) == 1 and isinstance(protocol.named("lost")[0][1], OSError)
        assert transport.is_closing() and transport.get_write_buffer_size() == 0
        transport.write(b"after the loss")  # ignored, no error
        transport.close()
        await asyncio.sleep(0.01)
        assert len(protocol.named("lost")) == 1

    run(main())


class Broken(Recorder):
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        raise RuntimeError("a bug in the protocol")


def test_a_protocol_that_raises_is_logged_and_closed_once(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair()
        theirs.settimeout(10)
        protocol = Broken()
        SocketTransport(asyncio.get_running_loop(), ours, protocol)
        theirs.sendall(b"first")
        exc = await protocol.lost
        assert isinstance(exc, RuntimeError)
        assert theirs.recv(10) == b"", "closed"
        assert len(protocol.named("data")) == 1 and len(protocol.named("lost")) == 1
        theirs.close()

    run(main())
    assert "protocol failed on input" in caplog.text


def test_abort_drops_the_buffer_and_closes_now() -> None:
    async def main() -> None:
        theirs, protocol, transport = connect(small_buffer=True)
        transport.write(b"w" * (HIGH_WATER * 2))
        transport.abort()
        await protocol.lost
        assert transport.get_write_buffer_size() == 0
        theirs.close()

    run(main())
