"""The kernel: ordering, fairness, join, life cycle, threads, stats, introspection.

Every test is deterministic: orderings are asserted as exact lists, and
nothing waits on wall-clock time to synchronise (the few short sleeps below
exist to be *ordered*, never to wait for something else to happen).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest

import tasklets
from tasklets import Cancelled, Event, Kernel, TaskletError, current, sleep, spawn


@pytest.fixture
def kernel():
    k = Kernel()
    yield k
    k.close()


# --- run() ----------------------------------------------------------------------

def test_run_returns_the_result_of_main():
    def main(x, y):
        yield from sleep(0)
        return x + y

    assert tasklets.run(main, 2, 3) == 5


def test_run_raises_the_exception_of_main():
    def main():
        yield from sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        tasklets.run(main)


def test_run_accepts_a_generator_object():
    def main():
        yield from sleep(0)
        return "gen"

    assert tasklets.run(main()) == "gen"


def test_run_with_nothing_to_do_returns_at_once(kernel):
    assert kernel.run() is None
    assert kernel.stats().epoll_waits == 0


def test_spawn_rejects_non_generators(kernel):
    with pytest.raises(TypeError):
        kernel.spawn(lambda: 42)
    with pytest.raises(TypeError):
        kernel.spawn(object())


def test_module_functions_need_a_running_kernel():
    def gen():
        yield from sleep(0)

    with pytest.raises(RuntimeError):
        spawn(gen)
    with pytest.raises(RuntimeError):
        current()


def test_nested_run_is_refused():
    def main():
        yield from sleep(0)
        Kernel().run()

    with pytest.raises(RuntimeError, match="already running"):
        tasklets.run(main)


# --- ordering and fairness ------------------------------------------------------

def test_spawn_and_schedule_order_is_exact():
    trace = []

    def child(name):
        trace.append(f"{name}1")
        yield from sleep(0)
        trace.append(f"{name}2")

    def main():
        spawn(child, "a")
        spawn(child, "b")
        trace.append("main1")
        yield from sleep(0)
        trace.append("main2")
        yield from sleep(0)
        trace.append("main3")

    tasklets.run(main)
    # Pass 1: main.  Pass 2: a, b, main (in queue order).  Pass 3: a, b, main.
    assert trace == ["main1", "a1", "b1", "main2", "a2", "b2", "main3"]


def test_sleepers_wake_in_deadline_order():
    trace = []

    def sleeper(seconds):
        yield from sleep(seconds)
        trace.append(seconds)

    def main():
        for seconds in (0.03, 0.01, 0.02, 0.01):
            spawn(sleeper, seconds)
        yield from sleep(0)

    tasklets.run(main)
    assert trace == [0.01, 0.01, 0.02, 0.03]


def test_a_self_rescheduling_tasklet_does_not_starve_others():
    trace = []

    def spinner():
        while True:
            trace.append("spin")
            yield from sleep(0)

    def worker():
        for i in range(3):
            trace.append(f"work{i}")
            yield from sleep(0)

    def main():
        spin = spawn(spinner)
        yield from spawn(worker).join()
        spin.cancel()

    tasklets.run(main)
    # Each pass runs every ready tasklet exactly once, in queue order.
    assert trace[:7] == ["spin", "work0", "spin", "work1", "spin", "work2", "spin"]


def test_tasklets_made_ready_during_a_pass_run_in_the_next_pass():
    trace = []

    def late():
        trace.append("late")
        yield from sleep(0)

    def first():
        spawn(late)  # goes behind everything already queued
        trace.append("first")
        yield from sleep(0)

    def second():
        trace.append("second")
        yield from sleep(0)

    def main():
        spawn(first)
        spawn(second)
        yield from sleep(0)

    tasklets.run(main)
    assert trace == ["first", "second", "late"]


def test_poll_timeout_is_zero_when_ready_and_blocks_when_idle(kernel):
    # With nothing ready, the kernel blocks in epoll until the timer is due:
    # one epoll wait for one sleep, not a busy loop.
    def main():
        yield from sleep(0.02)

    kernel.run(main)
    stats = kernel.stats()
    assert stats.epoll_waits <= 3  # not a busy loop
    assert stats.epoll_wait_seconds > 0.01


# --- join and exceptions ---------------------------------------------------------

def test_join_returns_the_result():
    def child():
        yield from sleep(0)
        return 42

    def main():
        return (yield from spawn(child).join())

    assert tasklets.run(main) == 42


def test_join_wraps_a_crash_in_tasklet_error_with_cause():
    def child():
        yield from sleep(0)
        raise KeyError("lost")

    def main():
        task = spawn(child)
        with pytest.raises(TaskletError) as info:
            yield from tasklets.join(task)
        assert isinstance(info.value.__cause__, KeyError)
        assert task.state == "CRASHED"
        assert task.exception is info.value.__cause__
        return "checked"

    assert tasklets.run(main) == "checked"


def test_join_of_a_cancelled_tasklet_raises_tasklet_error_from_cancelled():
    def child():
        yield from sleep(10)

    def main():
        task = spawn(child)
        yield from sleep(0)
        task.cancel()
        with pytest.raises(TaskletError) as info:
            yield from task.join()
        assert isinstance(info.value.__cause__, Cancelled)
        assert task.state == "CANCELLED"

    tasklets.run(main)


def test_join_of_an_ended_tasklet_needs_no_trap(kernel):
    def child():
        return 7
        yield  # pragma: no cover - makes this a generator

    def main():
        task = spawn(child)
        yield from sleep(0)
        assert task.done
        return (yield from task.join())

    assert kernel.run(main) == 7
    assert kernel.stats().traps["Join"] == 0


def test_many_joiners_all_get_the_result():
    def child(event):
        yield from event.wait()
        return "shared"

    def joiner(task):
        return (yield from task.join())

    def main():
        event = Event()
        task = spawn(child, event)
        joiners = [spawn(joiner, task) for _ in range(3)]
        yield from sleep(0)
        event.set()
        results = []
        for j in joiners:
            results.append((yield from j.join()))
        return results

    assert tasklets.run(main) == ["shared"] * 3


def test_a_tasklet_cannot_join_itself():
    def main():
        with pytest.raises(RuntimeError, match="itself"):
            yield tasklets.traps.Join(current())

    tasklets.run(main)


def test_result_property():
    def child():
        yield from sleep(0)
        return 1

    def main():
        task = spawn(child)
        with pytest.raises(RuntimeError):
            task.result  # noqa: B018 - not ended yet
        yield from task.join()
        assert task.result == 1

    tasklets.run(main)


def test_an_unobserved_crash_is_logged(caplog):
    def child():
        raise ValueError("nobody listens")
        yield  # pragma: no cover

    def main():
        spawn(child, name="loner")
        yield from sleep(0)

    with caplog.at_level(logging.ERROR, logger="tasklets"):
        tasklets.run(main)
    assert any("loner crashed" in r.getMessage() for r in caplog.records)


def test_yielding_a_non_trap_raises_type_error_in_the_tasklet(kernel):
    def main():
        with pytest.raises(TypeError, match="not a trap"):
            yield 42
        with pytest.raises(TypeError, match="yield from"):
            yield sleep(1)  # the classic mistake: forgot 'from'
        return "ok"

    assert kernel.run(main) == "ok"
    assert kernel.stats().traps["invalid"] == 2


def test_keyboard_interrupt_escapes_run_and_the_kernel_stays_usable():
    trace = []

    def bystander():
        try:
            yield from sleep(10)
        finally:
            trace.append("bystander cleaned up")

    def main():
        spawn(bystander)
        yield from sleep(0)
        raise KeyboardInterrupt

    k = Kernel()
    with pytest.raises(KeyboardInterrupt):
        k.run(main)
    k.close()
    assert trace == ["bystander cleaned up"]


# --- life cycle: daemons, stop, close ------------------------------------------------

def test_run_waits_for_non_daemon_tasklets_but_not_daemons():
    trace = []

    def straggler():
        yield from sleep(0)
        yield from sleep(0)
        trace.append("straggler done")

    def daemon():
        try:
            yield from Event().wait()  # forever
        except Cancelled:
            trace.append("daemon cancelled at close")
            raise

    def main():
        spawn(straggler)
        spawn(daemon, daemon=True)
        trace.append("main done")
        return "result"
        yield  # pragma: no cover

    assert tasklets.run(main) == "result"
    assert trace == ["main done", "straggler done", "daemon cancelled at close"]


def test_stop_ends_run_and_run_can_resume(kernel):
    trace = []

    def worker():
        for i in range(4):
            trace.append(i)
            if i == 1:
                kernel.stop()
            yield from sleep(0)

    task = kernel.spawn(worker)
    kernel.run()
    assert trace == [0, 1]
    assert task.state == "READY"
    kernel.run()
    assert trace == [0, 1, 2, 3]
    assert task.state == "DONE"


def test_run_of_main_raises_if_stopped_before_main_ended(kernel):
    def main():
        kernel.stop()
        yield from sleep(0)

    with pytest.raises(RuntimeError, match="stopped before"):
        kernel.run(main)


def test_cancelling_a_tasklet_that_never_ran_means_it_never_runs():
    trace = []

    def child():
        trace.append("ran")
        yield from sleep(0)

    def main():
        task = spawn(child)
        assert task.cancel() is True
        with pytest.raises(TaskletError):
            yield from task.join()
        assert task.state == "CANCELLED"
        assert task.cancel() is False  # already ended

    tasklets.run(main)
    assert trace == []


# --- threads: the wake-up channel and run_in_thread ------------------------------------

def test_call_soon_threadsafe_from_another_thread_wakes_the_kernel(kernel):
    event = Event()

    def main():
        thread = threading.Thread(target=kernel.call_soon_threadsafe, args=(event.set,))
        thread.start()
        yield from event.wait()  # the kernel blocks in epoll until the thread's wake-up
        thread.join()
        return "woken"

    assert kernel.run(main) == "woken"
    assert kernel.stats().threadsafe_callbacks == 1


def test_stop_from_another_thread(kernel):
    def main():
        threading.Thread(target=kernel.stop).start()
        yield from Event().wait()  # only stop() can end this

    with pytest.raises(RuntimeError, match="stopped before"):
        kernel.run(main)


def test_call_soon_threadsafe_callback_errors_are_logged_not_fatal(kernel, caplog):
    def bad():
        raise ValueError("callback bug")

    def main():
        event = Event()
        kernel.call_soon_threadsafe(bad)
        kernel.call_soon_threadsafe(event.set)
        yield from event.wait()
        return "survived"

    with caplog.at_level(logging.ERROR, logger="tasklets"):
        assert kernel.run(main) == "survived"
    assert any("callback" in r.getMessage() for r in caplog.records)


def test_run_in_thread_returns_the_result_and_raises_the_exception(kernel):
    def fails():
        raise OSError("disk on fire")

    def main():
        caller = threading.get_ident()
        worker = yield from tasklets.run_in_thread(threading.get_ident)
        assert worker != caller
        assert (yield from tasklets.run_in_thread(sum, [1, 2, 3])) == 6
        with pytest.raises(OSError, match="disk on fire"):
            yield from tasklets.run_in_thread(fails)
        return "ok"

    assert kernel.run(main) == "ok"
    assert kernel.stats().thread_jobs == 3
    assert kernel.stats().traps["RunInThread"] == 3


def test_other_tasklets_run_while_one_waits_for_a_thread():
    trace = []
    gate = threading.Event()

    def blocking_call():
        assert gate.wait(10)
        return "thread result"

    def other():
        trace.append("other ran")
        gate.set()  # only possible if the kernel kept running tasklets
        yield from sleep(0)

    def main():
        spawn(other)
        trace.append((yield from tasklets.run_in_thread(blocking_call)))

    tasklets.run(main)
    assert trace == ["other ran", "thread result"]


def test_run_in_thread_pool_is_bounded():
    lock = threading.Lock()
    active = [0]
    peak = [0]
    barrier = threading.Barrier(2, timeout=10)

    def job():
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        barrier.wait()  # needs two concurrent jobs: proves the pool has two threads
        with lock:
            active[0] -= 1

    def main():
        jobs = [spawn(tasklets.run_in_thread, job) for _ in range(6)]
        for j in jobs:
            yield from j.join()

    tasklets.run(main, max_threads=2)
    assert peak[0] == 2


# --- stats -------------------------------------------------------------------------

def test_stats_match_what_the_program_did(kernel):
    def child():
        for _ in range(3):
            yield from sleep(0)

    def main():
        a = spawn(child)
        b = spawn(child)
        for _ in range(5):
            yield from sleep(0.001)
        # The children finished long ago: these joins need no trap.
        yield from a.join()
        yield from b.join()

    kernel.run(main)
    s = kernel.stats()
    assert s.tasklets_spawned == 3
    assert s.tasklets_finished == 3
    assert s.tasklets_crashed == 0
    assert s.tasklets_cancelled == 0
    assert s.tasklets_alive == 0
    assert s.tasklets_runnable == 0
    assert s.traps["Sleep"] == 5
    assert s.traps["Schedule"] == 6
    assert s.traps["Join"] == 0
    assert s.timers_set == 5
    assert s.timers_fired == 5
    assert s.timers_cancelled == 0
    # main: 5 sleeps + the final step; each child: 3 reschedules + the final step
    assert s.steps == 6 + 4 + 4
    assert s.epoll_register == 1  # just the wake-up eventfd
    assert s.epoll_modify == 0
    assert s.epoll_unregister == 0


def test_stats_count_crashes_and_cancellations(kernel):
    def crash():
        raise RuntimeError("x")
        yield  # pragma: no cover

    def forever():
        yield from sleep(100)

    def main():
        c = spawn(crash)
        f = spawn(forever)
        yield from sleep(0)
        f.cancel()
        for task in (c, f):
            with pytest.raises(TaskletError):
                yield from task.join()

    kernel.run(main)
    s = kernel.stats()
    assert (s.tasklets_spawned, s.tasklets_finished, s.tasklets_crashed,
            s.tasklets_cancelled) == (3, 1, 1, 1)
    assert (s.timers_set, s.timers_cancelled, s.timers_fired) == (1, 1, 0)


# --- introspection -----------------------------------------------------------------

def _inner(event):
    yield from event.wait()


def _outer(event):
    yield from _inner(event)


def test_where_shows_the_suspended_stack_outermost_first():
    def main():
        event = Event()
        task = spawn(_outer, event, name="nested")
        yield from sleep(0)
        assert task.state == "EVENT"
        stack = task.where()
        assert [line.rsplit(" in ", 1)[1] for line in stack] == ["_outer", "_inner", "wait"]
        assert stack[0].startswith(__file__)
        assert current().state == "RUNNING"
        event.set()
        yield from task.join()
        assert task.where() == []

    tasklets.run(main)


def test_ps_lists_every_tasklet_with_state_steps_and_place():
    def main():
        event = Event()
        spawn(_outer, event, name="waiter")
        yield from sleep(0)
        table = tasklets.ps()
        lines = table.splitlines()
        assert lines[0].split() == ["ID", "NAME", "STATE", "STEPS", "WHERE"]
        main_row = next(line for line in lines if " main-1 " in line)
        waiter_row = next(line for line in lines if "waiter" in line)
        assert main_row.split()[2:4] == ["RUNNING", "2"]
        assert waiter_row.split()[2:4] == ["EVENT", "1"]
        assert waiter_row.endswith("in wait")
        event.set()

    tasklets.run(main)


def test_default_name_comes_from_the_function():
    def worker():
        yield from sleep(0)

    def main():
        task = spawn(worker)
        assert task.name == f"worker-{task.id}"
        assert spawn(worker, name="custom").name == "custom"
        yield from sleep(0)

    tasklets.run(main)


def test_a_name_ending_in_a_dash_is_completed_by_the_id():
    def worker():
        yield from sleep(0)

    def main():
        first, second = spawn(worker, name="conn-"), spawn(worker, name="conn-")
        assert (first.name, second.name) == (f"conn-{first.id}", f"conn-{second.id}")
        yield from first.join()
        assert first.name == f"conn-{first.id}"  # still, once it ended

    tasklets.run(main)


# --- debug switches ---------------------------------------------------------------

def test_longblock_warns_with_name_and_stack(caplog):
    def hog():
        end = time.perf_counter() + 0.03
        while time.perf_counter() < end:  # 30 ms without yielding
            pass
        yield from sleep(0)

    def main():
        yield from spawn(hog, name="cpu-hog").join()

    with caplog.at_level(logging.WARNING, logger="tasklets"):
        tasklets.run(main, longblock_ms=5)
    # (Only the hog's warning is asserted: on a loaded machine the OS may
    # also pause some other step for 5 ms.)
    hog_warnings = [r.getMessage() for r in caplog.records
                    if r.levelno == logging.WARNING and "cpu-hog" in r.getMessage()]
    assert len(hog_warnings) == 1
    assert "cpu-hog ran" in hog_warnings[0]
    assert "in hog" in hog_warnings[0]


def test_longblock_stays_quiet_for_well_behaved_tasklets(caplog):
    def polite():
        for _ in range(100):
            yield from sleep(0)

    def main():
        for _ in range(10):
            spawn(polite)
        yield from sleep(0)

    with caplog.at_level(logging.WARNING, logger="tasklets"):
        tasklets.run(main, longblock_ms=500)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_traptrace_and_schedtrace_log_each_trap_and_each_run(caplog):
    def main():
        yield from sleep(0)
        yield from sleep(0.001)

    with caplog.at_level(logging.DEBUG, logger="tasklets"):
        tasklets.run(main, traptrace=True, schedtrace=True)
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if m.startswith("trap")] == [
        "trap main-1: Schedule()", "trap main-1: Sleep(seconds=0.001)"]
    assert [m for m in messages if m.startswith("run")] == [
        "run main-1 (step 1)", "run main-1 (step 2)", "run main-1 (step 3)"]


def test_instrumented_loop_keeps_the_same_semantics():
    trace = []

    def child(name):
        trace.append(f"{name}1")
        yield from sleep(0)
        trace.append(f"{name}2")
        return name

    def main():
        a = spawn(child, "a")
        spawn(child, "b")
        yield from sleep(0)
        trace.append("main")
        return (yield from a.join())

    assert tasklets.run(main, longblock_ms=1000) == "a"
    assert trace == ["a1", "b1", "main", "a2", "b2"]


# --- async def tasklets --------------------------------------------------------------

def test_async_def_tasklets_run_on_the_same_kernel():
    trace = []

    async def child(queue):
        await sleep(0)
        await queue.put("from async child")
        return "child result"

    def generator_child(event):
        yield from event.wait()
        trace.append("generator child woke")

    async def main():
        queue = tasklets.Queue()
        event = Event()
        task = spawn(child, queue)
        gen_task = spawn(generator_child, event)
        trace.append(await queue.get())
        event.set()
        await gen_task.join()
        assert await task.join() == "child result"
        assert await tasklets.run_in_thread(sum, [1, 2]) == 3
        with pytest.raises(tasklets.TaskletTimeout):
            await tasklets.timeout_after(0.001, sleep(10))
        where = current().where()
        assert where[0].endswith("in main")
        return "async ok"

    assert tasklets.run(main) == "async ok"
    assert trace == ["from async child", "generator child woke"]


def test_a_crash_of_main_ends_run_and_cancels_the_others():
    trace = []

    def waits_for_main(event):
        try:
            yield from event.wait()  # main never sets it
        finally:
            trace.append("sibling unwound")

    def main():
        spawn(waits_for_main, Event())
        yield from sleep(0)
        raise ValueError("main failed")

    with pytest.raises(ValueError, match="main failed"):
        tasklets.run(main)
    assert trace == ["sibling unwound"]


def test_call_soon_threadsafe_from_a_signal_handler(kernel):
    event = Event()

    def handler(signum, frame):
        kernel.call_soon_threadsafe(event.set)

    def main():
        os.kill(os.getpid(), signal.SIGUSR1)  # the handler runs at once, in this thread
        yield from event.wait()
        return "signalled"

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        assert kernel.run(main) == "signalled"
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_kernel_where_nothing_can_wake_anybody_warns_once(kernel):
    event = Event()

    class WakeOnWarning(logging.Handler):
        # Plays "another thread": the warning is logged just before the
        # kernel blocks in epoll, and the wake-up comes through the eventfd.
        def emit(self, record):
            self.messages.append(record.getMessage())
            kernel.call_soon_threadsafe(event.set)

    handler = WakeOnWarning(level=logging.WARNING)
    handler.messages = []

    def stuck(event):
        yield from event.wait()

    def main():
        spawn(stuck, event, name="stuck-one")
        yield from event.wait()
        return "rescued"

    logger = logging.getLogger("tasklets")
    logger.addHandler(handler)
    try:
        assert kernel.run(main) == "rescued"
    finally:
        logger.removeHandler(handler)
    assert len(handler.messages) == 1
    assert "deadlock" in handler.messages[0]
    assert "stuck-one" in handler.messages[0]  # the warning includes ps()


def test_no_deadlock_warning_while_a_thread_job_is_running(kernel, caplog):
    gate = threading.Event()

    def job():
        assert gate.wait(10)
        return "done"

    def main():
        task = spawn(tasklets.run_in_thread, job)
        yield from sleep(0)
        threading.Thread(target=gate.set).start()
        return (yield from task.join())

    with caplog.at_level(logging.WARNING, logger="tasklets"):
        assert kernel.run(main) == "done"
    assert not [r for r in caplog.records if "deadlock" in r.getMessage()]


def test_default_name_survives_the_end_of_the_tasklet(caplog):
    def doomed():
        raise ValueError("x")
        yield  # pragma: no cover

    def main():
        task = spawn(doomed)
        yield from sleep(0)
        assert task.name == f"doomed-{task.id}"

    with caplog.at_level(logging.ERROR, logger="tasklets"):
        tasklets.run(main)
    assert any("doomed-2 crashed" in r.getMessage() for r in caplog.records)
