"""fd waits and sockets: one waiter per direction, fd reuse, close, lazy epoll, an echo server."""

from __future__ import annotations

import errno
import os
import socket
import tempfile

import pytest

import tasklets
from tasklets import (
    ClosedError,
    Kernel,
    ResourceBusy,
    TaskletError,
    read_wait,
    sleep,
    spawn,
    write_wait,
)
from tasklets.io import Socket, create_connection, create_server


@pytest.fixture
def kernel():
    k = Kernel()
    yield k
    k.close()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def _settle():
    yield from sleep(0)
    yield from sleep(0)


def _until(condition):
    """Reschedule until ``condition()`` holds: synchronises on state, not on time."""
    for _ in range(10_000):
        if condition():
            return
        yield from sleep(0)
    raise AssertionError("condition never became true")


# --- raw fd waits ---------------------------------------------------------------------

def test_read_wait_wakes_when_data_arrives(pair):
    a, b = pair
    trace = []

    def reader():
        trace.append("waiting")
        yield from read_wait(a)  # an object with fileno() works as well as an int
        trace.append(a.recv(10))

    def main():
        task = spawn(reader)
        yield from _settle()
        assert task.state == "READ_WAIT"
        trace.append("sending")
        b.send(b"hello")
        yield from task.join()

    tasklets.run(main)
    assert trace == ["waiting", "sending", b"hello"]


def test_write_wait_on_a_writable_socket_returns_after_one_poll(pair):
    a, _ = pair

    def main():
        yield from write_wait(a.fileno())
        return "writable"

    assert tasklets.run(main) == "writable"


def test_a_second_reader_on_one_fd_gets_resource_busy(pair):
    a, b = pair

    def main():
        first = spawn(read_wait, a)
        yield from _settle()
        second = spawn(read_wait, a)
        with pytest.raises(TaskletError) as info:
            yield from second.join()
        assert isinstance(info.value.__cause__, ResourceBusy)
        assert first.state == "READ_WAIT"  # the first waiter was not displaced
        b.send(b"x")
        yield from first.join()

    tasklets.run(main)


def test_a_reader_and_a_writer_may_share_an_fd(kernel, pair):
    a, b = pair

    def main():
        reader = spawn(read_wait, a)
        writer = spawn(write_wait, a)
        yield from writer.join()
        assert reader.state == "READ_WAIT"
        b.send(b"x")
        yield from reader.join()

    kernel.run(main)
    assert kernel.stats().epoll_modify >= 1  # IN and OUT on one registration


def test_waiting_on_a_regular_file_raises_in_the_waiter():
    with tempfile.TemporaryFile() as f:
        def main():
            with pytest.raises(PermissionError):  # epoll refuses regular files: EPERM
                yield from read_wait(f)
        tasklets.run(main)


def test_waiting_on_a_closed_fd_raises_in_the_waiter():
    def main():
        r, w = os.pipe()  # made (and closed) while the kernel runs, so the
        os.close(r)       # number is not reused by the kernel's own fds
        os.close(w)
        with pytest.raises(OSError) as info:
            yield from read_wait(r)
        assert info.value.errno == errno.EBADF

    tasklets.run(main)


def test_lazy_unregistration_saves_epoll_ctl_calls(kernel, pair):
    a, b = pair
    rounds = 5

    def reader():
        for _ in range(rounds):
            yield from read_wait(a)
            a.recv(100)  # then wait on the same fd again, within the same step

    def main():
        task = spawn(reader)
        for _ in range(rounds):
            yield from _until(lambda: task.state == "READ_WAIT")
            b.send(b"x")
            yield from _until(lambda: task.state != "READ_WAIT")
        yield from task.join()
        yield from sleep(0.001)  # one more poll, before which the kernel tidies up

    kernel.run(main)
    stats = kernel.stats()
    # One ADD for the eventfd, one for the socket; five waits, no MOD, and a
    # single DEL once the reader stopped waiting.
    assert (stats.epoll_register, stats.epoll_modify, stats.epoll_unregister) == (2, 0, 1)
    assert stats.traps["ReadWait"] == rounds


# --- close and fd reuse ------------------------------------------------------------------

def test_closing_a_socket_wakes_its_waiter_with_an_error(kernel, pair):
    a, _ = pair

    def main():
        sock = Socket(a)
        task = spawn(sock.recv, 100)
        yield from _settle()
        assert task.state == "READ_WAIT"
        sock.close()
        with pytest.raises(TaskletError) as info:
            yield from task.join()
        error = info.value.__cause__
        assert isinstance(error, ClosedError)
        assert isinstance(error, OSError) and error.errno == errno.EBADF
        sock.close()  # idempotent

    kernel.run(main)
    assert kernel._registered == {kernel._wake_fd: 1}  # only the kernel's own eventfd


