"""Scheduler micro-benchmarks: what a switch, a spawn, an idle task, a timer and a wake-up cost.

Every engine of Flash is, underneath, one of a handful of runtimes: plain
generators driven by our `tasklets` kernel, greenlets (raw, on our own hub
`flash_green.greenhub`, in gevent, in eventlet), asyncio coroutines (on the
standard loop or uvloop), OS threads, or processes. This module measures the
primitives those runtimes are made of, with the same small programs on each:

switch   two tasks take turns, each yielding to the scheduler (`sleep(0)`,
         `schedule()`, a greenlet switch, a lock hand-off between two
         threads, a pipe ping-pong between two processes). Unit: microseconds
         per switch, i.e. per hand-over from one task to the other.
spawn    start N tasks that return at once, then join them all. Unit:
         microseconds per task (its creation, first run, end and join).
memory   N tasks, each started and parked on an event; the growth of the
         process's resident set divided by N. Unit: bytes per idle task. For
         processes: the USS (pages only that process owns) of each idle
         child after fork. Each point is a fresh interpreter.
timers   N tasks sleep with random deadlines in [0, TIMER_SPREAD); the wall
         time from the first spawn to the last wake-up, divided by N.
         Unit: microseconds per timer (spawn and wake-up included).
io       two tasks bounce one byte across a socketpair, each waiting for
         its socket through its scheduler's poller (epoll for everybody here
         except threads and processes, which the OS scheduler wakes from a
         blocking recv). Unit: microseconds per round trip (two wake-ups).
epoll    one wait with timeout 0 on N registered fds, one of them ready:
         epoll against poll and select. Unit: microseconds per wait.

Isolation
    Every runtime runs in a fresh interpreter (`python -m comparisons.micro
    --child ...`): gevent and eventlet patch and hook globals, the memory
    figures need a clean heap, and one runtime's garbage must not slow the
    next. A child prints one JSON line; `comparisons.internals` starts the
    children, collects the lines, and draws the tables and plots.

Sizes
    switch, spawn and io calibrate their count so that one repeat lasts
    about `budget` seconds; memory and timers use the sizes asked for, capped
    per runtime where a runtime cannot hold that many (threads, processes).
    Nothing here asserts a speed: the figures are for reading, as ratios
    between runtimes measured in the same run.
"""

from __future__ import annotations

import gc
import json
import os
import random
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import ClassVar

from comparisons.childproc import ROOT, child_env, raise_fd_limit

#: Deadlines of the timers benchmark are uniform in [0, TIMER_SPREAD) seconds.
TIMER_SPREAD = 0.01
#: The benchmarks, in the order they are run and shown.
BENCHMARKS = ("switch", "spawn", "memory", "timers", "io", "epoll")
UNITS = {
    "switch": "us/switch",
    "spawn": "us/task",
    "memory": "bytes/task",
    "timers": "us/timer",
    "io": "us/round trip",
    "epoll": "us/wait",
}
#: The mechanisms of the epoll benchmark (they are not runtimes).
POLLERS = ("epoll", "poll", "select")
#: select() cannot watch fd numbers at or above FD_SETSIZE.
SELECT_FD_LIMIT = 1024

perf_counter = time.perf_counter


@dataclass
class Measurement:
    """One benchmark on one runtime at one size: the samples of its repeats."""

    bench: str
    runtime: str
    size: int
    samples: list[float]
    unit: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        self.unit = self.unit or UNITS[self.bench]

    @property
    def median(self) -> float:
        return median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(median=self.median, min=self.low, max=self.high)
        return data


