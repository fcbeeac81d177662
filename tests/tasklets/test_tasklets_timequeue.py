"""The timer heap with lazy cancellation, checked against a plain sorted list."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tasklets.timequeue import TimerQueue


class Owner:
    __slots__ = ("name", "_timer")

    def __init__(self, name):
        self.name = name
        self._timer = None


def _drain(queue, now):
    out = []
    while (owner := queue.pop_due(now)) is not None:
        out.append(owner.name)
    return out


def test_due_timers_come_out_in_deadline_order_ties_fifo():
    queue = TimerQueue()
    owners = {name: Owner(name) for name in "abcd"}
    queue.push(3.0, owners["a"])
    queue.push(1.0, owners["b"])
    queue.push(2.0, owners["c"])
    queue.push(1.0, owners["d"])
    assert queue.next_deadline() == 1.0
    assert _drain(queue, 2.0) == ["b", "d", "c"]
    assert owners["b"]._timer is None  # fired
    assert len(queue) == 1
    assert _drain(queue, 10.0) == ["a"]
    assert queue.next_deadline() is None
    assert (queue.set_count, queue.fired_count, queue.cancelled_count) == (4, 4, 0)


def test_cancelled_timers_are_skipped_and_not_counted_as_live():
    queue = TimerQueue()
    a, b = Owner("a"), Owner("b")
    queue.push(1.0, a)
    queue.push(2.0, b)
    queue.cancel(a)
    assert len(queue) == 1
    assert queue.next_deadline() == 2.0  # the dead entry on top is dropped
    assert _drain(queue, 5.0) == ["b"]
    assert queue.cancelled_count == 1


def test_an_owner_can_be_rearmed_and_only_its_latest_timer_counts():
    queue = TimerQueue()
    a = Owner("a")
    queue.push(1.0, a)
    queue.cancel(a)
    queue.push(3.0, a)
    assert _drain(queue, 2.0) == []
    assert _drain(queue, 3.0) == ["a"]


def test_mass_cancellation_compacts_the_heap():
    queue = TimerQueue()
    owners = [Owner(i) for i in range(1000)]
    for i, owner in enumerate(owners):
        queue.push(float(i), owner)
    for owner in owners[:900]:
        queue.cancel(owner)
    assert len(queue._heap) < 1000  # rebuilt along the way, not 1000 corpses
    assert len(queue) == 100
    assert _drain(queue, 2000.0) == list(range(900, 1000))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["push", "cancel", "pop"]),
                          st.integers(0, 20), st.integers(0, 30)), max_size=300))
def test_matches_a_sorted_list_model(operations):
    queue = TimerQueue()
    owners = [Owner(i) for i in range(21)]
    model = {}  # owner index -> (deadline, sequence)
    sequence = 0
    for op, index, value in operations:
        owner = owners[index]
        if op == "push" and index not in model:
            queue.push(float(value), owner)
            model[index] = (float(value), sequence)
            sequence += 1
        elif op == "cancel" and index in model:
            queue.cancel(owner)
            del model[index]
        elif op == "pop":
            now = float(value)
            due = sorted((entry, i) for i, entry in model.items() if entry[0] <= now)
            assert _drain(queue, now) == [i for _, i in due]
            for _, i in due:
                del model[i]
        assert len(queue) == len(model)
        expected_next = min((entry[0] for entry in model.values()), default=None)
        assert queue.next_deadline() == expected_next
