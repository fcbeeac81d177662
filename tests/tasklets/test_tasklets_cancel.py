"""Cancellation at every kind of wait, and nested timeouts.

The pattern of the first group: a victim blocks in some wait; main checks
that it is parked in the expected state, cancels it, joins it, and then
checks that the wait was *undone* - the victim left no trace in the fd
tables, timer queue or wait queue it was parked on.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

import tasklets
from tasklets import (
    Cancelled,
    Channel,
    Event,
    Kernel,
    Lock,
    Queue,
    Semaphore,
    TaskletError,
    TaskletTimeout,
    TimeoutCancelled,
    current,
    ignore_after,
    sleep,
    spawn,
    timeout_after,
)
from tasklets.io import Socket


@pytest.fixture
def kernel():
    k = Kernel()
    yield k
    k.close()


def _settle():
    """Let freshly spawned tasklets run until they block (two passes is plenty)."""
    yield from sleep(0)
    yield from sleep(0)


def _cancel_and_join(task):
    assert task.cancel() is True
    with pytest.raises(TaskletError) as info:
        yield from task.join()
    assert isinstance(info.value.__cause__, Cancelled)
    assert task.state == "CANCELLED"


def _full_socketpair():
    """A connected pair whose first socket's send buffer is full (not writable)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    return a, b


# --- every kind of wait ---------------------------------------------------------------

def test_cancel_while_sleeping_removes_the_timer(kernel):
    def main():
        victim = spawn(sleep, 100)
        yield from _settle()
        assert victim.state == "SLEEP"
        yield from _cancel_and_join(victim)

    kernel.run(main)
    stats = kernel.stats()
    assert (stats.timers_set, stats.timers_cancelled, stats.timers_fired) == (1, 1, 0)
    assert len(kernel._timers) == 0


def test_cancel_while_read_waiting_frees_the_fd(kernel):
    r, w = os.pipe()

    def main():
        victim = spawn(tasklets.read_wait, r)
        yield from _settle()
        assert victim.state == "READ_WAIT"
        assert kernel._readers == {r: victim}
        yield from _cancel_and_join(victim)
        assert kernel._readers == {}
        # The fd is free for a new reader, which gets the data.
        reader = spawn(tasklets.read_wait, r)
        yield from _settle()
        os.write(w, b"!")
        yield from reader.join()

    try:
        kernel.run(main)
    finally:
        os.close(r)
        os.close(w)


def test_cancel_while_write_waiting_frees_the_fd(kernel):
    a, b = _full_socketpair()

    def main():
        victim = spawn(tasklets.write_wait, a)
        yield from _settle()
        assert victim.state == "WRITE_WAIT"
        yield from _cancel_and_join(victim)
        assert kernel._writers == {}

    try:
        kernel.run(main)
    finally:
        a.close()
        b.close()


def test_cancel_while_joining_leaves_the_target_alone():
    def main():
        event = Event()
        target = spawn(event.wait)
        victim = spawn(tasklets.join, target)
        yield from _settle()
        assert victim.state == "JOIN"
        yield from _cancel_and_join(victim)
        assert target._joiners == []
        event.set()
        assert (yield from target.join()) is True

    tasklets.run(main)


def test_cancel_while_waiting_for_an_event():
    def main():
        event = Event()
        victim = spawn(event.wait)
        survivor = spawn(event.wait)
        yield from _settle()
        assert victim.state == "EVENT"
        yield from _cancel_and_join(victim)
        assert len(event._waiters) == 1
        event.set()
        assert (yield from survivor.join()) is True

    tasklets.run(main)


def test_cancel_while_waiting_for_a_lock():
    def holder(lock, release):
        yield from lock.acquire()
        yield from release.wait()
        lock.release()

    def main():
        lock, release = Lock(), Event()
        owner = spawn(holder, lock, release)
        yield from _settle()
        victim = spawn(lock.acquire)
        yield from _settle()
        assert victim.state == "LOCK"
        yield from _cancel_and_join(victim)
        assert lock.owner is owner
        release.set()
        yield from owner.join()
        assert not lock.locked()  # not handed to the cancelled waiter

    tasklets.run(main)


def test_cancel_while_waiting_for_a_semaphore():
    def main():
        sem = Semaphore(0)
        victim = spawn(sem.acquire)
        yield from _settle()
        assert victim.state == "SEMAPHORE"
        yield from _cancel_and_join(victim)
        sem.release()
        assert sem.value == 1

    tasklets.run(main)


def test_cancel_while_waiting_in_queue_get():
    def main():
        queue = Queue()
        victim = spawn(queue.get)
        yield from _settle()
        assert victim.state == "QUEUE_GET"
        yield from _cancel_and_join(victim)
        yield from queue.put("kept")  # goes into the queue, not to the dead getter
        assert queue.qsize() == 1
        assert (yield from queue.get()) == "kept"

    tasklets.run(main)