def rss_bytes() -> int:
    """This process's resident set size, from /proc (no allocation worth counting)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGESIZE")


# =============================================================================
# The runtimes. Each method runs one repeat and returns seconds (or bytes for
# `memory`). Imports happen inside the methods: a child imports one runtime.
# =============================================================================

class Runtime:
    """A way of running many tasks in one process (or many processes)."""

    name = ""
    label = ""
    #: The module that must be importable for this runtime to exist here.
    module = ""
    benches: ClassVar[tuple[str, ...]] = ()
    #: Largest count this runtime is asked to hold, per benchmark.
    caps: ClassVar[dict[str, int]] = {}
    #: Smallest useful count when calibrating (a thread start is slow).
    start_count = 64

    def available(self) -> str | None:
        """None if usable here, else why not."""
        if not self.module:
            return None
        import importlib.util
        return None if importlib.util.find_spec(self.module) else f"{self.module} is not installed"

    def cap(self, bench: str, size: int) -> int:
        return min(size, self.caps.get(bench, size))

    def switch(self, rounds: int) -> float:
        raise NotImplementedError

    def spawn(self, count: int) -> float:
        raise NotImplementedError

    def memory(self, count: int) -> float:
        raise NotImplementedError

    def timers(self, deadlines: list[float]) -> float:
        raise NotImplementedError

    def io(self, rounds: int) -> float:
        raise NotImplementedError


def _parked_rss(create: Callable[[int], object], count: int) -> float:
    """Bytes per task: RSS after `create(count)` parked them, minus before, over count.

    A few tasks are made first so that what is allocated once (a loop, an
    import, a free list) is not charged to the N tasks. The collector is off
    while measuring: it would only cost time, and the tasks are all alive.
    """
    keep_warm = create(16)
    gc.collect()
    gc.disable()
    before = rss_bytes()
    keep = create(count)
    after = rss_bytes()
    del keep, keep_warm
    return (after - before) / count


class GeneratorRuntime(Runtime):
    """The floor: a bare generator resumed by a for loop, no scheduler at all."""

    name = "generator"
    label = "generator (no scheduler)"
    benches = ("switch", "spawn", "memory")

    def switch(self, rounds: int) -> float:
        def task():
            while True:
                yield

        a, b = task(), task()
        next(a), next(b)
        send_a, send_b = a.send, b.send
        started = perf_counter()
        for _ in range(rounds):
            send_a(None)
            send_b(None)
        return perf_counter() - started

    def spawn(self, count: int) -> float:
        def task():
            return
            yield

        started = perf_counter()
        for _ in range(count):
            for _ in task():
                pass
        return perf_counter() - started

    def memory(self, count: int) -> float:
        def idle():
            yield

        def create(n: int) -> list:
            gens = [idle() for _ in range(n)]
            for gen in gens:
                next(gen)
            return gens

        return _parked_rss(create, count)


class TaskletsRuntime(Runtime):
    """Our kernel: `tasklets.Kernel`, spawn, schedule, sleep, io.Socket (public API only)."""

    name = "tasklets"
    label = "tasklets (our kernel)"
    module = "tasklets"
    benches = ("switch", "spawn", "memory", "timers", "io")

    def switch(self, rounds: int) -> float:
        import tasklets

        def player():
            for _ in range(rounds):
                yield from tasklets.schedule()

        with tasklets.Kernel() as kernel:
            kernel.spawn(player)
            kernel.spawn(player)
            started = perf_counter()
            kernel.run()
            return perf_counter() - started

    def spawn(self, count: int) -> float:
        import tasklets

        def child():
            return
            yield

        def main():
            spawn = tasklets.spawn
            children = [spawn(child) for _ in range(count)]
            for task in children:
                yield from task.join()

        started = perf_counter()
        tasklets.run(main)
        return perf_counter() - started

    def memory(self, count: int) -> float:
        import tasklets

        event = tasklets.Event()

        def idle():
            yield from event.wait()

        def spawn_idle(n: int) -> list:
            # Daemons: the kernel does not wait for them once main returns.
            return [tasklets.spawn(idle, daemon=True) for _ in range(n)]

        def main():
            # After one schedule() every tasklet spawned before it has run up
            # to its wait: they were queued ahead of main.
            warm = spawn_idle(16)
            yield from tasklets.schedule()
            gc.collect()
            gc.disable()
            before = rss_bytes()
            parked = spawn_idle(count)
            yield from tasklets.schedule()
            after = rss_bytes()
            del warm, parked
            return (after - before) / count

        return tasklets.Kernel().run(main)

    def timers(self, deadlines: list[float]) -> float:
        import tasklets

        with tasklets.Kernel() as kernel:
            for deadline in deadlines:
                kernel.spawn(tasklets.sleep, deadline)
            started = perf_counter()
            kernel.run()
            return perf_counter() - started

    def io(self, rounds: int) -> float:
        import tasklets
        from tasklets.io import Socket

        left, right = socket.socketpair()
        ping, pong = Socket(left), Socket(right)

        def pinger():
            with ping:
                for _ in range(rounds):
                    yield from ping.sendall(b"x")
                    yield from ping.recv(1)

        def ponger():
            with pong:
                while (data := (yield from pong.recv(1))):
                    yield from pong.sendall(data)

        with tasklets.Kernel() as kernel:
            kernel.spawn(pinger)
            kernel.spawn(ponger)
            started = perf_counter()
            kernel.run()
            return perf_counter() - started


class GreenletRuntime(Runtime):
    """Raw greenlet: one task switches straight to another, no scheduler in between."""

    name = "greenlet"
    label = "greenlet (raw switch)"
    module = "greenlet"
    benches = ("switch", "spawn", "memory")

    def switch(self, rounds: int) -> float:
        from greenlet import greenlet

        def play_a():
            for _ in range(rounds):
                b.switch()

        def play_b():
            while True:
                a.switch()

        a, b = greenlet(play_a), greenlet(play_b)
        started = perf_counter()
        a.switch()
        return perf_counter() - started

    def spawn(self, count: int) -> float:
        from greenlet import greenlet

        def task():
            return None

        started = perf_counter()
        for _ in range(count):
            greenlet(task).switch()
        return perf_counter() - started

    def memory(self, count: int) -> float:
        from greenlet import getcurrent, greenlet

        main = getcurrent()

        def idle():
            main.switch()

        def create(n: int) -> list:
            parked = [greenlet(idle) for _ in range(n)]
            for g in parked:
                g.switch()
            return parked

        return _parked_rss(create, count)


class GreenhubRuntime(Runtime):
    """Greenlets on `flash_green.greenhub`, the hand-written epoll hub of the greenlet engine."""

    name = "greenhub"
    label = "greenlet + our hub"
    module = "greenlet"
    benches = ("switch", "spawn", "memory", "timers", "io")

    def _run(self, main: Callable[[object], object]) -> object:
        from flash_green import greenhub

        hub = greenhub.Hub()
        greenhub.install(hub)
        try:
            return hub.run(main, hub)
        finally:
            greenhub.install(None)
            hub.close()

    def _spawn_and_wait(self, hub, function, args_list) -> None:
        """Spawn function(*args) for each args; return when all have ended."""
        from flash_green import greenhub

        done = greenhub.Event(hub)
        left = [len(args_list)]

        def task(*args):
            function(*args)
            left[0] -= 1
            if not left[0]:
                done.set()

        for args in args_list:
            hub.spawn(task, *args)
        done.wait()

    def switch(self, rounds: int) -> float:
        def main(hub):
            def player():
                for _ in range(rounds):
                    hub.sleep(0)

            started = perf_counter()
            self._spawn_and_wait(hub, player, [(), ()])
            return perf_counter() - started

        return self._run(main)

    def spawn(self, count: int) -> float:
        def main(hub):
            started = perf_counter()
            self._spawn_and_wait(hub, lambda: None, [()] * count)
            return perf_counter() - started

        return self._run(main)

    def memory(self, count: int) -> float:
        from flash_green import greenhub

        def main(hub):
            event = greenhub.Event(hub)

            def create(n: int) -> list:
                parked = [hub.spawn(event.wait) for _ in range(n)]
                hub.sleep(0)  # every spawned greenlet runs up to its wait
                return parked

            return _parked_rss(create, count)

        return self._run(main)

    def timers(self, deadlines: list[float]) -> float:
        def main(hub):
            started = perf_counter()
            self._spawn_and_wait(hub, hub.sleep, [(d,) for d in deadlines])
            return perf_counter() - started

        return self._run(main)

    def io(self, rounds: int) -> float:
        from flash_green import greenhub

        def main(hub):
            left, right = socket.socketpair()
            ping = greenhub.CooperativeSocket(left, hub)
            pong = greenhub.CooperativeSocket(right, hub)

            def pinger():
                for _ in range(rounds):
                    ping.sendall(b"x")
                    ping.recv(1)
                ping.close()

            def ponger():
                while data := pong.recv(1):
                    pong.sendall(data)
                pong.close()

            started = perf_counter()
            self._spawn_and_wait(hub, lambda f: f(), [(pinger,), (ponger,)])
            return perf_counter() - started

        return self._run(main)


class GeventRuntime(Runtime):
    """gevent: greenlets on a libev/libuv hub; `gevent.sleep(0)` goes through the hub."""

    name = "gevent"
    label = "gevent"
    module = "gevent"
    benches = ("switch", "spawn", "memory", "timers", "io")

    def switch(self, rounds: int) -> float:
        import gevent

        def player():
            for _ in range(rounds):
                gevent.sleep(0)

        started = perf_counter()
        gevent.joinall([gevent.spawn(player), gevent.spawn(player)])
        return perf_counter() - started

    def spawn(self, count: int) -> float:
        import gevent

        def task():
            return None

        started = perf_counter()
        gevent.joinall([gevent.spawn(task) for _ in range(count)])
        return perf_counter() - started

    def memory(self, count: int) -> float:
        import gevent
        from gevent.event import Event

        event = Event()
        parked = [0]

        def idle():
            parked[0] += 1
            event.wait()

        def create(n: int) -> list:
            target = parked[0] + n
            tasks = [gevent.spawn(idle) for _ in range(n)]
            while parked[0] < target:
                gevent.sleep(0)
            return tasks

        return _parked_rss(create, count)

    def timers(self, deadlines: list[float]) -> float:
        import gevent

        started = perf_counter()
        gevent.joinall([gevent.spawn(gevent.sleep, d) for d in deadlines])
        return perf_counter() - started

    def io(self, rounds: int) -> float:
        import gevent
        import gevent.socket

        ping, pong = gevent.socket.socketpair()

        def pinger():
            for _ in range(rounds):
                ping.sendall(b"x")
                ping.recv(1)
            ping.close()

        def ponger():
            while data := pong.recv(1):
                pong.sendall(data)
            pong.close()

        started = perf_counter()
        gevent.joinall([gevent.spawn(pinger), gevent.spawn(ponger)])
        return perf_counter() - started


class EventletRuntime(Runtime):
    """eventlet: greenlets on its own epoll hub (maintenance mode upstream)."""

    name = "eventlet"
    label = "eventlet"
    module = "eventlet"
    benches = ("switch", "spawn", "memory", "timers", "io")

    @staticmethod
    def _import():
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import eventlet
            import eventlet.event
            import eventlet.green.socket
        return eventlet

    def switch(self, rounds: int) -> float:
        eventlet = self._import()

        def player():
            for _ in range(rounds):
                eventlet.sleep(0)

        started = perf_counter()
        for thread in [eventlet.spawn(player), eventlet.spawn(player)]:
            thread.wait()
        return perf_counter() - started

    def spawn(self, count: int) -> float:
        eventlet = self._import()

        def task():
            return None

        started = perf_counter()
        for thread in [eventlet.spawn(task) for _ in range(count)]:
            thread.wait()
        return perf_counter() - started

    def memory(self, count: int) -> float:
        eventlet = self._import()
        event = eventlet.event.Event()
        parked = [0]

        def idle():
            parked[0] += 1
            event.wait()

        def create(n: int) -> list:
            target = parked[0] + n
            tasks = [eventlet.spawn(idle) for _ in range(n)]
            while parked[0] < target:
                eventlet.sleep(0)
            return tasks

        return _parked_rss(create, count)

    def timers(self, deadlines: list[float]) -> float:
        eventlet = self._import()
        started = perf_counter()
        for thread in [eventlet.spawn(eventlet.sleep, d) for d in deadlines]:
            thread.wait()
        return perf_counter() - started

    def io(self, rounds: int) -> float:
        eventlet = self._import()
        ping, pong = eventlet.green.socket.socketpair()

        def pinger():
            for _ in range(rounds):
                ping.sendall(b"x")
                ping.recv(1)
            ping.close()

        def ponger():
            while data := pong.recv(1):
                pong.sendall(data)
            pong.close()

        started = perf_counter()
        for thread in [eventlet.spawn(pinger), eventlet.spawn(ponger)]:
            thread.wait()
        return perf_counter() - started


class AsyncioRuntime(Runtime):
    """asyncio coroutines and tasks on the standard library's selector loop."""

    name = "asyncio"
    label = "asyncio"
    module = "asyncio"
    benches = ("switch", "spawn", "memory", "timers", "io")

    def _run(self, coro_fn: Callable[[], object]) -> object:
        import asyncio
        with asyncio.Runner(loop_factory=self.loop_factory()) as runner:
            return runner.run(coro_fn())

    def loop_factory(self):
        return None

    def switch(self, rounds: int) -> float:
        import asyncio

        async def player():
            for _ in range(rounds):
                await asyncio.sleep(0)

        async def main():
            started = perf_counter()
            await asyncio.gather(player(), player())
            return perf_counter() - started

        return self._run(main)

    def spawn(self, count: int) -> float:
        import asyncio

        async def task():
            return None

        async def main():
            started = perf_counter()
            create = asyncio.get_running_loop().create_task
            await asyncio.gather(*[create(task()) for _ in range(count)])
            return perf_counter() - started

        return self._run(main)

    def memory(self, count: int) -> float:
        import asyncio

        async def main():
            event = asyncio.Event()
            parked = [0]

            async def idle():
                parked[0] += 1
                await event.wait()

            async def settle(target: int) -> None:
                while parked[0] < target:
                    await asyncio.sleep(0)

            def create(n: int) -> list:
                create_task = asyncio.get_running_loop().create_task
                return [create_task(idle()) for _ in range(n)]

            warm = create(16)
            await settle(16)
            gc.collect()
            gc.disable()
            before = rss_bytes()
            tasks = create(count)
            await settle(16 + count)
            after = rss_bytes()
            event.set()
            await asyncio.gather(*warm, *tasks)
            return (after - before) / count

        return self._run(main)

    def timers(self, deadlines: list[float]) -> float:
        import asyncio

        async def main():
            started = perf_counter()
            create = asyncio.get_running_loop().create_task
            await asyncio.gather(*[create(asyncio.sleep(d)) for d in deadlines])
            return perf_counter() - started

        return self._run(main)

    def io(self, rounds: int) -> float:
        import asyncio

        async def main():
            loop = asyncio.get_running_loop()
            ping, pong = socket.socketpair()
            ping.setblocking(False)
            pong.setblocking(False)

            async def pinger():
                for _ in range(rounds):
                    await loop.sock_sendall(ping, b"x")
                    await loop.sock_recv(ping, 1)
                ping.close()

            async def ponger():
                while data := await loop.sock_recv(pong, 1):
                    await loop.sock_sendall(pong, data)
                pong.close()

            started = perf_counter()
            await asyncio.gather(pinger(), ponger())
            return perf_counter() - started

        return self._run(main)