def test_fd_number_reuse_after_close_never_wakes_the_wrong_tasklet(kernel):
    old_a, old_b = socket.socketpair()
    # A duplicate keeps the old file description open after the close, so
    # any registration left behind in epoll would keep reporting it - under
    # the fd number the new socket is about to get.
    keep_alive = os.dup(old_a.fileno())
    old_number = old_a.fileno()

    def main():
        old = Socket(old_a)
        first = spawn(old.recv, 100)
        yield from _settle()
        old.close()
        with pytest.raises(TaskletError):
            yield from first.join()

        new_a, new_b = socket.socketpair()
        try:
            assert new_a.fileno() == old_number  # the number was reused
            new = Socket(new_a)
            second = spawn(new.recv, 100)
            yield from _settle()
            old_b.send(b"for the OLD socket")  # readable: the old description
            for _ in range(200):  # many passes, many polls
                yield from sleep(0)
            assert second.state == "READ_WAIT"  # not woken by the old socket's data
            new_b.send(b"for the new socket")
            assert (yield from second.join()) == b"for the new socket"
        finally:
            new_a.close()
            new_b.close()

    try:
        kernel.run(main)
    finally:
        os.close(keep_alive)
        old_b.close()


def test_forget_fd_wakes_raw_waiters_before_a_raw_close(kernel):
    r, w = os.pipe()

    def main():
        task = spawn(read_wait, r)
        yield from _settle()
        kernel.forget_fd(r)
        os.close(r)
        with pytest.raises(TaskletError) as info:
            yield from task.join()
        assert isinstance(info.value.__cause__, ClosedError)

    try:
        kernel.run(main)
    finally:
        os.close(w)


# --- Socket operations ------------------------------------------------------------------

def test_recv_with_data_already_buffered_never_enters_the_kernel(kernel, pair):
    a, b = pair
    b.send(b"ready")

    def main():
        sock = Socket(a)
        data = yield from sock.recv(100)
        return data

    assert kernel.run(main) == b"ready"
    stats = kernel.stats()
    assert stats.steps == 1  # started, received, returned: one step, no trap
    assert sum(stats.traps.values()) == 0


def test_recv_into_and_send(pair):
    a, b = pair

    def main():
        left, right = Socket(a), Socket(b)
        assert (yield from left.send(b"abc")) == 3
        buffer = bytearray(10)
        n = yield from right.recv_into(buffer)
        return bytes(buffer[:n])

    assert tasklets.run(main) == b"abc"


def test_sendall_large_payload_in_pieces_arrives_intact(pair):
    a, b = pair
    payload = os.urandom(4 * 1024 * 1024)

    def receiver(sock):
        chunks = []
        while True:
            chunk = yield from sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def main():
        left, right = Socket(a), Socket(b)
        task = spawn(receiver, right)
        yield from left.sendall(memoryview(payload))
        left.shutdown(socket.SHUT_WR)
        return (yield from task.join())

    assert tasklets.run(main) == payload


def test_sendall_of_a_non_byte_buffer_counts_bytes(pair):
    a, b = pair
    import array
    numbers = array.array("i", range(1000))

    def main():
        yield from Socket(a).sendall(numbers)
        received = b""
        right = Socket(b)
        while len(received) < numbers.itemsize * len(numbers):
            received += yield from right.recv(65536)
        return received

    assert tasklets.run(main) == numbers.tobytes()


def test_sendfile_sends_the_file_and_moves_its_position(pair):
    a, b = pair
    content = os.urandom(512 * 1024)

    def receiver(sock, size):
        data = b""
        while len(data) < size:
            data += yield from sock.recv(65536)
        return data

    with tempfile.TemporaryFile() as f:
        f.write(content)
        f.flush()

        def main():
            task = spawn(receiver, Socket(b), len(content) - 1000)
            sent = yield from Socket(a).sendfile(f, offset=1000)
            assert sent == len(content) - 1000
            assert f.tell() == len(content)
            return (yield from task.join())

        assert tasklets.run(main) == content[1000:]


def test_connect_to_a_closed_port_is_refused():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()

    def main():
        with pytest.raises(ConnectionRefusedError):
            yield from create_connection(("127.0.0.1", port))

    tasklets.run(main)


def test_echo_server_with_1000_concurrent_clients(kernel):
    clients = 1000

    def handle(conn):
        with conn:
            while data := (yield from conn.recv(65536)):
                yield from conn.sendall(data)

    def acceptor(server):
        while True:
            conn, _ = yield from server.accept()
            spawn(handle, conn, daemon=True)

    def client(port, i):
        sock = yield from create_connection(("127.0.0.1", port))
        with sock:
            message = f"hello from client {i}".encode()
            yield from sock.sendall(message)
            reply = b""
            while len(reply) < len(message):
                reply += yield from sock.recv(65536)
            return reply == message

    def main():
        server = create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]
        spawn(acceptor, server, daemon=True)
        tasks = [spawn(client, port, i) for i in range(clients)]
        results = []
        for task in tasks:
            results.append((yield from task.join()))
        server.close()
        return results

    assert kernel.run(main) == [True] * clients
    stats = kernel.stats()
    assert stats.tasklets_finished >= clients + 1
    assert stats.epoll_events >= clients