def test_cancel_while_waiting_in_queue_put():
    def main():
        queue = Queue(maxsize=1)
        yield from queue.put("first")
        victim = spawn(queue.put, "never")
        yield from _settle()
        assert victim.state == "QUEUE_PUT"
        yield from _cancel_and_join(victim)
        assert (yield from queue.get()) == "first"
        assert queue.empty()  # the cancelled put left nothing behind

    tasklets.run(main)


def test_cancel_while_sending_on_a_channel():
    def main():
        channel = Channel()
        victim = spawn(channel.send, "lost")
        yield from _settle()
        assert victim.state == "CHANNEL_SEND"
        assert channel.balance == 1
        yield from _cancel_and_join(victim)
        assert channel.balance == 0

    tasklets.run(main)


def test_cancel_while_receiving_on_a_channel():
    def main():
        channel = Channel()
        victim = spawn(channel.receive)
        yield from _settle()
        assert victim.state == "CHANNEL_RECEIVE"
        assert channel.balance == -1
        yield from _cancel_and_join(victim)
        assert channel.balance == 0

    tasklets.run(main)


def test_cancel_while_waiting_for_a_thread_discards_its_result(kernel):
    gate = threading.Event()
    finished = threading.Event()

    def blocking():
        assert gate.wait(10)
        finished.set()
        return "nobody wants me"

    def main():
        victim = spawn(tasklets.run_in_thread, blocking)
        yield from _settle()
        assert victim.state == "THREAD"
        yield from _cancel_and_join(victim)  # woken at once, the thread still runs
        assert not finished.is_set()
        gate.set()

    kernel.run(main)
    kernel.close()  # waits for the pool
    assert finished.is_set()


# --- cancellation timing ----------------------------------------------------------------

def test_cancelling_a_runnable_spinner_delivers_at_its_next_schedule():
    def spinner():
        while True:
            yield from sleep(0)

    def main():
        task = spawn(spinner)
        yield from _settle()
        yield from _cancel_and_join(task)

    tasklets.run(main)


def test_self_cancel_is_delivered_at_the_next_blocking_point():
    trace = []

    def victim():
        current().cancel()
        trace.append("still running")
        try:
            yield from sleep(0)
        except Cancelled:
            trace.append("cancelled at sleep")
            raise

    def main():
        with pytest.raises(TaskletError):
            yield from spawn(victim).join()

    tasklets.run(main)
    assert trace == ["still running", "cancelled at sleep"]


def test_a_lock_handed_to_a_cancelled_waiter_is_not_lost():
    trace = []

    def waiter(lock):
        yield from lock.acquire()
        trace.append("got the lock")
        try:
            yield from sleep(0)  # the pending cancellation lands here
        finally:
            lock.release()
            trace.append("released")

    def main():
        lock = Lock()
        yield from lock.acquire()
        task = spawn(waiter, lock)
        yield from _settle()
        lock.release()          # hands the lock to the waiter: it is READY, owning it
        assert lock.owner is task
        task.cancel()           # it must still get the lock, then be cancelled
        with pytest.raises(TaskletError):
            yield from task.join()
        assert not lock.locked()

    tasklets.run(main)
    assert trace == ["got the lock", "released"]


def test_an_item_handed_to_a_cancelled_getter_is_not_lost():
    got = []

    def getter(queue):
        got.append((yield from queue.get()))
        yield from sleep(0)

    def main():
        queue = Queue()
        task = spawn(getter, queue)
        yield from _settle()
        yield from queue.put("precious")
        task.cancel()
        with pytest.raises(TaskletError):
            yield from task.join()

    tasklets.run(main)
    assert got == ["precious"]


def test_a_tasklet_may_catch_cancelled_and_carry_on():
    def stubborn():
        try:
            yield from sleep(100)
        except Cancelled:
            pass
        yield from sleep(0)
        return "survived"

    def main():
        task = spawn(stubborn)
        yield from _settle()
        task.cancel()
        return (yield from task.join())

    assert tasklets.run(main) == "survived"


def test_cancel_with_a_custom_exception():
    def main():
        task = spawn(sleep, 100)
        yield from _settle()
        task.cancel(LookupError("custom"))
        with pytest.raises(TaskletError) as info:
            yield from task.join()
        assert isinstance(info.value.__cause__, LookupError)
        assert task.state == "CRASHED"

    tasklets.run(main)


def test_tasklet_exit_is_the_stackless_name_for_cancelled():
    assert tasklets.TaskletExit is Cancelled
    assert not issubclass(Cancelled, Exception)  # `except Exception` does not swallow it


# --- timeouts ----------------------------------------------------------------------------