class UvloopRuntime(AsyncioRuntime):
    """The same asyncio programs on uvloop (libuv, written in Cython)."""

    name = "uvloop"
    label = "asyncio on uvloop"
    module = "uvloop"

    def loop_factory(self):
        import uvloop
        return uvloop.new_event_loop


class ThreadsRuntime(Runtime):
    """OS threads: the kernel schedules, the GIL serialises the Python in between."""

    name = "threads"
    label = "OS threads"
    benches = ("switch", "spawn", "memory", "timers", "io")
    caps: ClassVar[dict[str, int]] = {"memory": 10_000, "timers": 2_000, "spawn": 5_000}
    start_count = 16

    def switch(self, rounds: int) -> float:
        # A hand-over through two locks: the cheapest way one thread can wake
        # another and then sleep until woken back.
        mine, theirs = threading.Lock(), threading.Lock()
        mine.acquire()
        theirs.acquire()

        def other():
            for _ in range(rounds):
                theirs.acquire()
                mine.release()

        thread = threading.Thread(target=other)
        thread.start()
        started = perf_counter()
        for _ in range(rounds):
            theirs.release()
            mine.acquire()
        elapsed = perf_counter() - started
        thread.join()
        return elapsed

    def spawn(self, count: int) -> float:
        def task():
            return None

        started = perf_counter()
        threads = [threading.Thread(target=task) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return perf_counter() - started

    def memory(self, count: int) -> float:
        event = threading.Event()
        parked = threading.Semaphore(0)

        def idle():
            parked.release()
            event.wait()

        def create(n: int) -> list:
            threads = [threading.Thread(target=idle, daemon=True) for _ in range(n)]
            for thread in threads:
                thread.start()
            for _ in range(n):
                parked.acquire()
            return threads

        try:
            return _parked_rss(create, count)
        finally:
            event.set()

    def timers(self, deadlines: list[float]) -> float:
        started = perf_counter()
        threads = [threading.Thread(target=time.sleep, args=(d,)) for d in deadlines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return perf_counter() - started

    def io(self, rounds: int) -> float:
        ping, pong = socket.socketpair()

        def ponger():
            while data := pong.recv(1):
                pong.sendall(data)
            pong.close()

        thread = threading.Thread(target=ponger)
        thread.start()
        started = perf_counter()
        for _ in range(rounds):
            ping.sendall(b"x")
            ping.recv(1)
        elapsed = perf_counter() - started
        ping.close()
        thread.join()
        return elapsed


class ProcessesRuntime(Runtime):
    """Processes: fork, and the kernel switches address spaces."""

    name = "processes"
    label = "processes (fork)"
    benches = ("switch", "spawn", "memory", "io")
    caps: ClassVar[dict[str, int]] = {"memory": 50, "spawn": 500}
    start_count = 8

    @staticmethod
    def _fork(child: Callable[[], None]) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                child()
            finally:
                os._exit(0)
        return pid

    def switch(self, rounds: int) -> float:
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()

        def echo():
            os.close(to_child_w)  # else our own copy keeps the pipe open: no EOF
            os.close(to_parent_r)
            while os.read(to_child_r, 1):
                os.write(to_parent_w, b"x")

        pid = self._fork(echo)
        started = perf_counter()
        for _ in range(rounds):
            os.write(to_child_w, b"x")
            os.read(to_parent_r, 1)
        elapsed = perf_counter() - started
        for fd in (to_child_w, to_child_r, to_parent_r, to_parent_w):
            os.close(fd)
        os.waitpid(pid, 0)
        return elapsed

    def spawn(self, count: int) -> float:
        started = perf_counter()
        pids = [self._fork(lambda: None) for _ in range(count)]
        for pid in pids:
            os.waitpid(pid, 0)
        return perf_counter() - started

    def memory(self, count: int) -> float:
        import psutil

        hold_r, hold_w = os.pipe()
        ready_r, ready_w = os.pipe()

        def idle():
            os.close(hold_w)  # the parent's close is then the children's EOF
            os.write(ready_w, b"r")
            os.read(hold_r, 1)

        pids = [self._fork(idle) for _ in range(count)]
        for _ in range(count):
            os.read(ready_r, 1)
        try:
            return sum(psutil.Process(pid).memory_full_info().uss for pid in pids) / count
        finally:
            os.close(hold_w)
            for pid in pids:
                os.waitpid(pid, 0)
            for fd in (hold_r, ready_r, ready_w):
                os.close(fd)

    def io(self, rounds: int) -> float:
        ping, pong = socket.socketpair()

        def echo():
            ping.close()
            while data := pong.recv(1):
                pong.sendall(data)

        pid = self._fork(echo)
        pong.close()
        started = perf_counter()
        for _ in range(rounds):
            ping.sendall(b"x")
            ping.recv(1)
        elapsed = perf_counter() - started
        ping.close()
        os.waitpid(pid, 0)
        return elapsed


class EpollCallbacksRuntime(Runtime):
    """No tasks at all: one epoll loop calling a function per ready fd (the v4 engine's model)."""

    name = "epoll"
    label = "epoll callbacks (no tasks)"
    benches = ("io",)

    def io(self, rounds: int) -> float:
        ping, pong = socket.socketpair()
        ping.setblocking(False)
        pong.setblocking(False)
        poller = select.epoll()
        poller.register(ping.fileno(), select.EPOLLIN)
        poller.register(pong.fileno(), select.EPOLLIN)
        ping_fd = ping.fileno()
        left = rounds
        started = perf_counter()
        ping.send(b"x")
        while left:
            for fd, _ in poller.poll():
                if fd == ping_fd:
                    ping.recv(1)
                    left -= 1
                    if left:
                        ping.send(b"x")
                else:
                    pong.send(pong.recv(1))
        elapsed = perf_counter() - started
        poller.close()
        ping.close()
        pong.close()
        return elapsed


RUNTIMES: dict[str, Runtime] = {runtime.name: runtime for runtime in (
    GeneratorRuntime(), TaskletsRuntime(), GreenletRuntime(), GreenhubRuntime(),
    GeventRuntime(), EventletRuntime(), AsyncioRuntime(), UvloopRuntime(),
    ThreadsRuntime(), ProcessesRuntime(), EpollCallbacksRuntime(),
)}

#: How many task hand-overs one unit of each calibrated benchmark holds.
SWITCHES_PER_ROUND = 2


# =============================================================================
# The epoll benchmark: one wait on N registered fds, one of them ready
# =============================================================================

def poller_wait_cost(mechanism: str, nfds: int, budget: float) -> float:
    """Seconds per zero-timeout wait of `mechanism` watching `nfds` eventfds, one ready."""
    raise_fd_limit(nfds + 64)
    fds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(nfds)]
    try:
        os.eventfd_write(fds[-1], 1)
        if mechanism == "epoll":
            poller = select.epoll()
            for fd in fds:
                poller.register(fd, select.EPOLLIN)
            wait = lambda: poller.poll(0)
        elif mechanism == "poll":
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            wait = lambda: poller.poll(0)
        else:
            wait = lambda: select.select(fds, [], [], 0)
        assert wait(), "the ready fd was not reported"
        return _per_call(wait, budget)
    finally:
        for fd in fds:
            os.close(fd)


def _per_call(call: Callable[[], object], budget: float) -> float:
    """Seconds per call, timing batches until `budget` seconds are spent."""
    count = 1
    while True:
        started = perf_counter()
        for _ in range(count):
            call()
        elapsed = perf_counter() - started
        if elapsed >= budget or count >= 1 << 24:
            return elapsed / count
        count = max(count * 2, int(count * budget / max(elapsed, 1e-6) * 1.1))


# =============================================================================
# The child: run benchmarks of one runtime, print JSON
# =============================================================================

def calibrate(run: Callable[[int], float], start: int, budget: float, cap: int | None) -> int:
    """The count for which `run(count)` lasts about `budget` seconds."""
    count = start
    while True:
        if cap is not None and count >= cap:
            return cap
        elapsed = run(count)
        if elapsed >= budget / 4:
            wanted = int(count * budget / elapsed)
            return max(1, min(wanted, cap) if cap is not None else wanted)
        count *= 4


def run_bench(runtime: Runtime, bench: str, size: int, repeats: int, budget: float,
              seed: int = 1) -> Measurement:
    """One benchmark of one runtime, `repeats` times; in this process."""
    if bench in ("switch", "io"):
        method = getattr(runtime, bench)
        rounds = size or calibrate(method, runtime.start_count, budget, runtime.caps.get(bench))
        per = SWITCHES_PER_ROUND if bench == "switch" else 1
        samples = [method(rounds) / (rounds * per) * 1e6 for _ in range(repeats)]
        return Measurement(bench, runtime.name, rounds, samples)
    if bench == "spawn":
        count = size or calibrate(runtime.spawn, runtime.start_count, budget, runtime.caps.get(bench))
        count = runtime.cap(bench, count)
        return Measurement(bench, runtime.name, count,
                           [runtime.spawn(count) / count * 1e6 for _ in range(repeats)])
    if bench == "timers":
        count = runtime.cap(bench, size)
        rng = random.Random(seed)
        samples = []
        for _ in range(repeats):
            deadlines = [rng.random() * TIMER_SPREAD for _ in range(count)]
            samples.append(runtime.timers(deadlines) / count * 1e6)
        return Measurement(bench, runtime.name, count, samples,
                           note=f"deadlines uniform in [0, {TIMER_SPREAD * 1000:g} ms)")
    if bench == "memory":
        count = runtime.cap(bench, size)
        samples = [runtime.memory(count) for _ in range(repeats)]
        note = "USS per idle child" if runtime.name == "processes" else "RSS growth per parked task"
        return Measurement(bench, runtime.name, count, samples, note=note)
    raise ValueError(f"unknown benchmark {bench!r}")


def parse_plan(spec: str) -> list[tuple[str, str]]:
    """`switch=0,timers=100000` -> [("switch", "0"), ("timers", "100000")]."""
    return [tuple(item.split("=", 1)) for item in spec.split(",")]  # type: ignore[misc]


def child_main(argv: list[str]) -> int:
    """`--child RUNTIME BENCH=SIZE[,BENCH=SIZE...] REPEATS BUDGET`: print one JSON list.

    SIZE 0 means "calibrate to BUDGET seconds". RUNTIME `pollers` runs the
    epoll benchmark for every mechanism, at the fd counts given as
    `epoll=10:1000:10000`.
    """
    runtime_name, spec, repeats, budget = argv[:4]
    repeats_n, budget_s = int(repeats), float(budget)
    results = []
    for bench, size in parse_plan(spec):
        if runtime_name == "pollers":
            for nfds in (int(n) for n in size.split(":")):
                for mechanism in POLLERS:
                    if mechanism == "select" and nfds + 16 >= SELECT_FD_LIMIT:
                        continue
                    samples = [poller_wait_cost(mechanism, nfds, budget_s) * 1e6
                               for _ in range(repeats_n)]
                    results.append(Measurement("epoll", mechanism, nfds, samples).to_json())
        else:
            results.append(run_bench(RUNTIMES[runtime_name], bench, int(size), repeats_n,
                                     budget_s).to_json())
    sys.stdout.write(json.dumps(results) + "\n")
    sys.stdout.flush()
    # Skip the teardown of a million parked tasks: the numbers are out.
    os._exit(0)


# =============================================================================
# The parent side: start a child, read its line
# =============================================================================

@dataclass
class ChildFailure:
    """A child that crashed or overran its time: shown in the report, never hidden."""

    runtime: str
    plan: str
    reason: str


@dataclass
class ChildResult:
    measurements: list[Measurement] = field(default_factory=list)
    failure: ChildFailure | None = None


def run_child(runtime: str, plan: dict[str, int | str], repeats: int, budget: float,
              timeout: float) -> ChildResult:
    """Run benchmarks of one runtime in a fresh interpreter; bounded by `timeout` seconds.

    `plan` maps each benchmark to its size (0 = calibrate).
    """
    spec = ",".join(f"{bench}={size}" for bench, size in plan.items())
    cmd = [sys.executable, "-m", "comparisons.micro", "--child", runtime, spec, str(repeats),
           str(budget)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env=child_env(PYTHONWARNINGS="ignore"), check=False)
    except subprocess.TimeoutExpired:
        return ChildResult(failure=ChildFailure(runtime, spec, f"timed out after {timeout:g}s"))
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return ChildResult(failure=ChildFailure(runtime, spec, tail))
    rows = json.loads(lines[-1])
    return ChildResult([Measurement(**{k: row[k] for k in ("bench", "runtime", "size", "samples",
                                                           "unit", "note")}) for row in rows])


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        raise SystemExit(child_main(sys.argv[2:]))
    print("usage: python -m flash_green internals  (this module is its worker)", file=sys.stderr)
    raise SystemExit(2)
