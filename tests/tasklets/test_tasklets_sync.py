"""Event, Lock, Semaphore, Queue, Channel: exact orderings of who gets what, when."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tasklets
from tasklets import Channel, Event, Kernel, Lock, Queue, Semaphore, TaskletError, sleep, spawn


def _settle():
    yield from sleep(0)
    yield from sleep(0)


# --- Event ------------------------------------------------------------------------------

def test_event_wakes_every_waiter_in_arrival_order():
    trace = []

    def waiter(name, event):
        trace.append(f"{name} waits")
        assert (yield from event.wait()) is True
        trace.append(f"{name} woke")

    def main():
        event = Event()
        for name in "abc":
            spawn(waiter, name, event)
        yield from _settle()
        trace.append("set")
        event.set()
        yield from _settle()

    tasklets.run(main)
    assert trace == ["a waits", "b waits", "c waits", "set", "a woke", "b woke", "c woke"]


def test_waiting_on_a_set_event_does_not_block():
    k = Kernel()

    def main():
        event = Event()
        event.set()
        assert event.is_set()
        yield from event.wait()
        event.clear()
        assert not event.is_set()

    k.run(main)
    assert k.stats().traps["Park"] == 0
    k.close()


# --- Lock -------------------------------------------------------------------------------

def test_lock_is_handed_over_in_fifo_order():
    trace = []

    def worker(name, lock):
        yield from lock.acquire()
        try:
            trace.append(f"{name} in")
            yield from sleep(0)  # hold it across a yield: others must wait
            trace.append(f"{name} out")
        finally:
            lock.release()

    def main():
        lock = Lock()
        tasks = [spawn(worker, name, lock) for name in "abc"]
        for task in tasks:
            yield from task.join()
        assert not lock.locked()

    tasklets.run(main)
    assert trace == ["a in", "a out", "b in", "b out", "c in", "c out"]


def test_lock_misuse_is_an_error():
    def main():
        lock = Lock()
        with pytest.raises(RuntimeError, match="unlocked"):
            lock.release()
        yield from lock.acquire()
        assert lock.owner is tasklets.current()
        with pytest.raises(RuntimeError, match="not re-entrant"):
            yield from lock.acquire()
        lock.release()

    tasklets.run(main)


def test_a_released_lock_cannot_be_barged_by_a_newcomer():
    trace = []

    def waiter(lock):
        yield from lock.acquire()
        trace.append("waiter got it")
        lock.release()

    def newcomer(lock):
        yield from lock.acquire()
        trace.append("newcomer got it")
        lock.release()

    def main():
        lock = Lock()
        yield from lock.acquire()
        spawn(waiter, lock)
        yield from _settle()
        lock.release()          # handed to the waiter, though it has not run yet
        spawn(newcomer, lock)   # arrives while the waiter is still only READY
        yield from _settle()

    tasklets.run(main)
    assert trace == ["waiter got it", "newcomer got it"]


# --- Semaphore --------------------------------------------------------------------------

def test_semaphore_admits_at_most_value_holders():
    inside = []
    peak = []

    def worker(sem):
        yield from sem.acquire()
        inside.append(1)
        peak.append(len(inside))
        yield from sleep(0)
        inside.pop()
        sem.release()

    def main():
        sem = Semaphore(2)
        tasks = [spawn(worker, sem) for _ in range(6)]
        for task in tasks:
            yield from task.join()
        assert sem.value == 2

    tasklets.run(main)
    assert max(peak) == 2


def test_semaphore_rejects_a_negative_value():
    with pytest.raises(ValueError):
        Semaphore(-1)


# --- Queue ------------------------------------------------------------------------------

def test_bounded_queue_producer_consumer_trace():
    trace = []

    def producer(queue):
        for i in range(4):
            yield from queue.put(i)
            trace.append(f"put {i}")
        yield from queue.put(None)

    def consumer(queue):
        while (item := (yield from queue.get())) is not None:
            trace.append(f"got {item}")

    def main():
        queue = Queue(maxsize=2)
        p = spawn(producer, queue)
        c = spawn(consumer, queue)
        yield from p.join()
        yield from c.join()

    tasklets.run(main)
    # put 0, put 1 fill the queue and put(2) blocks; the consumer takes 0 and
    # admits 2, takes 1, takes 2, then waits; the producer, woken, goes on.
    assert trace == ["put 0", "put 1", "got 0", "got 1", "got 2",
                     "put 2", "put 3", "got 3"]


def test_queue_put_blocks_when_full_and_get_blocks_when_empty():
    def main():
        queue = Queue(maxsize=1)
        getter = spawn(queue.get)
        yield from _settle()
        assert getter.state == "QUEUE_GET"
        yield from queue.put("a")           # handed straight to the waiting getter
        assert queue.empty()
        assert (yield from getter.join()) == "a"
        yield from queue.put("b")
        assert queue.full()
        putter = spawn(queue.put, "c")
        yield from _settle()
        assert putter.state == "QUEUE_PUT"
        assert (yield from queue.get()) == "b"  # frees a slot: "c" moves in
        assert putter.state == "READY"          # its put is complete; it just has not run
        assert queue.qsize() == 1
        assert (yield from queue.get()) == "c"

    tasklets.run(main)


@settings(max_examples=30, deadline=None)
@given(maxsize=st.integers(0, 4),
       plan=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 5)), min_size=1, max_size=6))
def test_queue_delivers_every_item_exactly_once_in_fifo_order(maxsize, plan):
    # plan: one (pause, count) pair per producer; two consumers share the items.
    total = sum(count for _, count in plan)
    received = {"left": [], "right": []}

    def producer(index, pause, count, queue):
        for _ in range(pause):
            yield from sleep(0)
        for n in range(count):
            yield from queue.put((index, n))

    def consumer(queue, name, share):
        for _ in range(share):
            received[name].append((yield from queue.get()))

    def main():
        queue = Queue(maxsize)
        tasks = [spawn(consumer, queue, "left", total // 2),
                 spawn(consumer, queue, "right", total - total // 2)]
        tasks += [spawn(producer, i, pause, count, queue) for i, (pause, count) in enumerate(plan)]
        for task in tasks:
            yield from task.join()
        assert queue.empty()

    tasklets.run(main)
    everything = received["left"] + received["right"]
    assert sorted(everything) == sorted((i, n) for i, (_, c) in enumerate(plan) for n in range(c))
    for items in received.values():  # each consumer sees each producer's items in order
        for i in range(len(plan)):
            mine = [n for index, n in items if index == i]
            assert mine == sorted(mine)


# --- Channel ----------------------------------------------------------------------------

def test_channel_rendezvous_order_and_balance():
    trace = []

    def sender(name, channel):
        trace.append(f"{name} sends")
        yield from channel.send(name)
        trace.append(f"{name} delivered")

    def main():
        channel = Channel()
        for name in ("s1", "s2"):
            spawn(sender, name, channel)
        yield from _settle()
        assert channel.balance == 2  # two blocked senders
        trace.append((yield from channel.receive()))
        trace.append((yield from channel.receive()))
        assert channel.balance == 0
        yield from _settle()

    tasklets.run(main)
    assert trace == ["s1 sends", "s2 sends", "s1", "s2", "s1 delivered", "s2 delivered"]


def test_channel_receivers_wait_in_order_and_a_sender_does_not_block_then():
    trace = []

    def receiver(name, channel):
        value = yield from channel.receive()
        trace.append(f"{name} got {value}")

    def main():
        channel = Channel()
        spawn(receiver, "r1", channel)
        spawn(receiver, "r2", channel)
        yield from _settle()
        assert channel.balance == -2  # two blocked receivers
        steps = tasklets.current().steps
        yield from channel.send("x")
        yield from channel.send("y")
        assert tasklets.current().steps == steps  # neither send blocked
        assert channel.balance == 0
        yield from _settle()

    tasklets.run(main)
    assert trace == ["r1 got x", "r2 got y"]


def test_channel_send_exception_raises_in_the_receiver():
    def receiver(channel):
        return (yield from channel.receive())

    def main():
        channel = Channel()
        # The receiver waits first ...
        task = spawn(receiver, channel)
        yield from _settle()
        yield from channel.send_exception(ValueError, "bad news")
        with pytest.raises(TaskletError) as info:
            yield from task.join()
        assert isinstance(info.value.__cause__, ValueError)
        # ... or the sender waits first.
        spawn(channel.send_exception, KeyError, "worse news")
        yield from _settle()
        with pytest.raises(KeyError):
            yield from channel.receive()

    tasklets.run(main)


def test_reprs_say_what_is_going_on():
    def main():
        queue, channel, lock = Queue(3), Channel(), Lock()
        yield from lock.acquire()
        assert repr(queue) == "<Queue size=0 maxsize=3 getters=0 putters=0>"
        assert repr(channel) == "<Channel balance=0>"
        assert repr(lock) == "<Lock owner=main-1 waiters=0>"
        assert repr(Event()) == "<Event unset waiters=0>"
        assert repr(Semaphore(2)) == "<Semaphore value=2 waiters=0>"

    tasklets.run(main)