def test_timeout_after_raises_when_the_deadline_passes(kernel):
    def main():
        with pytest.raises(TaskletTimeout) as info:
            yield from timeout_after(0.01, sleep(100))
        assert isinstance(info.value, TimeoutError)

    kernel.run(main)
    stats = kernel.stats()
    # Two timers: the sleep (cancelled by the timeout) and the deadline (fired).
    assert (stats.timers_set, stats.timers_cancelled, stats.timers_fired) == (2, 1, 1)


def test_timeout_after_returns_the_result_in_time(kernel):
    def quick():
        yield from sleep(0)
        return "fast"

    def main():
        assert (yield from timeout_after(100, quick())) == "fast"
        assert (yield from timeout_after(100, quick)) == "fast"  # a function works too

    kernel.run(main)
    stats = kernel.stats()
    assert (stats.timers_set, stats.timers_cancelled, stats.timers_fired) == (2, 2, 0)


def test_nested_timeouts_inner_expires_first():
    trace = []

    def inner_work():
        try:
            yield from timeout_after(0.01, sleep(100))
        except TaskletTimeout:
            trace.append("inner timed out")
        yield from sleep(0)
        return "outer work finished"

    def main():
        trace.append((yield from timeout_after(100, inner_work())))

    tasklets.run(main)
    assert trace == ["inner timed out", "outer work finished"]


def test_nested_timeouts_outer_expires_first():
    trace = []

    def inner_work():
        try:
            yield from sleep(100)
        except BaseException as exc:
            trace.append(type(exc).__name__)  # what the inner work saw
            raise

    def middle():
        try:
            yield from timeout_after(100, inner_work())
        except TaskletTimeout:  # pragma: no cover - must not happen
            trace.append("the inner timeout_after wrongly claimed the timeout")

    def main():
        with pytest.raises(TaskletTimeout) as info:
            yield from timeout_after(0.01, middle())
        assert info.value.seconds == 0.01
        trace.append("outer timed out")

    tasklets.run(main)
    assert trace == ["TimeoutCancelled", "outer timed out"]


def test_inner_code_cannot_swallow_an_outer_timeout_with_except_timeout_error():
    swallowed = []

    def careless():
        try:
            yield from sleep(100)
        except (TimeoutError, OSError, Exception):
            swallowed.append(True)

    def main():
        with pytest.raises(TaskletTimeout):
            yield from timeout_after(0.01, timeout_after(100, careless()))

    tasklets.run(main)
    assert swallowed == []
    assert issubclass(TimeoutCancelled, Cancelled)


def test_ignore_after_returns_the_timeout_result():
    def main():
        assert (yield from ignore_after(0.01, sleep(100))) is None
        assert (yield from ignore_after(0.01, sleep, 100, timeout_result="late")) == "late"
        assert (yield from ignore_after(100, sleep(0), timeout_result="late")) is None

    tasklets.run(main)


def test_ignore_after_does_not_ignore_an_inner_timeout():
    def main():
        with pytest.raises(TaskletTimeout):
            yield from ignore_after(100, timeout_after(0.01, sleep(100)))

    tasklets.run(main)


def test_a_timeout_firing_while_the_tasklet_is_ready_waits_for_its_next_blocking_point():
    steps = []

    def busy():
        end = time.monotonic() + 0.02
        while time.monotonic() < end:  # overrun the deadline without yielding
            pass
        for i in range(10_000):
            steps.append(i)
            yield from sleep(0)  # the kernel sees the expired timer; we are READY

    def main():
        with pytest.raises(TaskletTimeout):
            yield from timeout_after(0.005, busy())

    tasklets.run(main)
    assert 1 <= len(steps) < 10_000


def test_an_operation_finishing_as_its_deadline_passes_keeps_its_result():
    def body():
        end = time.monotonic() + 0.02
        while time.monotonic() < end:
            pass
        yield from sleep(0)  # poll_every=1: the timer fires here, while we are READY
        return "made it"

    def main():
        assert (yield from timeout_after(0.005, body())) == "made it"
        for _ in range(3):
            yield from sleep(0)  # no stale timeout is delivered afterwards
        return "clean"

    assert tasklets.run(main, poll_every=1) == "clean"


def test_timeout_on_a_socket_recv_then_the_socket_still_works():
    a, b = socket.socketpair()

    def main():
        sock = Socket(a)
        with pytest.raises(TaskletTimeout):
            yield from timeout_after(0.01, sock.recv(100))
        b.send(b"later")
        return (yield from timeout_after(10, sock.recv(100)))

    try:
        assert tasklets.run(main) == b"later"
    finally:
        a.close()
        b.close()


def test_cancelling_a_tasklet_inside_timeout_after_unwinds_the_scope(kernel):
    def main():
        victim = spawn(timeout_after, 100, sleep(100))
        yield from _settle()
        yield from _cancel_and_join(victim)

    kernel.run(main)
    stats = kernel.stats()
    assert (stats.timers_set, stats.timers_cancelled) == (2, 2)
    assert len(kernel._timers) == 0
